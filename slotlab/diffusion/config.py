"""The configuration of the slot-conditioned diffusion decoder, and a CPU setting of it."""

from __future__ import annotations

from dataclasses import dataclass, fields

from slotlab.diffusion.objective import PREDICTION_TYPES

LATENT_SPACES = ("vae", "pixel", "taesd", "space_to_depth")


UNCONDITIONAL_BRANCHES = ("empty_prompt", "null_slots")


# beta_start/beta_end of each schedule: Stable Diffusion's "scaled_linear" and DDPM's "linear".
BETA_RANGES = {"scaled_linear": (0.00085, 0.012), "linear": (1e-4, 0.02), "squaredcos_cap_v2": None}


# Conditioning dropout when none is configured: the reference recipe trains without it and relies
# on the pretrained UNet's own empty-prompt branch; a learned null token needs dropout to learn.
DEFAULT_CONDITION_DROPOUT = {"empty_prompt": 0.0, "null_slots": 0.1}


@dataclass
class DiffusionDecoderConfig:
    """Configuration of :class:`SlotDiffusionDecoder`.

    Defaults follow GLASS (SD 2.1 UNet + VAE at 256x256, 1024-d slots, the scheduler's own
    v-prediction, empty-prompt unconditional branch). The UNet/scheduler knobs below
    ``beta_schedule`` apply only to a UNet built from scratch (no ``pretrained_path``).

    Attributes:
        pretrained_path: local SD 2.x directory in diffusers layout (unet/, vae/, scheduler/;
            text_encoder/ and tokenizer/ for the empty-prompt branch). Loaded with
            ``local_files_only=True``.
        tiny: random test twins for the parts that would need weights: a tiny AutoencoderKL
            (latent="vae"), a random TAESD (latent="taesd" without ``taesd_path``) and a tiny
            random CLIP text encoder for the empty-prompt embedding.
        latent: "vae" (AutoencoderKL), "pixel" (diffuse pixels), "space_to_depth" (pixels with
            each f x f block folded into channels, f = ``space_to_depth_factor``: 64x64x3 ->
            16x16x48 for f = 4) or "taesd" (tiny autoencoder).
        space_to_depth_factor: f of latent="space_to_depth".
        taesd_path: directory with ``<name>_encoder.pth`` / ``<name>_decoder.pth`` TAESD weights.
        taesd_latent_scale: divisor of raw TAESD latents (default: the measured FLUX.2 value).
        resolution: side of the square images the decoder reconstructs (GLASS: 256).
        cross_attention_dim: slot width the UNet cross-attends to (SD 2.1: 1024).
        prediction_type: "epsilon" | "v_prediction" | "sample"; None = the scheduler's own
            (SD 2.1: v_prediction; a scheduler built from scratch also uses v_prediction).
        unconditional: classifier-free guidance branch. "empty_prompt": the CLIP embedding of
            the empty prompt cut to K tokens (GLASS's released sampling code); "null_slots": a
            learned null token, trained through ``condition_dropout``.
        condition_dropout: probability of replacing a sample's slots by the unconditional
            tokens in training; None = 0.0 for "empty_prompt", 0.1 for "null_slots".
        num_train_timesteps, beta_schedule: noise schedule of a from-scratch scheduler
            ("scaled_linear" = Stable Diffusion's betas 0.00085..0.012, "linear" = DDPM's
            1e-4..0.02, "squaredcos_cap_v2" = cosine).
        block_out_channels: UNet widths per resolution level.
        layers_per_block: ResNet layers per level.
        attention_head_dim: width of one attention head (heads = level width / this).
        cross_attention_levels: which levels have (self- and cross-) attention; the mid block
            always has it. Keep attention at low resolutions on a CPU.
        norm_num_groups: GroupNorm groups in the UNet.
        coordinate_channels: append two fixed channels with the (x, y) position in [-1, 1] to
            the UNet input, an absolute position signal beyond what zero padding gives a small
            UNet. Not in the paper; off by default (no measurable gain in short CPU runs).
        mask_bias_grid: not in the paper. ``G``: each context token is a slot followed by its
            mask pooled to G x G, and cross-attention adds ``log mask`` at each position to
            the logits (:mod:`slotlab.diffusion.mask_attention`), telling the decoder where each
            slot's object is; build tokens with :meth:`SlotDiffusionDecoder.context`.
            ``None`` (default): GLASS's plain cross-attention to the slots.
        mask_bias_hard: with ``mask_bias_grid``, pool one-hot argmax masks instead of the soft
            ones: a slot gets no weight where it does not own the pixels, so dropping it
            leaves nothing to draw its object from.
    """

    pretrained_path: str | None = None
    tiny: bool = False
    latent: str = "vae"
    taesd_path: str | None = None
    taesd_latent_scale: float | None = None
    space_to_depth_factor: int = 4
    resolution: int = 256
    cross_attention_dim: int = 1024
    prediction_type: str | None = None
    unconditional: str = "empty_prompt"
    condition_dropout: float | None = None
    num_train_timesteps: int = 1000
    beta_schedule: str = "scaled_linear"
    block_out_channels: tuple[int, ...] = (32, 64)
    layers_per_block: int = 1
    attention_head_dim: int = 32
    cross_attention_levels: tuple[bool, ...] = (False, True)
    norm_num_groups: int = 8
    coordinate_channels: bool = False
    mask_bias_grid: int | None = None
    mask_bias_hard: bool = False

    def __post_init__(self) -> None:
        self.block_out_channels = tuple(int(c) for c in self.block_out_channels)
        self.cross_attention_levels = tuple(bool(c) for c in self.cross_attention_levels)
        _check_choice("latent", self.latent, LATENT_SPACES)
        _check_choice("unconditional", self.unconditional, UNCONDITIONAL_BRANCHES)
        _check_choice("beta_schedule", self.beta_schedule, tuple(BETA_RANGES))
        if self.prediction_type is not None:
            _check_choice("prediction_type", self.prediction_type, PREDICTION_TYPES)
        if self.latent != "taesd" and (self.taesd_path is not None or self.taesd_latent_scale is not None):
            raise ValueError(
                f"DiffusionDecoderConfig: taesd_path/taesd_latent_scale apply to latent='taesd' only "
                f"(latent={self.latent!r}); remove them or set latent='taesd'"
            )
        if self.latent != "space_to_depth" and self.space_to_depth_factor != 4:
            raise ValueError(
                f"DiffusionDecoderConfig: space_to_depth_factor applies to latent='space_to_depth' only "
                f"(latent={self.latent!r}); remove it or set latent='space_to_depth'"
            )
        if self.space_to_depth_factor < 1:
            raise ValueError(f"DiffusionDecoderConfig.space_to_depth_factor must be >= 1, got {self.space_to_depth_factor}")
        if self.mask_bias_grid is not None and self.mask_bias_grid < 1:
            raise ValueError(f"DiffusionDecoderConfig.mask_bias_grid must be >= 1 (or None), got {self.mask_bias_grid}")
        if self.mask_bias_hard and self.mask_bias_grid is None:
            raise ValueError("DiffusionDecoderConfig.mask_bias_hard needs mask_bias_grid: set it, or drop mask_bias_hard")
        if self.condition_dropout is not None and not 0.0 <= self.condition_dropout < 1.0:
            raise ValueError(f"DiffusionDecoderConfig.condition_dropout must be in [0, 1), got {self.condition_dropout}")
        if self.unconditional == "null_slots" and self.effective_condition_dropout == 0.0:
            raise ValueError(
                "DiffusionDecoderConfig: unconditional='null_slots' learns its null token only "
                "through condition_dropout > 0 (e.g. 0.1); set it, or use 'empty_prompt'."
            )
        if len(self.cross_attention_levels) != len(self.block_out_channels):
            raise ValueError(
                f"DiffusionDecoderConfig.cross_attention_levels {self.cross_attention_levels} needs "
                f"one entry per block_out_channels level {self.block_out_channels}"
            )
        for width in self.block_out_channels:
            if width % self.attention_head_dim or width % self.norm_num_groups:
                raise ValueError(
                    f"DiffusionDecoderConfig: UNet width {width} must be divisible by "
                    f"attention_head_dim={self.attention_head_dim} and norm_num_groups={self.norm_num_groups}"
                )
        if self.pretrained_path is not None:
            self._check_pretrained_combination()

    def _check_pretrained_combination(self) -> None:
        if self.tiny:
            raise ValueError("DiffusionDecoderConfig: tiny=True builds random twins; drop it or pretrained_path")
        if self.latent != "vae":
            raise ValueError(
                f"DiffusionDecoderConfig: a pretrained Stable Diffusion UNet works in its VAE's latent "
                f"space; latent='{self.latent}' needs a UNet built from scratch (pretrained_path=None)"
            )
        changed = [f.name for f in fields(self) if f.name in _FROM_SCRATCH_FIELDS and getattr(self, f.name) != f.default]
        if changed:
            raise ValueError(
                f"DiffusionDecoderConfig: {', '.join(changed)} shape a UNet/scheduler built from scratch "
                f"and have no effect with pretrained_path (the directory brings its own); remove them"
            )

    @property
    def effective_condition_dropout(self) -> float:
        """The configured dropout, or the default of the unconditional branch."""
        if self.condition_dropout is not None:
            return float(self.condition_dropout)
        return DEFAULT_CONDITION_DROPOUT[self.unconditional]


