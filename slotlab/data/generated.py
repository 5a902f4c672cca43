"""GLASS generated data on disk: sharded, resumable, reproducible; read back as Samples.

Layout of a run directory::

    run.json                       settings of the run (checked on --resume)
    shard-00000/images/00000000.png
    shard-00000/masks/00000000.png pseudo mask: class id, 0 background, 255 uncertain
    shard-00000/manifest.jsonl     one JSON line per finished sample
    ...
    summary.json                   written when every sample is done

Sample i lives in shard i // shard_size and is generated from ``sample_seed(seed, i)``
alone, so a run can be split over processes (rank r makes the indices i with
i % world == r) and resumed. Files are written to a temporary name and renamed; the
manifest line is appended (one ``write`` on an O_APPEND file) only after both files
exist, so a sample is done exactly when its manifest line is. A shard is complete when
its manifest has a line for each of its indices.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from slotlab.data.imageio import FileDataset, make_sample, read_image, read_label_map
from slotlab.data.sample import IGNORE_INDEX, Sample
from slotlab.data.sample_transforms import SampleTransform
from slotlab.io.files import TMP_SUFFIX, OutputPathError, drop_unfinished_line, output_dir, write_atomic

RUN_FILE = "run.json"
SUMMARY_FILE = "summary.json"
MANIFEST_FILE = "manifest.jsonl"


class GeneratedDataError(ValueError):
    """A generated run directory is missing, unfinished, inconsistent or clashes with new settings."""


def sample_seed(run_seed: int, index: int) -> int:
    """Seed of sample ``index``: a hash of (run seed, index), so it never depends on which
    process makes the sample or in which order."""
    return int(np.random.SeedSequence([run_seed, index]).generate_state(1, dtype=np.uint64)[0] >> 1)


def shard_dir(root: Path, index: int, shard_size: int) -> Path:
    return root / f"shard-{index // shard_size:05d}"


def sample_files(index: int) -> tuple[str, str]:
    """Image and mask paths of a sample, relative to its shard directory."""
    return f"images/{index:08d}.png", f"masks/{index:08d}.png"


def png_bytes(array: np.ndarray) -> bytes:
    """PNG encoding of an (H, W, 3) or (H, W) uint8 array (deterministic bytes)."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _settings_difference(old: dict, new: dict, prefix: str = "") -> list[str]:
    keys = sorted(set(old) | set(new))
    diffs = []
    for key in keys:
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += _settings_difference(a, b, f"{prefix}{key}.")
        elif a != b:
            diffs.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return diffs


