"""The GLASS data engine: prompts in, generated images with pseudo semantic masks out.

GLASS Sec. 4 and supplement Sec. 2: a prompt "<caption>; <class> ..." conditions Stable
Diffusion 2.1; while sampling, cross-attention of each class prompt and self-attention
are captured (``slotlab.guidance.attention``) and turned into a pseudo semantic mask
(``slotlab.guidance.pseudo_masks``). Two backends share one interface
(``Backend.generate(prompts, seeds) -> [Generation]``):

- ``SDBackend``: Stable Diffusion from a local directory (or ``tiny_sd_components()``,
  random toy weights with the same code path, for tests);
- ``ScenesBackend``: renders built-in scenes of the prompt's classes on a CPU and makes a
  class-level pseudo mask that behaves like the diffusion one.

``run_generation`` writes a sharded, resumable dataset (``slotlab.data.generated``).
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor
from torch.utils.data import Dataset
from tqdm import tqdm

from slotlab.io.hub import SD_FILES, resolve_pretrained
from slotlab.config import to_dict
from slotlab.data.generated import (
    RunLayout,
    SampleWriter,
    as_uint8_mask,
    prepare_run,
    read_records,
    sample_seed,
    write_summary,
)
from slotlab.data.sample import IGNORE_INDEX, Sample
from slotlab.guidance.attention import AttentionCapture, CaptureConfig, ClassTokens, capturing
from slotlab.guidance.lexicon import LABEL_SET_NAMES, LabelSet, label_set
from slotlab.guidance.prompts import (
    Blip2Captioner,
    Captioner,
    ClassExtractor,
    LabelCaptioner,
    Prompt,
    SampleCaptionCaptioner,
    TemplateSampler,
    build_prompt,
    nltk_pos_tagger,
    template_statistics,
)
from slotlab.guidance.pseudo_masks import PseudoMaskConfig, pseudo_semantic_mask
from slotlab.ops.random import seeded_generator

#: Independent random streams derived from one sample seed.
PROMPT_STREAM, BACKEND_STREAM = 0, 1


@dataclass
class Generation:
    """One generated sample: image (3, H, W) in [0, 1], pseudo mask (H, W) int64 with class
    ids of the label set, 0 = background, IGNORE_INDEX = uncertain, and what the backend
    knows about this sample (JSON-serialisable)."""

    image: Tensor
    pseudo_mask: Tensor
    meta: dict = field(default_factory=dict)


class Backend(Protocol):
    """Prompt + seed in, image + pseudo mask out; ``settings`` go into every manifest line."""

    settings: dict

    def generate(self, prompts: Sequence[Prompt], seeds: Sequence[int]) -> list[Generation]: ...


# ----------------------------------------------------------------------------- configs


@dataclass(frozen=True)
class PromptConfig:
    """Where prompts come from.

    source: "blip2" (BLIP-2 captions of the source images, the paper), "labels" (the
      source images' ground-truth classes, the GLASS variant with labels), "captions"
      (``Sample.caption`` of the source, e.g. scenes) or "template" (supplement Table 13,
      statistics learnt from the source's annotations).
    label_set: "coco", "voc" or "scenes": the classes kept from captions.
    dataset: spec of the source dataset (``slotlab.data.registry``); sample i of the run
      uses source sample i mod len(source).
    captioner_weights: local BLIP-2 directory (source "blip2" only).
    """

    source: str = "template"
    label_set: str = "coco"
    dataset: str | None = None
    captioner_weights: str | None = None

    def __post_init__(self) -> None:
        if self.source not in PROMPT_SOURCES:
            raise ValueError(f"prompts.source must be one of {', '.join(PROMPT_SOURCES)}, got {self.source!r}")
        if self.label_set not in LABEL_SET_NAMES:
            raise ValueError(f"prompts.label_set must be one of {', '.join(LABEL_SET_NAMES)}, got {self.label_set!r}")
        if self.dataset is None:
            raise ValueError(f"prompts.dataset (the source dataset spec) is required for prompts.source={self.source!r}")
        if self.source == "blip2" and self.captioner_weights is None:
            raise ValueError("prompts.source 'blip2' needs a local BLIP-2 directory: pass --captioner-weights DIR")
        if self.source != "blip2" and self.captioner_weights is not None:
            raise ValueError(
                f"prompts.captioner_weights is read only by prompts.source 'blip2' (source is {self.source!r}): remove it"
            )


PROMPT_SOURCES: tuple[str, ...] = ("blip2", "labels", "captions", "template")


@dataclass(frozen=True)
class SDConfig:
    """Stable Diffusion sampling with attention capture (paper settings by default).

    weights: local directory with unet/, vae/, text_encoder/, tokenizer/, scheduler/.
    scheduler: a name of ``SCHEDULERS``, or None for the scheduler saved with the weights.
    class_prompts: "per-class" encodes each class as its own prompt (GLASS Sec. 4);
      "joint" encodes all classes of an image as one prompt "c1 c2 ..." and reads each
      class's tokens from it (the Dataset Diffusion code).
    dtype: "float32" or "float16" (for GPUs).
    """

    weights: str | None = None
    scheduler: str | None = None
    num_inference_steps: int = 100
    guidance_scale: float = 7.5
    negative_prompt: str = ""
    image_size: int = 512
    batch_size: int = 1
    class_prompts: str = "per-class"
    dtype: str = "float32"
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    pseudo_masks: PseudoMaskConfig = field(default_factory=PseudoMaskConfig)

    def __post_init__(self) -> None:
        if self.scheduler is not None and self.scheduler not in SCHEDULERS:
            raise ValueError(f"sd.scheduler must be one of {', '.join(SCHEDULERS)} or null, got {self.scheduler!r}")
        if self.class_prompts not in CLASS_PROMPT_MODES:
            raise ValueError(f"sd.class_prompts must be one of {', '.join(CLASS_PROMPT_MODES)}, got {self.class_prompts!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"sd.dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.num_inference_steps < 1 or self.batch_size < 1 or self.image_size < 8:
            raise ValueError("sd.num_inference_steps and sd.batch_size must be >= 1 and sd.image_size >= 8")


#: diffusers scheduler classes by name; each is built from the weights' scheduler config.
SCHEDULERS: dict[str, str] = {
    "ddim": "DDIMScheduler",
    "pndm": "PNDMScheduler",
    "ddpm": "DDPMScheduler",
    "dpm-solver++": "DPMSolverMultistepScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler-ancestral": "EulerAncestralDiscreteScheduler",
}
CLASS_PROMPT_MODES: tuple[str, ...] = ("per-class", "joint")
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16}


@dataclass(frozen=True)
class ScenesBackendConfig:
    """The CPU scenes backend.

    resolution: image side in pixels.
    instances_per_class: (min, max) objects painted per prompt class; instances of one
      class merge in the pseudo mask, which is class-level like the diffusion one.
    uncertain_radius: pixels with a pixel of another label within this Chebyshev
      distance become IGNORE_INDEX, a band 2 * radius wide along every boundary (the
      diffusion masks are uncertain at object borders); 0 = no band.
    dilation: noise, off at 0: each class region grows or shrinks by a random number of
      pixels in [-dilation, dilation] (imprecise attention maps).
    class_dropout: noise, off at 0: each class is missing from the mask (background)
      with this probability (a class the attention missed).
    """

    resolution: int = 64
    instances_per_class: tuple[int, int] = (1, 2)
    uncertain_radius: int = 1
    dilation: int = 0
    class_dropout: float = 0.0

    def __post_init__(self) -> None:
        low, high = self.instances_per_class
        if not 1 <= low <= high:
            raise ValueError(f"scenes.instances_per_class must be (min, max) with 1 <= min <= max, got {self.instances_per_class}")
        if self.uncertain_radius < 0 or self.dilation < 0 or not 0.0 <= self.class_dropout <= 1.0:
            raise ValueError("scenes.uncertain_radius and scenes.dilation must be >= 0, scenes.class_dropout in [0, 1]")


@dataclass(frozen=True)
class GenerateConfig:
    """A generation run: backend, size, seed and the settings of each stage.

    Exactly the section of the chosen backend is used; setting the other one is an error.
    """

    backend: str = "scenes"
    num: int = 1000
    seed: int = 0
    shard_size: int = 1000
    prompts: PromptConfig = field(default_factory=lambda: PromptConfig(label_set="scenes", dataset="scenes?split=train"))
    scenes: ScenesBackendConfig | None = None
    sd: SDConfig | None = None

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.num < 1 or self.shard_size < 1 or self.seed < 0:
            raise ValueError("num and shard_size must be >= 1 and seed >= 0")
        other = "sd" if self.backend == "scenes" else "scenes"
        if getattr(self, other) is not None:
            raise ValueError(f"section {other!r} is set but backend is {self.backend!r}: remove it or change backend")
        if getattr(self, self.backend) is None:
            object.__setattr__(self, self.backend, SDConfig() if self.backend == "sd" else ScenesBackendConfig())
        if self.backend == "scenes" and self.prompts.label_set != "scenes":
            raise ValueError(f"the scenes backend draws scene classes: set prompts.label_set to 'scenes', not {self.prompts.label_set!r}")


BACKENDS: tuple[str, ...] = ("sd", "scenes")


# ----------------------------------------------------------------------------- SD components


@dataclass
class SDComponents:
    """The parts of a Stable Diffusion model the engine drives."""

    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    scheduler: object

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def save(self, directory: str | Path) -> Path:
        """Write the diffusers directory layout ``load_sd_components`` reads."""
        directory = Path(directory)
        for name in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
            getattr(self, name).save_pretrained(directory / name)
        return directory

    def to(self, device: torch.device | str, dtype: torch.dtype = torch.float32) -> "SDComponents":
        for module in (self.unet, self.vae, self.text_encoder):
            module.to(device=device).eval().requires_grad_(False)
            if module.dtype != dtype:
                module.to(dtype=dtype)
        return self


def load_sd_components(directory: str | Path) -> SDComponents:
    """Stable Diffusion (e.g. 2.1-base) from a local diffusers directory or a hub id (fetched only
    where downloads are allowed, see slotlab.io.hub)."""
    import diffusers
    from transformers import CLIPTextModel, CLIPTokenizer

    directory = resolve_pretrained(directory, "--weights", SD_FILES)
    missing = [p for p in ("unet", "vae", "text_encoder", "tokenizer", "scheduler") if not (directory / p).is_dir()]
    if missing:
        raise FileNotFoundError(
            f"{directory} is not a Stable Diffusion directory (missing {', '.join(missing)}/). Download one where a "
            "network is available, e.g. `hf download stabilityai/stable-diffusion-2-1-base --local-dir DIR`, copy "
            "DIR here and pass it with --weights DIR; or pass the hub id with --allow-download where it is online"
        )
    config = json.loads((directory / "scheduler" / "scheduler_config.json").read_text())
    scheduler_cls = getattr(diffusers, config.get("_class_name", ""), None)
    if scheduler_cls is None:
        raise ValueError(f"{directory}/scheduler/scheduler_config.json names no diffusers scheduler class")
    return SDComponents(
        unet=diffusers.UNet2DConditionModel.from_pretrained(directory / "unet", local_files_only=True),
        vae=diffusers.AutoencoderKL.from_pretrained(directory / "vae", local_files_only=True),
        text_encoder=CLIPTextModel.from_pretrained(directory / "text_encoder", local_files_only=True),
        tokenizer=CLIPTokenizer.from_pretrained(directory / "tokenizer", local_files_only=True),
        scheduler=scheduler_cls.from_pretrained(directory / "scheduler", local_files_only=True),
    )


def _caption_words() -> list[str]:
    """Words the tiny tokenizer keeps whole: class names, aliases and common caption words."""
    words = set("a an the of on in with and photo image high quality two three next to".split())
    for name in LABEL_SET_NAMES:
        for form in label_set(name).forms:
            words.update(form.split())
    return sorted(words)


def tiny_clip_tokenizer():
    """An offline CLIP tokenizer with a tiny vocabulary, trained here as a byte-level BPE
    on the words of ``_caption_words`` (each becomes one token); other words split into
    several tokens, which exercises multi-token class names."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    special = ["<|startoftext|>", "<|endoftext|>"]
    bpe = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=1_000_000, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        end_of_word_suffix="</w>", show_progress=False,
    )
    bpe.train_from_iterator(_caption_words(), trainer)
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    return CLIPTokenizer(vocab=model["vocab"], merges=merges, model_max_length=77)


def tiny_sd_components(seed: int = 0) -> SDComponents:
    """Random toy Stable Diffusion parts with the real classes, for tests and benchmarks.

    Images are 32x32 (VAE factor 2 -> 16x16 latents); the UNet has attention at 16x16
    and 8x8 in its down, mid and up blocks, so ``TINY_SD_CAPTURE`` reads cross-attention
    at 8 and self-attention at 16.
    """
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    tokenizer = tiny_clip_tokenizer()
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_attention_heads=4,
            num_hidden_layers=2, max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1,
        )
    )
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
        attention_head_dim=4, norm_num_groups=8,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, block_out_channels=(16, 16), latent_channels=4, norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, sample_size=32,
    )
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False)
    return SDComponents(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler)


