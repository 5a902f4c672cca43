"""Robust image reading and the skip-and-replace policy of file datasets."""

from __future__ import annotations

import logging
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from slotlab.data.imageio import (
    BadSampleError,
    DatasetError,
    FileDataset,
    make_sample,
    read_image,
    read_label_map,
    relabel_consecutive,
)
from slotlab.data.sample import Sample, boxes_from_instance_mask, collate


def _rgb(h: int = 12, w: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _png48(path: Path, rgb16: np.ndarray) -> None:
    """Write a 16-bit-per-channel RGB PNG by hand (Pillow cannot write one)."""
    h, w, _ = rgb16.shape
    raw = b"".join(b"\x00" + rgb16[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)


def test_rgb_png_round_trips_exactly(tmp_path):
    array = _rgb()
    Image.fromarray(array).save(tmp_path / "a.png")
    image = read_image(tmp_path / "a.png")
    assert image.shape == (3, 12, 16) and image.dtype == torch.float32
    assert torch.equal((image * 255).round().byte().permute(1, 2, 0), torch.from_numpy(array))


def test_grayscale_becomes_three_equal_channels(tmp_path):
    grey = _rgb()[..., 0]
    Image.fromarray(grey, mode="L").save(tmp_path / "g.png")
    image = read_image(tmp_path / "g.png")
    assert image.shape == (3, 12, 16)
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])
    assert torch.allclose(image[0], torch.from_numpy(grey).float() / 255)


def test_rgba_drops_alpha(tmp_path):
    array = np.concatenate([_rgb(), np.full((12, 16, 1), 7, np.uint8)], axis=-1)
    Image.fromarray(array, mode="RGBA").save(tmp_path / "a.png")
    image = read_image(tmp_path / "a.png")
    assert torch.allclose(image, torch.from_numpy(array[..., :3]).permute(2, 0, 1).float() / 255)


