"""Outputs written into a fresh directory and moved into place only once complete.

A command that fills a directory the user chose (``slotlab demo --out DIR``) must neither
destroy the previous results before it has new ones nor touch files it did not write.
:func:`begin_outputs` makes a fresh hidden directory inside ``out`` to write into;
:func:`commit_outputs` then moves its products into ``out``, replacing only the products
of an earlier commit, which ``out/.slotlab-outputs.json`` lists. A product is a top-level
file of the staging directory or an entry of one of its top-level folders (``runs/dinosaur``
is a product, ``runs/`` is shared with whatever else lives there). Killed before the
commit, a run leaves the earlier results as they were, next to its hidden staging folder,
which the next run removes.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Iterable

from slotlab.io.files import output_dir, write_atomic

MANIFEST = ".slotlab-outputs.json"
STAGING_PREFIX = ".incomplete-"


class OutputConflictError(ValueError):
    """``out`` holds files at a product's place that no earlier commit wrote."""


def owned_products(out: Path) -> set[str]:
    """Products (paths relative to ``out``) that earlier commits wrote into ``out``."""
    manifest = out / MANIFEST
    if not manifest.is_file():
        return set()
    try:
        return set(json.loads(manifest.read_text())["products"])
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise OutputConflictError(f"{manifest} is damaged ({err}); delete it only if {out} holds nothing of yours") from err


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def foreign_paths(out: Path, products: Iterable[str]) -> list[Path]:
    """Places of ``products`` in ``out`` already taken by files no commit wrote."""
    owned = owned_products(out)
    return [out / rel for rel in sorted(set(products)) if rel not in owned and _exists(out / rel)]


def begin_outputs(out: Path, products: Iterable[str], option: str = "--out") -> Path:
    """Check that ``products`` may be written into ``out`` and return a fresh, empty staging
    directory inside it (a hidden one left by a killed earlier run is removed first)."""
    output_dir(out, option)
    foreign = foreign_paths(out, products)
    if foreign:
        listed = ", ".join(str(p) for p in foreign)
        raise OutputConflictError(
            f"{listed} already exist(s) and were not written by this command: move them away or choose another {option}"
        )
    for stale in out.glob(f"{STAGING_PREFIX}*"):
        if not _process_alive(stale.name[len(STAGING_PREFIX):]):
            shutil.rmtree(stale, ignore_errors=True)
    staging = out / f"{STAGING_PREFIX}{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    return staging


def _process_alive(pid: str) -> bool:
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return int(pid) != os.getpid()


def staged_products(staging: Path) -> list[str]:
    """Top-level files of ``staging`` and the entries of its top-level folders."""
    products = []
    for entry in sorted(staging.iterdir()):
        if entry.is_dir() and not entry.is_symlink():
            products += [f"{entry.name}/{child.name}" for child in sorted(entry.iterdir())]
        else:
            products.append(entry.name)
    return products


def _write_manifest(out: Path, products: Iterable[str]) -> None:
    write_atomic(out / MANIFEST, json.dumps({"products": sorted(set(products))}, indent=1) + "\n")


def commit_outputs(staging: Path, out: Path) -> list[str]:
    """Move the products of ``staging`` into ``out``, replacing (only) earlier commits'
    products, which are all removed: nothing stale can pass for this run's. Returns the
    products."""
    new = staged_products(staging)
    old = owned_products(out)
    foreign = foreign_paths(out, new)  # appeared while this run was writing
    if foreign:
        raise OutputConflictError(f"{', '.join(map(str, foreign))} appeared during the run; its results stay in {staging}")
    # Claim both sets first: a kill between the moves below leaves nothing unowned behind.
    _write_manifest(out, old | set(new))
    replaced = staging / ".replaced"
    for rel in sorted(old):
        if _exists(out / rel):
            target = replaced / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(out / rel, target)
    for rel in new:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / rel, out / rel)
    _write_manifest(out, new)
    shutil.rmtree(staging)
    return new
