"""Named evaluation protocols: how SPOT, GLASS and MSF turned slot masks into their numbers.

The three papers evaluate differently (resolution, crop, whether background is an object,
what an image without foreground scores). A :class:`Protocol` fixes all of it, and every
number slotlab reports carries the protocol's name: ``evaluate_batch`` keys are
``"<protocol>/<metric>"`` and ``evaluate_masks`` returns ``{"protocol": name, ...}``.
See ``docs/metrics.md`` for the sources of each choice.

Contract with the datasets: ``Batch.ignore_mask`` holds the pixels a protocol must not score
as ordinary ground truth (COCO instance overlaps, crowd regions, VOC borders); what happens
to them is the protocol's ``ignored_pixels`` policy. Label value ``IGNORE_INDEX`` in
``instance_mask``/``semantic_mask`` is treated the same way. The predicted masks are
assumed to cover the protocol's crop (the model saw the same centre crop), as in all three
papers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Iterable, Literal, NamedTuple

import torch
from torch import Tensor

from slotlab.data.sample import IGNORE_INDEX, Batch, one_hot_masks
from slotlab.ops.resize import center_crop, resize_mask, resize_masks_soft, shorter_side_size
from slotlab.metrics.aggregators import (
    ImageMeans,
    class_iou_from_confusion,
    mean_class_iou,
    oracle_slot_classes,
    semantic_confusion,
)
from slotlab.metrics.masks import (
    BINDING_KEYS,
    EMPTY_ARI_CHOICES,
    BindingThresholds,
    Contingency,
    EmptyARI,
    binding_counts_from_contingency,
    contingency_from_labels,
    images_per_chunk,
    scores_from_contingency,
    single_threaded,
    slot_assignment,
)

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


class ProtocolMetrics(ImageMeans):
    """Dataset means of a protocol's metrics (sum states: correct across processes).

    ``update(masks, batch)``; ``compute()`` -> {"<protocol>/<metric>": mean over images with
    a defined value, "<protocol>/n_<metric>": images used, "<protocol>/skipped_<metric>":
    NaN images, "<protocol>/images": all images}; slot binding gives the pooled shares of
    all slots plus "<protocol>/n_slots". With ``num_classes`` (the dataset's classes,
    background included) the dataset-level class mIoU "<protocol>/miou_c" of GLASS Tab. 9
    is added (see ``DatasetSemanticIoU``; slots labelled per image by Hungarian matching)
    with "<protocol>/n_miou_c_classes".
    """

    def __init__(self, protocol: Protocol, num_classes: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        if num_classes is not None and num_classes < 1:
            raise ValueError(f"num_classes must be >= 1 (background included) or None, got {num_classes}")
        self.protocol = protocol
        self.num_classes = num_classes
        self.add_state("images", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")
        for name in protocol.image_metrics:
            self.add_score(name)
        if protocol.reports_binding:
            self.add_binding()
        if num_classes is not None:
            confusion = torch.zeros(num_classes + 1, num_classes, dtype=torch.int64)
            self.add_state("semantic_confusion", default=confusion, dist_reduce_fx="sum")

    def update(self, masks: Tensor, batch: Batch) -> None:
        protocol = self.protocol
        instance_table, semantic_table = protocol.contingencies(masks, batch, self.num_classes)
        self.images += len(batch)
        if protocol.image_metrics:
            scores = protocol.scores(instance_table, semantic_table)
            self.add_scores({name: scores[name] for name in protocol.image_metrics})
        if protocol.reports_binding:
            self.add_binding_counts(binding_counts_from_contingency(instance_table, protocol.thresholds))
        if self.num_classes is not None:
            slot_classes = oracle_slot_classes(semantic_table, self.num_classes, protocol.ignore_background)
            confusion = semantic_confusion(
                semantic_table, slot_classes, self.num_classes + 1, self.num_classes, protocol.ignore_background
            )
            self.semantic_confusion += confusion.to(self.device)

    def compute(self) -> dict[str, float]:
        out = {self.protocol.key(k): v for k, v in self.means().items()}
        out[self.protocol.key("images")] = int(self.images)
        if self.num_classes is not None:
            class_iou = class_iou_from_confusion(
                self.semantic_confusion, self.num_classes, self.protocol.ignore_background, match_rows=False
            )
            semantic = mean_class_iou(class_iou)
            out[self.protocol.key("miou_c")] = semantic["miou_c"]
            out[self.protocol.key("n_miou_c_classes")] = semantic["n_classes"]
        return out


#: The named protocols. See docs/metrics.md for the evidence behind each setting.
PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol(
            name="spot",
            summary=(
                "SPOT / DINOSAUR with OCLF metrics: ground truth shorter side 320 (nearest) + centre crop 320, "
                "slot masks bilinear to 320 + argmax, ignore_mask pixels (COCO overlaps, VOC border as in OCLF) "
                "dropped, background not an object, FG-ARI of an image without foreground = 1"
            ),
            metrics=("mbo_i", "mbo_c", "miou_i", "fg_ari"),
            eval_size=320,
            geometry="shorter_side_crop",
            ignore_background=True,
            if_empty="one",
            ignored_pixels="drop",
        ),
        Protocol(
            name="spot-voc",
            summary=(
                "SPOT's code on PASCAL VOC: as 'spot' but ignore_mask pixels (the 255 border) are scored as "
                "background, as gkakogeorgiou/spot datasets.py does"
            ),
            metrics=("mbo_i", "mbo_c", "miou_i", "fg_ari"),
            eval_size=320,
            geometry="shorter_side_crop",
            ignore_background=True,
            if_empty="one",
            ignored_pixels="background",
        ),
        Protocol(
            name="spot-movi",
            summary=(
                "SPOT on MOVi-C/E: as 'spot' but on the frames' full 128x128 grid (SPOT Supp. D; the authors' "
                "--val_mask_size 128): ground truth at 128 (nearest if the frames are larger), slot masks "
                "bilinear to 128 + argmax"
            ),
            metrics=("mbo_i", "mbo_c", "miou_i", "fg_ari"),
            eval_size=128,
            geometry="shorter_side_crop",
            ignore_background=True,
            if_empty="one",
            ignored_pixels="drop",
        ),
        Protocol(
            name="glass",
            summary=(
                "GLASS: ground truth shorter side 256 (nearest) + centre crop 256, slot masks bilinear to 256 + "
                "argmax, OCLF metrics with the background counted as a ground-truth segment, SO/PO/GO"
            ),
            metrics=("miou_i", "mbo_i", "mbo_c", "fg_ari", "slot_binding"),
            eval_size=256,
            geometry="shorter_side_crop",
            ignore_background=False,
            if_empty="one",
            ignored_pixels="drop",
        ),
        Protocol(
            name="glass-authors",
            summary=(
                "GLASS's released evaluation script exactly: geometry of 'glass', no ignore mask (overlapping "
                "instances: the later-drawn one; build COCO with crowd=drop so crowds are background), "
                "FG-ARI on instances, ARI on classes, mIoU/mBO/object recovery/CorLoc with background counted"
            ),
            metrics=("fg_ari", "ari_c", "miou_i", "miou_c_image", "mbo_i", "mbo_c", "object_recovery", "cor_loc"),
            eval_size=256,
            geometry="shorter_side_crop",
            ignore_background=False,
            if_empty="one",
            ignored_pixels="labelled",
        ),
        Protocol(
            name="msf",
            summary=(
                "MSF: centre square crop resized to 256x256 (nearest), COCO panoptic with stuff merged into "
                "background, background counted in mBO/mIoU, ARI on all pixels and FG-ARI; images without "
                "foreground skipped for FG-ARI; ignore_mask pixels (panoptic void) stay in slot areas"
            ),
            metrics=("ari", "fg_ari", "mbo_i", "miou_i"),
            eval_size=256,
            geometry="square_crop_resize",
            ignore_background=False,
            if_empty="nan",
            ignored_pixels="unlabelled",
        ),
        Protocol(
            name="native",
            summary=(
                "slotlab's own: the sample's resolution without crop (built-in scenes), background not an "
                "object, NaN (skipped) where a metric is undefined"
            ),
            metrics=("ari", "fg_ari", "mbo_i", "miou_i", "mbo_c", "slot_binding"),
            ignore_background=True,
            if_empty="nan",
            ignored_pixels="drop",
        ),
    )
}


def get_protocol(name: str) -> Protocol:
    """The named protocol; raises with the valid names otherwise."""
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise ValueError(f"unknown evaluation protocol {name!r}; valid protocols: {', '.join(PROTOCOLS)}") from None


def evaluate_masks(
    mask_batches: Iterable[tuple[Tensor, Batch]], protocol: Protocol | str, num_classes: int | None = None
) -> dict:
    """Evaluate predicted slot masks over a dataset under one protocol.

    mask_batches: (masks (B, K, h, w), Batch) pairs, e.g. from ``slotlab.train.evaluate.predict``.
    num_classes:  the dataset's number of classes (background included); when given, the
                  dataset-level class mIoU "miou_c" (GLASS Tab. 9) is added.

    Returns {"protocol": name, "settings": Protocol.as_dict(), "images": N,
             "metrics": {metric: value}, "counts": {metric: images (slots, classes) used},
             "skipped": {metric: images with an undefined value}}.
    """
    protocol = get_protocol(protocol) if isinstance(protocol, str) else protocol
    image_means = ProtocolMetrics(protocol, num_classes)
    for masks, batch in mask_batches:
        image_means.update(masks, batch)
    values = image_means.compute()

    def value(name: str) -> float:
        return values[protocol.key(name)]

    result = {
        "protocol": protocol.name,
        "settings": protocol.as_dict(),
        "images": value("images"),
        "metrics": {name: value(name) for name in protocol.image_metrics},
        "counts": {name: value(f"n_{name}") for name in protocol.image_metrics},
        "skipped": {name: value(f"skipped_{name}") for name in protocol.image_metrics},
    }
    if protocol.reports_binding:
        result["metrics"].update({k: value(k) for k in BINDING_KEYS})
        result["counts"]["slots"] = value("n_slots")
    if num_classes is not None:
        result["metrics"]["miou_c"] = value("miou_c")
        result["counts"]["miou_c_classes"] = value("n_miou_c_classes")
    return result
