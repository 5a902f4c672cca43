"""Build any dataset from one string: ``NAME[:ROOT][?key=value&key=value...]``.

Examples::

    coco:/data/coco?split=val2017
    coco:fixtures/coco_instances_sample?annotations=instances.json&images=images
    coco-panoptic:/data/coco?split=val2017&void=ignore
    voc:/data/VOC2012?split=trainaug&resize=224&random_crop=224&flip=0.5
    clevrtex:/data/clevrtex?split=val&variant=full
    movi:/data/movi_c?split=validation
    clevr-masks:/data/clevr_masks
    folder:~/photos?resize=256&crop=256
    packed:/data/coco_val_256
    scenes?split=val&size=500&resolution=64

The keys of a dataset are the parameters of its constructor (``slotlab data inspect
--help`` lists them); values are parsed by the parameter's type (``true``/``false`` for
booleans, ``none`` for an optional number or flag left unset; percent-escapes are decoded),
as config values are (:func:`slotlab.config.coerce`). Four
keys apply to every dataset and build its sample transform, in this order:
``resize=S`` (shorter side to S), ``crop=S`` (centre S x S) or ``random_crop=S``, and
``flip=P`` (horizontal flip with probability P). An unknown name or key is an error that
lists the valid ones.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qsl, quote

from torch.utils.data import Dataset

from slotlab.config import ConfigError, coerce
from slotlab.data.imageio import DatasetError
from slotlab.data.sample import Sample
from slotlab.data.sample_transforms import (
    CenterCrop,
    Compose,
    RandomCrop,
    RandomHorizontalFlip,
    SampleTransform,
    ShorterSideResize,
)


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed dataset spec; ``str(spec)`` gives the string form back."""

    name: str
    root: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        text = self.name if self.root is None else f"{self.name}:{self.root}"
        if self.options:
            text += "?" + "&".join(f"{k}={quote(str(v), safe='/:.,-_~')}" for k, v in self.options.items())
        return text


@dataclass(frozen=True)
class _Entry:
    target: str  # "module:Class", imported only when the dataset is built
    needs_root: bool
    summary: str


DATASETS: dict[str, _Entry] = {
    "coco": _Entry("slotlab.data.coco:COCOInstances", True, "COCO instances_*.json + images"),
    "coco-panoptic": _Entry("slotlab.data.coco:COCOPanoptic", True, "COCO panoptic JSON + PNGs (stuff = background)"),
    "voc": _Entry("slotlab.data.voc:VOCSegmentation", True, "PASCAL VOC SegmentationObject/Class"),
    "clevrtex": _Entry("slotlab.data.clevrtex:ClevrTex", True, "ClevrTex images + _flat.png masks"),
    "clevr-masks": _Entry("slotlab.data.clevrtex:ClevrMasks", True, "CLEVR_image_<i>.png + CLEVR_mask_<i>_<k>.png"),
    "movi": _Entry("slotlab.data.movi:MOViFrames", True, "MOVi frames exported as rgba_/segmentation_ PNGs"),
    "generated": _Entry("slotlab.data.generated:GeneratedDataset", True, "shards written by slotlab generate"),
    "folder": _Entry("slotlab.data.folder:ImageFolder", True, "any folder of images, masks optional"),
    "packed": _Entry("slotlab.data.packed:PackedDataset", True, "tar shards written by slotlab.data.packed.convert"),
    "scenes": _Entry("slotlab.data.scenes:ScenesDataset", False, "built-in procedural scenes (no files)"),
}

#: Keys every dataset accepts; they build the sample transform (applied in this order).
TRANSFORM_KEYS: dict[str, type] = {"resize": int, "crop": int, "random_crop": int, "flip": float}

# Constructor parameters that are not spec keys.
_NOT_KEYS = {"self", "root", "transform", "strict", "config"}


def parse_spec(text: str) -> DatasetSpec:
    """``NAME[:ROOT][?k=v&...]`` -> DatasetSpec (values stay strings until the build)."""
    text = text.strip()
    head, _, query = text.partition("?")
    name, colon, root = head.partition(":")
    if not name:
        raise DatasetError(f"dataset spec {text!r} has no name; write NAME:ROOT?key=value (names: {_names()})")
    options: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)):
        if key in options:
            raise DatasetError(f"dataset spec {text!r} sets {key!r} twice")
        options[key] = value
    if colon and not root:
        raise DatasetError(f"dataset spec {text!r} has an empty ROOT after ':'")
    return DatasetSpec(name, str(Path(root).expanduser()) if root else None, options)


def _names() -> str:
    return ", ".join(DATASETS)


def _target(entry: _Entry) -> type:
    module, _, attr = entry.target.partition(":")
    return getattr(importlib.import_module(module), attr)


def _scenes_parts():
    from slotlab.data.scenes import ScenesConfig, ScenesDataset

    return ScenesDataset, ScenesConfig


