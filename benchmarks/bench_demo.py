"""Time `slotlab demo`: wall time, peak memory, train steps/s and the metrics, as JSON.

    python benchmarks/bench_demo.py --out bench-demo.json [--steps N] [--seed S] [--keep DIR] [--preset NAME=PRESET]

With --keep the demo's output (trained models in DIR/runs/*/model, pictures, report) stays,
e.g. for benchmarks/bench_downstream.py; otherwise it goes to a temporary directory.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import torch
from report import emit, machine_info

from slotlab.train.demo import DEMO_METHODS, run_demo, with_presets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None, help="write the JSON here as well as to stdout")
    parser.add_argument("--steps", type=int, default=None, help="training steps per method (default: presets')")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads, as `slotlab demo` uses (default: 1)")
    parser.add_argument("--keep", type=Path, default=None, metavar="DIR", help="run the demo in DIR and keep its output")
    parser.add_argument("--preset", action="append", default=[], metavar="NAME=PRESET",
                        help="another preset for a demo method, as `slotlab demo --preset` (repeatable)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        metrics = run_demo(args.keep or Path(tmp) / "demo", steps=args.steps, seed=args.seed,
                           methods=with_presets(DEMO_METHODS, args.preset), progress=False)
        wall = time.perf_counter() - start
    # The largest process: this one or a worker that trained a method (Linux reports KiB).
    peak_mb = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 1024
    report = {
        "benchmark": "slotlab demo",
        "presets": args.preset,
        "wall_seconds": round(wall, 1),
        "peak_memory_mb_largest_process": round(peak_mb, 1),
        "train_steps_per_second": {
            name: round(m["train_steps"] / m["train_seconds"], 2)
            for name, m in metrics.items() if m.get("train_steps")
        },
        "metrics": metrics,
        "machine": machine_info(),
    }
    emit(report, args.out)


if __name__ == "__main__":
    main()
