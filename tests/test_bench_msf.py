"""benchmarks/bench_msf.py scores a saved VQ-VAE for object separability (MSF Table 4)."""

import json
import os
import subprocess
import sys
from pathlib import Path

from slotlab.methods.vqvae import VQVAEPretraining
from slotlab.nn.quantize.msf import MSFConfig
from slotlab.nn.quantize.vqvae import VQVAEConfig

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_msf.py"


def test_bench_msf_scores_separability_of_a_saved_vqvae(tmp_path):
    config = VQVAEConfig(image_size=32, code_dim=8, width=8, msf=MSFConfig(shared_codes=4, specific_codes=[4, 4, 4]))
    VQVAEPretraining(config).save_pretrained(tmp_path / "vq")
    out = tmp_path / "sep.json"
    command = [sys.executable, str(SCRIPT), "--separability", str(tmp_path / "vq"),
               "--data", "scenes?split=test&size=4&resolution=32", "--out", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run(command, check=True, capture_output=True, timeout=300, env=env)
    score = json.loads(out.read_text())["scores"][str(tmp_path / "vq")]
    assert score["images"] == 4 and 0 < score["intra_cluster"] < 2 and 0 < score["inter_cluster"] <= 2
