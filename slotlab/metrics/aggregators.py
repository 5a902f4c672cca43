"""Dataset-level aggregation of the mask metrics as ``torchmetrics.Metric`` subclasses.

Every state is a sum (``dist_reduce_fx="sum"``): per-image scores are added with their image
count, slot-binding categories with their slot count, the semantic confusion matrix with
its pixel counts. Summing these across processes gives exactly the single-process result,
so evaluation can be split over any number of processes (or merged with ``merge_state``).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

from slotlab.ops.matching import hungarian_match
from slotlab.metrics.contingency import Contingency, contingency
from slotlab.metrics.masks import (
    BINDING_KEYS,
    BindingThresholds,
    EmptyARI,
    binding_counts_from_contingency,
    binding_shares,
    check_empty_ari,
    check_metric_names,
    iou_from_contingency,
    scores_from_contingency,
)


class ImageMeans(Metric):
    """Means over images of named per-image scores; NaN images are skipped and counted apart.

    Subclasses declare their score names with :meth:`add_score` and feed (B,) tensors to
    :meth:`add_scores`; slot-binding counts are pooled over all slots with :meth:`add_binding`.
    """

    is_differentiable = False
    higher_is_better = None  # mixed: e.g. SO is better high, PO and GO low
    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._score_names: list[str] = []
        self._has_binding = False

    def add_score(self, name: str) -> None:
        self.add_state(f"{name}_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state(f"{name}_count", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state(f"{name}_skipped", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")
        self._score_names.append(name)

    def add_binding(self) -> None:
        self.add_state("binding_counts", default=torch.zeros(len(BINDING_KEYS), dtype=torch.float64), dist_reduce_fx="sum")
        self._has_binding = True

    def add_scores(self, scores: dict[str, Tensor]) -> None:
        for name in self._score_names:
            values = scores[name].detach().double()
            defined = ~torch.isnan(values)
            setattr(self, f"{name}_sum", getattr(self, f"{name}_sum") + values[defined].sum().to(self.device))
            setattr(self, f"{name}_count", getattr(self, f"{name}_count") + int(defined.sum()))
            setattr(self, f"{name}_skipped", getattr(self, f"{name}_skipped") + int((~defined).sum()))

    def add_binding_counts(self, counts: Tensor) -> None:
        self.binding_counts = self.binding_counts + counts.detach().double().sum(0).to(self.device)

    def means(self) -> dict[str, float]:
        """name -> mean over defined images; ``n_<name>`` images used, ``skipped_<name>`` NaN
        images; for slot binding the pooled shares so/po/go/bg and ``n_slots``."""
        out: dict[str, float] = {}
        for name in self._score_names:
            count = int(getattr(self, f"{name}_count"))
            out[name] = float(getattr(self, f"{name}_sum")) / count if count else float("nan")
            out[f"n_{name}"] = count
            out[f"skipped_{name}"] = int(getattr(self, f"{name}_skipped"))
        if self._has_binding:
            out.update({k: float(v) for k, v in binding_shares(self.binding_counts).items()})
            out["n_slots"] = int(self.binding_counts.sum())
        return out


class MaskMetrics(ImageMeans):
    """Dataset means of mask metrics, e.g. ``MaskMetrics(metrics=("mbo", "miou", "fg_ari"))``.

    ``update(pred, target, ignore=None)`` takes the conventions of :mod:`slotlab.metrics.masks`;
    ``compute()`` returns {name: mean over images with a defined score, "n_<name>": images
    used, "skipped_<name>": NaN images}; "slot_binding" yields the shares of all slots of
    the dataset in so/po/go/bg plus "n_slots".
    """

    def __init__(
        self,
        metrics: tuple[str, ...] = ("mbo", "miou", "fg_ari"),
        ignore_background: bool = True,
        if_empty: EmptyARI = "nan",
        thresholds: BindingThresholds = BindingThresholds(),
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        check_empty_ari(if_empty)
        self.metrics = check_metric_names(metrics)
        self.ignore_background = ignore_background
        self.if_empty = if_empty
        self.thresholds = thresholds
        self._image_metrics = tuple(m for m in self.metrics if m != "slot_binding")
        for name in self._image_metrics:
            self.add_score(name)
        if "slot_binding" in self.metrics:
            self.add_binding()

    def update(self, pred: Tensor, target: Tensor, ignore: Tensor | None = None) -> None:
        table = contingency(pred, target, ignore)
        if self._image_metrics:
            self.add_scores(
                scores_from_contingency(table, self._image_metrics, self.ignore_background, self.if_empty, self.thresholds)
            )
        if self._has_binding:
            self.add_binding_counts(binding_counts_from_contingency(table, self.thresholds))

    def compute(self) -> dict[str, float]:
        return self.means()


def class_overlap(table: Contingency, num_classes: int, ignore_background: bool) -> Tensor:
    """(B, K, num_classes) pixels of each slot in each class (channel c = class c); class-0
    pixels zeroed with ``ignore_background``."""
    overlap = table.overlap
    if overlap.shape[-1] > num_classes:
        raise ValueError(
            f"target has {overlap.shape[-1]} class channels but num_classes={num_classes}; "
            "pass the dataset's number of classes (background included)"
        )
    overlap = torch.nn.functional.pad(overlap, (0, num_classes - overlap.shape[-1]))
    if ignore_background:
        overlap = overlap.clone()
        overlap[..., 0] = 0
    return overlap


def oracle_slot_classes(table: Contingency, num_classes: int, ignore_background: bool) -> Tensor:
    """(B, K) class of each slot: Hungarian matching (max total IoU) of the slots to the
    classes present in the image; unmatched slots get class 0, or ``num_classes`` (no
    class) with ``ignore_background``."""
    overlap = class_overlap(table, num_classes, ignore_background)
    iou = iou_from_contingency(Contingency(overlap, table.slot_area))
    eligible = overlap.sum(1) > 0
    # Absent classes score -1: a slot only takes one when no present class is left, and
    # such matches are discarded.
    score = torch.where(eligible.unsqueeze(1), iou, torch.full_like(iou, -1.0))
    unmatched = num_classes if ignore_background else 0
    classes = torch.full(score.shape[:2], unmatched, dtype=torch.long, device=score.device)
    for b, (rows, cols) in enumerate(hungarian_match(score)):
        rows, cols = rows.to(score.device), cols.to(score.device)
        keep = eligible[b, cols]
        classes[b, rows[keep]] = cols[keep]
    return classes


def semantic_confusion(
    table: Contingency, slot_classes: Tensor, num_rows: int, num_classes: int, ignore_background: bool
) -> Tensor:
    """(num_rows, num_classes) int64 pixel counts: predicted class (or cluster) of each
    pixel's slot x its true class, for one batch."""
    overlap = class_overlap(table, num_classes, ignore_background)
    rows = torch.nn.functional.one_hot(slot_classes.long(), num_rows).to(overlap)
    return torch.einsum("bkc,bkr->rc", overlap, rows).round().long()


