"""Every training preset in slotlab/presets builds and trains two steps with a finite loss;
on the CPU presets that learn within a minute, the loss falls.

What a preset names that a test machine does not have is swapped, and only that:

- pretrained weights (DINO, DINOv2, Stable Diffusion) -> tiny random twins of the same
  classes, with the widths shrunk to fit (tests/twins.py);
- datasets on disk (COCO, VOC, ClevrTex, MOVi) -> the built-in scenes at 32 px;
- GLASS trains on what its data engine writes (``generated:DIR``), so its presets get the
  engine's own output, made by the scenes backend (conftest ``generated_scenes``): a plain
  dataset would skip the reader of that layout;
- earlier runs a preset reads (GLASS's pretrained decoder, MSF's VQ-VAE, SPOT's stage-1
  teacher) -> untrained models of the preset that
  writes them, saved with ``save_pretrained``: the preset under test needs their
  architecture and a loadable directory, not trained weights.

A preset with two stages trains one step in each. The ``generate-*`` presets run the data
engine instead: two samples at 32 px, Stable Diffusion and BLIP-2 as tiny twins and the
source images from the built-in scenes.
"""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

from slotlab.config import PRESET_DIR, load_preset
from slotlab.methods import get_method
from slotlab.train.config import build_train_config
from slotlab.train.trainer import train
from tests.twins import twin_overrides

PRESETS = sorted(p.stem for p in PRESET_DIR.glob("*.yaml") if "method" in load_preset(p.stem))
GENERATE_PRESETS = sorted(p.stem for p in PRESET_DIR.glob("generate-*.yaml"))
SCENES = ["data.train=scenes?split=train&size=8&resolution=32", "data.val=scenes?split=val&size=4&resolution=32",
          "data.batch_size=2", "data.num_workers=0", "mixed_precision=fp32", "eval_every=0", "log_every=1"]
EARLIER_RUN = re.compile(r"--preset (\S+)")  # in an input's command: the preset whose run it reads


def two_steps(raw: dict) -> list[str]:
    """Two steps over the preset's stages (one each when it has two), warm-up within them."""
    stages = raw["stages"]
    assert 1 <= len(stages) <= 2, "spread the two steps over more stages"
    steps = [2] if len(stages) == 1 else [1, 1]
    out = [f"stages.{i}.steps={n}" for i, n in enumerate(steps)]
    out += [f"stages.{i}.warmup_steps=1" for i, stage in enumerate(stages) if stage.get("warmup_steps")]
    return [*out, "checkpoint_every=2"]


@pytest.fixture(scope="module")
def untrained(tmp_path_factory):
    """An untrained model of the named preset (on twins), saved once: an earlier run's stand-in."""
    root, done = tmp_path_factory.mktemp("earlier-runs"), {}

    def get(preset: str) -> str:
        if preset not in done:
            raw = load_preset(preset)
            config = build_train_config(raw, [*SCENES, *twin_overrides(raw)])
            torch.manual_seed(0)
            done[preset] = str(get_method(config.method)(config.model).save_pretrained(root / preset))
        return done[preset]

    return get


def earlier_runs(raw: dict, untrained, glass_decoder_dir) -> list[str]:
    """Overrides giving the preset's inputs from earlier runs (its ``inputs``) as stand-ins."""
    given = {"model.decoder_init": glass_decoder_dir}
    return [f"{key}={given.get(key) or untrained(EARLIER_RUN.search(made['make']).group(1))}"
            for key, made in (raw.get("inputs") or {}).items()]


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_trains_two_steps(preset, untrained, glass_decoder_dir, generated_scenes, tmp_path):
    raw = load_preset(preset)
    data = [f"data.train={generated_scenes}"] if raw["data"]["train"].startswith("generated:") else []
    inputs = earlier_runs(raw, untrained, glass_decoder_dir)
    overrides = [*SCENES, *data, *two_steps(raw), *twin_overrides(raw), *inputs]
    result = train(build_train_config(raw, overrides), tmp_path / "run", progress=False)

    assert result.steps == 2 and (result.model_dir / "model.safetensors").is_file()
    log = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2]
    stages = [stage["name"] for stage in raw["stages"]]
    assert [r["stage"] for r in log] == (stages * 2)[:2]  # a step in each stage when there are two
    for record in log:
        assert math.isfinite(record["loss"]), record
    if "model.teacher" in (raw.get("inputs") or {}):  # SPOT's second stage distils its teacher's attention
        assert "distillation" in log[0], log[0]


@pytest.fixture(scope="module")
def engine_twins(tmp_path_factory) -> list[str]:
    """Overrides of the sd backend: tiny Stable Diffusion and BLIP-2 twins, 32 px, 2 denoising steps."""
    from slotlab.datagen.backends.sd import tiny_engine_sd
    from slotlab.datagen.prompts import save_tiny_blip2

    root = tmp_path_factory.mktemp("engine-twins")
    sd, blip2 = tiny_engine_sd(seed=0).save(root / "sd"), save_tiny_blip2(root / "blip2")
    return [f"sd.weights={sd}", f"prompts.captioner_weights={blip2}", "sd.image_size=32", "sd.num_inference_steps=2",
            "sd.batch_size=2", "sd.dtype=float32", "sd.capture.cross_resolutions=[8]", "sd.capture.self_resolution=16"]


@pytest.mark.parametrize("preset", GENERATE_PRESETS)
def test_generate_preset_writes_two_samples(preset, engine_twins, tmp_path):
    from slotlab.cli.generate import main
    from slotlab.data.generated import GeneratedDataset

    raw = load_preset(preset)
    twins = engine_twins if raw["backend"] == "sd" else [f"{raw['backend']}.resolution=32"]
    overrides = ["num=2", "shard_size=2", "prompts.dataset=scenes?split=train&size=4&resolution=32", *twins]
    assert main(["--preset", preset, "--out", str(tmp_path / "out"), "--no-progress",
                 *[a for o in overrides for a in ("--set", o)]]) == 0
    dataset = GeneratedDataset(tmp_path / "out")
    assert len(dataset) == 2 and dataset[1].image.shape == (3, 32, 32)


# CPU presets whose loss falls within 60 steps at batch 4 (mean of the last 5 over the first 5,
# measured 0.65 and 0.22-0.26 over two seeds). Not listed: dinosaur-tiny (it falls, by ~20%, but
# takes ~30 s), the VQ-VAEs (one seed of two rose) and self-distillation (scored against a teacher
# that moves with it, its loss rose over those steps). The trainer's own test is in test_trainer.
LEARNING = ["segmenter-scenes-tiny", "spot-tiny"]


@pytest.mark.parametrize("preset", LEARNING)
def test_the_loss_of_a_cpu_preset_falls(preset, tmp_path):
    raw = load_preset(preset)
    overrides = [*SCENES, "data.train=scenes?split=train&size=64&resolution=32", "data.batch_size=4",
                 "stages.0.steps=60", "checkpoint_every=60"]
    overrides += ["stages.0.warmup_steps=5"] if raw["stages"][0].get("warmup_steps") else []
    train(build_train_config(raw, overrides), tmp_path / "run", progress=False)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    first, last = losses[:5], losses[-5:]
    assert sum(last) < 0.8 * sum(first), (first, last)
