"""A training run's directory under a user's mistakes and accidents: bad config values,
unusable --out paths, resuming damaged or incomplete runs, damaged checkpoint files, a full
disk. Each ends in a clear message (exit code 2 from the CLI), never in a traceback, and
nothing in a checkpoint is ever unpickled."""

import errno
import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from slotlab.cli import main
from slotlab.config import ConfigError
from slotlab.train.config import build_train_config
from slotlab.io.checkpoints import checkpoint_dirs
from slotlab.train.trainer import train
from slotlab.io.files import OutputPathError, output_dir, output_file
from tests.conftest import assert_clean_error, tiny_train_config
from tests.conftest import run_slotlab as slotlab


def tiny_run_config(**extra) -> dict:
    config = tiny_train_config(steps=4, checkpoint_every=2, **extra)
    config["data"] |= {"train": "scenes?split=train&size=8&resolution=32", "val": "scenes?split=val&size=4&resolution=32"}
    return config


@pytest.fixture(scope="module")
def preset(tmp_path_factory):
    path = tmp_path_factory.mktemp("preset") / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_run_config()))
    return path


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, preset):
    """A complete 4-step run (checkpoints at steps 2 and 4), trained in this process."""
    out = tmp_path_factory.mktemp("finished") / "run"
    torch.set_num_threads(1)
    train(build_train_config(yaml.safe_load(preset.read_text())), out, progress=False)
    return out


def copy_of(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "run"))


