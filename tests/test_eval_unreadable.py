"""Evaluation scores each readable image once and names the unreadable ones in its JSON;
training streams still replace an unreadable sample by the next readable one."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from slotlab.data.folder import ImageFolder
from slotlab.train.evaluate import evaluate_model
from slotlab.methods import get_method
from slotlab.train.config import build_train_config
from tests.conftest import tiny_train_config


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    config = build_train_config(tiny_train_config())
    return get_method("dinosaur")(config.model).save_pretrained(tmp_path_factory.mktemp("model"))


def _folder(root, names, truncated=()):
    root.mkdir()
    rng = np.random.default_rng(1)
    for name in names:
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / name)
        if name in truncated:
            data = (root / name).read_bytes()
            (root / name).write_bytes(data[: len(data) // 3])
    return root


def test_a_truncated_image_is_reported_and_not_replaced(tmp_path, model_dir):
    from slotlab.methods import ObjectCentricModel

    model = ObjectCentricModel.from_pretrained(model_dir)
    three = ImageFolder(_folder(tmp_path / "three", ["a.png", "b.png", "c.png"], truncated=["b.png"]))
    two = ImageFolder(_folder(tmp_path / "two", ["a.png", "c.png"]))
    with_bad = evaluate_model(model, three, progress=False, batch_size=3)
    good_only = evaluate_model(model, two, progress=False, batch_size=3)
    assert with_bad["images"] == 2 and with_bad["unreadable"][0]["file"] == str(tmp_path / "three" / "b.png")
    assert "truncated" in with_bad["unreadable"][0]["reason"] and good_only["unreadable"] == []
    assert with_bad["metrics"] == pytest.approx(good_only["metrics"], nan_ok=True)
    # a training stream keeps its length: the next readable sample stands in
    assert three[1].meta["replaces"] == 1 and three[1].meta["file"].endswith("c.png")


def test_eval_writes_the_unreadable_files_into_its_json(tmp_path, model_dir):
    folder = _folder(tmp_path / "images", ["a.png", "b.png", "c.png"], truncated=["a.png"])
    result = subprocess.run([sys.executable, "-m", "slotlab.cli", "eval", "--checkpoint", str(model_dir),
                             "--data", f"folder:{folder}", "--out", str(tmp_path / "eval.json")],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    written = json.loads((tmp_path / "eval.json").read_text())
    assert written["images"] == 2 and [u["file"] for u in written["unreadable"]] == [str(folder / "a.png")]
