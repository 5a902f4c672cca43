"""`slotlab demo`: every method's CPU preset trained on built-in scenes, evaluated, pictured.

The CPU presets' encoders are label-free: DINOSAUR's and spot-mlp's are a small network shipped
with slotlab, trained on scenes images without labels, with colour and position; GLASS's and the
autoregressive SPOT's are colour features of the pixels; SLATE and SlotDiffusion train a CNN,
guided by a VQ-VAE trained on the scenes. The ``-segmenter`` methods (e.g.
``dinosaur-segmenter``) also read the class of each pixel from a small segmenter trained on the
scenes' class maps (``encoder.semantic_model``): when one of them is chosen, the demo trains
that first, on all the cores, and points them at it.

Methods are independent, so with two or more CPU cores they train in parallel worker
processes (``jobs``), each with its share of the torch threads; every method's run is a
function of the seed alone, whichever process runs it.
"""

from __future__ import annotations

import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import torch
import yaml

from slotlab.config import load_preset
from slotlab.data.registry import build_dataset
from slotlab.data.sample import collate
from slotlab.io.cache import artefact_dir, store
from slotlab.io import layout
from slotlab.io.results import write_results
from slotlab.io.staged import begin_outputs, commit_outputs
from slotlab.methods.contract import can_generate
from slotlab.methods.segmenter import load_segmenter
from slotlab.train.config import build_train_config, to_dict
from slotlab.train.demo_methods import ALL_METHODS, DEMO_METHODS, SEGMENTER_MINUTES, DemoMethod
from slotlab.train.evaluate import block_masks, evaluate_blocks, evaluate_model
from slotlab.train.supervision import describe_supervision
from slotlab.train.trainer import train
from slotlab.viz.glossary import caveats
from slotlab.viz.overlays import overlay_grid, save_image, segmentation
from slotlab.viz.report import write_report
from slotlab.viz.run_report import demo_report


#: Downstream tasks the demo can add to the segmentation metrics (``--tasks``).
DEMO_TASKS = ("probe", "generation")
#: The frozen per-pixel classifier the ``-segmenter`` methods' encoders read (at ``SEGMENTER_INPUT``).
SEGMENTER_PRESET = "segmenter-scenes-tiny"
SEGMENTER_INPUT = "model.encoder.semantic_model"
PROTOCOL = "native"
BLOCKS = 7  # the baseline's K: the slots of the CPU presets
BLOCKS_SUPERVISION = "none (no learning)"
NUM_SHOWN = 8  # validation images in the overlay picture
FILES = (layout.METRICS_FILE, layout.OVERLAYS_FILE, layout.REPORT_FILE)
#: Folders holding one entry per method (and runs/segmenter); other entries there are not the demo's.
FOLDERS = (layout.RUNS_DIR, layout.GENERATED_DIR, layout.TASKS_DIR)


@dataclass(frozen=True)
class MethodResult:
    """What one method's worker hands back: its metrics row and the segmentation of the shown
    validation images (its pictures are in OUT/tasks/NAME)."""

    name: str
    metrics: dict
    segmentation: torch.Tensor


def _generate(preset: str, out: Path, seed: int, progress: bool) -> str:
    """Run the data engine for ``preset`` into ``out``; returns the dataset spec to train on."""
    from slotlab.config import from_dict
    from slotlab.datagen.config import GenerateConfig
    from slotlab.datagen.run import run_generation

    config = from_dict(GenerateConfig, load_preset(preset) | {"seed": seed}, where=f"preset {preset}")
    run_generation(config, out, resume=False, progress=progress)
    return f"generated:{out}"


def steps_overrides(preset: dict, steps: int | None) -> list[str]:
    """Spread ``steps`` over the preset's stages in their original proportions."""
    if steps is None:
        return []
    lengths = [stage["steps"] for stage in preset["stages"]]
    total = sum(lengths)
    return [f"stages.{i}.steps={max(1, round(steps * n / total))}" for i, n in enumerate(lengths)]


def check_tasks(tasks: tuple[str, ...]) -> tuple[str, ...]:
    unknown = sorted(set(tasks) - set(DEMO_TASKS))
    if unknown:
        raise ValueError(f"unknown demo task(s) {unknown}; choose from {list(DEMO_TASKS)}")
    return tuple(tasks)


def parse_tasks(text: str) -> tuple[str, ...]:
    """The tasks of a ``--tasks`` value: 'all', 'none' or a comma-separated list."""
    names = {"all": DEMO_TASKS, "none": ()}.get(text)
    return check_tasks(names if names is not None else tuple(t.strip() for t in text.split(",") if t.strip()))


def demo_products(methods) -> list[str]:
    """Every path (relative to the output directory) a demo of ``methods`` may write."""
    names = ["segmenter", *(m.name for m in methods), *(pretraining_run(m) for m in methods if m.pretrain)]
    return [*FILES, *(f"{folder}/{name}" for folder in FOLDERS for name in names)]


