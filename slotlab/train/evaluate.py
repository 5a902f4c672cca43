"""Evaluation of any method: predicted masks -> metrics under a named protocol."""

from __future__ import annotations

from typing import Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from slotlab.data.sample import Batch, collate
from slotlab.methods import ObjectCentricModel
from slotlab.ops.random import fixed_randomness


def block_masks(batch_size: int, num_slots: int, height: int, width: int) -> Tensor:
    """The trivial baseline: the image cut into ``num_slots`` equal blocks (rows x cols grid,
    rows the largest divisor of K not above sqrt(K)), as one-hot (B, K, H, W) masks."""
    rows = max(d for d in range(1, int(num_slots**0.5) + 1) if num_slots % d == 0)
    cols = num_slots // rows
    r = torch.arange(height).mul(rows).div(height, rounding_mode="floor")
    c = torch.arange(width).mul(cols).div(width, rounding_mode="floor")
    labels = r[:, None] * cols + c[None, :]
    masks = torch.nn.functional.one_hot(labels, num_slots).permute(2, 0, 1).float()
    return masks.unsqueeze(0).expand(batch_size, -1, -1, -1)


def predict(
    model: ObjectCentricModel,
    dataset: Dataset,
    batch_size: int = 32,
    progress: bool = True,
    desc: str = "eval",
    seed: int = 0,
) -> Iterator[tuple[Tensor, Batch]]:
    """Yield (masks (B, K, h, w), batch) over ``dataset`` in order, in eval mode, without grad.

    Slot initialisation draws noise, so the masks depend on the random stream: it is seeded
    with ``seed`` here (and the caller's stream left untouched), which makes an evaluation
    a function of the model and the data alone.
    """
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)
    model.eval()
    device = model.device
    with torch.no_grad(), fixed_randomness(seed, device):
        for batch in tqdm(loader, desc=desc, disable=not progress, unit="batch"):
            outputs = model(batch.to(device))
            yield model.masks(outputs).float().cpu(), batch


def evaluate_model(
    model: ObjectCentricModel,
    dataset: Dataset,
    protocol: str = "native",
    batch_size: int = 32,
    progress: bool = True,
    seed: int = 0,
) -> dict:
    """Metrics of ``model`` on ``dataset`` under ``protocol`` (the result names the protocol);
    ``seed`` fixes the slot-initialisation noise (see :func:`predict`)."""
    from slotlab.metrics.protocols import evaluate_masks, get_protocol

    masks = predict(model, dataset, batch_size, progress, desc=f"eval {model.method}", seed=seed)
    return evaluate_masks(masks, get_protocol(protocol))


def evaluate_blocks(dataset: Dataset, num_slots: int, grid: tuple[int, int], protocol: str = "native", batch_size: int = 64) -> dict:
    """Metrics of the K-equal-blocks baseline at token resolution ``grid``."""
    from slotlab.metrics.protocols import evaluate_masks, get_protocol

    def batches():
        for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate):
            yield block_masks(len(batch), num_slots, *grid), batch

    return evaluate_masks(batches(), get_protocol(protocol))
