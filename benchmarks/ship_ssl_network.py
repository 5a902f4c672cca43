"""Write a label-free network that ships with slotlab (``slotlab/weights/NAME/``), as JSON.

    python benchmarks/ship_ssl_network.py --preset ssl-shapes-scenes-tiny --seed 0 \\
        [--run RUN --run-commit SHA] [--name NAME] [--out FILE]

Trains the preset with the seed on one thread in fp32 (or takes ``--run``, a finished run of
exactly that preset and seed, e.g. ``slotlab --threads 1 train --preset ssl-shapes-scenes-tiny
--out RUN --set seed=0``, trained at slotlab commit ``--run-commit``), keeps its network alone
(no projection head, no optimizer state), measures the class probe of the shipped network's
features under the true masks on the scenes test split (bench_cpu_encoder's probe, encoder
settings and splits; the network saw no label, the probe does) and writes ``provenance.json``
beside the weights: preset, seed, the command, slotlab commit, torch version, steps, probe.
tests/test_shipped_networks.py retrains it from that record and compares the two.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import torch
import yaml
from bench_cpu_encoder import PROBE_TRAIN, SUPERVISION, TEST, encoder_settings
from report import emit, machine_info

from slotlab.config import ConfigError, load_preset, to_dict
from slotlab.data.registry import build_dataset
from slotlab.io.layout import LOG_FILE, MODEL_DIR, RUN_CONFIG_FILE, WEIGHTS_FILE
from slotlab.io.results import write_results
from slotlab.methods.encoder_parts import build_method_encoder, load_ssl_network, save_ssl_network
from slotlab.metrics.encoder_features import object_class_probe
from slotlab.nn.encoders import encoder_config
from slotlab.nn.encoders.shipped import PROVENANCE_FILE, SHIPPED_PREFIX, WEIGHTS_DIR
from slotlab.train.config import build_train_config
from slotlab.train.trainer import train

#: What each preset's network is read with (bench_cpu_encoder's row of the same network).
BENCH_ENCODER = {"ssl-shapes-scenes-tiny": "shapes"}


def head_commit() -> str:
    root = Path(__file__).resolve().parents[1]
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "slotlab"], cwd=root, capture_output=True, text=True)
    return commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def trained_run(args, config, work: Path) -> tuple[Path, str, float | None]:
    """The run directory, the commit that trained it and its training seconds (when trained here)."""
    if args.run is None:
        start = time.perf_counter()
        train(config, work / "run", progress=True)
        return work / "run", head_commit(), round(time.perf_counter() - start, 1)
    if args.run_commit is None:
        raise SystemExit("--run needs --run-commit: the slotlab commit the run was trained at")
    saved = yaml.safe_load((args.run / RUN_CONFIG_FILE).read_text())
    if saved != to_dict(config):
        raise ConfigError(f"{args.run / RUN_CONFIG_FILE} is not the run of --preset {args.preset} with seed "
                          f"{args.seed}: train one with the command in this script's docstring")
    return args.run, args.run_commit, None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="ssl-shapes-scenes-tiny", choices=list(BENCH_ENCODER))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default=None, help="the shipped name (default: the preset's)")
    parser.add_argument("--run", type=Path, default=None, help="a finished run of the preset and seed")
    parser.add_argument("--run-commit", default=None, help="the slotlab commit --run was trained at")
    parser.add_argument("--out", default=None, help="write the JSON here as well as to stdout")
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = build_train_config(load_preset(args.preset), [f"seed={args.seed}"])
    if config.mixed_precision != "fp32":
        raise SystemExit(f"{args.preset}: shipped networks are trained in fp32, the preset says {config.mixed_precision}")
    name = args.name or args.preset
    with tempfile.TemporaryDirectory() as tmp:
        run, commit, seconds = trained_run(args, config, Path(tmp))
        steps = max(json.loads(line).get("step", 0) for line in (run / LOG_FILE).read_text().splitlines())
        directory = save_ssl_network(load_ssl_network(run / MODEL_DIR, "--run"), WEIGHTS_DIR / name)
    bench_name = BENCH_ENCODER[args.preset]
    settings = encoder_settings(bench_name, 2, {bench_name: SHIPPED_PREFIX + name})
    # read from the directory: the name resolves once provenance.json, written last, marks it complete
    encoder = build_method_encoder(encoder_config(**(settings | {"path": str(directory)})))
    probe = object_class_probe(encoder, build_dataset(PROBE_TRAIN), build_dataset(TEST), seed=0)
    record = {
        "name": name,
        "preset": args.preset,
        "seed": args.seed,
        "method": config.method,
        "steps": steps,
        "precision": config.mixed_precision,
        "threads": 1,
        "command": f"slotlab --threads 1 train --preset {args.preset} --out RUN --set seed={args.seed}",
        "export": f"python benchmarks/ship_ssl_network.py --preset {args.preset} --seed {args.seed}"
                  + (f" --run RUN --run-commit {commit}" if args.run else ""),
        "slotlab_commit": commit,
        "torch": torch.__version__,
        "train_seconds": seconds,
        "weights_bytes": (directory / WEIGHTS_FILE).stat().st_size,
        "class_probe": {"accuracy": probe, "test": TEST, "probe_train": PROBE_TRAIN, "probe_seed": 0,
                        "encoder": settings, "supervision": SUPERVISION[bench_name]},
        "probe_machine": machine_info(),
    }
    write_results(directory / PROVENANCE_FILE, record)
    emit(record, args.out)


if __name__ == "__main__":
    main()
