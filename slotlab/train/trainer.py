"""One training loop for every method, on accelerate (CPU, one GPU, many GPUs/nodes).

Checkpoints are directories written under a temporary name and renamed into place, so a
run killed at any moment (even SIGKILL) resumes from its last complete checkpoint. The data
order is a pure function of (seed, step), so a resumed run sees exactly the batches an
uninterrupted run would.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedDataParallelKwargs, set_seed
from torch.utils.data import DataLoader, Sampler
from tqdm.auto import tqdm

from slotlab.config import ConfigError
from slotlab.io.hub import downloads_allowed
from slotlab.data.sample import collate
from slotlab.train.config import StageConfig, TrainConfig, resolve_precision, to_dict
from slotlab.train.tracking import RunLog
from slotlab.io.files import OutputPathError, drop_unfinished_line, output_dir, write_atomic
from slotlab.io.weights import CheckpointError, load_optimizer_state, load_weights
from slotlab.methods import ObjectCentricModel, get_method
from slotlab.ops.random import seeded_generator

CHECKPOINT_DIR = "checkpoints"
MODEL_DIR = "model"
LOG_FILE = "metrics.jsonl"
EVAL_SHOWN = 8  # validation images in the overlay picture of an evaluation during training
CONFIG_FILE = "config.yaml"

logger = logging.getLogger("slotlab.train")


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/inf; the message names the step and the terms."""


def build_model(config: TrainConfig) -> ObjectCentricModel:
    """The method's model; its pretrained parts may be fetched by hub id where ``allow_download``
    (or ``--allow-download``) says so. The inputs the config reads from earlier runs must be set."""
    config.require_inputs()
    with downloads_allowed(True) if config.allow_download else nullcontext():  # else as the caller allows
        return get_method(config.method)(config.model)


class StepBatchSampler(Sampler[list[int]]):
    """Yields this process's batch indices for steps [start, stop).

    Epoch e is a permutation seeded by (seed, e); step s takes the s-th slice of
    batch_size * world indices, of which process ``rank`` takes its share.
    """

    def __init__(self, length: int, batch_size: int, seed: int, start: int, stop: int, rank: int = 0, world: int = 1):
        self.length, self.batch_size, self.seed = length, batch_size, seed
        self.start, self.stop, self.rank, self.world = start, stop, rank, world
        self.global_batch = batch_size * world
        if length < self.global_batch:
            raise ConfigError(
                f"the training set has {length} samples, fewer than one batch "
                f"({batch_size} x {world} processes): lower data.batch_size or add data"
            )
        self.steps_per_epoch = length // self.global_batch

    def __len__(self) -> int:
        return self.stop - self.start

    def _permutation(self, epoch: int) -> torch.Tensor:
        g = seeded_generator(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.length, generator=g)

    def __iter__(self):
        epoch, perm = None, None
        for step in range(self.start, self.stop):
            e, offset = divmod(step, self.steps_per_epoch)
            if e != epoch:
                epoch, perm = e, self._permutation(e)
            first = offset * self.global_batch + self.rank * self.batch_size
            yield perm[first : first + self.batch_size].tolist()


def reseed(seed: int, step: int, rank: int) -> None:
    """Seed the random stream of process ``rank`` from ``step``: called at the start and after
    every checkpoint, so a resumed run draws the same noise as an uninterrupted one."""
    torch.manual_seed((seed * 1_000_003 + step) * 64 + rank)


def stage_lr_scale(stage: StageConfig, step_in_stage: int) -> float:
    """Multiplier of each group's base lr at ``step_in_stage`` (constant or warm-up + cosine)."""
    if stage.schedule == "constant":
        return min(1.0, (step_in_stage + 1) / stage.warmup_steps) if stage.warmup_steps else 1.0
    if step_in_stage < stage.warmup_steps:
        return (step_in_stage + 1) / stage.warmup_steps
    span = max(1, stage.steps - stage.warmup_steps)
    progress = min(1.0, (step_in_stage - stage.warmup_steps) / span)
    cosine = 0.5 * (1 + math.cos(math.pi * progress))
    return stage.final_lr_scale + (1 - stage.final_lr_scale) * cosine


