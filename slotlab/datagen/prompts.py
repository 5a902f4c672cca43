"""Prompts for the GLASS data engine: captioners, class extraction, the prompt itself.

GLASS Sec. 4 ("Conditional image generation"): a caption of a real image is made by a
captioner (BLIP-2), the nouns of the caption that belong to the label set are kept
(C = {c_1..c_k}) and the prompt is P = [P_cap; C], written ``"<caption>; <c_1> <c_2> ..."``.
Variants of the paper plug in behind the same ``Captioner`` interface:

- ``Blip2Captioner``: BLIP-2 captions of the source images (the paper's default);
- ``LabelCaptioner``: the ground-truth classes of the source image (the GLASS variant
  trained with class labels);
- ``SampleCaptionCaptioner``: captions stored with the source samples (``Sample.caption``,
  e.g. the built-in scenes);
- ``TemplateSampler``: the template pipeline of supplement Table 13, which needs no image,
  only class-occurrence and object-count statistics of a dataset.

Every captioner returns captions; ``ClassExtractor`` finds the classes in them with the
offline lexicon of ``slotlab.datagen.lexicon`` (and NLTK part-of-speech tags when NLTK
and its tagger data are installed).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np
import torch
from torch import Tensor

from slotlab.io.hub import TRANSFORMERS_FILES, resolve_pretrained
from slotlab.data.sample import Sample
from slotlab.datagen.lexicon import COLOR_WORDS, LabelSet, is_ambiguous_modifier, modifier_heads

#: Opening words of the supplement Table 13 template.
TEMPLATE_PREFIX = "A high-quality image of "

#: A part-of-speech tagger: tokens -> Penn Treebank tags (NN, NNS, JJ, ...).
PosTagger = Callable[[list[str]], list[str]]

_TOKEN = re.compile(r"[a-z]+|[^\sa-z]")


@dataclass(frozen=True)
class Prompt:
    """What the generator is conditioned on: ``text`` = "<caption>; <class> <class> ..."."""

    text: str
    caption: str
    classes: tuple[str, ...]


def build_prompt(caption: str, classes: Sequence[str]) -> Prompt:
    """GLASS Sec. 4, P = [P_cap; C]: the caption, a semicolon, the class names.

    A trailing full stop of the caption is dropped so the prompt reads
    "a dog on the grass; dog". Without classes the prompt is the caption alone.
    """
    caption = caption.strip().rstrip(".").strip()
    text = f"{caption}; {' '.join(classes)}" if classes else caption
    return Prompt(text=text, caption=caption, classes=tuple(classes))


def tokenize_caption(caption: str) -> list[str]:
    """Lower-case words and single punctuation marks ("tv/monitor" -> tv, /, monitor)."""
    return _TOKEN.findall(caption.lower())


def nltk_pos_tagger() -> PosTagger | None:
    """NLTK's ``pos_tag`` when NLTK and its tagger data are installed, else None."""
    try:
        import nltk

        nltk.pos_tag(["a", "dog"])
    except (ImportError, LookupError):
        return None
    return lambda tokens: [tag for _, tag in nltk.pos_tag(tokens)]


