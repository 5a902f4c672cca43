"""Vector quantisation and MSF's ``paper`` variant: properties that must hold for any weights."""

from __future__ import annotations

import itertools

import pytest
import torch

from slotlab.nn.quantize.msf import MSFConfig, MultiScaleQuantizer, fuse_over_scales
from slotlab.nn.quantize.projection import PinvProjection
from slotlab.nn.quantize.vq import VectorQuantizer, straight_through


def test_pinv_round_trip():
    torch.manual_seed(0)
    projection = PinvProjection(16, 8)
    torch.nn.init.normal_(projection.bias)
    y = torch.randn(2, 3, 4, 8)
    torch.testing.assert_close(projection(projection.inverse(y)), y, atol=1e-5, rtol=1e-5)


def test_eq4_equals_brute_force_argmax():
    torch.manual_seed(1)
    probs = torch.rand(3, 2, 4, 4, 10).softmax(-1)  # (scales, B, h, w, codes)
    scale, index = fuse_over_scales(probs)
    for b, i, j in itertools.product(range(2), range(4), range(4)):
        flat = probs[:, b, i, j].flatten()
        best = int(flat.argmax())
        assert (int(scale[b, i, j]), int(index[b, i, j])) == divmod(best, 10)


def test_vq_picks_nearest_code_and_passes_gradient_straight_through():
    torch.manual_seed(2)
    quantizer = VectorQuantizer(32, 4).eval()
    z = torch.randn(5, 4, requires_grad=True)
    match, codes = quantizer(z)
    nearest = torch.cdist(z, quantizer.codes()).argmin(-1)
    assert torch.equal(match.indices, nearest)
    out = straight_through(z, codes)
    torch.testing.assert_close(out, codes)
    out.sum().backward()
    torch.testing.assert_close(z.grad, torch.ones_like(z))


def test_dead_codes_move_onto_encodings():
    torch.manual_seed(3)
    for kind in ("learned", "projected"):
        quantizer = VectorQuantizer(8, 4, kind, in_dim=16, usage_decay=0.0, dead_threshold=0.5, replace_every=1).train()
        z = torch.randn(64, 4) * 0.01 + 5.0  # far from every initial code: one code takes all
        quantizer(z)
        assert quantizer.dead_codes(0.5).numel() == 0  # replaced at this step, usage reset
        distances = torch.cdist(quantizer.codes(), z).min(-1).values
        assert (distances < 1e-2).sum() >= 7, kind  # the dead codes now sit on encodings


def fine_wins_setup():
    """Paper variant, 2 scales, 4 shared codes at the corners of a square."""
    torch.manual_seed(4)
    config = MSFConfig(variant="paper", num_scales=2, shared_codes=4, specific_codes=[4, 4])
    quantizer = MultiScaleQuantizer(2, config).eval()
    with torch.no_grad():
        # W = [I | 0]: project-up puts Z into the scale-invariant copy, zero into the other.
        quantizer.projection.weight.copy_(torch.cat([torch.eye(2), torch.zeros(2, 2)], dim=1))
        quantizer.shared.codebook.weight.copy_(torch.tensor([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0], [4.0, 4.0]]))
    return quantizer


def test_fusion_takes_the_finer_scale_code_where_it_is_more_confident():
    quantizer = fine_wins_setup()
    fine = torch.zeros(1, 2, 2, 2)
    fine[0, :, 0, 0] = torch.tensor([3.9, 0.0])  # near code 1 at every fine cell of the block
    fine[0, :, 0, 1] = torch.tensor([4.1, 0.1])
    fine[0, :, 1, 0] = torch.tensor([3.95, -0.05])
    fine[0, :, 1, 1] = torch.tensor([4.05, 0.05])  # mean (4, 0): exactly code 1, very confident
    coarse = torch.tensor([1.9, 2.2]).view(1, 2, 1, 1)  # between the codes: nearest code 2, unsure
    out = quantizer([fine, coarse])
    coarse_alone = quantizer.shared.match(coarse.permute(0, 2, 3, 1))
    assert int(coarse_alone.indices) == 2  # on its own the coarse scale picks code 2
    assert int(out[1].indices[0, 0, 0, 0]) == 1  # fused: the confident finer scale's code
    # And the other way round: an unsure fine scale takes the confident coarse code.
    unsure_fine = torch.full((1, 2, 2, 2), 2.0)
    sure_coarse = torch.tensor([0.0, 4.0]).view(1, 2, 1, 1)
    out = quantizer([unsure_fine, sure_coarse])
    assert (out[0].indices[0, 0] == 2).all()


@pytest.mark.parametrize("inter,intra", [(True, True), (False, True), (True, False), (False, False)])
def test_paper_variant_shapes_and_gradients(inter, intra):
    torch.manual_seed(5)
    config = MSFConfig(num_scales=3, inter_fusion=inter, intra_fusion=intra)
    quantizer = MultiScaleQuantizer(8, config).train()
    encodings = [torch.randn(2, 8, 8 // 2**n, 8 // 2**n, requires_grad=True) for n in range(3)]
    out = quantizer(encodings, alpha=0.3)
    assert [tuple(s.output.shape) for s in out] == [(2, 8, 8, 8), (2, 8, 4, 4), (2, 8, 2, 2)]
    assert out[0].indices.shape == (2, 2 if intra else 1, 8, 8)
    sum(s.output.sum() for s in out).backward()
    assert all(e.grad is not None and e.grad.abs().sum() > 0 for e in encodings)


def test_unknown_variant_is_refused():
    with pytest.raises(ValueError, match="msf.variant='papr'"):
        MSFConfig(variant="papr")