@dataclass(frozen=True)
class RunLayout:
    """Where the files of a run are and how many samples it has."""

    root: Path
    num: int
    shard_size: int

    @property
    def num_shards(self) -> int:
        return -(-self.num // self.shard_size)

    def shard(self, index: int) -> Path:
        return shard_dir(self.root, index, self.shard_size)

    def manifests(self) -> list[Path]:
        return [shard_dir(self.root, s * self.shard_size, self.shard_size) / MANIFEST_FILE for s in range(self.num_shards)]

    @classmethod
    def read(cls, root: str | Path) -> tuple["RunLayout", dict]:
        root = Path(root)
        path = root / RUN_FILE
        if not path.is_file():
            raise GeneratedDataError(f"{root} holds no generated run ({RUN_FILE} missing); create one with `slotlab generate`")
        settings = json.loads(path.read_text())
        return cls(root, int(settings["num"]), int(settings["shard_size"])), settings


def prepare_run(root: str | Path, settings: dict, resume: bool) -> RunLayout:
    """Create a run directory, or check it for ``resume`` and repair what a kill left.

    ``settings`` must hold ``num`` and ``shard_size``. Call on one process only (the main
    one), before any process writes samples.
    """
    root = Path(root)
    normalised = json.loads(json.dumps(settings))
    if resume:
        layout, old = RunLayout.read(root)
        diffs = _settings_difference(old, normalised)
        if diffs:
            raise GeneratedDataError(
                f"cannot resume {root}: its settings differ from this run's ({'; '.join(diffs)}); rerun with the "
                "original settings, or generate into a new --out"
            )
        _repair(layout)
        return layout
    if root.is_dir() and any(root.iterdir()):
        raise GeneratedDataError(f"output directory {root} exists and is not empty: pass --resume to continue it, or choose a new --out")
    output_dir(root)
    write_atomic(root / RUN_FILE, json.dumps(normalised, indent=2, sort_keys=True).encode())
    return RunLayout(root, int(settings["num"]), int(settings["shard_size"]))


def _repair(layout: RunLayout) -> None:
    """Drop a manifest's unfinished last line and temporary files of killed writers."""
    for manifest in layout.manifests():
        if manifest.is_file():
            drop_unfinished_line(manifest)
    for tmp in layout.root.glob(f"shard-*/*/.*{TMP_SUFFIX}"):
        tmp.unlink()


def read_records(layout: RunLayout) -> list[dict]:
    """Manifest records of every finished sample, sorted by index (duplicates are an error).

    A last line without its newline (a write cut short, or one in progress) is not done.
    """
    records: dict[int, dict] = {}
    for manifest in layout.manifests():
        if not manifest.is_file():
            continue
        lines = manifest.read_bytes().split(b"\n")[:-1]  # the part after the last newline is unfinished
        for number, line in enumerate(lines, 1):
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise GeneratedDataError(f"{manifest}:{number} is not JSON ({err}); the run is damaged") from err
            index = record["index"]
            if index in records:
                raise GeneratedDataError(f"{manifest}: sample {index} is recorded twice; the run is damaged")
            records[index] = record
    return [records[i] for i in sorted(records)]


class SampleWriter:
    """Writes samples of a prepared run: files first, then the manifest line."""

    def __init__(self, layout: RunLayout) -> None:
        self.layout = layout

    def write(self, index: int, image: np.ndarray, mask: np.ndarray, record: dict) -> dict:
        """Store one sample: image (H, W, 3) uint8, mask (H, W) uint8; returns its manifest record."""
        if not 0 <= index < self.layout.num:
            raise ValueError(f"sample index {index} outside 0..{self.layout.num - 1}")
        shard = self.layout.shard(index)
        image_file, mask_file = sample_files(index)
        record = {"index": index, "image": image_file, "mask": mask_file, **record}
        try:
            for sub in ("images", "masks"):
                (shard / sub).mkdir(parents=True, exist_ok=True)
            write_atomic(shard / image_file, png_bytes(image))
            write_atomic(shard / mask_file, png_bytes(mask))
            fd = os.open(shard / MANIFEST_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, (json.dumps(record, sort_keys=True) + "\n").encode())
            finally:
                os.close(fd)
        except OSError as err:  # a full disk: what is recorded stays valid (a cut manifest line is repaired on resume)
            raise OutputPathError(f"could not write sample {index} into {shard} ({err.strerror or err}); the samples "
                                  "written so far are kept: make room, then continue with --resume") from err
        return record


def summarize(layout: RunLayout, class_names: list[str]) -> dict:
    """Counts of a run: samples done, per-class image counts, mask coverage and uncertainty."""
    records = read_records(layout)
    histogram = {name: 0 for name in class_names}
    prompt_histogram = {name: 0 for name in class_names}
    coverage, ignore, missed = [], [], 0
    for record in records:
        pixels = record["pixels"]
        total = record["height"] * record["width"]
        for class_id in pixels["classes"]:
            histogram[class_names[int(class_id) - 1]] += 1
        for name in record["classes"]:
            prompt_histogram[name] += 1
        missed += len(record["classes"]) - len(pixels["classes"])
        coverage.append(sum(pixels["classes"].values()) / total)
        ignore.append(pixels["ignore"] / total)
    per_shard = np.bincount([r["index"] // layout.shard_size for r in records], minlength=layout.num_shards)
    shard_sizes = [min(layout.shard_size, layout.num - s * layout.shard_size) for s in range(layout.num_shards)]
    complete_shards = int(sum(done == size for done, size in zip(per_shard, shard_sizes)))
    return {
        "samples": len(records),
        "num": layout.num,
        "complete": len(records) == layout.num,
        "complete_shards": complete_shards,
        "shards": layout.num_shards,
        "images_per_class": histogram,
        "prompts_per_class": prompt_histogram,
        "prompt_classes_missing_from_mask": missed,
        "mean_class_coverage": float(np.mean(coverage)) if coverage else 0.0,
        "mean_ignore_fraction": float(np.mean(ignore)) if ignore else 0.0,
    }


def write_summary(layout: RunLayout, class_names: list[str]) -> dict:
    summary = summarize(layout, class_names)
    write_atomic(layout.root / SUMMARY_FILE, json.dumps(summary, indent=2).encode())
    return summary


def class_segments(semantic: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Class ids present (sorted) and a segment map numbering them 1..M in that order.

    Generated data has no instances: each class's region is one segment, which is what
    GLASS's semantic guidance matches slots to.
    """
    present = np.unique(semantic[semantic > 0])
    lookup = np.zeros(int(semantic.max()) + 1, dtype=np.int64)
    lookup[present] = np.arange(1, len(present) + 1)
    return present.astype(np.int64), lookup[semantic]


class GeneratedDataset(FileDataset):
    """A generated run read back as Samples (spec form ``generated:ROOT`` once registered).

    semantic_mask = pseudo mask with uncertain pixels (255) set to background, and those
    pixels in ignore_mask; class_ids = the classes present in the mask; instance_mask =
    one segment per class (generated data has no instance masks: see ``class_segments``);
    caption = the generating prompt; meta has index, seed, prompt classes, the generator
    settings and what the backend recorded about the sample. ``class_names[i]`` names class id i (0 = "background").
    Unreadable files are skipped and replaced like in every ``FileDataset``.
    """

    name = "generated"

    def __init__(
        self, root: str | Path, allow_incomplete: bool = False, transform: SampleTransform | None = None,
        strict: bool = False,
    ) -> None:
        super().__init__(transform, strict)
        self.layout, settings = RunLayout.read(root)
        self.records = read_records(self.layout)
        if len(self.records) != self.layout.num and not allow_incomplete:
            raise GeneratedDataError(
                f"{root} is unfinished ({len(self.records)} of {self.layout.num} samples): finish it with "
                "`slotlab generate ... --resume`, or pass allow_incomplete=True"
            )
        self.class_names = ["background", *settings["class_names"]]

    def __len__(self) -> int:
        return len(self.records)

    def load(self, index: int) -> Sample:
        record = self.records[index]
        shard = self.layout.shard(record["index"])
        image = read_image(shard / record["image"])
        pseudo = read_label_map(shard / record["mask"], size=tuple(image.shape[-2:]))
        ignore = pseudo == IGNORE_INDEX
        semantic = np.where(ignore, 0, pseudo)
        class_ids, segments = class_segments(semantic)
        return make_sample(
            image, segments, class_ids, semantic_mask=semantic, ignore_mask=ignore, caption=record["prompt"],
            meta={
                "dataset": "generated", "index": record["index"], "seed": record["seed"],
                "prompt_classes": record["classes"], "generator": record["generator"],
                "generation": record["generation"], "instance_mask": "class segments",
            },
        )  # fmt: skip


def as_uint8_mask(mask: torch.Tensor) -> np.ndarray:
    """(H, W) int64 pseudo mask -> uint8 for PNG (ids must be < 256)."""
    if int(mask.max()) > 255 or int(mask.min()) < 0:
        raise ValueError("pseudo mask ids must lie in 0..255 to be stored as PNG")
    return mask.to(torch.uint8).numpy()
