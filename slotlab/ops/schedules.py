"""Per-step schedules of values that are not learning rates (set through ``on_step``)."""

from __future__ import annotations

import math


def cosine_ramp(start: float, end: float, progress: float) -> float:
    """``start`` at progress 0 to ``end`` at progress >= 1 along a half cosine."""
    progress = min(max(progress, 0.0), 1.0)
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * progress))
