"""Versions of a model directory's config file and the migration of older ones at load time.

``save_pretrained`` records ``"format": MODEL_FORMAT`` in the config file; a file without one
was written before the version was recorded. Each migration turns one format into the next,
as plain data, from facts about the old format written down here (never from today's config
classes, whose fields may change again), so a file of any older format reads as today's.

Format 1 (slotlab before commit 9dd37ca): one flat encoder config held the fields of every
encoder family; a field that did not apply to the encoder its ``name`` chose had to be null,
and a null field that did apply meant its default. Format 2: the encoder section holds only
its family's fields (``slotlab.nn.encoders``), each with a value where it has a default.
"""

from __future__ import annotations

from pathlib import Path

from slotlab.config import ConfigError

FORMAT_KEY = "format"
MODEL_FORMAT = 2

# ---- format 1 ---------------------------------------------------------------------------
_VIT = ("dinov2", "dino", "mae")
_V1_NAMES = (*_VIT, "patch", "cnn", "cifar_resnet")

# Every field of the flat encoder config, with the value that meant "not set".
_V1_UNSET = {
    "name": "patch",
    "path": None,
    "tiny": False,
    "image_size": 224,
    "trainable_blocks": 0,
    "final_norm": None,
    "patch_size": None,
    "dim": None,
    "projection": None,
    "colour_frequencies": None,
    "colour_sigma": None,
    "position_frequencies": None,
    "edge_scales": None,
    "structure_scales": None,
    "semantic_model": None,
    "semantic_gain": None,
    "cnn_layers": None,
    "layer": None,
    "seed": 0,
}
_V1_SHARED = ("name", "image_size", "trainable_blocks", "dim", "seed")
_PATCH_ONLY = ("projection", "colour_frequencies", "colour_sigma", "position_frequencies", "edge_scales",
               "structure_scales", "semantic_model", "semantic_gain")

# The fields each encoder read besides the shared ones (format 1's own table, plus the
# weight-file fields path/tiny). The patch and cnn encoders documented ``tiny`` as ignored
# and refused ``path``.
_V1_FIELDS = {
    **{name: ("path", "tiny", "final_norm", "patch_size") for name in _VIT},
    "patch": ("patch_size", *_PATCH_ONLY),
    "cnn": ("patch_size", "cnn_layers"),
    "cifar_resnet": ("path", "tiny", "layer"),
}
_V1_IGNORED = {"patch": ("tiny",), "cnn": ("tiny",)}

# What a null field meant where format 2's family config takes a value (its builders'
# defaults in format 1). Nulls not listed keep their meaning in format 2 (dim, final_norm,
# the ViTs' patch_size, semantic_model).
_V1_NULL_MEANT = {
    "patch": {"patch_size": 4, "projection": "random", "colour_frequencies": 0, "colour_sigma": 1.0,
              "position_frequencies": 0, "edge_scales": [], "structure_scales": [], "semantic_gain": 1.0},
    "cnn": {"patch_size": 4, "cnn_layers": 4},
    "cifar_resnet": {"layer": 3},
}


def _is_flat_encoder(section: dict) -> bool:
    """Format 1's layout: a field another encoder family reads is present (format 1 wrote all)."""
    name = section.get("name", _V1_UNSET["name"])
    if name not in _V1_FIELDS:  # an encoder added after format 1 (ssl)
        return False
    return any(key not in _V1_SHARED and key not in _V1_FIELDS[name] for key in section)


def _family_encoder(section: dict, where: str) -> dict:
    """A format-1 encoder section -> its family's format-2 section."""
    name = section.get("name", _V1_UNSET["name"])
    ignored, null_meant = _V1_IGNORED.get(name, ()), _V1_NULL_MEANT.get(name, {})
    family = {}
    for key, value in section.items():
        if key in ignored:
            continue
        if key in _V1_SHARED or key in _V1_FIELDS[name]:
            family[key] = null_meant.get(key) if value is None and key in null_meant else value
        elif key not in _V1_UNSET:  # not a format-1 field: left for the config parser to name
            family[key] = value
        elif value != _V1_UNSET[key]:
            raise ConfigError(
                f"{where}.{key}={value!r}: the {name} encoder has no {key} (format 1 refused a value other than "
                f"{_V1_UNSET[key]!r} there, so slotlab did not write this file). Set it to {_V1_UNSET[key]!r} or "
                "remove it if the model was trained without it"
            )
    return family


def _v1_to_v2(record: dict, config_path: Path) -> dict:
    config = record["config"]
    section = config.get("encoder")
    if not isinstance(section, dict) or not _is_flat_encoder(section):
        return record
    config = config | {"encoder": _family_encoder(section, f"{config_path}: config.encoder")}
    return record | {"config": config}


def migrate_model_record(record: dict, config_path: Path) -> dict:
    """The record of a model config file (``config_path``) in today's format ``MODEL_FORMAT``."""
    version = record.get(FORMAT_KEY, 1)
    if not isinstance(version, int) or version < 1:
        raise ConfigError(f"{config_path}: {FORMAT_KEY}={version!r} must be a format number >= 1")
    if version > MODEL_FORMAT:
        raise ConfigError(
            f"{config_path} is format {version}; this slotlab reads formats up to {MODEL_FORMAT}: update slotlab"
        )
    if version == 1:
        record = _v1_to_v2(record, config_path)
    return record | {FORMAT_KEY: MODEL_FORMAT}
