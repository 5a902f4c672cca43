"""For the methods trained without labels: their loss on a batch of scenes, with the labels
and with every label blanked (the two must be equal)."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from slotlab.data.registry import build_dataset
from slotlab.data.sample import collate


def losses_with_and_without_labels(model, before_each: Callable[[], None] = lambda: None) -> tuple[Tensor, Tensor]:
    """The model's loss on 8 scenes, then on the same images with blank labels; ``before_each``
    restores any state a pass moves (a running centre), and both passes draw the same views."""
    batch = collate([build_dataset("scenes?split=train&size=8")[i] for i in range(8)])
    losses = []
    for blank in (False, True):
        if blank:
            batch.semantic_mask[:] = 0
            batch.instance_mask[:] = 0
            batch.class_ids = [ids[:0] for ids in batch.class_ids]
        before_each()
        torch.manual_seed(0)
        losses.append(model.losses(model(batch), batch)["loss"])
    return losses[0], losses[1]
