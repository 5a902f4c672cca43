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


SMALL_NETWORK = ("model.network={channels: 16, skip_channels: 8, dim: 16, dilations: [1, 2], output_stride: 4}",)
NON_SLOT = {  # preset: (whether it has masks to evaluate, overrides that keep it small)
    "segmenter-scenes-tiny": (False, ()),
    "vqvae-scenes-tiny": (False, ("model.image_size=32", "model.width=8")),
    "ssl-regions-scenes-tiny": (False, (*SMALL_NETWORK, "model.image_size=32", "model.projector_hidden=16")),
    "ssl-scenes-tiny": (True, (*SMALL_NETWORK, "model.image_size=32", "model.prototypes=8", "model.image_prototypes=8",
                               "model.head_hidden=16", "model.head_bottleneck=8")),
}


@pytest.mark.parametrize("preset", NON_SLOT)
def test_a_model_without_slots_evaluated_while_training(preset, tmp_path, caplog):
    """A grouping without slots (self-distillation's prototypes) is scored and pictured; a model
    without masks trains on, and the log says why it is not evaluated."""
    from slotlab.config import load_preset

    has_masks, small = NON_SLOT[preset]
    raw = load_preset(preset)
    overrides = ["data.train=scenes?split=train&size=8&resolution=32", "data.val=scenes?split=val&size=4&resolution=32",
                 "data.batch_size=4", "stages.0.steps=2", "stages.0.warmup_steps=0", "checkpoint_every=2",
                 "eval_every=2", "log_with=[tensorboard]", *small]
    with caplog.at_level("WARNING", logger="slotlab.train"):
        result = train(build_train_config(raw, overrides), tmp_path / "run", progress=False)
    assert result.steps == 2
    log = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evaluations = [r for r in log if "eval" in r]
    skipped = f"eval_every=2: a {raw['method']!r} model has no masks to score or picture" in caplog.text
    if has_masks:
        assert [r["step"] for r in evaluations] == [2] and 0 <= evaluations[0]["eval"]["mbo_i"] <= 1
        assert [p.step for p in events(tmp_path / "run").Images("overlays")] == [2] and not skipped
    else:
        assert not evaluations and skipped, caplog.text
        assert "overlays" not in events(tmp_path / "run").Tags()["images"]
