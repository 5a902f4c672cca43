"""Tests of slotlab.diffusion (decoder, objective, sampling, Stable Diffusion parts) and
slotlab.nn.autoencoders (offline, tiny random parts)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from slotlab.nn.autoencoders import KLAutoencoder, PixelSpace, TinyAutoencoder
from slotlab.diffusion.config import DiffusionDecoderConfig, cpu_config
from slotlab.diffusion.decoder import SlotDiffusionDecoder
from slotlab.diffusion.objective import diffusion_target, forward_diffuse
from slotlab.diffusion.sampling import classifier_free_guidance
from slotlab.diffusion.sd import SDComponents, encode_empty_prompt, tiny_clip_tokenizer, tiny_text_encoder
from tests.shared_dir import ASSETS, FIXTURES

TAEF2_DIR = ASSETS / "taef2"
FIXTURE_PHOTOS = sorted((FIXTURES / "coco_instances_sample" / "images").glob("*.jpg"))

DIM = 32  # slot width of the tiny configurations
RES = 32


def tiny_config(**overrides) -> DiffusionDecoderConfig:
    settings = dict(tiny=True, resolution=RES, cross_attention_dim=DIM, attention_head_dim=16)
    settings.update(overrides)
    return DiffusionDecoderConfig(**settings)


def tiny_decoder(seed: int = 0, **overrides) -> SlotDiffusionDecoder:
    torch.manual_seed(seed)
    return SlotDiffusionDecoder.from_config(tiny_config(**overrides))


def images(batch: int = 2, size: int = RES, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def slots(batch: int = 2, num_slots: int = 7, dim: int = DIM, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, num_slots, dim, generator=torch.Generator().manual_seed(seed))


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- diffusion maths


def test_v_target_matches_direct_formula_and_diffusers():
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    x0, eps = torch.randn(4, 4, 8, 8), torch.randn(4, 4, 8, 8)
    t = torch.tensor([0, 250, 700, 999])
    a = scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    v = diffusion_target(x0, eps, scheduler.alphas_cumprod[t], "v_prediction")
    torch.testing.assert_close(v, a.sqrt() * eps - (1 - a).sqrt() * x0)
    torch.testing.assert_close(v, scheduler.get_velocity(x0, eps, t))
    # v determines x0 from x_t: x0 = sqrt(a) x_t - sqrt(1 - a) v.
    x_t = forward_diffuse(x0, eps, scheduler.alphas_cumprod[t])
    torch.testing.assert_close(a.sqrt() * x_t - (1 - a).sqrt() * v, x0, atol=1e-5, rtol=1e-5)


def test_forward_diffuse_matches_diffusers_add_noise_and_other_targets():
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler()
    x0, eps, t = torch.randn(3, 3, 4, 4), torch.randn(3, 3, 4, 4), torch.tensor([5, 500, 990])
    alpha_bar = scheduler.alphas_cumprod[t]
    torch.testing.assert_close(forward_diffuse(x0, eps, alpha_bar), scheduler.add_noise(x0, eps, t))
    assert torch.equal(diffusion_target(x0, eps, alpha_bar, "epsilon"), eps)
    assert torch.equal(diffusion_target(x0, eps, alpha_bar, "sample"), x0)
    with pytest.raises(ValueError, match="prediction_type"):
        diffusion_target(x0, eps, alpha_bar, "flow")


def test_classifier_free_guidance_formula():
    u, c = torch.zeros(2), torch.ones(2)
    assert torch.equal(classifier_free_guidance(u, c, 1.0), c)
    assert torch.equal(classifier_free_guidance(u, c, 0.0), u)
    assert torch.equal(classifier_free_guidance(u, c, 3.0), torch.full((2,), 3.0))


# ----------------------------------------------------------------------------- loss


class RecordingUNet(nn.Module):
    """Stands in for the UNet: records its inputs and predicts zeros."""

    def __init__(self, channels: int, dim: int, out_channels: int = 3) -> None:
        super().__init__()
        self.config = SimpleNamespace(cross_attention_dim=dim, in_channels=channels, block_out_channels=(8, 8))
        self.out_channels = out_channels
        self.weight = nn.Parameter(torch.zeros(()))
        self.calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def forward(self, sample, timestep, encoder_hidden_states):
        self.calls.append((sample, timestep, encoder_hidden_states))
        return SimpleNamespace(sample=torch.zeros_like(sample[:, : self.out_channels]) * self.weight)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_loss_regresses_the_target_of_the_prediction_type(prediction_type):
    config = tiny_config(latent="pixel", unconditional="null_slots", condition_dropout=0.1,
                         prediction_type=prediction_type)  # fmt: skip
    unet = RecordingUNet(channels=3, dim=DIM)
    decoder = SlotDiffusionDecoder.from_config(config, unet=unet).eval()  # eval: no condition dropout
    x, s = images(), slots()
    loss = decoder.loss(x, s, generator=seeded(0))
    noisy, t, context = unet.calls[-1]
    assert torch.equal(context, s)
    x0 = x * 2 - 1  # pixel space
    a = decoder.alphas_cumprod[t].view(-1, 1, 1, 1)
    eps = (noisy - a.sqrt() * x0) / (1 - a).sqrt()
    target = {"epsilon": eps, "v_prediction": a.sqrt() * eps - (1 - a).sqrt() * x0, "sample": x0}[prediction_type]
    # The UNet predicts zeros, so the loss is the mean square of the target.
    torch.testing.assert_close(loss, target.pow(2).mean(), atol=1e-5, rtol=1e-4)


def test_coordinate_channels_reach_the_unet():
    config = tiny_config(latent="pixel", coordinate_channels=True)
    unet = RecordingUNet(channels=5, dim=DIM)
    decoder = SlotDiffusionDecoder.from_config(config, unet=unet)
    decoder.loss(images(), slots(), generator=seeded(0))
    unet_input = unet.calls[-1][0]
    assert unet_input.shape == (2, 5, RES, RES)
    x, y = unet_input[0, 3], unet_input[0, 4]
    assert torch.equal(x[0], x[-1]) and x[0, 0] == -1 and x[0, -1] == 1  # varies along columns only
    assert torch.equal(y[:, 0], y[:, -1]) and y[0, 0] == -1 and y[-1, 0] == 1  # along rows only
    with pytest.raises(ValueError, match="coordinate channels"):
        SlotDiffusionDecoder.from_config(config, unet=RecordingUNet(channels=3, dim=DIM))


def test_loss_is_finite_and_trains_unet_and_slots_but_not_the_vae():
    decoder = tiny_decoder().train()
    assert isinstance(decoder.autoencoder, KLAutoencoder)
    s = slots().requires_grad_(True)
    loss = decoder.loss(images(), s, generator=seeded(0))
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    unet_grads = [p.grad for p in decoder.unet.parameters()]
    assert all(g is not None for g in unet_grads) and any(g.abs().sum() > 0 for g in unet_grads)
    assert s.grad is not None and s.grad.abs().sum() > 0  # slots learn through the decoder
    assert all(not p.requires_grad and p.grad is None for p in decoder.autoencoder.parameters())
    trainable = {id(p) for p in decoder.trainable_parameters()}
    assert trainable == {id(p) for p in decoder.unet.parameters()}
    assert not decoder.autoencoder.training  # stays in eval mode under decoder.train()


def test_loss_is_deterministic_given_a_generator():
    decoder = tiny_decoder()
    x, s = images(), slots()
    first = decoder.loss(x, s, generator=seeded(3))
    assert torch.equal(first, decoder.loss(x, s, generator=seeded(3)))
    assert not torch.equal(first, decoder.loss(x, s, generator=seeded(4)))


def test_loss_rejects_bad_inputs():
    decoder = tiny_decoder()
    with pytest.raises(ValueError, match="cross_attention_dim"):
        decoder.loss(images(), slots(dim=DIM + 1))
    with pytest.raises(ValueError, match="resize"):
        decoder.loss(images(size=RES * 2), slots())
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        decoder.loss(images() * 2 - 1, slots())
    with pytest.raises(ValueError, match="batch"):
        decoder.loss(images(batch=3), slots(batch=2))


# ----------------------------------------------------------------------------- conditioning


def test_empty_prompt_cut_to_k_equals_encoding_k_tokens():
    """CLIP is causal: the first K rows of the 77-token empty prompt = the K-token empty prompt."""
    torch.manual_seed(0)
    tokenizer = tiny_clip_tokenizer(())
    text_encoder = tiny_text_encoder(DIM, len(tokenizer))
    full = encode_empty_prompt(text_encoder, tokenizer)
    assert full.shape == (77, DIM)
    input_ids = tokenizer("", padding="max_length", max_length=77, return_tensors="pt").input_ids
    for k in (5, 7):
        with torch.no_grad():
            short = text_encoder(input_ids[:, :k]).last_hidden_state[0]
        torch.testing.assert_close(short, full[:k], atol=1e-5, rtol=1e-5)


def test_unconditional_tokens_of_both_branches():
    empty = tiny_decoder()
    tokens = empty.unconditional_tokens(batch_size=3, num_slots=5)
    assert tokens.shape == (3, 5, DIM)
    assert torch.equal(tokens[1], empty.empty_prompt_embedding[:5])
    with pytest.raises(ValueError, match="exceed"):
        empty.unconditional_tokens(1, 78)

    null = tiny_decoder(unconditional="null_slots")
    tokens = null.unconditional_tokens(batch_size=2, num_slots=6)
    assert tokens.shape == (2, 6, DIM) and torch.equal(tokens, null.null_slot.expand(2, 6, DIM))
    assert any(p is null.null_slot for p in null.trainable_parameters())


def test_condition_dropout_replaces_whole_samples_in_training_only():
    decoder = tiny_decoder(unconditional="null_slots", condition_dropout=0.5)
    s = slots(batch=64)
    decoder.train()
    mixed = decoder.drop_conditions(s, generator=seeded(0))
    dropped = (mixed == decoder.null_slot.expand_as(s)).all(dim=(1, 2))
    kept = (mixed == s).all(dim=(1, 2))
    assert torch.all(dropped ^ kept) and 10 < int(dropped.sum()) < 54  # whole samples, p = 0.5
    decoder.eval()
    assert torch.equal(decoder.drop_conditions(s, generator=seeded(0)), s)


def test_null_slots_need_condition_dropout():
    with pytest.raises(ValueError, match="condition_dropout"):
        tiny_config(unconditional="null_slots", condition_dropout=0.0)
    assert tiny_config(unconditional="null_slots").effective_condition_dropout == 0.1
    assert tiny_config().effective_condition_dropout == 0.0


def test_empty_prompt_without_text_encoder_needs_an_embedding():
    config = DiffusionDecoderConfig(latent="pixel", resolution=RES, cross_attention_dim=DIM, attention_head_dim=16)
    with pytest.raises(ValueError, match="null_slots"):
        SlotDiffusionDecoder.from_config(config)
    embedding = torch.randn(77, DIM)
    decoder = SlotDiffusionDecoder.from_config(config, unconditional_embedding=embedding)
    assert torch.equal(decoder.empty_prompt_embedding, embedding)


# ----------------------------------------------------------------------------- sampling


def test_sample_shape_range_and_determinism():
    decoder = tiny_decoder().eval()
    s = slots(batch=3)
    first = decoder.sample(s, num_steps=4, generator=seeded(0))
    assert first.shape == (3, 3, RES, RES)
    assert first.min() >= 0 and first.max() <= 1
    assert torch.equal(first, decoder.sample(s, num_steps=4, generator=seeded(0)))
    assert not torch.equal(first, decoder.sample(s, num_steps=4, generator=seeded(1)))
    assert not torch.equal(first, decoder.sample(slots(batch=3, seed=9), num_steps=4, generator=seeded(0)))


@pytest.mark.parametrize("unconditional", ["empty_prompt", "null_slots"])
def test_guidance_runs_and_changes_the_result(unconditional):
    decoder = tiny_decoder(unconditional=unconditional).eval()
    s = slots()
    plain = decoder.sample(s, num_steps=3, guidance_scale=1.0, generator=seeded(0))
    guided = decoder.sample(s, num_steps=3, guidance_scale=3.0, generator=seeded(0))
    assert guided.shape == plain.shape and not torch.allclose(guided, plain)


@pytest.mark.parametrize("num_slots", [5, 7])
def test_number_of_slots_can_vary(num_slots):
    decoder = tiny_decoder().eval()
    s = slots(num_slots=num_slots)
    assert torch.isfinite(decoder.loss(images(), s, generator=seeded(0)))
    assert decoder.sample(s, num_steps=2, guidance_scale=2.0, generator=seeded(0)).shape == (2, 3, RES, RES)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_other_samplers_run(sampler):
    decoder = tiny_decoder(latent="pixel").eval()
    out = decoder.sample(slots(batch=1), num_steps=3, generator=seeded(0), scheduler=sampler)
    assert out.shape == (1, 3, RES, RES)


def test_unknown_sampler_is_rejected():
    with pytest.raises(ValueError, match="dpmsolver"):
        tiny_decoder().sample(slots(batch=1), num_steps=2, scheduler="euler")


# ----------------------------------------------------------------------------- pretrained dirs


def write_tiny_sd_directory(root: Path, with_text: bool = True, dim: int = DIM) -> None:
    """A Stable-Diffusion-layout directory of tiny random parts (cross-attention width ``dim``)."""
    from diffusers import DDPMScheduler

    torch.manual_seed(0)
    decoder = SlotDiffusionDecoder.from_config(tiny_config(cross_attention_dim=dim))
    parts = SDComponents(unet=decoder.unet, vae=decoder.autoencoder.vae)
    parts.scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                    prediction_type="v_prediction", clip_sample=False)  # fmt: skip
    if with_text:
        parts.tokenizer = tiny_clip_tokenizer(())
        parts.text_encoder = tiny_text_encoder(dim, len(parts.tokenizer))
    parts.save(root)


def test_pretrained_directory_loads_offline_with_empty_prompt(tmp_path):
    from transformers import CLIPTextModel, CLIPTokenizer

    write_tiny_sd_directory(tmp_path)
    config = DiffusionDecoderConfig(pretrained_path=str(tmp_path), resolution=RES, cross_attention_dim=DIM)
    decoder = SlotDiffusionDecoder.from_config(config)
    assert decoder.prediction_type == "v_prediction"  # the scheduler's own
    text_encoder = CLIPTextModel.from_pretrained(tmp_path / "text_encoder")
    tokenizer = CLIPTokenizer.from_pretrained(tmp_path / "tokenizer")
    torch.testing.assert_close(decoder.empty_prompt_embedding, encode_empty_prompt(text_encoder, tokenizer))
    assert torch.isfinite(decoder.loss(images(), slots(), generator=seeded(0)))
    overridden = DiffusionDecoderConfig(pretrained_path=str(tmp_path), resolution=RES, cross_attention_dim=DIM,
                                        prediction_type="epsilon", unconditional="null_slots")  # fmt: skip
    assert SlotDiffusionDecoder.from_config(overridden).prediction_type == "epsilon"


def test_missing_pretrained_parts_give_an_offline_hint(tmp_path):
    with pytest.raises(FileNotFoundError, match="snapshot_download"):
        SlotDiffusionDecoder.from_config(DiffusionDecoderConfig(pretrained_path=str(tmp_path / "absent")))
    write_tiny_sd_directory(tmp_path, with_text=False)
    config = DiffusionDecoderConfig(pretrained_path=str(tmp_path), resolution=RES, cross_attention_dim=DIM)
    with pytest.raises(FileNotFoundError, match="text_encoder/, tokenizer/"):
        SlotDiffusionDecoder.from_config(config)


def test_cross_attention_width_must_match_the_unet(tmp_path):
    write_tiny_sd_directory(tmp_path, with_text=False)
    config = DiffusionDecoderConfig(pretrained_path=str(tmp_path), resolution=RES, unconditional="null_slots")
    with pytest.raises(ValueError, match="cross_attention_dim"):
        SlotDiffusionDecoder.from_config(config)  # default 1024 vs the tiny UNet's 32


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(latent="latent"), "latent"),
        (dict(unconditional="zeros"), "unconditional"),
        (dict(prediction_type="eps"), "prediction_type"),
        (dict(cross_attention_levels=(True,)), "cross_attention_levels"),
        (dict(block_out_channels=(24, 64)), "divisible"),
        (dict(pretrained_path="sd", tiny=False, block_out_channels=(64, 64)), "block_out_channels"),
        (dict(pretrained_path="sd", tiny=False, latent="pixel"), "latent"),
        (dict(pretrained_path="sd", tiny=True), "tiny"),
        (dict(latent="pixel", taesd_path="taef2"), "taesd_path"),
        (dict(condition_dropout=1.0), "condition_dropout"),
    ],
)
def test_config_errors_name_the_field(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**overrides)


def test_resolution_must_fit_the_downsamplings():
    with pytest.raises(ValueError, match="multiple of"):
        tiny_decoder(latent="taesd", resolution=24)


def test_vae_space_without_weights_explains_the_options():
    with pytest.raises(ValueError, match="tiny=True"):
        SlotDiffusionDecoder.from_config(DiffusionDecoderConfig(unconditional="null_slots"))


# ----------------------------------------------------------------------------- autoencoders


def test_pixel_space_round_trip():
    x = images()
    space = PixelSpace()
    assert space.encode(x).min() >= -1 and torch.allclose(space.decode(space.encode(x)), x)


def test_tiny_autoencoder_rebuilds_from_weight_files(tmp_path):
    torch.manual_seed(0)
    twin = TinyAutoencoder.random(latent_channels=32, global_norm=True, width=16)
    torch.save(twin.encoder.state_dict(), tmp_path / "tae_encoder.pth")
    torch.save(twin.decoder.state_dict(), tmp_path / "tae_decoder.pth")
    rebuilt = TinyAutoencoder.from_files(tmp_path)
    assert rebuilt.latent_channels == 32 and rebuilt.encoder[11].pool is not None
    x = images(batch=1, size=32)
    torch.testing.assert_close(rebuilt.encode_raw(x), twin.encode_raw(x))
    assert rebuilt.encode(x).shape == (1, 32, 4, 4)
    assert not any(p.requires_grad for p in rebuilt.parameters())


def test_tiny_autoencoder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        TinyAutoencoder.from_files(tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="_encoder.pth"):
        TinyAutoencoder.from_files(tmp_path)
    twin = TinyAutoencoder.random(latent_channels=4, width=16)
    torch.save(twin.encoder.state_dict(), tmp_path / "x_encoder.pth")
    torch.save(twin.decoder.state_dict(), tmp_path / "x_decoder.pth")
    with pytest.raises(ValueError, match="latent_scale"):
        TinyAutoencoder.from_files(tmp_path)
    assert TinyAutoencoder.from_files(tmp_path, latent_scale=2.0).latent_scale == 2.0


def load_photo(path: Path, size: int) -> torch.Tensor:
    image = Image.open(path).convert("RGB")
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    image = image.crop((left, top, left + side, top + side)).resize((size, size), Image.BICUBIC)
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div(255).unsqueeze(0)


@pytest.mark.skipif(not (TAEF2_DIR.is_dir() and FIXTURE_PHOTOS), reason="FLUX.2 tiny autoencoder weights or fixture photos absent")
def test_flux2_tiny_autoencoder_reconstructs_real_photos():
    autoencoder = TinyAutoencoder.from_files(TAEF2_DIR)
    assert autoencoder.latent_channels == 32
    photo = load_photo(FIXTURE_PHOTOS[0], 256)
    latents = autoencoder.encode(photo)
    assert latents.shape == (1, 32, 32, 32)
    assert 0.5 < float(latents.std()) < 2.0  # scaled to about unit spread
    psnr = -10 * torch.log10(torch.mean((autoencoder.decode(latents) - photo) ** 2))
    assert psnr > 20.0  # a wrongly rebuilt network decodes noise (< 12 dB)


@pytest.mark.skipif(not TAEF2_DIR.is_dir(), reason="FLUX.2 tiny autoencoder weights absent")
def test_decoder_in_flux2_tiny_latent_space():
    torch.manual_seed(0)
    config = cpu_config(cross_attention_dim=DIM, taesd_path=str(TAEF2_DIR))
    decoder = SlotDiffusionDecoder.from_config(config)
    assert decoder.latent_shape == (32, 8, 8)
    assert torch.isfinite(decoder.loss(images(size=64), slots(), generator=seeded(0)))
    assert decoder.eval().sample(slots(batch=1), num_steps=2, generator=seeded(0)).shape == (1, 3, 64, 64)


# ----------------------------------------------------------------------------- learning


def held_out_loss(decoder: SlotDiffusionDecoder, x: torch.Tensor, s: torch.Tensor) -> float:
    """Mean loss over fixed noise draws, so two evaluations differ only by the weights."""
    decoder.eval()
    with torch.no_grad():
        return float(torch.stack([decoder.loss(x, s, generator=seeded(100 + i)) for i in range(8)]).mean())


@pytest.mark.slow  # about 30 s on a busy 2-core CPU
def test_cpu_config_fits_one_small_batch():
    from slotlab.data.scenes import ScenesConfig, ScenesDataset

    torch.manual_seed(0)
    config = cpu_config(cross_attention_dim=DIM)
    assert config.resolution == 32
    decoder = SlotDiffusionDecoder.from_config(config)
    scenes = ScenesDataset("train", size=4, config=ScenesConfig(resolution=32))
    x = torch.stack([scenes[i].image for i in range(4)])
    s = slots(batch=4)
    before = held_out_loss(decoder, x, s)
    optimiser = torch.optim.AdamW(decoder.trainable_parameters(), lr=2e-3)
    generator = seeded(0)
    decoder.train()
    for _ in range(100):
        optimiser.zero_grad()
        decoder.loss(x, s, generator=generator).backward()
        optimiser.step()
    after = held_out_loss(decoder, x, s)
    assert after < 0.5 * before, (before, after)
