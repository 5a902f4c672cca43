"""Checkpoints rebuild their pretrained parts (ViT, CIFAR ResNet, Stable Diffusion UNet and VAE,
TAESD) from stored architectures, without the original files; older checkpoints that lack
them load with an override naming the files' new place; overrides reach the CLI commands."""

from __future__ import annotations

import argparse
import json
import shutil

import pytest
import torch

from slotlab.config import ConfigError, from_dict
from slotlab.io.checkpoints import add_checkpoint_arguments, load_model_from_args
from slotlab.methods import ObjectCentricModel, get_method
from slotlab.methods.dinosaur import DinosaurConfig
from slotlab.nn.encoders import build_encoder, encoder_config
from tests.conftest import tiny_train_config
from tests.test_diffusion_decoder import DIM, RES, write_tiny_sd_directory


def dinosaur_on_local_dinov2(encoder_dir):
    build_encoder(encoder_config(name="dinov2", tiny=True, image_size=56)).model.save_pretrained(encoder_dir)
    model = tiny_train_config()["model"]
    model["encoder"] = {"name": "dinov2", "path": str(encoder_dir), "image_size": 56}
    torch.manual_seed(0)
    return get_method("dinosaur")(from_dict(DinosaurConfig, model))


def test_a_checkpoint_loads_without_the_encoder_directory(tmp_path):
    model = dinosaur_on_local_dinov2(tmp_path / "dinov2")
    model.save_pretrained(tmp_path / "ckpt")
    shutil.rmtree(tmp_path / "dinov2")
    loaded = ObjectCentricModel.from_pretrained(tmp_path / "ckpt")
    images = torch.rand(2, 3, 56, 56)
    torch.testing.assert_close(loaded.decompose(images, seed=0).masks, model.decompose(images, seed=0).masks)


def test_a_checkpoint_without_architectures_names_the_moved_directory(tmp_path):
    model = dinosaur_on_local_dinov2(tmp_path / "dinov2")
    model.save_pretrained(tmp_path / "ckpt")
    config_path = tmp_path / "ckpt" / "config.json"
    stored = json.loads(config_path.read_text())
    del stored["architectures"]  # as written before checkpoints stored them
    config_path.write_text(json.dumps(stored))
    shutil.move(tmp_path / "dinov2", tmp_path / "elsewhere")
    with pytest.raises(FileNotFoundError, match=r"(?s)encoder.path=.*overrides=\['encoder.path=DIR'\]"):
        ObjectCentricModel.from_pretrained(tmp_path / "ckpt")
    loaded = ObjectCentricModel.from_pretrained(tmp_path / "ckpt", overrides=[f"encoder.path={tmp_path / 'elsewhere'}"])
    images = torch.rand(2, 3, 56, 56)
    torch.testing.assert_close(loaded.decompose(images, seed=0).masks, model.decompose(images, seed=0).masks)


def test_cli_arguments_override_the_stored_config(tmp_path):
    torch.manual_seed(0)
    get_method("dinosaur")(from_dict(DinosaurConfig, tiny_train_config()["model"])).save_pretrained(tmp_path / "ckpt")
    parser = argparse.ArgumentParser()
    add_checkpoint_arguments(parser)
    args = parser.parse_args(["--checkpoint", str(tmp_path / "ckpt"), "--set", "slot_attention.iters=5"])
    assert load_model_from_args(args).slot_attention.config.iters == 5
    args = parser.parse_args(["--checkpoint", str(tmp_path / "ckpt"), "--set", "slot_attention.slot_dim=8"])
    with pytest.raises(ConfigError, match="does not fit"):  # shapes change: the weights cannot load
        load_model_from_args(args)


def test_cifar_resnet_encoder_rebuilds_without_its_weight_file(tmp_path):
    network = build_encoder(encoder_config(name="cifar_resnet", tiny=True, image_size=32)).network
    torch.save({"state_dict": network.state_dict()}, tmp_path / "resnet.th")
    model = tiny_train_config()["model"]
    model["encoder"] = {"name": "cifar_resnet", "path": str(tmp_path / "resnet.th"), "image_size": 32, "layer": 2}
    torch.manual_seed(0)
    dinosaur = get_method("dinosaur")(from_dict(DinosaurConfig, model))
    dinosaur.save_pretrained(tmp_path / "ckpt")
    (tmp_path / "resnet.th").unlink()
    loaded = ObjectCentricModel.from_pretrained(tmp_path / "ckpt")
    images = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(loaded.encoder(images), dinosaur.encoder(images))


