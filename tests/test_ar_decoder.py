"""The autoregressive decoder: parity with SPOT's TransformerDecoder, orders, options."""

from __future__ import annotations

import pytest
import torch

from slotlab.io.importers.spot import transformer_decoder_state
from slotlab.nn.decoders.autoregressive import AutoregressiveDecoder, AutoregressiveDecoderConfig
from tests.parity_cases import load_case


def decoder_for_case(case) -> AutoregressiveDecoder:
    args = case.meta["constructor_args"]
    config = AutoregressiveDecoderConfig(
        input_dim=args["d_model"], slot_dim=args["d_model"], width=args["d_model"], blocks=args["num_blocks"],
        heads=args["num_heads"], num_tokens=args["max_len"],
    )
    decoder = AutoregressiveDecoder(config).eval()
    mapped, unused = transformer_decoder_state(case.state)
    assert unused == []
    missing, unexpected = decoder.load_state_dict(mapped, strict=False)
    # Only the parts outside the authors' TransformerDecoder stay unloaded.
    assert sorted(missing) == sorted(
        k for k in decoder.state_dict() if k.split(".")[0] in ("bos", "input_projection", "slot_projection")
    )
    assert unexpected == []
    return decoder


@pytest.mark.parametrize("call", ["causal", "noncausal"])
def test_transformer_decoder_matches_spot(call):
    case = load_case("spot", "spot_transformer_decoder")
    decoder = decoder_for_case(case)
    with torch.no_grad():
        output, attention = decoder.run_blocks(case.inputs["input"], case.inputs["encoder_output"], causal=call == "causal")
    last = case.meta["constructor_args"]["num_blocks"] - 1
    cross = case.outputs[f"{call}.cross_attn.{last}"]  # (B, heads, T, S)
    torch.testing.assert_close(output, case.outputs[f"{call}.output"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(attention, cross.mean(1), atol=1e-5, rtol=1e-5)


def tiny_decoder(**options) -> AutoregressiveDecoder:
    config = AutoregressiveDecoderConfig(input_dim=6, slot_dim=5, width=8, blocks=2, heads=2, num_tokens=9, **options)
    torch.manual_seed(0)
    return AutoregressiveDecoder(config).eval()


def test_prediction_is_causal_in_the_decoding_order():
    decoder = tiny_decoder(num_bos=2)
    tokens, slots = torch.randn(2, 9, 6), torch.randn(2, 3, 5)
    order = torch.randperm(9, generator=torch.Generator().manual_seed(1))
    base = decoder(tokens, slots, order=order, bos_index=1).prediction
    changed = tokens.clone()
    changed[:, order[5]] += 1.0  # the 6th decoded token: predictions 0..5 cannot see it
    after = decoder(changed, slots, order=order, bos_index=1).prediction
    same = (base - after).abs().amax((0, 2)) < 1e-6
    assert same[order[:6]].all() and not same[order[6:]].all()


def test_order_is_undone_and_per_sample_orders_equal_per_batch_ones():
    decoder = tiny_decoder(num_bos=3)
    tokens, slots = torch.randn(3, 9, 6), torch.randn(3, 4, 5)
    orders = torch.stack([torch.randperm(9, generator=torch.Generator().manual_seed(s)) for s in range(3)])
    together = decoder(tokens, slots, order=orders, bos_index=torch.tensor([0, 2, 1]))
    for i, bos in enumerate([0, 2, 1]):
        alone = decoder(tokens[i : i + 1], slots[i : i + 1], order=orders[i], bos_index=bos)
        torch.testing.assert_close(together.prediction[i : i + 1], alone.prediction)
        torch.testing.assert_close(together.attention[i : i + 1], alone.attention)
    # Decoding the raster order explicitly equals decoding without an order.
    plain = decoder(tokens, slots)
    explicit = decoder(tokens, slots, order=torch.arange(9))
    torch.testing.assert_close(plain.prediction, explicit.prediction)
    torch.testing.assert_close(plain.attention.sum(-1), torch.ones(3, 9))


def test_slate_options_head_and_position_embedding():
    decoder = tiny_decoder(position_embedding=True, output_dim=11)
    out = decoder(torch.randn(2, 9, 6), torch.randn(2, 4, 5))
    assert out.prediction.shape == (2, 9, 11) and out.attention.shape == (2, 9, 4)
    assert decoder.position.shape == (1, 9, 8)


def test_bad_sizes_are_named():
    with pytest.raises(ValueError, match="not divisible"):
        AutoregressiveDecoderConfig(width=10, heads=3)
    with pytest.raises(ValueError, match="must be set"):
        AutoregressiveDecoder(AutoregressiveDecoderConfig(width=8, heads=2))
    with pytest.raises(ValueError, match="built for 9 tokens"):
        tiny_decoder()(torch.randn(1, 8, 6), torch.randn(1, 2, 5))