def stage_at(config: TrainConfig, step: int) -> tuple[int, int]:
    """(stage index, step within stage) of global ``step``."""
    for i, stage in enumerate(config.stages):
        if step < stage.steps:
            return i, step
        step -= stage.steps
    return len(config.stages) - 1, config.stages[-1].steps


def configure_stage(model: ObjectCentricModel, stage: StageConfig, optim) -> torch.optim.Optimizer:
    """Freeze groups the stage does not list; one optimiser param group per listed group."""
    groups = model.parameter_groups()
    unknown = set(stage.lr) - set(groups)
    if unknown:
        raise ConfigError(
            f"stage {stage.name!r} sets lr for unknown parameter group(s) {sorted(unknown)}; "
            f"this model has {sorted(groups)}"
        )
    for name, params in groups.items():
        for p in params:
            p.requires_grad_(name in stage.lr)
    # In the model's order, not the config's: a resumed run's optimizer state must line up with
    # its groups however the preset orders its lr mapping.
    param_groups = [{"params": groups[n], "lr": stage.lr[n], "base_lr": stage.lr[n], "name": n} for n in groups if n in stage.lr]
    cls = torch.optim.AdamW if optim.name == "adamw" else torch.optim.Adam
    return cls(param_groups, betas=tuple(optim.betas), weight_decay=optim.weight_decay)


# ---- checkpoints -----------------------------------------------------------------------
def checkpoint_dirs(out: Path) -> list[Path]:
    root = out / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    done = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-") and (p / "state.json").is_file()]
    return sorted(done, key=lambda p: int(p.name.split("-")[1]))


def save_checkpoint(out: Path, model: ObjectCentricModel, optimizer, step: int, stage: int, keep: int) -> Path:
    root = out / CHECKPOINT_DIR
    final = root / f"step-{step:08d}"
    tmp = root / f".tmp-step-{step:08d}"
    shutil.rmtree(tmp, ignore_errors=True)
    with _writing(tmp, f"the checkpoint of step {step}", "the earlier checkpoints are intact: make room, then continue "
                  "with --resume"):
        model.save_pretrained(tmp)
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        (tmp / "state.json").write_text(json.dumps({"step": step, "stage": stage}))  # written last
    shutil.rmtree(final, ignore_errors=True)
    tmp.replace(final)
    for old in checkpoint_dirs(out)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


@contextmanager
def _writing(tmp: Path, what: str, kept: str):
    """Turn a failed write of ``what`` into ``tmp`` (a full disk...) into an error saying what
    is kept, and remove what was half written."""
    try:
        yield
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise OutputPathError(f"could not write {what} into {tmp.parent} ({err.strerror or err}); {kept}") from err


def load_checkpoint(path: Path, model: ObjectCentricModel) -> dict:
    """Restore weights; returns the saved state (step, stage) and the optimizer state."""
    weights = load_weights(path / "model.safetensors")
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{path / 'model.safetensors'} does not fit this run's model: {err}") from err
    try:
        state = json.loads((path / "state.json").read_text())
        state["step"], state["stage"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path / 'state.json'} is damaged ({err!r})") from err
    state["optimizer"] = load_optimizer_state(path / "optimizer.pt")
    return state


def truncate_log(path: Path, step: int) -> None:
    """Drop log lines written after ``step`` (they will be produced again), and a last line
    that a kill cut short."""
    if not path.is_file():
        return
    if drop_unfinished_line(path):
        logger.warning("%s: dropped its last line, cut short when the run was stopped", path)
    kept = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}:{number} is not JSON ({err}); the log is damaged: delete that line and "
                              "run again with --resume") from err
        if record.get("step", 0) <= step:
            kept.append(line)
    write_atomic(path, "".join(line + "\n" for line in kept))


