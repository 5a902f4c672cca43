"""Tests of slotlab.metrics.edits: the colour test and the removal test on hand-made scenes."""

import math

import pytest
import torch

from slotlab.metrics.edits import (
    control_slots,
    drop_slot,
    largest_objects,
    object_visible,
    region_mean_colour,
    removal_test,
)

RED, BLUE, DARK = torch.tensor([0.9, 0.1, 0.1]), torch.tensor([0.1, 0.3, 0.9]), torch.tensor([0.15, 0.15, 0.15])
SIZE = 16


def rectangle(y0: int, x0: int, height: int, width: int) -> torch.Tensor:
    region = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    region[y0 : y0 + height, x0 : x0 + width] = True
    return region


def square(y0: int, x0: int, side: int) -> torch.Tensor:
    return rectangle(y0, x0, side, side)


def paint(regions_colours: list[tuple[torch.Tensor, torch.Tensor]], background: torch.Tensor = DARK) -> torch.Tensor:
    image = background[:, None, None].expand(3, SIZE, SIZE).clone()
    for region, colour in regions_colours:
        image[:, region] = colour[:, None]
    return image


# ----------------------------------------------------------------------------- colour test


def test_region_mean_colour_and_empty_region():
    image = paint([(square(0, 0, 4), RED)])
    colours = region_mean_colour(image[None].repeat(2, 1, 1, 1), torch.stack([square(0, 0, 4), torch.zeros(SIZE, SIZE, dtype=torch.bool)]))
    torch.testing.assert_close(colours[0], RED)
    assert colours[1].isnan().all()


def test_object_visible_on_known_images():
    region = square(4, 4, 8)  # 64 pixels
    real = paint([(region, RED)])
    background_only = paint([])
    half = paint([(rectangle(4, 4, 4, 8), RED)])  # 32 of 64 pixels
    less = paint([(rectangle(4, 4, 3, 8), RED)])  # 24 of 64
    blue_object = paint([(region, BLUE)])  # another object's colour: nearer the dark background than red
    washed_out = paint([(region, 0.55 * RED + 0.45 * DARK)])  # nearer red than the background, 0.34 from red
    samples = torch.stack([real, background_only, half, less, blue_object, washed_out])
    n = len(samples)
    visible = object_visible(samples, region.expand(n, -1, -1), RED.expand(n, 3), DARK.expand(n, 3))
    assert visible.tolist() == [True, False, True, False, False, False]
    lenient = object_visible(samples, region.expand(n, -1, -1), RED.expand(n, 3), DARK.expand(n, 3),
                             min_fraction=0.3, tolerance=0.5)  # fmt: skip
    assert lenient.tolist() == [True, False, True, True, False, True]


def test_object_visible_at_the_samples_resolution_and_never_for_an_empty_region():
    region = square(4, 4, 8)
    small = torch.nn.functional.avg_pool2d(paint([(region, RED)])[None], 2)  # an 8x8 sample
    assert object_visible(small, region[None], RED[None], DARK[None]).item()
    empty = torch.zeros(1, SIZE, SIZE, dtype=torch.bool)
    assert not object_visible(paint([(region, RED)])[None], empty, RED[None], DARK[None]).item()


def test_largest_objects():
    masks = torch.zeros(3, SIZE, SIZE, dtype=torch.long)
    masks[0][square(0, 0, 2)], masks[0][square(8, 8, 5)] = 1, 2
    masks[1][square(0, 0, 6)], masks[1][square(8, 8, 3)] = 1, 3
    assert largest_objects(masks).tolist() == [2, 1, 0]


# ----------------------------------------------------------------------------- control slots


def test_control_slots_exclude_the_removed_the_overlapping_and_empty_slots():
    obj = square(0, 0, 8)
    segmentation = torch.zeros(SIZE, SIZE, dtype=torch.long)  # slot 0: background
    segmentation[obj] = 1  # slot 1: the object
    segmentation[0:2, 0:8] = 2  # slot 2: 16 of the object's 64 pixels (25% > 10%)
    segmentation[12:, 12:] = 3  # slot 3: elsewhere; slot 4 owns nothing
    chosen = {
        int(control_slots(segmentation[None], obj[None], torch.tensor([1]), 5, torch.Generator().manual_seed(s))[0])
        for s in range(40)
    }
    assert chosen == {0, 3}
    only_object = torch.ones(1, SIZE, SIZE, dtype=torch.long)
    assert control_slots(only_object, obj[None], torch.tensor([1]), 5, torch.Generator()).tolist() == [-1]


def test_drop_slot_removes_one_row_per_image():
    slots = torch.arange(2 * 4 * 3.0).view(2, 4, 3)
    dropped = drop_slot(slots, torch.tensor([1, 3]))
    torch.testing.assert_close(dropped[0], slots[0, [0, 2, 3]])
    torch.testing.assert_close(dropped[1], slots[1, [0, 1, 2]])


# ----------------------------------------------------------------------------- removal test


