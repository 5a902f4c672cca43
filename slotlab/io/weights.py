"""Reading the weight and optimizer files of a checkpoint, with errors a user can act on.

Nothing here unpickles code: weights are safetensors, and optimizer state is read with
``torch.load(weights_only=True)``, which refuses anything but tensors and plain containers.
A file that is empty, truncated, or not what its name says (a pickle renamed to
``model.safetensors``) raises :class:`CheckpointError` naming it.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file


class CheckpointError(ValueError):
    """A checkpoint file cannot be read safely; the message names it and what to do."""


def _damaged(path: Path, what: str, detail: str) -> CheckpointError:
    size = path.stat().st_size if path.is_file() else 0
    state = "is empty" if size == 0 else f"({size} bytes) is not a complete {what}: {detail}"
    return CheckpointError(
        f"{path} {state}. It is truncated, damaged or another kind of file; it is not loaded (nothing in it is "
        "run). Use another checkpoint, or copy the file again from where it was written."
    )


def load_weights(path: Path, device: str = "cpu") -> dict[str, torch.Tensor]:
    """The tensors of a ``model.safetensors`` file."""
    path = Path(path)
    try:
        return load_file(str(path), device=device)
    except (SafetensorError, OSError) as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise _damaged(path, "safetensors file", str(err)) from err


def load_optimizer_state(path: Path) -> dict:
    """The optimizer state of an ``optimizer.pt`` file (tensors and plain containers only)."""
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torch's note on pickle protocols adds nothing here
            return torch.load(path, weights_only=True, map_location="cpu")
    except (pickle.UnpicklingError, EOFError, RuntimeError, ValueError) as err:
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        if isinstance(err, pickle.UnpicklingError):  # torch's advice to disable the check must not be followed
            detail = "torch refused it as not made of tensors only"
        raise _damaged(path, "optimizer state", detail) from err
