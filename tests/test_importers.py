"""The importer mappings without the authors' fixtures: round trips through the authors'
key names, the mapped / unused / missing report, exact grid conversion, clear errors."""

from __future__ import annotations

import pytest
import torch

from slotlab.io.importers import glass, msf, spot
from slotlab.io.importers.base import map_mlp_decoder
from slotlab.nn.slot_attention import SlotAttention, cartesian_grid

GLASS_ARGS = dict(num_iterations=2, num_slots=3, num_heads=2, input_size=12, out_size=10, slot_size=8,
                  mlp_hidden_size=16, input_resolution=3, epsilon=1e-6)


def to_authors(module: torch.nn.Module, renames: dict[str, str]) -> dict[str, torch.Tensor]:
    """slotlab's state dict under the authors' names (renames inverted)."""
    inverse = {v: k for k, v in renames.items()}
    out = {}
    for key, value in module.state_dict().items():
        prefix = max((p for p in inverse if key.startswith(p)), key=len, default=None)
        if prefix is not None:
            out[inverse[prefix] + key[len(prefix):]] = value
    return out


def glass_authors_state(seed=0):
    torch.manual_seed(seed)
    module = SlotAttention(glass.slot_attention_config(GLASS_ARGS))
    state = to_authors(module, {**glass.RENAMES, "slot_mu": "initializer.mu"})
    state["pos.projection.weight"] = state["pos.projection.weight"][..., None, None]
    state["pos.pe"] = cartesian_grid(3, 3, "centres").T.reshape(1, 4, 3, 3)
    return module, state


def test_glass_round_trip_and_report():
    module, state = glass_authors_state()
    state["extra.weight"] = torch.zeros(1)
    rng = torch.get_rng_state()
    imported = glass.map_slot_attention(state, GLASS_ARGS)
    assert torch.equal(torch.get_rng_state(), rng)  # mapping draws no random numbers
    assert imported.report.unused == ["extra.weight"] and not imported.report.missing
    assert "pos.pe" in imported.report.mapped
    rebuilt = imported.build()
    for key, value in module.state_dict().items():
        torch.testing.assert_close(rebuilt.state_dict()[key], value, rtol=0, atol=0)
    assert "unused (1): extra.weight" in imported.report.summary()


def test_position_grid_conversion_is_exact_both_ways():
    module, state = glass_authors_state(1)
    corners = glass.map_slot_attention(state, GLASS_ARGS, position_grid="corners").build().eval()
    assert corners.config.position_grid == "corners"
    x = torch.randn(2, 9, 12)
    noise = torch.randn(2, 3, 8)
    torch.testing.assert_close(corners(x, (3, 3), noise=noise).slots, module.eval()(x, (3, 3), noise=noise).slots,
                               atol=1e-5, rtol=1e-5)
    weight, bias = glass.convert_position_grid(corners.position.weight, corners.position.bias, (3, 3),
                                               "corners", "centres")
    # the 4 channels are redundant (x and 1 - x), so compare embeddings, not weights
    back = cartesian_grid(3, 3, "centres") @ weight.T + bias
    torch.testing.assert_close(back, module.position(cartesian_grid(3, 3, "centres")), atol=1e-5, rtol=1e-5)


def test_glass_errors_name_the_problem():
    _, state = glass_authors_state()
    with pytest.raises(ValueError, match="pos.pe is missing"):
        glass.map_slot_attention({k: v for k, v in state.items() if k != "pos.pe"}, GLASS_ARGS)
    with pytest.raises(ValueError, match="not the cell-centre grid"):
        glass.map_slot_attention({**state, "pos.pe": state["pos.pe"].flip(-1)}, GLASS_ARGS)
    with pytest.raises(ValueError, match="init_mlp"):
        glass.map_slot_attention(state, {**GLASS_ARGS, "init_mlp": True})
    with pytest.raises(ValueError, match="lacks 'slot_size'"):
        glass.slot_attention_config({k: v for k, v in GLASS_ARGS.items() if k != "slot_size"})
    with pytest.raises(ValueError, match="project_k.weight has shape"):
        glass.map_slot_attention({**state, "project_k.weight": torch.zeros(8, 5)}, GLASS_ARGS)


