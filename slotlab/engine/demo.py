"""`slotlab demo`: every method's CPU preset trained on built-in scenes, evaluated, pictured."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import torch

from slotlab.config import load_preset
from slotlab.data.registry import build_dataset
from slotlab.data.sample import collate
from slotlab.engine.config import build_train_config
from slotlab.engine.evaluate import block_masks, evaluate_blocks, evaluate_model
from slotlab.engine.trainer import train
from slotlab.viz.overlays import overlay_grid, save_image, segmentation
from slotlab.viz.report import write_report

#: (entry in metrics.json, training preset, generation preset or None) run by the demo, in order.
#: GLASS trains on images of its data engine (scenes backend), evaluated on real scenes val.
DEMO_METHODS = (("dinosaur", "dinosaur-tiny", None), ("glass", "glass-tiny", "generate-scenes-tiny"))
PROTOCOL = "native"
BLOCKS = 7  # the baseline's K: the slots of the CPU presets
OUTPUTS = ("metrics.json", "overlays.png", "report.html", "runs", "generated")


def _generate(preset: str, out: Path, seed: int, progress: bool) -> str:
    """Run the data engine for ``preset`` into ``out``; returns the dataset spec to train on."""
    from slotlab.config import from_dict
    from slotlab.guidance.engine import GenerateConfig, run_generation

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


def _clear_previous(out: Path) -> None:
    """Remove an earlier demo's outputs so nothing stale can pass for this run's."""
    for name in OUTPUTS:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _summary(result: dict) -> dict:
    keep = ("mbo_i", "miou_i", "fg_ari")
    return {k: result["metrics"][k] for k in keep if k in result["metrics"]}


def run_demo(out: Path, steps: int | None = None, seed: int = 0, methods=DEMO_METHODS, progress: bool = True) -> dict:
    """Train and evaluate each (name, preset) of ``methods``; write metrics.json, overlays.png
    and report.html into ``out`` (metrics.json last: its presence means the demo completed)."""
    out.mkdir(parents=True, exist_ok=True)
    _clear_previous(out)
    results: dict[str, dict] = {}
    segmentations: dict[str, torch.Tensor] = {}
    val_spec = None
    num_shown = 8
    for name, preset, generate_preset in methods:
        overrides = [f"seed={seed}", *steps_overrides(load_preset(preset), steps)]
        if generate_preset is not None:
            overrides.append(f"data.train={_generate(generate_preset, out / 'generated' / name, seed, progress)}")
        config = build_train_config(load_preset(preset), overrides)
        val_spec = config.data.val
        val = build_dataset(val_spec)
        start = time.perf_counter()
        result = train(config, out / "runs" / name, progress=progress)
        metrics = evaluate_model(result.model, val, protocol=config.eval_protocol, progress=progress)
        results[name] = _summary(metrics) | {
            "train_seconds": round(result.train_seconds, 2),
            "train_steps": result.steps,
            "protocol": metrics["protocol"],
        }
        shown = collate([val[i] for i in range(num_shown)])
        segmentations[name] = segmentation(result.model.decompose(shown.image).masks)
        print(f"{name}: {results[name]} ({time.perf_counter() - start:.0f} s)")
    val = build_dataset(val_spec)
    shown = collate([val[i] for i in range(num_shown)])
    blocks = evaluate_blocks(val, num_slots=BLOCKS, grid=(16, 16), protocol=PROTOCOL)
    results["blocks"] = _summary(blocks) | {"train_seconds": 0.0, "protocol": blocks["protocol"]}
    columns = {"ground truth": shown.instance_mask, **segmentations,
               "blocks": segmentation(block_masks(num_shown, BLOCKS, *shown.image.shape[-2:]))}
    overlays = save_image(overlay_grid(shown.image, columns, scale=3), out / "overlays.png")
    write_report(
        out / "report.html",
        "slotlab demo: object discovery on built-in scenes",
        results,
        {"Validation images, ground-truth instances and each method's slot masks": overlays},
        notes=[f"Metrics on {len(val)} scenes val images under protocol '{PROTOCOL}' (masks at image resolution, "
               f"background excluded from mBO/mIoU, FG-ARI on foreground pixels). Seed {seed}."],
    )
    tmp = out / "metrics.json.tmp"
    tmp.write_text(json.dumps(results, indent=2))
    tmp.replace(out / "metrics.json")
    return results
