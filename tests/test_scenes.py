"""Tests of the built-in procedural scenes (slotlab.data.scenes and its shapes, backgrounds and words)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from scipy import ndimage

from slotlab.data.sample import boxes_from_instance_mask, collate
from slotlab.data.scene_shapes import object_mask
from slotlab.data.scene_words import SCENE_CLASSES, SCENE_COLORS, class_id, class_name, describe_objects
from slotlab.data.scenes import ScenesConfig, ScenesDataset, render_scene

_NUMBERS = {"a": 1, "an": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6}


@pytest.fixture(scope="module")
def samples():
    """200 default training samples, shared by the statistical tests."""
    dataset = ScenesDataset("train", size=200, seed=0)
    return [dataset[i] for i in range(len(dataset))]


def _parse_caption(caption: str) -> Counter:
    """Caption -> Counter of (colour, class) written independently of the caption builder."""
    head, _, last = caption.rpartition(" and ")
    phrases = (head.split(", ") if head else []) + [last]
    counts: Counter = Counter()
    for phrase in phrases:
        number, color, noun = phrase.split(" ")
        count = _NUMBERS[number]
        shape = noun[:-1] if count > 1 else noun
        assert (noun.endswith("s")) == (count > 1), phrase
        counts[(color, shape)] += count
    return counts


def _assert_equal_samples(a, b) -> None:
    for name in ("image", "instance_mask", "semantic_mask", "ignore_mask", "class_ids", "boxes"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert a.caption == b.caption
    assert a.meta == b.meta


def test_same_seed_gives_identical_samples():
    first = ScenesDataset("train", size=10, seed=3, cache=False)
    second = ScenesDataset("train", size=10, seed=3, cache=False)
    for i in range(10):
        _assert_equal_samples(first[i], second[i])


def test_any_sample_regenerates_alone():
    in_order = ScenesDataset("val", size=8, seed=1)
    expected = [in_order[i] for i in range(8)]
    alone = ScenesDataset("val", size=8, seed=1)
    _assert_equal_samples(alone[5], expected[5])
    _assert_equal_samples(alone[-1], expected[7])


def test_indices_splits_and_seeds_give_different_images():
    train = ScenesDataset("train", size=20)
    images = [train[i].image for i in range(20)]
    others = [ScenesDataset("val", size=20)[i].image for i in range(20)]
    others += [ScenesDataset("test", size=20)[i].image for i in range(20)]
    others += [ScenesDataset("train", size=20, seed=1)[i].image for i in range(20)]
    everything = images + others
    for i in range(len(everything)):
        for j in range(i + 1, len(everything)):
            assert not torch.equal(everything[i], everything[j]), (i, j)


def test_meta_names_provenance():
    sample = ScenesDataset("val", size=5, seed=7)[4]
    assert {k: sample.meta[k] for k in ("dataset", "split", "index", "seed")} == {
        "dataset": "scenes", "split": "val", "index": 4, "seed": 7}
    assert len(sample.meta["objects"]) == sample.num_objects


def test_cache_returns_the_stored_sample():
    cached = ScenesDataset(size=3, cache=True)
    assert cached[1] is cached[1]
    uncached = ScenesDataset(size=3, cache=False)
    assert uncached[1] is not uncached[1]
    _assert_equal_samples(cached[1], uncached[1])


@pytest.mark.parametrize("resolution", [32, 64, 128])
def test_shapes_dtypes_and_ranges(resolution):
    config = ScenesConfig(resolution=resolution)
    dataset = ScenesDataset("train", size=20, config=config, cache=False)
    for i in range(len(dataset)):
        s = dataset[i]
        m = s.num_objects
        assert s.image.shape == (3, resolution, resolution) and s.image.dtype == torch.float32
        assert 0.0 <= float(s.image.min()) and float(s.image.max()) <= 1.0
        assert s.instance_mask.shape == (resolution, resolution) and s.instance_mask.dtype == torch.int64
        assert s.semantic_mask.dtype == torch.int64 and s.class_ids.dtype == torch.int64
        assert s.ignore_mask.dtype == torch.bool and not s.ignore_mask.any()
        assert config.min_objects <= m <= config.max_objects
        assert s.boxes.shape == (m, 4) and s.boxes.dtype == torch.float32
        # Instance ids are exactly 1..M (every painted object is visible) plus background.
        assert s.instance_mask.unique().tolist() == list(range(m + 1))
        assert int(s.class_ids.min()) >= 1 and int(s.class_ids.max()) <= len(SCENE_CLASSES)


def test_semantic_mask_matches_class_ids_and_instances(samples):
    for s in samples:
        lookup = torch.cat([torch.zeros(1, dtype=torch.int64), s.class_ids])
        assert torch.equal(s.semantic_mask, lookup[s.instance_mask])
        assert [class_id(obj["class"]) for obj in s.meta["objects"]] == s.class_ids.tolist()


def test_boxes_equal_reference_implementation(samples):
    for s in samples[:50]:
        assert torch.allclose(s.boxes, boxes_from_instance_mask(s.instance_mask, s.num_objects))


def test_every_instance_keeps_min_visible_fraction_of_its_shape(samples):
    config = ScenesConfig()
    for s in samples:
        labels = s.instance_mask.numpy()
        for m, obj in enumerate(s.meta["objects"], start=1):
            full = object_mask(obj, config.resolution)
            visible = labels == m
            assert not (visible & ~full).any(), "instance pixels outside its own shape"
            assert visible.sum() >= config.min_visible * full.sum()


def test_occlusion_happens(samples):
    occluded = 0
    for s in samples:
        labels = s.instance_mask.numpy()
        occluded += any(
            (object_mask(obj, labels.shape[0]) & (labels != m)).any()
            for m, obj in enumerate(s.meta["objects"], start=1)
        )
    assert occluded / len(samples) > 0.2


def test_same_coloured_instances_never_touch(samples):
    eight_neighbours = np.ones((3, 3), dtype=bool)
    for s in samples:
        labels = s.instance_mask.numpy()
        colors = [obj["color"] for obj in s.meta["objects"]]
        for m, color in enumerate(colors, start=1):
            grown = ndimage.binary_dilation(labels == m, structure=eight_neighbours)
            touching = set(np.unique(labels[grown]).tolist()) - {0, m}
            assert all(colors[n - 1] != color for n in touching), s.caption


def test_repeated_classes_are_common(samples):
    repeated = sum(len(set(s.class_ids.tolist())) < s.num_objects for s in samples)
    assert repeated / len(samples) > 0.3


def test_caption_counts_every_colour_and_class(samples):
    for s in samples:
        expected = Counter((obj["color"], obj["class"]) for obj in s.meta["objects"])
        assert _parse_caption(s.caption) == expected, s.caption
        per_class = Counter()
        for (_, shape), n in expected.items():
            per_class[shape] += n
        assert per_class == Counter(class_name(c) for c in s.class_ids.tolist())


def test_named_colour_is_the_rendered_colour(samples):
    palette = np.array(list(SCENE_COLORS.values()))
    names = list(SCENE_COLORS)
    for s in samples[:100]:
        image = s.image.numpy()
        labels = s.instance_mask.numpy()
        for m, obj in enumerate(s.meta["objects"], start=1):
            rendered = np.median(image[:, labels == m], axis=1)  # median skips blended edge pixels
            nearest = names[int(np.argmin(np.linalg.norm(palette - rendered, axis=1)))]
            assert nearest == obj["color"]


def test_objects_stand_out_from_the_background(samples):
    # Every object's colour is at least 0.3 (RGB Euclidean) from the mean background colour.
    for s in samples:
        image = s.image.numpy()
        labels = s.instance_mask.numpy()
        background = image[:, labels == 0].mean(axis=1)
        for m in range(1, s.num_objects + 1):
            assert np.linalg.norm(np.median(image[:, labels == m], axis=1) - background) > 0.3


def _most_common_background_share(sample) -> float:
    """Share of background pixels away from objects that have the most common colour.

    Pixels next to objects are left out: antialiased edges blend into them.
    """
    objects = sample.instance_mask.numpy() > 0
    near_objects = ndimage.binary_dilation(objects, structure=np.ones((3, 3), dtype=bool))
    pixels = sample.image.numpy()[:, ~near_objects].T
    _, counts = np.unique(pixels, axis=0, return_counts=True)
    return counts.max() / len(pixels)


def test_textured_background_probability_is_respected():
    flat = ScenesDataset(size=20, config=ScenesConfig(textured_background=0.0))
    assert all(_most_common_background_share(flat[i]) > 0.99 for i in range(20))
    textured = ScenesDataset(size=20, config=ScenesConfig(textured_background=1.0))
    assert all(_most_common_background_share(textured[i]) < 0.5 for i in range(20))


def test_render_scene_with_given_classes_renders_exactly_those():
    rng = np.random.default_rng(0)
    for classes in (["star"], ["circle", "circle", "heart"], ["hexagon"] * 4 + ["triangle", "square", "star"]):
        s = render_scene(rng, classes=classes)
        assert [class_name(c) for c in s.class_ids.tolist()] == classes
        assert s.instance_mask.unique().tolist() == list(range(len(classes) + 1))


def test_object_count_follows_config():
    config = ScenesConfig(min_objects=3, max_objects=3)
    dataset = ScenesDataset(size=10, config=config)
    assert {dataset[i].num_objects for i in range(10)} == {3}


def test_dataloader_batches_samples():
    dataset = ScenesDataset(size=6, config=ScenesConfig(resolution=32))
    loader = torch.utils.data.DataLoader(dataset, batch_size=3, collate_fn=collate)
    batch = next(iter(loader))
    assert batch.image.shape == (3, 3, 32, 32) and len(batch.class_ids) == 3


def test_describe_objects_wording():
    assert describe_objects(["red", "red", "blue"], ["circle", "circle", "star"]) == "two red circles and a blue star"
    assert describe_objects(["orange"], ["heart"]) == "an orange heart"
    assert describe_objects(["red", "blue", "red", "green"], ["square", "square", "square", "hexagon"]) == (
        "two red squares, a blue square and a green hexagon")


def test_class_name_and_id_round_trip():
    assert class_name(0) == "background"
    assert [class_name(class_id(name)) for name in SCENE_CLASSES] == list(SCENE_CLASSES)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ScenesDataset("training"), "train, val, test"),
        (lambda: ScenesDataset(size=-1), "size"),
        (lambda: ScenesDataset(seed=-1), "seed"),
        (lambda: render_scene(np.random.default_rng(0), classes=["circle", "cube"]), "circle, square"),
        (lambda: render_scene(np.random.default_rng(0), classes="circle"), "sequence"),
        (lambda: render_scene(np.random.default_rng(0), classes=[]), "at least one"),
        (lambda: class_id("cube"), "heart"),
        (lambda: class_name(len(SCENE_CLASSES) + 1), "class id"),
        (lambda: ScenesConfig(resolution=4), "resolution"),
        (lambda: ScenesConfig(min_objects=4, max_objects=3), "max_objects"),
        (lambda: ScenesConfig(textured_background=1.5), "textured_background"),
        (lambda: ScenesConfig(min_visible=0.0), "min_visible"),
        (lambda: ScenesConfig(min_size=0.3, max_size=0.2), "max_size"),
    ],
)
def test_bad_arguments_raise_clear_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_bad_rng_and_index_raise():
    with pytest.raises(TypeError, match="Generator"):
        render_scene(0)
    with pytest.raises(IndexError):
        ScenesDataset(size=3)[3]


def test_impossible_scene_raises_with_advice():
    crowded = ScenesConfig(resolution=16, min_size=0.4, max_size=0.5, min_visible=1.0, max_placement_tries=5)
    with pytest.raises(RuntimeError, match="fewer objects"):
        render_scene(np.random.default_rng(0), crowded, classes=["square"] * 6)