def prepare_output(out: Path, config: TrainConfig, resume: bool) -> None:
    """Refuse to mix runs: a run with checkpoints continues only with --resume and the same
    config. A directory with a config but no checkpoint (a run that failed or was stopped
    before its first one) holds nothing to keep: it takes this run's config."""
    output_dir(out)
    saved = out / CONFIG_FILE
    text = yaml.safe_dump(to_dict(config), sort_keys=False)
    trained = bool(checkpoint_dirs(out)) or (out / MODEL_DIR).is_dir()
    if trained and not saved.is_file():
        raise ConfigError(
            f"{out} holds checkpoints but no {CONFIG_FILE}, so the config they were trained with is unknown: restore "
            f"{saved}, or choose another --out"
        )
    if trained and not resume:
        raise ConfigError(f"{out} already holds a training run: pass --resume to continue it, or choose another --out")
    if trained and yaml.safe_load(saved.read_text()) != yaml.safe_load(text):
        raise ConfigError(
            f"--resume: the config differs from the one in {saved}; resume with the same preset and --set values"
        )
    if resume and not trained:
        logger.warning("--resume: %s holds no checkpoint yet; starting at step 0", out)
    elif saved.is_file() and not trained and saved.read_text() != text:
        logger.warning("%s was the config of a run stopped before its first checkpoint; replaced by this run's", saved)
    write_atomic(saved, text)


def evaluate_during_training(model: ObjectCentricModel, val, config: TrainConfig, step: int, run_log: RunLog) -> None:
    """Metrics on ``val`` under the run's protocol into the log (``{"step", "eval": {...}}``) and the
    slot masks of its first images as the trackers' "overlays" picture; the model trains on after.
    Evaluation draws from its own seeded stream, so the training stream is left as it was."""
    from slotlab.data.sample import collate
    from slotlab.train.evaluate import evaluate_model
    from slotlab.viz.overlays import overlay_grid, segmentation

    result = evaluate_model(model, val, protocol=config.eval_protocol, progress=False, seed=config.seed)
    run_log.record({"step": step, "eval": result["metrics"]})
    shown = collate([val[i] for i in range(min(EVAL_SHOWN, len(val)))])
    masks = model.decompose(shown.image.to(model.device), seed=config.seed).masks.cpu()
    run_log.picture("overlays", overlay_grid(shown.image, {"ground truth": shown.instance_mask,
                                                           config.method: segmentation(masks)}), step)
    model.train()


@dataclass
class TrainResult:
    model: ObjectCentricModel
    steps: int
    train_seconds: float
    steps_per_second: float
    model_dir: Path
    precision: str  # what mixed_precision resolved to on this machine
    start_step: int = 0  # the step this process began at (> 0 when resumed): it trained steps - start_step

    @property
    def steps_trained(self) -> int:
        return self.steps - self.start_step


