"""Experiment tracking: log_with sends the JSONL log's scalars and, at each evaluation, the
overlay picture to accelerate's trackers; TensorBoard's event files are read back."""

import json

import pytest

from slotlab.config import ConfigError
from slotlab.train.config import build_train_config
from slotlab.train.tracking import PROJECT
from slotlab.train.trainer import train

from tests.conftest import tiny_train_config


def events(directory):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(directory / PROJECT), size_guidance={"scalars": 0, "images": 0})
    accumulator.Reload()
    return accumulator


def test_tensorboard_receives_the_jsonl_scalars_and_the_overlays_at_each_evaluation(tmp_path):
    config = build_train_config(tiny_train_config(steps=4, log_every=1, eval_every=2, log_with=["tensorboard"]))
    train(config, tmp_path / "run", progress=False)
    log = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    board = events(tmp_path / "run")
    trained = [r for r in log if "loss" in r]
    assert [e.step for e in board.Scalars("loss")] == [r["step"] for r in trained] == [1, 2, 3, 4]
    assert [e.value for e in board.Scalars("loss")] == pytest.approx([r["loss"] for r in trained])
    assert [e.step for e in board.Scalars("lr/grouping")] == [1, 2, 3, 4]
    evaluations = [r for r in log if "eval" in r]
    assert [r["step"] for r in evaluations] == [2, 4]
    assert [e.value for e in board.Scalars("eval/mbo_i")] == pytest.approx([r["eval"]["mbo_i"] for r in evaluations])
    pictures = board.Images("overlays")
    assert [p.step for p in pictures] == [2, 4] and pictures[0].width > pictures[0].height / 8


def test_the_jsonl_log_needs_no_tracker_and_unknown_trackers_are_refused(tmp_path):
    train(build_train_config(tiny_train_config(steps=2)), tmp_path / "plain", progress=False)
    assert not list((tmp_path / "plain").rglob("events.out.tfevents.*"))
    with pytest.raises(ConfigError, match="unknown tracker.*'tensorbored'"):
        build_train_config(tiny_train_config(log_with=["tensorbored"]))