def test_glass_with_stable_diffusion_and_dinov2_directories_rebuilds_without_them(tmp_path):
    from slotlab.methods.glass import GlassConfig

    build_encoder(encoder_config(name="dinov2", tiny=True, image_size=56)).model.save_pretrained(tmp_path / "dinov2")
    write_tiny_sd_directory(tmp_path / "sd")
    config = {
        "encoder": {"name": "dinov2", "path": str(tmp_path / "dinov2"), "image_size": 56},
        "slot_attention": {"slot_dim": 32, "num_slots": 3, "iters": 2, "mlp_hidden": 32},
        "instance_decoder": {"hidden_dim": 32},
        "diffusion_decoder": {"pretrained_path": str(tmp_path / "sd"), "resolution": RES, "cross_attention_dim": DIM},
    }
    torch.manual_seed(0)
    glass = get_method("glass")(from_dict(GlassConfig, config))
    glass.save_pretrained(tmp_path / "ckpt")
    shutil.rmtree(tmp_path / "dinov2")
    shutil.rmtree(tmp_path / "sd")
    loaded = ObjectCentricModel.from_pretrained(tmp_path / "ckpt")
    images = torch.rand(2, 3, 56, 56)
    torch.testing.assert_close(loaded.decompose(images, seed=0).masks, glass.decompose(images, seed=0).masks)
    original, rebuilt = glass.diffusion_decoder, loaded.diffusion_decoder
    torch.testing.assert_close(rebuilt.empty_prompt_embedding, original.empty_prompt_embedding)
    assert rebuilt.prediction_type == original.prediction_type == "v_prediction"
    assert rebuilt.noise_scheduler.config.beta_schedule == "scaled_linear"
    slots = glass.decompose(images, seed=0).slots
    noisy, steps = torch.randn(2, 4, RES // 8, RES // 8), torch.tensor([10, 500])
    torch.testing.assert_close(rebuilt.denoise(noisy, steps, slots), original.denoise(noisy, steps, slots))
    torch.testing.assert_close(rebuilt.autoencoder.decode(noisy), original.autoencoder.decode(noisy))


def test_taesd_autoencoder_rebuilds_without_its_files(tmp_path):
    from slotlab.nn.autoencoders import TinyAutoencoder
    from slotlab.nn.diffusion_decoder import DiffusionDecoderConfig, SlotDiffusionDecoder

    torch.manual_seed(0)
    files = TinyAutoencoder.random(latent_channels=4, width=16)
    torch.save(files.encoder.state_dict(), tmp_path / "tiny_encoder.pth")
    torch.save(files.decoder.state_dict(), tmp_path / "tiny_decoder.pth")
    config = DiffusionDecoderConfig(
        latent="taesd", taesd_path=str(tmp_path), taesd_latent_scale=0.7, resolution=64, cross_attention_dim=16,
        unconditional="null_slots", block_out_channels=(16, 32), norm_num_groups=8, attention_head_dim=8,
    )
    decoder = SlotDiffusionDecoder.from_config(config)
    architecture = json.loads(json.dumps(decoder.architecture()))  # as stored in config.json
    rebuilt = SlotDiffusionDecoder.from_architecture(config, architecture)
    rebuilt.load_state_dict(decoder.state_dict())
    assert rebuilt.autoencoder.latent_scale == 0.7
    images = torch.rand(2, 3, 64, 64)
    torch.testing.assert_close(rebuilt.autoencoder.encode(images), decoder.autoencoder.encode(images))


def test_encoders_built_from_their_config_take_no_architecture():
    with pytest.raises(ValueError, match="no stored architecture"):
        build_encoder(encoder_config(name="cnn", image_size=32), {"config": {}})
    # the patch encoder stores one only for its semantic network
    with pytest.raises(ValueError, match="semantic network"):
        build_encoder(encoder_config(name="patch", image_size=32), {"config": {}})
