"""Encoders for the methods: networks of other runs that an encoder reads (the segmenter a
patch encoder's ``semantic_model`` names, the self-distillation teacher at an ssl encoder's
``path``) are loaded here, in the methods layer, once, and handed to ``build_encoder``; the
``nn`` layer never loads a method."""

from __future__ import annotations

from slotlab.nn.encoders import Encoder, EncoderConfig, PatchEncoderConfig, SSLEncoderConfig, build_encoder


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
        from slotlab.methods.self_distillation import load_self_distillation

        return build_encoder(config, network=load_self_distillation(config.path, "encoder.path").teacher.network)
    return build_encoder(config)
