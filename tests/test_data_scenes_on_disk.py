"""ClevrTex, CLEVR-with-masks, MOVi frames and plain image folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from slotlab.data.clevrtex import ClevrMasks, ClevrTex
from slotlab.data.folder import ImageFolder
from slotlab.data.imageio import DatasetError
from slotlab.data.movi import MOViFrames
from tests.shared_dir import FIXTURES

H, W = 12, 16


def _image(path: Path, seed: int = 0, mode: str = "RGB") -> np.ndarray:
    array = np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)
    Image.fromarray(array).convert(mode).save(path)
    return array


def _indices(path: Path, labels: np.ndarray) -> None:
    image = Image.fromarray(labels.astype(np.uint8))
    image.putpalette(list(range(256)) * 3)
    image.save(path)


def _labels(seed: int) -> np.ndarray:
    labels = np.zeros((H, W), np.uint8)
    labels[1:5, 1:5] = 2 + seed % 3
    labels[6:10, 8:14] = 5
    return labels


# ----------------------------------------------------------------------------- ClevrTex


@pytest.fixture()
def clevrtex_root(tmp_path: Path) -> Path:
    for n in range(10):
        folder = tmp_path / "clevrtex_full" / str(n // 5)
        folder.mkdir(parents=True, exist_ok=True)
        _image(folder / f"CLEVRTEX_full_{n:06d}.png", seed=n, mode="RGBA")
        _indices(folder / f"CLEVRTEX_full_{n:06d}_flat.png", _labels(n))
    return tmp_path


def test_clevrtex_splits_follow_the_authors_fractions(clevrtex_root):
    names = {s: [p.name for p in ClevrTex(clevrtex_root, split=s).images] for s in ("test", "val", "train", "all")}
    assert names["test"] == ["CLEVRTEX_full_000000.png"]
    assert names["val"] == ["CLEVRTEX_full_000001.png"]
    assert len(names["train"]) == 8 and names["train"][0] == "CLEVRTEX_full_000002.png"
    assert len(names["all"]) == 10
    assert ClevrTex(clevrtex_root / "clevrtex_full", split="all").images == ClevrTex(clevrtex_root, split="all").images


def test_clevrtex_masks_become_instances(clevrtex_root):
    sample = ClevrTex(clevrtex_root, split="all")[3]
    labels = _labels(3)
    assert sample.meta["object_ids"] == [2, 5]
    assert np.array_equal(sample.instance_mask.numpy(), np.select([labels == 2, labels == 5], [1, 2], 0))
    assert sample.class_ids.tolist() == [1, 1] and sample.image.shape == (3, H, W)


def test_clevrtex_missing_mask_is_skipped_and_bad_options_are_errors(clevrtex_root):
    (clevrtex_root / "clevrtex_full" / "0" / "CLEVRTEX_full_000000_flat.png").unlink()
    dataset = ClevrTex(clevrtex_root, split="all")
    assert dataset[0].meta["replaces"] == 0 and "_flat.png" in dataset.skipped[0].file
    with pytest.raises(DatasetError, match="variant='bright'"):
        ClevrTex(clevrtex_root, variant="bright")
    with pytest.raises(DatasetError, match="split='dev'"):
        ClevrTex(clevrtex_root, split="dev")


# ----------------------------------------------------------------------------- CLEVR masks


def test_clevr_masks_overlaps_are_ignored(tmp_path):
    _image(tmp_path / "CLEVR_image_0.png")
    masks = np.zeros((4, H, W), bool)
    masks[0] = True
    masks[1, 0:6, 0:6] = True
    masks[2, 4:8, 4:8] = True  # overlaps mask 1
    for k, mask in enumerate(masks):
        Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / f"CLEVR_mask_0_{k}.png")  # mask 3 is empty
    sample = ClevrMasks(tmp_path)[0]
    assert sample.num_objects == 2
    assert np.array_equal(sample.ignore_mask.numpy(), masks[1] & masks[2])
    assert (sample.instance_mask.numpy()[masks[1] & ~masks[2]] == 1).all()


def test_real_clevr_masks():
    root = FIXTURES / "clevr_masks_sample"
    if not root.is_dir():
        pytest.skip(f"real sample {root} is absent (shared fixtures are not part of the package)")
    dataset = ClevrMasks(root, strict=True)
    assert len(dataset) == 2
    for index, number in enumerate(dataset.numbers):
        sample = dataset[index]
        assert sample.image.shape == (3, 240, 320)
        objects = [np.asarray(Image.open(root / f"CLEVR_mask_{number}_{k}.png")) > 0 for k in range(1, 11)]
        objects = [m for m in objects if m.any()]
        assert sample.num_objects == len(objects)
        for m, mask in enumerate(objects):
            assert np.array_equal(sample.instance_mask.numpy() == m + 1, mask)
        background = np.asarray(Image.open(root / f"CLEVR_mask_{number}_0.png")) > 0
        assert np.array_equal(sample.instance_mask.numpy() == 0, background)


# ----------------------------------------------------------------------------- MOVi


@pytest.fixture()
def movi_root(tmp_path: Path) -> Path:
    for video in ("video_0", "video_1"):
        folder = tmp_path / "validation" / video
        folder.mkdir(parents=True)
        for t in range(3):
            _image(folder / f"rgba_{t:05d}.png", seed=t, mode="RGBA")
            _indices(folder / f"segmentation_{t:05d}.png", _labels(t))
    return tmp_path


def test_movi_frames(movi_root):
    dataset = MOViFrames(movi_root)
    assert len(dataset) == 6
    sample = dataset[4]
    assert (sample.meta["video"], sample.meta["frame"]) == ("video_1", 1)
    assert sample.meta["object_ids"] == [3, 5]  # Kubric ids, stable across frames
    strided = MOViFrames(movi_root, frame_stride=2)
    assert [(v, t) for v, t, _ in strided.frames] == [("video_0", 0), ("video_0", 2), ("video_1", 0), ("video_1", 2)]


def test_movi_missing_segmentation_is_skipped(movi_root):
    (movi_root / "validation" / "video_0" / "segmentation_00001.png").unlink()
    dataset = MOViFrames(movi_root)
    assert dataset[1].meta["frame"] == 2 and "segmentation_00001.png" in dataset.skipped[0].file


# ----------------------------------------------------------------------------- folders


def test_folder_without_masks_is_unannotated(tmp_path):
    (tmp_path / "sub").mkdir()
    _image(tmp_path / "b.jpg")
    _image(tmp_path / "sub" / "a.png", mode="L")
    (tmp_path / "notes.txt").write_text("not an image")
    dataset = ImageFolder(tmp_path)
    assert [p.name for p in dataset.images] == ["b.jpg", "a.png"]
    sample = dataset[1]
    assert sample.image.shape == (3, H, W) and sample.meta["has_masks"] is False
    assert sample.ignore_mask.all() and sample.num_objects == 0


def test_folder_with_masks_and_ignore_value(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    _image(images / "a.jpg")
    _image(images / "b.jpg")
    labels = _labels(0)
    labels[0, :] = 255
    _indices(masks / "a.png", labels)
    dataset = ImageFolder(images, masks=str(masks), ignore_value=255)
    sample = dataset[0]
    assert sample.meta["has_masks"] and sample.num_objects == 2
    assert np.array_equal(sample.ignore_mask.numpy(), labels == 255)
    assert dataset[1].meta["has_masks"] is False


def test_folder_applies_exif_orientation(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(tmp_path / "phone.jpg", exif=exif)
    assert ImageFolder(tmp_path)[0].image.shape == (3, W, H)
    assert ImageFolder(tmp_path, exif_transpose=False)[0].image.shape == (3, H, W)


def test_folder_corrupt_image_is_skipped(tmp_path):
    _image(tmp_path / "a.jpg")
    (tmp_path / "b.jpg").write_bytes(b"\xff\xd8\xff garbage")
    dataset = ImageFolder(tmp_path)
    assert torch.equal(dataset[1].image, dataset[0].image)
    assert dataset.skipped[0].file.endswith("b.jpg")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no images"):
        ImageFolder(tmp_path / "empty")
