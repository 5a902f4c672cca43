"""Sharded generated data: reproducibility, resume after SIGKILL, process splits, reading back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from slotlab.data.generated import (
    MANIFEST_FILE,
    RUN_FILE,
    SUMMARY_FILE,
    GeneratedDataError,
    GeneratedDataset,
    RunLayout,
    prepare_run,
    read_records,
    sample_seed,
    write_summary,
)
from slotlab.data.sample import IGNORE_INDEX
from slotlab.datagen.config import GenerateConfig
from slotlab.datagen.run import build_backend, build_prompt_maker, generate_indices, run_settings
from slotlab.cli.generate import build_config, main, preset_data
from slotlab.datagen.lexicon import label_set

REPO = Path(__file__).resolve().parents[1]

# A small, quick variant of the scenes-tiny preset: 32x32 scenes, shards of 40.
SMALL_PRESET = {
    "backend": "scenes",
    "num": 120,
    "seed": 3,
    "shard_size": 40,
    "prompts": {"source": "template", "label_set": "scenes", "dataset": "scenes?split=train&size=60&resolution=32"},
    "scenes": {"resolution": 32, "instances_per_class": [1, 2], "uncertain_radius": 1},
}


@pytest.fixture()
def preset(tmp_path) -> Path:
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(SMALL_PRESET))
    return path


def _files(root: Path) -> dict[str, bytes]:
    """Every file of a run except the manifests (whose line order depends on process timing)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != MANIFEST_FILE
    }


def _records(root: Path) -> list[dict]:
    layout, _ = RunLayout.read(root)
    return read_records(layout)


def _generate(preset: Path, out: Path, *extra: str) -> int:
    return main(["--preset", str(preset), "--out", str(out), "--no-progress", *extra])


def test_same_seed_same_files_other_seed_other_images(preset, tmp_path):
    assert _generate(preset, tmp_path / "a", "--num", "30") == 0
    assert _generate(preset, tmp_path / "b", "--num", "30") == 0
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    assert _records(tmp_path / "a") == _records(tmp_path / "b")
    assert _generate(preset, tmp_path / "c", "--num", "30", "--seed", "4") == 0
    a, c = _files(tmp_path / "a"), _files(tmp_path / "c")
    assert a["shard-00000/images/00000000.png"] != c["shard-00000/images/00000000.png"]


def test_sample_seed_depends_only_on_run_seed_and_index():
    seeds = {sample_seed(0, i) for i in range(1000)}
    assert len(seeds) == 1000
    assert sample_seed(0, 5) == sample_seed(0, 5) != sample_seed(1, 5)


def test_layout_summary_and_reading_back(preset, tmp_path):
    out = tmp_path / "run"
    assert _generate(preset, out) == 0
    layout, settings = RunLayout.read(out)
    assert layout.num_shards == 3
    records = _records(out)
    assert [r["index"] for r in records] == list(range(120))
    summary = json.loads((out / SUMMARY_FILE).read_text())
    assert summary["complete"] and summary["complete_shards"] == 3 and summary["samples"] == 120
    assert sum(summary["prompts_per_class"].values()) == sum(len(r["classes"]) for r in records)
    assert 0 < summary["mean_ignore_fraction"] < 0.5 and 0 < summary["mean_class_coverage"] < 1

    dataset = GeneratedDataset(out)
    assert len(dataset) == 120 and dataset.class_names[1:] == list(label_set("scenes").classes)
    for i in (0, 57, 119):
        sample, record = dataset[i], records[i]
        png = np.asarray(
            __import__("PIL.Image", fromlist=["Image"]).open(layout.shard(i) / record["mask"]), dtype=np.int64
        )
        assert sample.image.shape == (3, 32, 32)
        assert torch.equal(sample.ignore_mask, torch.from_numpy(png == IGNORE_INDEX))
        assert (sample.semantic_mask != IGNORE_INDEX).all()
        present = sorted(set(np.unique(png).tolist()) - {0, IGNORE_INDEX})
        assert sample.class_ids.tolist() == present
        # one segment per class, numbered in class_ids order
        for m, class_id in enumerate(sample.class_ids.tolist(), 1):
            assert torch.equal(sample.instance_mask == m, sample.semantic_mask == class_id)
        assert sample.caption == record["prompt"] and sample.meta["seed"] == record["seed"]
        assert set(present) <= set(record["class_ids"])


