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

Beside them, ``mask_mass_on_object`` (not in GLASS; :func:`mask_mass_on_objects`): the
share of a matched slot's soft mask on its object, averaged over the test pairs. It tells
why a probe reads little: a slot whose mask mass lies mostly elsewhere is an average of the
image, not a description of its object.

And beside the slot probes, the same two probes on two references made of the frozen
encoder's features (not in GLASS; :func:`pool_features`):

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

import argparse
import sys
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from slotlab.config import float_option, int_option
from slotlab.data.sample import IGNORE_INDEX, Batch, boxes_from_instance_mask, collate
from slotlab.ops.resize import resize_masks_soft
from slotlab.ops.matching import hungarian_match, pairwise_iou
from slotlab.io.checkpoints import add_checkpoint_arguments, load_model_from_args
from slotlab.io.results import results_json, write_results
from slotlab.ops.random import fixed_randomness, seeded_generator

Task = Literal["class", "centre"]
MatchOn = Literal["instance", "semantic"]
TASKS: tuple[str, ...] = ("class", "centre")
MATCH_TARGETS: tuple[str, ...] = ("instance", "semantic")
#: SlotPairs fields probed beside the slots, as references (see the module docstring).
REFERENCE_FEATURES: tuple[str, ...] = ("object_features", "image_features")

#: Share of the training pairs held out for early stopping (the paper does not state it).
DEFAULT_VAL_FRACTION = 0.1
PAPER_LR = 3e-4
PAPER_PATIENCE = 5


@dataclass
class SlotPairs:
    """Matched (slot, object) pairs: slot vectors and the matched object's properties."""

    slots: Tensor  # (P, D) float
    class_ids: Tensor  # (P,) int64
    centres: Tensor  # (P, 2) float, normalised (x, y) box centre
    mask_mass: Tensor  # (P,) float, see :func:`mask_mass_on_objects`
    object_features: Tensor  # (P, F) float, encoder features under the object's mask
    image_features: Tensor  # (P, F) float, encoder features of the pair's whole image

    def __len__(self) -> int:
        return self.slots.shape[0]

    def with_slots_from(self, reference: str) -> "SlotPairs":
        """The same pairs with a reference (one of ``REFERENCE_FEATURES``) in place of the
        slots, to probe it."""
        if reference not in REFERENCE_FEATURES:
            raise ValueError(f"reference={reference!r}; choose one of {REFERENCE_FEATURES}")
        return replace(self, slots=getattr(self, reference))

    def subset(self, index: Tensor) -> "SlotPairs":
        return SlotPairs(*(getattr(self, f.name)[index] for f in fields(self)))

    @classmethod
    def concatenate(cls, parts: list["SlotPairs"]) -> "SlotPairs":
        if not parts:
            raise ValueError("no slot pairs to concatenate")
        return cls(*(torch.cat([getattr(p, f.name) for p in parts]) for f in fields(cls)))


@dataclass
class ProbeResult:
    """A trained probe (best validation weights) and how its training went."""

    probe: nn.Linear
    task: str
    best_epoch: int  # 1-based epoch whose weights were kept
    epochs_run: int
    stopped_early: bool
    val_losses: list[float] = field(default_factory=list)


# ---- matching ------------------------------------------------------------------------
@dataclass
class ObjectTargets:
    """Ground-truth objects of a batch: label maps 1..M, and per item class ids and centres."""

    label_map: Tensor  # (B, H, W) int64, 0 = background / no object
    class_ids: list[Tensor]  # per item (M_b,)
    centres: list[Tensor]  # per item (M_b, 2)


def box_centres(boxes: Tensor) -> Tensor:
    """Normalised (x0, y0, x1, y1) boxes (M, 4) -> centres (M, 2) as (x, y)."""
    return torch.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], dim=1)


