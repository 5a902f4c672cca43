import pytest
import torch

from slotlab.nn.mlp_decoder import MLPDecoder, MLPDecoderConfig
from slotlab.nn.slot_attention import SlotAttention, SlotAttentionConfig, cartesian_grid


def make(**kw):
    base = dict(input_dim=16, slot_dim=32, num_slots=4, iters=3, mlp_hidden=64)
    base.update(kw)
    return SlotAttention(SlotAttentionConfig(**base))


def test_shapes_and_attention_is_softmax_over_slots():
    torch.manual_seed(0)
    sa = make()
    out = sa(torch.randn(2, 12, 16), grid=(3, 4))
    assert out.slots.shape == (2, 4, 32)
    assert out.attention.shape == (2, 12, 4)
    assert out.logits.shape == (2, 12, 4)
    torch.testing.assert_close(out.attention.sum(-1), torch.ones(2, 12))
    torch.testing.assert_close(out.attention, out.logits.softmax(-1))


def test_num_slots_override_and_output_projection():
    sa = make(output_dim=8)
    out = sa(torch.randn(3, 6, 16), grid=(2, 3), num_slots=6)
    assert out.slots.shape == (3, 6, 8)
    assert out.slots_pre_projection.shape == (3, 6, 32)


def test_multi_head_attention_runs_and_averages_heads():
    sa = make(heads=4)
    out = sa(torch.randn(2, 9, 16), grid=(3, 3))
    torch.testing.assert_close(out.attention.sum(-1), torch.ones(2, 9))


def test_update_is_weighted_mean_over_inputs():
    """GLASS Eq. 1: the update is sum_i A_ij / sum_l A_lj v(H_i) with A softmaxed over slots."""
    torch.manual_seed(0)
    sa = make(eps=0.0)
    x = sa.embed_inputs(torch.randn(1, 5, 16), (1, 5))
    k, v = sa.to_k(x), sa.to_v(x)
    slots = torch.randn(1, 4, 32)
    updates, attn, _ = sa.attend(slots, k, v)
    q = sa.to_q(sa.norm_slots(slots))
    a = (k @ q.transpose(1, 2) / 32**0.5).softmax(-1)  # (1, N, K)
    expected = (a / a.sum(1, keepdim=True)).transpose(1, 2) @ v
    torch.testing.assert_close(updates, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(attn, a)


def test_learned_queries_are_deterministic_and_get_gradients():
    sa = make(init="learned_queries")
    x = torch.randn(2, 6, 16)
    a, b = sa(x, (2, 3)), sa(x, (2, 3))
    torch.testing.assert_close(a.slots, b.slots)
    a.slots.sum().backward()
    assert sa.initializer.queries.grad is not None and sa.initializer.queries.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="learns exactly"):
        sa(x, (2, 3), num_slots=5)




def test_gaussian_init_is_stochastic_and_seedable():
    sa = make()
    x = torch.randn(1, 6, 16)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    torch.testing.assert_close(sa(x, (2, 3), generator=g1).slots, sa(x, (2, 3), generator=g2).slots)
    assert not torch.allclose(sa(x, (2, 3)).slots, sa(x, (2, 3)).slots)


def test_annealed_gaussian_has_no_noise_in_eval_or_at_zero_sigma():
    sa = make(init="annealed_gaussian", sigma_start=1.0)
    x = torch.randn(1, 6, 16)
    sa.train()
    assert not torch.allclose(sa(x, (2, 3)).slots, sa(x, (2, 3)).slots)
    sa.eval()
    torch.testing.assert_close(sa(x, (2, 3)).slots, sa(x, (2, 3)).slots)
    sa.train()
    sa.initializer.set_sigma(0.0)
    torch.testing.assert_close(sa(x, (2, 3)).slots, sa(x, (2, 3)).slots)


def test_bad_config_and_grid():
    with pytest.raises(ValueError, match="init"):
        SlotAttentionConfig(init="nope")
    with pytest.raises(ValueError, match="divisible"):
        SlotAttentionConfig(slot_dim=30, heads=4)
    with pytest.raises(ValueError, match="grid"):
        make()(torch.randn(1, 6, 16), grid=(2, 2))


def test_cartesian_grid():
    g = cartesian_grid(2, 3)
    assert g.shape == (6, 4)
    torch.testing.assert_close(g[0], torch.tensor([0.0, 0.0, 1.0, 1.0]))
    torch.testing.assert_close(g[-1], torch.tensor([1.0, 1.0, 0.0, 0.0]))


def test_mlp_decoder_alpha_is_softmax_over_slots_and_recon_is_mixture():
    dec = MLPDecoder(MLPDecoderConfig(slot_dim=8, feature_dim=5, num_tokens=6, hidden_dim=16, hidden_layers=2))
    out = dec(torch.randn(2, 3, 8))
    assert out.masks.shape == (2, 3, 6)
    torch.testing.assert_close(out.masks.sum(1), torch.ones(2, 6))
    torch.testing.assert_close(out.reconstruction, (out.masks.unsqueeze(-1) * out.per_slot).sum(1))
    with pytest.raises(ValueError, match="feature_dim"):
        MLPDecoder(MLPDecoderConfig(slot_dim=8))


def test_mlp_decoder_equals_the_mlp_on_slot_plus_position():
    """The split first layer gives what the MLP gives on the broadcast sum slot + position."""
    torch.manual_seed(0)
    dec = MLPDecoder(MLPDecoderConfig(slot_dim=8, feature_dim=5, num_tokens=6, hidden_dim=16, hidden_layers=2))
    with torch.no_grad():
        dec.position.normal_()
    slots = torch.randn(2, 3, 8)
    direct = dec.mlp(slots.unsqueeze(2) + dec.position)
    out = dec(slots)
    torch.testing.assert_close(out.per_slot, direct[..., :-1])
    torch.testing.assert_close(out.masks, direct[..., -1].softmax(dim=1))
