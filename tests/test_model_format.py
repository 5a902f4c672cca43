"""Model directories of older formats load as today's (slotlab.io.model_format).

tests/golden/format-1/ holds files written by slotlab at commit 9dd37ca^ (one flat encoder
config): ``dinosaur-patch`` (patch encoder with colour features and a semantic network; its
config.json, weights after two Adam steps, and ``decompose(images, seed=3)`` of one image as
that code computed it) and ``spot-dino`` (the config.json of a SPOT model on a tiny DINO twin
fine-tuning one block, with its frozen target copy).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from slotlab.config import ConfigError, from_dict
from slotlab.io.layout import MODEL_CONFIG_FILE, WEIGHTS_FILE
from slotlab.io.model_format import FORMAT_KEY, MODEL_FORMAT
from slotlab.methods import ObjectCentricModel
from slotlab.methods.spot import Spot, SpotConfig
from slotlab.nn.encoders import PatchEncoderConfig, ViTEncoderConfig

FORMAT_1 = Path(__file__).parent / "golden" / "format-1"


def copy_with_config(source: Path, target: Path, edit) -> Path:
    """``source`` copied to ``target`` with ``edit(record)`` applied to its config file."""
    shutil.copytree(source, target)
    record = json.loads((target / MODEL_CONFIG_FILE).read_text())
    edit(record)
    (target / MODEL_CONFIG_FILE).write_text(json.dumps(record))
    return target


def test_a_format_1_dinosaur_loads_with_its_weights_and_outputs():
    directory = FORMAT_1 / "dinosaur-patch"
    model = ObjectCentricModel.from_pretrained(directory)
    # the nulls meant the builder's defaults: projection null was the fixed random projection
    assert model.config.encoder == PatchEncoderConfig(
        image_size=32, patch_size=4, dim=16, colour_frequencies=4, colour_sigma=3.0,
        semantic_model="runs/segmenter/model", semantic_gain=1.0,
    )
    saved = load_file(str(directory / WEIGHTS_FILE))
    state = model.state_dict()
    assert set(state) == set(saved)
    for key, value in saved.items():
        assert torch.equal(state[key], value), key
    expected = load_file(str(directory / "expected.safetensors"))
    out = model.decompose(expected["images"], seed=3)
    torch.testing.assert_close(out.slots, expected["slots"], rtol=0, atol=1e-6)
    torch.testing.assert_close(out.masks, expected["masks"], rtol=0, atol=1e-6)


def test_a_format_1_spot_on_a_vit_loads_and_saves_in_todays_format(tmp_path):
    record = json.loads((FORMAT_1 / "spot-dino" / MODEL_CONFIG_FILE).read_text())
    directory = tmp_path / "old"
    directory.mkdir()
    shutil.copy(FORMAT_1 / "spot-dino" / MODEL_CONFIG_FILE, directory)
    # weights of the stored shapes: the file holds the config only
    expected = ViTEncoderConfig(name="dino", tiny=True, image_size=32, patch_size=8, trainable_blocks=1)
    raw = record["config"] | {"encoder": {k: getattr(expected, k) for k in ("name", "tiny", "image_size", "patch_size",
                                                                          "trainable_blocks")}}
    torch.manual_seed(0)
    built = Spot(from_dict(SpotConfig, raw), record["architectures"])
    save_file({k: v.contiguous() for k, v in built.state_dict().items()}, str(directory / WEIGHTS_FILE))

    model = Spot.from_pretrained(directory)
    assert model.config.encoder == expected and model.target_encoder is not None
    images = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(model.decompose(images, seed=1).masks, built.eval().decompose(images, seed=1).masks)

    resaved = model.save_pretrained(tmp_path / "new")
    assert json.loads((resaved / MODEL_CONFIG_FILE).read_text())[FORMAT_KEY] == MODEL_FORMAT
    again = Spot.from_pretrained(resaved)
    assert again.config == model.config
    for key, value in model.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key


def test_a_format_1_value_the_family_cannot_hold_is_an_error_naming_key_and_file(tmp_path):
    def cifar_layer(record):
        record["config"]["encoder"]["layer"] = 2

    directory = copy_with_config(FORMAT_1 / "dinosaur-patch", tmp_path / "model", cifar_layer)
    with pytest.raises(ConfigError, match=r"model/config\.json: config\.encoder\.layer=2: the patch encoder has no layer"):
        ObjectCentricModel.from_pretrained(directory)


def test_format_1_tiny_was_ignored_by_the_patch_encoder_and_is_dropped(tmp_path):
    def tiny(record):
        record["config"]["encoder"]["tiny"] = True

    directory = copy_with_config(FORMAT_1 / "dinosaur-patch", tmp_path / "model", tiny)
    model = ObjectCentricModel.from_pretrained(directory)
    assert model.config.encoder == ObjectCentricModel.from_pretrained(FORMAT_1 / "dinosaur-patch").config.encoder


def test_a_file_without_a_format_in_todays_layout_loads_unchanged(tmp_path):
    """Written between the encoder families and the recorded format: already format 2."""
    source = ObjectCentricModel.from_pretrained(FORMAT_1 / "dinosaur-patch").save_pretrained(tmp_path / "new")
    directory = copy_with_config(source, tmp_path / "unversioned", lambda record: record.pop(FORMAT_KEY))
    assert ObjectCentricModel.from_pretrained(directory).config == ObjectCentricModel.from_pretrained(source).config


def test_a_newer_format_is_refused_with_the_file_named(tmp_path):
    directory = copy_with_config(
        FORMAT_1 / "dinosaur-patch", tmp_path / "model", lambda record: record.update({FORMAT_KEY: MODEL_FORMAT + 1})
    )
    with pytest.raises(ConfigError, match=rf"model/config\.json is format {MODEL_FORMAT + 1}.*update slotlab"):
        ObjectCentricModel.from_pretrained(directory)
