"""Linear probes on frozen slots: instance-level property prediction (GLASS Table 8,
supplement Sec. 2.1).

Protocol: every image is decomposed by the frozen model; its slot masks (argmax, at the
resolution of the ground truth) are matched one-to-one to the ground-truth objects by
IoU with the Hungarian algorithm, and matches with IoU > 0 give (slot, object) pairs.
Two single linear layers are trained on the training pairs, with AdamW (constant lr
3e-4) and early stopping (patience 5) on a held-out part of the training pairs:

- class: a linear classifier on the object's class id, scored by top-1 accuracy;
- centre: a linear regression onto the object's normalised box centre ((x0+x1)/2,
  (y0+y1)/2, both in [0, 1]), scored by the mean squared error over pairs and both
  coordinates.

Beside them, ``mask_mass_on_object`` (not in GLASS; :func:`slotlab.metrics.slot_pairs.mask_mass_on_objects`): the
share of a matched slot's soft mask on its object, averaged over the test pairs. It tells
why a probe reads little: a slot whose mask mass lies mostly elsewhere is an average of the
image, not a description of its object.

And beside the slot probes, the same two probes on two references made of the frozen
encoder's features (not in GLASS; :func:`slotlab.metrics.slot_pairs.pool_features`):

- ``object_features``: averaged under each matched object's ground-truth mask, a perfect
  slot made of what the encoder offers. It separates the two reasons a slot probe can fail:
  the encoder does not carry the property (this probe fails too), or the slots lose it;
- ``image_features``: averaged over the whole image, a slot that describes the image and
  no object. A slot probe must beat it to show that the slot describes its own object:
  where images hold few classes, the image alone already narrows an object's class down.

VOC has no instance masks for training; the paper matches on the semantic mask there
(``match_on="semantic"``: one ground-truth "object" per class present in the image).
The paper trains for at most 50 epochs on VOC and 10 on COCO (``max_epochs``).

    slotlab probe --checkpoint runs/glass --train "coco:data/coco?split=train2017&resize=256&crop=256" \
        --test "coco:data/coco?split=val2017&resize=256&crop=256" --out probe.json
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from slotlab.metrics.slot_pairs import REFERENCE_FEATURES, MatchOn, SlotPairs, collect_slot_pairs
from slotlab.ops.random import fixed_randomness, seeded_generator

Task = Literal["class", "centre"]
TASKS: tuple[str, ...] = ("class", "centre")

#: Share of the training pairs held out for early stopping (the paper does not state it).
DEFAULT_VAL_FRACTION = 0.1
PAPER_LR = 3e-4
PAPER_PATIENCE = 5


@dataclass
class ProbeResult:
    """A trained probe (best validation weights) and how its training went."""

    probe: nn.Linear
    task: str
    best_epoch: int  # 1-based epoch whose weights were kept
    epochs_run: int
    stopped_early: bool
    val_losses: list[float] = field(default_factory=list)


def split_pairs(pairs: SlotPairs, val_fraction: float = DEFAULT_VAL_FRACTION, seed: int = 0) -> tuple[SlotPairs, SlotPairs]:
    """Random (train, held-out) split of the training pairs for early stopping."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    num_val = max(1, round(len(pairs) * val_fraction))
    if num_val >= len(pairs):
        raise ValueError(f"{len(pairs)} training pairs are too few to hold out {val_fraction:.0%} for early stopping")
    order = torch.randperm(len(pairs), generator=seeded_generator(seed))
    return pairs.subset(order[num_val:]), pairs.subset(order[:num_val])


# ---- probes --------------------------------------------------------------------------
def probe_targets(pairs: SlotPairs, task: Task) -> Tensor:
    if task == "class":
        return pairs.class_ids
    if task == "centre":
        return pairs.centres
    raise ValueError(f"task={task!r}; choose one of {TASKS}")


def probe_loss(outputs: Tensor, targets: Tensor, task: Task) -> Tensor:
    """Cross-entropy for the class probe, MSE for the centre probe."""
    return F.cross_entropy(outputs, targets) if task == "class" else F.mse_loss(outputs, targets)


