"""L_recon in phase 1 through a frozen pretrained decoder: the CPU presets' decoder pretraining
on description tokens (slotlab.methods.scene_descriptions), decoder_init, and the gradient path."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from slotlab.config import load_preset
from slotlab.data.sample import Sample, collate
from slotlab.train.config import build_train_config
from slotlab.io.checkpoints import checkpoint_dirs
from slotlab.train.trainer import train
from slotlab.methods import get_method
from slotlab.methods.scene_descriptions import SEGMENT_FEATURES, DescriptionConfig, SceneDescriber, segment_features

SHORT = ["data.batch_size=2", "log_every=1", "checkpoint_every=100", "mixed_precision=fp32"]


def test_segment_features_describe_each_class_segment():
    image = torch.zeros(3, 8, 8)
    semantic = torch.zeros(8, 8, dtype=torch.long)
    semantic[0:4, 4:8] = 3
    image[0, 0:4, 4:8] = 1.0  # class 3 is red
    ignore = torch.zeros(8, 8, dtype=torch.bool)
    ignore[7, :] = True  # uncertain pixels belong to no segment
    sample = Sample(image, semantic, semantic, ignore, torch.tensor([3]), torch.zeros(1, 4))
    classes, features, present = segment_features(collate([sample]), max_tokens=4)
    assert classes[0].tolist() == [0, 3, 0, 0] and present[0].tolist() == [True, True, False, False]
    torch.testing.assert_close(features[0, 1], torch.tensor([1.0, 0, 0, 4 / 7, 0, 1, 3 / 7]))
    torch.testing.assert_close(features[0, 0, 6], torch.tensor(6 / 7))  # background box ends above the ignored row


def test_description_tokens_start_with_colour_and_box_as_loud_as_class():
    """At initialisation a token's colour and box must move it as much as its class does: with
    nn.Embedding's N(0, 1) the class part was ~8x larger."""
    torch.manual_seed(0)
    dim, count = 64, 256
    describer = SceneDescriber(DescriptionConfig(), dim)
    classes = describer.classes(torch.randint(0, 7, (count,)))
    attributes = describer.attributes(torch.rand(count, SEGMENT_FEATURES))
    class_scale = classes.norm(dim=-1).mean()
    attribute_spread = (attributes - attributes.mean(0)).norm(dim=-1).mean()
    assert attribute_spread > 0.25 * class_scale


def test_pretrain_then_phase1_recon_through_the_frozen_decoder(generated_scenes, tmp_path):
    shared = [f"data.train={generated_scenes}", *SHORT]
    decoder_config = build_train_config(load_preset("glass-tiny-decoder"), [*shared, "stages.0.steps=2"])
    torch.manual_seed(0)
    before = get_method("glass")(decoder_config.model).state_dict()
    pretrained = train(decoder_config, tmp_path / "decoder", progress=False)
    weights = load_file(str(pretrained.model_dir / "model.safetensors"))
    changed = lambda prefix, a, b: any(not torch.equal(a[k], b[k]) for k in a if k.startswith(prefix))  # noqa: E731
    assert changed("diffusion_decoder.unet.", before, weights) and changed("describer.", before, weights)
    assert not changed("slot_attention.", before, weights)  # pretraining touches the decoder only

    # The Table 6a "recon" row: slot attention learns only through the frozen pretrained decoder.
    config = build_train_config(load_preset("glass-tiny-recon"), [
        *shared, f"model.decoder_init={pretrained.model_dir}", "stages.0.steps=2", "stages.1.steps=1",
        "checkpoint_every=2",
    ])  # fmt: skip
    model = get_method("glass")(config.model)
    start = model.state_dict()
    for key in start:
        if key.startswith("diffusion_decoder."):
            assert torch.equal(start[key], weights[key]), key  # decoder_init copied the pretrained decoder
    train(config, tmp_path / "recon", progress=False)
    after = load_file(str(checkpoint_dirs(tmp_path / "recon")[0] / "model.safetensors"))  # end of phase 1
    assert changed("slot_attention.", start, after)  # L_recon reached the slots
    assert not changed("diffusion_decoder.", start, after)  # through a decoder it did not change


def test_decoder_init_errors(tmp_path):
    config = build_train_config(load_preset("glass-tiny"), [f"model.decoder_init={tmp_path}"])
    with pytest.raises(FileNotFoundError, match="glass-tiny-decoder"):
        get_method("glass")(config.model)
    other = build_train_config(load_preset("glass-tiny-decoder"), ["model.diffusion_decoder.block_out_channels=[32,32]"])
    get_method("glass")(other.model).save_pretrained(tmp_path / "other")
    config = build_train_config(load_preset("glass-tiny"), [f"model.decoder_init={tmp_path / 'other'}"])
    with pytest.raises(ValueError, match="do not match"):
        get_method("glass")(config.model)


#: GLASS Table 6a rows -> CPU preset and the (lambda_semantic, lambda_instance) its name says.
TABLE_6A = {"recon": ("glass-tiny-recon", 0.0, 0.0), "recon+semantic": ("glass-tiny-recon-semantic", 0.7, 0.0),
            "recon+instance": ("glass-tiny-recon-instance", 0.0, 0.9), "full": ("glass-tiny", 0.7, 0.9)}


@pytest.mark.parametrize("row", list(TABLE_6A))
def test_table_6a_presets_hold_exactly_the_losses_their_names_say(row):
    """Every row: L_recon (weight 1) shapes the slots in phase 1 through the same frozen pretrained
    decoder; only lambda_s and lambda_i differ, and no stage overrides a loss weight."""
    name, semantic, instance = TABLE_6A[row]
    preset = load_preset(name)
    model = preset["model"]
    assert (model["lambda_recon"], model["lambda_semantic"], model["lambda_instance"]) == (1.0, semantic, instance)
    assert "model.decoder_init" in preset["inputs"] and model.get("description") is None
    phase1, phase2 = preset["stages"]
    assert "diffusion_decoder" not in phase1["lr"] and phase2["lr"]["diffusion_decoder"] > phase2["lr"]["grouping"]
    assert all("loss_weights" not in stage for stage in preset["stages"])
    strip = lambda p: {**p, "model": {k: v for k, v in p["model"].items() if k not in ("lambda_semantic", "lambda_instance")}}  # noqa: E731
    assert strip(preset) == strip(load_preset("glass-tiny"))  # the same model, data and phases otherwise
