"""An evaluation protocol: how one paper turns slot masks into its numbers.

The papers evaluate differently (resolution, crop, whether background is an object, what an
image without foreground scores). A :class:`Protocol` fixes all of it and scores one batch;
every number it gives carries the protocol's name: ``evaluate_batch`` keys are
``"<protocol>/<metric>"``. The named protocols of SPOT, GLASS and MSF are in
``slotlab.metrics.protocols``, dataset means in ``slotlab.metrics.evaluation``. See
``docs/metrics.md`` for the sources of each choice.

Contract with the datasets: ``Batch.ignore_mask`` holds the pixels a protocol must not score
as ordinary ground truth (COCO instance overlaps, crowd regions, VOC borders); what happens
to them is the protocol's ``ignored_pixels`` policy. Label value ``IGNORE_INDEX`` in
``instance_mask``/``semantic_mask`` is treated the same way. The predicted masks are
assumed to cover the protocol's crop (the model saw the same centre crop), as in all three
papers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from slotlab.data.sample import IGNORE_INDEX, Batch, one_hot_masks
from slotlab.ops.resize import center_crop, resize_mask, resize_masks_soft, shorter_side_size
from slotlab.metrics.contingency import (
    Contingency,
    contingency_from_labels,
    images_per_chunk,
    single_threaded,
    slot_assignment,
)
from slotlab.metrics.masks import EMPTY_ARI_CHOICES, BindingThresholds, EmptyARI, scores_from_contingency

#: Geometry of the evaluation grid:
#: "shorter_side_crop"  resize (nearest) so the shorter side is ``eval_size``, then centre crop;
#: "square_crop_resize" centre crop the largest square, then resize (nearest) to ``eval_size``;
#: "native"             the batch's own resolution, no crop.
Geometry = Literal["shorter_side_crop", "square_crop_resize", "native"]
GEOMETRIES = ("shorter_side_crop", "square_crop_resize", "native")

#: What happens to ``ignore_mask`` pixels (and IGNORE_INDEX labels):
#: "drop"       removed from every metric, prediction included (OCLF's ignore mask);
#: "background" scored as background (SPOT's code for the VOC border);
#: "unlabelled" in no ground-truth segment but still inside the predicted slot areas
#:              (MSF's code for panoptic void);
#: "labelled"   ``ignore_mask`` is not used: the pixels are scored with the labels the dataset
#:              painted there (GLASS's evaluation code passes no ignore mask, so where COCO
#:              instances overlap the later-drawn one wins).
IgnoredPixels = Literal["drop", "background", "unlabelled", "labelled"]
IGNORED_PIXELS = ("drop", "background", "unlabelled", "labelled")

TargetKind = Literal["instance", "semantic"]


@dataclass(frozen=True)
class MetricSpec:
    """A reported metric: which mask score (slotlab.metrics.masks.MASK_METRICS) on which target."""

    score: str
    target: TargetKind


#: Every metric name a protocol may report. "slot_binding" yields the keys so/po/go/bg.
PROTOCOL_METRICS: dict[str, MetricSpec] = {
    "ari": MetricSpec("ari", "instance"),
    "fg_ari": MetricSpec("fg_ari", "instance"),
    "mbo_i": MetricSpec("mbo", "instance"),
    "miou_i": MetricSpec("miou", "instance"),
    "mbo_c": MetricSpec("mbo", "semantic"),
    "miou_c_image": MetricSpec("miou", "semantic"),
    "ari_c": MetricSpec("ari", "semantic"),
    "object_recovery": MetricSpec("object_recovery", "instance"),
    "cor_loc": MetricSpec("cor_loc", "instance"),
    "slot_binding": MetricSpec("slot_binding", "instance"),
}


class EvalLabels(NamedTuple):
    """Ground truth on the evaluation grid: label maps (B, S, S) int64 (IGNORE_INDEX =
    unlabelled) and the dropped pixels (B, S, S) bool."""

    instance: Tensor
    semantic: Tensor
    ignore: Tensor


class EvalTargets(NamedTuple):
    """Ground truth on the evaluation grid in the one-hot convention of slotlab.metrics.masks."""

    instance: Tensor  # (B, M_i, S, S) float one-hot, channel 0 background
    semantic: Tensor  # (B, M_c, S, S) float one-hot, channel c = class c
    ignore: Tensor  # (B, S, S) bool


@dataclass(frozen=True)
class Protocol:
    """One evaluation recipe. Build your own or take a named one from :data:`PROTOCOLS`.

    name:              reported with every number.
    summary:           where the recipe comes from (one line).
    metrics:           names from :data:`PROTOCOL_METRICS`.
    eval_size:         side of the square evaluation grid (None for "native").
    geometry:          see :data:`Geometry`.
    ignore_background: background (channel 0) is not a ground-truth object for mBO/mIoU.
    if_empty:          ARI of an image without scored ground truth: "one" (OCLF) or "nan".
    ignored_pixels:    see :data:`IgnoredPixels`.
    thresholds:        slot-binding thresholds (SO/PO/GO/BG).
    """

    name: str
    summary: str
    metrics: tuple[str, ...]
    eval_size: int | None = None
    geometry: Geometry = "native"
    ignore_background: bool = True
    if_empty: EmptyARI = "nan"
    ignored_pixels: IgnoredPixels = "drop"
    thresholds: BindingThresholds = field(default_factory=BindingThresholds)

    def __post_init__(self) -> None:
        unknown = [m for m in self.metrics if m not in PROTOCOL_METRICS]
        if unknown or not self.metrics:
            raise ValueError(f"Protocol {self.name!r}: unknown metrics {unknown}; valid: {tuple(PROTOCOL_METRICS)}")
        if self.geometry not in GEOMETRIES:
            raise ValueError(f"Protocol {self.name!r}: geometry must be one of {GEOMETRIES}, got {self.geometry!r}")
        if (self.geometry == "native") != (self.eval_size is None):
            raise ValueError(f"Protocol {self.name!r}: eval_size must be None exactly when geometry is 'native'")
        if self.eval_size is not None and self.eval_size < 1:
            raise ValueError(f"Protocol {self.name!r}: eval_size must be positive, got {self.eval_size}")
        if self.if_empty not in EMPTY_ARI_CHOICES:
            raise ValueError(f"Protocol {self.name!r}: if_empty must be one of {EMPTY_ARI_CHOICES}")
        if self.ignored_pixels not in IGNORED_PIXELS:
            raise ValueError(f"Protocol {self.name!r}: ignored_pixels must be one of {IGNORED_PIXELS}")

    # -- what it reports -------------------------------------------------------------
    @property
    def image_metrics(self) -> tuple[str, ...]:
        """Metrics with one value per image (all but slot_binding)."""
        return tuple(m for m in self.metrics if m != "slot_binding")

    @property
    def reports_binding(self) -> bool:
        return "slot_binding" in self.metrics

    def key(self, metric: str) -> str:
        """The reported name of ``metric``: "<protocol>/<metric>"."""
        return f"{self.name}/{metric}"

    def as_dict(self) -> dict:
        """All settings, for reports and JSON files."""
        return asdict(self)

    # -- ground truth ------------------------------------------------------------------
    def eval_grid(self, height: int, width: int) -> tuple[int, int]:
        """(H, W) of the evaluation grid for a batch of (height, width)."""
        return (height, width) if self.eval_size is None else (self.eval_size, self.eval_size)

    def to_eval_grid(self, label_map: Tensor) -> Tensor:
        """Bring a label map or bool mask (B, H, W) to the evaluation grid (nearest)."""
        if self.geometry == "native":
            return label_map
        size = self.eval_size
        height, width = label_map.shape[-2:]
        if self.geometry == "shorter_side_crop":
            return center_crop(resize_mask(label_map, shorter_side_size(height, width, size)), (size, size))
        side = min(height, width)
        return resize_mask(center_crop(label_map, (side, side)), (size, size))

    def prepare_labels(self, batch: Batch) -> EvalLabels:
        """Instance and semantic label maps and the dropped pixels on the evaluation grid."""
        ignored = batch.ignore_mask.bool() | (batch.instance_mask == IGNORE_INDEX) | (batch.semantic_mask == IGNORE_INDEX)
        if self.ignored_pixels == "labelled":  # IGNORE_INDEX labels stay in no segment (unlabelled)
            ignored = torch.zeros_like(ignored)
        instance, semantic, ignored = (self.to_eval_grid(x) for x in (batch.instance_mask, batch.semantic_mask, ignored))
        if self.ignored_pixels in ("drop", "labelled"):
            return EvalLabels(instance, semantic, ignored)
        fill = 0 if self.ignored_pixels == "background" else IGNORE_INDEX
        keep = torch.zeros_like(ignored)
        return EvalLabels(instance.masked_fill(ignored, fill), semantic.masked_fill(ignored, fill), keep)

    def prepare_targets(self, batch: Batch) -> EvalTargets:
        """The ground truth of ``batch`` as one-hot targets (B, M, S, S) plus the ignore mask."""
        labels = self.prepare_labels(batch)
        return EvalTargets(
            one_hot_masks(labels.instance, num_labels(labels.instance)),
            one_hot_masks(labels.semantic, num_labels(labels.semantic)),
            labels.ignore,
        )

    # -- predictions ---------------------------------------------------------------------
    def prepare_pred(self, masks: Tensor, image_size: tuple[int, int]) -> Tensor:
        """Predicted slot masks (B, K, h, w) -> (B, K, S, S) on the evaluation grid (bilinear).

        ``image_size`` is the (H, W) of the batch images (the grid of "native")."""
        if masks.ndim != 4:
            raise ValueError(f"predicted masks must be (B, K, h, w), got {tuple(masks.shape)}")
        return resize_masks_soft(masks, self.eval_grid(*image_size))

    # -- scoring -------------------------------------------------------------------------
    def contingencies(
        self, masks: Tensor, batch: Batch, num_classes: int | None = None
    ) -> tuple[Contingency, Contingency]:
        """(instance, semantic) contingency tables of one batch on the evaluation grid.

        ``num_classes`` fixes the semantic channels to the dataset's classes (needed by the
        dataset-level mIoU_c); by default they span the classes present in the batch.
        """
        if masks.shape[0] != len(batch):
            raise ValueError(f"{masks.shape[0]} predicted mask sets for a batch of {len(batch)} images")
        labels = self.prepare_labels(batch)
        semantic_channels = num_labels(labels.semantic)
        if num_classes is not None:
            if semantic_channels > num_classes:
                raise ValueError(
                    f"semantic_mask holds class id {semantic_channels - 1} but num_classes={num_classes}; "
                    "pass the dataset's number of classes, background included"
                )
            semantic_channels = num_classes
        image_size = tuple(batch.instance_mask.shape[-2:])
        num_slots = masks.shape[1]
        # Upsample and assign a few images at a time: the full-resolution soft masks of a
        # whole batch (B x K x S x S floats) are never held in memory at once.
        step = images_per_chunk(labels.instance.shape[-2] * labels.instance.shape[-1])
        with single_threaded():
            chunks = (self.prepare_pred(masks[i : i + step], image_size) for i in range(0, len(batch), step))
            slots = torch.cat([slot_assignment(chunk, torch.int32) for chunk in chunks])
            instance_channels = num_labels(labels.instance)
            instance_table = contingency_from_labels(slots, labels.instance, num_slots, instance_channels, labels.ignore)
            semantic_table = contingency_from_labels(slots, labels.semantic, num_slots, semantic_channels, labels.ignore)
        return instance_table, semantic_table

    def scores(self, instance_table: Contingency, semantic_table: Contingency) -> dict[str, Tensor]:
        """Per-image (B,) values of every reported metric, keyed by plain metric name."""
        tables = {"instance": instance_table, "semantic": semantic_table}
        out: dict[str, Tensor] = {}
        for name in self.metrics:
            spec = PROTOCOL_METRICS[name]
            values = scores_from_contingency(
                tables[spec.target], (spec.score,), self.ignore_background, self.if_empty, self.thresholds
            )
            out.update(values if spec.score == "slot_binding" else {name: values[spec.score]})
        return out

    def evaluate_batch(self, masks: Tensor, batch: Batch) -> dict[str, Tensor]:
        """Per-image scores of one batch: {"<protocol>/<metric>": (B,) float64}, NaN where
        undefined; "slot_binding" gives the per-image shares so/po/go/bg."""
        scores = self.scores(*self.contingencies(masks, batch))
        return {self.key(name): value for name, value in scores.items()}


def num_labels(label_map: Tensor) -> int:
    """Number of channels a label map needs: largest label other than IGNORE_INDEX, plus 1."""
    low, high = torch.aminmax(label_map.masked_fill(label_map == IGNORE_INDEX, 0))
    if int(low) < 0:
        raise ValueError("label maps must not hold negative labels")
    if int(high) >= IGNORE_INDEX:
        raise ValueError(f"label {int(high)} collides with IGNORE_INDEX={IGNORE_INDEX}; relabel to fewer ids")
    return int(high) + 1
