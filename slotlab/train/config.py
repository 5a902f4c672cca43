"""The training configuration: method + model config, data, optimiser and stages."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

from slotlab.config import ConfigError, apply_overrides, bounded, coerce, from_dict, to_dict

SCHEDULES = ("constant", "warmup_cosine")
OPTIMIZERS = ("adam", "adamw")
PRECISIONS = ("fp32", "fp16", "bf16", "auto")


def bf16_is_native() -> bool:
    """Whether this machine computes bf16 natively: a CUDA GPU with bf16, or a CPU whose
    oneDNN has bf16 kernels (AVX-512 or AMX). Elsewhere CPU bf16 is emulated, several times
    slower than fp32."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def resolve_precision(precision: str) -> str:
    """The precision a run trains in: ``auto`` is bf16 where it is native, else fp32."""
    if precision != "auto":
        return precision
    return "bf16" if bf16_is_native() else "fp32"


@dataclass
class DataConfig:
    """Dataset specs as understood by ``slotlab.data.registry.build_dataset``."""

    train: str = "scenes?split=train&size=2000"
    val: str = "scenes?split=val&size=256"
    batch_size: int = bounded(32, low=1)  # per process
    num_workers: int = bounded(0, low=0)

    def dataset(self, split: str):
        """The dataset ``data.<split>`` names (``split``: "train" or "val"); one that cannot be
        built (a missing folder...) is an error naming that setting and how to give another."""
        from slotlab.data.imageio import DatasetError
        from slotlab.data.registry import build_dataset

        spec = getattr(self, split)
        try:
            return build_dataset(spec)
        except (ValueError, FileNotFoundError) as err:  # DatasetError, GeneratedDataError, a missing file
            raise DatasetError(f"data.{split}={spec!r}: {err}\nGive other data with --set data.{split}=SPEC "
                               "(`slotlab data inspect --help` lists the dataset specs)") from err


@dataclass
class StageConfig:
    """One training phase (GLASS trains in two).

    lr:            learning rate per parameter group of the method; groups not listed are
                   frozen during this stage.
    loss_weights:  overrides of the method's loss weights in this stage (0 skips a term).
    """

    name: str = "train"
    steps: int = bounded(1000, low=1)
    lr: dict[str, float] = bounded(default_factory=lambda: {"grouping": 4e-4, "decoder": 4e-4}, low=0, low_open=True)
    schedule: str = "constant"
    warmup_steps: int = bounded(0, low=0)
    final_lr_scale: float = bounded(0.0, low=0, high=1)  # warmup_cosine: the lr decays to base * final_lr_scale
    loss_weights: dict[str, float] = bounded(default_factory=dict, low=0)

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"stage {self.name!r}: schedule={self.schedule!r}; choose one of {SCHEDULES}")
        if not self.lr:
            raise ValueError(f"stage {self.name!r}: lr must name at least one parameter group")


@dataclass
class OptimConfig:
    name: str = "adam"
    weight_decay: float = bounded(0.0, low=0)
    betas: tuple[float, float] = bounded((0.9, 0.999), low=0, high=1, high_open=True)
    grad_clip: float | None = bounded(1.0, low=0, low_open=True)  # None disables clipping
    grad_clip_norm: float = 2.0  # norm type; SPOT clips the inf-norm

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise ValueError(f"optim.name={self.name!r}; choose one of {OPTIMIZERS}")


@dataclass
class RunInput:
    """A setting a preset leaves unset because its value is the output of an earlier run (a
    trained segmenter, a pretrained decoder, a stage-1 model): how to make it and what to give.

    make:   the command that makes it, e.g. ``slotlab train --preset segmenter-scenes-tiny --out runs/segmenter``.
    value:  the value that command's output gives, e.g. ``runs/segmenter/model``.
    """

    make: str
    value: str


@dataclass
class TrainConfig:
    """A training run. ``model`` is the method's own config dataclass
    (``get_method(method).config_class``): a mapping (a preset's model section) is parsed into
    it here, once, with errors naming ``model.<field>``. ``inputs`` names the settings, by
    dotted key, that the run reads from earlier runs and the preset leaves unset (see
    :meth:`require_inputs`)."""

    method: str = "dinosaur"
    model: Any = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    stages: list[StageConfig] = field(default_factory=lambda: [StageConfig()])
    seed: int = 0
    mixed_precision: str = "fp32"  # or mixed "fp16" / "bf16", or "auto" (see resolve_precision)
    log_every: int = bounded(10, low=1)
    checkpoint_every: int = bounded(250, low=1)
    keep_checkpoints: int = bounded(2, low=0)  # 0 keeps every checkpoint
    eval_protocol: str = "native"
    allow_download: bool = False  # fetch pretrained parts named by hub ids (slotlab.io.hub); --allow-download too
    log_with: list[str] = field(default_factory=list)  # experiment trackers beside metrics.jsonl (engine.tracking)
    eval_every: int = 0  # evaluate on data.val every N steps and at the end (0: never while training)
    inputs: dict[str, RunInput] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mixed_precision not in PRECISIONS:
            raise ValueError(f"mixed_precision={self.mixed_precision!r}; choose one of {PRECISIONS}")
        if not self.stages:
            raise ValueError("stages must hold at least one stage")
        if self.eval_every < 0:
            raise ValueError(f"eval_every must be 0 (off) or a number of steps, got {self.eval_every}")
        from slotlab.train.tracking import check_trackers

        check_trackers(tuple(self.log_with))
        self.model = parse_model_config(self.method, self.model)
        for key in self.inputs:
            self.setting(key)  # names a setting of this config

    @property
    def total_steps(self) -> int:
        return sum(s.steps for s in self.stages)

    def setting(self, key: str) -> Any:
        """The value of dotted ``key`` (e.g. ``model.encoder.semantic_model``)."""
        node: Any = self
        for part in key.split("."):
            if not (dataclasses.is_dataclass(node) and part in {f.name for f in dataclasses.fields(node)}):
                raise ConfigError(f"inputs: {key!r} names no setting of this {self.method} config; where a --set "
                                  "replaced the section it was in, drop the inputs too: --set inputs={}")
            node = getattr(node, part)
        return node

    def require_inputs(self) -> None:
        """Raise a ConfigError naming every input still unset, the command that makes it and the
        ``--set`` that gives it."""
        missing = [(key, made) for key, made in self.inputs.items() if self.setting(key) is None]
        if missing:
            raise ConfigError("\n".join(
                f"{key} is not set: it is the output of an earlier run. Make one with `{made.make}`, then give it "
                f"with --set {key}={made.value}" for key, made in missing))


def parse_model_config(method: str, model: Any) -> Any:
    """``model`` (a mapping, or already the method's config) as ``method``'s config dataclass."""
    from slotlab.methods import get_method

    try:
        config_class = get_method(method).config_class
    except ValueError as err:  # unknown method
        raise ConfigError(str(err)) from None
    return coerce(model, config_class, "model")


def build_train_config(data: dict, overrides: list[str] | None = None) -> TrainConfig:
    """A preset dict with ``--set`` overrides applied, parsed (model section included) into a TrainConfig."""
    return from_dict(TrainConfig, apply_overrides(data, overrides or []))


__all__ = ["DataConfig", "StageConfig", "OptimConfig", "RunInput", "TrainConfig", "build_train_config", "to_dict"]
