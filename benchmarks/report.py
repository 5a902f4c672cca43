"""What every benchmark script ends with: machine facts and the JSON on stdout / --out."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

from slotlab.io.results import results_json


def machine_info() -> dict:
    return {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "load_average_at_end": os.getloadavg()}


def emit(report: dict, out: str | None) -> None:
    """Print the report as JSON and, if ``out`` is given, write it there too."""
    text = results_json(report)
    print(text)
    if out:
        Path(out).write_text(text)