def train(
    config: TrainConfig, out: str | Path, resume: bool = False, progress: bool = True, dataset=None,
    bar_position: int = 0,
) -> TrainResult:
    """Train ``config`` into directory ``out`` (checkpoints, metrics.jsonl, model/).

    ``dataset`` overrides ``config.data.train`` (a Dataset of Samples); ``bar_position`` is the
    terminal line of the progress bar, so that runs in parallel processes do not overwrite
    each other's.
    """
    config.require_inputs()  # before anything is built or written
    out = Path(out)
    precision = resolve_precision(config.mixed_precision)
    # Accelerate keeps one precision per process and refuses another; runs in one process
    # (benchmarks, tests, the Python API) may differ. The process group is kept.
    AcceleratorState._reset_state()
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),  # under torchrun on CPUs this selects gloo
        mixed_precision="no" if precision == "fp32" else precision,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        log_with=list(config.log_with) or None,
        project_dir=str(out),
    )
    main = accelerator.is_main_process
    # Data and model first: a wrong path or size fails before anything is written.
    dataset = dataset if dataset is not None else config.data.dataset("train")
    set_seed(config.seed)
    model = build_model(config)
    if main:
        prepare_output(out, config, resume)
    accelerator.wait_for_everyone()

    step, opt_state, opt_stage = 0, None, None
    ckpts = checkpoint_dirs(out)
    if resume and ckpts:
        try:
            state = load_checkpoint(ckpts[-1], model)
        except CheckpointError as err:
            earlier = f" To continue from {ckpts[-2]} instead, delete {ckpts[-1]}." if len(ckpts) > 1 else ""
            raise CheckpointError(f"--resume: {err}{earlier}") from err
        step, opt_state, opt_stage = state["step"], state["optimizer"], state["stage"]
    reseed(config.seed, step, accelerator.process_index)
    log_path = out / LOG_FILE
    if main:
        truncate_log(log_path, step)
    run_log = RunLog(accelerator, log_path, to_dict(config), tuple(config.log_with))
    val = config.data.dataset("val") if config.eval_every else None
    model.to(accelerator.device).train()

    total = config.total_steps
    bar = tqdm(total=total, initial=step, desc=f"train {config.method}", disable=not (progress and main), unit="step", position=bar_position)
    start_time, start_step = time.perf_counter(), step
    while step < total:
        stage_index, in_stage = stage_at(config, step)
        stage = config.stages[stage_index]
        optimizer = configure_stage(model, stage, config.optim)
        model.set_loss_weights(stage.loss_weights)
        if opt_state is not None and opt_stage == stage_index:  # not across a stage boundary
            optimizer.load_state_dict(opt_state)
        opt_state = None
        wrapped, optimizer = accelerator.prepare(model, optimizer)
        stage_end = step - in_stage + stage.steps
        sampler = StepBatchSampler(
            len(dataset), config.data.batch_size, config.seed, step, stage_end,
            accelerator.process_index, accelerator.num_processes,
        )
        # Its own generator: creating the loader must not draw from the global stream (resume).
        workers_seed = seeded_generator(config.seed * 1_000_003 + step)
        loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate,
                            num_workers=config.data.num_workers, generator=workers_seed)
        trainable = [p for g in optimizer.param_groups for p in g["params"]]
        for batch in loader:
            in_stage = step - (stage_end - stage.steps)
            scale = stage_lr_scale(stage, in_stage)
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * scale
            batch = batch.to(accelerator.device)
            model.on_step(step, total)
            with accelerator.autocast():
                outputs = wrapped(batch)
                losses = model.losses(outputs, batch)
            loss = losses["loss"]
            if not torch.isfinite(loss):
                terms = {k: float(v.detach()) for k, v in losses.items()}
                raise NonFiniteLossError(
                    f"non-finite loss at step {step} (stage {stage.name!r}): {terms}. Lower the learning rate, "
                    f"enable optim.grad_clip, or train in full precision (mixed_precision=fp32); "
                    f"resume from the last checkpoint with --resume"
                )
            accelerator.backward(loss)
            if config.optim.grad_clip is not None:
                accelerator.clip_grad_norm_(trainable, config.optim.grad_clip, norm_type=config.optim.grad_clip_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            bar.update(1)
            if step % config.log_every == 0 or step == stage_end:
                values = {k: accelerator.reduce(v.detach().float(), "mean").item() for k, v in losses.items()}
                bar.set_postfix(loss=f"{values['loss']:.4f}")
                record = {"step": step, "stage": stage.name, "lr": {g["name"]: g["lr"] for g in optimizer.param_groups}}
                run_log.record(record | values)
            if step % config.checkpoint_every == 0 or step == stage_end:
                accelerator.wait_for_everyone()
                if main:
                    save_checkpoint(out, model, optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer,
                                    step, stage_index, config.keep_checkpoints)
                accelerator.wait_for_everyone()
                reseed(config.seed, step, accelerator.process_index)
            if val is not None and (step % config.eval_every == 0 or step == total):
                if main:
                    evaluate_during_training(model, val, config, step, run_log)
                accelerator.wait_for_everyone()
        # prepare() wraps the model's forward in autocast for mixed precision; undo it so the
        # next stage does not stack a second wrapper and the returned model runs in fp32.
        model = accelerator.unwrap_model(wrapped, keep_fp32_wrapper=False)
    bar.close()
    run_log.close()
    seconds = time.perf_counter() - start_time
    model_dir = out / MODEL_DIR
    if main:
        tmp = out / ".tmp-model"
        shutil.rmtree(tmp, ignore_errors=True)
        with _writing(tmp, "the final model", f"the checkpoints in {out / CHECKPOINT_DIR} are intact: make room, "
                      "then run again with --resume to write it"):
            model.save_pretrained(tmp)
        shutil.rmtree(model_dir, ignore_errors=True)
        tmp.replace(model_dir)
    accelerator.wait_for_everyone()
    done = step - start_step
    return TrainResult(model.eval(), step, seconds, done / seconds if seconds > 0 else 0.0, model_dir, precision, start_step)