def option_types(name: str) -> dict[str, Any]:
    """Spec key -> annotated type for dataset ``name`` (transform keys included)."""
    entry = _entry(name)
    cls = _target(entry)
    hints = typing.get_type_hints(cls.__init__)
    keys = {}
    for parameter in inspect.signature(cls.__init__).parameters.values():
        if parameter.kind is parameter.VAR_KEYWORD:  # **options: Unpack[SomeOptions] (a TypedDict)
            (options,) = typing.get_args(hints[parameter.name])
            keys.update({k: v for k, v in typing.get_type_hints(options).items() if k not in _NOT_KEYS})
        elif parameter.name not in _NOT_KEYS:
            keys[parameter.name] = hints[parameter.name]
    if name == "scenes":
        _, config_cls = _scenes_parts()
        keys.update(typing.get_type_hints(config_cls))
    return {**keys, **TRANSFORM_KEYS}


def _entry(name: str) -> _Entry:
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; valid names: {_names()}")
    return DATASETS[name]


def _typed(options: dict[str, Any], types_: dict[str, Any], name: str) -> dict[str, Any]:
    """Spec values parsed by their keys' types (:func:`slotlab.config.coerce`); errors name ``NAME?key``."""
    try:
        return {k: coerce(v, types_[k], f"{name}?{k}") for k, v in options.items()}
    except ConfigError as err:
        raise DatasetError(str(err)) from None


def spec_transform(options: dict[str, Any], name: str) -> SampleTransform | None:
    """The transform described by the TRANSFORM_KEYS of ``options`` (None when there are none)."""
    values = _typed({k: options[k] for k in TRANSFORM_KEYS if k in options}, TRANSFORM_KEYS, name)
    if "crop" in values and "random_crop" in values:
        raise DatasetError(f"{name}: give either crop= or random_crop=, not both")
    steps = []
    if "resize" in values:
        steps.append(ShorterSideResize(values["resize"]))
    if "crop" in values:
        steps.append(CenterCrop(values["crop"]))
    if "random_crop" in values:
        steps.append(RandomCrop(values["random_crop"]))
    if "flip" in values:
        steps.append(RandomHorizontalFlip(values["flip"]))
    return Compose(steps) if steps else None


def _chain(first: SampleTransform | None, second: SampleTransform | None) -> SampleTransform | None:
    if first is None or second is None:
        return first or second
    return Compose([first, second])


class TransformedDataset(Dataset):
    """``dataset[i]`` passed through ``transform``; other attributes come from ``dataset``."""

    def __init__(self, dataset: Dataset, transform: Callable[[Sample], Sample]) -> None:
        self.dataset = dataset
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Sample:
        return self.transform(self.dataset[index])

    def __getattr__(self, name: str) -> Any:
        if name == "dataset":  # not yet set (e.g. while unpickling)
            raise AttributeError(name)
        return getattr(self.dataset, name)


def build_dataset(
    spec: str | DatasetSpec, transform: SampleTransform | None = None, strict: bool = False
) -> Dataset:
    """The dataset a spec names. ``transform`` runs after the spec's own transform keys."""
    spec = parse_spec(spec) if isinstance(spec, str) else spec
    entry = _entry(spec.name)
    if entry.needs_root and spec.root is None:
        raise DatasetError(f"dataset {spec.name!r} needs a root: write {spec.name}:ROOT?key=value")
    if not entry.needs_root and spec.root is not None:
        raise DatasetError(f"dataset {spec.name!r} takes no root: write {spec.name}?key=value")
    types_ = option_types(spec.name)
    unknown = sorted(set(spec.options) - set(types_))
    if unknown:
        raise DatasetError(f"unknown key(s) {unknown} for dataset {spec.name!r}; valid keys: {', '.join(types_)}")
    transform = _chain(spec_transform(spec.options, spec.name), transform)
    kwargs = _typed({k: v for k, v in spec.options.items() if k not in TRANSFORM_KEYS}, types_, spec.name)
    if spec.name == "scenes":
        return _build_scenes(kwargs, transform)
    return _target(entry)(spec.root, **kwargs, transform=transform, strict=strict)


def _build_scenes(kwargs: dict[str, Any], transform: SampleTransform | None) -> Dataset:
    scenes_cls, config_cls = _scenes_parts()
    config_keys = {f.name for f in dataclasses.fields(config_cls)}
    config = config_cls(**{k: v for k, v in kwargs.items() if k in config_keys})
    dataset = scenes_cls(config=config, **{k: v for k, v in kwargs.items() if k not in config_keys})
    return dataset if transform is None else TransformedDataset(dataset, transform)


def describe_datasets() -> str:
    """One paragraph per dataset: its spec form, summary and keys."""
    lines = []
    for name, entry in DATASETS.items():
        form = f"{name}:ROOT" if entry.needs_root else name
        try:
            keys = ", ".join(k for k in option_types(name) if k not in TRANSFORM_KEYS)
        except ImportError as err:  # a dataset module that cannot be imported here
            keys = f"(unavailable: {err})"
        lines.append(f"  {form}?...  {entry.summary}\n      keys: {keys}")
    lines.append(f"  every dataset also takes: {', '.join(TRANSFORM_KEYS)}")
    return "\n".join(lines)
