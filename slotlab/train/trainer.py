"""One training loop for every method, on accelerate (CPU, one GPU, many GPUs/nodes).

``train`` reads top to bottom: :func:`setup_run` (the accelerator, the data, the model, the
run directory, the step a resumed run continues from), :func:`train_stage` for each stage
(:func:`train_step` per batch, then its log line, checkpoint and evaluation), and
:func:`finish` (the final model). The run directory's layout is :mod:`slotlab.io.layout`;
checkpoints (:mod:`slotlab.io.checkpoints`) are written under a temporary name and renamed
into place, so a run killed at any moment (even SIGKILL) resumes from its last complete
checkpoint. The data order and the noise are pure functions of (seed, step)
(:mod:`slotlab.train.stages`), so a resumed run sees exactly the batches an uninterrupted
run would.
"""

from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from accelerate import Accelerator
from accelerate.optimizer import AcceleratedOptimizer
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedDataParallelKwargs, set_seed
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from slotlab.data.sample import Batch, collate
from slotlab.io.checkpoints import checkpoint_dirs, load_checkpoint, save_checkpoint, save_final_model
from slotlab.io.hub import downloads_allowed
from slotlab.io.layout import LOG_FILE, MODEL_DIR
from slotlab.io.runs import prepare_output, truncate_log
from slotlab.io.weights import CheckpointError
from slotlab.methods import MaskModel, Method, get_method
from slotlab.methods.base import evaluating
from slotlab.ops.random import fixed_randomness
from slotlab.ops.resize import resize_masks_soft
from slotlab.train.config import StageConfig, TrainConfig, build_train_config, resolve_precision, to_dict
from slotlab.train.stages import (
    StepBatchSampler,
    configure_stage,
    loader_generator,
    reseed,
    set_stage_lr,
    stage_at,
)
from slotlab.train.tracking import RunLog

EVAL_SHOWN = 8  # validation images in the overlay picture of an evaluation during training

