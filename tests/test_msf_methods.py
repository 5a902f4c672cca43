"""VQ-VAE pretraining, SLATE on its frozen tokens, and the bad inputs they must refuse."""

from __future__ import annotations

import pytest
import torch

from slotlab.config import ConfigError
from slotlab.train.config import build_train_config
from slotlab.train.trainer import train
from slotlab.methods import Method, ObjectCentricModel

DATA = {"train": "scenes?split=train&size=16&resolution=32", "val": "scenes?split=val&size=4&resolution=32",
        "batch_size": 4}


def vqvae_preset(quantizer: str = "msf", steps: int = 3, **model) -> dict:
    body = {"backbone": "cnn", "image_size": 32, "code_dim": 8, "width": 8, "quantizer": quantizer, "num_codes": 16,
            "msf": {"num_scales": 3, "shared_codes": 4, "specific_codes": [4, 4, 4]}} | model
    return {"method": "vqvae", "model": body, "data": DATA,
            "stages": [{"name": "pretrain", "steps": steps, "lr": {"vqvae": 2e-3}}], "log_every": 1, "checkpoint_every": 100}


def slate_preset(vqvae, steps: int = 2, **model) -> dict:
    body = {"encoder": {"name": "patch", "image_size": 32, "patch_size": 4, "dim": 16},
            "slot_attention": {"slot_dim": 16, "num_slots": 3, "iters": 2, "mlp_hidden": 32, "init": "annealed_gaussian"},
            "decoder": {"width": 16, "blocks": 1, "heads": 2, "position_embedding": True},
            "vqvae": str(vqvae)} | model
    return {"method": "slate", "model": body, "data": DATA,
            "stages": [{"name": "train", "steps": steps, "lr": {"grouping": 1e-3, "decoder": 1e-3}}],
            "log_every": 1, "checkpoint_every": 100, "eval_protocol": "msf"}


@pytest.fixture(scope="module", params=["single", "msf"])
def vqvae_dir(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"vqvae-{request.param}")
    train(build_train_config(vqvae_preset(request.param)), out, progress=False)
    return out / "model"


def test_vqvae_pretraining_lowers_its_loss_and_anneals_its_schedules(tmp_path):
    result = train(build_train_config(vqvae_preset(steps=30)), tmp_path / "run", progress=False)
    import json

    log = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert sum(r["loss"] for r in log[-5:]) < sum(r["loss"] for r in log[:5])
    vqvae = result.model.vqvae
    assert float(vqvae.alpha) == 0.0  # residual annealed away by half of training
    assert float(vqvae.vector_quantizers()[0].gumbel_scale) == 0.0  # learned codebooks: no Gumbel sampling
    projected = train(build_train_config(vqvae_preset(steps=4, msf={"variant": "code"})), tmp_path / "code", progress=False)
    assert float(projected.model.vqvae.vector_quantizers()[0].gumbel_scale) > 1.5  # the code's 1 -> 2


def test_slate_trains_on_a_frozen_vqvae_and_reloads(vqvae_dir, tmp_path):
    frozen = Method.from_pretrained(vqvae_dir).vqvae.state_dict()
    result = train(build_train_config(slate_preset(vqvae_dir)), tmp_path / "slate", progress=False)
    model = result.model
    for key, value in model.vqvae.state_dict().items():
        assert torch.equal(value, frozen[key]), key  # the guidance did not move
    assert float(model.slot_attention.initializer.sigma) < 1.0  # annealed by on_step
    reloaded = ObjectCentricModel.from_pretrained(tmp_path / "slate" / "model")  # without the VQ-VAE directory
    images = torch.rand(2, 3, 32, 32)
    a = reloaded.decompose(images, seed=0)
    assert a.masks.shape == (2, 3, 32, 32)
    torch.testing.assert_close(a.masks, model.decompose(images, seed=0).masks)


def test_slate_refuses_a_missing_or_wrong_vqvae(tmp_path, vqvae_dir):
    with pytest.raises(ConfigError, match="model.vqvae=.*no VQ-VAE checkpoint"):
        build_and_make(slate_preset(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="model.vqvae is not set"):
        build_and_make(slate_preset(None) | {"model": slate_preset(None)["model"] | {"vqvae": None}})
    with pytest.raises(ConfigError, match="model.decoder.input_dim=5 does not fit"):
        build_and_make(slate_preset(vqvae_dir, decoder={"width": 16, "blocks": 1, "heads": 2, "input_dim": 5}))


def test_bad_vqvae_settings_are_named():
    with pytest.raises(ConfigError, match="msf.num_scales=5 does not fit image_size=32"):
        build_and_make(vqvae_preset(msf={"num_scales": 5, "shared_codes": 4, "specific_codes": [4] * 5}))
    with pytest.raises(ConfigError, match="msf.variant='papr'"):
        build_and_make(vqvae_preset(msf={"variant": "papr"}))


def build_and_make(preset: dict):
    from slotlab.train.trainer import build_model

    return build_model(build_train_config(preset))


def slotdiffusion_preset(vqvae, steps: int = 2) -> dict:
    body = {"encoder": {"name": "patch", "image_size": 32, "patch_size": 4, "dim": 16},
            "slot_attention": {"slot_dim": 16, "num_slots": 3, "iters": 2, "mlp_hidden": 32, "init": "annealed_gaussian"},
            "diffusion_decoder": {"latent": "pixel", "cross_attention_dim": 16, "prediction_type": "epsilon",
                                  "beta_schedule": "linear", "unconditional": "null_slots", "condition_dropout": 0.1,
                                  "block_out_channels": [16, 16], "attention_head_dim": 8, "norm_num_groups": 4},
            "vqvae": str(vqvae)}
    return {"method": "slotdiffusion", "model": body, "data": DATA,
            "stages": [{"name": "train", "steps": steps, "lr": {"grouping": 1e-3, "decoder": 1e-3}}],
            "log_every": 1, "checkpoint_every": 100, "eval_protocol": "msf"}


def test_slotdiffusion_trains_on_an_msf_latent_and_reloads(tmp_path):
    train(build_train_config(vqvae_preset(code_dim=4)), tmp_path / "vq", progress=False)
    result = train(build_train_config(slotdiffusion_preset(tmp_path / "vq" / "model")), tmp_path / "sd", progress=False)
    assert result.model.decoder.autoencoder.latent_channels == 4
    reloaded = ObjectCentricModel.from_pretrained(tmp_path / "sd" / "model")
    images = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(reloaded.decompose(images, seed=0).masks, result.model.decompose(images, seed=0).masks)
