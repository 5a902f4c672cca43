"""Model directories and training checkpoints on disk (names in :mod:`slotlab.io.layout`).

Every directory is written under a temporary name and renamed into place, so a reader, or a
run killed at any moment (even SIGKILL), sees the old directory or the new one, never a half
written one that looks complete.
"""

from __future__ import annotations

import json
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from slotlab.config import ConfigError
from slotlab.io.files import OutputPathError, write_atomic
from slotlab.io.layout import (
    CHECKPOINT_DIR,
    MODEL_CONFIG_FILE,
    MODEL_DIR,
    OPTIMIZER_FILE,
    STATE_FILE,
    STEP_PREFIX,
    TMP_MODEL_DIR,
    WEIGHTS_FILE,
    checkpoint_step,
    step_dir_name,
)
from slotlab.io.model_format import FORMAT_KEY, MODEL_FORMAT, migrate_model_record
from slotlab.io.weights import CheckpointError, load_optimizer_state, load_weights


class Savable(Protocol):
    def save_pretrained(self, directory: str | Path) -> Path: ...


# ---- a model directory ------------------------------------------------------------------
def is_model_dir(directory: str | Path) -> bool:
    """Whether ``directory`` holds a model's config (written by ``save_pretrained``)."""
    return Path(directory, MODEL_CONFIG_FILE).is_file()


def write_model_dir(directory: str | Path, record: dict, state: dict[str, Tensor]) -> Path:
    """Write ``record`` as the config file (with the format it is in) and ``state`` as the
    weights of ``directory`` (atomically per file)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_atomic(directory / MODEL_CONFIG_FILE, json.dumps({FORMAT_KEY: MODEL_FORMAT} | record, indent=2))
    tmp = directory / (WEIGHTS_FILE + ".tmp")
    save_file(state, str(tmp))
    tmp.replace(directory / WEIGHTS_FILE)
    return directory


def read_model_record(directory: str | Path) -> tuple[dict, Path]:
    """The config record of a model directory (with its "method" and "config" entries, in
    today's format: older files are migrated, ``slotlab.io.model_format``) and the path of its
    weights, or an error that says what is missing or damaged."""
    directory = Path(directory)
    config_path, weights_path = directory / MODEL_CONFIG_FILE, directory / WEIGHTS_FILE
    for path in (config_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing: {directory} is not a slotlab checkpoint "
                f"(expected {MODEL_CONFIG_FILE} and {WEIGHTS_FILE} written by save_pretrained)"
            )
    try:
        record = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{config_path} is not valid JSON ({err}); the checkpoint is damaged") from err
    missing = [key for key in ("method", "config") if not isinstance(record, dict) or key not in record]
    if missing:
        raise ConfigError(f"{config_path} has no {' or '.join(map(repr, missing))} entry: it is not a model config "
                          "written by save_pretrained")
    if not isinstance(record["config"], dict):
        raise ConfigError(f"{config_path}: 'config' must be a mapping of the model's settings, got {record['config']!r}")
    return migrate_model_record(record, config_path), weights_path


# ---- training checkpoints ---------------------------------------------------------------
@contextmanager
def writing(tmp: Path, what: str, kept: str):
    """Turn a failed write of ``what`` into ``tmp`` (a full disk...) into an error saying what
    is kept, and remove what was half written."""
    try:
        yield
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise OutputPathError(f"could not write {what} into {tmp.parent} ({err.strerror or err}); {kept}") from err


def checkpoint_dirs(out: Path) -> list[Path]:
    """The complete checkpoints of run ``out``, oldest first."""
    root = out / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    done = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(STEP_PREFIX) and (p / STATE_FILE).is_file()]
    return sorted(done, key=checkpoint_step)


def save_checkpoint(out: Path, model: Savable, optimizer_state: dict, step: int, stage: int, keep: int) -> Path:
    """Write the checkpoint of ``step`` (model, optimizer state, step and stage) and keep the
    ``keep`` newest (0: all)."""
    root = out / CHECKPOINT_DIR
    final = root / step_dir_name(step)
    tmp = root / f".tmp-{step_dir_name(step)}"
    shutil.rmtree(tmp, ignore_errors=True)
    with writing(tmp, f"the checkpoint of step {step}", "the earlier checkpoints are intact: make room, then continue "
                 "with --resume"):
        model.save_pretrained(tmp)
        torch.save(optimizer_state, tmp / OPTIMIZER_FILE)
        (tmp / STATE_FILE).write_text(json.dumps({"step": step, "stage": stage}))  # written last
    shutil.rmtree(final, ignore_errors=True)
    tmp.replace(final)
    for old in checkpoint_dirs(out)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path, model: nn.Module) -> dict:
    """Restore weights; returns the saved state (step, stage) and the optimizer state."""
    weights = load_weights(path / WEIGHTS_FILE)
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{path / WEIGHTS_FILE} does not fit this run's model: {err}") from err
    try:
        state = json.loads((path / STATE_FILE).read_text())
        state["step"], state["stage"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path / STATE_FILE} is damaged ({err!r})") from err
    state["optimizer"] = load_optimizer_state(path / OPTIMIZER_FILE)
    return state


def save_final_model(out: Path, model: Savable) -> Path:
    """Write the trained model to ``out/model`` (replacing an earlier one only once complete)."""
    model_dir = out / MODEL_DIR
    tmp = out / TMP_MODEL_DIR
    shutil.rmtree(tmp, ignore_errors=True)
    with writing(tmp, "the final model", f"the checkpoints in {out / CHECKPOINT_DIR} are intact: make room, "
                 "then run again with --resume to write it"):
        model.save_pretrained(tmp)
    shutil.rmtree(model_dir, ignore_errors=True)
    tmp.replace(model_dir)
    return model_dir
