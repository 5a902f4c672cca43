"""Metrics as strict JSON, which has no NaN or infinity (standard parsers reject Python's
NaN/Infinity tokens): an undefined score (NaN) is written as null, an infinite one (the
PSNR of identical images) as the string "inf" or "-inf"."""

from __future__ import annotations

import json
import math
from pathlib import Path

from slotlab.io.files import write_atomic


def defined_scores(value):
    """``value`` with every NaN float (in nested dicts, lists, tuples) replaced by None and
    every infinite one by "inf" / "-inf"."""
    if isinstance(value, dict):
        return {key: defined_scores(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [defined_scores(item) for item in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def results_json(results) -> str:
    """Indented strict JSON of ``results`` (see :func:`defined_scores`)."""
    return json.dumps(defined_scores(results), indent=2, allow_nan=False)


def write_results(path: Path, results) -> Path:
    """Write ``results_json(results)`` to ``path`` atomically, creating its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = results_json(results)  # a value JSON cannot hold fails here, before anything is written
    return write_atomic(path, text + "\n")
