import argparse
import json
from dataclasses import replace

import pytest
import torch

from slotlab.config import from_dict
from slotlab.data.registry import build_dataset
from slotlab.data.sample import IGNORE_INDEX, collate
from slotlab.methods import get_method
from slotlab.methods.dinosaur import DinosaurConfig
from slotlab.cli.probe import add_arguments, run
from slotlab.metrics.probe import evaluate_probe, prior_baselines, run_probes, split_pairs, train_probe
from slotlab.metrics.slot_pairs import (
    SlotPairs,
    batch_slot_pairs,
    mask_mass_on_objects,
    match_slots_to_objects,
    reference_features,
    semantic_objects,
)
from tests.conftest import tiny_train_config

NUM_CLASSES, DIM = 5, 16


def encoded_pairs(n: int, seed: int, informative: bool = True) -> SlotPairs:
    """Slots that carry class and centre linearly (or, if not informative, random labels)."""
    g = torch.Generator().manual_seed(seed)
    classes = torch.randint(0, NUM_CLASSES, (n,), generator=g)
    centres = torch.rand(n, 2, generator=g)
    slots = 0.1 * torch.randn(n, DIM, generator=g)
    if informative:
        slots[:, :NUM_CLASSES] += 3 * torch.nn.functional.one_hot(classes, NUM_CLASSES)
        slots[:, NUM_CLASSES : NUM_CLASSES + 2] += 4 * centres
    else:
        classes = torch.randint(0, NUM_CLASSES, (n,), generator=g)
        centres = torch.rand(n, 2, generator=g)
    return SlotPairs(slots, classes, centres, torch.ones(n), slots.clone(), torch.zeros(n, DIM))


def test_class_probe_reads_a_linearly_encoded_class():
    train, val = split_pairs(encoded_pairs(600, seed=0), seed=0)
    result = train_probe(train, val, task="class", max_epochs=60)
    assert evaluate_probe(result, encoded_pairs(300, seed=1)) > 0.97


def test_class_probe_on_random_labels_is_near_chance():
    train, val = split_pairs(encoded_pairs(600, seed=0, informative=False), seed=0)
    result = train_probe(train, val, task="class", max_epochs=30)
    accuracy = evaluate_probe(result, encoded_pairs(1000, seed=1, informative=False))
    assert abs(accuracy - 1 / NUM_CLASSES) < 0.08


def test_early_stopping_stops_when_validation_loss_rises():
    train = encoded_pairs(300, seed=0)
    # validation labels contradict the training labels: learning makes its loss worse
    val = encoded_pairs(60, seed=1)
    val = SlotPairs(val.slots, (val.class_ids + 1) % NUM_CLASSES, val.centres, val.mask_mass, val.object_features, val.image_features)
    result = train_probe(train, val, task="class", max_epochs=100, patience=5)
    assert result.stopped_early and result.epochs_run == result.best_epoch + 5 < 100
    assert min(result.val_losses) == result.val_losses[result.best_epoch - 1]
    assert result.val_losses[-1] > result.val_losses[result.best_epoch - 1]


def test_centre_probe_beats_the_mean_predictor():
    train, val = split_pairs(encoded_pairs(600, seed=0), seed=0)
    result = train_probe(train, val, task="centre", max_epochs=400)  # lr 3e-4 converges slowly
    test = encoded_pairs(300, seed=1)
    baseline = float(((test.centres - train.centres.mean(0)) ** 2).mean())  # about 1/12
    assert evaluate_probe(result, test) < 0.25 * baseline


def test_train_probe_is_deterministic_for_a_seed():
    train, val = split_pairs(encoded_pairs(200, seed=0), seed=0)
    a = train_probe(train, val, task="class", max_epochs=5, seed=3)
    b = train_probe(train, val, task="class", max_epochs=5, seed=3)
    assert torch.equal(a.probe.weight, b.probe.weight)


def test_train_probe_rejects_unknown_task():
    pairs = encoded_pairs(20, seed=0)
    with pytest.raises(ValueError, match="task"):
        train_probe(pairs, pairs, task="colour")


def box(h, w, top, left, bottom, right):
    m = torch.zeros(h, w, dtype=torch.bool)
    m[top:bottom, left:right] = True
    return m


def test_matching_assigns_the_overlapping_slot_on_hand_made_masks():
    h = w = 8
    label_map = torch.zeros(1, h, w, dtype=torch.long)
    label_map[0][box(h, w, 0, 0, 4, 4)] = 1  # object 1: top-left
    label_map[0][box(h, w, 4, 4, 8, 8)] = 2  # object 2: bottom-right
    slot_masks = torch.zeros(1, 3, h, w)
    slot_masks[0, 0] = 1.0  # slot 0: everything else (background)
    slot_masks[0, 2][box(h, w, 4, 4, 8, 8)] = 5.0  # slot 2 covers object 2
    slot_masks[0, 1][box(h, w, 0, 0, 3, 3)] = 5.0  # slot 1 covers most of object 1
    (rows, cols), = match_slots_to_objects(slot_masks, label_map, [2])
    assert dict(zip(cols.tolist(), rows.tolist())) == {0: 1, 1: 2}