logger = logging.getLogger("slotlab.train")


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/inf; the message names the step and the terms."""


def build_model(config: TrainConfig) -> Method:
    """The method's model; its pretrained parts may be fetched by hub id where ``allow_download``
    (or ``--allow-download``) says so. The inputs the config reads from earlier runs must be set."""
    config.require_inputs()
    with downloads_allowed(True) if config.allow_download else nullcontext():  # else as the caller allows
        return get_method(config.method)(config.model)


@dataclass
class TrainResult:
    model: Method
    steps: int
    train_seconds: float
    steps_per_second: float
    model_dir: Path
    precision: str  # what mixed_precision resolved to on this machine
    start_step: int = 0  # the step this process began at (> 0 when resumed): it trained steps - start_step

    @property
    def steps_trained(self) -> int:
        return self.steps - self.start_step


@dataclass
class Run:
    """A run while it trains: what :func:`setup_run` made, and the global ``step`` it is at."""

    config: TrainConfig
    out: Path
    accelerator: Accelerator
    precision: str
    model: Method
    dataset: Dataset
    val: Dataset | None
    log: RunLog
    bar: tqdm
    step: int
    start_step: int
    start_time: float
    optimizer_state: dict | None = None  # of a resumed checkpoint, loaded by the stage it was saved in
    optimizer_stage: int | None = None

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process


def train(
    config: TrainConfig, out: str | Path, resume: bool = False, progress: bool = True, dataset=None,
    bar_position: int = 0,
) -> TrainResult:
    """Train ``config`` into directory ``out`` (checkpoints, metrics.jsonl, model/).

    ``dataset`` overrides ``config.data.train`` (a Dataset of Samples); ``bar_position`` is the
    terminal line of the progress bar, so that runs in parallel processes do not overwrite
    each other's.
    """
    run = setup_run(config, Path(out), resume, dataset, progress, bar_position)
    while run.step < config.total_steps:
        train_stage(run)
    return finish(run)


# ---- setup ----------------------------------------------------------------------------------
def make_accelerator(config: TrainConfig, out: Path, precision: str) -> Accelerator:
    # Accelerate keeps one precision per process and refuses another; runs in one process
    # (benchmarks, tests, the Python API) may differ. The process group is kept.
    AcceleratorState._reset_state()
    return Accelerator(
        cpu=not torch.cuda.is_available(),  # under torchrun on CPUs this selects gloo
        mixed_precision="no" if precision == "fp32" else precision,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        log_with=list(config.log_with) or None,
        project_dir=str(out),
    )


def setup_run(config: TrainConfig, out: Path, resume: bool, dataset, progress: bool, bar_position: int) -> Run:
    """The accelerator, data and model; the run directory claimed; a resumed run's weights and
    step restored; the random stream seeded for that step."""
    config.require_inputs()  # before anything is built or written
    precision = resolve_precision(config.mixed_precision)
    accelerator = make_accelerator(config, out, precision)
    main = accelerator.is_main_process
    # Data and model first: a wrong path or size fails before anything is written.
    dataset = dataset if dataset is not None else config.data.dataset("train")
    set_seed(config.seed)
    model = build_model(config)
    if main:
        prepare_output(out, yaml.safe_dump(to_dict(config), sort_keys=False), resume, build_train_config)
    accelerator.wait_for_everyone()

    step, optimizer_state, optimizer_stage = 0, None, None
    checkpoints = checkpoint_dirs(out)
    if resume and checkpoints:
        state = resume_from(checkpoints, model)
        step, optimizer_state, optimizer_stage = state["step"], state["optimizer"], state["stage"]
    reseed(config.seed, step, accelerator.process_index)
    if main:
        truncate_log(out / LOG_FILE, step)
    log = RunLog(accelerator, out / LOG_FILE, to_dict(config), tuple(config.log_with))
    val = validation_set(config, model) if main else None
    model.to(accelerator.device).train()
    bar = tqdm(total=config.total_steps, initial=step, desc=f"train {config.method}", disable=not (progress and main),
               unit="step", position=bar_position)
    return Run(config, out, accelerator, precision, model, dataset, val, log, bar, step, step, time.perf_counter(),
               optimizer_state, optimizer_stage)


def validation_set(config: TrainConfig, model: Method) -> Dataset | None:
    """``data.val`` when the run evaluates while training (``eval_every``); None otherwise, and for
    a model without masks (a VQ-VAE, the segmenter, region contrast), which has no grouping to
    score or picture: that is logged once, and the run trains on without evaluations."""
    if not config.eval_every:
        return None
    if not isinstance(model, MaskModel):
        logger.warning("eval_every=%d: a %r model has no masks to score or picture; it is not evaluated while "
                       "training", config.eval_every, config.method)
        return None
    return config.data.dataset("val")


def resume_from(checkpoints: list[Path], model: Method) -> dict:
    """The state of the newest checkpoint, loaded into ``model``; a damaged one is named with
    the way back to the one before."""
    try:
        return load_checkpoint(checkpoints[-1], model)
    except CheckpointError as err:
        earlier = f" To continue from {checkpoints[-2]} instead, delete {checkpoints[-1]}." if len(checkpoints) > 1 else ""
        raise CheckpointError(f"--resume: {err}{earlier}") from err


# ---- one stage ------------------------------------------------------------------------------
def train_stage(run: Run) -> None:
    """Train from ``run.step`` to the end of the stage it falls in: the stage's optimiser and
    loss weights, its batches, and after each step its log line, checkpoint and evaluation."""
    config, accelerator, model = run.config, run.accelerator, run.model
    stage_index, in_stage = stage_at(config, run.step)
    stage = config.stages[stage_index]
    optimizer = configure_stage(model, stage, config.optim)
    model.set_loss_weights(stage.loss_weights)
    if run.optimizer_state is not None and run.optimizer_stage == stage_index:  # not across a stage boundary
        optimizer.load_state_dict(run.optimizer_state)
    run.optimizer_state = None
    wrapped, optimizer = accelerator.prepare(model, optimizer)
    stage_end = run.step - in_stage + stage.steps
    sampler = StepBatchSampler(
        len(run.dataset), config.data.batch_size, config.seed, run.step, stage_end,
        accelerator.process_index, accelerator.num_processes,
    )
    loader = DataLoader(run.dataset, batch_sampler=sampler, collate_fn=collate, num_workers=config.data.num_workers,
                        generator=loader_generator(config.seed, run.step))
    trainable = [p for g in optimizer.param_groups for p in g["params"]]
    for batch in loader:
        set_stage_lr(optimizer, stage, run.step - (stage_end - stage.steps))
        losses = train_step(run, wrapped, optimizer, trainable, batch.to(accelerator.device), stage)
        run.step += 1
        run.bar.update(1)
        if run.step % config.log_every == 0 or run.step == stage_end:
            log_step(run, losses, stage, optimizer)
        if run.step % config.checkpoint_every == 0 or run.step == stage_end:
            checkpoint(run, optimizer, stage_index)
        if config.eval_every and (run.step % config.eval_every == 0 or run.step == config.total_steps):
            if run.val is not None:  # main process, a model with masks
                evaluate_during_training(run.model, run.val, config, run.step, run.log)
            accelerator.wait_for_everyone()
    # prepare() wraps the model's forward in autocast for mixed precision; undo it so the
    # next stage does not stack a second wrapper and the returned model runs in fp32.
    run.model = accelerator.unwrap_model(wrapped, keep_fp32_wrapper=False)


def train_step(run: Run, wrapped: torch.nn.Module, optimizer, trainable: list, batch: Batch,
               stage: StageConfig) -> dict[str, torch.Tensor]:
    """One optimiser step: the model's per-step hook, forward (through the wrapper
    ``prepare`` made), its losses, backward, clipping, the update. Returns the losses."""
    config, accelerator, model = run.config, run.accelerator, run.model
    model.on_step(run.step, config.total_steps)
    with accelerator.autocast():
        outputs = wrapped(batch)
        losses = model.losses(outputs, batch)
    loss = losses["loss"]
    if not torch.isfinite(loss):
        terms = {k: float(v.detach()) for k, v in losses.items()}
        raise NonFiniteLossError(
            f"non-finite loss at step {run.step} (stage {stage.name!r}): {terms}. Lower the learning rate, "
            f"enable optim.grad_clip, or train in full precision (mixed_precision=fp32); "
            f"resume from the last checkpoint with --resume"
        )
    accelerator.backward(loss)
    if config.optim.grad_clip is not None:
        accelerator.clip_grad_norm_(trainable, config.optim.grad_clip, norm_type=config.optim.grad_clip_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return losses


def log_step(run: Run, losses: dict[str, torch.Tensor], stage: StageConfig, optimizer) -> None:
    """The step's loss terms (averaged over processes) and learning rates into the log."""
    values = {k: run.accelerator.reduce(v.detach().float(), "mean").item() for k, v in losses.items()}
    run.bar.set_postfix(loss=f"{values['loss']:.4f}")
    record = {"step": run.step, "stage": stage.name, "lr": {g["name"]: g["lr"] for g in optimizer.param_groups}}
    run.log.record(record | values)