class ClassExtractor:
    """Caption -> class names of a label set, in order of first mention, without repeats.

    Matching is greedy longest-first over word n-grams of the lexicon (so "hot dog" is a
    hot dog, not a dog, and "teddy bear" is not a bear); n-grams never span punctuation.
    Nouns that double as modifiers ("an orange cat", "a ski slope") are dropped: with a
    POS tagger when the matched word is not tagged as a noun (NN*), without one when the
    next word is a colour, a class word or a known head noun of that modifier.
    """

    def __init__(self, labels: LabelSet, pos_tagger: PosTagger | None = None) -> None:
        self.labels = labels
        self.pos_tagger = pos_tagger

    @property
    def method(self) -> str:
        """How nouns are told from modifiers ("pos-tagger" or "lexicon"), for run records."""
        return "pos-tagger" if self.pos_tagger is not None else "lexicon"

    def __call__(self, caption: str) -> list[str]:
        tokens = tokenize_caption(caption)
        tags = self.pos_tagger(tokens) if self.pos_tagger is not None else None
        found: list[str] = []
        i = 0
        while i < len(tokens):
            length, name = self._match_at(tokens, i)
            if name is not None and not self._is_modifier(tokens, i + length - 1, tags):
                if name not in found:
                    found.append(name)
                i += length
            else:
                i += 1
        return found

    def _match_at(self, tokens: list[str], i: int) -> tuple[int, str | None]:
        """Longest surface form starting at token i: (number of tokens, class name)."""
        for n in range(min(self.labels.max_words, len(tokens) - i), 0, -1):
            words = tokens[i : i + n]
            if not all(w.isalpha() for w in words):
                continue
            name = self.labels.forms.get(" ".join(words))
            if name is not None:
                return n, name
        return 1, None

    def _is_modifier(self, tokens: list[str], last: int, tags: list[str] | None) -> bool:
        if tags is not None:
            return not tags[last].startswith("NN")
        word = tokens[last]
        if not is_ambiguous_modifier(word) or last + 1 >= len(tokens):
            return False
        following = tokens[last + 1]
        if following in ("and", "or") and last + 2 < len(tokens):
            return tokens[last + 2] in COLOR_WORDS  # "orange and white cat"
        return following in COLOR_WORDS or following in modifier_heads(word) or following in self.labels.forms


# ----------------------------------------------------------------------------- captioners


class Captioner(Protocol):
    """Captions for a batch. ``images``: source images (3, H, W) in [0, 1]; ``samples``:
    the source samples; ``rngs``: one generator per caption (sampling captioners draw
    from it, so caption i is reproducible from its seed). A captioner reads only what it
    needs and says so with ``needs_source``."""

    needs_source: bool

    def caption(
        self, images: Sequence[Tensor] | None, samples: Sequence[Sample] | None, rngs: Sequence[np.random.Generator]
    ) -> list[str]: ...


class SampleCaptionCaptioner:
    """The caption stored with each source sample (``Sample.caption``)."""

    needs_source = True

    def caption(
        self, images: Sequence[Tensor] | None, samples: Sequence[Sample] | None, rngs: Sequence[np.random.Generator]
    ) -> list[str]:
        missing = [i for i, s in enumerate(samples) if not s.caption.strip()]
        if missing:
            raise ValueError(
                f"source samples {missing} have no caption (Sample.caption is empty): use a dataset with "
                "captions, or prompts 'blip2', 'labels' or 'template'"
            )
        return [s.caption for s in samples]


class LabelCaptioner:
    """The ground-truth classes of the source sample written as the Table 13 template
    ("A high-quality image of person, dog"): the GLASS variant trained with labels.

    ``class_names[i]`` is the name of class id i of the source dataset (index 0 is the
    background); names may be the dataset's own spellings ("diningtable"), which the
    lexicon maps to the label set.
    """

    needs_source = True

    def __init__(self, class_names: Sequence[str]) -> None:
        self.class_names = list(class_names)

    def caption(
        self, images: Sequence[Tensor] | None, samples: Sequence[Sample] | None, rngs: Sequence[np.random.Generator]
    ) -> list[str]:
        return [template_caption(self.names_of(s)) for s in samples]

    def names_of(self, sample: Sample) -> list[str]:
        """Dataset class names of the objects of ``sample``, without repeats."""
        names: list[str] = []
        for class_id in sample.class_ids.tolist():
            if not 0 < class_id < len(self.class_names):
                raise ValueError(
                    f"source sample {sample.meta} has class id {class_id} outside the {len(self.class_names) - 1} "
                    "classes of the dataset's class_names"
                )
            if self.class_names[class_id] not in names:
                names.append(self.class_names[class_id])
        return names