def test_existing_output_and_changed_settings_are_errors(preset, tmp_path, capsys):
    out = tmp_path / "run"
    assert _generate(preset, out, "--num", "10") == 0
    assert _generate(preset, out, "--num", "10") == 2
    assert "pass --resume" in capsys.readouterr().err
    assert _generate(preset, out, "--num", "10", "--seed", "9", "--resume") == 2
    err = capsys.readouterr().err
    assert "settings differ" in err and "seed" in err
    assert _generate(preset, tmp_path / "nothing", "--resume") == 2
    assert "holds no generated run" in capsys.readouterr().err


def test_unfinished_manifest_line_is_not_done_and_resume_repairs_it(preset, tmp_path):
    out = tmp_path / "run"
    assert _generate(preset, out, "--num", "20") == 0
    manifest = out / "shard-00000" / MANIFEST_FILE
    lines = manifest.read_bytes().splitlines(keepends=True)
    # As if killed during the last append and before sample 19's line was complete.
    manifest.write_bytes(b"".join(lines[:-1]) + lines[-1][:25])
    (out / "shard-00000" / "images" / ".00000019.png.123.tmp").write_bytes(b"partial")
    assert [r["index"] for r in _records(out)] == list(range(19))
    with pytest.raises(GeneratedDataError, match="unfinished"):
        GeneratedDataset(out)
    assert len(GeneratedDataset(out, allow_incomplete=True)) == 19
    assert _generate(preset, out, "--num", "20", "--resume") == 0
    assert manifest.read_bytes() == b"".join(lines)
    assert not list(out.rglob("*.tmp"))


def test_duplicate_records_are_reported(preset, tmp_path):
    out = tmp_path / "run"
    assert _generate(preset, out, "--num", "5") == 0
    manifest = out / "shard-00000" / MANIFEST_FILE
    manifest.write_bytes(manifest.read_bytes() + manifest.read_bytes().splitlines(keepends=True)[0])
    with pytest.raises(GeneratedDataError, match="recorded twice"):
        GeneratedDataset(out)


def test_process_split_gives_the_files_of_one_process(preset, tmp_path):
    """Ranks own i % world == rank; together they write what one process writes."""
    single = tmp_path / "single"
    assert _generate(preset, single, "--num", "30") == 0
    config = build_config(_args(preset, num=30))
    maker, prompt_record = build_prompt_maker(config.prompts)
    backend = build_backend(config)
    split = tmp_path / "split"
    layout = prepare_run(split, run_settings(config, prompt_record, backend), resume=False)
    labels = label_set("scenes")
    for rank in (1, 0):  # any order
        mine = list(range(rank, 30, 2))
        generate_indices(layout, mine, config.seed, maker, backend, labels, chunk=4)
    write_summary(layout, list(labels.classes))
    assert _files(split) == _files(single)
    assert _records(split) == _records(single)


def _args(preset: Path, num: int):
    from argparse import Namespace

    return Namespace(
        preset=str(preset), source=None, num=num, seed=None, weights=None, captioner_weights=None, prompts=None,
        thresholds=None, overrides=[],
    )


def _start(preset: Path, out: Path, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "slotlab.cli.generate", "--preset", str(preset), "--out", str(out),
               "--no-progress", *extra]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _count_lines(out: Path) -> int:
    return sum(m.read_bytes().count(b"\n") for m in out.glob(f"shard-*/{MANIFEST_FILE}"))