def test_spot_reads_sizes_off_the_weights_and_reports_missing():
    torch.manual_seed(0)
    config = spot.slot_attention_config(dict(input_channels=12, slot_size=8, num_slots=3, mlp_hidden_size=16,
                                             num_heads=2))
    module = SlotAttention(config)
    state = to_authors(module, spot.SLOT_ATTENTION_RENAMES)
    state["slots_init.weight"] = state["slots_init.weight"][0]
    imported = spot.map_slot_attention({f"slot_attn.{k}": v for k, v in state.items()}, {"num_heads": 2},
                                       prefix="slot_attn.")
    assert imported.config == config and not imported.report.missing and not imported.report.unused
    del state["slot_attention.gru.bias_hh"]
    partial = spot.map_slot_attention(state, {"num_heads": 2})
    assert partial.report.missing == ["gru.bias_hh"]
    with pytest.raises(ValueError, match="gru.bias_hh"):
        partial.build()
    with pytest.raises(ValueError, match="init_method"):
        spot.slot_attention_config(dict(input_channels=4, slot_size=4, num_slots=2, mlp_hidden_size=4,
                                        init_method="kmeans"))
    with pytest.raises(ValueError, match="no SPOT slot attention"):
        spot.map_slot_attention(state, prefix="slot_attn.")


def test_msf_maps_the_query_means_and_leaves_logstd_unused():
    torch.manual_seed(0)
    config = msf.slot_attention_config(dict(embed_dim=8, kv_dim=12, ffn_dim=16, num_slots=3, dropout=0.1))
    module = SlotAttention(config)
    state = {f"aggregat.{k}": v for k, v in to_authors(module, msf.SLOT_ATTENTION_RENAMES).items()}
    state["initializ.mean"] = module.initializer.queries.detach().clone()
    state["initializ.logstd"] = torch.zeros(1, 3, 8)
    imported = msf.map_slot_attention(state, {"dropout": 0.1}, prefix="aggregat.", init_prefix="initializ.")
    assert imported.report.unused == ["initializ.logstd"] and not imported.report.missing
    assert imported.config == config
    imported.build()


def test_mlp_decoder_mapping_round_trip():
    from slotlab.nn.decoders.mlp import MLPDecoder, MLPDecoderConfig

    decoder = MLPDecoder(MLPDecoderConfig(slot_dim=8, feature_dim=5, num_tokens=6, hidden_dim=16))
    state = {"pos_embed": decoder.position[:, 0].detach()}
    state.update({f"decoder.{k[4:]}": v for k, v in decoder.state_dict().items() if k.startswith("mlp.")})
    rebuilt = map_mlp_decoder({f"dec.{k}": v for k, v in state.items()}, prefix="dec.").build()
    slots = torch.randn(2, 3, 8)
    torch.testing.assert_close(rebuilt(slots).reconstruction, decoder(slots).reconstruction)
    with pytest.raises(ValueError, match="no MLP decoder"):
        map_mlp_decoder(state, prefix="x.")


@pytest.mark.parametrize("preset", ["glass-coco", "glass-voc", "glass-sem-coco", "glass-labels-coco"])
def test_glass_paper_presets_use_the_released_slot_attention(preset):
    """The released GLASS slot attention (configs/coco/slot_attn/config.json) maps onto the
    paper presets by renaming: every option the importer sets is the preset's."""
    import dataclasses

    from slotlab.config import from_dict, load_preset
    from slotlab.nn.decoders.mlp import MLPDecoderConfig
    from slotlab.nn.slot_attention import SlotAttentionConfig

    released = dict(num_iterations=5, num_slots=7, num_heads=1, input_size=768, out_size=1024, slot_size=768,
                    mlp_hidden_size=768, input_resolution=32, epsilon=1e-6)
    model = load_preset(preset)["model"]
    ours = from_dict(SlotAttentionConfig, model["slot_attention"])
    theirs = glass.slot_attention_config(released)
    filled_by_the_method = {"input_dim", "output_dim", "input_mlp_hidden"}  # from the encoder / UNet
    for f in dataclasses.fields(SlotAttentionConfig):
        if f.name not in filled_by_the_method | {"truncation"}:
            assert getattr(ours, f.name) == getattr(theirs, f.name), f.name
    assert ours.effective_truncation == theirs.effective_truncation
    assert from_dict(MLPDecoderConfig, model["instance_decoder"]).zero_bias_init
