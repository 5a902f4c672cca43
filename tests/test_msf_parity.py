"""MSF's quantisers and VQ-VAE (``code`` variant) against the authors' modules."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from slotlab.io.importers.msf import QUANTIZER_RENAMES, vqvae_multiscale_state
from slotlab.io.importers.spot import map_keys
from slotlab.nn.quantize.msf import MSFConfig
from slotlab.nn.quantize.projection import PinvProjection
from slotlab.nn.quantize.vq import VectorQuantizer, chi_mean_std
from slotlab.nn.quantize.vqvae import VQVAE, VQVAEConfig
from tests.parity_cases import load_case

ATOL = RTOL = 1e-5


def gumbels(case, call: str) -> list[torch.Tensor]:
    """The recorded Exp(1) draws of a call as the Gumbel noise -log(E) they became."""
    draws = sorted((k for k in case.inputs if k.startswith(f"{call}.noise.")), key=lambda k: int(k.rsplit(".", 1)[1]))
    return [-case.inputs[k].log() for k in draws]


def test_linear_pinv_matches_msf():
    case = load_case("msf", "msf_linear_pinv")
    args = case.meta["constructor_args"]
    projection = PinvProjection(args["in_channel"], args["out_channel"])
    projection.load_state_dict(case.state, strict=True)
    torch.testing.assert_close(projection(case.inputs["x"]), case.outputs["forward"], atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(projection.inverse(case.inputs["y"]), case.outputs["pinv"], atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("call", ["eval", "train_std2"])
def test_quantizer_matches_msf(call):
    case = load_case("msf", "msf_quantiz")
    args = case.meta["constructor_args"]
    quantizer = VectorQuantizer(args["num_code"], args["code_dim"], "projected", args["in_dim"])
    mapped, unused = map_keys(case.state, QUANTIZER_RENAMES)
    assert unused == []
    quantizer.load_state_dict(mapped, strict=True)
    mean, std = chi_mean_std(args["code_dim"])
    assert mean == pytest.approx(float(case.outputs["chi_mu"]), abs=1e-12)
    assert std == pytest.approx(float(case.outputs["chi_sigma"]), abs=1e-12)
    calls = {c["name"]: c for c in case.meta["calls"]}
    quantizer.train(calls[call]["mode"] == "train")
    quantizer.gumbel_scale.fill_(calls[call]["buffer_overrides"]["std"])
    noise = gumbels(case, call)
    with torch.no_grad():
        match, codes = quantizer(case.inputs["input"], noise[0] if noise else None)
    torch.testing.assert_close(match.probs, case.outputs[f"{call}.zsoft"], atol=ATOL, rtol=RTOL)
    assert torch.equal(match.indices, case.outputs[f"{call}.zidx"])
    torch.testing.assert_close(codes, case.outputs[f"{call}.quant"], atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(quantizer.codes(), case.outputs[f"{call}.codebook_projected"], atol=ATOL, rtol=RTOL)


def stand_in_layers(spec: dict) -> nn.Sequential:
    """The recording's tiny convolutions (standing in for TAESD) from its json description."""
    def build(m: dict) -> nn.Module:
        kind, kwargs = m["type"], {k: v for k, v in m.items() if k != "type"}
        if kind == "Interpolate":
            return Resize(kwargs["scale_factor"], kwargs["interp"])
        return getattr(nn, kind)(**kwargs)

    return nn.Sequential(*(build(m) for m in spec["modules"]))


class Resize(nn.Module):
    def __init__(self, factor: float, mode: str):
        super().__init__()
        self.factor, self.mode = factor, mode

    def forward(self, x):
        return nn.functional.interpolate(x, scale_factor=self.factor, mode=self.mode)


def vqvae_for_case(case) -> VQVAE:
    spec = case.meta["constructor_args"]["config"]
    sizes = [q["num_code"] for q in spec["quant"]["modules"]]
    q0 = spec["quant"]["modules"][0]
    msf = MSFConfig(variant="code", num_scales=spec["num_scale"], shared_codes=sizes[0], specific_codes=sizes[1:],
                    in_dim=q0["in_dim"])
    model = VQVAE(VQVAEConfig(image_size=64, code_dim=q0["code_dim"], quantizer="msf", msf=msf))
    model.encoder, model.decoder = stand_in_layers(spec["encode"]), stand_in_layers(spec["decode"])
    mapped, unused = vqvae_multiscale_state(case.state)
    assert unused == []
    model.load_state_dict(mapped, strict=True)
    return model


def configure(model: VQVAE, case, call: str) -> None:
    meta = {c["name"]: c for c in case.meta["calls"]}[call]
    model.train(meta["mode"] == "train")
    overrides = meta["buffer_overrides"]
    model.alpha.fill_(overrides["alpha"])
    for quantizer in model.vector_quantizers():
        quantizer.gumbel_scale.fill_(overrides["quant.0.std"])


@pytest.mark.parametrize("call", ["pretrain_eval", "pretrain_train"])
def test_vqvae_pretraining_matches_msf(call):
    case = load_case("msf", "msf_vqvae_multiscale")
    model = vqvae_for_case(case)
    configure(model, case, call)
    images = (case.inputs["input"] + 1) / 2  # slotlab's VQ-VAE reads [0, 1] and maps to [-1, 1]
    with torch.no_grad():
        out = model(images, gumbel=iter(gumbels(case, call)))
    o = case.outputs
    for n, scale in enumerate(out.scales):
        torch.testing.assert_close(scale.encoding, o[f"{call}.encode.{n}"], atol=ATOL, rtol=RTOL)
        assert torch.equal(scale.indices, o[f"{call}.zidx.{n}"])
        torch.testing.assert_close(scale.quantized, o[f"{call}.quant.{n}"], atol=ATOL, rtol=RTOL)
        torch.testing.assert_close(scale.residual, o[f"{call}.residual.{n}"], atol=ATOL, rtol=RTOL)
        torch.testing.assert_close(out.reconstructions[n], o[f"{call}.decode.{n}"], atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("call", ["mediat_eval", "mediat_train"])
def test_vqvae_tokenizer_matches_msf(call):
    case = load_case("msf", "msf_vqvae_multiscale")
    model = vqvae_for_case(case)
    configure(model, case, call)
    images = (case.inputs["input"] + 1) / 2
    with torch.no_grad():
        out = model(images, decode=False, gumbel=iter(gumbels(case, call)))
    o = case.outputs
    torch.testing.assert_close(out.raw[0], o[f"{call}.encode"], atol=ATOL, rtol=RTOL)
    assert torch.equal(out.scales[0].indices, o[f"{call}.zidx"])
    torch.testing.assert_close(out.scales[0].output, o[f"{call}.quant"], atol=ATOL, rtol=RTOL)