def train_probe(
    train_pairs: SlotPairs,
    val_pairs: SlotPairs,
    task: Task = "class",
    seed: int = 0,
    max_epochs: int = 100,
    patience: int = PAPER_PATIENCE,
    lr: float = PAPER_LR,
    batch_size: int = 64,
    num_classes: int | None = None,
) -> ProbeResult:
    """Train one linear layer on frozen slots (AdamW, constant lr) with early stopping.

    After each epoch the loss on ``val_pairs`` is measured; training stops once it has not
    improved for ``patience`` epochs, and the best epoch's weights are returned.
    ``num_classes`` defaults to the largest class id in either split plus one.
    """
    if max_epochs < 1 or patience < 1:
        raise ValueError(f"max_epochs and patience must be >= 1, got {max_epochs} and {patience}")
    train_y, val_y = probe_targets(train_pairs, task), probe_targets(val_pairs, task)
    if len(train_pairs) == 0 or len(val_pairs) == 0:
        raise ValueError(f"train_probe needs pairs in both splits, got {len(train_pairs)} train / {len(val_pairs)} val")
    if task == "class":
        outputs = num_classes or int(max(train_y.max(), val_y.max())) + 1
    else:
        outputs = 2
    with fixed_randomness(seed):
        probe = nn.Linear(train_pairs.slots.shape[1], outputs)
    optimiser = torch.optim.AdamW(probe.parameters(), lr=lr)
    generator = seeded_generator(seed)
    best_loss, best_epoch, best_state, val_losses = float("inf"), 0, None, []
    epoch, stopped_early = 0, False
    for epoch in range(1, max_epochs + 1):
        probe.train()
        for index in torch.randperm(len(train_pairs), generator=generator).split(batch_size):
            optimiser.zero_grad()
            probe_loss(probe(train_pairs.slots[index]), train_y[index], task).backward()
            optimiser.step()
        probe.eval()
        with torch.no_grad():
            val_loss = float(probe_loss(probe(val_pairs.slots), val_y, task))
        val_losses.append(val_loss)
        if val_loss < best_loss:
            best_loss, best_epoch = val_loss, epoch
            best_state = {k: v.clone() for k, v in probe.state_dict().items()}
        elif epoch - best_epoch >= patience:
            stopped_early = True
            break
    probe.load_state_dict(best_state)
    return ProbeResult(probe.eval(), task, best_epoch, epoch, stopped_early, val_losses)


@torch.no_grad()
def evaluate_probe(result: ProbeResult, pairs: SlotPairs) -> float:
    """Top-1 accuracy (fraction) for the class probe; MSE of the centre for the centre probe."""
    outputs = result.probe(pairs.slots)
    targets = probe_targets(pairs, result.task)
    if result.task == "class":
        return float((outputs.argmax(1) == targets).float().mean())
    return float(F.mse_loss(outputs, targets))


def prior_baselines(train_pairs: SlotPairs, test_pairs: SlotPairs) -> dict[str, float]:
    """What a probe that ignores the slots scores: the training pairs' most frequent class
    (top-1 accuracy) and their mean centre (MSE) applied to every test pair. A probe near
    these read nothing from the slots."""
    majority = torch.bincount(train_pairs.class_ids).argmax()
    mean_centre = train_pairs.centres.mean(0, keepdim=True)
    return {
        "class_accuracy_majority_baseline": float((test_pairs.class_ids == majority).float().mean()),
        "centre_mse_mean_baseline": float(F.mse_loss(mean_centre.expand_as(test_pairs.centres), test_pairs.centres)),
    }


def run_probes(
    model: nn.Module,
    train_dataset: Dataset,
    test_dataset: Dataset,
    batch_size: int = 8,
    match_on: MatchOn = "instance",
    val_fraction: float = DEFAULT_VAL_FRACTION,
    seed: int = 0,
    max_epochs: int = 100,
    patience: int = PAPER_PATIENCE,
) -> dict[str, float]:
    """GLASS Table 8 for one frozen model: class top-1 accuracy and centre MSE on the test set,
    next to the :func:`prior_baselines` of the same pairs, the test pairs' mean
    ``mask_mass_on_object`` and the same probes on each of ``REFERENCE_FEATURES`` (e.g.
    ``object_features_class_accuracy``, ``image_features_centre_mse``)."""
    train_all = collect_slot_pairs(model, train_dataset, batch_size, match_on, seed=seed)
    test = collect_slot_pairs(model, test_dataset, batch_size, match_on, seed=seed)
    train, val = split_pairs(train_all, val_fraction, seed)
    num_classes = int(max(train_all.class_ids.max(), test.class_ids.max())) + 1
    results: dict[str, float] = {
        "num_train_pairs": float(len(train)),
        "num_val_pairs": float(len(val)),
        "num_test_pairs": float(len(test)),
        "mask_mass_on_object": float(test.mask_mass.mean()),
    }
    inputs = {"": (train, val, test)}
    for reference in REFERENCE_FEATURES:
        inputs[f"{reference}_"] = tuple(pairs.with_slots_from(reference) for pairs in (train, val, test))
    for prefix, (train_in, val_in, test_in) in inputs.items():
        for task, metric in (("class", "class_accuracy"), ("centre", "centre_mse")):
            trained = train_probe(train_in, val_in, task, seed, max_epochs, patience, num_classes=num_classes)
            results[prefix + metric] = evaluate_probe(trained, test_in)
            results[f"{prefix}{task}_epochs"] = float(trained.epochs_run)
    return results | prior_baselines(train, test)
