"""Steps and stages of a run: which batches a step reads, the random stream of a step, the
learning rate of a step, and the optimiser of a stage.

The data order and the noise are pure functions of (seed, step), so a resumed run sees
exactly the batches and draws exactly the noise an uninterrupted run would.
"""

from __future__ import annotations

import math

import torch
from torch.utils.data import Sampler

from slotlab.config import ConfigError
from slotlab.methods.contract import Trainable
from slotlab.ops.random import seeded_generator
from slotlab.train.config import OptimConfig, StageConfig, TrainConfig


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


def loader_generator(seed: int, step: int) -> torch.Generator:
    """The data loader's own generator: creating the loader must not draw from the global
    stream (resume)."""
    return seeded_generator(seed * 1_000_003 + step)


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


def configure_stage(model: Trainable, stage: StageConfig, optim: OptimConfig) -> torch.optim.Optimizer:
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


def set_stage_lr(optimizer: torch.optim.Optimizer, stage: StageConfig, step_in_stage: int) -> None:
    """Every group's lr at ``step_in_stage``: its base lr times :func:`stage_lr_scale`."""
    scale = stage_lr_scale(stage, step_in_stage)
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * scale