def _relocate_run_configs(staging: Path, out: Path) -> None:
    """The runs' configs name the segmenter and the generated data by their paths while
    staged; make them name the places the commit moves those to."""
    for path in [*staging.glob("runs/*/config.yaml"), *staging.glob("runs/*/**/config.json")]:
        text = path.read_text()
        if str(staging) in text:
            path.write_text(text.replace(str(staging), str(out)))


def headline(result: dict) -> dict:
    """The three numbers a demo row leads with, from an evaluation."""
    keep = ("mbo_i", "miou_i", "fg_ari")
    return {k: result["metrics"][k] for k in keep if k in result["metrics"]}


def reads(preset: dict, key: str) -> bool:
    """Does ``preset`` read the dotted setting ``key`` from an earlier run (one of its ``inputs``)?"""
    return key in (preset.get("inputs") or {})


def segmenter_override(preset: dict, method: DemoMethod, out: Path) -> list[str]:
    """For a method that reads the segmenter, point the preset's patch encoder at the demo's;
    for the others nothing: their encoder stays label-free."""
    if not method.segmenter:
        return []
    encoder = (preset["model"].get("encoder") or {}).get("name")
    if encoder != "patch":
        raise ValueError(f"demo method {method.name!r}: its preset's encoder is {encoder!r}; only the patch encoder "
                         "reads a segmenter (encoder.semantic_model)")
    return [f"{SEGMENTER_INPUT}={out / layout.RUNS_DIR / 'segmenter' / layout.MODEL_DIR}"]


def train_segmenter(out: Path, steps: int | None, seed: int, threads: int, progress: bool) -> dict:
    """The presets' segmenter in ``out/runs/segmenter`` (its config, log and ``model/``): copied
    from the cache when one was trained from the same preset, steps, seed and code
    (:mod:`slotlab.io.cache`), else trained with ``threads`` torch threads (``steps``: its
    preset's own when None) and cached; returns its metrics row (``train_steps`` 0 when it
    came from the cache)."""
    preset = load_preset(SEGMENTER_PRESET)
    config = build_train_config(preset, [f"seed={seed}", *steps_overrides(preset, steps)])
    cached = artefact_dir("segmenter", to_dict(config), seed)
    supervision = describe_supervision(to_dict(config))
    row = {"preset": SEGMENTER_PRESET, "supervision": supervision, "cache": str(cached)}
    run = out / layout.RUNS_DIR / "segmenter"
    if (cached / layout.MODEL_DIR / layout.MODEL_CONFIG_FILE).is_file():
        print(f"segmenter: reusing {cached} (same preset, steps, seed and code)", flush=True)
        store(cached, run)
        return row | {"train_seconds": 0.0, "train_steps": 0}
    print(f"segmenter: training {SEGMENTER_PRESET} for {config.total_steps} steps first, a small per-pixel classifier "
          f"({supervision}) that the -segmenter methods' encoder reads (the preset's steps take about "
          f"{SEGMENTER_MINUTES:g} minutes on 2 idle cores); kept in {cached} for the next demo", flush=True)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        result = train(config, run, progress=progress)
    finally:
        torch.set_num_threads(previous)
    store(run, cached, ignore=(layout.CHECKPOINT_DIR,))
    print(f"segmenter: trained in {result.train_seconds:.0f} s", flush=True)
    return row | {"train_seconds": round(result.train_seconds, 2), "train_steps": result.steps}


def pretrain(method: DemoMethod, out: Path, overrides: list[str], steps: int | None, progress: bool) -> dict:
    """Train what ``method`` starts from (``method.pretrain``; ``overrides`` as the method's,
    e.g. its data) into ``out/runs/<name>-<run>``; its metrics row, ``model`` its weights."""
    preset = load_preset(method.pretrain.preset)
    config = build_train_config(
        preset, [*overrides, *segmenter_override(preset, method, out), *steps_overrides(preset, steps)])
    result = train(config, out / layout.RUNS_DIR / pretraining_run(method), progress=progress)
    return {"train_seconds": round(result.train_seconds, 2), "train_steps": result.steps,
            "preset": method.pretrain.preset, "model": str(result.model_dir)}


def pretraining_run(method: DemoMethod) -> str:
    return f"{method.name}-{method.pretrain.run}"


