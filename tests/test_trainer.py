import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from safetensors.torch import load_file

from slotlab.train.config import build_train_config
from slotlab.io.checkpoints import checkpoint_dirs
from slotlab.train.stages import StepBatchSampler, stage_lr_scale
from slotlab.train.trainer import train
from slotlab.train.config import StageConfig
from slotlab.methods import ObjectCentricModel
from tests.conftest import tiny_train_config


def _run_cli(args, env_extra=None, **kw):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.update(env_extra or {})
    return subprocess.Popen([sys.executable, "-m", "slotlab.cli", *args], env=env, **kw)


def test_sampler_is_a_function_of_step_and_splits_processes():
    full = list(StepBatchSampler(20, 4, seed=1, start=0, stop=10))
    tail = list(StepBatchSampler(20, 4, seed=1, start=6, stop=10))
    assert full[6:] == tail
    epoch0 = sum(full[:5], [])
    assert sorted(epoch0) == list(range(20))  # one epoch covers every sample once
    r0 = list(StepBatchSampler(20, 2, seed=1, start=0, stop=5, rank=0, world=2))
    r1 = list(StepBatchSampler(20, 2, seed=1, start=0, stop=5, rank=1, world=2))
    assert [a + b for a, b in zip(r0, r1)] == full[:5]


def test_warmup_cosine_schedule():
    stage = StageConfig(steps=100, schedule="warmup_cosine", warmup_steps=10, final_lr_scale=0.1)
    assert stage_lr_scale(stage, 0) == pytest.approx(0.1)
    assert stage_lr_scale(stage, 9) == pytest.approx(1.0)
    assert stage_lr_scale(stage, 100) == pytest.approx(0.1)
    assert stage_lr_scale(StageConfig(steps=5), 3) == 1.0


def test_training_writes_checkpoints_log_and_model(tmp_path):
    config = build_train_config(tiny_train_config(steps=6))
    result = train(config, tmp_path / "run", progress=False)
    assert result.steps == 6
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3, 4, 5, 6]
    assert all(r["loss"] > 0 for r in lines)
    assert [p.name for p in checkpoint_dirs(tmp_path / "run")] == ["step-00000003", "step-00000006"]
    model = ObjectCentricModel.from_pretrained(tmp_path / "run" / "model")
    images = torch.rand(2, 3, 32, 32)
    d = model.decompose(images)
    assert d.masks.shape == (2, 4, 32, 32) and d.slots.shape == (2, 4, 16)
    torch.testing.assert_close(d.masks.sum(1), torch.ones(2, 32, 32))


LOSS_WINDOW = 5  # steps averaged at each end of the curve


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_loss_falls(seed, tmp_path):
    """Training lowers the loss: over 60 steps of the tiny config, the mean of the last steps
    is below the mean of the first ones, for each of three seeds (initialisation, data order
    and noise all change with the seed)."""
    config = build_train_config(tiny_train_config(steps=60, checkpoint_every=60), [f"seed={seed}"])
    train(config, tmp_path / "run", progress=False)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 60
    first, last = losses[:LOSS_WINDOW], losses[-LOSS_WINDOW:]
    assert sum(last) < 0.8 * sum(first), (first, last)


def test_existing_run_needs_resume_and_same_config(tmp_path):
    from slotlab.config import ConfigError

    train(build_train_config(tiny_train_config(steps=3)), tmp_path / "run", progress=False)
    with pytest.raises(ConfigError, match="--resume"):
        train(build_train_config(tiny_train_config(steps=3)), tmp_path / "run", progress=False)
    with pytest.raises(ConfigError, match="differs"):
        train(build_train_config(tiny_train_config(steps=3), ["seed=4"]), tmp_path / "run", resume=True, progress=False)