# ---- checkpoints ----------------------------------------------------------------------------
def checkpoint(run: Run, optimizer, stage_index: int) -> None:
    """Save the checkpoint of ``run.step`` (on the main process) and reseed every process's
    random stream from that step, as a run resumed from it will."""
    accelerator = run.accelerator
    accelerator.wait_for_everyone()
    if run.main:
        inner = optimizer.optimizer if isinstance(optimizer, AcceleratedOptimizer) else optimizer
        save_checkpoint(run.out, run.model, inner.state_dict(), run.step, stage_index, run.config.keep_checkpoints)
    accelerator.wait_for_everyone()
    reseed(run.config.seed, run.step, accelerator.process_index)


def evaluate_during_training(model: MaskModel, val, config: TrainConfig, step: int, run_log: RunLog) -> None:
    """Metrics on ``val`` under the run's protocol into the log (``{"step", "eval": {...}}``) and the
    masks of its first images (slots', or any other grouping's) as the trackers' "overlays"
    picture; the model trains on after. Evaluation draws from its own seeded stream, so the
    training stream is left as it was."""
    from slotlab.train.evaluate import evaluate_model
    from slotlab.viz.overlays import overlay_grid, segmentation

    result = evaluate_model(model, val, protocol=config.eval_protocol, progress=False, seed=config.seed)
    run_log.record({"step": step, "eval": result["metrics"]})
    shown = collate([val[i] for i in range(min(EVAL_SHOWN, len(val)))])
    with torch.no_grad(), evaluating(model), fixed_randomness(config.seed, model.device):
        masks = model.masks(model(shown.image.to(model.device))).float().cpu()
    masks = resize_masks_soft(masks, tuple(shown.image.shape[-2:]))
    run_log.picture("overlays", overlay_grid(shown.image, {"ground truth": shown.instance_mask,
                                                           config.method: segmentation(masks)}), step)
    model.train()


# ---- finish ---------------------------------------------------------------------------------
def finish(run: Run) -> TrainResult:
    """Close the log, write the final model (main process) and say how the run went."""
    run.bar.close()
    run.log.close()
    seconds = time.perf_counter() - run.start_time
    model_dir = run.out / MODEL_DIR
    if run.main:
        save_final_model(run.out, run.model)
    run.accelerator.wait_for_everyone()
    done = run.step - run.start_step
    return TrainResult(run.model.eval(), run.step, seconds, done / seconds if seconds > 0 else 0.0, model_dir,
                       run.precision, run.start_step)
