"""A cache of trained artefacts (e.g. the demo's segmenter), keyed by a hash of what made
them: the resolved config, the seed and slotlab's own code (every module and preset). A
change to any of them gives another key, so a stale artefact is never reused.

The cache lives in ``$SLOTLAB_CACHE``, else ``$XDG_CACHE_HOME/slotlab``, else
``~/.cache/slotlab``; deleting it is always safe.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import slotlab

CACHE_ENV = "SLOTLAB_CACHE"


def cache_root() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "slotlab"


def code_digest() -> str:
    """SHA-256 over slotlab's Python modules and presets (names and contents)."""
    package = Path(slotlab.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(p for p in package.rglob("*") if p.suffix in (".py", ".yaml") and p.is_file()):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def artefact_dir(kind: str, config: dict, seed: int) -> Path:
    """Where the artefact of ``kind`` made from ``config`` and ``seed`` by this code is cached."""
    made_of = json.dumps({"config": config, "seed": seed, "code": code_digest()}, sort_keys=True, default=str)
    return cache_root() / kind / hashlib.sha256(made_of.encode()).hexdigest()[:20]


def store(source: Path, target: Path, ignore: tuple[str, ...] = ()) -> Path:
    """Copy directory ``source`` to ``target`` whole or not at all (a temporary copy, renamed),
    leaving out the entries named in ``ignore`` (e.g. checkpoints)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp, ignore=shutil.ignore_patterns(*ignore))
    shutil.rmtree(target, ignore_errors=True)
    tmp.replace(target)
    return target
