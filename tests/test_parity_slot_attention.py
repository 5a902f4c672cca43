"""slotlab's one slot-attention module, configured and loaded through the importer mappings,
reproduces the authors' GLASS, SPOT and MSF slot attention: outputs, masks, logits and
gradients, with the recorded random draws fed in (fixtures: ../shared/fixtures/parity)."""

from __future__ import annotations

import pytest
import torch

from slotlab.io.importers import glass, msf, spot
from slotlab.nn.slot_attention import SlotAttention, cartesian_grid
from tests.parity_fixtures import GRAD_TOL, OUTPUT_TOL, load_case

GLASS_CASES = ["glass_sa", "glass_sa_heads2_video", "glass_sa_dynamic_mask", "glass_sa_learned_bilevel"]
SPOT_CASES = ["spot_sa_boqsa", "spot_sa_boqsa_heads2", "spot_sa_gaussian"]


def authors_grads(module: SlotAttention, mapped: dict[str, str], tensors: dict, prefix: str = "output.grad."):
    """(slotlab gradient, recorded gradient) per recorded parameter, by the importer's mapping."""
    params = dict(module.named_parameters())
    pairs = {}
    for key, want in tensors.items():
        if key.startswith(prefix) and key[len(prefix):] in mapped:
            got = params[mapped[key[len(prefix):]]].grad
            pairs[key] = (got.reshape(want.shape), want)
    return pairs


def run_glass(case: str, position_grid: str = "centres") -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Run a GLASS case frame by frame (slots carried over frames as their code does) and
    return (slotlab, authors') pairs of every recorded output and gradient."""
    state_dict, t, meta = load_case(f"glass/{case}")
    imported = glass.map_slot_attention(state_dict, meta["constructor_args"], position_grid=position_grid)
    assert not imported.report.unused and not imported.report.missing, imported.report.summary()
    module = imported.build().eval()
    inputs = t["input.inputs"]
    b, frames, _, h, w = inputs.shape
    extra = {}
    if "input.num_objs" in t:  # use_mask=True: slots with index >= num_objs are absent
        extra["slot_mask"] = torch.arange(module.config.num_slots)[None] < t["input.num_objs"][:, None]
    slots, outs = None, []
    for f in range(frames):
        noise = t.get("input.noise.0") if f == 0 else None  # one draw, for the first frame
        tokens = inputs[:, f].flatten(2).transpose(1, 2)  # (B, h*w, C), raster order
        outs.append(module(tokens, (h, w), slots=slots, noise=noise, **extra))
        slots = outs[-1].slots_pre_projection
    pairs = {
        "slots": (torch.stack([o.slots for o in outs], 1), t["output.slots"]),
        "slots_before_out": (torch.stack([o.slots_pre_projection for o in outs], 1), t["output.slots_before_out"]),
        "attns": (torch.stack([o.attention_heads for o in outs], 1), t["output.attns"]),
        "eval_masks": (outs[0].attention.transpose(1, 2).reshape(b, -1, h, w), t["output.eval_masks"]),
    }
    if position_grid == "centres":
        grid = cartesian_grid(h, w, "centres")
        with_position = inputs + module.position(grid).T.reshape(1, 1, -1, h, w)
        pairs["pos_out"] = (with_position, t["output.pos_out"])
    if "input.grad_slots" in t:
        (pairs["slots"][0] * t["input.grad_slots"]).sum().backward()
        pairs.update(authors_grads(module, imported.report.mapped, t))
    return pairs


def run_spot(case: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    state_dict, t, meta = load_case(f"spot/{case}")
    imported = spot.map_slot_attention(state_dict, meta["constructor_args"])
    assert not imported.report.unused and not imported.report.missing, imported.report.summary()
    module = imported.build().eval()
    out = module(t["input.x"], (4, 4), noise=t.get("input.noise.0"))
    (out.slots * t["input.grad_slots"]).sum().backward()
    pairs = {
        "slots": (out.slots, t["output.slots"]),
        "attn": (out.attention, t["output.attn"]),
        "init_slots": (out.initial_slots, t["output.init_slots"]),
        "attn_logits": (out.logits, t["output.attn_logits"]),
    }
    pairs.update(authors_grads(module, imported.report.mapped, t))
    return pairs


def run_msf() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    state_dict, t, meta = load_case("msf/msf_slot_attention")
    imported = msf.map_slot_attention(state_dict, meta["constructor_args"])
    assert not imported.report.unused and imported.report.missing == ["initializer.queries"]
    module = imported.build(allow_missing=True).eval()
    query = t["input.query"].clone().requires_grad_(True)  # their initial slots, passed in
    out = module(t["input.input"], (4, 4), slots=query)
    (out.slots * t["input.grad_slots"]).sum().backward()
    masked = module(t["input.input"], (4, 4), slots=t["input.query"], slot_mask=t["input.smask"])
    pairs = {
        "slots": (out.slots, t["output.slots"]),
        "attent": (out.attention.transpose(1, 2), t["output.attent"]),
        "grad.query": (query.grad, t["output.grad.query"]),
        "masked.slots": (masked.slots, t["output.masked.slots"]),
        "masked.attent": (masked.attention.transpose(1, 2), t["output.masked.attent"]),
    }
    pairs.update(authors_grads(module, imported.report.mapped, t))
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
    _, t, _ = load_case("glass/glass_sa_dynamic_mask")
    attns = run_glass("glass_sa_dynamic_mask")["attns"][0]
    absent = torch.arange(attns.shape[-1])[None] >= t["input.num_objs"][:, None]
    assert absent.any() and (attns.permute(0, 4, 1, 2, 3)[absent] == 0).all()


@pytest.mark.parametrize("case", ["glass_sa", "glass_sa_heads2_video"])
def test_glass_weights_converted_to_the_end_point_grid_give_the_same_outputs(case):
    """Their cell-centre, row-first grid converted exactly to slotlab's end-point, column-first grid."""
    assert_pairs(run_glass(case, position_grid="corners"))


@pytest.mark.parametrize("case", SPOT_CASES)
def test_spot_slot_attention_reproduces_the_authors(case):
    state_dict, _, _ = load_case(f"spot/{case}")
    assert_pairs(run_spot(case), expected_grads=len(state_dict))


def test_msf_slot_attention_reproduces_the_authors():
    pairs = run_msf()
    assert_pairs(pairs, expected_grads=18)  # 17 parameters and the query
    assert (pairs["masked.attent"][0][~load_case("msf/msf_slot_attention")[1]["input.smask"]] == 0).all()
