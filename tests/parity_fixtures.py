"""Loading the authors' parity fixtures (../shared/fixtures/parity, README there)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

PARITY = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "parity"

# The README's tolerances for an independent float32 implementation.
OUTPUT_TOL = dict(atol=1e-5, rtol=1e-5)
GRAD_TOL = dict(atol=1e-4, rtol=1e-4)


def load_case(name: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict]:
    """(authors' state dict, every tensor of the case, its json) for ``method/case``; skips
    the test when the shared fixtures are absent."""
    path = PARITY / f"{name}.safetensors"
    if not path.exists():
        pytest.skip(f"parity fixture {path} is absent (the shared fixtures are not part of the package)")
    tensors = load_file(path)
    state_dict = {k[len("state_dict."):]: v for k, v in tensors.items() if k.startswith("state_dict.")}
    return state_dict, tensors, json.loads(path.with_suffix(".json").read_text())


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.detach() - b).abs().max().item()
