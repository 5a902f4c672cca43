"""The authors' GLASS and SPOT MLP decoders, loaded through slotlab's importer mapping,
reproduce their recorded outputs (fixtures: ../shared/fixtures/parity)."""

from __future__ import annotations

import pytest
import torch

from slotlab.io.importers import glass, spot
from tests.parity_cases import load_case

OUTPUT_TOL = dict(atol=1e-5, rtol=1e-5)  # the fixtures' README: module outputs


@pytest.mark.parametrize("method, mapping", [("glass", glass), ("spot", spot)])
def test_mlp_decoder_reproduces_the_authors(method, mapping):
    c = load_case(method, f"{method}_mlp_decoder")
    imported = mapping.map_mlp_decoder(c.state)
    assert not imported.report.unused and not imported.report.missing
    args, config = c.meta["constructor_args"], imported.config
    assert (config.slot_dim, config.feature_dim, config.num_tokens, config.hidden_dim) == (
        args["object_dim"], args["output_dim"], args["num_patches"], args["hidden_features"]
    )
    decoder = imported.build().eval()
    with torch.no_grad():
        out = decoder(c.inputs["slots"])
    torch.testing.assert_close(out.reconstruction, c.outputs["reconstruction"], **OUTPUT_TOL)
    torch.testing.assert_close(out.masks, c.outputs["masks"], **OUTPUT_TOL)


def test_zero_bias_init_starts_every_bias_at_zero():
    from slotlab.nn.decoders.mlp import MLPDecoder, MLPDecoderConfig

    config = MLPDecoderConfig(slot_dim=8, feature_dim=5, num_tokens=6, hidden_dim=16, zero_bias_init=True)
    torch.manual_seed(0)
    zero = MLPDecoder(config)
    torch.manual_seed(0)
    default = MLPDecoder(MLPDecoderConfig(slot_dim=8, feature_dim=5, num_tokens=6, hidden_dim=16))
    linears = [(a, b) for a, b in zip(zero.mlp, default.mlp) if isinstance(a, torch.nn.Linear)]
    assert len(linears) == 4
    for a, b in linears:
        assert (a.bias == 0).all() and (b.bias != 0).any()
        torch.testing.assert_close(a.weight, b.weight)  # the weights' seeded init is unchanged


def test_grid_position_init_starts_the_table_smooth_and_leaves_the_mlp_unchanged():
    from slotlab.nn.decoders.mlp import MLPDecoder, MLPDecoderConfig

    sizes = {"slot_dim": 8, "feature_dim": 5, "num_tokens": 16, "hidden_dim": 16}
    torch.manual_seed(0)
    grid = MLPDecoder(MLPDecoderConfig(**sizes, position_init="grid"))
    torch.manual_seed(0)
    normal = MLPDecoder(MLPDecoderConfig(**sizes))
    assert normal.position.std() < 0.05  # DINOSAUR's std 0.02 stays the default
    table = grid.position[0, 0]
    assert table.std() > 0.1
    # an affine function of (column, row): centred, it spans two directions, and tokens
    # at the same place in another row differ by one vector
    assert torch.linalg.matrix_rank(table - table.mean(0), atol=1e-5) == 2
    rows = table.view(4, 4, 8)
    torch.testing.assert_close(rows[1] - rows[0], (rows[1] - rows[0])[:1].expand(4, -1))
    for a, b in zip(grid.mlp, normal.mlp):
        if isinstance(a, torch.nn.Linear):
            torch.testing.assert_close(a.weight, b.weight)


def test_grid_position_init_refuses_bad_settings_by_name():
    from slotlab.nn.decoders.mlp import MLPDecoder, MLPDecoderConfig

    with pytest.raises(ValueError, match="decoder.position_init='wavy' is unknown"):
        MLPDecoderConfig(position_init="wavy")
    with pytest.raises(ValueError, match="needs a square token grid, got 6 tokens"):
        MLPDecoder(MLPDecoderConfig(slot_dim=8, feature_dim=5, num_tokens=6, hidden_dim=16, position_init="grid"))
