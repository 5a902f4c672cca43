"""A data-engine run: prompts -> backend -> sharded, resumable dataset on disk
(``slotlab.data.generated``), split over the processes of a launch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset
from tqdm import tqdm

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
from slotlab.data.sample import IGNORE_INDEX, NamedClasses
from slotlab.datagen.backends.base import PROMPT_STREAM, Backend, Generation
from slotlab.datagen.backends.scenes import ScenesBackend
from slotlab.datagen.backends.sd import SDBackend
from slotlab.datagen.config import GenerateConfig, PromptConfig
from slotlab.datagen.lexicon import LabelSet, label_set
from slotlab.datagen.prompts import (
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
from slotlab.diffusion.sd import load_sd_components


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

    if isinstance(dataset, NamedClasses):
        return list(dataset.class_names)
    if parse_spec(spec).name == "scenes":
        from slotlab.data.scene_words import SCENE_CLASSES

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
