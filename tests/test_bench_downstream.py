"""benchmarks/bench_downstream.py runs end to end on an untrained tiny GLASS (plain and mask-biased
decoder) and writes its report."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from slotlab.config import load_preset
from slotlab.train.config import build_train_config
from slotlab.train.trainer import build_model

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_downstream.py"


@pytest.mark.parametrize("overrides", [[], ["model.diffusion_decoder.mask_bias_grid=16"]])
def test_bench_downstream_writes_its_report(tmp_path, overrides, glass_preset_overrides):
    build_model(build_train_config(load_preset("glass-tiny"), overrides + glass_preset_overrides)).save_pretrained(tmp_path / "glass")
    out = tmp_path / "report.json"
    command = [sys.executable, str(SCRIPT), "--glass", str(tmp_path / "glass"), "--images", "4", "--steps", "2",
               "--no-probes", "--out", str(out)]
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    report = json.loads(out.read_text())
    assert report["images"] == 4 and report["removal"]["objects_tested"] == 4
    assert report["sampling_images_per_second"] > 0
