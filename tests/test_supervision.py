"""Every row says what supervision its run saw, read off the run's saved config."""

import json
from pathlib import Path

import pytest
import yaml

from slotlab.config import load_preset
from slotlab.methods import method_names
from slotlab.nn.encoders import ENCODERS
from slotlab.train.config import build_train_config, to_dict
from slotlab.train.supervision import ENCODER_FEATURES, describe_supervision

PRESETS = sorted(p.stem for p in (Path(__file__).parents[1] / "slotlab" / "presets").glob("*.yaml")
                 if "method" in load_preset(p.stem))


def saved(preset: str, *overrides: str) -> dict:
    """The config as `slotlab train` saves it (RUN/config.yaml)."""
    return yaml.safe_load(yaml.safe_dump(to_dict(build_train_config(load_preset(preset), list(overrides)))))


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_says_what_its_features_and_training_saw(preset):
    text = describe_supervision(saved(preset))
    assert "training: " in text and "not recorded" not in text
    assert ("features: " in text) == ("encoder" in load_preset(preset)["model"])


def test_every_encoder_family_and_method_is_described():
    assert set(ENCODERS) <= set(ENCODER_FEATURES)
    for method in method_names():  # a method without a description would fail here, not in a report
        describe_supervision({"method": method, "model": {}, "data": {}})
    with pytest.raises(ValueError, match="add it to ENCODER_FEATURES"):
        describe_supervision({"method": "dinosaur", "model": {"encoder": {"name": "resnet"}}})


def run_dir(root: Path, config: dict) -> Path:
    (root / "model").mkdir(parents=True)
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    return root / "model"


def generated(root: Path, preset: str, **extra) -> str:
    """A generated run's directory as far as its run.json (settings of ``preset``, as slotlab generate writes)."""
    from slotlab.config import from_dict
    from slotlab.datagen.config import GenerateConfig

    root.mkdir()
    settings = load_preset(preset)
    for section, values in extra.items():
        settings[section] = settings[section] | values
    config = to_dict(from_dict(GenerateConfig, settings))
    (root / "run.json").write_text(json.dumps({"num": 4, "shard_size": 4, "config": config}))
    return f"generated:{root}"


def test_glass_names_its_segmenter_its_pseudo_masks_and_its_decoder(tmp_path):
    segmenter = run_dir(tmp_path / "segmenter", saved("segmenter-scenes-tiny"))
    decoder = run_dir(tmp_path / "decoder", saved("glass-tiny-decoder"))
    data = generated(tmp_path / "scenes-data", "generate-scenes-tiny")
    text = describe_supervision(saved("glass-tiny", f"model.encoder.semantic_model={segmenter}",
                                      f"model.decoder_init={decoder}", f"data.train={data}"))
    assert text == ("features: colour + supervised segmenter on scenes class maps; training: GLASS pseudo masks from "
                    "the scenes generator's ground-truth class masks (prompts: a template filled with the source's "
                    "annotation statistics); decoder: pretrained on description tokens read off the generated "
                    "scenes' ground truth (class, mean colour, box)")
    sd = generated(tmp_path / "sd-data", "generate-coco", prompts={"captioner_weights": "blip2"})
    text = describe_supervision(saved("glass-coco", f"data.train={sd}"))
    assert "DINOv2, self-supervised" in text and "Stable Diffusion attention maps (prompts: BLIP-2 captions)" in text
    assert "decoder: Stable Diffusion, pretrained on web image-text pairs" in text


def test_without_a_segmenter_the_features_saw_no_labels(tmp_path):
    assert describe_supervision(saved("dinosaur-tiny")).startswith(
        "features: none (a CNN trained on images without labels by silhouette_contrast, shipped with slotlab")
    assert describe_supervision(saved("dinosaur-tiny-patch")).startswith("features: none (fixed pixel and colour features)")
    missing = describe_supervision(saved("glass-tiny", f"data.train=generated:{tmp_path / 'gone'}"))
    assert f"generated data in {tmp_path / 'gone'} (its run.json, which says how, is unreadable)" in missing


def test_glass_rows_without_l_semantic_read_no_pseudo_masks(tmp_path):
    """Only L_semantic reads the pseudo masks: the Table 6a rows that set lambda_semantic to 0
    (L_recon, L_recon + L_instance) must not say they saw them."""
    data = generated(tmp_path / "scenes-data", "generate-scenes-tiny")
    rows = {preset: describe_supervision(saved(preset, f"data.train={data}"))
            for preset in ("glass-tiny-recon", "glass-tiny-recon-instance", "glass-tiny-recon-semantic", "glass-tiny")}
    for preset in ("glass-tiny-recon", "glass-tiny-recon-instance"):
        assert "training: none of GLASS's pseudo masks (L_semantic's weight is 0)" in rows[preset]
    for preset in ("glass-tiny-recon-semantic", "glass-tiny"):
        assert "training: GLASS pseudo masks from the scenes generator's ground-truth class masks" in rows[preset]
    # a stage weight overrides the model's lambda, either way
    assert "none of GLASS's pseudo masks" in describe_supervision(
        saved("glass-tiny", f"data.train={data}", "stages.0.loss_weights={semantic: 0.0}", "stages.1.loss_weights={semantic: 0.0}"))