def test_nan_loss_stops_with_a_clear_message(tmp_path):
    from slotlab.train.trainer import NonFiniteLossError

    config = build_train_config(tiny_train_config(steps=50), ["stages.0.lr={grouping: 1.0e+30, decoder: 1.0e+30}",
                                                              "optim.grad_clip=null"])
    with pytest.raises(NonFiniteLossError, match="non-finite loss at step"):
        train(config, tmp_path / "run", progress=False)


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_a_stopped_run_resumes_to_match_an_uninterrupted_run(tmp_path, stop):
    """Killed (SIGKILL) or interrupted (Ctrl-C, SIGINT: exit code 130) mid-run, then resumed."""
    preset = tmp_path / "tiny.yaml"
    preset.write_text(yaml.safe_dump(tiny_train_config(steps=60, checkpoint_every=10)))
    straight = _run_cli(["train", "--preset", str(preset), "--out", str(tmp_path / "a"), "--no-eval"])
    assert straight.wait(timeout=600) == 0

    # Python turns SIGINT into KeyboardInterrupt only if it was not ignored when it started (as
    # it is for background jobs of a shell): restore the default for the victim.
    victim = _run_cli(["train", "--preset", str(preset), "--out", str(tmp_path / "b"), "--no-eval"],
                      stderr=subprocess.DEVNULL, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 300
    while not (tmp_path / "b" / "checkpoints" / "step-00000020").exists():
        assert victim.poll() is None, "training ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.05)
    victim.send_signal(stop)
    assert victim.wait(timeout=300) == (130 if stop == signal.SIGINT else -signal.SIGKILL)
    assert not (tmp_path / "b" / "model").exists()  # no output that looks complete

    resumed = _run_cli(["train", "--preset", str(preset), "--out", str(tmp_path / "b"), "--resume", "--no-eval"])
    assert resumed.wait(timeout=600) == 0
    a = load_file(str(tmp_path / "a" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 61))  # nothing lost or duplicated in the log


def _learned_queries_config(batch_size: int) -> dict:
    """The tiny config with learned slot queries: the slot initialisation draws no noise, whose
    stream is per process."""
    config = tiny_train_config(steps=4, checkpoint_every=2)
    config["model"]["slot_attention"]["init"] = "learned_queries"
    config["data"]["batch_size"] = batch_size
    return config


# Processes change only the order of float sums (gradients averaged across processes instead
# of one mean over the batch): the weights agree to ~1e-7 after 4 Adam steps of lr 1e-3, while
# a run on other samples ends ~1e-3 away (both measured; the test checks the second).
TWO_PROCESS_ATOL = 1e-5
# Shifting every slot by one amount leaves the softmax over slots unchanged, so these get a
# gradient of pure rounding noise, which Adam (eps 1e-8) turns into steps of up to ~1e-5: they
# differ between any two runs that sum in another order, and change no output.
SLOT_SHIFT_INVARIANT = {"decoder.mlp.2.bias": -1,  # the bias of the alpha logit, softmaxed over slots
                        "slot_attention.norm_slots.bias": slice(None)}  # added to every slot's query


@pytest.mark.slow
def test_two_process_run_matches_one_process_run_of_the_same_global_batch(tmp_path):
    """The same command under torchrun: 2 processes (gloo), each taking 2 samples of every
    global batch of 4, end with the weights of one process taking all 4."""
    preset = tmp_path / "two.yaml"
    preset.write_text(yaml.safe_dump(_learned_queries_config(batch_size=2)))
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
         "-m", "slotlab.cli", "train", "--preset", str(preset), "--out", str(tmp_path / "two"), "--no-eval"],
        env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    steps = [json.loads(line)["step"] for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]  # one log line per step, written by the main process only
    assert [p.name for p in checkpoint_dirs(tmp_path / "two")] == ["step-00000002", "step-00000004"]

    def weights(run: str) -> dict:
        """The run's final weights, the slot-shift invariant coordinates set to 0."""
        found = load_file(str(tmp_path / run / "model" / "model.safetensors"))
        for key, where in SLOT_SHIFT_INVARIANT.items():
            found[key][where] = 0
        return found

    train(build_train_config(_learned_queries_config(batch_size=4)), tmp_path / "one", progress=False)
    one, two = weights("one"), weights("two")
    assert one.keys() == two.keys()
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=0, atol=TWO_PROCESS_ATOL, msg=key)

    # The tolerance tells runs apart: one process on half of each batch ends elsewhere.
    train(build_train_config(_learned_queries_config(batch_size=2)), tmp_path / "half", progress=False)
    half = weights("half")
    assert max((half[k] - one[k]).abs().max().item() for k in one if one[k].numel()) > 10 * TWO_PROCESS_ATOL
