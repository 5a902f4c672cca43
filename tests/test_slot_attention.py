import pytest
import torch

from slotlab.nn.decoders.mlp import MLPDecoder, MLPDecoderConfig
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
    assert out.logits.shape == (2, 12, 4) and out.logits_heads.shape == (2, 1, 12, 4)
    assert out.attention_heads.shape == (2, 1, 12, 4) and out.initial_slots.shape == (2, 4, 32)
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
    torch.testing.assert_close(attn[:, 0], a)


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
    torch.testing.assert_close(g[1], torch.tensor([0.5, 0.0, 0.5, 1.0]))  # column first


def test_cartesian_grid_cell_centres_row_first():
    """GLASS code: (i + 0.5) / n, channels (row, column, 1 - row, 1 - column)."""
    g = cartesian_grid(2, 4, variant="centres")
    torch.testing.assert_close(g[0], torch.tensor([0.25, 0.125, 0.75, 0.875]))
    torch.testing.assert_close(g[1], torch.tensor([0.25, 0.375, 0.75, 0.625]))
    torch.testing.assert_close(g[-1], torch.tensor([0.75, 0.875, 0.25, 0.125]))
    with pytest.raises(ValueError, match="position grid"):
        cartesian_grid(2, 2, variant="edges")


def test_joint_softmax_competes_over_heads_and_slots():
    sa = make(heads=2, softmax="joint", mask_heads="sum")
    out = sa(torch.randn(2, 6, 16), (2, 3))
    torch.testing.assert_close(out.attention_heads.sum(dim=(1, 3)), torch.ones(2, 6))
    torch.testing.assert_close(out.attention, out.attention_heads.sum(1))
    joint = out.logits_heads.transpose(1, 2).reshape(2, 6, 8).softmax(-1)
    torch.testing.assert_close(out.attention_heads.transpose(1, 2).reshape(2, 6, 8), joint)


def test_key_scale_divides_logits_by_the_full_or_per_head_width():
    torch.manual_seed(0)
    per_head = make(heads=4, key_scale="head")
    full = make(heads=4, key_scale="slot")
    full.load_state_dict(per_head.state_dict())
    x, noise = torch.randn(1, 6, 16), torch.randn(1, 4, 32)
    a = per_head.eval()(x, (2, 3), noise=noise)
    b = full.eval()(x, (2, 3), noise=noise)
    # the first iteration sees the same slots: its logits differ by sqrt(heads) = 2
    k = per_head.to_k(per_head.embed_inputs(x, (2, 3)))
    _, _, la = per_head.attend(a.initial_slots, k, k)
    _, _, lb = full.attend(b.initial_slots, k, k)
    torch.testing.assert_close(la, 2 * lb)


def test_input_width_path_projects_keys_from_the_input_width():
    sa = make(kv_width="input", input_dim=10, input_mlp_hidden=7)
    assert sa.input_mlp[-1].out_features == 10 and sa.norm_inputs.normalized_shape == (10,)
    assert sa.to_k.in_features == 10 and sa.to_k.out_features == 32
    assert sa(torch.randn(2, 6, 10), (2, 3)).slots.shape == (2, 4, 32)


def test_noise_replaces_the_gaussian_draw():
    sa = make()
    x, noise = torch.randn(2, 6, 16), torch.randn(2, 4, 32)
    out = sa(x, (2, 3), noise=noise)
    init = sa.initializer
    torch.testing.assert_close(out.initial_slots, init.mu + init.log_sigma.exp() * noise)
    torch.testing.assert_close(out.slots, sa(x, (2, 3), noise=noise).slots)
    with pytest.raises(ValueError, match="shape"):
        sa(x, (2, 3), noise=torch.randn(2, 3, 32))
    with pytest.raises(ValueError, match="draws no noise"):
        make(init="learned_queries")(x, (2, 3), noise=noise)


def test_masked_slots_get_eps_weights_or_nothing():
    """eps per entry (GLASS): an absent slot averages all inputs uniformly; eps on the sum
    (MSF): it gets zero attention and a zero update."""
    torch.manual_seed(0)
    x = torch.randn(2, 6, 16)
    mask = torch.tensor([[True, True, False, False], [True, True, True, False]])
    for mode in ("entry", "sum"):
        sa = make(eps_mode=mode, eps=1e-5, iters=1)
        xs = sa.embed_inputs(x, (2, 3))
        k, v = sa.to_k(xs), sa.to_v(xs)
        slots = torch.randn(2, 4, 32)
        updates, attn, _ = sa.attend(slots, k, v, mask)
        assert (attn[0, :, :, 2:] == 0).all() and (attn[1, :, :, 3] == 0).all()
        if mode == "entry":
            torch.testing.assert_close(updates[0, 2], v[0].mean(0))
        else:
            assert (updates[0, 2:] == 0).all() and (updates[1, 3] == 0).all()
    with pytest.raises(ValueError, match="at least one slot"):
        make()(x, (2, 3), slot_mask=torch.zeros(2, 4, dtype=torch.bool))


def test_truncation_controls_the_gradient_of_the_initial_slots():
    x = torch.randn(2, 6, 16)
    grads = {}
    for mode in ("none", "fixed-point", "bi-level"):
        torch.manual_seed(0)
        sa = make(init="learned_queries", truncation=mode)
        out = sa(x, (2, 3))
        out.slots.sum().backward()
        grads[mode] = sa.initializer.queries.grad
        assert sa.to_k.weight.grad.abs().sum() > 0
    assert grads["fixed-point"] is None
    assert grads["none"].abs().sum() > 0 and grads["bi-level"].abs().sum() > 0
    assert not torch.allclose(grads["none"], grads["bi-level"])


def test_msf_options_build_a_gelu_ffn_with_dropout():
    sa = make(mlp_activation="gelu", mlp_dropout=0.1, input_mlp=False, kv_width="input", position_embedding=False)
    assert isinstance(sa.mlp[1], torch.nn.GELU) and isinstance(sa.mlp[2], torch.nn.Dropout)
    assert isinstance(sa.input_mlp, torch.nn.Identity) and sa.to_k.in_features == 16


def test_unknown_option_names_the_field():
    for field in ("position_grid", "kv_width", "key_scale", "softmax", "mask_heads", "eps_mode",
                  "mlp_activation", "truncation"):
        with pytest.raises(ValueError, match=f"slot_attention.{field}="):
            SlotAttentionConfig(**{field: "nope"})


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
