"""Time `slotlab demo`: wall time, peak memory, train steps/s and the metrics, as JSON.

    python benchmarks/bench_demo.py --out bench-demo.json [--steps N] [--seed S] [--keep DIR] [--preset NAME=PRESET]
        [--methods LIST] [--with-segmenter] [--test] [--jobs N] [--tasks LIST] [--each]

With --keep the demo's output (trained models in DIR/runs/*/model, pictures, report) stays,
e.g. for benchmarks/bench_downstream.py; otherwise it goes to a temporary directory.
--methods chooses the demo's methods as `slotlab demo --methods`; --with-segmenter adds,
for each chosen method that has one (dinosaur, glass), its row whose encoder also reads the
segmenter trained on the scenes' class maps (NAME-segmenter), so the rows show what that
supervision adds. --test also evaluates every trained method and the blocks baseline on the
scenes test split (the demo itself reports val), under "test". --jobs and --tasks as
`slotlab demo`'s.
--each times every method alone instead of one demo: the segmenter, if one of them reads it,
is trained first (on every core, as the demo does), then each method runs as a demo of its own
on one thread, as a demo worker runs it; its wall and CPU seconds are recorded, and the CPU
seconds of each of its training runs (on a busy machine the CPU seconds are closer to what an
idle core would take). With --steps N as well, each row adds cpu_seconds_at_preset_steps: its
CPU seconds had every training run taken its preset's steps (that run's CPU seconds per step
times the steps it did not take), for a machine too busy to run the presets whole. These are
the times `slotlab demo --help` lists (slotlab.train.demo_methods.MINUTES).
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import torch
from report import emit, machine_info, without_machine_paths

import slotlab.train.demo as demo
from slotlab.config import load_preset
from slotlab.data.registry import build_dataset
from slotlab.io.cache import cache_root
from slotlab.io.layout import MODEL_DIR, RUNS_DIR
from slotlab.methods import Method
from slotlab.train.demo_methods import ALL_METHODS, select_methods, with_presets
from slotlab.train.evaluate import evaluate_blocks, evaluate_model

TEST = "scenes?split=test&size=256"  # as bench_cpu_encoder.py and bench_glass.py


def methods_to_run(names: str | None, with_segmenter: bool, presets: list[str]):
    methods = with_presets(select_methods(None if names is None else names.split(",")), presets)
    if with_segmenter:
        chosen = [m.name for m in methods]
        twins = [f"{name}-segmenter" for name in chosen]
        methods += tuple(m for m in ALL_METHODS if m.name in twins and m.name not in chosen)
    return methods


class RunClock:
    """CPU seconds and steps of every training run a demo in this process starts (its calls of
    ``train``), by run directory name."""

    def __init__(self):
        self.runs: dict[str, dict] = {}

    def wrap(self, train):
        def timed(config, out, **options):
            cpu = time.process_time()
            result = train(config, out, **options)
            self.runs[Path(out).name] = {"cpu_seconds": round(time.process_time() - cpu, 2), "steps": result.steps}
            return result

        return timed


def evaluate_on_test(out: Path, metrics: dict, names: list[str], seed: int) -> dict:
    """Each trained method of the demo in ``out`` (``runs/NAME/model``) and the blocks baseline on
    the test split, under the protocol of the method's demo row, the slot-initialisation noise
    drawn with the demo's ``seed`` (as bench_cpu_encoder.py scores its seeds); each row keeps its
    supervision."""
    test = build_dataset(TEST)
    rows = {}
    for name in names:
        model = Method.from_pretrained(out / RUNS_DIR / name / MODEL_DIR)
        evaluation = evaluate_model(model, test, protocol=metrics[name]["protocol"], progress=False, seed=seed)
        rows[name] = demo.headline(evaluation) | {"supervision": metrics[name]["supervision"]}
    blocks = evaluate_blocks(test, num_slots=demo.BLOCKS, grid=(16, 16), protocol=demo.PROTOCOL)
    rows["blocks"] = demo.headline(blocks) | {"supervision": demo.BLOCKS_SUPERVISION}
    return {"data": TEST} | rows


def preset_steps(preset: str) -> int:
    return sum(stage["steps"] for stage in load_preset(preset)["stages"])


def at_preset_steps(cpu_seconds: float, runs: dict[str, dict], presets: dict[str, str]) -> float:
    """A job's CPU seconds had each of its training runs taken its preset's steps: every run's
    CPU seconds per step times the steps it did not take, added."""
    missing = sum(run["cpu_seconds"] / run["steps"] * (preset_steps(presets[name]) - run["steps"])
                  for name, run in runs.items())
    return round(cpu_seconds + missing, 1)


def time_each(methods, work: Path, steps: int | None, seed: int) -> dict:
    """Each method alone, in this process on one thread, after the segmenter (every core) if
    one of them reads it. With ``steps``, each row also gives its CPU seconds extrapolated to
    the presets' steps."""
    clock = RunClock()
    demo.train = clock.wrap(demo.train)
    timed, segmenter = {}, None
    if any(m.segmenter for m in methods):
        start, cpu, threads = time.perf_counter(), time.process_time(), os.cpu_count() or 1
        row = demo.train_segmenter(work / "segmenter", steps, seed, threads, progress=False)
        timed["segmenter"] = row | {"wall_seconds": round(time.perf_counter() - start, 1),
                                    "cpu_seconds": round(time.process_time() - cpu, 1), "threads": threads}
        if steps is not None and clock.runs:
            timed["segmenter"]["cpu_seconds_at_preset_steps"] = at_preset_steps(
                timed["segmenter"]["cpu_seconds"], clock.runs, {"segmenter": demo.SEGMENTER_PRESET})
        segmenter = work / "segmenter" / "runs" / "segmenter" / "model"
    torch.set_num_threads(1)
    for method in methods:
        clock.runs.clear()
        start, cpu = time.perf_counter(), time.process_time()
        metrics = demo.run_demo(work / method.name, steps=steps, seed=seed, methods=(method,), progress=False,
                                jobs=1, segmenter=segmenter if method.segmenter else None)
        row = metrics[method.name] | {"wall_seconds": round(time.perf_counter() - start, 1),
                                      "cpu_seconds": round(time.process_time() - cpu, 1),
                                      "threads": torch.get_num_threads(), "runs": dict(clock.runs)}
        if steps is not None:
            presets = {method.name: method.preset}
            if method.pretrain:
                presets[demo.pretraining_run(method)] = method.pretrain.preset
            row["cpu_seconds_at_preset_steps"] = at_preset_steps(row["cpu_seconds"], clock.runs, presets)
        timed[method.name] = row
    return timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None, help="write the JSON here as well as to stdout")
    parser.add_argument("--steps", type=int, default=None, help="training steps per method (default: presets')")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads, as `slotlab demo` uses (default: 1)")
    parser.add_argument("--keep", type=Path, default=None, metavar="DIR", help="run the demo in DIR and keep its output")
    parser.add_argument("--preset", action="append", default=[], metavar="NAME=PRESET",
                        help="another preset for a demo method, as `slotlab demo --preset` (repeatable)")
    parser.add_argument("--methods", default=None, metavar="LIST", help="the demo's methods, as `slotlab demo --methods`")
    parser.add_argument("--with-segmenter", action="store_true",
                        help="also run dinosaur and glass (those chosen) with the segmenter trained on class maps")
    parser.add_argument("--test", action="store_true", help=f"also evaluate the trained methods on {TEST}")
    parser.add_argument("--jobs", type=int, default=None, help="methods trained at once, as `slotlab demo --jobs`")
    parser.add_argument("--tasks", default="all", metavar="LIST",
                        help="downstream tasks as `slotlab demo --tasks`: 'all', 'none' or a list (default: all)")
    parser.add_argument("--each", action="store_true", help="time each method alone on one thread (see above)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.test and args.each:
        parser.error("--test evaluates one demo's models: drop --each")
    methods = methods_to_run(args.methods, args.with_segmenter, args.preset)
    test = None
    with tempfile.TemporaryDirectory() as tmp:
        out = args.keep or Path(tmp) / "demo"
        start = time.perf_counter()
        if args.each:
            metrics = time_each(methods, out, args.steps, args.seed)
        else:
            metrics = demo.run_demo(out, steps=args.steps, seed=args.seed, methods=methods, progress=False,
                                    jobs=args.jobs, tasks=demo.parse_tasks(args.tasks))
        wall = time.perf_counter() - start
        if args.test:
            test = evaluate_on_test(out, metrics, [m.name for m in methods], args.seed)
    # The largest process: this one or a worker that trained a method (Linux reports KiB).
    peak_mb = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 1024
    report = {
        "benchmark": "slotlab demo, each method alone" if args.each else "slotlab demo",
        "methods": [m.name for m in methods],
        "presets": args.preset,
        "tasks": args.tasks,
        "wall_seconds": round(wall, 1),
        "peak_memory_mb_largest_process": round(peak_mb, 1),
        "train_steps_per_second": {
            name: round(m["train_steps"] / m["train_seconds"], 2)
            for name, m in metrics.items() if m.get("train_steps")
        },
        "metrics": metrics,
        **({"test": test} if test is not None else {}),
        "machine": machine_info(),
    }
    emit(without_machine_paths(report, {out: "", cache_root(): "CACHE"}), args.out)


if __name__ == "__main__":
    main()
