"""Metrics as strict JSON: an undefined score (NaN) is written as null, never as NaN,
which standard JSON parsers reject."""

from __future__ import annotations

import json
import math
from pathlib import Path


def defined_scores(value):
    """``value`` with every NaN float (in nested dicts, lists, tuples) replaced by None."""
    if isinstance(value, dict):
        return {key: defined_scores(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [defined_scores(item) for item in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def results_json(results) -> str:
    """Indented strict JSON of ``results`` (NaN -> null; infinities are an error)."""
    return json.dumps(defined_scores(results), indent=2, allow_nan=False)


def write_results(path: Path, results) -> Path:
    """Write ``results_json(results)`` to ``path`` atomically (a temporary file, then a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = results_json(results)  # fails before anything is written
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text + "\n")
    tmp.replace(path)
    return path
