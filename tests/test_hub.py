"""Hub ids for pretrained parts: read from a hand-built cache in the hub's layout, offline;
a missing id fails at once with a message, downloads allowed or not."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from slotlab.config import ConfigError
from slotlab.io.hub import downloads_allowed, is_hub_id, resolve_pretrained


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
