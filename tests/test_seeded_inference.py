"""Inference draws slot-initialisation noise: with a seed, results depend on the model and
the data alone, and the caller's random stream is left as it was."""

from __future__ import annotations

import json

import torch

from slotlab.data.registry import build_dataset
from slotlab.train.evaluate import evaluate_model
from slotlab.metrics.probe import run_probes
from tests.test_probe import SCENES, tiny_dinosaur


def test_decompose_with_a_seed_is_reproducible_and_leaves_the_global_stream_alone():
    model = tiny_dinosaur()
    images = torch.rand(2, 3, 32, 32)
    torch.manual_seed(5)
    first = model.decompose(images, seed=3)
    after_seeded = torch.rand(3)
    torch.manual_seed(5)
    unseeded = model.decompose(images)
    assert not torch.equal(first.slots, unseeded.slots)  # the noise matters
    torch.manual_seed(5)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    again = model.decompose(images, seed=3)
    torch.testing.assert_close(again.slots, first.slots)
    torch.testing.assert_close(after_seeded, expected_next)


def test_evaluation_and_probes_do_not_depend_on_the_global_stream():
    model, data = tiny_dinosaur(), build_dataset(SCENES)
    results = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        metrics = evaluate_model(model, data, batch_size=4, progress=False)["metrics"]
        probes = run_probes(model, data, data, batch_size=4, max_epochs=2)
        results.append((metrics["mbo_i"], probes["class_accuracy"], probes["centre_mse"], probes["num_test_pairs"]))
    assert results[0] == results[1]


def test_eval_seed_chooses_the_slot_noise_and_is_named_in_the_result(tmp_path):
    from slotlab.cli import main

    model, data = tiny_dinosaur(), build_dataset(SCENES)
    by_seed = {seed: evaluate_model(model, data, batch_size=4, progress=False, seed=seed) for seed in (0, 1)}
    assert [by_seed[seed]["seed"] for seed in (0, 1)] == [0, 1]
    assert by_seed[0]["metrics"] != by_seed[1]["metrics"]  # the noise moves the masks
    model_dir = model.save_pretrained(tmp_path / "model")
    out = tmp_path / "eval.json"
    assert main(["eval", "--checkpoint", str(model_dir), "--data", SCENES, "--batch-size", "4", "--seed", "1",
                 "--out", str(out)]) == 0
    written = json.loads(out.read_text())
    assert written["seed"] == 1 and written["metrics"] == by_seed[1]["metrics"]
