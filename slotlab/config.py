"""Typed dataclass configs: build from dicts/YAML with strict key checking, dotted overrides."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

PRESET_DIR = Path(__file__).parent / "presets"


class ConfigError(ValueError):
    """A config value or key is wrong; the message names it and how to fix it."""


@dataclasses.dataclass(frozen=True)
class Range:
    """The valid values of a numeric config field: ``low <= value`` (``low < value`` when
    ``low_open``) and ``value <= high`` (``<`` when ``high_open``), always finite. For a
    list, tuple or mapping field, every item is checked."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __str__(self) -> str:
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return f"{'<' if self.high_open else '<='} {self.high:g}"

    def contains(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below

    def check(self, value: Any, where: str) -> None:
        """Raise ConfigError naming ``where`` and the range unless ``value`` (or each of its items) lies in it."""
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, (list, tuple)) else None
        if items is not None:
            for key, item in items:
                self.check(item, f"{where}.{key}" if isinstance(value, dict) else f"{where}[{key}]")
        elif value is not None and not self.contains(value):
            raise ConfigError(f"{where} must be {self}, got {value!r}")


class NumberOption:
    """An argparse ``type`` for a numeric command-line option: parses ``kind`` (int or float)
    and checks it against ``range``; argparse then exits with code 2 and a message naming the
    option, e.g. "argument --steps: must be an integer >= 1, got '0'"."""

    def __init__(self, kind: type, **bounds) -> None:
        self.kind, self.range = kind, Range(**bounds)

    def __call__(self, text: str):
        import argparse

        try:
            value = self.kind(text)
        except ValueError:
            value = None
        if value is None or not self.range.contains(value):
            raise argparse.ArgumentTypeError(f"must be {'an integer' if self.kind is int else 'a number'} {self.range}, "
                                             f"got {text!r}")
        return value


def int_option(**bounds) -> NumberOption:
    """An integer command-line option in ``Range(**bounds)`` (see :class:`NumberOption`)."""
    return NumberOption(int, **bounds)


def float_option(**bounds) -> NumberOption:
    """A real-valued command-line option in ``Range(**bounds)`` (see :class:`NumberOption`)."""
    return NumberOption(float, **bounds)


class ConfigFamily:
    """Base of a dataclass config that stands for a family of configs told apart by one of its
    fields (``EncoderConfig``, by ``encoder.name``): :func:`coerce` builds the member class that
    :meth:`config_class_for` names for the mapping it parses."""

    @classmethod
    def config_class_for(cls, data: dict) -> type:
        """The member config class for ``data``; a ValueError naming the field and its choices if none."""
        raise NotImplementedError(f"{cls.__name__} must name its member config classes")


def bounded(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING, **bounds) -> Any:
    """A dataclass field whose values :func:`from_dict` checks against ``Range(**bounds)``."""
    return dataclasses.field(default=default, default_factory=default_factory, metadata={"range": Range(**bounds)})


def check_ranges(config: Any, where: str = "") -> None:
    """Check every :func:`bounded` field of the dataclass instance ``config`` against its range
    (for ``__post_init__``, so that a config built in code is checked as :func:`from_dict` checks
    one); errors name the field after ``where`` (e.g. ``"encoder."``)."""
    for f in dataclasses.fields(config):
        if "range" in f.metadata:
            f.metadata["range"].check(getattr(config, f.name), f"{where}{f.name}")


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """``X | None`` -> (X, True); other types -> (type, whether None is one of its members)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else tp), len(rest) < len(args)
    return tp, False


_TRUE, _FALSE = ("true", "yes", "1"), ("false", "no", "0")


def _parse_text(text: str, inner: Any, optional: bool, where: str) -> Any:
    """Text (a dataset spec's ``key=value``, a quoted YAML scalar) read as type ``inner``."""
    if optional and text.lower() in ("none", "null"):
        return None
    if inner is bool:
        if text.lower() not in _TRUE + _FALSE:
            raise ConfigError(f"{where} must be true or false, got {text!r}")
        return text.lower() in _TRUE
    if inner is int:
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"{where} must be int, got {text!r}") from None
    if inner is float:  # YAML 1.1 reads "1e-8" (no dot) as a string
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"{where} must be a number, got {text!r}") from None
    if inner is Path or (typing.get_origin(inner) in (typing.Union, types.UnionType) and Path in typing.get_args(inner)):
        return str(Path(text).expanduser())
    return text


