"""Pseudo-mask steps (GLASS Sec. 4, supplement Sec. 2) on hand-made inputs."""

from __future__ import annotations

import pytest
import torch

from slotlab.data.sample import IGNORE_INDEX
from slotlab.datagen.pseudo_masks import (
    THRESHOLD_PRESETS,
    PseudoMaskConfig,
    combine_resolutions,
    minmax_normalise,
    pseudo_semantic_mask,
    refine_with_self_attention,
    threshold_pseudo_mask,
    upsample_to_image,
)


def _row_stochastic(b: int, n: int, generator: torch.Generator) -> torch.Tensor:
    return torch.softmax(torch.randn(b, n, n, generator=generator, dtype=torch.float64) * 3, dim=-1)


@pytest.mark.parametrize("power", [0, 1, 2, 3, 4, 7])
@pytest.mark.parametrize("side,k", [(4, 1), (5, 3), (8, 6)])
def test_refinement_equals_matrix_power(power, side, k):
    g = torch.Generator().manual_seed(power * 100 + side * 10 + k)
    a = _row_stochastic(2, side * side, g)
    cross = torch.rand(2, k, side, side, generator=g, dtype=torch.float64)
    ours = refine_with_self_attention(cross, a, power)
    explicit = torch.linalg.matrix_power(a, power) @ cross.reshape(2, k, -1).transpose(1, 2)
    assert torch.allclose(ours, explicit.transpose(1, 2).reshape(2, k, side, side), atol=1e-12)


def test_refinement_rejects_mismatched_sizes():
    with pytest.raises(ValueError, match="self-attention must be"):
        refine_with_self_attention(torch.rand(1, 2, 4, 4), torch.rand(1, 15, 15))


def test_minmax_normalise():
    maps = torch.tensor([[[[2.0, 4.0], [3.0, 6.0]], [[1.0, 1.0], [1.0, 1.0]]]])
    out = minmax_normalise(maps)
    assert torch.allclose(out[0, 0], torch.tensor([[0.0, 0.5], [0.25, 1.0]]))
    assert torch.equal(out[0, 1], torch.zeros(2, 2))  # a constant map carries no evidence


def _maps(*values_per_class):
    """(1, K, 1, P) maps from per-class lists of pixel scores."""
    return torch.tensor([list(v) for v in values_per_class], dtype=torch.float32)[None, :, None, :]


def test_thresholds_paper_values():
    low, high = THRESHOLD_PRESETS["paper"]
    maps = _maps([0.1, 0.39, 0.4, 0.5, 0.59, 0.6, 0.9, 0.2], [0.2, 0.0, 0.0, 0.0, 0.0, 0.0, 0.95, 0.7])
    mask = threshold_pseudo_mask(maps, torch.tensor([[3, 7]]), low, high)
    assert mask.flatten().tolist() == [0, 0, 255, 255, 255, 3, 7, 7]


def test_thresholds_reference_code_values():
    low, high = THRESHOLD_PRESETS["reference-code"]
    maps = _maps([0.1, 0.45, 0.5, 0.55, 0.6])
    mask = threshold_pseudo_mask(maps, torch.tensor([[2]]), low, high)
    assert mask.flatten().tolist() == [0, 0, 255, 255, 2]


def test_threshold_ignores_padding_and_empty_images():
    maps = torch.zeros(2, 2, 1, 3)
    maps[0, 0] = torch.tensor([0.9, 0.1, 0.5])
    maps[0, 1] = 1.0  # padding map: would win every pixel if it were counted
    maps[1] = 1.0
    class_ids = torch.tensor([[4, 0], [0, 0]])
    mask = threshold_pseudo_mask(maps, class_ids, 0.4, 0.6)
    assert mask[0].flatten().tolist() == [4, 0, IGNORE_INDEX]
    assert (mask[1] == IGNORE_INDEX).all()


def test_combine_resolutions_resizes_and_averages():
    fine = torch.rand(1, 2, 8, 8)
    coarse = torch.full((1, 2, 4, 4), 0.5)
    out = combine_resolutions({8: fine, 4: coarse}, 8)
    assert out.shape == (1, 2, 8, 8)
    assert torch.allclose(out, (fine + 0.5) / 2, atol=1e-6)  # bicubic keeps a constant map constant
    with pytest.raises(ValueError, match="no cross-attention"):
        combine_resolutions({}, 8)


def test_upsample_to_image_size():
    assert upsample_to_image(torch.rand(2, 3, 4, 4), (10, 12)).shape == (2, 3, 10, 12)


def test_pseudo_mask_recovers_regions_of_block_self_attention():
    """Self-attention that mixes pixels within two regions spreads a weak, noisy class
    cue over its whole region: the pseudo mask recovers both regions."""
    side = 8
    region = torch.zeros(side, side, dtype=torch.long)
    region[:, :3] = 1  # class 5 on the left
    region[5:, 5:] = 2  # class 9 in the bottom right; the rest is background
    flat = region.flatten()
    same = (flat[:, None] == flat[None, :]).double()
    a = (same / same.sum(-1, keepdim=True))[None]
    cross = torch.zeros(1, 2, side, side, dtype=torch.float64)
    cross[0, 0, 2, 1] = 1.0  # one pixel of each object lights up
    cross[0, 1, 6, 6] = 1.0
    cross += 0.01 * torch.rand(1, 2, side, side, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mask = pseudo_semantic_mask({side: cross}, a, torch.tensor([[5, 9]]), (side, side))
    expected = torch.tensor([0, 5, 9])[region]
    assert torch.equal(mask[0], expected)


def test_config_validation():
    with pytest.raises(ValueError, match="threshold_low <= threshold_high"):
        PseudoMaskConfig(threshold_low=0.7, threshold_high=0.6)
