"""A supervised per-pixel classifier, trained with the trainer like any method, for use as
the frozen semantic part of an encoder (``encoder.semantic_model``; see
``slotlab.nn.segmenter``).

It is not object-centric: it has no slots, and it is SUPERVISED on the scenes' class maps.
It is a :class:`~slotlab.methods.base.Method` but not a slot model (nor a mask model): its
output is per-class probabilities, and ``slotlab eval`` refuses it, so its class channels
are never scored as slots.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from slotlab.data.sample import IGNORE_INDEX, Batch
from slotlab.ops.resize import resize_image, resize_mask
from slotlab.methods.base import Method, load_trained
from slotlab.nn.encoders.base import SYMMETRIC_MEAN, SYMMETRIC_STD
from slotlab.nn.segmenter import SegmenterNetwork, SegmenterNetworkConfig



@dataclass
class SegmenterConfig:
    """network: the classifier's shape. image_size: square input size (a multiple of 4);
    images and labels of another size are resized."""

    network: SegmenterNetworkConfig = field(default_factory=SegmenterNetworkConfig)
    image_size: int = 64

    def __post_init__(self) -> None:
        if self.image_size < 4 or self.image_size % 4:
            raise ValueError(f"image_size={self.image_size} must be a positive multiple of 4")


@dataclass
class SegmenterOutput:
    logits: Tensor  # (B, C, S, S) at image_size


def normalise_pixels(images: Tensor) -> Tensor:
    """[0, 1] images -> the network's input, normalised as the patch encoder that hosts it does."""
    mean = images.new_tensor(SYMMETRIC_MEAN).view(1, 3, 1, 1)
    std = images.new_tensor(SYMMETRIC_STD).view(1, 3, 1, 1)
    return (images - mean) / std


class Segmenter(Method):
    method = "segmenter"
    config_class = SegmenterConfig

    def __init__(self, config: SegmenterConfig, architectures: Mapping[str, dict] | None = None):
        super().__init__(config)
        self.network = SegmenterNetwork(config.network)

    def forward(self, batch: Batch | Tensor, num_slots: int | None = None) -> SegmenterOutput:
        if num_slots is not None:
            raise ValueError("the segmenter has one output per class, not slots: num_slots does not apply")
        images = batch.image if isinstance(batch, Batch) else batch
        size = (self.config.image_size, self.config.image_size)
        return SegmenterOutput(self.network(normalise_pixels(resize_image(images, size))))

    def losses(self, outputs: SegmenterOutput, batch: Batch) -> dict[str, Tensor]:
        """Per-pixel cross-entropy on ``batch.semantic_mask``; ignored pixels are left out."""
        labels = batch.semantic_mask.masked_fill(batch.ignore_mask, IGNORE_INDEX)
        labels = resize_mask(labels, tuple(outputs.logits.shape[-2:]))
        num_classes = self.config.network.num_classes
        known = labels != IGNORE_INDEX
        if known.any() and int(labels[known].max()) >= num_classes:
            raise ValueError(
                f"semantic_mask holds class id {int(labels[known].max())} but the segmenter has "
                f"network.num_classes={num_classes}: set it to at least {int(labels[known].max()) + 1}"
            )
        loss = F.cross_entropy(outputs.logits.float(), labels, ignore_index=IGNORE_INDEX)
        return {"loss": loss, "cross_entropy": loss}

    def class_probabilities(self, outputs: SegmenterOutput) -> Tensor:
        """(B, C, S, S) per-pixel class probabilities."""
        return outputs.logits.float().softmax(dim=1)

    def parameter_groups(self) -> dict[str, list[torch.nn.Parameter]]:
        return {"network": list(self.network.parameters())}


#: How to get what ``load_segmenter`` asks for.
TRAIN_HINT = ("train one with 'slotlab train --preset segmenter-scenes-tiny --out runs/segmenter' "
              "(its model is runs/segmenter/model)")


def load_segmenter(directory: str | Path, option: str) -> Segmenter:
    """A trained segmenter checkpoint; errors name ``option`` (the setting that gave the
    directory) and say how to train one."""
    return load_trained(Segmenter, directory, option, TRAIN_HINT)