def two_object_scenes(batch: int = 3):
    """Scenes with a large red and a small blue square; slot k paints colour k over mask k.

    Slots are (colour RGB, slot id): 0 background, 1 the red square, 2 the blue square,
    3 a slot that owns a corner of the background.
    """
    big, small = square(2, 2, 8), square(11, 11, 3)
    corner = square(0, 13, 2) & ~big
    images = paint([(big, RED), (small, BLUE)])[None].repeat(batch, 1, 1, 1)
    instances = torch.zeros(batch, SIZE, SIZE, dtype=torch.long)
    instances[:, big], instances[:, small] = 1, 2
    owner = torch.zeros(SIZE, SIZE, dtype=torch.long)
    owner[big], owner[small], owner[corner] = 1, 2, 3
    slot_masks = torch.nn.functional.one_hot(owner, 4).permute(2, 0, 1).float()[None].repeat(batch, 1, 1, 1)
    colours = torch.stack([DARK, RED, BLUE, DARK])
    slots = torch.cat([colours, torch.arange(4.0)[:, None]], dim=1)[None].repeat(batch, 1, 1)
    return slots, slot_masks, images, instances


def faithful_renderer(slot_masks: torch.Tensor):
    """Paint every slot's colour over its own mask; unpainted pixels stay black."""

    def sample(slots: torch.Tensor, seed: int) -> torch.Tensor:
        ids = slots[..., 3].long()
        masks = torch.gather(slot_masks, 1, ids[:, :, None, None].expand(-1, -1, *slot_masks.shape[-2:]))
        return torch.einsum("bkc,bkhw->bchw", slots[..., :3], masks)

    return sample


def test_a_faithful_decoder_removes_only_the_removed_object():
    slots, slot_masks, images, instances = two_object_scenes()
    result = removal_test(faithful_renderer(slot_masks), slots, slot_masks, images, instances)
    summary = result.summary()
    assert result.removed_slot.tolist() == [1, 1, 1]
    assert set(result.control_slot.tolist()) <= {0, 2, 3}
    assert summary["objects_tested"] == 3 and summary["reconstructed_rate"] == 1.0
    assert summary["removal_success_rate"] == 1.0
    assert summary["control_other_slot_rate"] == 0.0 and summary["control_reseed_rate"] == 0.0
    renderer = faithful_renderer(slot_masks)
    torch.testing.assert_close(result.reconstruction, renderer(slots, 0))
    torch.testing.assert_close(result.edited, renderer(drop_slot(slots, result.removed_slot), 0))


def test_a_decoder_that_ignores_its_slots_never_removes():
    slots, slot_masks, images, instances = two_object_scenes()
    summary = removal_test(lambda s, seed: images.clone(), slots, slot_masks, images, instances).summary()
    assert summary["reconstructed_rate"] == 1.0 and summary["removal_success_rate"] == 0.0


def test_an_object_missing_from_the_reconstruction_is_not_counted_as_removed():
    slots, slot_masks, images, instances = two_object_scenes()
    background = paint([])[None].repeat(len(images), 1, 1, 1)
    summary = removal_test(lambda s, seed: background, slots, slot_masks, images, instances).summary()
    assert summary["reconstructed_rate"] == 0.0 and summary["reconstructed"] == 0
    assert math.isnan(summary["removal_success_rate"]) and math.isnan(summary["control_reseed_rate"])


def test_the_reseed_control_catches_a_decoder_that_drops_objects_at_random():
    slots, slot_masks, images, instances = two_object_scenes()
    renderer = faithful_renderer(slot_masks)
    background = paint([])[None].repeat(len(images), 1, 1, 1)
    summary = removal_test(lambda s, seed: renderer(s, seed) if seed % 2 == 0 else background,
                           slots, slot_masks, images, instances, seed=0).summary()  # fmt: skip
    assert summary["removal_success_rate"] == 1.0 and summary["control_reseed_rate"] == 1.0


def test_removal_test_checks_shapes():
    slots, slot_masks, images, instances = two_object_scenes()
    with pytest.raises(ValueError, match="slot_masks"):
        removal_test(lambda s, seed: images, slots, slot_masks[:, :3], images, instances)


def test_evaluate_removal_runs_a_glass_model_deterministically(glass_preset_overrides):
    from slotlab.config import load_preset
    from slotlab.data.registry import build_dataset
    from slotlab.data.sample import collate
    from slotlab.methods import get_method
    from slotlab.methods.slot_edits import SamplingOptions
    from slotlab.train.config import build_train_config
    from slotlab.train.generation_tasks import evaluate_removal

    config = build_train_config(load_preset("glass-tiny"), glass_preset_overrides)
    torch.manual_seed(0)
    model = get_method("glass")(config.model).eval()
    batch = collate([build_dataset("scenes?split=val&size=3")[i] for i in range(3)])
    results = []
    for _ in range(2):
        torch.manual_seed(1)  # slot attention draws its initial slots
        results.append(evaluate_removal(model, batch.image, batch.instance_mask, SamplingOptions(steps=2))[0])
    assert results[0].tested.all()
    for name in ("reconstructed", "visible_after_edit", "visible_after_control", "visible_after_reseed",
                 "removed_slot", "control_slot"):  # fmt: skip
        assert torch.equal(getattr(results[0], name), getattr(results[1], name)), name
