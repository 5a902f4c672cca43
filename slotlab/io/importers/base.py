"""What every importer returns, and the renaming machinery they share.

An importer maps the authors' ``state_dict`` (their key names) onto a slotlab module: it
returns an :class:`Imported` holding the slotlab config, the renamed state dict and an
:class:`ImportReport` (mapped / unused / missing keys). ``Imported.build()`` makes the module.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from slotlab.nn.decoders.mlp import MLPDecoder, MLPDecoderConfig
from slotlab.nn.slot_attention import SlotAttention, SlotAttentionConfig

MODULES: dict[type, Callable[[Any], nn.Module]] = {
    SlotAttentionConfig: SlotAttention,
    MLPDecoderConfig: MLPDecoder,
}


@dataclass
class ImportReport:
    """mapped: authors' key -> slotlab key (a computed buffer the authors store, such as GLASS's
    ``pos.pe``, maps to a description of the check it passed); unused: authors' keys that
    were not mapped; missing: slotlab parameters with no source; defaults: slotlab buffers
    left at their constructed value."""

    mapped: dict[str, str] = field(default_factory=dict)
    unused: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    defaults: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"mapped {len(self.mapped)} keys"]
        for name in ("unused", "missing", "defaults"):
            keys = getattr(self, name)
            lines.append(f"{name} ({len(keys)}): {', '.join(keys) if keys else '-'}")
        return "\n".join(lines)


@dataclass
class Imported:
    config: Any  # SlotAttentionConfig or MLPDecoderConfig
    state_dict: dict[str, Tensor]
    report: ImportReport

    def build(self, allow_missing: bool = False) -> nn.Module:
        """The slotlab module with the mapped weights (strict unless ``allow_missing``)."""
        if self.report.missing and not allow_missing:
            raise ValueError(f"the authors' weights leave slotlab parameters without a value: {self.report.missing}")
        module = MODULES[type(self.config)](self.config)
        module.load_state_dict(self.state_dict, strict=not allow_missing)
        return module


def renamed(key: str, renames: Iterable[tuple[str, str]]) -> str | None:
    """``key`` under the first matching (regex pattern, replacement), None if none matches."""
    for pattern, replacement in renames:
        new, count = re.subn(pattern, replacement, key)
        if count:
            return new
    return None


def map_keys(state: dict[str, Tensor], renames) -> tuple[dict[str, Tensor], list[str]]:
    """Apply the first matching (pattern, replacement) to each key; unmatched keys are unused."""
    mapped, unused = {}, []
    for key, value in state.items():
        new = renamed(key, renames)
        if new is None:
            unused.append(key)
        else:
            mapped[new] = value
    return mapped, unused


def prefix_renames(renames: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """Prefix renames (authors' prefix -> slotlab prefix) as patterns, longest prefix first."""
    ordered = sorted(renames, key=len, reverse=True)
    return tuple((f"^{re.escape(p)}", renames[p]) for p in ordered)


def select(state_dict: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The entries under ``prefix`` with the prefix removed."""
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


def rename(
    source: Mapping[str, Tensor],
    renames: Mapping[str, str],
    config: Any,
    convert: Mapping[str, Callable[[Tensor], Tensor]] | None = None,
    checked: Mapping[str, str] | None = None,
) -> Imported:
    """Rename ``source`` keys by prefix (``renames``: authors' prefix -> slotlab prefix, the
    longest match wins), reshape with ``convert`` (slotlab key -> function), and check every
    tensor's shape against the module ``config`` builds. ``checked`` names source keys the
    caller has already verified and that slotlab does not store (key -> description)."""
    convert = convert or {}
    patterns = prefix_renames(renames)
    with torch.random.fork_rng(devices=[]):  # only the shapes are needed: leave the global RNG alone
        module = MODULES[type(config)](config)
    expected = module.state_dict()
    buffers = {name for name, _ in module.named_buffers()}
    report = ImportReport(mapped=dict(checked or {}))
    out: dict[str, Tensor] = {}
    for key, value in source.items():
        if key in report.mapped:
            continue
        target = renamed(key, patterns)
        if target not in expected:
            report.unused.append(key)
            continue
        value = convert[target](value) if target in convert else value
        if value.shape != expected[target].shape:
            raise ValueError(
                f"authors' {key} has shape {tuple(value.shape)} but slotlab's {target} needs "
                f"{tuple(expected[target].shape)}: the weights do not fit this configuration"
            )
        out[target] = value
        report.mapped[key] = target
    for key, value in expected.items():
        if key not in out:
            if key in buffers:
                out[key] = value
                report.defaults.append(key)
            else:
                report.missing.append(key)
    return Imported(config=config, state_dict=out, report=report)


def map_mlp_decoder(state_dict: Mapping[str, Tensor], prefix: str = "") -> Imported:
    """The OCLF-style ``MlpDecoder`` of the GLASS and SPOT code (identical layouts):
    ``pos_embed`` (1, P, D) and ``decoder.{0,2,4,...}`` Linear layers with ReLUs between.
    Sizes are read off the weights; the config sets ``zero_bias_init`` as their code does."""
    source = select(state_dict, prefix)
    linears = sorted(int(k.split(".")[1]) for k in source if k.startswith("decoder.") and k.endswith(".weight"))
    if "pos_embed" not in source or not linears:
        raise ValueError(f"no MLP decoder under prefix {prefix!r}: expected pos_embed and decoder.<i>.weight")
    first, last = source[f"decoder.{linears[0]}.weight"], source[f"decoder.{linears[-1]}.weight"]
    config = MLPDecoderConfig(
        slot_dim=first.shape[1],
        feature_dim=last.shape[0] - 1,
        num_tokens=source["pos_embed"].shape[1],
        hidden_dim=first.shape[0],
        hidden_layers=len(linears) - 1,
        zero_bias_init=True,
    )
    return rename(
        source, {"pos_embed": "position", "decoder.": "mlp."}, config, convert={"position": lambda t: t.unsqueeze(1)}
    )
