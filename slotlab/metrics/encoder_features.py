"""What a frozen encoder's tokens offer slot methods, measured without any slots.

- :func:`object_class_probe` (:func:`class_probe_of_pairs` once the features are pooled): a
  linear probe of each object's class from the encoder's features averaged under the
  object's true mask (the probe of ``slotlab.metrics.probe``, on a perfect slot). The
  encoder never sees a label; the probe does, to score it. It reports
  how many epochs the probe trained, so a reader sees whether its epoch limit cut it short.
- :func:`left_neighbour_copy_ratio`: how much of a token its left neighbour already gives:
  the mean squared error of copying the left neighbour, over the tokens' total variance. An
  autoregressive decoder in raster order reads the previous token, so at a low ratio it can
  reconstruct without the slots (the failure of SPOT on colour features, reference-facts
  "Calibration").
- :func:`linear_cka`: how alike two encoders' features of the same inputs are, up to a
  rotation and scale (whether a retrained network computes the shipped one's function).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from slotlab.data.sample import collate
from slotlab.metrics.probe import evaluate_probe, split_pairs, train_probe
from slotlab.metrics.slot_pairs import SlotPairs, object_targets, reference_features


def token_map(encoder: nn.Module, images: Tensor) -> Tensor:
    """Encoder tokens (B, N, D) of images as a map (B, D, h, w) over its grid."""
    tokens = encoder(images)
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *encoder.grid_size())


@torch.no_grad()
def object_feature_pairs(encoder: nn.Module, dataset: Dataset, batch_size: int = 32) -> SlotPairs:
    """Every ground-truth instance of ``dataset``: the encoder features under its mask (as the
    pair's "slot") and its class id."""
    parts = []
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate):
        targets = object_targets(batch)
        everything = [(torch.arange(len(c)), torch.arange(len(c))) for c in targets.class_ids]
        features, images = reference_features(token_map(encoder, batch.image), targets.label_map, everything,
                                              batch.ignore_mask)
        parts.append(SlotPairs(features, torch.cat(targets.class_ids), torch.cat(targets.centres).float(),
                               torch.zeros(len(features)), features, images))
    return SlotPairs.concatenate(parts)


@dataclass(frozen=True)
class ClassProbeReading:
    """Test accuracy of a class probe and how its training ended."""

    accuracy: float
    epochs: int  # epochs trained
    stopped_early: bool  # False: the epoch limit ended it, possibly before it converged


def object_class_probe(encoder: nn.Module, train: Dataset, test: Dataset, seed: int = 0,
                       standardise: bool = False, max_epochs: int = 100) -> ClassProbeReading:
    """Top-1 accuracy on ``test`` of a linear class probe trained on ``train``'s objects
    (:func:`class_probe_of_pairs` on their :func:`object_feature_pairs`)."""
    return class_probe_of_pairs(object_feature_pairs(encoder, train), object_feature_pairs(encoder, test),
                                seed, standardise, max_epochs)


def class_probe_of_pairs(train_pairs: SlotPairs, test_pairs: SlotPairs, seed: int = 0,
                         standardise: bool = False, max_epochs: int = 100) -> ClassProbeReading:
    """A linear class probe trained on ``train_pairs`` and scored on ``test_pairs``.

    The probe is the slot probe's protocol (AdamW at a constant lr, early stopping on a
    held-out part of ``train_pairs``) for at most ``max_epochs``. Small-scale dims need many
    epochs to be read at that lr: ``standardise`` z-scores each feature dim with the fitting
    split's mean and std first (as a linear probe behind a non-affine BatchNorm), so the
    reading no longer depends on how the encoder scales its dims; a larger ``max_epochs``
    lets early stopping end the plain probe instead of the limit."""
    fit, held_out = split_pairs(train_pairs, seed=seed)
    if standardise:
        mean, std = fit.slots.mean(0), fit.slots.std(0).clamp_min(1e-6)
        fit, held_out, test_pairs = (replace(pairs, slots=(pairs.slots - mean) / std)
                                     for pairs in (fit, held_out, test_pairs))
    num_classes = int(max(train_pairs.class_ids.max(), test_pairs.class_ids.max())) + 1
    trained = train_probe(fit, held_out, "class", seed, max_epochs=max_epochs, num_classes=num_classes)
    return ClassProbeReading(evaluate_probe(trained, test_pairs), trained.epochs_run, trained.stopped_early)


@torch.no_grad()
def left_neighbour_copy_ratio(encoder: nn.Module, dataset: Dataset, batch_size: int = 32) -> float:
    """MSE of predicting each token by its left neighbour (tokens with one), over the total
    variance of the tokens (mean squared distance to their mean): 0 = fully predictable."""
    maps = torch.cat([token_map(encoder, batch.image).float()
                      for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)])
    copy_error = (maps[..., 1:] - maps[..., :-1]).pow(2).sum(1).mean()
    variance = (maps - maps.mean((0, 2, 3), keepdim=True)).pow(2).sum(1).mean()
    return float(copy_error / variance)


def linear_cka(first: Tensor, second: Tensor) -> float:
    """Linear centred kernel alignment (Kornblith et al. 2019, CKA with linear kernels) of
    two sets of features of the same n inputs, (n, d1) and (n, d2): 1 when one is a rotation
    and scale of the other, near 0 when they are unrelated."""
    if len(first) != len(second):
        raise ValueError(f"linear_cka compares features of the same inputs: got {len(first)} and {len(second)} rows")
    x = (first - first.mean(0)).double()
    y = (second - second.mean(0)).double()
    cross = (y.T @ x).pow(2).sum()
    return float(cross / ((x.T @ x).pow(2).sum().sqrt() * (y.T @ y).pow(2).sum().sqrt()))