#: Capture settings that fit ``tiny_sd_components`` (32x32 images).
TINY_SD_CAPTURE = CaptureConfig(cross_resolutions=(8,), self_resolution=16)


# ----------------------------------------------------------------------------- SD backend


def class_token_span(tokenizer, name: str) -> int:
    """Number of tokens of a class name (without start and end tokens)."""
    return len(tokenizer(name, add_special_tokens=False).input_ids)


def class_tokens(
    tokenizer, text_encoder, classes_per_image: Sequence[Sequence[str]], mode: str, device: torch.device
) -> ClassTokens:
    """Encode the class prompts of a batch (GLASS Sec. 4: one prompt per class).

    Token positions skip the start token; a name of n tokens gets weight 1/n on each.
    mode "joint" (Dataset Diffusion code) encodes "c1 c2 ..." once per image instead.
    """
    length = tokenizer.model_max_length
    texts, spans, image_index = [], [], []
    for b, classes in enumerate(classes_per_image):
        offset = 1  # skip the start token
        for name in classes:
            size = class_token_span(tokenizer, name)
            start = offset if mode == "joint" else 1
            spans.append((start, start + size))
            offset += size
        texts += [" ".join(classes)] * len(classes) if mode == "joint" else list(classes)
        image_index += [b] * len(classes)
    if any(end >= length for _, end in spans):
        raise ValueError(f"class prompt longer than the text encoder's {length} tokens: use class_prompts 'per-class'")
    weights = torch.zeros(len(texts), length)
    for p, (start, end) in enumerate(spans):
        weights[p, start:end] = 1.0 / (end - start)
    return ClassTokens(
        embeddings=encode_text(tokenizer, text_encoder, texts, device),
        token_weights=weights.to(device),
        image_index=torch.tensor(image_index, dtype=torch.long, device=device),
    )


