"""Every VQ-VAE, SLATE and SlotDiffusion preset builds with tiny twins and trains a few steps;
the OCL presets read a tiny twin of the VQ-VAE preset they name."""

from __future__ import annotations

import re

import pytest

from slotlab.config import PRESET_DIR, load_preset
from slotlab.train.config import build_train_config
from slotlab.train.trainer import train

PRESETS = sorted(p.stem for p in PRESET_DIR.glob("*.yaml") if p.stem.split("-")[0] in ("vqvae", "slate", "slotdiffusion"))
SCENES = ["data.train=scenes?split=train&size=8&resolution=32", "data.val=scenes?split=val&size=4&resolution=32",
          "data.batch_size=2", "data.num_workers=0", "stages.0.steps=2", "stages.0.warmup_steps=1",
          "log_every=1", "checkpoint_every=2", "mixed_precision=fp32"]


def vqvae_overrides(raw: dict) -> list[str]:
    extra = ["model.image_size=32", "model.width=8"]
    return extra + (["model.code_dim=8"] if raw["code_dim"] > 8 else [])


def ocl_overrides(raw: dict, vqvae_dir: str) -> list[str]:
    extra = [f"model.vqvae={vqvae_dir}", "model.slot_attention.slot_dim=16", "model.slot_attention.mlp_hidden=16"]
    if raw["encoder"]["name"] == "dino":  # the pretrained DINO swapped for a tiny random twin
        extra += ["model.encoder.path=null", "model.encoder.tiny=true", "model.encoder.image_size=32",
                  "model.encoder.patch_size=8"]
    else:
        extra += ["model.encoder.image_size=32", "model.encoder.dim=16"]
    if "decoder" in raw:
        extra += ["model.decoder.width=16", "model.decoder.heads=2", "model.decoder.blocks=1"]
    if "diffusion_decoder" in raw:
        extra += ["model.diffusion_decoder.cross_attention_dim=16", "model.diffusion_decoder.block_out_channels=[8, 16]",
                  "model.diffusion_decoder.cross_attention_levels=[false, true]", "model.diffusion_decoder.attention_head_dim=8",
                  "model.diffusion_decoder.norm_num_groups=4", "model.diffusion_decoder.layers_per_block=1"]
    return extra


@pytest.fixture(scope="module")
def vqvae_twin(tmp_path_factory):
    """Tiny twins of VQ-VAE presets, trained on demand, by preset name."""
    root, done = tmp_path_factory.mktemp("vqvae"), {}

    def get(preset: str) -> str:
        if preset not in done:
            raw = load_preset(preset)["model"]
            config = build_train_config(load_preset(preset), SCENES + vqvae_overrides(raw))
            done[preset] = str(train(config, root / preset, progress=False).model_dir)
        return done[preset]

    return get


def test_every_paper_setting_has_its_presets():
    for data in ("clevrtex", "coco", "voc"):
        for method in ("slate", "slotdiffusion"):
            assert {f"{method}-{data}", f"{method}-msf-{data}"} <= set(PRESETS)
        assert {f"vqvae-{data}", f"vqvae-msf-{data}", f"vqvae-c4-{data}", f"vqvae-msf-c4-{data}"} <= set(PRESETS)
    ablations = {"no-inter", "no-intra", "no-fusion", "shared-specific", "2scales", "4scales"}
    assert {f"vqvae-msf-clevrtex-{a}" for a in ablations} <= set(PRESETS)


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_trains_a_few_steps(preset, vqvae_twin, tmp_path):
    raw = load_preset(preset)
    if raw["method"] == "vqvae":
        overrides = SCENES + vqvae_overrides(raw["model"])
    else:
        guidance = re.search(r"--preset (\S+)", raw["inputs"]["model.vqvae"]["make"]).group(1)
        overrides = SCENES + ocl_overrides(raw["model"], vqvae_twin(guidance))
    result = train(build_train_config(raw, overrides), tmp_path / "run", progress=False)
    assert result.steps == 2 and (result.model_dir / "model.safetensors").is_file()
