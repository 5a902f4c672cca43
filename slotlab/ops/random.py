"""Seeded randomness: the one way slotlab draws reproducible random numbers without
disturbing the caller's random stream."""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import Tensor


@contextmanager
def fixed_randomness(seed: int | None, device: torch.device | None = None):
    """Inside: the random streams (CPU, and ``device`` if CUDA) start from ``seed``; after: the
    caller's streams continue as if nothing had been drawn. ``seed=None``: no effect."""
    if seed is None:
        yield
        return
    cuda = device is not None and torch.device(device).type == "cuda"
    with torch.random.fork_rng(devices=[device] if cuda else []):
        torch.manual_seed(seed)
        yield


def seeded_generator(seed: int) -> torch.Generator:
    """A CPU generator of its own, seeded with ``seed`` (the global stream is untouched)."""
    return torch.Generator().manual_seed(seed)


def randn_on(shape, generator: torch.Generator | None, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Standard normal noise drawn on the generator's device (reproducible), then moved."""
    rand_device = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=rand_device, dtype=dtype).to(device)
