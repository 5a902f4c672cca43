"""Atomic file writes (a reader, or a run killed mid-write, sees the old file or the new one,
never a partial file that looks complete), the repair of append-only logs a kill cut short,
and the checks of output paths a user names."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

#: Suffix of the temporary files beside their target (hidden names: ``.NAME.PID.tmp``).
TMP_SUFFIX = ".tmp"


class OutputPathError(ValueError):
    """An output path cannot be written; the message names the option, the path and why."""


def write_atomic(path: Path, data: bytes | str) -> Path:
    """Write ``data`` (text as UTF-8) to a temporary file beside ``path``, then rename it over
    ``path``; on failure (a full disk, ``path`` a directory) the temporary file is removed."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")
    try:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def drop_unfinished_line(path: Path) -> bool:
    """Cut an append-only text log after its last newline: a line without one was being
    written when its writer was killed. Returns whether anything was cut."""
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return False
    with open(path, "r+b") as f:
        f.truncate(data.rfind(b"\n") + 1)
    return True


def _writable_dir(directory: Path, option: str, named: Path) -> None:
    """Create ``directory`` and check that it takes files; ``named`` is what the user gave."""
    for part in [directory, *directory.parents]:
        if part.exists() and not part.is_dir():
            where = "is" if part == named else f"lies under {part}, which is"
            raise OutputPathError(f"{option} {named} {where} a file, not a directory: choose another {option}")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=directory).close()  # permissions, read-only or full file systems
    except OSError as err:
        raise OutputPathError(f"{option} {named}: cannot write into {directory} ({err.strerror}): choose another {option}") from err


def output_dir(path: str | Path, option: str = "--out") -> Path:
    """Create directory ``path`` (an output the user named with ``option``) and check that
    files can be written into it; raise OutputPathError saying what is wrong otherwise."""
    path = Path(path)
    _writable_dir(path, option, path)
    return path


def output_file(path: str | Path, option: str = "--out") -> Path:
    """Check that file ``path`` (named with ``option``) can be written: not a directory, and
    its folder writable (created if missing). Nothing is written at ``path`` itself."""
    path = Path(path)
    if path.is_dir():
        raise OutputPathError(f"{option} {path} is a directory: name a file, e.g. {path / 'metrics.json'}")
    _writable_dir(path.parent, option, path)
    return path