def test_matching_drops_objects_no_slot_overlaps():
    label_map = torch.zeros(1, 4, 4, dtype=torch.long)
    label_map[0, :2, :2] = 1
    label_map[0, 3, 3] = 2
    slot_masks = torch.zeros(1, 2, 4, 4)
    slot_masks[0, 0, :2, :2] = 1.0  # slot 0 = object 1
    slot_masks[0, 1] = 0.5  # slot 1 wins nowhere except where slot 0 is 0 ...
    slot_masks[0, 1, 3, 3] = 0.0
    slot_masks[0, 0, 3, 3] = 1.0  # ... and object 2's pixel goes to slot 0
    ignore = torch.zeros(1, 4, 4, dtype=torch.bool)
    ignore[0, 3, 3] = True  # object 2's only pixel is ignored: IoU 0 with every slot
    (rows, cols), = match_slots_to_objects(slot_masks, label_map, [2], ignore)
    assert rows.tolist() == [0] and cols.tolist() == [0]


def test_matching_resizes_low_resolution_slot_masks():
    label_map = torch.zeros(1, 8, 8, dtype=torch.long)
    label_map[0, :, 4:] = 1
    slot_masks = torch.zeros(1, 2, 2, 2)
    slot_masks[0, 0, :, 0] = 1.0
    slot_masks[0, 1, :, 1] = 1.0
    (rows, cols), = match_slots_to_objects(slot_masks, label_map, [1])
    assert rows.tolist() == [1] and cols.tolist() == [0]


def test_mask_mass_is_the_share_of_a_slot_mask_on_its_object():
    label_map = torch.zeros(1, 4, 4, dtype=torch.long)
    label_map[0, :2, :2] = 1  # object 1: 4 pixels
    label_map[0, 3, 3] = 2  # object 2: 1 pixel, ignored
    slot_masks = torch.zeros(1, 2, 4, 4)
    slot_masks[0, 0] = 0.25
    slot_masks[0, 0, :2, :2] = 1.0  # on object 1: 4 x 1.0; elsewhere 12 x 0.25 (one ignored)
    slot_masks[0, 1] = 1.0 - slot_masks[0, 0]
    ignore = torch.zeros(1, 4, 4, dtype=torch.bool)
    ignore[0, 3, 3] = True
    matches = [(torch.tensor([0, 1]), torch.tensor([0, 1]))]
    shares = mask_mass_on_objects(slot_masks, label_map, matches, ignore)
    assert shares[0].item() == pytest.approx(4.0 / (4.0 + 11 * 0.25))
    assert shares[1].item() == 0.0  # its object's only pixel is ignored


def test_reference_features_average_the_tokens_under_each_object_and_the_image():
    label_map = torch.zeros(1, 4, 4, dtype=torch.long)
    label_map[0, :2, :2] = 1  # object 1: exactly token (0, 0) of a 2x2 grid
    label_map[0, 2:, :] = 2  # object 2: tokens (1, 0) and (1, 1), one pixel of (1, 1) ignored
    ignore = torch.zeros(1, 4, 4, dtype=torch.bool)
    ignore[0, 3, 3] = True
    feature_map = torch.tensor([[1.0, 2.0], [3.0, 5.0]]).reshape(1, 1, 2, 2)
    matches = [(torch.tensor([4, 0]), torch.tensor([1, 0]))]  # slots 4 and 0 match objects 2 and 1
    objects, images = reference_features(feature_map, label_map, matches, ignore)
    # object 2 covers 4 pixels of token (1, 0) and 3 unignored pixels of token (1, 1)
    assert objects[:, 0].tolist() == pytest.approx([(4 * 3.0 + 3 * 5.0) / 7, 1.0])
    image = (4 * 1.0 + 4 * 2.0 + 4 * 3.0 + 3 * 5.0) / 15  # all 15 unignored pixels
    assert images[:, 0].tolist() == pytest.approx([image, image])