_FROM_SCRATCH_FIELDS = frozenset(
    {"num_train_timesteps", "beta_schedule", "block_out_channels", "layers_per_block",
     "attention_head_dim", "cross_attention_levels", "norm_num_groups", "coordinate_channels"}
)  # fmt: skip


def cpu_config(cross_attention_dim: int = 64, taesd_path: str | None = None, **overrides) -> DiffusionDecoderConfig:
    """A configuration that learns on the 64x64 built-in scenes on a 2-core CPU in minutes.

    Without ``taesd_path``: pixel-space diffusion at 32x32 (downsample the scenes), a two-level
    UNet (32, 64) with self/cross-attention only at 16x16 and in the mid block (about 1 M
    parameters). With ``taesd_path`` (a TAESD-family weight directory, e.g. the FLUX.2 tiny
    autoencoder): the full 64x64 images as 8x8x32 latents and a UNet (64, 128) with attention
    at both levels (about 4 M parameters; faster and better per minute, see
    benchmarks/bench_diffusion_decoder.py). Both use a learned null token for guidance (no
    Stable Diffusion text encoder on a CPU). ``overrides`` replace any field, e.g.
    ``coordinate_channels=True``.
    """
    settings = dict(
        latent="pixel",
        resolution=32,
        cross_attention_dim=cross_attention_dim,
        unconditional="null_slots",
        block_out_channels=(32, 64),
        layers_per_block=1,
        attention_head_dim=32,
        cross_attention_levels=(False, True),
        norm_num_groups=8,
    )
    if taesd_path is not None:
        settings.update(
            latent="taesd", taesd_path=str(taesd_path), resolution=64,
            block_out_channels=(64, 128), cross_attention_levels=(True, True),
        )  # fmt: skip
    settings.update(overrides)
    return DiffusionDecoderConfig(**settings)


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"DiffusionDecoderConfig.{name}={value!r} is not one of {', '.join(choices)}")
