"""The demo's generation tasks on an untrained GLASS CPU model: metrics and pictures."""

import math

from PIL import Image

from slotlab.config import load_preset
from slotlab.data.registry import build_dataset
from slotlab.train.config import build_train_config
from slotlab.train.generation_tasks import NUM_PICTURED, PICTURE_SIZE, run_generation_tasks
from slotlab.train.trainer import build_model
from slotlab.viz.glossary import caveats
from slotlab.viz.overlays import image_caption


def test_generation_tasks_write_metrics_and_pictures(tmp_path, glass_preset_overrides):
    model = build_model(build_train_config(load_preset("glass-tiny"), glass_preset_overrides))
    val = build_dataset("scenes?split=val&size=6")
    metrics, pictures = run_generation_tasks(model, val, tmp_path, seed=0, num_images=6)
    assert metrics["recon_psnr"] > 0 and 0 < metrics["recon_ssim"] <= 1
    for key in ("recon_object_visible", "removal_success", "removal_control_other_slot", "removal_control_reseed"):
        assert math.isnan(metrics[key]) or 0 <= metrics[key] <= 1, key
    assert metrics["removal_objects"] == round(metrics["recon_object_visible"] * 6)
    assert len(pictures) == 2
    for path in pictures:
        width, height = Image.open(path).size
        assert (width, height) == (3 * PICTURE_SIZE, NUM_PICTURED * PICTURE_SIZE)
        assert image_caption(path).startswith(("Removal", "Addition"))


def test_a_removal_test_without_objects_gets_a_note_naming_the_preset_that_has_them():
    results = {"glass": {"removal_objects": 0, "removal_success": math.nan}, "other": {"removal_objects": 5},
               "dinosaur": {"mbo_i": 0.3}}
    notes = [note for name, row in results.items() for note in caveats(name, row)]
    assert len(notes) == 1 and notes[0].startswith("glass: ") and "glass-tiny-compose" in notes[0]