def _kill_when(process: subprocess.Popen, out: Path, lines: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while _count_lines(out) < lines:
        if process.poll() is not None:
            raise AssertionError(f"generation ended before it could be killed: {process.stderr.read().decode()}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("generation made no progress")
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()


def test_resume_after_sigkill_matches_an_uninterrupted_run(preset, tmp_path):
    data = preset_data(str(preset))
    data["num"] = 400
    preset.write_text(yaml.safe_dump(data))
    reference = tmp_path / "reference"
    assert _generate(preset, reference) == 0

    out = tmp_path / "killed"
    for lines in (60, 200):  # killed twice, at different points
        _kill_when(_start(preset, out, *(["--resume"] if lines > 60 else [])), out, lines)
        done = _records(out)
        assert len(done) < 400 and len({r["index"] for r in done}) == len(done)
    resumed = _start(preset, out, "--resume")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read().decode()

    assert [r["index"] for r in _records(out)] == list(range(400))  # none missing, none twice
    assert _records(out) == _records(reference)
    assert _files(out) == _files(reference)  # byte-identical images, masks, run.json, summary.json
    assert (out / RUN_FILE).read_bytes() == (reference / RUN_FILE).read_bytes()


def test_generate_config_errors_name_the_fix(preset):
    with pytest.raises(ValueError, match="section 'sd' is set"):
        GenerateConfig(backend="scenes", sd=__import__("slotlab.datagen.config", fromlist=["SDConfig"]).SDConfig())
    args = _args(preset, num=5)
    args.overrides = ["prompts.label_set=coco"]
    with pytest.raises(ValueError, match="label_set to 'scenes'"):
        build_config(args)


@pytest.mark.slow
def test_two_processes_with_torchrun(preset, tmp_path):
    single = tmp_path / "single"
    assert _generate(preset, single, "--num", "40") == 0
    out = tmp_path / "torchrun"
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun is not installed beside this Python")
    command = [str(torchrun), "--nproc_per_node", "2", "-m", "slotlab.cli.generate", "--preset", str(preset),
               "--out", str(out), "--set", "num=40", "--no-progress"]  # torchrun takes --num as its --numa-binding
    result = subprocess.run(command, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, timeout=170)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert _records(out) == _records(single)
    assert _files(out) == _files(single)


def test_unreadable_files_are_skipped_or_reported(preset, tmp_path):
    from slotlab.data.imageio import DatasetError

    out = tmp_path / "run"
    assert _generate(preset, out, "--num", "6") == 0
    (out / "shard-00000" / "masks" / "00000002.png").write_bytes(b"not a png")
    dataset = GeneratedDataset(out)
    sample = dataset[2]
    assert sample.meta["index"] == 3 and sample.meta["replaces"] == 2
    assert [s.index for s in dataset.skipped] == [2]
    with pytest.raises(DatasetError, match="00000002.png"):
        GeneratedDataset(out, strict=True)[2]


def test_a_full_disk_while_generating_keeps_what_was_written(preset, tmp_path, capsys, monkeypatch):
    import errno

    import slotlab.data.generated as generated

    writes, real_write = [], generated.write_atomic

    def write(path, data):
        writes.append(path)
        if len(writes) == 25:  # run.json, then image and mask of samples 0..10, then the mask of sample 11
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_write(path, data)

    monkeypatch.setattr(generated, "write_atomic", write)
    assert _generate(preset, tmp_path / "run", "--num", "30") == 2
    err = capsys.readouterr().err
    assert "could not write sample 11" in err and "No space left on device" in err and "--resume" in err
    assert [r["index"] for r in _records(tmp_path / "run")] == list(range(11))
    monkeypatch.setattr(generated, "write_atomic", real_write)
    assert _generate(preset, tmp_path / "run", "--num", "30", "--resume") == 0
    assert _generate(preset, tmp_path / "straight", "--num", "30") == 0
    assert _files(tmp_path / "run") == _files(tmp_path / "straight")