def class_iou_from_confusion(confusion: Tensor, num_classes: int, ignore_background: bool, match_rows: bool) -> Tensor:
    """(num_classes,) float64 IoU per class from a dataset confusion matrix; NaN for classes
    absent from the ground truth (and class 0 with ``ignore_background``).

    With ``match_rows`` the rows (clusters) are first matched one-to-one to classes by
    Hungarian matching on their dataset IoU; unmatched classes score 0. Otherwise row c
    predicts class c.
    """
    confusion = confusion.double()
    gt_area = confusion.sum(0)
    pred_area = confusion.sum(1)
    pairwise = confusion / (pred_area.unsqueeze(1) + gt_area.unsqueeze(0) - confusion).clamp_min(1)
    if match_rows:
        first = 1 if ignore_background else 0
        ((rows, cols),) = hungarian_match(pairwise[:, first:].unsqueeze(0))
        rows, cols = rows.to(pairwise.device), cols.to(pairwise.device) + first
        iou = torch.zeros(num_classes, dtype=torch.float64, device=pairwise.device)
        iou[cols] = pairwise[rows, cols]
    else:
        classes = torch.arange(num_classes, device=pairwise.device)
        iou = pairwise[classes, classes]
    absent = gt_area == 0
    if ignore_background:
        absent[0] = True
    return iou.masked_fill(absent, float("nan"))