@torch.no_grad()
def encode_text(tokenizer, text_encoder, texts: Sequence[str], device: torch.device) -> Tensor:
    """(len(texts), 77, D) CLIP token embeddings, padded to the model length."""
    if not texts:
        return torch.zeros(0, tokenizer.model_max_length, text_encoder.config.hidden_size, device=device)
    ids = tokenizer(
        list(texts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
    return text_encoder(ids.to(device))[0]


def initial_latents(seeds: Sequence[int], shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> Tensor:
    """One standard-normal latent per seed, drawn on the CPU so any device gives the same."""
    noise = [torch.randn(shape, generator=seeded_generator(int(s))) for s in seeds]
    return torch.stack(noise).to(device=device, dtype=dtype)


class SDBackend:
    """Stable Diffusion sampling with classifier-free guidance and attention capture."""

    def __init__(self, components: SDComponents, config: SDConfig, labels: LabelSet, device: torch.device | str) -> None:
        import diffusers

        self.config = config
        self.labels = labels
        self.device = torch.device(device)
        self.dtype = DTYPES[config.dtype]
        self.parts = components.to(self.device, self.dtype)
        if config.scheduler is not None:
            scheduler_cls = getattr(diffusers, SCHEDULERS[config.scheduler])
            self.parts.scheduler = scheduler_cls.from_config(self.parts.scheduler.config)
        factor = components.vae_scale_factor
        if config.image_size % factor:
            raise ValueError(f"sd.image_size {config.image_size} must be a multiple of the VAE factor {factor}")
        self.latent_side = config.image_size // factor
        self.capture = AttentionCapture(config.capture)
        self.captured_steps = 0
        self.settings = {
            "backend": "sd",
            "scheduler": type(self.parts.scheduler).__name__,
            "num_inference_steps": config.num_inference_steps,
            "guidance_scale": config.guidance_scale,
            "negative_prompt": config.negative_prompt,
            "image_size": config.image_size,
            "class_prompts": config.class_prompts,
            "thresholds": [config.pseudo_masks.threshold_low, config.pseudo_masks.threshold_high],
        }

    @property
    def uses_guidance(self) -> bool:
        return self.config.guidance_scale > 1.0

    def generate(self, prompts: Sequence[Prompt], seeds: Sequence[int]) -> list[Generation]:
        out: list[Generation] = []
        for start in range(0, len(prompts), self.config.batch_size):
            stop = start + self.config.batch_size
            out += self._generate_batch(prompts[start:stop], seeds[start:stop])
        return out

    @torch.no_grad()
    def _generate_batch(self, prompts: Sequence[Prompt], seeds: Sequence[int]) -> list[Generation]:
        parts, b = self.parts, len(prompts)
        text = encode_text(parts.tokenizer, parts.text_encoder, [p.text for p in prompts], self.device)
        if self.uses_guidance:
            negative = encode_text(parts.tokenizer, parts.text_encoder, [self.config.negative_prompt] * b, self.device)
            text = torch.cat([negative, text])
        classes = class_tokens(
            parts.tokenizer, parts.text_encoder, [p.classes for p in prompts], self.config.class_prompts, self.device
        )
        shape = (parts.unet.config.in_channels, self.latent_side, self.latent_side)
        latents = initial_latents(seeds, shape, self.device, self.dtype)
        self.capture.start(classes, slice(b, 2 * b) if self.uses_guidance else slice(0, b))
        with capturing(parts.unet, self.capture):
            latents = self._denoise(latents, text, seeds)
        images = self._decode(latents)
        masks = self._pseudo_masks(prompts)
        meta = {"captured_steps": self.captured_steps}
        return [Generation(image=images[i], pseudo_mask=masks[i], meta=meta) for i in range(b)]

    def _denoise(self, latents: Tensor, text: Tensor, seeds: Sequence[int]) -> Tensor:
        scheduler = self.parts.scheduler
        scheduler.set_timesteps(self.config.num_inference_steps, device=self.device)
        latents = latents * scheduler.init_noise_sigma
        step_kwargs = {}
        if "generator" in inspect.signature(scheduler.step).parameters:  # stochastic samplers
            step_kwargs["generator"] = [seeded_generator(int(s) + 1) for s in seeds]
        num_steps = len(scheduler.timesteps)
        self.captured_steps = 0
        for step, t in enumerate(scheduler.timesteps):
            self.capture.active = self.config.capture.step_is_captured(step, num_steps)
            self.captured_steps += self.capture.active
            model_input = torch.cat([latents] * 2) if self.uses_guidance else latents
            model_input = scheduler.scale_model_input(model_input, t)
            prediction = self.parts.unet(model_input, t, encoder_hidden_states=text).sample
            if self.uses_guidance:
                unconditional, conditional = prediction.chunk(2)
                prediction = unconditional + self.config.guidance_scale * (conditional - unconditional)
            latents = scheduler.step(prediction, t, latents, **step_kwargs).prev_sample
        self.capture.active = False
        return latents

    def _decode(self, latents: Tensor) -> Tensor:
        vae = self.parts.vae
        images = vae.decode(latents / vae.config.scaling_factor).sample
        return (images.float() / 2 + 0.5).clamp(0, 1).cpu()

    def _pseudo_masks(self, prompts: Sequence[Prompt]) -> Tensor:
        size = (self.config.image_size, self.config.image_size)
        counts = [len(p.classes) for p in prompts]
        if max(counts) == 0:  # no class named: nothing is known about any pixel
            return torch.full((len(prompts), *size), IGNORE_INDEX, dtype=torch.int64)
        cross = self.capture.cross_maps()  # {r: (P, r, r)}
        ids = torch.zeros(len(prompts), max(counts), dtype=torch.long)
        padded = {r: torch.zeros(len(prompts), max(counts), r, r) for r in cross}
        offset = 0
        for i, prompt in enumerate(prompts):
            n = counts[i]
            ids[i, :n] = torch.tensor([self.labels.class_id(c) for c in prompt.classes], dtype=torch.long)
            for r, maps in cross.items():
                padded[r][i, :n] = maps[offset : offset + n].float().cpu()
            offset += n
        self_attention = self.capture.self_attention().float().cpu()
        return pseudo_semantic_mask(padded, self_attention, ids, size, self.config.pseudo_masks)


def _unknown_mask(image: Tensor) -> Tensor:
    """Pseudo mask of a scene whose prompt names no class: every pixel uncertain."""
    return torch.full(image.shape[-2:], IGNORE_INDEX, dtype=torch.int64)


# ----------------------------------------------------------------------------- scenes backend


class ScenesBackend:
    """Built-in scenes of the prompt's classes with a diffusion-like class-level pseudo mask."""

    def __init__(self, config: ScenesBackendConfig, labels: LabelSet) -> None:
        from slotlab.data.scenes import ScenesConfig

        if labels.name != "scenes":
            raise ValueError(f"the scenes backend needs the 'scenes' label set, got {labels.name!r}")
        self.config = config
        self.labels = labels
        self.scene_config = ScenesConfig(resolution=config.resolution)
        self.settings = {"backend": "scenes", **to_dict(config)}

    def generate(self, prompts: Sequence[Prompt], seeds: Sequence[int]) -> list[Generation]:
        return [self._generate_one(p, s) for p, s in zip(prompts, seeds)]

    def _generate_one(self, prompt: Prompt, seed: int) -> Generation:
        from slotlab.data.scenes import render_scene

        rng = np.random.default_rng([seed, BACKEND_STREAM])
        if not prompt.classes:
            scene = render_scene(rng, self.scene_config)
            return Generation(image=scene.image, pseudo_mask=_unknown_mask(scene.image), meta=_scene_meta(scene))
        low, high = self.config.instances_per_class
        objects = [c for c in prompt.classes for _ in range(int(rng.integers(low, high + 1)))]
        rng.shuffle(objects)
        scene = render_scene(rng, self.scene_config, classes=objects)
        return Generation(image=scene.image, pseudo_mask=self.pseudo_mask(scene, rng), meta=_scene_meta(scene))

    def pseudo_mask(self, scene: Sample, rng: np.random.Generator) -> Tensor:
        """Semantic mask (instances of a class merged) -> optional noise -> uncertain band."""
        mask = scene.semantic_mask.numpy().copy()
        if self.config.class_dropout > 0 or self.config.dilation > 0:
            mask = perturb_class_regions(mask, rng, self.config.dilation, self.config.class_dropout)
        return torch.from_numpy(uncertain_boundary_band(mask, self.config.uncertain_radius))


def _scene_meta(scene: Sample) -> dict:
    """The painted instances (class, colour, pose; ``render_scene``'s meta) as plain JSON."""
    return {"objects": json.loads(json.dumps(scene.meta["objects"], default=float))}


def perturb_class_regions(mask: np.ndarray, rng: np.random.Generator, dilation: int, dropout: float) -> np.ndarray:
    """Noise like imprecise attention: drop whole classes to background with probability
    ``dropout``; grow or shrink each remaining class by a random radius in [-dilation, dilation]
    (growth only claims background pixels)."""
    out = mask.copy()
    for class_id in np.unique(mask[mask > 0]):
        region = mask == class_id
        if rng.random() < dropout:
            out[region] = 0
            continue
        radius = int(rng.integers(-dilation, dilation + 1)) if dilation > 0 else 0
        if radius > 0:
            grown = ndimage.binary_dilation(region, iterations=radius)
            out[grown & (out == 0)] = class_id
        elif radius < 0:
            kept = ndimage.binary_erosion(region, iterations=-radius)
            out[region & ~kept] = 0
    return out


def uncertain_boundary_band(mask: np.ndarray, radius: int) -> np.ndarray:
    """Pixels with a differently labelled pixel within Chebyshev distance ``radius`` -> IGNORE_INDEX."""
    if radius == 0:
        return mask.astype(np.int64)
    size = 2 * radius + 1
    near_max = ndimage.maximum_filter(mask, size=size, mode="nearest")
    near_min = ndimage.minimum_filter(mask, size=size, mode="nearest")
    return np.where(near_max != near_min, IGNORE_INDEX, mask).astype(np.int64)


# ----------------------------------------------------------------------------- prompts for a run


class PromptMaker:
    """Prompt of sample i: caption from the configured captioner, classes from the lexicon."""

    def __init__(self, captioner: Captioner, extractor: ClassExtractor, source: Dataset | None = None) -> None:
        if captioner.needs_source and source is None:
            raise ValueError("this captioner reads source samples: give the source dataset")
        self.captioner = captioner
        self.extractor = extractor
        self.source = source

    def prompts(self, indices: Sequence[int], seeds: Sequence[int]) -> list[Prompt]:
        rngs = [np.random.default_rng([s, PROMPT_STREAM]) for s in seeds]
        samples = images = None
        if self.captioner.needs_source:
            samples = [self.source[i % len(self.source)] for i in indices]
            images = [s.image for s in samples]
        captions = self.captioner.caption(images, samples, rngs)
        return [build_prompt(c, self.extractor(c)) for c in captions]


def source_class_names(dataset: Dataset, spec: str) -> list[str]:
    """Class names of a source dataset indexed by class id (0 = background)."""
    from slotlab.data.registry import parse_spec

    names = getattr(dataset, "class_names", None)
    if names is not None:
        return list(names)
    if parse_spec(spec).name == "scenes":
        from slotlab.data.scenes import SCENE_CLASSES

        return ["background", *SCENE_CLASSES]
    raise ValueError(f"source dataset {spec!r} has no class_names: prompts 'labels' and 'template' need them")


def build_prompt_maker(config: PromptConfig, device: torch.device | str = "cpu") -> tuple[PromptMaker, dict]:
    """The prompt maker of a run and a record of what it depends on (for resume checks)."""
    from slotlab.data.registry import build_dataset

    labels = label_set(config.label_set)
    extractor = ClassExtractor(labels, nltk_pos_tagger())
    source = build_dataset(config.dataset)
    record = {"label_set": list(labels.classes), "class_extraction": extractor.method, "source_size": len(source)}
    if config.source == "template":
        statistics = template_statistics(source, source_class_names(source, config.dataset), extractor)
        record["template_statistics"] = statistics.to_dict()
        return PromptMaker(TemplateSampler(statistics), extractor), record
    captioner: Captioner
    if config.source == "labels":
        captioner = LabelCaptioner(source_class_names(source, config.dataset))
    elif config.source == "captions":
        captioner = SampleCaptionCaptioner()
    else:
        captioner = Blip2Captioner(config.captioner_weights, device=device)
    return PromptMaker(captioner, extractor, source), record


def build_backend(config: GenerateConfig, device: torch.device | str = "cpu") -> Backend:
    labels = label_set(config.prompts.label_set)
    if config.backend == "scenes":
        return ScenesBackend(config.scenes, labels)
    if config.sd.weights is None:
        raise ValueError("the sd backend needs Stable Diffusion weights: pass --weights DIR (a local diffusers directory)")
    return SDBackend(load_sd_components(config.sd.weights), config.sd, labels, device)


def image_to_uint8(image: Tensor) -> np.ndarray:
    """(3, H, W) float in [0, 1] -> (H, W, 3) uint8, rounded (numpy: torch's round is
    slow on small tensors when its thread pool is busy)."""
    pixels = np.rint(np.clip(image.detach().cpu().numpy(), 0.0, 1.0) * 255.0).astype(np.uint8)
    return np.ascontiguousarray(pixels.transpose(1, 2, 0))


def mask_pixel_counts(mask: Tensor) -> dict:
    """Pixel counts of a pseudo mask: background, uncertain and each class id."""
    values, counts = torch.unique(mask, return_counts=True)
    table = dict(zip(values.tolist(), counts.tolist()))
    return {
        "background": table.pop(0, 0),
        "ignore": table.pop(IGNORE_INDEX, 0),
        "classes": {str(k): v for k, v in sorted(table.items())},
    }


# ----------------------------------------------------------------------------- runs

#: Samples the scenes backend makes per prompt batch (prompts are cheap; this only sets
#: how often progress is reported).
SCENES_CHUNK = 64


def run_settings(config: GenerateConfig, prompt_record: dict, backend: Backend) -> dict:
    """What a run's output depends on; a resume must reproduce it exactly."""
    return {
        "num": config.num,
        "shard_size": config.shard_size,
        "seed": config.seed,
        "class_names": prompt_record["label_set"],
        "config": to_dict(config),
        "prompts": prompt_record,
        "generator": backend.settings,
    }


def sample_record(seed: int, prompt: Prompt, generation: Generation, labels: LabelSet, backend: Backend) -> dict:
    """The manifest line of a sample (besides its index and file names)."""
    height, width = generation.pseudo_mask.shape
    return {
        "seed": seed,
        "prompt": prompt.text,
        "caption": prompt.caption,
        "classes": list(prompt.classes),
        "class_ids": [labels.class_id(c) for c in prompt.classes],
        "height": height,
        "width": width,
        "pixels": mask_pixel_counts(generation.pseudo_mask),
        "generator": backend.settings,
        "generation": generation.meta,
    }


def generate_indices(
    layout: RunLayout, indices: Sequence[int], run_seed: int, maker: PromptMaker, backend: Backend,
    labels: LabelSet, chunk: int, progress: tqdm | None = None,
) -> int:
    """Make and store samples ``indices`` (skipping none: pass only the missing ones)."""
    writer = SampleWriter(layout)
    for start in range(0, len(indices), chunk):
        batch = list(indices[start : start + chunk])
        seeds = [sample_seed(run_seed, i) for i in batch]
        prompts = maker.prompts(batch, seeds)
        for index, seed, prompt, generation in zip(batch, seeds, prompts, backend.generate(prompts, seeds)):
            record = sample_record(seed, prompt, generation, labels, backend)
            writer.write(index, image_to_uint8(generation.image), as_uint8_mask(generation.pseudo_mask), record)
        if progress is not None:
            progress.update(len(batch))
    return len(indices)


def run_generation(config: GenerateConfig, out: str | Path, resume: bool = False, progress: bool = True) -> dict | None:
    """Generate ``config.num`` samples into ``out`` on every process of the launch.

    Process r of w (accelerate ``PartialState``; plain runs are 1 process) makes the
    missing indices i with i % w == r. The main process prepares (or checks and repairs,
    with ``resume``) the directory before anyone writes, and writes summary.json at the
    end, which it returns (other processes return None).
    """
    from accelerate import PartialState

    # Without cpu=True, accelerate ignores a torchrun launch on a machine without GPUs.
    state = PartialState(cpu=not torch.cuda.is_available())
    labels = label_set(config.prompts.label_set)
    maker, prompt_record = build_prompt_maker(config.prompts, state.device)
    backend = build_backend(config, state.device)
    settings = run_settings(config, prompt_record, backend)
    if state.is_main_process:
        prepare_run(out, settings, resume)
    state.wait_for_everyone()
    layout, _ = RunLayout.read(out)
    done = {r["index"] for r in read_records(layout)}
    mine = range(state.process_index, config.num, state.num_processes)
    todo = [i for i in mine if i not in done]
    chunk = config.sd.batch_size if config.backend == "sd" else SCENES_CHUNK
    with tqdm(
        total=len(mine), initial=len(mine) - len(todo), unit="img", desc="generate",
        disable=not (progress and state.is_main_process),
    ) as bar:  # fmt: skip
        generate_indices(layout, todo, config.seed, maker, backend, labels, chunk, bar)
    state.wait_for_everyone()
    if not state.is_main_process:
        return None
    return write_summary(layout, list(labels.classes))
