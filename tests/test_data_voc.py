"""PASCAL VOC reader on a tiny generated set and on the real samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from slotlab.data.imageio import DatasetError
from slotlab.data.voc import VOC_BORDER, VOC_CLASSES, VOCSegmentation
from tests.shared_dir import FIXTURES

H, W = 20, 24
PERSON, CAR = VOC_CLASSES.index("person"), VOC_CLASSES.index("car")


def _palette_png(path: Path, indices: np.ndarray) -> None:
    image = Image.fromarray(indices.astype(np.uint8))
    image.putpalette(list(np.random.default_rng(1).integers(0, 256, 768)))  # L + palette -> P, indices kept
    image.save(path)


def _masks() -> tuple[np.ndarray, np.ndarray]:
    objects = np.zeros((H, W), np.uint8)
    classes = np.zeros((H, W), np.uint8)
    objects[2:8, 2:8], classes[2:8, 2:8] = 3, PERSON  # VOC ids need not start at 1
    objects[10:16, 12:20], classes[10:16, 12:20] = 7, CAR
    for labels in (objects, classes):  # a one-pixel void border around each object
        labels[1, 1:9] = labels[8, 1:9] = labels[1:9, 1] = labels[1:9, 8] = VOC_BORDER
        labels[9, 11:21] = labels[16, 11:21] = labels[9:17, 11] = labels[9:17, 20] = VOC_BORDER
    return objects, classes


@pytest.fixture()
def voc_root(tmp_path: Path) -> Path:
    for folder in ("JPEGImages", "SegmentationObject", "SegmentationClass", "ImageSets/Segmentation"):
        (tmp_path / folder).mkdir(parents=True)
    objects, classes = _masks()
    for name in ("a", "b", "unlabelled"):
        array = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
        Image.fromarray(array).save(tmp_path / "JPEGImages" / f"{name}.jpg")
    for name in ("a", "b"):
        _palette_png(tmp_path / "SegmentationObject" / f"{name}.png", objects)
        _palette_png(tmp_path / "SegmentationClass" / f"{name}.png", classes)
    (tmp_path / "ImageSets/Segmentation/val.txt").write_text("a\nb\n")
    (tmp_path / "ImageSets/Segmentation/trainaug.txt").write_text("a\nunlabelled\n")
    return tmp_path


def test_border_becomes_ignore_and_objects_are_renumbered(voc_root):
    sample = VOCSegmentation(voc_root, split="val")[0]
    objects, classes = _masks()
    border = objects == VOC_BORDER
    assert np.array_equal(sample.ignore_mask.numpy(), border)
    instance = sample.instance_mask.numpy()
    assert (instance[border] == 0).all() and (sample.semantic_mask.numpy()[border] == 0).all()
    assert (instance[objects == 3] == 1).all() and (instance[objects == 7] == 2).all()
    assert sample.class_ids.tolist() == [PERSON, CAR]
    assert np.array_equal(sample.semantic_mask.numpy(), np.where(border, 0, classes))
    assert sample.meta["object_ids"] == [3, 7]
    assert sample.boxes[0].tolist() == pytest.approx([2 / W, 2 / H, 8 / W, 8 / H])


def test_trainaug_images_without_masks_come_unannotated(voc_root):
    dataset = VOCSegmentation(voc_root, split="trainaug")
    assert len(dataset) == 2 and dataset[0].meta["has_masks"]
    bare = dataset[1]
    assert bare.meta["has_masks"] is False and bare.ignore_mask.all() and bare.num_objects == 0
    required = VOCSegmentation(voc_root, split="trainaug", require_masks=True)
    assert required[1].meta["replaces"] == 1
    assert "SegmentationObject/unlabelled.png" in required.skipped[0].file


def test_split_lists(voc_root):
    assert VOCSegmentation(voc_root, split="all").ids == ["a", "b"]
    (voc_root / "mine.txt").write_text("b\n")
    assert VOCSegmentation(voc_root, split_file="mine.txt").ids == ["b"]
    with pytest.raises(DatasetError, match="splits found: \\['trainaug', 'val'\\]"):
        VOCSegmentation(voc_root, split="train")


def test_mask_of_the_wrong_size_is_skipped(voc_root):
    _palette_png(voc_root / "SegmentationObject" / "a.png", np.zeros((H, W + 3), np.uint8))
    dataset = VOCSegmentation(voc_root, split="val")
    assert dataset[0].meta["image_id"] == "b"
    assert "label map is" in dataset.skipped[0].reason
    with pytest.raises(DatasetError, match="a.png"):
        VOCSegmentation(voc_root, split="val", strict=True)[0]


def test_real_voc_samples():
    root = FIXTURES / "voc_sample"
    if not root.is_dir():
        pytest.skip(f"real sample {root} is absent (shared fixtures are not part of the package)")
    dataset = VOCSegmentation(root, split="all", strict=True)
    assert len(dataset) == 3
    for index in range(len(dataset)):
        sample = dataset[index]
        name = dataset.ids[index]
        objects = np.asarray(Image.open(root / "SegmentationObject" / f"{name}.png")).astype(np.int64)
        classes = np.asarray(Image.open(root / "SegmentationClass" / f"{name}.png")).astype(np.int64)
        void = (objects == VOC_BORDER) | (classes == VOC_BORDER)
        assert np.array_equal(sample.ignore_mask.numpy(), void)
        assert (sample.instance_mask.numpy()[void] == 0).all()
        ids = sorted(set(np.unique(objects).tolist()) - {0, VOC_BORDER})
        assert sample.num_objects == len(ids)
        for m, original in enumerate(ids):
            region = objects == original
            assert np.array_equal(sample.instance_mask.numpy() == m + 1, region)
            assert sample.class_ids[m] == np.bincount(classes[region & ~void]).argmax()
        assert np.array_equal(sample.semantic_mask.numpy(), np.where(void, 0, classes))
    assert any(dataset[i].ignore_mask.any() for i in range(len(dataset)))
