"""Hub ids for pretrained parts: read from a hand-built cache in the hub's layout, offline;
a missing id fails at once with a message, downloads allowed or not."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from slotlab.config import ConfigError
from slotlab.io.hub import downloads_allowed, is_hub_id, resolve_pretrained

from tests.conftest import tiny_train_config


def cached_repo(cache, repo_id, files, commit="0123456789abcdef0123456789abcdef01234567"):
    """A repository in the hub cache's layout: refs/main names a snapshot holding ``files``."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    for name, text in files.items():
        (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / name).write_text(text)
    return snapshot


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def test_local_paths_are_not_hub_ids(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models" / "dino").mkdir(parents=True)
    assert not is_hub_id("models/dino") and resolve_pretrained("models/dino", "encoder.path") == Path("models/dino")
    assert is_hub_id("facebook/dinov2-base") and not is_hub_id("/abs/dir") and not is_hub_id("a/b/c")


def test_a_cached_hub_id_is_read_offline_with_downloads_off(offline_cache):
    snapshot = cached_repo(offline_cache, "facebook/dinov2-small", {"config.json": "{}"})
    assert resolve_pretrained("facebook/dinov2-small", "encoder.path") == snapshot
    with downloads_allowed(True):
        assert resolve_pretrained("facebook/dinov2-small", "encoder.path") == snapshot


def test_a_missing_hub_id_fails_at_once_naming_what_to_download_and_where(offline_cache):
    with pytest.raises(ConfigError) as off:
        resolve_pretrained("stabilityai/stable-diffusion-2-1", "diffusion_decoder.pretrained_path")
    message = str(off.value)
    assert "diffusion_decoder.pretrained_path='stabilityai/stable-diffusion-2-1'" in message
    assert "--allow-download" in message and "hf download stabilityai/stable-diffusion-2-1" in message
    assert str(offline_cache / "models--stabilityai--stable-diffusion-2-1") in message
    with downloads_allowed(True), pytest.raises(ConfigError, match="HF_HUB_OFFLINE=1 forbids"):
        resolve_pretrained("stabilityai/stable-diffusion-2-1", "diffusion_decoder.pretrained_path")
    with pytest.raises(ConfigError, match="downloads are off"):  # the block ended: off again
        resolve_pretrained("stabilityai/stable-diffusion-2-1", "diffusion_decoder.pretrained_path")


def test_the_hub_environment_variables_are_honoured(tmp_path):
    """HF_HUB_CACHE and HF_HUB_OFFLINE as a user sets them, in a fresh process."""
    snapshot = cached_repo(tmp_path / "hub", "owner/model", {"config.json": "{}"})
    code = ("from slotlab.io.hub import resolve_pretrained\n"
            "print(resolve_pretrained('owner/model', 'encoder.path'))\n"
            "resolve_pretrained('owner/other', 'encoder.path')\n")
    env = os.environ | {"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == str(snapshot)
    assert "ConfigError: encoder.path='owner/other' is not a local directory" in result.stderr


def test_an_encoder_named_by_hub_id_loads_from_the_cache(offline_cache):
    from slotlab.nn.encoders import build_encoder, encoder_config

    twin = build_encoder(encoder_config(name="dinov2", tiny=True, image_size=56))
    snapshot = cached_repo(offline_cache, "facebook/dinov2-base", {})
    twin.model.save_pretrained(snapshot)
    loaded = build_encoder(encoder_config(name="dinov2", path="facebook/dinov2-base", image_size=56))
    pixels = torch.rand(2, 3, 56, 56)
    assert torch.equal(loaded(pixels), twin(pixels))
    with pytest.raises(ConfigError, match="encoder.path='facebook/dinov2-large'.*--allow-download"):
        build_encoder(encoder_config(name="dinov2", path="facebook/dinov2-large", image_size=56))


def test_stable_diffusion_named_by_hub_id_loads_from_the_cache(offline_cache):
    from slotlab.datagen.backends.sd import tiny_engine_sd
    from slotlab.diffusion.sd import load_sd_components
    from slotlab.diffusion.config import DiffusionDecoderConfig
    from slotlab.diffusion.decoder import SlotDiffusionDecoder
    from tests.test_diffusion_decoder import DIM, RES, write_tiny_sd_directory

    snapshot = cached_repo(offline_cache, "stabilityai/stable-diffusion-2-1-base", {})
    tiny_engine_sd(seed=0).save(snapshot)
    assert load_sd_components("stabilityai/stable-diffusion-2-1-base").unet is not None
    write_tiny_sd_directory(cached_repo(offline_cache, "stabilityai/stable-diffusion-2-1", {}))
    config = DiffusionDecoderConfig(pretrained_path="stabilityai/stable-diffusion-2-1", resolution=RES,
                                    cross_attention_dim=DIM)
    assert SlotDiffusionDecoder.from_config(config).prediction_type == "v_prediction"
    with pytest.raises(ConfigError, match="diffusion_decoder.pretrained_path='stabilityai/sd-absent'"):
        SlotDiffusionDecoder.from_config(DiffusionDecoderConfig(pretrained_path="stabilityai/sd-absent"))


def test_the_cli_flag_and_the_config_flag_allow_downloads(offline_cache, tmp_path, capsys):
    from slotlab.cli import main
    from slotlab.train.config import build_train_config
    from slotlab.train.trainer import build_model

    preset = tiny_train_config() | {"allow_download": True}
    preset["model"]["encoder"] = {"name": "dinov2", "path": "facebook/dinov2-absent", "image_size": 56}
    with pytest.raises(ConfigError, match="HF_HUB_OFFLINE=1 forbids"):  # the config allowed it; offline forbids
        build_model(build_train_config(preset))
    assert main(["--allow-download", "train", "--preset", "dinosaur-tiny", "--out", str(tmp_path / "r"),
                 "--set", "model.encoder={name: dinov2, path: facebook/dinov2-absent, image_size: 56}",
                 "--set", "inputs={}"]) == 2
    assert "HF_HUB_OFFLINE=1 forbids" in capsys.readouterr().err
