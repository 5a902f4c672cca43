"""Frozen image autoencoders that give the slot diffusion decoder its working space.

Every autoencoder here maps images in [0, 1] to *diffusion-ready* latents (already scaled so
that their spread is close to the unit-variance noise of the diffusion process) and back:

- :class:`KLAutoencoder`: a diffusers ``AutoencoderKL`` (Stable Diffusion's VAE; GLASS uses the
  SD 2.1 VAE: 256x256 image -> 32x32x4 latent, scaled by ``scaling_factor`` 0.18215).
- :class:`PixelSpace`: no autoencoder; the diffusion runs on pixels mapped to [-1, 1].
- :class:`SpaceToDepth`: pixels in [-1, 1] with each f x f block folded into channels
  (64x64x3 -> 16x16x48 for f = 4): exact, parameter-free, and the UNet runs at 1/f.
- :class:`TinyAutoencoder`: a TAESD-family tiny convolutional autoencoder (conv blocks with
  ReLU, three stride-2 downsamplings, nearest upsampling), rebuilt from the tensor names and
  shapes of its weight files, e.g. the FLUX.2 tiny autoencoder (32 latent channels at 1/8).

The autoencoder is never trained by the diffusion loss: :meth:`ImageAutoencoder.train` keeps it
in eval mode and its parameters have ``requires_grad=False``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

__all__ = [
    "ImageAutoencoder",
    "KLAutoencoder",
    "PixelSpace",
    "SpaceToDepth",
    "TinyAutoencoder",
    "TinyAutoencoderBlock",
    "tiny_autoencoder_encoder",
    "tiny_autoencoder_decoder",
    "TAEF2_LATENT_SCALE",
]

# Spread of raw FLUX.2 tiny-autoencoder latents: their standard deviation on real photographs
# (measured 0.88, mean 0.04, on the 11 COCO/VOC fixture photos centre-cropped to 256x256;
# benchmarks/bench_diffusion_decoder.py, "taesd_latent_stats", re-measures it). Dividing by it
# gives latents of unit spread, as Stable Diffusion's scaling_factor does for its VAE.
TAEF2_LATENT_SCALE = 0.88


class ImageAutoencoder(nn.Module):
    """A frozen map between images in [0, 1] and diffusion-ready latents.

    Subclasses set ``latent_channels`` and ``downscale_factor`` (image side / latent side) and
    implement :meth:`encode` and :meth:`decode`.
    """

    latent_channels: int
    downscale_factor: int

    def freeze(self) -> "ImageAutoencoder":
        """Disable gradients and switch to eval mode for good."""
        self.requires_grad_(False)
        return super().train(False)

    def train(self, mode: bool = True) -> "ImageAutoencoder":
        """Stay in eval mode: the autoencoder is a fixed coordinate system, never trained."""
        return super().train(False)

    def encode(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Images (B, 3, H, W) in [0, 1] -> latents (B, C, H/f, W/f), scaled for diffusion."""
        raise NotImplementedError

    def decode(self, latents: Tensor) -> Tensor:
        """Diffusion-ready latents -> images (B, 3, H, W) clamped to [0, 1]."""
        raise NotImplementedError