def semantic_objects(semantic_mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """One object per class present in (H, W): (label map 1..M, class ids (M,), boxes (M, 4))."""
    classes = semantic_mask.unique()
    classes = classes[(classes != 0) & (classes != IGNORE_INDEX)]
    label_map = torch.zeros_like(semantic_mask)
    for index, cls in enumerate(classes.tolist(), start=1):
        label_map[semantic_mask == cls] = index
    return label_map, classes.long(), boxes_from_instance_mask(label_map, len(classes))


def object_targets(batch: Batch, match_on: MatchOn = "instance") -> ObjectTargets:
    """The ground-truth objects slots are matched to: instances, or semantic classes (VOC)."""
    if match_on == "instance":
        centres = [box_centres(b.float()) for b in batch.boxes]
        return ObjectTargets(batch.instance_mask.long(), [c.long() for c in batch.class_ids], centres)
    if match_on == "semantic":
        parts = [semantic_objects(m) for m in batch.semantic_mask]
        return ObjectTargets(
            torch.stack([p[0] for p in parts]), [p[1] for p in parts], [box_centres(p[2]) for p in parts]
        )
    raise ValueError(f"match_on={match_on!r}; choose one of {MATCH_TARGETS}")


def valid_pixels(label_map: Tensor, ignore: Tensor | None) -> Tensor:
    """(B, H, W) bool: the pixels that count, i.e. all but the ``ignore`` ones."""
    return torch.ones_like(label_map, dtype=torch.bool) if ignore is None else ~ignore.bool()


def match_slots_to_objects(
    slot_masks: Tensor, label_map: Tensor, num_objects: list[int], ignore: Tensor | None = None
) -> list[tuple[Tensor, Tensor]]:
    """Hungarian matching of slots to objects by IoU of hard masks; keeps matches with IoU > 0.

    slot_masks (B, K, h, w) soft masks, resized bilinearly to the label map and arg-maxed;
    label_map (B, H, W) object ids 1..M (0 = none); ``ignore`` (B, H, W) pixels count for
    neither side. Returns per item (slot indices, object indices 0..M-1).
    """
    size = tuple(label_map.shape[-2:])
    segmentation = resize_masks_soft(slot_masks, size).argmax(1)  # (B, H, W)
    k = slot_masks.shape[1]
    valid = valid_pixels(label_map, ignore)
    slot_hard = F.one_hot(segmentation, k).movedim(-1, 1) * valid.unsqueeze(1)  # (B, K, H, W)
    max_objects = max(max(num_objects, default=0), 1)
    ids = torch.arange(1, max_objects + 1, device=label_map.device).reshape(1, -1, 1, 1)
    object_hard = (label_map.unsqueeze(1) == ids) & valid.unsqueeze(1)  # (B, M, H, W)
    iou = pairwise_iou(slot_hard.flatten(2).float(), object_hard.flatten(2).float())  # (B, K, M)
    present = torch.arange(max_objects, device=iou.device) < torch.tensor(num_objects, device=iou.device)[:, None]
    iou = iou * present.unsqueeze(1)  # objects beyond an item's count never match
    matches = []
    for item, (rows, cols) in enumerate(hungarian_match(iou)):
        keep = iou[item, rows, cols].cpu() > 0
        matches.append((rows[keep], cols[keep]))
    return matches


def matched_object_masks(label_map: Tensor, cols: Tensor) -> Tensor:
    """(H, W) object ids 1..M and matched object indices (P,) 0..M-1 -> their masks (P, H, W) bool."""
    return label_map.unsqueeze(0) == (cols + 1).to(label_map.device).reshape(-1, 1, 1)


def mask_mass_on_objects(
    slot_masks: Tensor, label_map: Tensor, matches: list[tuple[Tensor, Tensor]], ignore: Tensor | None = None
) -> Tensor:
    """Share of each matched slot's soft mask that lies on its object: (P,) in [0, 1].

    slot_masks (B, K, H, W) soft masks at the label map's size; ``matches`` from
    :func:`match_slots_to_objects`; ignored pixels count nowhere. With slot-attention masks this
    is the weight the slot's update (a weighted mean over the inputs) gives its own object:
    near 1, the slot vector describes the object; near the object's share of the image, it
    describes the whole image, and a probe cannot read the object from it.
    """
    valid = valid_pixels(label_map, ignore)
    shares = []
    for item, (rows, cols) in enumerate(matches):
        masks = slot_masks[item, rows] * valid[item]  # (P_b, H, W)
        on_object = matched_object_masks(label_map[item], cols)
        shares.append((masks * on_object).flatten(1).sum(1) / masks.flatten(1).sum(1).clamp_min(1e-12))
    return torch.cat(shares) if shares else slot_masks.new_zeros(0)


def pool_features(feature_map: Tensor, masks: Tensor) -> Tensor:
    """Features averaged under pixel masks: (F, h, w) tokens, (P, H, W) bool -> (P, F).

    Each mask is area-averaged to the token grid, so a token weighs by the share of its patch
    the mask covers; an empty mask gives zeros.
    """
    weights = F.interpolate(masks.unsqueeze(0).float(), size=tuple(feature_map.shape[-2:]), mode="area")[0]
    total = weights.flatten(1).sum(1, keepdim=True).clamp_min(1e-12)
    return torch.einsum("phw,fhw->pf", weights, feature_map.float()) / total


def reference_features(
    feature_map: Tensor, label_map: Tensor, matches: list[tuple[Tensor, Tensor]], ignore: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Per matched pair, encoder features under its object's ground-truth mask and over its
    whole image, ignored pixels left out: two (P, F).

    feature_map (B, F, h, w) encoder tokens; label_map (B, H, W) object ids; ``matches`` from
    :func:`match_slots_to_objects`.
    """
    valid = valid_pixels(label_map, ignore)
    objects, images = [], []
    for item, (_, cols) in enumerate(matches):
        masks = matched_object_masks(label_map[item], cols) & valid[item]
        objects.append(pool_features(feature_map[item], masks))
        images.append(pool_features(feature_map[item], valid[item].unsqueeze(0)).expand(len(cols), -1))
    if not objects:
        empty = feature_map.new_zeros(0, feature_map.shape[1])
        return empty, empty
    return torch.cat(objects), torch.cat(images)


@torch.no_grad()
def batch_slot_pairs(model: nn.Module, batch: Batch, match_on: MatchOn = "instance") -> SlotPairs:
    """Decompose one batch with the frozen model and return its matched (slot, object) pairs."""
    decomposition = model.decompose(batch.image)  # slot noise from the caller's stream
    targets = object_targets(batch, match_on)
    counts = [len(c) for c in targets.class_ids]
    device = decomposition.masks.device
    label_map, ignore = targets.label_map.to(device), batch.ignore_mask.to(device)
    masks = resize_masks_soft(decomposition.masks, tuple(label_map.shape[-2:]))
    matches = match_slots_to_objects(masks, label_map, counts, ignore)
    masses = mask_mass_on_objects(masks, label_map, matches, ignore).float().cpu()
    if decomposition.features is None:
        raise NotImplementedError(
            f"{type(model).__name__}.decompose gives no encoder tokens, which the probe's reference features pool"
        )
    object_features, image_features = reference_features(decomposition.features, label_map, matches, ignore)
    slots = decomposition.slots.detach().float().cpu()
    return SlotPairs(
        torch.cat([slots[item, rows] for item, (rows, _) in enumerate(matches)]),
        torch.cat([targets.class_ids[item][cols].cpu() for item, (_, cols) in enumerate(matches)]),
        torch.cat([targets.centres[item][cols].float().cpu() for item, (_, cols) in enumerate(matches)]),
        masses,
        object_features.cpu(),
        image_features.cpu(),
    )


def collect_slot_pairs(
    model: nn.Module, dataset: Dataset, batch_size: int = 8, match_on: MatchOn = "instance", num_workers: int = 0,
    seed: int = 0,
) -> SlotPairs:
    """All matched (slot, object) pairs of a dataset under the frozen ``model``; ``seed``
    fixes the slot-initialisation noise, so the pairs depend on the model and data alone."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate, num_workers=num_workers)
    with fixed_randomness(seed, model.device):
        pairs = SlotPairs.concatenate([batch_slot_pairs(model, batch, match_on) for batch in loader])
    if len(pairs) == 0:
        raise ValueError(
            "no slot matched any ground-truth object (all IoUs were 0): does the dataset have object annotations?"
        )
    return pairs


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


# ---- command line --------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_checkpoint_arguments(parser)
    parser.add_argument("--train", required=True, metavar="DATASET_SPEC", help="dataset the probes are trained on")
    parser.add_argument("--test", required=True, metavar="DATASET_SPEC", help="dataset the probes are scored on")
    parser.add_argument("--out", default=None, metavar="FILE", help="write the results as JSON to FILE")
    parser.add_argument("--batch-size", type=int_option(low=1), default=8, help="images per decomposition batch")
    parser.add_argument("--match-on", choices=MATCH_TARGETS, default="instance",
                        help="match slots to instance masks, or to semantic classes (VOC, which lacks instances)")
    parser.add_argument("--max-epochs", type=int_option(low=1), default=100, help="probe epochs at most (paper: 50 VOC, 10 COCO)")
    parser.add_argument("--patience", type=int_option(low=1), default=PAPER_PATIENCE, help="early-stopping patience in epochs")
    parser.add_argument("--val-fraction", type=float_option(low=0, high=1, low_open=True, high_open=True), default=DEFAULT_VAL_FRACTION,
                        help="share of the training pairs held out for early stopping")
    parser.add_argument("--seed", type=int_option(low=0), default=0, help="seed of the split and the probes")
    parser.add_argument("--device", default="cpu", help="device the model runs on")


def run(args: argparse.Namespace) -> int:
    from slotlab.data.registry import build_dataset
    from slotlab.io.files import output_file

    out = output_file(args.out) if args.out is not None else None  # checked before the probes train
    model = load_model_from_args(args, map_location=args.device)
    results = run_probes(
        model, build_dataset(args.train), build_dataset(args.test), batch_size=args.batch_size,
        match_on=args.match_on, val_fraction=args.val_fraction, seed=args.seed,
        max_epochs=args.max_epochs, patience=args.patience,
    )
    print(results_json(results), file=sys.stdout)
    if out is not None:
        write_results(out, results)
    return 0
