"""Label-free encoder networks that ship inside the package, so that a CPU preset can read
one without training it first.

Each lives in ``slotlab/weights/NAME/`` (package data): the network alone, as
:func:`slotlab.methods.encoder_parts.save_ssl_network` writes it (``config.json`` with its
shape, ``model.safetensors``), and ``provenance.json``: the preset, seed and command that
trained it, the slotlab commit and torch version, its steps and its class probe
(``benchmarks/ship_ssl_network.py`` writes the directory; ``tests/test_shipped_networks.py``
retrains it and checks the result computes the same function). An ssl encoder names one as
``path: shipped:NAME``; any other ``path`` is a directory, as before.
"""

from __future__ import annotations

import json
from pathlib import Path

SHIPPED_PREFIX = "shipped:"
WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "weights"
PROVENANCE_FILE = "provenance.json"


def shipped_names() -> list[str]:
    """The names of the networks that ship with this slotlab."""
    if not WEIGHTS_DIR.is_dir():
        return []
    return sorted(p.name for p in WEIGHTS_DIR.iterdir() if (p / PROVENANCE_FILE).is_file())


def is_shipped(reference: str | Path) -> bool:
    return str(reference).startswith(SHIPPED_PREFIX)


def resolve_network_path(reference: str | Path, field: str = "encoder.path") -> Path:
    """The directory ``reference`` names: a shipped network's for ``shipped:NAME`` (an
    unknown NAME is an error listing the shipped ones), else ``reference`` itself."""
    if not is_shipped(reference):
        return Path(reference)
    name = str(reference)[len(SHIPPED_PREFIX):]
    names = shipped_names()
    if name not in names:
        raise ValueError(f"{field}={str(reference)!r} names no network shipped with slotlab; shipped: "
                         f"{', '.join(SHIPPED_PREFIX + n for n in names) or 'none'}. Use one of them, or train "
                         "your own (slotlab train --preset ssl-shapes-scenes-tiny --out DIR --set seed=S) and give "
                         f"{field}=DIR/model")
    return WEIGHTS_DIR / name


def provenance(reference: str | Path) -> dict:
    """How the shipped network ``shipped:NAME`` was made (its ``provenance.json``)."""
    return json.loads((resolve_network_path(reference) / PROVENANCE_FILE).read_text())
