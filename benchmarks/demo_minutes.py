"""The minutes `slotlab demo --help` lists, from `bench_demo.py --each` runs at two step counts.

    python benchmarks/demo_minutes.py results/demo-each-20-*.json results/demo-each-60-*.json

For every method timed at two step counts (--steps N1 and N2), each of its training runs costs
(CPU seconds at N2 - at N1) / (N2 - N1) a step, which leaves out what a run spends once (data,
model, saving); the method's job at its presets' steps is its CPU seconds at N2 plus that cost
for every step its runs did not take. Prints the minutes by method as JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from report import emit

from slotlab.config import load_preset
from slotlab.train.demo import pretraining_run
from slotlab.train.demo_methods import ALL_METHODS


def run_presets(name: str) -> dict[str, str]:
    """Training run name -> preset, for demo method ``name``."""
    method = next(m for m in ALL_METHODS if m.name == name)
    presets = {method.name: method.preset}
    if method.pretrain:
        presets[pretraining_run(method)] = method.pretrain.preset
    return presets


def job_seconds(name: str, short: dict, long: dict) -> float:
    """CPU seconds of a method's job at its presets' steps, from its rows at two step counts."""
    total = long["cpu_seconds"]
    for run, preset in run_presets(name).items():
        a, b = short["runs"][run], long["runs"][run]
        per_step = (b["cpu_seconds"] - a["cpu_seconds"]) / (b["steps"] - a["steps"])
        total += per_step * (sum(stage["steps"] for stage in load_preset(preset)["stages"]) - b["steps"])
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path, help="bench_demo.py --each --steps N outputs (two values of N)")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    rows: dict[str, dict[int, dict]] = {}
    for path in args.files:
        for name, row in json.loads(path.read_text())["metrics"].items():
            if "runs" in row:
                steps = max(run["steps"] for run in row["runs"].values())
                rows.setdefault(name, {})[steps] = row
    minutes = {}
    for name, by_steps in rows.items():
        if len(by_steps) == 2:
            short, long = (by_steps[s] for s in sorted(by_steps))
            minutes[name] = round(job_seconds(name, short, long) / 60, 1)
    emit(minutes, args.out)


if __name__ == "__main__":
    main()
