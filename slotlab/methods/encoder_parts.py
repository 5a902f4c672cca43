"""Encoders for the methods: networks of other runs that an encoder reads (the segmenter a
patch encoder's ``semantic_model`` names, the network of a label-free run at an ssl encoder's
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
        return build_encoder(config, network=load_ssl_network(config.path, "encoder.path"))
    return build_encoder(config)


def load_ssl_network(directory: str, option: str):
    """The network a label-free encoder run trained: the teacher of a self-distillation run
    or the network of a region- or silhouette-contrast run."""
    from slotlab.io.checkpoints import is_model_dir
    from slotlab.methods.base import Method
    from slotlab.methods.region_contrast import RegionContrast
    from slotlab.methods.self_distillation import SelfDistillation
    from slotlab.methods.silhouette_contrast import SilhouetteContrast

    hint = ("train one with 'slotlab train --preset ssl-shapes-scenes-tiny --out runs/ssl' (silhouette contrast), "
            "--preset ssl-regions-scenes-tiny (region contrast) or --preset ssl-scenes-tiny (self-distillation); "
            "its model is runs/ssl/model")
    if not is_model_dir(directory):
        raise FileNotFoundError(f"{option}={str(directory)!r} is not a checkpoint directory: {hint}")
    model = Method.from_pretrained(directory)
    if isinstance(model, SelfDistillation):
        return model.teacher.network
    if isinstance(model, (RegionContrast, SilhouetteContrast)):
        return model.network
    raise ValueError(f"{option}={str(directory)!r} holds a {model.method!r} model, not a label-free encoder run: {hint}")
