"""The segmenter method and the patch encoder's semantic features (encoder.semantic_model)."""

from __future__ import annotations

import shutil

import pytest
import torch

from slotlab.config import load_preset
from slotlab.data.registry import build_dataset
from slotlab.data.sample import collate
from slotlab.train.config import build_train_config
from slotlab.train.trainer import build_model, train
from slotlab.methods.base import ObjectCentricModel
from slotlab.methods.contract import MaskModel, SlotModel, Trainable
from slotlab.methods.encoder_parts import build_method_encoder
from slotlab.methods.segmenter import Segmenter, SegmenterConfig
from slotlab.nn.encoders import build_encoder, encoder_config

PATCH = {"name": "patch", "image_size": 32, "patch_size": 4, "dim": 16, "colour_frequencies": 2}


def segmenter_preset(steps: int) -> dict:
    preset = load_preset("segmenter-scenes-tiny")
    preset["data"] = {"train": "scenes?split=train&size=64&resolution=32", "val": "scenes?split=val&size=8&resolution=32",
                      "batch_size": 8}
    preset["model"]["image_size"] = 32
    preset["stages"][0]["steps"] = steps
    preset["checkpoint_every"] = steps
    return preset


def test_segmenter_learns_the_scene_classes(tmp_path):
    """A short run lowers the per-pixel cross-entropy well below its start (log(7) = 1.95)."""
    result = train(build_train_config(segmenter_preset(60)), tmp_path / "run", progress=False)
    batch = collate([build_dataset("scenes?split=train&size=64&resolution=32")[i] for i in range(32)])
    torch.manual_seed(0)
    untrained = Segmenter(SegmenterConfig(image_size=32)).eval()
    with torch.no_grad():
        before = untrained.losses(untrained(batch), batch)["loss"]
        after = result.model.losses(result.model(batch), batch)["loss"]
    assert before > 1.5 and after < 0.75 * before
    masks = result.model.class_probabilities(result.model(batch.image))
    assert masks.shape == (32, 7, 32, 32) and torch.allclose(masks.sum(1), torch.ones(32, 32, 32))


def test_segmenter_loss_leaves_ignored_pixels_out_and_names_a_class_overflow():
    model = Segmenter(SegmenterConfig(image_size=32))
    batch = collate([build_dataset("scenes?split=val&size=2&resolution=32")[i] for i in range(2)])
    outputs = model(batch)
    top_rows = torch.nn.functional.cross_entropy(outputs.logits[:, :, :4], batch.semantic_mask[:, :4])
    batch.ignore_mask[:] = True
    batch.ignore_mask[:, :4] = False  # only the top rows count
    batch.semantic_mask[:, 4:] = 99  # labels under the ignore mask are never read
    assert torch.allclose(model.losses(outputs, batch)["loss"], top_rows)
    batch.semantic_mask[0, 0, 0] = 9
    with pytest.raises(ValueError, match="num_classes=7"):
        model.losses(outputs, batch)
    # images and labels of another size are resized to image_size
    larger = collate([build_dataset("scenes?split=val&size=2&resolution=64")[i] for i in range(2)])
    logits = model(larger).logits
    assert logits.shape == (2, 7, 32, 32) and torch.isfinite(model.losses(model(larger), larger)["loss"])


def test_segmenter_is_trainable_but_not_a_slot_model():
    model = Segmenter(SegmenterConfig(image_size=32))
    assert isinstance(model, Trainable)
    assert not isinstance(model, SlotModel) and not isinstance(model, MaskModel)  # its classes are not slots


def test_semantic_features_enter_the_tokens(segmenter_dir):
    images = torch.rand(2, 3, 32, 32)
    plain = build_encoder(encoder_config(**PATCH))
    semantic = build_method_encoder(encoder_config(**PATCH, semantic_model=str(segmenter_dir)))
    doubled = build_method_encoder(encoder_config(**PATCH, semantic_model=str(segmenter_dir), semantic_gain=2.0))
    network = Segmenter.from_pretrained(segmenter_dir).network
    assert all(not p.requires_grad for p in semantic.parameters())
    assert torch.equal(semantic.semantic_network.head.weight, network.head.weight)
    a, b, c = plain(images), semantic(images), doubled(images)
    assert a.shape == b.shape == (2, 64, 16)
    assert not torch.allclose(a, b)
    # The projection is linear, so the probabilities' share of the tokens scales with the gain.
    colour_part = build_method_encoder(encoder_config(**PATCH, semantic_model=str(segmenter_dir), semantic_gain=1e-6))(images)
    assert torch.allclose(c - colour_part, 2 * (b - colour_part), atol=1e-4)


def test_a_model_with_semantic_features_reloads_without_the_segmenter(tmp_path, segmenter_dir):
    """The segmenter's weights travel in the model's checkpoint; its directory may go."""
    moved = tmp_path / "segmenter"
    shutil.copytree(segmenter_dir, moved)
    preset = load_preset("dinosaur-tiny-patch")
    model = build_model(build_train_config(preset, [f"model.encoder.semantic_model={moved}"]))
    model.save_pretrained(tmp_path / "model")
    shutil.rmtree(moved)
    loaded = ObjectCentricModel.from_pretrained(tmp_path / "model")
    images = torch.rand(2, 3, 64, 64)
    assert torch.allclose(loaded.encoder(images), model.eval().encoder(images))


def test_missing_or_wrong_semantic_model_is_a_clear_error(tmp_path, segmenter_dir):
    with pytest.raises(FileNotFoundError, match="segmenter-scenes-tiny"):
        build_method_encoder(encoder_config(**PATCH, semantic_model=str(tmp_path / "nothing")))
    dinosaur = build_model(build_train_config(load_preset("dinosaur-tiny-patch"), [f"model.encoder.semantic_model={segmenter_dir}"]))
    dinosaur.save_pretrained(tmp_path / "dinosaur")
    with pytest.raises(ValueError, match="not a segmenter"):
        build_method_encoder(encoder_config(**PATCH, semantic_model=str(tmp_path / "dinosaur")))
    with pytest.raises(ValueError, match="semantic_gain"):
        build_encoder(encoder_config(**PATCH, semantic_gain=2.0))
    with pytest.raises(ValueError, match="semantic_gain"):
        build_method_encoder(encoder_config(**PATCH, semantic_model=str(segmenter_dir), semantic_gain=0.0))
    with pytest.raises(ValueError, match="caller loads"):
        build_encoder(encoder_config(**PATCH, semantic_model=str(segmenter_dir)))
    with pytest.raises(ValueError, match="does not apply to the cnn"):
        build_encoder(encoder_config(name="cnn", image_size=32, semantic_model=str(segmenter_dir)))


def test_eval_refuses_the_segmenter(segmenter_dir, capsys):
    """Its class channels are not slot masks: `slotlab eval` says so instead of scoring them."""
    from slotlab.cli import main

    assert main(["eval", "--checkpoint", str(segmenter_dir), "--data", "scenes?split=val&size=2"]) == 2
    assert "has no slots" in capsys.readouterr().err
