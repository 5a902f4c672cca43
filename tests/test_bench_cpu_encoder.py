"""benchmarks/bench_cpu_encoder.py's slot-swap test: it trains SPOT's autoregressive decoder on
tokens of any width, and never scores an image against its own slots as another image's."""

from pathlib import Path

import pytest

from slotlab.config import load_preset
from slotlab.data.registry import build_dataset
from slotlab.train.config import build_train_config
from slotlab.train.trainer import build_model

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import bench_cpu_encoder

    return bench_cpu_encoder


def ar_model(bench, encoder: dict, width: int):
    return build_model(build_train_config(load_preset(bench.AR_PRESET), bench.ar_overrides(encoder, width, 2)))


def test_tokens_wider_than_the_decoder_get_an_output_head(bench):
    # The shapes and regions encoders give 99-wide tokens; SPOT's tiny decoder is 64 wide.
    model = ar_model(bench, bench.PATCH | {"patch_size": 4, "dim": 96}, 96).eval()
    out = model(build_dataset("scenes?split=test&size=2").__getitem__(0).image[None])
    assert out.targets.shape[-1] == 96 and out.reconstruction.shape == out.targets.shape
    assert ar_model(bench, bench.PATCH | {"patch_size": 4}, 64).decoder.head is None  # the preset's own decoder


def test_slot_swap_needs_another_image_in_every_batch(bench):
    from bench_spot import slot_use

    model = ar_model(bench, bench.PATCH | {"patch_size": 4}, 64)
    scores = slot_use(model, build_dataset("scenes?split=test&size=4"), batch_size=2)
    assert scores["mse_other_image_slots"] != scores["mse_own_slots"]
    with pytest.raises(ValueError, match="batch of one"):
        slot_use(model, build_dataset("scenes?split=test&size=3"), batch_size=2)


def test_dinosaur_rows_take_the_presets_grid_and_position(bench):
    encoder = bench.dinosaur_encoder("patch", {}, {})
    preset = load_preset("dinosaur-tiny")["model"]["encoder"]
    assert encoder["name"] == "patch" and encoder["patch_size"] == preset["patch_size"]
    assert encoder["position_frequencies"] == preset["position_frequencies"] > 0


def test_dinosaur_row_reports_its_own_token_grid(bench, tmp_path):
    # --dinosaur-set may change the patch size after the probe's encoder is built.
    row = bench.dinosaur_row(bench.PATCH | {"patch_size": 4}, 0, 1, tmp_path, ["model.encoder.patch_size=2"])
    assert row["steps"] == 1 and row["token_grid"] == [32, 32]
    assert 0 <= row["decoder_masks_mbo_i"] <= 1 and 0 <= row["attention_masks_mbo_i"] <= 1