def test_16bit_grey_is_scaled_not_clipped(tmp_path):
    grey = np.array([[0, 100, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(grey).save(tmp_path / "g16.png")
    image = read_image(tmp_path / "g16.png")
    assert torch.allclose(image[0, 0], torch.tensor([0, 100, 32768, 65535]) / 65535.0)
    assert image.max() == 1.0 and 0 < image[0, 0, 1] < 1 / 255  # a value 8-bit conversion would lose


def test_16bit_rgb_is_scaled(tmp_path):
    rgb16 = np.zeros((2, 3, 3), np.uint16)
    rgb16[..., 0], rgb16[..., 1] = 65535, 32768
    _png48(tmp_path / "c48.png", rgb16)
    image = read_image(tmp_path / "c48.png")
    assert torch.allclose(image[:, 0, 0], torch.tensor([1.0, 128 / 255, 0.0]))


def test_palette_image_becomes_its_colours(tmp_path):
    indices = np.array([[0, 1], [1, 0]], np.uint8)
    image = Image.fromarray(indices)
    image.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    image.save(tmp_path / "p.png")
    assert torch.allclose(read_image(tmp_path / "p.png")[:, 0, 1], torch.tensor([200, 100, 50]) / 255.0)


@pytest.mark.parametrize("kind", ["truncated_jpeg", "truncated_png", "garbage", "empty", "missing"])
def test_bad_files_raise_bad_sample_error_naming_the_file(tmp_path, kind):
    path = tmp_path / f"{kind}.img"
    if kind.startswith("truncated"):
        fmt = "JPEG" if kind.endswith("jpeg") else "PNG"
        Image.fromarray(_rgb(64, 64)).save(path, format=fmt)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "garbage":
        path.write_bytes(b"this is not an image" * 10)
    elif kind == "empty":
        path.write_bytes(b"")
    with pytest.raises(BadSampleError) as info:
        read_image(path)
    assert info.value.file == str(path) and str(path) in str(info.value)


def test_image_above_max_pixels_is_refused_before_decoding(tmp_path):
    Image.fromarray(_rgb(100, 100)).save(tmp_path / "big.png")
    with pytest.raises(BadSampleError, match="max_pixels"):
        read_image(tmp_path / "big.png", max_pixels=99 * 100)
    assert read_image(tmp_path / "big.png", max_pixels=100 * 100).shape == (3, 100, 100)


def test_label_map_modes_and_size_check(tmp_path):
    labels = np.array([[0, 1, 2], [255, 2, 0]], np.uint8)
    palette_image = Image.fromarray(labels)
    palette_image.putpalette(list(range(256)) * 3)  # an L image with a palette becomes P, indices kept
    palette_image.save(tmp_path / "p.png")
    Image.fromarray(labels.astype(np.uint16) * 200).save(tmp_path / "i16.png")
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[0, 1] = (1, 2, 3)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    assert np.array_equal(read_label_map(tmp_path / "p.png"), labels)
    assert np.array_equal(read_label_map(tmp_path / "i16.png"), labels.astype(np.int64) * 200)
    assert read_label_map(tmp_path / "rgb.png")[0, 1] == 1 + 256 * 2 + 256 * 256 * 3
    with pytest.raises(BadSampleError, match="label map is 3x2 but the image is 4x2"):
        read_label_map(tmp_path / "p.png", size=(2, 4))


def test_relabel_consecutive_keeps_order_and_excludes():
    ids = np.array([[0, 7, 7], [3, 255, 9]])
    labels, original = relabel_consecutive(ids, exclude=(0, 255))
    assert original.tolist() == [3, 7, 9]
    assert labels.tolist() == [[0, 2, 2], [1, 0, 3]]


def test_make_sample_derives_semantics_and_boxes():
    instance = np.array([[0, 1, 1], [2, 2, 0]])
    sample = make_sample(torch.zeros(3, 2, 3), instance, [5, 9])
    assert sample.semantic_mask.tolist() == [[0, 5, 5], [9, 9, 0]]
    assert torch.equal(sample.boxes, boxes_from_instance_mask(sample.instance_mask, 2))
    assert not sample.ignore_mask.any()


class _Flaky(FileDataset):
    """Samples 0..n-1 whose image is a constant equal to the index; ``bad`` indices fail."""

    name = "flaky"

    def __init__(self, n: int, bad: set[int], **kwargs) -> None:
        super().__init__(**kwargs)
        self.n, self.bad, self.loads = n, bad, []

    def __len__(self) -> int:
        return self.n

    def load(self, index: int) -> Sample:
        self.loads.append(index)
        if index in self.bad:
            raise BadSampleError(f"/data/file_{index}.jpg", "corrupt or truncated image")
        return make_sample(torch.full((3, 4, 4), float(index)), np.zeros((4, 4), np.int64), [], meta={"index": index})


def test_bad_sample_is_replaced_by_the_next_valid_one_with_one_warning(caplog):
    dataset = _Flaky(5, bad={1, 2})
    with caplog.at_level(logging.WARNING, logger="slotlab.data"):
        sample = dataset[1]
        again = dataset[2]
    assert sample.meta["index"] == 3 and sample.meta["replaces"] == 1
    assert [s["file"] for s in sample.meta["skipped"]] == ["/data/file_1.jpg", "/data/file_2.jpg"]
    assert again.meta["index"] == 3 and "skipped" not in again.meta  # known-bad: no second read, no warning
    assert dataset.loads.count(1) == 1 and dataset.loads.count(2) == 1
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2 and all("\n" not in w for w in warnings)
    assert "/data/file_1.jpg" in warnings[0]
    assert [s.index for s in dataset.skipped] == [1, 2]
    expected = {"index": 1, "file": "/data/file_1.jpg", "reason": "corrupt or truncated image"}
    assert dataset.report()["skipped"][0] == expected


def test_replacement_wraps_around_and_all_bad_is_an_error():
    assert _Flaky(3, bad={2})[2].meta["index"] == 0
    with pytest.raises(DatasetError, match="none of the 3 samples"):
        _Flaky(3, bad={0, 1, 2})[0]


def test_strict_turns_a_skip_into_an_error_naming_the_file():
    with pytest.raises(DatasetError, match="/data/file_1.jpg"):
        _Flaky(3, bad={1}, strict=True)[1]


def test_index_out_of_range():
    with pytest.raises(IndexError):
        _Flaky(3, bad=set())[3]
    assert _Flaky(3, bad=set())[-1].meta["index"] == 2


def test_dataloader_with_workers_survives_bad_samples():
    dataset = _Flaky(8, bad={0, 5})
    loader = DataLoader(dataset, batch_size=4, num_workers=2, collate_fn=collate)
    batches = list(loader)
    assert sum(len(b) for b in batches) == 8
    served = [m["index"] for b in batches for m in b.meta]
    assert 0 not in served and 5 not in served
    reported = {s["index"] for b in batches for m in b.meta for s in m.get("skipped", [])}
    assert reported == {0, 5}
