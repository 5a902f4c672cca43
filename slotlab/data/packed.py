"""A packed copy of any dataset: tar shards with a per-shard offset index.

Why tar shards (webdataset style) rather than LMDB: they need nothing beyond the
standard library (LMDB would be a new compiled dependency), they are plain files that
``tar tf`` can list and any webdataset reader can stream, and a shard is the natural unit
of an atomic, resumable write. Random access, which samplers and shuffling need, comes
from the byte offsets stored beside each shard, so a read is one ``seek`` + ``read``.

Layout of ``OUT``::

    OUT/plan.json                  settings of the conversion (checked on resume)
    OUT/shard-000000.tar           members <key>.image.png|jpg, <key>.instance.png,
                                   <key>.semantic.png, <key>.ignore.png, <key>.meta.json
    OUT/shard-000000.index.json    key -> member -> (offset, size), and skipped samples
    OUT/manifest.json              written last: shards, counts, class names

Shard k holds source samples [k * shard_size, (k + 1) * shard_size). Each shard is
written under a temporary name and renamed when complete (index first, tar last), so
an interrupted conversion resumes by redoing only unfinished shards. Samples the source
cannot load are left out and listed in the index and the manifest.

Images are stored as 8-bit PNG (lossless for 8-bit sources) or JPEG (``image_format``);
label maps as 8- or 16-bit PNG. Convert with deterministic transforms only (resize,
centre crop); random augmentations belong to the reader (``PackedDataset(transform=)``).
The reader opens each shard lazily in the process that reads it, so every DataLoader
worker has its own file handles.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from slotlab.data.imageio import BadSampleError, DatasetError, FileDataset, SkippedSample
from slotlab.data.sample import Sample, class_names_of, dataset_name
from slotlab.data.sample_transforms import SampleTransform

ImageFormat = Literal["png", "jpeg"]
IMAGE_FORMATS = ("png", "jpeg")
PLAN_FILE = "plan.json"
MANIFEST_FILE = "manifest.json"
PACKED_VERSION = 1
JPEG_QUALITY = 95

_MEMBERS = ("image", "instance", "semantic", "ignore", "meta")
_UINT8_LIMIT = 256
_UINT16_LIMIT = 65536


def shard_name(k: int) -> str:
    return f"shard-{k:06d}.tar"


def index_name(k: int) -> str:
    return f"shard-{k:06d}.index.json"


def _write_json_atomic(path: Path, data: dict) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data, indent=1, default=str))
    os.replace(partial, path)


# ----------------------------------------------------------------------------- encoding


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def encode_labels(labels: torch.Tensor) -> bytes:
    """A non-negative integer label map as an 8- or 16-bit PNG."""
    array = labels.numpy()
    top = int(array.max(initial=0))
    if array.min(initial=0) < 0 or top >= _UINT16_LIMIT:
        raise ValueError(f"label values must be in [0, {_UINT16_LIMIT}) to pack, got max {top}")
    return _png(array.astype(np.uint8 if top < _UINT8_LIMIT else np.uint16))


def encode_image(image: torch.Tensor, image_format: ImageFormat) -> bytes:
    """(3, H, W) float in [0, 1] as 8-bit PNG or JPEG bytes."""
    array = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    if image_format == "png":
        return _png(array)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def encode_sample(sample: Sample, image_format: ImageFormat) -> dict[str, bytes]:
    """Member suffix -> bytes for one sample."""
    record = {
        "class_ids": sample.class_ids.tolist(),
        "boxes": sample.boxes.tolist(),
        "caption": sample.caption,
        "meta": sample.meta,
    }
    return {
        "image": encode_image(sample.image, image_format),
        "instance": encode_labels(sample.instance_mask),
        "semantic": encode_labels(sample.semantic_mask),
        "ignore": _png(sample.ignore_mask.numpy()),
        "meta": json.dumps(record, default=str).encode(),
    }


def _decode_png(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image)


def decode_sample(members: dict[str, bytes]) -> Sample:
    """Inverse of ``encode_sample``."""
    with Image.open(io.BytesIO(members["image"])) as image:
        array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    record = json.loads(members["meta"])
    return Sample(
        image=torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))),
        instance_mask=torch.from_numpy(_decode_png(members["instance"]).astype(np.int64)),
        semantic_mask=torch.from_numpy(_decode_png(members["semantic"]).astype(np.int64)),
        ignore_mask=torch.from_numpy(_decode_png(members["ignore"]).astype(bool)),
        class_ids=torch.tensor(record["class_ids"], dtype=torch.int64),
        boxes=torch.tensor(record["boxes"], dtype=torch.float32).reshape(-1, 4),
        caption=record["caption"],
        meta=record["meta"],
    )


# ----------------------------------------------------------------------------- writing


class _LoadOrReport(Dataset):
    """Wraps a dataset so that a bad sample comes back as a report instead of a replacement."""

    def __init__(self, dataset: Dataset, indices: list[int]) -> None:
        self.dataset = dataset
        self.indices = indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> tuple[int, Sample | None, SkippedSample | None]:
        index = self.indices[position]
        if not isinstance(self.dataset, FileDataset):
            return index, self.dataset[index], None
        try:
            return index, self.dataset.load_transformed(index), None
        except BadSampleError as err:
            if self.dataset.strict:
                raise DatasetError(f"{self.dataset.name} sample {index}: {err} (strict=True)") from err
            return index, None, SkippedSample(index, err.file, err.reason)


def _first(batch: list):
    return batch[0]


def _extension(suffix: str, image_format: ImageFormat) -> str:
    if suffix == "meta":
        return "json"
    return "jpg" if suffix == "image" and image_format == "jpeg" else "png"


def _write_shard(out_dir: Path, k: int, items, image_format: ImageFormat) -> dict:
    """Write shard k from (index, sample, skip) items atomically; return its index."""
    partial = out_dir / (shard_name(k) + ".partial")
    skipped = []
    with tarfile.open(partial, "w", format=tarfile.USTAR_FORMAT) as tar:
        for index, sample, skip in items:
            if sample is None:
                skipped.append(skip.as_dict())
                continue
            for suffix, data in encode_sample(sample, image_format).items():
                info = tarfile.TarInfo(f"{index:09d}.{suffix}.{_extension(suffix, image_format)}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    members: dict[str, dict[str, list[int]]] = {}
    with tarfile.open(partial, "r") as tar:
        for info in tar:
            key, suffix, _ = info.name.split(".")
            members.setdefault(key, {})[suffix] = [info.offset_data, info.size]
    index = {"shard": shard_name(k), "samples": members, "skipped": skipped}
    _write_json_atomic(out_dir / index_name(k), index)
    os.replace(partial, out_dir / shard_name(k))
    return index


def _check_plan(out_dir: Path, plan: dict) -> None:
    path = out_dir / PLAN_FILE
    if path.is_file():
        previous = json.loads(path.read_text())
        if previous != plan:
            raise DatasetError(
                f"{out_dir} holds a conversion with other settings ({previous}); "
                f"convert into another directory or delete {out_dir} first"
            )
    else:
        _write_json_atomic(path, plan)


def convert(
    dataset: Dataset,
    out_dir: str | Path,
    shard_size: int = 1000,
    image_format: ImageFormat = "png",
    num_workers: int = 0,
    source: str = "",
    progress: bool = True,
) -> dict:
    """Pack ``dataset`` (its transform applied) into tar shards under ``out_dir``; resumable.

    ``source`` is a free description (e.g. the dataset spec) stored in the manifest and
    checked on resume. Returns the manifest.
    """
    if image_format not in IMAGE_FORMATS:
        raise DatasetError(f"image_format={image_format!r} is not valid; choose one of {', '.join(IMAGE_FORMATS)}")
    if shard_size < 1:
        raise DatasetError(f"shard_size must be >= 1, got {shard_size}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    total = len(dataset)
    plan = {"version": PACKED_VERSION, "source": source, "samples": total, "shard_size": shard_size,
            "image_format": image_format}
    _check_plan(out_dir, plan)
    num_shards = (total + shard_size - 1) // shard_size
    indexes = []
    bar = tqdm(total=total, desc=f"packing into {out_dir}", disable=not progress, unit="sample")
    for k in range(num_shards):
        done = out_dir / index_name(k)
        if done.is_file() and (out_dir / shard_name(k)).is_file():
            indexes.append(json.loads(done.read_text()))
            bar.update(min(shard_size, total - k * shard_size))
            continue
        indices = list(range(k * shard_size, min((k + 1) * shard_size, total)))
        loader = DataLoader(_LoadOrReport(dataset, indices), batch_size=1, collate_fn=_first, num_workers=num_workers)
        indexes.append(_write_shard(out_dir, k, _progress(loader, bar), image_format))
    bar.close()
    manifest = {
        **plan,
        "shards": [index["shard"] for index in indexes],
        "packed": sum(len(index["samples"]) for index in indexes),
        "skipped": [s for index in indexes for s in index["skipped"]],
        "class_names": class_names_of(dataset),
        "name": dataset_name(dataset),
    }
    _write_json_atomic(out_dir / MANIFEST_FILE, manifest)
    return manifest


def _progress(items, bar):
    for item in items:
        bar.update(1)
        yield item


# ----------------------------------------------------------------------------- reading


class PackedDataset(FileDataset):
    """Read a directory written by :func:`convert`; each process opens its own shard handles."""

    name = "packed"

    def __init__(self, root: str | Path, transform: SampleTransform | None = None, strict: bool = False) -> None:
        super().__init__(transform, strict)
        self.root = Path(root)
        manifest_path = self.root / MANIFEST_FILE
        if not manifest_path.is_file():
            hint = "the conversion did not finish; run convert() again to resume it" if (
                self.root / PLAN_FILE).is_file() else "create it with slotlab.data.packed.convert()"
            raise DatasetError(f"{manifest_path} does not exist: {hint}")
        self.manifest = json.loads(manifest_path.read_text())
        if self.manifest.get("version") != PACKED_VERSION:
            raise DatasetError(f"{manifest_path} is format version {self.manifest.get('version')}, "
                               f"this slotlab reads version {PACKED_VERSION}; convert again")
        self.class_names = self.manifest["class_names"] or ["background"]
        self.shards = [self.root / name for name in self.manifest["shards"]]
        self.entries: list[tuple[int, str, dict[str, list[int]]]] = []
        for k in range(len(self.shards)):
            index = json.loads((self.root / index_name(k)).read_text())
            self.entries += [(k, key, members) for key, members in sorted(index["samples"].items())]
        self._handles: dict[int, io.BufferedReader] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.entries)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_handles"] = {}
        return state

    def _handle(self, k: int) -> io.BufferedReader:
        if self._pid != os.getpid():  # a forked worker must not share the parent's file offsets
            self._handles, self._pid = {}, os.getpid()
        if k not in self._handles:
            self._handles[k] = open(self.shards[k], "rb")
        return self._handles[k]

    def load(self, index: int) -> Sample:
        k, key, members = self.entries[index]
        handle = self._handle(k)
        data = {}
        for suffix in _MEMBERS:
            if suffix not in members:
                raise BadSampleError(self.shards[k], f"sample {key} has no {suffix} member")
            offset, size = members[suffix]
            handle.seek(offset)
            data[suffix] = handle.read(size)
            if len(data[suffix]) != size:
                raise BadSampleError(self.shards[k], f"sample {key}: {suffix} member is truncated")
        try:
            sample = decode_sample(data)
        except (OSError, ValueError, KeyError) as err:
            raise BadSampleError(self.shards[k], f"sample {key} does not decode ({err})") from err
        sample.meta["packed_index"] = index
        return sample

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles = {}
