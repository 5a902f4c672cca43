"""Encoders for the methods: networks of other runs that an encoder reads (the segmenter a
patch encoder's ``semantic_model`` names, the network of a label-free run or a shipped network at
an ssl encoder's ``path``) are loaded here, in the methods layer, once, and handed to ``build_encoder``; the
``nn`` layer never loads a method."""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from slotlab.config import ConfigError
from slotlab.io.checkpoints import is_model_dir, write_model_dir
from slotlab.io.layout import MODEL_CONFIG_FILE, WEIGHTS_FILE
from slotlab.io.weights import load_weights
from slotlab.nn.encoders import Encoder, EncoderConfig, PatchEncoderConfig, SSLEncoderConfig, build_encoder
from slotlab.nn.encoders.shipped import SHIPPED_PREFIX, resolve_network_path, shipped_names
from slotlab.nn.encoders.ssl import network_architecture, network_from_architecture


def build_method_encoder(config: EncoderConfig, architecture: dict | None = None) -> Encoder:
    """``build_encoder`` with the parts it hosts loaded from their runs; with ``architecture``
    (a checkpoint's stored shapes) those parts are rebuilt instead and their directories are
    not needed."""
    if architecture is not None:
        return build_encoder(config, architecture)
    if isinstance(config, PatchEncoderConfig) and config.semantic_model is not None:
        from slotlab.methods.segmenter import load_segmenter

        network = load_segmenter(config.semantic_model, "encoder.semantic_model").network
        return build_encoder(config, semantic_network=network)
    if isinstance(config, SSLEncoderConfig) and config.path is not None:
        return build_encoder(config, network=load_ssl_network(config.path, "encoder.path"))
    return build_encoder(config)


def save_ssl_network(network: nn.Module, directory: str | Path) -> Path:
    """Write a label-free network alone (its shape and weights; no method, no projection
    head) as a directory :func:`load_ssl_network` reads: how the shipped networks are stored."""
    state = {k: v.detach().contiguous().cpu() for k, v in network.state_dict().items()}
    return write_model_dir(directory, network_architecture(network), state)


def load_ssl_network(reference: str | Path, option: str) -> nn.Module:
    """The network at ``reference`` (``shipped:NAME`` or a directory): a network directory's
    (:func:`save_ssl_network`), or the one a label-free encoder run trained: the teacher of a
    self-distillation run or the network of a region- or silhouette-contrast run."""
    from slotlab.methods.base import Method
    from slotlab.methods.region_contrast import RegionContrast
    from slotlab.methods.self_distillation import SelfDistillation
    from slotlab.methods.silhouette_contrast import SilhouetteContrast

    hint = ("train one with 'slotlab train --preset ssl-shapes-scenes-tiny --out runs/ssl' (silhouette contrast), "
            "--preset ssl-regions-scenes-tiny (region contrast) or --preset ssl-scenes-tiny (self-distillation); "
            f"its model is runs/ssl/model; or use one that ships with slotlab: "
            f"{', '.join(SHIPPED_PREFIX + name for name in shipped_names()) or 'none ship with this installation'}")
    directory = resolve_network_path(reference, option)
    if not is_model_dir(directory):
        raise FileNotFoundError(f"{option}={str(reference)!r} is not a checkpoint directory: {hint}")
    config_path = directory / MODEL_CONFIG_FILE
    try:
        record = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{config_path} is not valid JSON ({err}); the directory is damaged") from err
    if isinstance(record, dict) and "network_kind" in record:
        network = network_from_architecture(record, str(config_path))
        try:
            network.load_state_dict(load_weights(directory / WEIGHTS_FILE), strict=True)
        except RuntimeError as err:
            raise ConfigError(f"{directory / WEIGHTS_FILE} does not fit the network in {config_path}: {err}") from err
        return network.eval()
    model = Method.from_pretrained(directory)
    if isinstance(model, SelfDistillation):
        return model.teacher.network
    if isinstance(model, (RegionContrast, SilhouetteContrast)):
        return model.network
    raise ValueError(f"{option}={str(reference)!r} holds a {model.method!r} model, not a label-free encoder run: {hint}")