def test_object_feature_probe_reads_what_the_slots_lost():
    pairs = encoded_pairs(600, seed=0)
    blind = replace(pairs, slots=torch.randn(len(pairs), DIM), object_features=pairs.slots)
    train, val = split_pairs(blind, seed=0)
    test = encoded_pairs(300, seed=1)
    test = replace(test, slots=torch.randn(len(test), DIM), object_features=test.slots)
    on_slots = evaluate_probe(train_probe(train, val, task="class", max_epochs=60), test)
    on_features = evaluate_probe(
        train_probe(train.with_slots_from("object_features"), val.with_slots_from("object_features"), "class",
                    max_epochs=60),
        test.with_slots_from("object_features"),
    )
    assert on_features > 0.97 and on_slots < 0.4
    with pytest.raises(ValueError, match="reference='masks'"):
        test.with_slots_from("masks")


def test_semantic_objects_merge_instances_of_a_class():
    semantic = torch.zeros(4, 4, dtype=torch.long)
    semantic[0, 0] = 7
    semantic[3, 3] = 7
    semantic[1, 1] = 3
    semantic[2, 2] = IGNORE_INDEX
    label_map, classes, boxes = semantic_objects(semantic)
    assert classes.tolist() == [3, 7]
    assert label_map[0, 0] == label_map[3, 3] == 2 and label_map[2, 2] == 0
    assert torch.allclose(boxes[1], torch.tensor([0.0, 0.0, 1.0, 1.0]))


def test_prior_baselines_ignore_the_slots():
    train = SlotPairs(
        torch.randn(4, 3), torch.tensor([2, 2, 2, 5]), torch.tensor([[0.2, 0.4], [0.4, 0.4], [0.2, 0.8], [0.4, 0.8]]),
        torch.ones(4), torch.randn(4, 3), torch.randn(4, 3),
    )
    test = SlotPairs(
        torch.randn(2, 3), torch.tensor([2, 5]), torch.tensor([[0.3, 0.6], [0.5, 0.6]]), torch.ones(2), torch.randn(2, 3), torch.randn(2, 3)
    )
    baselines = prior_baselines(train, test)
    assert baselines["class_accuracy_majority_baseline"] == 0.5  # always class 2
    assert baselines["centre_mse_mean_baseline"] == pytest.approx((0.0 + 0.04) / 4)  # mean centre (0.3, 0.6)


def tiny_dinosaur():
    torch.manual_seed(0)
    config = from_dict(DinosaurConfig, tiny_train_config()["model"])
    return get_method("dinosaur")(config)


SCENES = "scenes?split=val&size=8&resolution=32"


def test_run_probes_end_to_end_on_tiny_dinosaur():
    data = build_dataset(SCENES)
    results = run_probes(tiny_dinosaur(), data, data, batch_size=4, max_epochs=3)
    assert results["num_train_pairs"] > 0 and results["num_test_pairs"] > 0
    assert 0.0 <= results["class_accuracy"] <= 1.0 and results["centre_mse"] >= 0.0
    assert 0.0 < results["class_accuracy_majority_baseline"] <= 1.0 and results["centre_mse_mean_baseline"] > 0.0
    assert 1 <= results["class_epochs"] <= 3
    assert 0.0 < results["mask_mass_on_object"] <= 1.0
    for reference in ("object_features", "image_features"):
        assert 0.0 <= results[f"{reference}_class_accuracy"] <= 1.0 and results[f"{reference}_centre_mse"] >= 0.0
    # matching is one-to-one: at most min(K=4, objects) pairs per image
    bound = sum(min(4, data[i].num_objects) for i in range(len(data)))
    assert results["num_test_pairs"] <= bound


def test_probe_cli_writes_json(tmp_path, capsys):
    tiny_dinosaur().save_pretrained(tmp_path / "ckpt")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    out = tmp_path / "probe.json"
    args = parser.parse_args(
        ["--checkpoint", str(tmp_path / "ckpt"), "--train", SCENES, "--test", SCENES, "--out", str(out), "--max-epochs", "2"]
    )
    assert run(args) == 0
    written = json.loads(out.read_text())
    assert set(written) >= {"class_accuracy", "centre_mse", "num_test_pairs"}
    assert json.loads(capsys.readouterr().out) == written


def test_probe_pairs_need_the_encoder_tokens_of_the_decomposition():
    model = tiny_dinosaur()
    decompose = model.decompose
    model.decompose = lambda images, **kwargs: replace(decompose(images, **kwargs), features=None)
    dataset = build_dataset(SCENES)
    batch = collate([dataset[0], dataset[1]])
    with pytest.raises(NotImplementedError, match="decompose gives no encoder tokens"):
        batch_slot_pairs(model, batch)


def test_feature_map_needs_encoder_tokens_on_a_grid():
    from slotlab.methods.base import ObjectCentricModel

    class NoEncoder(ObjectCentricModel):
        method = "no-encoder"

    with pytest.raises(NotImplementedError, match="NoEncoder has no encoder tokens"):
        NoEncoder(config=None).feature_map(torch.rand(1, 3, 8, 8))
