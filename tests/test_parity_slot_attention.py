"""slotlab's one slot-attention module, configured and loaded through the importer mappings,
reproduces the authors' GLASS, SPOT and MSF slot attention: outputs, masks, logits and
gradients, with the recorded random draws fed in (fixtures: ../shared/fixtures/parity)."""

from __future__ import annotations

import pytest
import torch

from slotlab.io.importers import glass, msf, spot
from slotlab.nn.slot_attention import SlotAttention, cartesian_grid
from tests.parity_cases import load_case

OUTPUT_TOL = dict(atol=1e-5, rtol=1e-5)  # the fixtures' README: module outputs
GRAD_TOL = dict(atol=1e-4, rtol=1e-4)  # gradients through the GRU iterations

GLASS_CASES = ["glass_sa", "glass_sa_heads2_video", "glass_sa_dynamic_mask", "glass_sa_learned_bilevel"]
SPOT_CASES = ["spot_sa_boqsa", "spot_sa_boqsa_heads2", "spot_sa_gaussian"]


def authors_grads(module: SlotAttention, mapped: dict[str, str], outputs: dict, prefix: str = "grad."):
    """(slotlab gradient, recorded gradient) per recorded parameter, by the importer's mapping."""
    params = dict(module.named_parameters())
    pairs = {}
    for key, want in outputs.items():
        if key.startswith(prefix) and key[len(prefix):] in mapped:
            got = params[mapped[key[len(prefix):]]].grad
            pairs[key] = (got.reshape(want.shape), want)
    return pairs


def run_glass(case: str, position_grid: str = "centres") -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Run a GLASS case frame by frame (slots carried over frames as their code does) and
    return (slotlab, authors') pairs of every recorded output and gradient."""
    c = load_case("glass", case)
    imported = glass.map_slot_attention(c.state, c.meta["constructor_args"], position_grid=position_grid)
    assert not imported.report.unused and not imported.report.missing, imported.report.summary()
    module = imported.build().eval()
    inputs = c.inputs["inputs"]
    b, frames, _, h, w = inputs.shape
    extra = {}
    if "num_objs" in c.inputs:  # use_mask=True: slots with index >= num_objs are absent
        extra["slot_mask"] = torch.arange(module.config.num_slots)[None] < c.inputs["num_objs"][:, None]
    slots, outs = None, []
    for f in range(frames):
        noise = c.inputs.get("noise.0") if f == 0 else None  # one draw, for the first frame
        tokens = inputs[:, f].flatten(2).transpose(1, 2)  # (B, h*w, C), raster order
        outs.append(module(tokens, (h, w), slots=slots, noise=noise, **extra))
        slots = outs[-1].slots_pre_projection
    pairs = {
        "slots": (torch.stack([o.slots for o in outs], 1), c.outputs["slots"]),
        "slots_before_out": (torch.stack([o.slots_pre_projection for o in outs], 1), c.outputs["slots_before_out"]),
        "attns": (torch.stack([o.attention_heads for o in outs], 1), c.outputs["attns"]),
        "eval_masks": (outs[0].attention.transpose(1, 2).reshape(b, -1, h, w), c.outputs["eval_masks"]),
    }
    if position_grid == "centres":
        grid = cartesian_grid(h, w, "centres")
        with_position = inputs + module.position(grid).T.reshape(1, 1, -1, h, w)
        pairs["pos_out"] = (with_position, c.outputs["pos_out"])
    if "grad_slots" in c.inputs:
        (pairs["slots"][0] * c.inputs["grad_slots"]).sum().backward()
        pairs.update(authors_grads(module, imported.report.mapped, c.outputs))
    return pairs


def run_spot(case: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    c = load_case("spot", case)
    imported = spot.map_slot_attention(c.state, c.meta["constructor_args"])
    assert not imported.report.unused and not imported.report.missing, imported.report.summary()
    module = imported.build().eval()
    out = module(c.inputs["x"], (4, 4), noise=c.inputs.get("noise.0"))
    (out.slots * c.inputs["grad_slots"]).sum().backward()
    pairs = {
        "slots": (out.slots, c.outputs["slots"]),
        "attn": (out.attention, c.outputs["attn"]),
        "init_slots": (out.initial_slots, c.outputs["init_slots"]),
        "attn_logits": (out.logits_heads, c.outputs["attn_logits"]),
    }
    pairs.update(authors_grads(module, imported.report.mapped, c.outputs))
    return pairs


def run_msf() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    c = load_case("msf", "msf_slot_attention")
    imported = msf.map_slot_attention(c.state, c.meta["constructor_args"])
    assert not imported.report.unused and imported.report.missing == ["initializer.queries"]
    module = imported.build(allow_missing=True).eval()
    query = c.inputs["query"].clone().requires_grad_(True)  # their initial slots, passed in
    out = module(c.inputs["input"], (4, 4), slots=query)
    (out.slots * c.inputs["grad_slots"]).sum().backward()
    masked = module(c.inputs["input"], (4, 4), slots=c.inputs["query"], slot_mask=c.inputs["smask"])
    pairs = {
        "slots": (out.slots, c.outputs["slots"]),
        "attent": (out.attention.transpose(1, 2), c.outputs["attent"]),
        "grad.query": (query.grad, c.outputs["grad.query"]),
        "masked.slots": (masked.slots, c.outputs["masked.slots"]),
        "masked.attent": (masked.attention.transpose(1, 2), c.outputs["masked.attent"]),
    }
    pairs.update(authors_grads(module, imported.report.mapped, c.outputs))
    return pairs


def assert_pairs(pairs: dict[str, tuple[torch.Tensor, torch.Tensor]], expected_grads: int = 0) -> None:
    grads = [k for k in pairs if "grad" in k]
    assert len(grads) == expected_grads, f"compared {len(grads)} gradients, the fixture has {expected_grads}"
    for key, (got, want) in pairs.items():
        tol = GRAD_TOL if "grad" in key else OUTPUT_TOL
        torch.testing.assert_close(got.detach(), want, **tol, msg=lambda m, key=key: f"{key}: {m}")


@pytest.mark.parametrize("case", GLASS_CASES)
def test_glass_slot_attention_reproduces_the_authors(case):
    pairs = run_glass(case)
    assert_pairs(pairs, expected_grads=30 if case == "glass_sa_learned_bilevel" else 0)


def test_glass_masked_slots_get_no_attention():
    num_objs = load_case("glass", "glass_sa_dynamic_mask").inputs["num_objs"]
    attns = run_glass("glass_sa_dynamic_mask")["attns"][0]
    absent = torch.arange(attns.shape[-1])[None] >= num_objs[:, None]
    assert absent.any() and (attns.permute(0, 4, 1, 2, 3)[absent] == 0).all()


@pytest.mark.parametrize("case", ["glass_sa", "glass_sa_heads2_video"])
def test_glass_weights_converted_to_the_end_point_grid_give_the_same_outputs(case):
    """Their cell-centre, row-first grid converted exactly to slotlab's end-point, column-first grid."""
    assert_pairs(run_glass(case, position_grid="corners"))


@pytest.mark.parametrize("case", SPOT_CASES)
def test_spot_slot_attention_reproduces_the_authors(case):
    assert_pairs(run_spot(case), expected_grads=len(load_case("spot", case).state))


def test_msf_slot_attention_reproduces_the_authors():
    pairs = run_msf()
    assert_pairs(pairs, expected_grads=18)  # 17 parameters and the query
    smask = load_case("msf", "msf_slot_attention").inputs["smask"]
    assert (~smask).any() and (pairs["masked.attent"][0][~smask] == 0).all()
