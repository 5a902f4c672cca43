"""Load a parity fixture case (the authors' state dict, inputs, outputs) or skip the test."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from safetensors.torch import load_file
from torch import Tensor
from tests.shared_dir import PARITY


@dataclass
class Case:
    state: dict[str, Tensor]  # the authors' state dict, their key names
    inputs: dict[str, Tensor]  # "input." stripped
    outputs: dict[str, Tensor]  # "output." stripped
    meta: dict


def load_case(method: str, name: str) -> Case:
    path = PARITY / method / f"{name}.safetensors"
    if not path.is_file():
        pytest.skip(f"parity fixture {path} is absent (the shared fixtures are not part of the package)")
    tensors = load_file(str(path))

    def part(prefix: str) -> dict[str, Tensor]:
        return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

    meta = json.loads(path.with_suffix(".json").read_text())
    return Case(part("state_dict."), part("input."), part("output."), meta)
