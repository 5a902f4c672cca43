"""What every data-engine backend gives: prompt + seed in, image + pseudo semantic mask out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

from torch import Tensor

from slotlab.datagen.prompts import Prompt

#: Independent random streams derived from one sample seed.
PROMPT_STREAM, BACKEND_STREAM = 0, 1


@dataclass
class Generation:
    """One generated sample: image (3, H, W) in [0, 1], pseudo mask (H, W) int64 with class
    ids of the label set, 0 = background, IGNORE_INDEX = uncertain, and what the backend
    knows about this sample (JSON-serialisable)."""

    image: Tensor
    pseudo_mask: Tensor
    meta: dict = field(default_factory=dict)


class Backend(Protocol):
    """Prompt + seed in, image + pseudo mask out; ``settings`` go into every manifest line."""

    settings: dict

    def generate(self, prompts: Sequence[Prompt], seeds: Sequence[int]) -> list[Generation]: ...
