"""The settings of a data-engine run: prompts, the backend (Stable Diffusion or scenes) and the run's size."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from slotlab.datagen.attention import CaptureConfig
from slotlab.datagen.lexicon import LABEL_SET_NAMES
from slotlab.datagen.pseudo_masks import PseudoMaskConfig


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