def coerce(value: Any, tp: Any, where: str) -> Any:
    """The one conversion of a config value to its annotated type ``tp`` (YAML presets, ``--set``
    overrides, saved configs and dataset specs): typed values are checked, text is parsed by the
    type (``true``/``false``, numbers, ``none`` for an optional value). Raises ConfigError
    naming ``where``."""
    inner, optional = _unwrap_optional(tp)
    if value is None:
        if optional or tp is Any:
            return None
        raise ConfigError(f"{where} may not be null")
    if isinstance(value, str) and inner is not str:
        value = _parse_text(value, inner, optional, where)
        if value is None:
            return None
    if typing.get_origin(inner) is typing.Literal:
        choices = typing.get_args(inner)
        if value not in choices:
            raise ConfigError(f"{where} must be one of {', '.join(map(str, choices))}, got {value!r}")
        return value
    if dataclasses.is_dataclass(inner):
        if isinstance(value, inner):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping of {inner.__name__} fields, got {value!r}")
        if issubclass(inner, ConfigFamily):
            try:
                inner = inner.config_class_for(value)
            except ValueError as err:
                raise ConfigError(f"{where}: {err}") from err
        return from_dict(inner, value, where)
    origin = typing.get_origin(inner)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        args = typing.get_args(inner)
        item = args[0] if args else Any
        items = [coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        _, vt = typing.get_args(inner) or (Any, Any)
        return {str(k): coerce(v, vt, f"{where}.{k}") for k, v in value.items()}
    if inner is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if inner is bool and not isinstance(value, bool):
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if inner in (int, str, float) and not isinstance(value, inner) or (inner is int and isinstance(value, bool)):
        raise ConfigError(f"{where} must be {inner.__name__}, got {value!r}")
    return value


def from_dict(cls: type[T], data: dict, where: str = "config") -> T:
    """Build dataclass ``cls`` from a nested dict; unknown keys are errors listing valid ones."""
    types_ = _field_types(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"unknown key(s) {sorted(unknown)} in {where}; valid keys: {sorted(names)}")
    kwargs = {k: coerce(v, types_[k], f"{where}.{k}") for k, v in data.items()}
    for f in dataclasses.fields(cls):
        if "range" in f.metadata and f.name in kwargs:
            f.metadata["range"].check(kwargs[f.name], f"{where}.{f.name}")
    try:
        return cls(**kwargs)
    except ConfigError:  # it names its field already
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: {err}") from err


def to_dict(config: Any) -> Any:
    """Nested plain-Python (YAML/JSON-safe) form of a dataclass config."""
    if dataclasses.is_dataclass(config):
        return {f.name: to_dict(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, (list, tuple)):
        return [to_dict(v) for v in config]
    if isinstance(config, dict):
        return {k: to_dict(v) for k, v in config.items()}
    return config


def parse_override(text: str) -> tuple[list[str], Any]:
    """'a.b.c=value' -> (['a','b','c'], value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.path=value")
    key, raw = text.split("=", 1)
    try:
        return key.strip().split("."), yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"--set {text!r}: the value {raw!r} is not valid YAML ({problem}); write e.g. "
                          f"{key}=[1, 2] for a list, or quote a string: {key}='...'") from None


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply 'key.path=value' overrides to nested dicts/lists ('stages.0.steps=5' indexes a
    list); key names are validated later by from_dict, list indices here."""
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for depth, part in enumerate(path):
            last = depth == len(path) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(f"override {text!r}: {part!r} is not an index of a {len(node)}-item list")
                if last:
                    node[int(part)] = value
                else:
                    node = node[int(part)]
            elif isinstance(node, dict):
                if last:
                    node[part] = value
                else:
                    node = node.setdefault(part, {})
            else:
                raise ConfigError(f"override {text!r}: {'.'.join(path[:depth])!r} is a value, not a section")
    return data


#: Presets of `slotlab generate` share the folder under this prefix.
GENERATE_PREFIX = "generate-"


def list_presets() -> list[str]:
    """Training presets (the generation presets are listed by ``slotlab generate --help``)."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml") if not p.stem.startswith(GENERATE_PREFIX))


def load_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping at top level")
    return data


def load_preset(name: str) -> dict:
    """A preset by name (slotlab/presets/NAME.yaml) or a path to a YAML file."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml"):
        return load_yaml(path)
    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown preset {name!r}; available: {', '.join(list_presets())} (or a path to a .yaml)")
    return load_yaml(path)
