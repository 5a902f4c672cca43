"""The methods `slotlab demo` can train, what each needs first, and how long each takes.

Light on purpose: the CLI builds ``slotlab demo --help`` from this module before importing
anything heavy.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, replace

WIDTH = 78  # of the --help text


@dataclass(frozen=True)
class Pretraining:
    """A model the method's preset starts from, trained first by the demo when the preset sets
    ``key``: ``preset`` is trained into ``runs/<method>-<run>`` and its model directory given
    to the method as ``key`` (e.g. GLASS's pretrained decoder, SLATE's VQ-VAE)."""

    preset: str
    key: str
    run: str


@dataclass(frozen=True)
class DemoMethod:
    """One entry of the demo: its name in metrics.json, its training preset, for methods that
    train on data-engine images the generation preset, what it pretrains first, and whether
    its patch encoder (and that of what it pretrains) also reads the demo's segmenter, a
    per-pixel classifier trained WITH the scenes' class maps: off in the label-free presets'
    own rows, on in the ``-segmenter`` rows."""

    name: str
    preset: str
    generate_preset: str | None = None
    pretrain: Pretraining | None = None
    segmenter: bool = False


GLASS_DECODER = Pretraining("glass-tiny-decoder", "model.decoder_init", "decoder")

#: What the default demo trains. GLASS trains on images of its data engine (scenes backend)
#: and is evaluated on real scenes val.
DEMO_METHODS = (
    DemoMethod("dinosaur", "dinosaur-tiny"),
    DemoMethod("glass", "glass-tiny", "generate-scenes-tiny", GLASS_DECODER),
)
#: Every other method slotlab implements, at its CPU preset on the scenes (``--methods``).
EXTRA_METHODS = (
    DemoMethod("spot", "spot-tiny"),
    # SPOT with the MLP decoder: stage 2 (self-training) with stage 1 trained first as its teacher.
    DemoMethod("spot-mlp", "spot-mlp-tiny-stage2", pretrain=Pretraining("spot-mlp-tiny", "model.teacher", "stage1")),
    DemoMethod("slate", "slate-scenes-tiny", pretrain=Pretraining("vqvae-scenes-tiny", "model.vqvae", "vqvae")),
    DemoMethod("slate-msf", "slate-msf-scenes-tiny",
               pretrain=Pretraining("vqvae-msf-scenes-tiny", "model.vqvae", "vqvae")),
    DemoMethod("slotdiffusion", "slotdiffusion-scenes-tiny",
               pretrain=Pretraining("vqvae-c4-scenes-tiny", "model.vqvae", "vqvae")),
    DemoMethod("slotdiffusion-msf", "slotdiffusion-msf-scenes-tiny",
               pretrain=Pretraining("vqvae-msf-c4-scenes-tiny", "model.vqvae", "vqvae")),
    # The same with the supervised segmenter's class probabilities in the encoder: what labels add.
    DemoMethod("dinosaur-segmenter", "dinosaur-tiny-patch", segmenter=True),
    DemoMethod("glass-segmenter", "glass-tiny", "generate-scenes-tiny", GLASS_DECODER, segmenter=True),
)
ALL_METHODS = DEMO_METHODS + EXTRA_METHODS

#: Minutes each method's demo job takes (data generation, pretraining, training, evaluation
#: and the default tasks; the segmenter apart) on one torch thread, as a demo worker runs it:
#: CPU seconds measured by ``benchmarks/bench_demo.py --each --steps N`` at N = 20 and 60 and
#: brought to the presets' steps by ``benchmarks/demo_minutes.py`` (TIMED_ON says where).
#: dinosaur: demo-each-{20,60}-dinosaur-ssl.json (dinosaur-tiny on the learned encoder); glass
#: and spot: demo-each-{20,60}-glass-spot.json; spot-mlp: demo-each-{20,60}-spot-mlp.json; the others:
#: demo-each-{20,60}-others.json.
MINUTES: dict[str, float] = {
    "dinosaur": 4.6,
    "glass": 5.8,
    "dinosaur-segmenter": 5.1,
    "glass-segmenter": 6.2,
    "spot": 5.1,
    "spot-mlp": 13.1,
    "slate": 19.5,
    "slate-msf": 19.3,
    "slotdiffusion": 21.4,
    "slotdiffusion-msf": 19.2,
}
#: The segmenter the ``-segmenter`` methods read, trained first on every core (then cached):
#: benchmarks/results/demo-segmenter.json (102 s on 2 idle cores).
SEGMENTER_MINUTES = 1.6
TIMED_ON = ("CPU time on a 2-vCPU Intel Xeon with AVX-512 BF16, benchmarks/results/demo-each-*.json, each "
            "method with at most one other job beside it; in the default demo the dinosaur and glass jobs "
            "took 4.7 and 5.8 min there, 5.1 and 7.2 min on a 2-vCPU AMD EPYC, benchmarks/results/demo.json")


def _minutes(name: str) -> str:
    return f"{MINUTES[name]:.0f} min" if name in MINUTES else "not timed"


def _recipe(method: DemoMethod) -> str:
    first = [p for p in (method.generate_preset, method.pretrain and method.pretrain.preset) if p]
    recipe = method.preset + (f" after {' + '.join(first)}" if first else "")
    return recipe + (", + segmenter" if method.segmenter else "")


def methods_help() -> str:
    """The table of what ``--methods`` offers and how long each takes (``slotlab demo --help``)."""
    width = max(len(m.name) for m in ALL_METHODS)
    rows = [f"  {m.name:<{width}}  {_minutes(m.name):>9}  {_recipe(m)}" for m in ALL_METHODS]
    head = (f"methods (--methods; default {','.join(m.name for m in DEMO_METHODS)}), with the minutes each takes "
            f"alone on one thread, as a demo worker runs it ({TIMED_ON}); the demo runs one method per core at once:")
    readers = " and ".join(m.name for m in ALL_METHODS if m.segmenter)
    tail = (f"Every method's features are label-free unless its name says segmenter: {readers} first train the "
            f"segmenter on the scenes' class maps, {SEGMENTER_MINUTES} min on every core, then cached.")
    wrap = textwrap.TextWrapper(WIDTH, break_on_hyphens=False).fill
    return "\n".join([wrap(head), *rows, wrap(tail)])


def select_methods(names: list[str] | None) -> tuple[DemoMethod, ...]:
    """The demo methods named in ``names`` (None: the default ones), in the order given."""
    if names is None:
        return DEMO_METHODS
    known = {m.name: m for m in ALL_METHODS}
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ValueError(f"--methods {','.join(names)}: choose one or more of {list(known)}")
    return tuple(known[n] for n in dict.fromkeys(names))


def with_presets(methods: tuple[DemoMethod, ...], assignments: list[str]) -> tuple[DemoMethod, ...]:
    """``methods`` with presets replaced by ``NAME=PRESET`` assignments (``--preset``); the new
    preset must train the same method, so a variant (e.g. ``glass=glass-tiny-compose``) takes
    the place of the CPU preset."""
    from slotlab.config import load_preset

    by_name = {m.name: m for m in methods}
    for assignment in assignments:
        name, sep, preset = assignment.partition("=")
        if not sep or name not in by_name or not preset:
            raise ValueError(f"--preset {assignment!r}: write NAME=PRESET with NAME one of {list(by_name)}")
        expected, found = load_preset(by_name[name].preset)["method"], load_preset(preset).get("method")
        if found != expected:
            raise ValueError(f"--preset {assignment!r}: preset {preset!r} trains method {found!r}, not {expected!r}")
        by_name[name] = replace(by_name[name], preset=preset)
    return tuple(by_name[m.name] for m in methods)