def template_caption(names: Sequence[str]) -> str:
    """Supplement Table 13 template, caption part: "A high-quality image of <obj>, <obj>, ...".

    Without objects (a source image without annotations) it reads "A high-quality image".
    """
    if not names:
        return TEMPLATE_PREFIX.removesuffix(" of ")
    return TEMPLATE_PREFIX + ", ".join(names)


@dataclass(frozen=True)
class TemplateStatistics:
    """Dataset statistics the Table 13 template sampler draws from.

    class_probability[c]: fraction of images showing class ``class_names[c]``;
    count_probability[n - 1]: fraction of images showing n distinct classes. Counts are of
    distinct classes, not instances, because the prompt and the pseudo mask are
    class-level (a count of instances would only repeat names). Images without objects
    are left out: a prompt needs at least one object.
    """

    class_names: tuple[str, ...]
    class_probability: tuple[float, ...]
    count_probability: tuple[float, ...]

    @classmethod
    def from_class_lists(cls, class_lists: Sequence[Sequence[str]], class_names: Sequence[str]) -> "TemplateStatistics":
        """Statistics of annotated images, each given as the class names it shows."""
        index = {name: i for i, name in enumerate(class_names)}
        occurrences = np.zeros(len(class_names))
        counts: list[int] = []
        for names in class_lists:
            unknown = [n for n in names if n not in index]
            if unknown:
                raise ValueError(f"class names {unknown} are not in the label set {list(class_names)}")
            present = {index[n] for n in names}
            if present:
                occurrences[list(present)] += 1
                counts.append(len(present))
        if not counts:
            raise ValueError("no annotated image with objects: the template sampler needs dataset statistics")
        count_hist = np.bincount(counts)[1:]
        return cls(
            class_names=tuple(class_names),
            class_probability=tuple(float(x) for x in occurrences / len(counts)),
            count_probability=tuple(float(x) for x in count_hist / count_hist.sum()),
        )

    def to_dict(self) -> dict:
        return {
            "class_names": list(self.class_names),
            "class_probability": list(self.class_probability),
            "count_probability": list(self.count_probability),
        }


def template_statistics(samples, dataset_class_names: Sequence[str], extractor: ClassExtractor) -> TemplateStatistics:
    """Template statistics of annotated samples, in the label set of ``extractor``.

    ``dataset_class_names[i]`` names class id i of the samples; the names are mapped to
    the label set through the lexicon (as ``LabelCaptioner`` prompts are).
    """
    captioner = LabelCaptioner(dataset_class_names)
    class_lists = [extractor(template_caption(captioner.names_of(sample))) for sample in samples]
    return TemplateStatistics.from_class_lists(class_lists, extractor.labels.classes)


class TemplateSampler:
    """Supplement Table 13 template pipeline: draw a number of objects from the
    object-count distribution, then that many distinct classes with probabilities
    proportional to their occurrence, and fill the template. Needs no image."""

    needs_source = False

    def __init__(self, statistics: TemplateStatistics) -> None:
        self.statistics = statistics
        weights = np.asarray(statistics.class_probability, dtype=np.float64)
        if weights.sum() <= 0:
            raise ValueError("template statistics give every class probability 0")
        self._class_p = weights / weights.sum()
        self._count_p = np.asarray(statistics.count_probability, dtype=np.float64)
        self._max_count = int(np.count_nonzero(weights))

    def sample_classes(self, rng: np.random.Generator) -> list[str]:
        count = min(int(rng.choice(len(self._count_p), p=self._count_p)) + 1, self._max_count)
        picked = rng.choice(len(self._class_p), size=count, replace=False, p=self._class_p)
        return [self.statistics.class_names[i] for i in picked]

    def caption(
        self, images: Sequence[Tensor] | None, samples: Sequence[Sample] | None, rngs: Sequence[np.random.Generator]
    ) -> list[str]:
        return [template_caption(self.sample_classes(rng)) for rng in rngs]