class Payload:
    """Unpickling this creates a folder: proof that a file's code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


# ---- config values ---------------------------------------------------------------------

@pytest.mark.parametrize("override, field, bound", [
    ("data.batch_size=0", "data.batch_size", ">= 1"),
    ("data.batch_size=-1", "data.batch_size", ">= 1"),
    ("data.num_workers=-1", "data.num_workers", ">= 0"),
    ("log_every=0", "log_every", ">= 1"),
    ("checkpoint_every=0", "checkpoint_every", ">= 1"),
    ("keep_checkpoints=-1", "keep_checkpoints", ">= 0"),
    ("stages.0.steps=0", "stages[0].steps", ">= 1"),
    ("stages.0.steps=-3", "stages[0].steps", ">= 1"),
    ("stages.0.lr.grouping=-1", "stages[0].lr.grouping", "> 0"),
    ("stages.0.lr.grouping=0", "stages[0].lr.grouping", "> 0"),
    ("stages.0.lr.grouping=.nan", "stages[0].lr.grouping", "> 0"),
    ("stages.0.warmup_steps=-1", "stages[0].warmup_steps", ">= 0"),
    ("stages.0.final_lr_scale=2", "stages[0].final_lr_scale", "in [0, 1]"),
    ("optim.betas=[0.9, 1.0]", "optim.betas[1]", "in [0, 1)"),
    ("optim.grad_clip=0", "optim.grad_clip", "> 0"),
    ("optim.weight_decay=-0.1", "optim.weight_decay", ">= 0"),
])
def test_out_of_range_config_values_name_the_field_and_range(override, field, bound):
    with pytest.raises(ConfigError) as caught:
        build_train_config(tiny_run_config(), [override])
    assert f"config.{field} must be {bound}" in str(caught.value)


def test_an_out_of_range_value_stops_train_before_it_writes_anything(tmp_path, preset):
    result = slotlab("train", "--preset", preset, "--out", tmp_path / "run", "--set", "stages.0.lr.network=-1",
                     "--set", "stages.0.lr.grouping=-1", "--no-eval")
    assert_clean_error(result, "stages[0].lr.grouping must be > 0")
    assert not (tmp_path / "run").exists()


def test_a_set_value_that_is_not_yaml_is_named(tmp_path, preset):
    result = slotlab("train", "--preset", preset, "--out", tmp_path / "run", "--set", "stages.0.steps=[1,", "--no-eval")
    assert_clean_error(result, "--set 'stages.0.steps=[1,'", "not valid YAML")
    assert not (tmp_path / "run").exists()


# ---- --out -------------------------------------------------------------------------------

def test_out_that_is_a_file_or_lies_under_one(tmp_path, preset):
    (tmp_path / "file").write_text("mine")
    assert_clean_error(slotlab("train", "--preset", preset, "--out", tmp_path / "file", "--no-eval"),
                       "is a file, not a directory")
    assert_clean_error(slotlab("train", "--preset", preset, "--out", tmp_path / "file" / "run", "--no-eval"),
                       f"lies under {tmp_path / 'file'}")
    assert (tmp_path / "file").read_text() == "mine"


def unwritable_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o500)
    if not os.access(folder, os.W_OK):
        return folder
    # root writes anywhere but on file systems it may not write to
    for candidate in (Path("/sys/slotlab-test"), Path("/proc/slotlab-test")):
        try:
            candidate.mkdir()
        except OSError:
            return candidate
        candidate.rmdir()
    pytest.skip("no unwritable directory available to this user")


def test_out_that_is_not_writable(tmp_path, preset):
    folder = unwritable_dir(tmp_path)
    assert_clean_error(slotlab("train", "--preset", preset, "--out", folder / "run", "--no-eval"),
                       f"--out {folder / 'run'}: cannot write into")
    with pytest.raises(OutputPathError, match="cannot write into"):
        output_dir(folder / "run")
    with pytest.raises(OutputPathError, match="is a directory"):
        output_file(tmp_path)


# ---- resuming ------------------------------------------------------------------------------

def test_resume_without_config_yaml_is_refused_and_writes_nothing(tmp_path, preset, finished_run):
    run = copy_of(finished_run, tmp_path)
    (run / "config.yaml").unlink()
    before = sorted(p.name for p in run.iterdir())
    for flags in (["--resume"], []):
        result = slotlab("train", "--preset", preset, "--out", run, *flags, "--no-eval")
        assert_clean_error(result, "holds checkpoints but no config.yaml", "restore")
    assert sorted(p.name for p in run.iterdir()) == before


def test_resume_repairs_a_half_written_last_log_line(tmp_path, preset, finished_run):
    run = copy_of(finished_run, tmp_path)
    shutil.rmtree(run / "model")
    shutil.rmtree(checkpoint_dirs(run)[-1])  # back to the checkpoint of step 2
    log = run / "metrics.jsonl"
    log.write_bytes(log.read_bytes()[:-25])  # the step-4 line cut short by a kill
    result = slotlab("train", "--preset", preset, "--out", run, "--resume", "--no-eval")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "dropped its last line" in result.stderr and str(log) in result.stderr
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2, 3, 4]
    assert "trained 2 steps" in result.stdout  # this process trained steps 3 and 4


def test_a_damaged_log_line_in_the_middle_names_the_line(tmp_path, finished_run):
    run = copy_of(finished_run, tmp_path)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    lines[1] = lines[1][:10]
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=r"metrics.jsonl:2 is not JSON"):
        train(build_train_config(tiny_run_config()), run, resume=True, progress=False)


def test_resume_on_an_empty_directory_says_it_starts_afresh(tmp_path, preset):
    result = slotlab("train", "--preset", preset, "--out", tmp_path / "new", "--resume", "--no-eval")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "holds no checkpoint yet; starting at step 0" in result.stderr


def test_after_a_failed_first_run_the_corrected_command_runs(tmp_path, preset):
    from slotlab.train.trainer import NonFiniteLossError

    run = tmp_path / "run"
    diverging = build_train_config(tiny_run_config(), ["stages.0.lr={grouping: 1.0e+30, decoder: 1.0e+30}",
                                                       "optim.grad_clip=null"])
    with pytest.raises(NonFiniteLossError):
        train(diverging, run, progress=False)
    assert (run / "config.yaml").is_file() and not checkpoint_dirs(run)
    result = slotlab("train", "--preset", preset, "--out", run, "--no-eval")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "stopped before its first checkpoint" in result.stderr
    assert yaml.safe_load((run / "config.yaml").read_text())["stages"][0]["lr"]["grouping"] == 1e-3
    assert [p.name for p in checkpoint_dirs(run)] == ["step-00000002", "step-00000004"]
    # and with --resume, which has nothing to continue
    with pytest.raises(NonFiniteLossError):
        train(diverging, tmp_path / "again", progress=False)
    result = slotlab("train", "--preset", preset, "--out", tmp_path / "again", "--resume", "--no-eval")
    assert result.returncode == 0 and "holds no checkpoint yet; starting at step 0" in result.stderr, result.stderr[-2000:]
    assert len(checkpoint_dirs(tmp_path / "again")) == 2


def test_a_finished_run_still_needs_resume_and_the_same_config(tmp_path, finished_run):
    run = copy_of(finished_run, tmp_path)
    with pytest.raises(ConfigError, match="pass --resume"):
        train(build_train_config(tiny_run_config()), run, progress=False)
    with pytest.raises(ConfigError, match="differs"):
        train(build_train_config(tiny_run_config(), ["seed=3"]), run, resume=True, progress=False)


def test_a_resumed_run_reports_the_steps_this_process_trained(tmp_path, finished_run):
    run = copy_of(finished_run, tmp_path)
    shutil.rmtree(checkpoint_dirs(run)[-1])
    result = train(build_train_config(tiny_run_config()), run, resume=True, progress=False)
    assert (result.steps, result.start_step, result.steps_trained) == (4, 2, 2)


# ---- damaged checkpoint files --------------------------------------------------------------

@pytest.mark.parametrize("damage", ["empty", "truncated", "pickle"])
def test_a_damaged_model_file_is_named_and_never_unpickled(tmp_path, finished_run, damage):
    run = copy_of(finished_run, tmp_path)
    weights = run / "model" / "model.safetensors"
    marker = tmp_path / "payload-ran"
    data = {"empty": b"", "truncated": weights.read_bytes()[:300], "pickle": pickle.dumps(Payload(marker))}[damage]
    weights.write_bytes(data)
    result = slotlab("eval", "--checkpoint", run / "model")
    assert_clean_error(result, str(weights))
    assert not marker.exists()


def test_a_pickle_as_optimizer_state_stops_resume_and_is_never_run(tmp_path, preset, finished_run):
    run = copy_of(finished_run, tmp_path)
    shutil.rmtree(run / "model")
    newest, earlier = checkpoint_dirs(run)[-1], checkpoint_dirs(run)[-2]
    marker = tmp_path / "payload-ran"
    torch.save({"state": Payload(marker)}, newest / "optimizer.pt")
    result = slotlab("train", "--preset", preset, "--out", run, "--resume", "--no-eval")
    assert_clean_error(result, str(newest / "optimizer.pt"), f"delete {newest}")
    assert not marker.exists() and str(earlier) in result.stderr


@pytest.mark.parametrize("config, message", [
    ({}, "has no 'method' or 'config' entry"),
    ({"method": "nosuch", "config": {}}, "unknown method 'nosuch'"),
])
def test_a_bad_model_config_json_names_what_is_missing(tmp_path, finished_run, capsys, config, message):
    run = copy_of(finished_run, tmp_path)
    (run / "model" / "config.json").write_text(json.dumps(config))
    assert main(["eval", "--checkpoint", str(run / "model")]) == 2
    err = capsys.readouterr().err
    assert message in err and str(run / "model" / "config.json") in err


# ---- a full disk -------------------------------------------------------------------------------

def test_a_full_disk_while_checkpointing_keeps_the_earlier_checkpoint(tmp_path, preset, capsys, monkeypatch):
    saves = []
    real_save = torch.save

    def save(obj, path, *args, **kwargs):
        saves.append(path)
        if len(saves) == 2:  # the checkpoint of step 4
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    run = tmp_path / "run"
    assert main(["train", "--preset", str(preset), "--out", str(run), "--no-eval"]) == 2
    err = capsys.readouterr().err
    assert "could not write the checkpoint of step 4" in err and "No space left on device" in err
    assert [p.name for p in checkpoint_dirs(run)] == ["step-00000002"]
    assert not list((run / "checkpoints").glob(".tmp-*")) and not (run / "model").exists()


def _saved_config(run: Path) -> dict:
    return yaml.safe_load((run / "config.yaml").read_text())


def test_a_run_saved_before_the_model_section_was_typed_resumes_when_it_is_the_same_config(tmp_path, finished_run):
    run = copy_of(finished_run, tmp_path)
    shutil.rmtree(checkpoint_dirs(run)[-1])
    old = _saved_config(run)
    old["model"] = tiny_run_config()["model"]  # as written then: the preset's keys only, no defaults
    (run / "config.yaml").write_text(yaml.safe_dump(old))
    assert yaml.safe_load((run / "config.yaml").read_text()) != _saved_config(finished_run)
    result = train(build_train_config(tiny_run_config()), run, resume=True, progress=False)
    assert (result.start_step, result.steps) == (2, 4)
    assert _saved_config(run) == _saved_config(finished_run)  # rewritten in today's form


def test_a_resume_with_another_config_names_what_differs(tmp_path, finished_run):
    run = copy_of(finished_run, tmp_path)
    with pytest.raises(ConfigError, match=r"differs from the one in .*config.yaml \(model.slot_attention.num_slots: "
                                          r"4 in the file, 3 now\)"):
        train(build_train_config(tiny_run_config(), ["model.slot_attention.num_slots=3"]), run, resume=True,
              progress=False)


def test_a_saved_config_this_slotlab_cannot_read_is_named_with_the_fix(tmp_path, preset, finished_run):
    run = copy_of(finished_run, tmp_path)
    old = _saved_config(run)
    old["model"]["slot_attention"]["old_knob"] = 1  # a key that no longer exists
    (run / "config.yaml").write_text(yaml.safe_dump(old))
    before = (run / "config.yaml").read_text()
    result = slotlab("train", "--preset", preset, "--out", run, "--resume", "--no-eval")
    assert_clean_error(result, f"--resume: {run / 'config.yaml'} cannot be read as a config of this slotlab")
    assert "old_knob" in result.stderr and "Edit" in result.stderr
    assert (run / "config.yaml").read_text() == before  # nothing rewritten