def run_method(
    method: DemoMethod, out: Path, steps: int | None, seed: int, tasks: tuple[str, ...], progress: bool,
    threads: int | None = None, bar_position: int = 0,
) -> MethodResult:
    """Train, evaluate and picture one method (in this process or a worker)."""
    if threads is not None:
        torch.set_num_threads(threads)
    start = time.perf_counter()
    preset = load_preset(method.preset)
    overrides, timed = [f"seed={seed}"], {}  # overrides shared with the pretraining; steps are each preset's own
    if method.generate_preset is not None:
        data = _generate(method.generate_preset, out / layout.GENERATED_DIR / method.name, seed,
                         progress and bar_position == 0)
        overrides.append(f"data.train={data}")
        timed["generate_seconds"] = round(time.perf_counter() - start, 1)
    pretrained = None
    if method.pretrain is not None and reads(preset, method.pretrain.key):
        pretrained = pretrain(method, out, overrides, steps, progress)
        overrides.append(f"{method.pretrain.key}={pretrained['model']}")
    config = build_train_config(
        preset, [*overrides, *segmenter_override(preset, method, out), *steps_overrides(preset, steps)])
    val = build_dataset(config.data.val)
    result = train(config, out / layout.RUNS_DIR / method.name, progress=progress, bar_position=bar_position)
    evaluation = evaluate_model(result.model, val, protocol=config.eval_protocol, progress=False)
    metrics = headline(evaluation) | {
        "supervision": describe_supervision(to_dict(config)),
        "train_seconds": round(result.train_seconds, 2),
        "train_steps": result.steps,
        "train_precision": result.precision,
        "protocol": evaluation["protocol"],
        "preset": method.preset,
    } | timed
    if pretrained is not None:
        run = method.pretrain.run
        metrics |= {f"{run}_train_seconds": pretrained["train_seconds"], f"{run}_train_steps": pretrained["train_steps"],
                    f"{run}_preset": pretrained["preset"]}
    shown = collate([val[i] for i in range(NUM_SHOWN)])
    decomposition = result.model.decompose(shown.image, seed=seed)
    if "probe" in tasks and decomposition.features is None:  # the probes' references pool encoder tokens
        metrics["probe_skipped"] = f"{type(result.model).__name__}.decompose gives no encoder tokens"
    elif "probe" in tasks:
        metrics |= _probe(result.model, seed)
    if "generation" in tasks and can_generate(result.model):
        from slotlab.train.generation_tasks import run_generation_tasks

        metrics |= run_generation_tasks(result.model, val, out / layout.TASKS_DIR / method.name, seed)[0]
    shown_segmentation = segmentation(decomposition.masks)
    metrics["seconds"] = round(time.perf_counter() - start, 1)
    return MethodResult(method.name, metrics, shown_segmentation)


#: Scenes the probes learn from (train split) and are scored on (val split).
PROBE_TRAIN, PROBE_TEST = "scenes?split=train&size=500", "scenes?split=val&size=256"


def _probe(model, seed: int) -> dict:
    """Linear probes on frozen slots (GLASS Table 8 protocol): class accuracy, centre MSE."""
    from slotlab.metrics.probe import run_probes

    probes = run_probes(model, build_dataset(PROBE_TRAIN), build_dataset(PROBE_TEST), seed=seed)
    keys = ("class_accuracy", "class_accuracy_majority_baseline", "centre_mse", "centre_mse_mean_baseline",
            "mask_mass_on_object", "object_features_class_accuracy", "object_features_centre_mse",
            "image_features_class_accuracy", "image_features_centre_mse")
    return {f"probe_{key}": probes[key] for key in keys}


def default_jobs(num_methods: int) -> int:
    """One worker per method, at most one per CPU core."""
    return max(1, min(num_methods, os.cpu_count() or 1))


