"""SPOT on a CPU: the rows of SPOT Table 1 on the built-in scenes, and the decoder's speed, as JSON.

    python benchmarks/bench_spot.py --out bench-spot.json [--seeds 0 1 2] [--steps N] [--jobs N] [--stage1 DIR]
    python benchmarks/bench_spot.py --speed-only --out bench-spot-speed.json

Table 1 at CPU scale: for every seed, spot-tiny-raster (row a: raster order only) and
spot-tiny (row b: 9 random orders) are trained, then spot-tiny-stage2 with that seed's
spot-tiny model as its teacher (row f: + self-training). Each model is evaluated on the
scenes *test* split (protocol 'native') with its decoder masks A_DEC in raster order and with
ENS (rows c and g), and with its slot-attention masks A_SLOT; mean and standard deviation
over seeds, next to the K-equal-blocks baseline. ``slot_use`` compares the raster-order
reconstruction error with each image's own slots and with another image's: how much the
decoder reads the slots. Supervision: none (reconstruction of the
frozen CPU patch encoder's tokens, a stand-in for DINO features; stage 2 adds the teacher's
masks, which are the model's own). Nothing here was tuned on the test split. Every run,
stage 1 and stage 2, trains for the same ``--steps`` (the preset's warm-up kept).
``--stage1 DIR`` takes the stage-1 models from DIR/<preset>-<seed>/model (the --workdir of an
earlier run with the same --steps) instead of training them again.

Speed: forward + backward of slotlab's slot attention (SPOT's configuration) and
autoregressive decoder at the paper's sizes (196 tokens of 768, 7 slots of 256, 3
iterations, 4 blocks of 768 with 6 heads, batch 8), median over repeats, one thread.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import torch
from report import emit, machine_info, median_seconds

from slotlab.config import load_preset
from slotlab.data.registry import build_dataset
from slotlab.train.config import build_train_config
from slotlab.train.demo import die_with_parent, steps_overrides
from slotlab.train.evaluate import evaluate_blocks, evaluate_model
from slotlab.train.trainer import train
from slotlab.io.checkpoints import is_model_dir
from slotlab.io.importers.spot import slot_attention_config
from slotlab.io.layout import MODEL_DIR
from slotlab.nn.decoders.autoregressive import AutoregressiveDecoder, AutoregressiveDecoderConfig
from slotlab.nn.slot_attention import SlotAttention

TEST = "scenes?split=test&size=256"
METRICS = ("mbo_i", "miou_i", "fg_ari")
SUPERVISION = "none (no labels): reconstruction of a frozen CPU patch encoder's tokens (colour features, a stand-in for DINO)"
SELF_TRAINING = SUPERVISION + "; plus the stage-1 teacher's decoder masks (the model's own, no labels)"


def speed(repeats: int) -> dict:
    """fwd+bwd seconds of SPOT's slot attention + AR decoder at the paper's sizes, batch 8."""
    torch.manual_seed(0)
    b, n, d, k, s = 8, 196, 768, 7, 256
    sa = SlotAttention(slot_attention_config({"input_channels": d, "slot_size": s, "mlp_hidden_size": 1024,
                                              "num_slots": k, "init_method": "shared_gaussian", "truncate": "none"}))
    dec = AutoregressiveDecoder(AutoregressiveDecoderConfig(input_dim=d, slot_dim=s, width=d, blocks=4, heads=6,
                                                            num_tokens=n, num_bos=9))
    tokens = torch.randn(b, n, d)
    order = torch.randperm(n)

    def step():
        slots = sa(tokens, (14, 14)).slots
        out = dec(tokens, slots, order=order, bos_index=3)
        (((out.prediction - tokens) ** 2).mean() + out.attention.mean()).backward()
        for p in [*sa.parameters(), *dec.parameters()]:
            p.grad = None

    wall, cpu = median_seconds(step, repeats)
    return {"what": "slotlab SlotAttention (SPOT config) + AutoregressiveDecoder, forward+backward, random order",
            "sizes": {"batch": b, "tokens": n, "width": d, "slots": k, "slot_dim": s, "blocks": 4, "heads": 6, "iters": 3},
            "threads": torch.get_num_threads(), "median_wall_seconds": wall, "median_cpu_seconds": cpu, "repeats": repeats}


def train_row(preset: str, seed: int, steps: int | None, out: str, teacher: str | None) -> str:
    torch.set_num_threads(1)
    raw = load_preset(preset)
    overrides = [f"seed={seed}", *steps_overrides(raw, steps)]
    if teacher is not None:
        overrides.append(f"model.teacher={teacher}")
    result = train(build_train_config(raw, overrides), out, progress=False)
    return str(result.model_dir)


@torch.no_grad()
def slot_use(model, dataset, batch_size: int = 32) -> dict:
    """Raster-order reconstruction MSE with each image's own slots and with the previous
    image's in the batch: how much the decoder reads the slots (equal values: it ignores them)."""
    from torch.utils.data import DataLoader

    from slotlab.data.sample import collate
    from slotlab.ops.random import fixed_randomness
    from slotlab.methods.spot_losses import reconstruction_loss

    model.eval()
    model.config.eval_orders = "raster"
    own, other = [], []
    with fixed_randomness(0, model.device):
        for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=collate):
            if len(batch.image) < 2:  # an image alone would be decoded with its own slots as "another's"
                raise ValueError(f"slot_use: {len(dataset)} images in batches of {batch_size} leave a batch of one "
                                 "image; choose a batch_size that leaves at least two")
            out = model(batch.image)
            raster = model.order_indices(len(out.slots), out.slots.device)
            own.append(float(reconstruction_loss(out.reconstruction, out.targets)))
            swapped, _ = model.decode(out.slots.roll(1, 0), out.targets, raster)
            other.append(float(reconstruction_loss(swapped, out.targets)))
    return {"mse_own_slots": statistics.mean(own), "mse_other_image_slots": statistics.mean(other)}


def evaluate_row(model_dir: str) -> dict:
    """Decoder masks (raster and ENS) and slot-attention masks of one model on the test split."""
    from slotlab.methods import ObjectCentricModel

    torch.set_num_threads(1)
    model = ObjectCentricModel.from_pretrained(model_dir)
    test = build_dataset(TEST)
    scores = {}
    for name, mask_source, eval_orders in (("decoder", "decoder", "raster"), ("decoder_ens", "decoder", "ensemble"),
                                           ("slot_attention", "attention", "raster")):
        model.config.mask_source, model.config.eval_orders = mask_source, eval_orders
        result = evaluate_model(model, test, "native", progress=False)
        scores[name] = {m: float(result["metrics"][m]) for m in METRICS}
    scores["slot_use"] = slot_use(model, test)
    return scores


def summary(values: list[float]) -> dict:
    return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0, "seeds": values}


def stage1_model(stage1: Path, preset: str, seed: int) -> Future:
    """An earlier run's stage-1 model directory, as a finished future (or a clear error)."""
    model = stage1 / f"{preset}-{seed}" / MODEL_DIR
    if not is_model_dir(model):
        raise SystemExit(f"--stage1 {stage1}: {model} holds no trained model; run without --stage1 to train it")
    done: Future = Future()
    done.set_result(str(model))
    return done


def table(seeds: list[int], steps: int | None, jobs: int, workdir: Path, stage1_dir: Path | None = None) -> dict:
    context = get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=die_with_parent) as pool:
        stage1 = {(preset, seed): stage1_model(stage1_dir, preset, seed) if stage1_dir else
                  pool.submit(train_row, preset, seed, steps, str(workdir / f"{preset}-{seed}"), None)
                  for seed in seeds for preset in ("spot-tiny-raster", "spot-tiny")}
        stage2 = {seed: pool.submit(train_row, "spot-tiny-stage2", seed, steps, str(workdir / f"spot-tiny-stage2-{seed}"),
                                    stage1[("spot-tiny", seed)].result()) for seed in seeds}
        models = {key: f.result() for key, f in stage1.items()} | {("spot-tiny-stage2", s): f.result() for s, f in stage2.items()}
        scores = {key: pool.submit(evaluate_row, path) for key, path in models.items()}
        scores = {key: f.result() for key, f in scores.items()}
    rows = {
        "(a) raster order only": ("spot-tiny-raster", "decoder"),
        "(b) random orders": ("spot-tiny", "decoder"),
        "(c) random orders + ENS": ("spot-tiny", "decoder_ens"),
        "(f) random orders + self-training": ("spot-tiny-stage2", "decoder"),
        "(g) random orders + self-training + ENS": ("spot-tiny-stage2", "decoder_ens"),
    }
    out = {}
    for row, (preset, masks) in rows.items():
        out[row] = {"preset": preset, "supervision": SELF_TRAINING if preset.endswith("stage2") else SUPERVISION,
                    "decoder": {m: summary([scores[(preset, s)][masks][m] for s in seeds]) for m in METRICS},
                    "slot_attention": {m: summary([scores[(preset, s)]["slot_attention"][m] for s in seeds]) for m in METRICS},
                    "slot_use": {k: summary([scores[(preset, s)]["slot_use"][k] for s in seeds]) for k in scores[(preset, seeds[0])]["slot_use"]}}
    blocks = evaluate_blocks(build_dataset(TEST), 7, (16, 16), "native")
    out["K-equal blocks (7 slots, 16x16)"] = {m: float(blocks["metrics"][m]) for m in METRICS}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=None, help="training steps per run (default: the presets')")
    parser.add_argument("--jobs", type=int, default=2, help="runs trained at once, one thread each")
    parser.add_argument("--workdir", default=None, help="where runs are written (default: a temporary directory)")
    parser.add_argument("--stage1", default=None, help="reuse the stage-1 runs in this earlier --workdir (same --steps)")
    parser.add_argument("--speed-only", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.speed_only:
        report = {"speed": speed(args.repeats)}
    else:
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(args.workdir or tmp)
            report = {"table1": table(args.seeds, args.steps, args.jobs, workdir, args.stage1 and Path(args.stage1))}
        report["settings"] = {"seeds": args.seeds, "steps_per_run": args.steps or "preset", "warmup_steps": "preset",
                              "stage1_from": args.stage1 or "trained here", "test": TEST, "protocol": "native"}
    report["machine"] = machine_info()
    emit(report, args.out)


if __name__ == "__main__":
    main()