class PixelSpace(ImageAutoencoder):
    """No autoencoder: the diffusion runs on the pixels themselves, mapped to [-1, 1]."""

    latent_channels = 3
    downscale_factor = 1

    def encode(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return images * 2.0 - 1.0

    def decode(self, latents: Tensor) -> Tensor:
        return ((latents + 1.0) / 2.0).clamp(0.0, 1.0)


class SpaceToDepth(ImageAutoencoder):
    """Pixels in [-1, 1], each ``factor`` x ``factor`` block folded into channels (pixel unshuffle).

    An exact, invertible, parameter-free "latent": (B, 3, H, W) -> (B, 3 f^2, H/f, W/f). The
    UNet then works at 1/f of the image side, which on a CPU buys the full image resolution
    for the cost of a small one.
    """

    def __init__(self, factor: int) -> None:
        super().__init__()
        if factor < 1:
            raise ValueError(f"SpaceToDepth factor must be >= 1, got {factor}")
        self.downscale_factor = int(factor)
        self.latent_channels = 3 * self.downscale_factor**2

    def encode(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return torch.nn.functional.pixel_unshuffle(images * 2.0 - 1.0, self.downscale_factor)

    def decode(self, latents: Tensor) -> Tensor:
        pixels = torch.nn.functional.pixel_shuffle(latents, self.downscale_factor)
        return ((pixels + 1.0) / 2.0).clamp(0.0, 1.0)


class KLAutoencoder(ImageAutoencoder):
    """Stable Diffusion's KL-regularised VAE (diffusers ``AutoencoderKL``), frozen.

    Encoding follows the Stable-LSD/diffusers training recipe: images to [-1, 1], a *sample* of
    the latent posterior (not its mode), then ``(z - shift_factor) * scaling_factor``.
    """

    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae = vae
        self.latent_channels = int(vae.config.latent_channels)
        self.downscale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.scaling_factor = float(vae.config.scaling_factor)
        self.shift_factor = float(getattr(vae.config, "shift_factor", None) or 0.0)
        self.freeze()

    @torch.no_grad()
    def encode(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        posterior = self.vae.encode(images * 2.0 - 1.0).latent_dist
        return (posterior.sample(generator=generator) - self.shift_factor) * self.scaling_factor

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        images = self.vae.decode(latents / self.scaling_factor + self.shift_factor).sample
        return ((images + 1.0) / 2.0).clamp(0.0, 1.0)


def _conv3x3(in_channels: int, out_channels: int, **kwargs) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, padding=1, **kwargs)


class TinyAutoencoderBlock(nn.Module):
    """Residual block of the TAESD family: three 3x3 convs with ReLU plus a skip, then ReLU.

    With ``global_norm`` (the FLUX.2 variant, at the lowest resolution only) an extra residual
    branch ``x + W2 ReLU(GroupNorm(W1 x))`` (1x1 convs, 4x wider, 4 groups) runs first; its
    GroupNorm statistics span the whole feature map, which gives the block global context.
    """

    def __init__(self, in_channels: int, out_channels: int, global_norm: bool = False) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            _conv3x3(in_channels, out_channels),
            nn.ReLU(),
            _conv3x3(out_channels, out_channels),
            nn.ReLU(),
            _conv3x3(out_channels, out_channels),
        )
        self.skip = (
            nn.Conv2d(in_channels, out_channels, 1, bias=False)
            if in_channels != out_channels
            else nn.Identity()
        )
        self.fuse = nn.ReLU()
        # Attribute name "pool" is fixed by the published weight files.
        self.pool = None
        if global_norm:
            wide = 4 * in_channels
            self.pool = nn.Sequential(
                nn.Conv2d(in_channels, wide, 1, bias=False),
                nn.GroupNorm(4, wide),
                nn.ReLU(),
                nn.Conv2d(wide, in_channels, 1, bias=False),
            )

    def forward(self, x: Tensor) -> Tensor:
        if self.pool is not None:
            x = x + self.pool(x)
        return self.fuse(self.conv(x) + self.skip(x))


class _SoftClamp(nn.Module):
    """3 * tanh(x / 3): bounds decoder inputs smoothly to (-3, 3)."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(x / 3.0) * 3.0


def tiny_autoencoder_encoder(latent_channels: int, global_norm: bool, width: int = 64) -> nn.Sequential:
    """TAESD-family encoder: image [0, 1] -> raw latent at 1/8 (three stride-2 convs).

    Module indices match the published ``*_encoder.pth`` files.
    """
    low_res = dict(global_norm=global_norm)
    return nn.Sequential(
        _conv3x3(3, width), TinyAutoencoderBlock(width, width),
        _conv3x3(width, width, stride=2, bias=False),
        TinyAutoencoderBlock(width, width), TinyAutoencoderBlock(width, width), TinyAutoencoderBlock(width, width),
        _conv3x3(width, width, stride=2, bias=False),
        TinyAutoencoderBlock(width, width), TinyAutoencoderBlock(width, width), TinyAutoencoderBlock(width, width),
        _conv3x3(width, width, stride=2, bias=False),
        TinyAutoencoderBlock(width, width, **low_res),
        TinyAutoencoderBlock(width, width, **low_res),
        TinyAutoencoderBlock(width, width, **low_res),
        _conv3x3(width, latent_channels),
    )  # fmt: skip


def tiny_autoencoder_decoder(latent_channels: int, global_norm: bool, width: int = 64) -> nn.Sequential:
    """TAESD-family decoder: raw latent -> image (three nearest 2x upsamplings).

    Module indices match the published ``*_decoder.pth`` files.
    """
    low_res = dict(global_norm=global_norm)
    return nn.Sequential(
        _SoftClamp(), _conv3x3(latent_channels, width), nn.ReLU(),
        TinyAutoencoderBlock(width, width, **low_res),
        TinyAutoencoderBlock(width, width, **low_res),
        TinyAutoencoderBlock(width, width, **low_res),
        nn.Upsample(scale_factor=2), _conv3x3(width, width, bias=False),
        TinyAutoencoderBlock(width, width), TinyAutoencoderBlock(width, width), TinyAutoencoderBlock(width, width),
        nn.Upsample(scale_factor=2), _conv3x3(width, width, bias=False),
        TinyAutoencoderBlock(width, width), TinyAutoencoderBlock(width, width), TinyAutoencoderBlock(width, width),
        nn.Upsample(scale_factor=2), _conv3x3(width, width, bias=False),
        TinyAutoencoderBlock(width, width), _conv3x3(width, 3),
    )  # fmt: skip


def _load_tensor_file(path: Path) -> dict[str, Tensor]:
    """Read a weight file (safetensors or a plain tensor dict saved by torch) as float32."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a flat name -> tensor dict of TAESD weights")
    return {name: tensor.float() for name, tensor in state.items()}


