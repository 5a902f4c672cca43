"""Atomic file writes: a reader (or a run killed mid-write) sees the old file or the new
one, never a partial file that looks complete."""

from __future__ import annotations

import os
from pathlib import Path

#: Suffix of the temporary files beside their target (hidden names: ``.NAME.PID.tmp``).
TMP_SUFFIX = ".tmp"


def write_atomic(path: Path, data: bytes | str) -> Path:
    """Write ``data`` (text as UTF-8) to a temporary file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")
    tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)
    return path
