"""Pretrained parts named by a local directory or a Hugging Face hub id.

A hub id (``facebook/dinov2-base``) is read from the hub's usual cache when it is there,
online or not. It is fetched into that cache only where downloads are allowed
(``--allow-download`` or ``allow_download: true``, off by default, applied with
:func:`downloads_allowed`) and the machine is not told to stay offline (``HF_HUB_OFFLINE=1``).
Otherwise a missing id fails at once, with a message naming what to download and where.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from slotlab.config import ConfigError

#: "owner/name", as the hub spells repository ids.
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

#: What a download fetches (allow_patterns): a transformers model with its processor files, and
#: Stable Diffusion in diffusers layout without its other weight formats.
TRANSFORMERS_FILES = ["*.json", "*.safetensors", "*.txt", "*.model"]
SD_FILES = ["model_index.json", "*/*.json", "tokenizer/*", "unet/diffusion_pytorch_model.safetensors",
            "vae/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"]

_downloads = ContextVar("slotlab_hub_downloads", default=False)


@contextmanager
def downloads_allowed(allowed: bool):
    """Within this block, hub ids missing from the cache are downloaded (if ``allowed``)."""
    token = _downloads.set(bool(allowed))
    try:
        yield
    finally:
        _downloads.reset(token)


def is_hub_id(reference: str | Path) -> bool:
    """A hub id is "owner/name" that is not an existing local path."""
    return bool(HUB_ID.match(str(reference))) and not Path(reference).exists()


def _cache_hint(repo_id: str, cache: str) -> str:
    folder = Path(cache) / f"models--{repo_id.replace('/', '--')}"
    return (f"download it on a machine that is online (`hf download {repo_id}`) and copy its cache folder to "
            f"{folder}, or download it into a directory (`hf download {repo_id} --local-dir DIR`) and pass DIR")


def resolve_pretrained(reference: str | Path, field: str, allow_patterns: list[str] | None = None) -> Path:
    """The local directory of ``reference``: itself when it is not a hub id, else the id's
    snapshot in the hub cache (fetched first where downloads are allowed). ``field`` names the
    setting in messages; ``allow_patterns`` limits a download to the files the caller reads."""
    if not is_hub_id(reference):
        return Path(reference)
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    repo_id, cache = str(reference), constants.HF_HUB_CACHE
    allowed, offline = _downloads.get(), constants.HF_HUB_OFFLINE
    try:
        return Path(snapshot_download(repo_id, allow_patterns=allow_patterns, local_files_only=not allowed or offline))
    except LocalEntryNotFoundError:
        if not allowed:
            why = ("downloads are off: pass --allow-download (or set allow_download: true) on a machine that is "
                   "online, or")
        elif offline:
            why = "downloads are allowed but HF_HUB_OFFLINE=1 forbids them: unset it on a machine that is online, or"
        else:
            why = "the download failed (is the machine online?):"
        raise ConfigError(f"{field}={repo_id!r} is not a local directory and the hub id is not in the Hugging Face "
                          f"cache ({cache}); {why} {_cache_hint(repo_id, cache)}") from None
    except (HfHubHTTPError, OSError) as err:
        raise ConfigError(f"{field}={repo_id!r}: could not fetch it from the Hugging Face hub ({err}); "
                          f"{_cache_hint(repo_id, cache)}") from None
