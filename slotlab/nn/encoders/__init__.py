"""Image encoders: images (B, 3, H, W) float in [0, 1] -> tokens (B, N, D) on a known grid.

Every encoder resizes its input to the configured square ``image_size`` (with
``slotlab.ops.resize.resize_image``), normalises it the way its weights expect and
returns ``N = h * w`` tokens in raster order, where ``(h, w) = encoder.grid_size()``.

Pretrained vision transformers (loaded with ``transformers`` from a local directory only):

- ``dinov2``: DINOv2 (``Dinov2Model``; a ``Dinov2WithRegistersModel`` directory works too).
  GLASS uses ViT-B/14 at 448 -> 32 x 32 x 768, final layer after the final LayerNorm,
  patch tokens only.
- ``dino``: DINO v1 (``ViTModel``). SPOT uses ViT-B/16 at 224 -> 14 x 14 x 768, output of
  the last block without the final LayerNorm.
- ``mae``: MAE (``ViTMAEModel``) with random masking disabled (mask ratio 0, tokens kept
  in raster order).

CPU encoders that need no download: ``patch`` (per-patch pixel features with a fixed
random, learned or no projection), ``cnn`` (a small conv net), ``cifar_resnet`` (the
classic CIFAR ResNet-20/56, real pretrained weights small enough for CPU experiments) and
``ssl`` (a small conv net trained on the scenes without labels, ``ssl``).

Encoders are frozen by default: no parameter requires grad and every frozen part stays in
eval mode even when a parent module calls ``.train()``. ``trainable_blocks = k`` fine-tunes
exactly the last ``k`` blocks (plus the final LayerNorm of a ViT whose output uses it).

One module and one typed config per family (``patch``, ``cnn``, ``cifar_resnet``, ``ssl``, ``vit``);
``ENCODERS`` maps each name to its config class and builder, and config parsing picks the
config class by ``name``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

from slotlab.nn.encoders.base import Encoder, EncoderConfig
from slotlab.nn.encoders.cifar_resnet import CifarResNetEncoderConfig, build_cifar_resnet_encoder
from slotlab.nn.encoders.cnn import CNNEncoderConfig, build_cnn_encoder
from slotlab.nn.encoders.patch import PatchEncoderConfig, build_patch_encoder
from slotlab.nn.encoders.ssl import SSLEncoderConfig, build_ssl_encoder
from slotlab.nn.encoders.vit import ViTEncoderConfig, build_vit_encoder


@dataclass(frozen=True)
class EncoderFamily:
    """An encoder's config class and its builder ``(config, architecture, **parts) -> Encoder``."""

    config: type[EncoderConfig]
    build: Callable[..., Encoder]


ENCODERS: dict[str, EncoderFamily] = {
    "dinov2": EncoderFamily(ViTEncoderConfig, build_vit_encoder),
    "dino": EncoderFamily(ViTEncoderConfig, build_vit_encoder),
    "mae": EncoderFamily(ViTEncoderConfig, build_vit_encoder),
    "patch": EncoderFamily(PatchEncoderConfig, build_patch_encoder),
    "cnn": EncoderFamily(CNNEncoderConfig, build_cnn_encoder),
    "cifar_resnet": EncoderFamily(CifarResNetEncoderConfig, build_cifar_resnet_encoder),
    "ssl": EncoderFamily(SSLEncoderConfig, build_ssl_encoder),
}


def encoder_family(name: str) -> EncoderFamily:
    if name not in ENCODERS:
        raise ValueError(f"encoder.name={name!r} is unknown: choose one of {', '.join(ENCODERS)}")
    return ENCODERS[name]


def encoder_config(name: str = "patch", **values) -> EncoderConfig:
    """The typed config of encoder ``name`` with ``values``; a field of another family is an
    error naming it."""
    config_class = encoder_family(name).config
    known = {f.name for f in fields(config_class)}
    for key in values:
        if key not in known:
            raise ValueError(
                f"encoder.{key} does not apply to the {name} encoder: unset it (its fields: {', '.join(sorted(known))})"
            )
    return config_class(name=name, **values)


def build_encoder(config: EncoderConfig, architecture: dict | None = None, **parts) -> Encoder:
    """Build the encoder a config describes (frozen unless ``trainable_blocks > 0``).

    ``architecture`` (from :meth:`Encoder.architecture`, as a checkpoint stores it) builds
    the network in that shape instead of reading ``config.path``; its weights are then
    expected to be loaded by the caller (``from_pretrained`` does). ``parts``: networks of
    other runs the encoder hosts, loaded by the caller (the methods do, see
    ``slotlab.methods.encoder_parts``): the patch encoder's ``semantic_network`` (the
    segmenter of ``semantic_model``), the ssl encoder's ``network`` (the teacher at ``path``).
    """
    family = encoder_family(config.name)
    if not isinstance(config, family.config):
        raise TypeError(f"the {config.name} encoder takes a {family.config.__name__}, got {type(config).__name__}")
    try:
        return family.build(config, architecture, **parts)
    except TypeError as err:
        if parts and "unexpected keyword" in str(err):
            raise ValueError(f"the {config.name} encoder hosts no {', '.join(parts)}") from None
        raise


__all__ = [
    "ENCODERS",
    "CNNEncoderConfig",
    "CifarResNetEncoderConfig",
    "Encoder",
    "EncoderConfig",
    "PatchEncoderConfig",
    "SSLEncoderConfig",
    "ViTEncoderConfig",
    "build_encoder",
    "encoder_config",
    "encoder_family",
]