def mean_class_iou(class_iou: Tensor) -> dict[str, float]:
    """{"miou_c": mean over classes with a defined IoU, "n_classes": their number}."""
    present = ~torch.isnan(class_iou)
    count = int(present.sum())
    return {"miou_c": float(class_iou[present].mean()) if count else float("nan"), "n_classes": count}


class DatasetSemanticIoU(Metric):
    """Dataset-level class mIoU of slot masks (mIoU_c, GLASS Tab. 9).

    A confusion matrix (predicted class x true class, pixel counts) is summed over the
    dataset and IoU_c = TP / (TP + FP + FN) is averaged over the classes that occur in the
    ground truth. How slots get a class:

    - ``num_clusters=None`` (default): per image, slots are Hungarian-matched (max total IoU)
      to the classes present in that image; a matched slot predicts its class, an unmatched
      slot predicts background (class 0), or nothing with ``ignore_background``.
    - ``num_clusters=N``: ``update`` receives ``slot_clusters`` (B, K) ids in [0, N) (e.g. from
      k-means of slot vectors over the dataset); clusters are matched one-to-one to classes
      over the whole dataset by Hungarian matching on their dataset IoU (as OCLF's
      ``DatasetSemanticMaskIoUMetric``); unmatched classes score 0.

    ``target`` channels are class ids (channel c = class c, 0 = background), at most
    ``num_classes`` of them. With ``ignore_background`` pixels of class 0 are dropped and
    class 0 is not averaged.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, num_classes: int, num_clusters: int | None = None, ignore_background: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1 (background included), got {num_classes}")
        if num_clusters is not None and num_clusters < 1:
            raise ValueError(f"num_clusters must be >= 1 or None, got {num_clusters}")
        self.num_classes = num_classes
        self.num_clusters = num_clusters
        self.ignore_background = ignore_background
        # Oracle labelling keeps one extra row for slots that predict no class.
        self.num_rows = num_clusters if num_clusters is not None else num_classes + 1
        self.add_state(
            "confusion", default=torch.zeros(self.num_rows, num_classes, dtype=torch.int64), dist_reduce_fx="sum"
        )

    def update(
        self, pred: Tensor, target: Tensor, ignore: Tensor | None = None, slot_clusters: Tensor | None = None
    ) -> None:
        table = contingency(pred, target, ignore)
        if self.num_clusters is None:
            if slot_clusters is not None:
                raise ValueError("slot_clusters given but DatasetSemanticIoU was built with num_clusters=None")
            slot_classes = oracle_slot_classes(table, self.num_classes, self.ignore_background)
        else:
            slot_classes = self._check_clusters(slot_clusters, table.slot_area.shape)
        batch_confusion = semantic_confusion(table, slot_classes, self.num_rows, self.num_classes, self.ignore_background)
        self.confusion += batch_confusion.to(self.device)

    def _check_clusters(self, slot_clusters: Tensor | None, shape: torch.Size) -> Tensor:
        if slot_clusters is None:
            raise ValueError(f"DatasetSemanticIoU(num_clusters={self.num_clusters}) needs slot_clusters (B, K) in update()")
        if tuple(slot_clusters.shape) != tuple(shape):
            raise ValueError(f"slot_clusters must be (B, K) = {tuple(shape)}, got {tuple(slot_clusters.shape)}")
        clusters = slot_clusters.long()
        if bool(((clusters < 0) | (clusters >= self.num_clusters)).any()):
            raise ValueError(f"slot_clusters must lie in [0, {self.num_clusters})")
        return clusters

    def class_iou(self) -> Tensor:
        """(num_classes,) float64 IoU per class (NaN: absent from the ground truth, or class 0
        with ``ignore_background``)."""
        return class_iou_from_confusion(
            self.confusion, self.num_classes, self.ignore_background, match_rows=self.num_clusters is not None
        )

    def compute(self) -> dict[str, float]:
        """{"miou_c": mean IoU over the classes present in the ground truth, "n_classes": their number}."""
        return mean_class_iou(self.class_iou())
