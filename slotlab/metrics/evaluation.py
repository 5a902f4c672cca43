"""Evaluation of a dataset under one protocol: the means of its per-image scores."""

from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor

from slotlab.data.sample import Batch
from slotlab.metrics.aggregators import (
    ImageMeans,
    class_iou_from_confusion,
    mean_class_iou,
    oracle_slot_classes,
    semantic_confusion,
)
from slotlab.metrics.masks import BINDING_KEYS, binding_counts_from_contingency
from slotlab.metrics.protocol import Protocol
from slotlab.metrics.protocols import get_protocol


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
