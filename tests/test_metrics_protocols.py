"""Protocols: registry, geometry, background and ignored-pixel treatment, per-batch and
dataset results, and agreement with the functional metrics on the prepared targets."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from slotlab.data.sample import IGNORE_INDEX, Sample, collate
from slotlab.ops.resize import center_crop, resize_mask
from slotlab.metrics.aggregators import DatasetSemanticIoU
from slotlab.metrics.masks import ari, mbo, miou, slot_binding
from slotlab.metrics.evaluation import ProtocolMetrics, evaluate_masks
from slotlab.metrics.protocol import Protocol
from slotlab.metrics.protocols import PROTOCOLS, get_protocol
from tests.shared_dir import FIXTURES


def make_sample(instance: torch.Tensor, classes: list[int], ignore: torch.Tensor | None = None, semantic=None) -> Sample:
    height, width = instance.shape
    lookup = torch.tensor([0, *classes])
    return Sample(
        image=torch.rand(3, height, width),
        instance_mask=instance,
        semantic_mask=lookup[instance] if semantic is None else semantic,
        ignore_mask=torch.zeros(height, width, dtype=torch.bool) if ignore is None else ignore,
        class_ids=torch.tensor(classes, dtype=torch.long),
        boxes=torch.zeros(len(classes), 4),
    )


def scene(height=40, width=60, seed=0, with_ignore=True) -> Sample:
    """Three objects of distinct classes; a band of object 1 in ignore_mask (an overlap)."""
    gen = torch.Generator().manual_seed(seed)
    top, left = (int(v) for v in torch.randint(0, 6, (2,), generator=gen))
    instance = torch.zeros(height, width, dtype=torch.long)
    instance[top + 4 : top + 20, left + 5 : left + 25] = 1
    instance[top + 22 : top + 34, left + 30 : left + 50] = 2
    instance[2:10, width - 12 : width - 3] = 3
    ignore = torch.zeros(height, width, dtype=torch.bool)
    if with_ignore:
        ignore[top + 18 : top + 20, left + 5 : left + 25] = True
    return make_sample(instance, [4, 7, 2], ignore)


def one_hot(labels: torch.Tensor, channels: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(labels, channels).movedim(-1, 1).float()


def test_registry_and_errors():
    assert set(PROTOCOLS) >= {"spot", "spot-voc", "glass", "glass-authors", "msf", "native"}
    assert get_protocol("glass").name == "glass"
    with pytest.raises(ValueError, match="valid protocols: spot, spot-voc, spot-movi, glass, glass-authors, msf, native"):
        get_protocol("SPOT")
    with pytest.raises(ValueError, match="unknown metrics"):
        Protocol(name="x", summary="", metrics=("mbo",))
    with pytest.raises(ValueError, match="eval_size must be None"):
        Protocol(name="x", summary="", metrics=("mbo_i",), eval_size=128)
    with pytest.raises(ValueError, match="geometry"):
        Protocol(name="x", summary="", metrics=("mbo_i",), eval_size=128, geometry="crop")
    with pytest.raises(ValueError, match="ignored_pixels"):
        Protocol(name="x", summary="", metrics=("mbo_i",), ignored_pixels="keep")


def test_paper_settings():
    spot, glass, msf = (get_protocol(n) for n in ("spot", "glass", "msf"))
    assert (spot.eval_size, spot.geometry, spot.ignore_background, spot.if_empty) == (320, "shorter_side_crop", True, "one")
    assert (glass.eval_size, glass.geometry, glass.ignore_background) == (256, "shorter_side_crop", False)
    assert (msf.eval_size, msf.geometry, msf.ignore_background, msf.if_empty) == (256, "square_crop_resize", False, "nan")
    assert get_protocol("spot-voc").ignored_pixels == "background"
    assert "slot_binding" in glass.metrics and {"ari", "fg_ari"} <= set(msf.metrics)


@pytest.mark.parametrize("name", list(PROTOCOLS))
def test_perfect_prediction_scores_one_and_keys_name_the_protocol(name):
    protocol = get_protocol(name)
    batch = collate([scene(seed=0, with_ignore=False), scene(seed=1, with_ignore=False)])
    targets = protocol.prepare_targets(batch)
    # Perfect slots on the evaluation grid: one slot per instance, background included.
    scores = protocol.evaluate_batch(targets.instance, batch)
    assert all(key.startswith(f"{name}/") for key in scores)
    for metric in ("ari", "fg_ari", "mbo_i", "miou_i", "mbo_c"):
        if metric in protocol.metrics:
            assert torch.allclose(scores[f"{name}/{metric}"], torch.ones(2, dtype=torch.float64)), metric
    if protocol.reports_binding:
        assert torch.allclose(scores[f"{name}/so"], torch.full((2,), 3 / 4, dtype=torch.float64))
        assert torch.allclose(scores[f"{name}/bg"], torch.full((2,), 1 / 4, dtype=torch.float64))


def quarter_object_batch(size=32):
    instance = torch.zeros(size, size, dtype=torch.long)
    instance[: size // 2, : size // 2] = 1
    return collate([make_sample(instance, [1])])


def test_background_is_an_object_for_glass_and_msf_not_for_spot():
    batch = quarter_object_batch()
    one_slot = torch.zeros(1, 2, 4, 4)
    one_slot[:, 0] = 1  # slot 0 everywhere
    spot = get_protocol("spot").evaluate_batch(one_slot, batch)
    glass = get_protocol("glass").evaluate_batch(one_slot, batch)
    msf = get_protocol("msf").evaluate_batch(one_slot, batch)
    assert spot["spot/mbo_i"].item() == pytest.approx(0.25)
    assert glass["glass/mbo_i"].item() == pytest.approx((0.75 + 0.25) / 2)
    assert glass["glass/miou_i"].item() == pytest.approx(0.75 / 2)  # one slot, matched to background
    assert msf["msf/ari"].item() == pytest.approx(0.0)
    assert glass["glass/bg"].item() == pytest.approx(1.0)


def test_image_without_objects_per_protocol():
    batch = collate([make_sample(torch.zeros(24, 24, dtype=torch.long), [])])
    masks = torch.rand(1, 3, 6, 6)
    spot = get_protocol("spot").evaluate_batch(masks, batch)
    assert math.isnan(spot["spot/mbo_i"].item()) and math.isnan(spot["spot/miou_i"].item())
    assert spot["spot/fg_ari"].item() == 1.0  # OCLF: zero denominator -> 1
    msf = get_protocol("msf").evaluate_batch(masks, batch)
    assert math.isnan(msf["msf/fg_ari"].item())  # MSF skips images without foreground
    glass = get_protocol("glass").evaluate_batch(masks, batch)
    assert not math.isnan(glass["glass/mbo_i"].item())  # the background is a segment


def test_geometry_of_each_protocol():
    batch = collate([scene(40, 60, with_ignore=False)])
    label = batch.instance_mask
    spot = get_protocol("spot").prepare_labels(batch).instance
    assert torch.equal(spot, center_crop(resize_mask(label, (320, 480)), (320, 320)))
    msf = get_protocol("msf").prepare_labels(batch).instance
    assert torch.equal(msf, resize_mask(center_crop(label, (40, 40)), (256, 256)))
    native = get_protocol("native").prepare_labels(batch).instance
    assert torch.equal(native, label)
    masks = torch.rand(1, 5, 14, 14)
    assert get_protocol("glass").prepare_pred(masks, (40, 60)).shape == (1, 5, 256, 256)
    assert get_protocol("native").prepare_pred(masks, (40, 60)).shape == (1, 5, 40, 60)


def banded_batch(ignore_band: bool = True, semantic_band: bool = False):
    """20x20: object rows 0-9, background rows 10-19 of which rows 10-11 are a 'border'."""
    instance = torch.zeros(20, 20, dtype=torch.long)
    instance[:10] = 1
    ignore = torch.zeros(20, 20, dtype=torch.bool)
    semantic = instance.clone()
    if ignore_band:
        ignore[10:12] = True
    if semantic_band:
        semantic[10:12] = IGNORE_INDEX
    return collate([make_sample(instance, [1], ignore, semantic)])


def band_prediction():
    slots = torch.ones(1, 20, 20, dtype=torch.long)
    slots[:, :12] = 0  # slot 0 = object + border band, slot 1 = the rest
    return one_hot(slots, 2)


@pytest.mark.parametrize(
    "policy, object_iou, background_iou",
    [
        ("drop", 1.0, 1.0),
        ("background", 200 / 240, 160 / 200),
        ("unlabelled", 200 / 240, 1.0),
        ("labelled", 200 / 240, 160 / 200),  # the band's painted label is background
    ],
)
def test_ignored_pixel_policies(policy, object_iou, background_iou):
    native = get_protocol("native")
    with_bg = dataclasses.replace(native, name="t", ignored_pixels=policy, ignore_background=False)
    without_bg = dataclasses.replace(native, name="t", ignored_pixels=policy)
    batch, pred = banded_batch(), band_prediction()
    assert without_bg.evaluate_batch(pred, batch)["t/mbo_i"].item() == pytest.approx(object_iou)
    assert with_bg.evaluate_batch(pred, batch)["t/mbo_i"].item() == pytest.approx((object_iou + background_iou) / 2)


def test_ignore_index_labels_are_treated_like_ignore_mask():
    native = get_protocol("native")
    by_mask = native.evaluate_batch(band_prediction(), banded_batch(ignore_band=True))
    by_label = native.evaluate_batch(band_prediction(), banded_batch(ignore_band=False, semantic_band=True))
    for key, value in by_mask.items():
        assert torch.allclose(value, by_label[key], equal_nan=True), key


def random_masks(batch: int, seed: int, slots: int = 5) -> torch.Tensor:
    return torch.rand(batch, slots, 14, 14, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", ["spot", "glass", "msf"])
def test_evaluate_batch_equals_functional_metrics_on_prepared_targets(name):
    protocol = get_protocol(name)
    batch = collate([scene(seed=2), scene(seed=3)])
    masks = random_masks(2, 0)
    scores = protocol.evaluate_batch(masks, batch)
    targets = protocol.prepare_targets(batch)
    pred = protocol.prepare_pred(masks, (40, 60))
    ign, bg = targets.ignore, protocol.ignore_background
    expected = {
        "mbo_i": mbo(pred, targets.instance, ign, bg),
        "miou_i": miou(pred, targets.instance, ign, bg),
        "mbo_c": mbo(pred, targets.semantic, ign, bg),
        "fg_ari": ari(pred, targets.instance, ign, foreground=True, if_empty=protocol.if_empty),
        "ari": ari(pred, targets.instance, ign, if_empty=protocol.if_empty),
    }
    expected.update(slot_binding(pred, targets.instance, ign))
    for key, value in scores.items():
        assert torch.allclose(value, expected[key.split("/")[1]], equal_nan=True), key


def test_evaluate_masks_over_a_dataset():
    protocol = get_protocol("glass")
    empty = make_sample(torch.zeros(40, 60, dtype=torch.long), [])
    batches = [
        (random_masks(2, 0), collate([scene(seed=4), empty])),
        (random_masks(3, 1), collate([scene(seed=s) for s in (5, 6, 7)])),
    ]
    result = evaluate_masks(batches, "glass", num_classes=8)
    assert result["protocol"] == "glass" and result["settings"]["eval_size"] == 256
    assert result["images"] == 5
    per_batch = [protocol.evaluate_batch(m, b) for m, b in batches]
    for metric in protocol.image_metrics:
        values = torch.cat([p[f"glass/{metric}"] for p in per_batch])
        defined = ~torch.isnan(values)
        assert result["metrics"][metric] == pytest.approx(float(values[defined].mean()), abs=1e-12)
        assert result["counts"][metric] == int(defined.sum())
        assert result["skipped"][metric] == int((~defined).sum())
    assert sum(result["metrics"][k] for k in ("so", "po", "go", "bg")) == pytest.approx(1.0)
    assert result["counts"]["slots"] > 0
    # Dataset-level class mIoU equals DatasetSemanticIoU on the prepared targets.
    reference = DatasetSemanticIoU(num_classes=8, ignore_background=protocol.ignore_background)
    for masks, batch in batches:
        targets = protocol.prepare_targets(batch)
        reference.update(protocol.prepare_pred(masks, (40, 60)), targets.semantic, targets.ignore)
    assert result["metrics"]["miou_c"] == pytest.approx(reference.compute()["miou_c"], abs=1e-12)
    assert result["counts"]["miou_c_classes"] == 4  # background and classes 2, 4, 7


def test_protocol_metrics_merge_like_separate_processes():
    protocol = get_protocol("spot")
    batches = [(random_masks(2, s), collate([scene(seed=s), scene(seed=s + 10)])) for s in range(4)]
    whole, first, second = (ProtocolMetrics(protocol, num_classes=8) for _ in range(3))
    for i, (masks, batch) in enumerate(batches):
        whole.update(masks, batch)
        (first if i % 2 else second).update(masks, batch)
    first.merge_state(second)
    assert first.compute() == pytest.approx(whole.compute(), abs=1e-12)
    assert whole.compute()["spot/images"] == 8


def test_input_errors():
    protocol = get_protocol("spot")
    batch = collate([scene()])
    with pytest.raises(ValueError, match="2 predicted mask sets for a batch of 1"):
        protocol.evaluate_batch(random_masks(2, 0), batch)
    with pytest.raises(ValueError, match=r"\(B, K, h, w\)"):
        protocol.evaluate_batch(torch.rand(1, 5, 196), batch)
    with pytest.raises(ValueError, match="num_classes=3"):
        evaluate_masks([(random_masks(1, 0), batch)], protocol, num_classes=3)
    too_many = torch.zeros(8, 8, dtype=torch.long)
    too_many[0, 0] = IGNORE_INDEX + 1
    with pytest.raises(ValueError, match="collides with IGNORE_INDEX"):
        protocol.evaluate_batch(random_masks(1, 0), collate([make_sample(too_many, [1] * (IGNORE_INDEX + 1))]))


@pytest.mark.skipif(not (FIXTURES / "voc_sample").is_dir(), reason=f"real VOC samples {FIXTURES / 'voc_sample'} are absent")
def test_real_voc_samples_border_policies():
    from slotlab.data.voc import VOCSegmentation

    dataset = VOCSegmentation(FIXTURES / "voc_sample", split="all")
    with_border_in_crop = 0
    for index in range(len(dataset)):
        batch = collate([dataset[index]])
        for name in ("spot", "spot-voc"):
            protocol = get_protocol(name)
            targets = protocol.prepare_targets(batch)
            assert targets.instance.shape[-2:] == (320, 320)
            scores = protocol.evaluate_batch(targets.instance, batch)
            assert scores[f"{name}/mbo_i"].item() == pytest.approx(1.0)
        labels = get_protocol("spot").prepare_labels(batch)
        if not labels.ignore.any():
            continue
        with_border_in_crop += 1
        # A slot that swallows the border scores below 1 only when the border is background.
        grown = labels.instance.masked_fill(labels.ignore, 1)
        pred = one_hot(grown, int(grown.max()) + 1)
        dropped = get_protocol("spot").evaluate_batch(pred, batch)["spot/mbo_i"].item()
        as_background = get_protocol("spot-voc").evaluate_batch(pred, batch)["spot-voc/mbo_i"].item()
        assert dropped == pytest.approx(1.0) and as_background < 1.0
    assert with_border_in_crop >= 1
