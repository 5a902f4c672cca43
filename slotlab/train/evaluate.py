"""Evaluation of any method: predicted masks -> metrics under a named protocol."""

from __future__ import annotations

from typing import Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from slotlab.data.imageio import ReadableSamples, SkippedSample
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


def _split_readable(items: list) -> tuple[Batch | None, list[SkippedSample]]:
    samples = [item for item in items if not isinstance(item, SkippedSample)]
    return (collate(samples) if samples else None), [item for item in items if isinstance(item, SkippedSample)]


def readable_loader(dataset: Dataset, batch_size: int) -> DataLoader:
    """Batches over ``dataset`` in order as (collated readable samples or None, the unreadable
    ones as SkippedSamples): each readable sample once, the others reported, not replaced."""
    return DataLoader(ReadableSamples(dataset), batch_size=batch_size, shuffle=False, collate_fn=_split_readable)


def predict(
    model: ObjectCentricModel,
    dataset: Dataset,
    batch_size: int = 32,
    progress: bool = True,
    desc: str = "eval",
    seed: int = 0,
    unreadable: list[SkippedSample] | None = None,
) -> Iterator[tuple[Tensor, Batch]]:
    """Yield (masks (B, K, h, w), batch) over the readable samples of ``dataset`` in order, in
    eval mode, without grad; unreadable samples go to ``unreadable`` (see :func:`readable_loader`).

    Slot initialisation draws noise, so the masks depend on the random stream: it is seeded
    with ``seed`` here (and the caller's stream left untouched), which makes an evaluation
    a function of the model and the data alone.
    """
    loader = readable_loader(dataset, batch_size)
    model.eval()
    device = model.device
    with torch.no_grad(), fixed_randomness(seed, device):
        for batch, skipped in tqdm(loader, desc=desc, disable=not progress, unit="batch"):
            if unreadable is not None:
                unreadable += skipped
            if batch is None:
                continue
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
    ``seed`` fixes the slot-initialisation noise (see :func:`predict`; the result names it as
    "seed"). Each readable image is scored once ("images"); "unreadable" names the files of
    the others and why."""
    from slotlab.metrics.evaluation import evaluate_masks
    from slotlab.metrics.protocols import get_protocol

    unreadable: list[SkippedSample] = []
    masks = predict(model, dataset, batch_size, progress, desc=f"eval {model.method}", seed=seed, unreadable=unreadable)
    return evaluate_masks(masks, get_protocol(protocol)) | {"seed": seed, "unreadable": [s.as_dict() for s in unreadable]}


def evaluate_blocks(dataset: Dataset, num_slots: int, grid: tuple[int, int], protocol: str = "native", batch_size: int = 64) -> dict:
    """Metrics of the K-equal-blocks baseline at token resolution ``grid``."""
    from slotlab.metrics.evaluation import evaluate_masks
    from slotlab.metrics.protocols import get_protocol

    unreadable: list[SkippedSample] = []

    def batches():
        for batch, skipped in readable_loader(dataset, batch_size):
            unreadable.extend(skipped)
            if batch is not None:
                yield block_masks(len(batch), num_slots, *grid), batch

    return evaluate_masks(batches(), get_protocol(protocol)) | {"unreadable": [s.as_dict() for s in unreadable]}
