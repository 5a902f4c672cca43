"""Encoder-level measurements: class probe under true masks, left-neighbour copy ratio."""

from __future__ import annotations

import torch
from torch import nn

from slotlab.data.registry import build_dataset
from slotlab.ops.resize import resize_mask
from slotlab.metrics.encoder_features import left_neighbour_copy_ratio, object_class_probe

SCENES = "scenes?split={split}&size={size}&resolution=32"


class MapEncoder(nn.Module):
    """Tokens computed by ``fn`` from images: (B, 3, 32, 32) -> (B, D, 8, 8)."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def grid_size(self) -> tuple[int, int]:
        return 8, 8

    def forward(self, images):
        maps = self.fn(images)
        return maps.flatten(2).transpose(1, 2)


def test_copy_ratio_is_zero_for_constant_rows_and_two_for_independent_tokens():
    data = build_dataset(SCENES.format(split="val", size=64))
    rows = MapEncoder(lambda images: torch.arange(8.0).view(1, 1, 8, 1).expand(len(images), 4, 8, 8))
    noise = MapEncoder(lambda images: torch.randn(len(images), 16, 8, 8))
    assert left_neighbour_copy_ratio(rows, data) == 0.0
    assert abs(left_neighbour_copy_ratio(noise, data) - 2.0) < 0.1


def test_class_probe_reads_the_class_when_the_tokens_carry_it():
    """An encoder that (cheating, for the test) paints each pixel's class scores well; one
    that outputs noise scores near chance."""
    train, test = build_dataset(SCENES.format(split="train", size=500)), build_dataset(SCENES.format(split="val", size=48))
    lookup = {}
    for dataset in (train, test):
        for i in range(len(dataset)):
            sample = dataset[i]
            lookup[sample.image.sum().item()] = sample.semantic_mask

    def class_maps(images):
        masks = torch.stack([lookup[image.sum().item()] for image in images])
        small = resize_mask(masks, (8, 8))
        return nn.functional.one_hot(small, 7).permute(0, 3, 1, 2).float()

    assert object_class_probe(MapEncoder(class_maps), train, test).accuracy > 0.8
    noise = MapEncoder(lambda images: torch.randn(len(images), 8, 8, 8))
    assert object_class_probe(noise, train, test).accuracy < 0.5
    # The same class maps scaled down: the plain probe reads less of them within its epoch
    # limit (which then ends it), the standardised probe reads them exactly as at full scale.
    faint = MapEncoder(lambda images: 1e-2 * class_maps(images))
    full_standardised = object_class_probe(MapEncoder(class_maps), train, test, standardise=True).accuracy
    assert full_standardised > 0.8
    assert abs(object_class_probe(faint, train, test, standardise=True).accuracy - full_standardised) < 0.01
    cut = object_class_probe(faint, train, test, max_epochs=20)
    assert (cut.epochs, cut.stopped_early) == (20, False)
    assert cut.accuracy < full_standardised - 0.2
