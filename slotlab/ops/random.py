"""Seeded randomness: the one way slotlab draws reproducible random numbers without
disturbing the caller's random stream."""

from __future__ import annotations

from contextlib import contextmanager

import torch


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
