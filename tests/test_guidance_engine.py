"""The data engine's backends and prompt sources, end to end on tiny random models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from slotlab.data.generated import GeneratedDataset
from slotlab.data.sample import IGNORE_INDEX
from slotlab.data.scene_words import SCENE_CLASSES
from slotlab.datagen.backends.scenes import ScenesBackend, perturb_class_regions, uncertain_boundary_band
from slotlab.datagen.backends.sd import TINY_SD_CAPTURE, SDBackend, tiny_engine_sd
from slotlab.datagen.config import PromptConfig, SDConfig, ScenesBackendConfig
from slotlab.datagen.run import build_prompt_maker
from slotlab.diffusion.sd import load_sd_components
from slotlab.cli.generate import main
from slotlab.datagen.lexicon import label_set
from slotlab.datagen.prompts import build_prompt


@pytest.fixture(scope="module")
def sd_dir(tmp_path_factory):
    return tiny_engine_sd(seed=0).save(tmp_path_factory.mktemp("tiny-sd"))


def test_sd_backend_end_to_end_from_a_local_directory(sd_dir):
    config = SDConfig(num_inference_steps=3, image_size=32, batch_size=2, capture=TINY_SD_CAPTURE)
    backend = SDBackend(load_sd_components(sd_dir), config, label_set("coco"), "cpu")
    prompts = [
        build_prompt("a dog on a bench", ["dog", "bench"]),
        build_prompt("a traffic light", ["traffic light"]),
        build_prompt("a view of hills", []),
    ]
    out = backend.generate(prompts[:2], [11, 12]) + backend.generate(prompts[2:], [13])
    assert len(out) == 3
    for generation, prompt in zip(out, prompts):
        assert generation.image.shape == (3, 32, 32)
        assert 0 <= generation.image.min() and generation.image.max() <= 1
        assert generation.pseudo_mask.shape == (32, 32)
        allowed = {0, IGNORE_INDEX} | {label_set("coco").class_id(c) for c in prompt.classes}
        assert set(generation.pseudo_mask.unique().tolist()) <= allowed
    assert (out[2].pseudo_mask == IGNORE_INDEX).all()  # no class named: nothing is known

    # A seed fixes the sample: alone or in a batch, image and captured maps are the same.
    # (Random weights give nearly flat attention, so the thresholded masks are compared
    # through their inputs: min-max normalisation magnifies rounding of flat maps.)
    backend.generate(prompts[:2], [11, 12])
    batched_cross, batched_self = backend.capture.cross_maps()[8][:2], backend.capture.self_attention()[0]
    alone = backend.generate(prompts[:1], [11])[0]
    assert torch.allclose(alone.image, out[0].image, atol=1e-5)
    assert torch.allclose(backend.capture.cross_maps()[8], batched_cross, atol=1e-7)
    assert torch.allclose(backend.capture.self_attention()[0], batched_self, atol=1e-7)


def test_sd_backend_reads_the_refined_maps(sd_dir, monkeypatch):
    """The mask is the thresholded argmax of the captured maps (checked through a spy)."""
    import slotlab.datagen.backends.sd as engine

    seen = {}
    original = engine.pseudo_semantic_mask

    def spy(cross, self_attention, class_ids, size, config):
        seen.update(cross=cross, self_attention=self_attention, class_ids=class_ids, size=size)
        return original(cross, self_attention, class_ids, size, config)

    monkeypatch.setattr(engine, "pseudo_semantic_mask", spy)
    config = SDConfig(num_inference_steps=2, image_size=32, batch_size=2, capture=TINY_SD_CAPTURE)
    backend = SDBackend(load_sd_components(sd_dir), config, label_set("coco"), "cpu")
    backend.generate([build_prompt("dogs", ["dog"]), build_prompt("a cat and a car", ["cat", "car"])], [1, 2])
    assert seen["cross"][8].shape == (2, 2, 8, 8)
    assert seen["self_attention"].shape == (2, 256, 256)
    assert seen["class_ids"].tolist() == [[17, 0], [16, 3]]  # padded with 0
    assert seen["size"] == (32, 32)


def test_missing_sd_weights_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="lacks unet/.*hf download|lacks unet/"):
        load_sd_components(tmp_path)


def test_sd_generation_run_through_the_cli(sd_dir, tmp_path):
    preset = {
        "backend": "sd",
        "num": 4,
        "shard_size": 3,
        "prompts": {"source": "captions", "label_set": "scenes", "dataset": "scenes?split=train&size=10&resolution=32"},
        "sd": {
            "num_inference_steps": 2, "image_size": 32, "batch_size": 2, "negative_prompt": "blurry",
            "capture": {"cross_resolutions": [8], "self_resolution": 16},
        },
    }  # fmt: skip
    path = tmp_path / "sd.yaml"
    path.write_text(yaml.safe_dump(preset))
    out = tmp_path / "run"
    assert main(["--preset", str(path), "--out", str(out), "--weights", str(sd_dir), "--no-progress"]) == 0
    dataset = GeneratedDataset(out)
    assert len(dataset) == 4
    sample = dataset[3]
    assert sample.image.shape == (3, 32, 32)
    assert ";" in sample.caption and sample.meta["generator"]["backend"] == "sd"
    assert set(sample.meta["prompt_classes"]) <= set(SCENE_CLASSES)


def _scene_backend(**options) -> ScenesBackend:
    return ScenesBackend(ScenesBackendConfig(**options), label_set("scenes"))


def test_scenes_backend_mask_is_the_class_mask_with_a_boundary_band():
    backend = _scene_backend(resolution=48, instances_per_class=(2, 2), uncertain_radius=1)
    prompt = build_prompt("two circles and two stars", ["circle", "star"])
    generation = backend.generate([prompt], [5])[0]
    assert generation.image.shape == (3, 48, 48)
    mask = generation.pseudo_mask
    assert set(mask.unique().tolist()) <= {0, 1, 4, IGNORE_INDEX}
    assert {1, 4} <= set(mask.unique().tolist())
    # Same seed, same scene: the band removes only pixels near a label change.
    from slotlab.data.scenes import ScenesConfig, render_scene

    rng = np.random.default_rng([5, 1])
    objects = [c for c in prompt.classes for _ in range(int(rng.integers(2, 3)))]
    rng.shuffle(objects)
    scene = render_scene(rng, ScenesConfig(resolution=48), classes=objects)
    assert torch.equal(scene.image, generation.image)
    kept = mask != IGNORE_INDEX
    assert torch.equal(mask[kept], scene.semantic_mask[kept])
    assert scene.instance_mask.max() == 4  # four instances, merged into two classes in the mask


def test_uncertain_band_width():
    mask = np.zeros((9, 9), dtype=np.int64)
    mask[:, 5:] = 3
    for radius, width in [(0, 0), (1, 2), (2, 4)]:
        band = uncertain_boundary_band(mask, radius)
        assert (band == IGNORE_INDEX).sum() == 9 * width
        assert (band[:, : 5 - radius] == 0).all() and (band[:, 5 + radius :] == 3).all()


def test_mask_noise_options():
    rng = np.random.default_rng(0)
    mask = np.zeros((20, 20), dtype=np.int64)
    mask[5:10, 5:10] = 2
    mask[12:18, 12:18] = 5
    assert (perturb_class_regions(mask, rng, dilation=0, dropout=1.0) == 0).all()
    assert np.array_equal(perturb_class_regions(mask, rng, dilation=0, dropout=0.0), mask)
    changed = [perturb_class_regions(mask, np.random.default_rng(s), dilation=2, dropout=0.0) for s in range(10)]
    assert any(not np.array_equal(c, mask) for c in changed)
    for c in changed:  # grown or shrunk by at most 2 pixels, classes never swap
        assert set(np.unique(c)) <= {0, 2, 5}
        rows, cols = np.nonzero(c == 2)
        assert rows.min() >= 3 and rows.max() <= 11


def test_scenes_backend_requires_scene_classes():
    with pytest.raises(ValueError, match="'scenes' label set"):
        ScenesBackend(ScenesBackendConfig(), label_set("coco"))


@pytest.mark.parametrize("source", ["template", "labels", "captions"])
def test_prompt_sources_on_scenes(source):
    maker, record = build_prompt_maker(
        PromptConfig(source=source, label_set="scenes", dataset="scenes?split=train&size=20&resolution=32")
    )
    prompts = maker.prompts([0, 1, 25], [100, 101, 102])
    assert record["source_size"] == 20 and record["label_set"] == list(SCENE_CLASSES)
    for prompt in prompts:
        assert prompt.classes and set(prompt.classes) <= set(SCENE_CLASSES)
        assert prompt.text.endswith("; " + " ".join(prompt.classes))
    if source != "template":  # index 25 reuses source sample 25 % 20 = 5
        again = maker.prompts([5], [0])[0]
        assert again.classes == prompts[2].classes
    assert maker.prompts([0, 1, 25], [100, 101, 102]) == prompts


def test_scenes_generation_meta_lists_the_painted_instances():
    backend = _scene_backend(resolution=48, instances_per_class=(1, 3))
    generation = backend.generate([build_prompt("stars and hearts", ["star", "heart"])], [9])[0]
    objects = [o["class"] for o in generation.meta["objects"]]
    assert set(objects) == {"star", "heart"} and 2 <= len(objects) <= 6
    assert all(o["color"] for o in generation.meta["objects"])
