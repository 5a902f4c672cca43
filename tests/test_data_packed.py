"""Packed tar shards: exact round trip, resumable atomic conversion, worker-safe reading."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from slotlab.data.folder import ImageFolder
from slotlab.data.imageio import DatasetError
from slotlab.data.packed import MANIFEST_FILE, PackedDataset, convert, index_name, shard_name
from slotlab.data.sample import collate
from slotlab.data.sample_transforms import resize_center_crop

H, W = 18, 26
NUM_IMAGES = 7
BAD = 4  # index of the corrupt image


@pytest.fixture()
def source(tmp_path: Path) -> ImageFolder:
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    ys, xs = np.mgrid[0:H, 0:W]
    for k in range(NUM_IMAGES):
        smooth = np.stack([xs * 9 + k * 20, ys * 12, (xs + ys) * 4 + 40], axis=-1)  # JPEG-friendly content
        Image.fromarray(smooth.clip(0, 255).astype(np.uint8)).save(images / f"{k}.png")
        labels = np.zeros((H, W), np.uint8)
        labels[k : k + 6, 2:9] = 1
        labels[3:12, 12 + k % 3 : 20] = 2
        labels[0, :] = 255
        Image.fromarray(labels).save(masks / f"{k}.png")
    (images / f"{BAD}.png").write_bytes(b"not a png")
    return ImageFolder(images, masks=str(masks), ignore_value=255)


def _assert_same(a, b) -> None:
    for name in ("image", "instance_mask", "semantic_mask", "ignore_mask", "class_ids", "boxes"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert a.caption == b.caption and a.meta["file"] == b.meta["file"]


def test_png_round_trip_is_exact_and_bad_samples_are_listed(source, tmp_path):
    manifest = convert(source, tmp_path / "packed", shard_size=3, progress=False, source="folder:x")
    assert manifest["shards"] == [shard_name(0), shard_name(1), shard_name(2)]
    assert manifest["packed"] == NUM_IMAGES - 1 and [s["index"] for s in manifest["skipped"]] == [BAD]
    packed = PackedDataset(tmp_path / "packed")
    assert len(packed) == NUM_IMAGES - 1 and packed.class_names == source.class_names
    sources = [i for i in range(NUM_IMAGES) if i != BAD]
    for position, index in enumerate(sources):
        _assert_same(packed[position], source.load(index))
    with tarfile.open(tmp_path / "packed" / shard_name(0)) as tar:
        assert "000000000.image.png" in tar.getnames() and "000000000.meta.json" in tar.getnames()


def test_conversion_applies_the_transform_and_jpeg_is_close(source, tmp_path):
    source.transform = resize_center_crop(16)
    convert(source, tmp_path / "jpeg", shard_size=4, image_format="jpeg", progress=False)
    packed = PackedDataset(tmp_path / "jpeg")
    reference = source.load_transformed(0)
    assert packed[0].image.shape == (3, 16, 16)
    assert torch.equal(packed[0].instance_mask, reference.instance_mask)
    assert (packed[0].image - reference.image).abs().mean() < 0.05


def test_interrupted_conversion_resumes_only_unfinished_shards(source, tmp_path):
    out = tmp_path / "packed"
    convert(source, out, shard_size=3, progress=False)
    first_shard_time = os.stat(out / shard_name(0)).st_mtime_ns
    (out / MANIFEST_FILE).unlink()  # as if killed while writing shard 2
    (out / shard_name(2)).unlink()
    (out / (shard_name(2) + ".partial")).write_bytes(b"half a shard")
    with pytest.raises(DatasetError, match="did not finish"):
        PackedDataset(out)
    loads = []
    original = source.load
    source.load = lambda index: loads.append(index) or original(index)
    convert(source, out, shard_size=3, progress=False)
    assert loads == [6]
    assert os.stat(out / shard_name(0)).st_mtime_ns == first_shard_time
    assert not (out / (shard_name(2) + ".partial")).exists()
    assert len(PackedDataset(out)) == NUM_IMAGES - 1


def test_resume_with_other_settings_is_refused(source, tmp_path):
    convert(source, tmp_path / "packed", shard_size=3, progress=False)
    with pytest.raises(DatasetError, match="other settings"):
        convert(source, tmp_path / "packed", shard_size=4, progress=False)


def test_parallel_conversion_and_worker_reads_match(source, tmp_path):
    convert(source, tmp_path / "packed", shard_size=3, num_workers=2, progress=False)
    packed = PackedDataset(tmp_path / "packed")
    sequential = [packed[i] for i in range(len(packed))]
    loader = DataLoader(packed, batch_size=2, num_workers=2, collate_fn=collate,
                        shuffle=True, generator=torch.Generator().manual_seed(0))
    seen = {}
    for batch in loader:
        for k, meta in enumerate(batch.meta):
            seen[meta["packed_index"]] = batch.instance_mask[k]
    assert sorted(seen) == list(range(len(packed)))
    assert all(torch.equal(seen[i], sequential[i].instance_mask) for i in seen)


def test_damaged_shard_bytes_are_skipped(source, tmp_path):
    out = tmp_path / "packed"
    convert(source, out, shard_size=10, progress=False)
    index = json.loads((out / index_name(0)).read_text())
    offset, size = index["samples"]["000000001"]["image"]
    with open(out / shard_name(0), "r+b") as f:
        f.seek(offset)
        f.write(b"\0" * size)
    packed = PackedDataset(out)
    assert packed[1].meta["replaces"] == 1 and "does not decode" in packed.skipped[0].reason
