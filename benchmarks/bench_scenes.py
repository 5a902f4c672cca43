"""Rendering speed of the procedural scenes (samples per second on one core).

Usage: python benchmarks/bench_scenes.py [--resolutions 32 64 128] [--num 2000] [--out FILE]

Renders uncached samples of ScenesDataset (seeding included, as a training loop pays it)
and writes JSON: per resolution, the best and median samples/s over the repeats, by wall
clock and by process CPU time (the latter is what one core delivers when the machine is
shared and the wall clock includes waiting for a core).
"""

from __future__ import annotations

import argparse
import time

import torch
from report import best_and_median, emit, machine_info

from slotlab.data.scenes import ScenesConfig, ScenesDataset


def samples_per_second(resolution: int, num: int, repeat: int) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU-time rates of rendering ``num`` fresh samples, once per repeat."""
    dataset = ScenesDataset("train", size=num * repeat, config=ScenesConfig(resolution=resolution), cache=False)
    wall, cpu = [], []
    for r in range(repeat):
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        for i in range(r * num, (r + 1) * num):
            dataset[i]
        wall.append(num / (time.perf_counter() - start_wall))
        cpu.append(num / (time.process_time() - start_cpu))
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolutions", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--num", type=int, default=2000, help="samples per repeat")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()

    torch.set_num_threads(1)
    results = {}
    for resolution in args.resolutions:
        wall, cpu = samples_per_second(resolution, args.num, args.repeat)
        results[str(resolution)] = {
            **best_and_median(wall, "samples_per_s"), **best_and_median(cpu, "cpu_samples_per_s")
        }
    report = {
        "benchmark": "scenes_render",
        "num_per_repeat": args.num,
        "repeat": args.repeat,
        "results": results,
        "machine": machine_info(),
    }
    emit(report, args.out)


if __name__ == "__main__":
    main()
