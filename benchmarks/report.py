"""What every benchmark script ends with: machine facts and the JSON on stdout / --out."""

from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path

import torch

from slotlab.io.results import results_json


def cpu_model() -> str:
    """The processor's name (Linux: /proc/cpuinfo), else what the platform module says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    return {"cpus": os.cpu_count(), "cpu_model": cpu_model(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "load_average_at_end": os.getloadavg()}


def median_seconds(fn, repeat: int) -> tuple[float, float]:
    """Median wall and CPU seconds of ``fn()`` over ``repeat`` runs (after one warm-up)."""
    fn()
    wall, cpu = [], []
    for _ in range(repeat):
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start_wall)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def best_and_median(rates: list[float], unit: str) -> dict[str, float]:
    """The best and the median of per-repeat rates (one decimal), as ``best_<unit>`` and
    ``median_<unit>``."""
    return {f"best_{unit}": round(max(rates), 1), f"median_{unit}": round(statistics.median(rates), 1)}


def without_machine_paths(value, names: dict[Path, str]):
    """``value`` (nested dicts, lists) with every string that starts with one of the folders in
    ``names`` rewritten to start with that folder's name instead (e.g. a demo's temporary output
    as "", the user's cache as "CACHE"), so a stored result names no folder of the machine that
    produced it."""
    if isinstance(value, dict):
        return {key: without_machine_paths(item, names) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [without_machine_paths(item, names) for item in value]
    if isinstance(value, str):
        for folder, name in names.items():
            prefix = str(folder).rstrip("/") + "/"
            if value.startswith(prefix):
                return name + ("/" if name else "") + value[len(prefix):]
    return value


def emit(report: dict, out: str | Path | None) -> None:
    """Print the report as JSON and, if ``out`` is given, write it there too."""
    text = results_json(report)
    print(text)
    if out:
        Path(out).write_text(text)
