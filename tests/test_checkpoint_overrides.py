"""A checkpoint whose frozen encoder lives elsewhere on this machine loads with an override;
overrides reach the CLI commands that load models."""

from __future__ import annotations

import argparse
import shutil

import pytest
import torch

from slotlab.config import ConfigError, from_dict
from slotlab.io.checkpoints import add_checkpoint_arguments, load_model_from_args
from slotlab.methods import ObjectCentricModel, get_method
from slotlab.methods.dinosaur import DinosaurConfig
from slotlab.nn.encoders import EncoderConfig, build_encoder
from tests.conftest import tiny_train_config


def dinosaur_on_local_dinov2(encoder_dir):
    build_encoder(EncoderConfig(name="dinov2", tiny=True, image_size=56)).model.save_pretrained(encoder_dir)
    model = tiny_train_config()["model"]
    model["encoder"] = {"name": "dinov2", "path": str(encoder_dir), "image_size": 56}
    torch.manual_seed(0)
    return get_method("dinosaur")(from_dict(DinosaurConfig, model))


def test_a_moved_encoder_directory_is_named_and_overridden(tmp_path):
    model = dinosaur_on_local_dinov2(tmp_path / "dinov2")
    model.save_pretrained(tmp_path / "ckpt")
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