def die_with_parent() -> None:
    """Worker initialiser: on Linux, end this worker when the demo process dies (a killed demo
    must not leave orphans training on); elsewhere a no-op."""
    import ctypes
    import signal
    import sys

    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _run_all(
    methods, out: Path, steps: int | None, seed: int, tasks: tuple[str, ...], progress: bool, jobs: int,
) -> list[MethodResult]:
    if jobs <= 1:
        return [run_method(m, out, steps, seed, tasks, progress) for m in methods]
    threads = max(1, torch.get_num_threads() // jobs)
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn"), initializer=die_with_parent) as pool:
        futures = [pool.submit(run_method, m, out, steps, seed, tasks, progress, threads, i)
                   for i, m in enumerate(methods)]
        return [f.result() for f in futures]


def run_demo(
    out: Path, steps: int | None = None, seed: int = 0, methods=DEMO_METHODS, progress: bool = True,
    tasks: tuple[str, ...] = DEMO_TASKS, jobs: int | None = None, segmenter: Path | None = None,
) -> dict:
    """Train and evaluate each method of ``methods`` (``jobs`` at a time); write metrics.json,
    overlays.png, report.html (and the tasks' pictures) into ``out``. Everything is written
    into a fresh folder inside ``out`` and moved into place once complete, replacing an
    earlier demo's outputs only then; files in ``out`` that no demo wrote are never touched
    (a run that would overwrite them is refused before it starts). See
    :mod:`slotlab.io.staged`.

    ``segmenter``: a trained segmenter checkpoint (e.g. an earlier demo's
    ``runs/segmenter/model``) that the ``-segmenter`` methods read instead of training one.
    """
    tasks = check_tasks(tasks)
    jobs = default_jobs(len(methods)) if jobs is None else jobs
    if jobs < 1:
        raise ValueError(f"--jobs must be at least 1, got {jobs}")
    if steps is not None and steps < 1:
        raise ValueError(f"--steps must be at least 1, got {steps}")
    if segmenter is not None and not any(m.segmenter for m in methods):
        raise ValueError(f"--segmenter {segmenter}: none of the methods {[m.name for m in methods]} reads a segmenter; "
                         f"choose one that does ({', '.join(m.name for m in ALL_METHODS if m.segmenter)}) or drop "
                         "--segmenter")
    given = None if segmenter is None else load_segmenter(segmenter, "--segmenter")
    staging = begin_outputs(out, demo_products(methods))
    try:
        results = _write_demo(staging, out, steps, seed, methods, progress, tasks, jobs, given, segmenter)
    except BaseException:  # an interrupted or failed demo leaves the earlier outputs alone, and no half of its own
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _relocate_run_configs(staging, out)
    commit_outputs(staging, out)
    return results


def _given_segmenter(model, path: Path, run: Path) -> dict:
    """The ``--segmenter`` checkpoint in ``run/model``, with the training config saved beside it
    (if any: it says what the segmenter was trained on); its metrics row."""
    model.save_pretrained(run / layout.MODEL_DIR)
    config = {"method": "segmenter"}
    if (path.parent / layout.RUN_CONFIG_FILE).is_file():
        shutil.copy(path.parent / layout.RUN_CONFIG_FILE, run / layout.RUN_CONFIG_FILE)
        config = yaml.safe_load((run / layout.RUN_CONFIG_FILE).read_text()) or config
    return {"train_steps": 0, "train_seconds": 0.0, "model": str(path), "supervision": describe_supervision(config)}


def _write_demo(staging: Path, out: Path, steps, seed, methods, progress, tasks, jobs, given, segmenter) -> dict:
    """The body of :func:`run_demo`: everything written into ``staging``, paths reported as in ``out``."""
    segmenter_row = None
    if any(m.segmenter for m in methods):
        if given is not None:
            segmenter_row = _given_segmenter(given, segmenter, staging / layout.RUNS_DIR / "segmenter")
        else:
            # Alone and first, so on every core; the same count whatever --jobs keeps its run identical.
            segmenter_row = train_segmenter(staging, steps, seed, os.cpu_count() or 1, progress)
            segmenter_row["model"] = str(out / layout.RUNS_DIR / "segmenter" / layout.MODEL_DIR)
    finished = _run_all(methods, staging, steps, seed, tasks, progress, jobs)
    results = {r.name: r.metrics for r in finished}
    for r in finished:
        print(f"{r.name}: {r.metrics}")
    for name, row in results.items():
        for note in caveats(name, row):
            print(note)
    val_spec = build_train_config(load_preset(methods[0].preset)).data.val
    val = build_dataset(val_spec)
    shown = collate([val[i] for i in range(NUM_SHOWN)])
    blocks = evaluate_blocks(val, num_slots=BLOCKS, grid=(16, 16), protocol=PROTOCOL)
    results["blocks"] = headline(blocks) | {"supervision": BLOCKS_SUPERVISION, "train_seconds": 0.0,
                                            "protocol": blocks["protocol"]}
    if segmenter_row is not None:
        results["segmenter"] = segmenter_row
    columns = {"ground truth": shown.instance_mask, **{r.name: r.segmentation for r in finished},
               "blocks": segmentation(block_masks(NUM_SHOWN, BLOCKS, *shown.image.shape[-2:]))}
    save_image(overlay_grid(shown.image, columns, scale=3), staging / layout.OVERLAYS_FILE,
               "Validation images (one a row), their ground-truth instances and each method's slot masks")
    notes = [f"{len(val)} scenes val images, protocol '{PROTOCOL}', seed {seed}. Each method's section below has "
             "every other number, its training curves and pictures; the glossary says what each number means."]
    write_report(staging / layout.REPORT_FILE, demo_report(staging, results, notes + _task_notes(tasks)))
    write_results(staging / layout.METRICS_FILE, results)
    return results


def _task_notes(tasks: tuple[str, ...]) -> list[str]:
    notes = []
    if "probe" in tasks:
        notes.append(f"Probes (probe_*): linear probes on frozen slots, trained on {PROBE_TRAIN} and scored on "
                     f"{PROBE_TEST}.")
    if "generation" in tasks:
        from slotlab.train.generation_tasks import GENERATION_NOTE

        notes.append(GENERATION_NOTE)
    return notes
