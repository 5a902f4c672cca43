"""Where a run's numbers and pictures go: its JSONL log always (``metrics.jsonl``, the
default, needing nothing), and the experiment trackers named by ``log_with`` (accelerate's:
tensorboard, wandb, mlflow, ...), which receive the same scalars and, at each evaluation,
the overlay picture.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from accelerate import Accelerator
from accelerate.tracking import LOGGER_TYPE_TO_CLASS, get_available_trackers

from slotlab.config import ConfigError

#: The project name trackers file the run under (TensorBoard: the folder RUN_DIR/slotlab).
PROJECT = "slotlab"
#: Trackers that take pictures, with the options their log_images needs for a batch of HWC images.
IMAGE_OPTIONS = {"tensorboard": {"dataformats": "NHWC"}, "wandb": {}}


def check_trackers(names: tuple[str, ...]) -> tuple[str, ...]:
    """``names`` if accelerate knows each tracker and its package is installed, else a clear
    error (accelerate itself would drop a missing one with a warning only)."""
    unknown = [n for n in names if n not in LOGGER_TYPE_TO_CLASS]
    if unknown:
        raise ConfigError(f"log_with: unknown tracker(s) {unknown}; choose from {sorted(LOGGER_TYPE_TO_CLASS)}")
    available = {str(getattr(t, "value", t)) for t in get_available_trackers()}
    missing = [n for n in names if n not in available]
    if missing:
        raise ConfigError(f"log_with: {missing} not installed: pip install {' '.join(missing)} (or drop it from log_with)")
    return tuple(names)


def flat_scalars(record: dict, prefix: str = "") -> dict[str, float]:
    """The numbers of a log record, nested names joined with "/" (lr/grouping, eval/mbo_i)."""
    flat = {}
    for key, value in record.items():
        if isinstance(value, dict):
            flat |= flat_scalars(value, f"{prefix}{key}/")
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and key != "step":
            flat[f"{prefix}{key}"] = float(value)
    return flat


def flat_config(config: dict, prefix: str = "") -> dict:
    """A config as the flat str/number/bool values trackers store as hyperparameters."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat |= flat_config(value, f"{prefix}{key}.")
        elif isinstance(value, (str, int, float, bool)) or value is None:
            flat[f"{prefix}{key}"] = value
        else:
            flat[f"{prefix}{key}"] = json.dumps(value)
    return flat


#: The field of every log record holding the wall time spent training so far.
SECONDS = "train_seconds"


def logged_seconds(path: Path) -> float:
    """The training time the log at ``path`` reached (0 for a new run): where a resumed run's
    clock continues."""
    if not path.is_file():
        return 0.0
    seconds = 0.0
    for line in path.read_text().splitlines():
        try:
            seconds = float(json.loads(line).get(SECONDS, seconds))
        except (json.JSONDecodeError, AttributeError, TypeError, ValueError):
            continue
    return seconds


class RunLog:
    """The run's log on the main process: :meth:`record` appends a JSONL line, stamped with the
    training time so far (``train_seconds``, carried over a resume), and sends its scalars to
    the trackers; :meth:`picture` sends an image to the trackers that take images."""

    def __init__(self, accelerator: Accelerator, path: Path, config: dict, trackers: tuple[str, ...]):
        self.accelerator, self.path, self.trackers = accelerator, path, trackers
        self.started, self.seconds_before = time.perf_counter(), logged_seconds(path)
        if trackers:
            accelerator.init_trackers(PROJECT, config=flat_config(config))

    def record(self, record: dict) -> None:
        if not self.accelerator.is_main_process:
            return
        record = record | {SECONDS: round(self.seconds_before + time.perf_counter() - self.started, 2)}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.trackers:
            self.accelerator.log(flat_scalars(record), step=record["step"])

    def picture(self, name: str, image, step: int) -> None:
        """``image`` (a PIL image) to the trackers that take pictures (:data:`IMAGE_OPTIONS`)."""
        if not (self.trackers and self.accelerator.is_main_process):
            return
        for tracker in self.accelerator.trackers:
            if tracker.name in IMAGE_OPTIONS:
                tracker.log_images({name: np.asarray(image)[None]}, step=step, **IMAGE_OPTIONS[tracker.name])

    def close(self) -> None:
        if self.trackers:
            self.accelerator.end_training()