class Blip2Captioner:
    """BLIP-2 captions (GLASS Sec. 4) from a local directory holding a
    ``Blip2ForConditionalGeneration`` checkpoint and its ``Blip2Processor``.

    Decoding is greedy, so a caption depends only on the image.
    """

    needs_source = True

    def __init__(
        self, model_dir: str | Path, device: str | torch.device = "cpu", max_new_tokens: int = 30,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        from transformers import Blip2ForConditionalGeneration, Blip2Processor

        model_dir = resolve_pretrained(model_dir, "--captioner-weights", TRANSFORMERS_FILES)
        if not (model_dir / "config.json").is_file():
            raise FileNotFoundError(
                f"no BLIP-2 checkpoint in {model_dir} (config.json missing). Download one where a network is "
                "available, e.g. `hf download Salesforce/blip2-opt-2.7b --local-dir DIR`, copy DIR here and pass it "
                "with --captioner-weights DIR; or pass the hub id with --allow-download where it is online"
            )
        self.processor = Blip2Processor.from_pretrained(model_dir, local_files_only=True)
        self.model = Blip2ForConditionalGeneration.from_pretrained(
            model_dir, local_files_only=True, dtype=dtype
        ).to(device).eval()
        self.device = torch.device(device)
        self.dtype = dtype
        self.max_new_tokens = max_new_tokens

    @torch.no_grad()
    def caption(
        self, images: Sequence[Tensor] | None, samples: Sequence[Sample] | None, rngs: Sequence[np.random.Generator]
    ) -> list[str]:
        inputs = self.processor(images=[im.clamp(0, 1) for im in images], return_tensors="pt", do_rescale=False)
        pixel_values = inputs["pixel_values"].to(self.device, self.dtype)
        tokens = self.model.generate(pixel_values=pixel_values, max_new_tokens=self.max_new_tokens, do_sample=False)
        return [text.strip() for text in self.processor.batch_decode(tokens, skip_special_tokens=True)]


def save_tiny_blip2(directory: str | Path, seed: int = 0) -> Path:
    """Write a tiny random-weight BLIP-2 and its processor to ``directory`` (for tests).

    It has the real architecture (ViT, Q-Former, OPT) at toy sizes with a word-level
    tokenizer built offline; its captions are arbitrary words.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import (
        Blip2Config,
        Blip2ForConditionalGeneration,
        Blip2Processor,
        Blip2QFormerConfig,
        Blip2VisionConfig,
        OPTConfig,
        PreTrainedTokenizerFast,
    )
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    words = ["<pad>", "</s>", "<unk>", "a", "dog", "cat", "on", "the", "grass", "person", "table", "red", "circle"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.decoder = decoders.WordPiece()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", bos_token="</s>", unk_token="<unk>"
    )
    num_query_tokens = 4
    processor = Blip2Processor(BlipImageProcessorPil(size={"height": 32, "width": 32}), tokenizer, num_query_tokens)
    config = Blip2Config(
        vision_config=Blip2VisionConfig(
            hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8
        ).to_dict(),
        qformer_config=Blip2QFormerConfig(
            hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, encoder_hidden_size=16,
            vocab_size=32,
        ).to_dict(),
        text_config=OPTConfig(
            vocab_size=len(processor.tokenizer), hidden_size=16, ffn_dim=32, num_hidden_layers=1,
            num_attention_heads=2, word_embed_proj_dim=16, max_position_embeddings=64, pad_token_id=0,
            bos_token_id=1, eos_token_id=1,
        ).to_dict(),
        num_query_tokens=num_query_tokens,
        image_token_index=processor.tokenizer.convert_tokens_to_ids("<image>"),
    )
    torch.manual_seed(seed)
    directory = Path(directory)
    Blip2ForConditionalGeneration(config).save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory
