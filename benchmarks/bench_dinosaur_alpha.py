"""How DINOSAUR-MLP's decoder masks develop during CPU training, as JSON.

    python benchmarks/bench_dinosaur_alpha.py --steps 600 --evals 100 300 600 [--lr 1e-3] \
        [--set model.encoder.patch_size=4 ...] --out dinosaur-alpha.json

Trains ``dinosaur-tiny`` (patch encoder, no label supervision anywhere: colour features, no
segmenter) with a plain Adam loop at the preset's warm-up (50 steps) and cosine to 0.1 of
``--lr`` over ``--steps``, gradient norm clipped at 1 (the preset's optimiser, without the
trainer's checkpoints), and logs, every 25 steps, the loss and the mean over tokens of the
largest decoder alpha (1 / K: uniform over the K slots). At each of ``--evals`` steps, on
scenes val 128: mBO_i of the decoder masks and of the slot-attention masks, the share of
tokens where the two argmaxes agree, the mean share of the tokens the top slot takes in
each (32 val images), and how well the slots predict where their object is (held-out R^2 of
a linear probe from slot to the centroid of the tokens its slot attention wins, 128 val
images). docs/ssl-encoder.md ("Why DINOSAUR's decoder masks score below the blocks baseline
on CPU", "Position for the slots") reads these numbers.
"""

from __future__ import annotations

import argparse
import math
import sys

import torch
import torch.nn.functional as F
from report import emit, machine_info
from torch.utils.data import DataLoader

from slotlab.config import load_preset
from slotlab.data.registry import build_dataset
from slotlab.data.sample import collate
from slotlab.nn.slot_attention import cartesian_grid
from slotlab.train.config import build_train_config
from slotlab.train.evaluate import evaluate_model
from slotlab.train.trainer import build_model

TRAIN, VAL = "scenes?split=train&size=2000", "scenes?split=val&size=128"


def top_share(assignment: torch.Tensor, num_slots: int) -> float:
    """Mean over images of the share of tokens the most frequent slot takes."""
    return F.one_hot(assignment, num_slots).float().mean(1).amax(1).mean().item()


def slot_place_r2(model, val, ridge: float = 10.0) -> list[float]:
    """Do the slots know where their object is? Held-out R^2 (x, y) of a ridge regression
    from each slot (standardised) to the centroid of the tokens its slot attention wins
    (slots that win none left out); fitted on the first half of the val images, scored on
    the second. About 0 when the slots carry no place; 1 when it is linear in them."""
    slots, centroids = [], []
    model.eval()
    with torch.no_grad(), torch.random.fork_rng():  # the training run's random draws stay as without it
        for start in range(0, len(val), 32):
            out = model(collate([val[i] for i in range(start, min(start + 32, len(val)))]))
            won = F.one_hot(out.attention.argmax(2), out.attention.shape[2]).float()  # (B, N, K)
            place = cartesian_grid(*out.grid)[:, :2]  # (N, 2): column, row in [0, 1]
            count = won.sum(1)  # (B, K)
            centroid = torch.einsum("bnk,nc->bkc", won, place) / count.clamp_min(1)[..., None]
            centroids.append(centroid[count > 0])
            slots.append(out.slots[count > 0])
    model.train()
    x, y = torch.cat(slots), torch.cat(centroids)
    half = len(x) // 2
    x = (x - x[:half].mean(0)) / (x[:half].std(0) + 1e-6)
    y = y - y[:half].mean(0)
    w = torch.linalg.solve(x[:half].T @ x[:half] + ridge * torch.eye(x.shape[1]), x[:half].T @ y[:half])
    residual = ((x[half:] @ w - y[half:]) ** 2).sum(0)
    return (1 - residual / ((y[half:] - y[half:].mean(0)) ** 2).sum(0)).tolist()


def evaluate(model, val, step: int) -> dict:
    row = {"step": step, "slot_place_r2_xy": slot_place_r2(model, val)}
    for source in ("decoder", "attention"):
        model.config.mask_source = source
        row[f"{source}_masks_mbo_i"] = evaluate_model(model, val, progress=False)["metrics"]["mbo_i"]
    with torch.no_grad():
        out = model(collate([val[i] for i in range(32)]))
    model.train()
    decoder, attention = out.decoder_masks.argmax(1), out.attention.argmax(2)
    k = out.decoder_masks.shape[1]
    return row | {
        "argmax_agreement": (decoder == attention).float().mean().item(),
        "decoder_top_slot_share": top_share(decoder, k),
        "attention_top_slot_share": top_share(attention, k),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--evals", type=int, nargs="+", default=[100, 300, 600])
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", nargs="*", default=[], help="preset overrides, as slotlab train --set")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = build_train_config(load_preset("dinosaur-tiny"), [f"seed={args.seed}", "inputs={}", *args.set])
    torch.manual_seed(args.seed)
    model = build_model(config)
    train, val = build_dataset(TRAIN), build_dataset(VAL)
    loader = DataLoader(train, batch_size=16, shuffle=True, collate_fn=collate, drop_last=True)
    params = [p for group in model.parameter_groups().values() for p in group]
    optimiser = torch.optim.Adam(params, lr=args.lr)
    cosine = lambda s: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s, args.steps) / args.steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda s: min(1, (s + 1) / 50) * cosine(s))
    trace, evals, step = [], [], 0
    model.train()
    while step < args.steps:
        for batch in loader:
            out = model(batch)
            loss = model.losses(out, batch)["loss"]
            optimiser.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimiser.step()
            schedule.step()
            step += 1
            if step % 25 == 0:
                largest = out.decoder_masks.detach().amax(1).mean().item()
                trace.append({"step": step, "loss": loss.item(), "decoder_alpha_max_mean": largest})
                print(trace[-1], file=sys.stderr, flush=True)
            if step in args.evals:
                evals.append(evaluate(model, val, step))
                print(evals[-1], file=sys.stderr, flush=True)
            if step >= args.steps:
                break
    emit({
        "benchmark": "DINOSAUR-MLP decoder alpha masks during CPU training (dinosaur-tiny)",
        "supervision": "none: fixed colour features (patch encoder, no segmenter)",
        "overrides": args.set, "lr": args.lr, "seed": args.seed, "val": VAL,
        "uniform_alpha": 1 / model.config.slot_attention.num_slots,
        "trace": trace, "evals": evals, "machine": machine_info(),
    }, args.out)


if __name__ == "__main__":
    main()