def _find_weight_file(directory: Path, part: str) -> Path:
    """The single ``*_{part}.pth`` / ``*_{part}.safetensors`` file in ``directory``."""
    matches = sorted(p for p in directory.glob(f"*_{part}.*") if p.suffix in (".pth", ".safetensors"))
    if len(matches) != 1:
        found = ", ".join(p.name for p in matches) or "none"
        raise FileNotFoundError(
            f"{directory}: expected exactly one '<name>_{part}.pth' (or .safetensors) TAESD weight "
            f"file, found {found}. Pass the directory holding e.g. taef2_encoder.pth and "
            f"taef2_decoder.pth."
        )
    return matches[0]


class TinyAutoencoder(ImageAutoencoder):
    """A frozen TAESD-family tiny autoencoder (images in [0, 1], latents at 1/8).

    ``latent_scale`` divides the raw latents so they have about unit spread; see
    :data:`TAEF2_LATENT_SCALE` for the FLUX.2 variant.
    """

    downscale_factor = 8

    def __init__(self, encoder: nn.Sequential, decoder: nn.Sequential, latent_scale: float) -> None:
        super().__init__()
        if latent_scale <= 0:
            raise ValueError(f"latent_scale must be positive, got {latent_scale}")
        self.encoder = encoder
        self.decoder = decoder
        self.latent_channels = int(encoder[-1].out_channels)
        self.latent_scale = float(latent_scale)
        self.freeze()

    @classmethod
    def random(cls, latent_channels: int = 4, global_norm: bool = False, width: int = 64) -> "TinyAutoencoder":
        """A randomly initialised twin (tests only: its latent space means nothing)."""
        return cls(
            tiny_autoencoder_encoder(latent_channels, global_norm, width),
            tiny_autoencoder_decoder(latent_channels, global_norm, width),
            latent_scale=1.0,
        )

    def architecture(self) -> dict:
        """The shape and latent scale as JSON: :meth:`from_architecture` rebuilds it (weights aside)."""
        return {
            "latent_channels": self.latent_channels,
            "global_norm": any(".pool." in key for key in self.encoder.state_dict()),
            "width": int(self.encoder[0].out_channels),
            "latent_scale": self.latent_scale,
        }

    @classmethod
    def from_architecture(cls, architecture: dict) -> "TinyAutoencoder":
        """An autoencoder of a stored shape with placeholder weights (a checkpoint's follow)."""
        latent_channels, global_norm, width = (architecture[k] for k in ("latent_channels", "global_norm", "width"))
        return cls(
            tiny_autoencoder_encoder(latent_channels, global_norm, width),
            tiny_autoencoder_decoder(latent_channels, global_norm, width),
            latent_scale=architecture["latent_scale"],
        )

    @classmethod
    def from_files(cls, directory: str | Path, latent_scale: float | None = None) -> "TinyAutoencoder":
        """Rebuild the architecture from the weight files in ``directory`` and load them.

        The number of latent channels is read from the last encoder conv and the FLUX.2 global
        norm branches from the presence of ``*.pool.*`` tensors. ``latent_scale`` defaults to
        :data:`TAEF2_LATENT_SCALE` for 32-channel (FLUX.2) weights and must be given otherwise.
        """
        directory = Path(directory)
        if not directory.is_dir():
            raise FileNotFoundError(
                f"TAESD weights directory {directory} does not exist: pass a directory with "
                f"'<name>_encoder.pth' and '<name>_decoder.pth' (e.g. the FLUX.2 tiny autoencoder "
                f"files taef2_encoder.pth / taef2_decoder.pth), or use latent='pixel'."
            )
        encoder_state = _load_tensor_file(_find_weight_file(directory, "encoder"))
        decoder_state = _load_tensor_file(_find_weight_file(directory, "decoder"))
        last_conv = max((k for k in encoder_state if k.endswith(".weight")), key=lambda k: int(k.split(".")[0]))
        latent_channels, width = encoder_state[last_conv].shape[:2]
        global_norm = any(".pool." in k for k in encoder_state)
        if latent_scale is None:
            if latent_channels != 32:
                raise ValueError(
                    f"{directory}: no default latent_scale for {latent_channels}-channel TAESD "
                    f"weights; measure the standard deviation of its latents on your images and "
                    f"pass it as latent_scale (taesd_latent_scale in DiffusionDecoderConfig)."
                )
            latent_scale = TAEF2_LATENT_SCALE
        encoder = tiny_autoencoder_encoder(latent_channels, global_norm, width)
        decoder = tiny_autoencoder_decoder(latent_channels, global_norm, width)
        encoder.load_state_dict(encoder_state)
        decoder.load_state_dict(decoder_state)
        return cls(encoder, decoder, latent_scale)

    @torch.no_grad()
    def encode_raw(self, images: Tensor) -> Tensor:
        """Images in [0, 1] -> unscaled latents, as the published weights produce them."""
        return self.encoder(images)

    @torch.no_grad()
    def encode(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return self.encode_raw(images) / self.latent_scale

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        return self.decoder(latents * self.latent_scale).clamp(0.0, 1.0)
