"""GLASS end to end on tiny models: paper preset path, two phases, resume across the boundary."""

import pytest
from accelerate.utils import set_seed
import torch
from safetensors.torch import load_file

from slotlab.config import load_preset
from slotlab.train.config import build_train_config
from slotlab.io.checkpoints import checkpoint_dirs
from slotlab.train.trainer import train
from slotlab.methods import ObjectCentricModel, get_method
from slotlab.methods.glass import PAPER_TWIN_OVERRIDES


TRAIN_SHORT = ["data.batch_size=2", "stages.0.steps=2", "stages.1.steps=2", "checkpoint_every=2", "log_every=1"]


def paper_tiny_config(generated: str, extra=()):
    overrides = [*PAPER_TWIN_OVERRIDES, *TRAIN_SHORT, f"data.train={generated}", *extra]
    return build_train_config(load_preset("glass-coco"), overrides)


def test_paper_preset_runs_both_phases_on_tiny_twins(generated_scenes, tmp_path):
    config = paper_tiny_config(generated_scenes)
    set_seed(config.seed)  # the trainer builds its model after the same seeding
    model = get_method("glass")(config.model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert type(model.encoder).__name__ == "DINOv2Encoder"
    assert type(model.diffusion_decoder.unet).__name__ == "UNet2DConditionModel"
    assert model.slot_attention.config.output_dim == 32  # projected to the UNet's cross-attention width
    del model

    result = train(config, tmp_path / "run", progress=False)
    assert result.steps == 4
    log = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert '"recon"' in log[0] and '"recon"' in log[-1]  # L_recon in both phases (GLASS Eq. 3)
    after = load_file(str(tmp_path / "run" / "model" / "model.safetensors"))
    phase1 = load_file(str(checkpoint_dirs(tmp_path / "run")[0] / "model.safetensors"))
    unet_keys = [k for k in after if k.startswith("diffusion_decoder.unet.")]
    sa_keys = [k for k in after if k.startswith("slot_attention.")]
    # phase 2 trains the UNet ...
    assert any(not torch.equal(after[k], phase1[k]) for k in unet_keys)
    # ... and (almost) not slot attention (lr 1e-8)
    assert max((after[k] - phase1[k]).abs().max().item() for k in sa_keys) < 1e-6
    # phase 1 trained slot attention, left the (frozen) UNet and the encoder and VAE untouched
    assert any(not torch.equal(phase1[k], before[k]) for k in sa_keys)
    assert all(torch.equal(phase1[k], before[k]) for k in unet_keys)
    for k in after:
        if k.startswith(("encoder.", "diffusion_decoder.autoencoder.")):
            assert torch.equal(after[k], before[k]), k


def test_resume_across_the_phase_boundary(generated_scenes, tmp_path):
    config = paper_tiny_config(generated_scenes)
    straight = train(config, tmp_path / "a", progress=False)
    # stop exactly at the boundary: train phase 1 only, then resume the full config
    import shutil
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "b" / "model")
    for ckpt in checkpoint_dirs(tmp_path / "b")[1:]:
        shutil.rmtree(ckpt)
    assert [p.name for p in checkpoint_dirs(tmp_path / "b")] == ["step-00000002"]
    resumed = train(config, tmp_path / "b", resume=True, progress=False)
    assert resumed.steps == straight.steps == 4
    a = load_file(str(tmp_path / "a" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "model" / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)


def test_checkpoint_reloads_and_decomposes(generated_scenes, tmp_path):
    train(paper_tiny_config(generated_scenes), tmp_path / "run", progress=False)
    model = ObjectCentricModel.from_pretrained(tmp_path / "run" / "model")
    d = model.decompose(torch.rand(2, 3, 40, 40))
    assert d.masks.shape == (2, 7, 40, 40) and d.slots.shape == (2, 7, 32)
    torch.testing.assert_close(d.masks.sum(1), torch.ones(2, 40, 40))
    images = torch.rand(2, 3, 40, 40)
    features = model.feature_map(images)  # the DINOv2 twin's tokens, as a map over its grid
    assert features.shape == (2, model.encoder.dim, *model.grid)
    torch.testing.assert_close(features.flatten(2).transpose(1, 2), model.encoder(images))
    torch.testing.assert_close(model.decompose(images).features, features)  # the same tokens, one pass


def test_mixed_precision_is_for_training_steps_only(generated_scenes, tmp_path):
    """bf16 autocast wraps the training steps; the returned model decomposes in fp32."""
    result = train(paper_tiny_config(generated_scenes, ["mixed_precision=bf16"]), tmp_path / "run", progress=False)
    assert result.precision == "bf16" and result.steps == 4
    d = result.model.decompose(torch.rand(2, 3, 40, 40))
    assert d.slots.dtype == torch.float32 and d.masks.dtype == torch.float32


def test_recon_weight_needs_a_diffusion_decoder():
    with pytest.raises(Exception, match="lambda_recon"):
        build_train_config(load_preset("glass-tiny"), ["model.diffusion_decoder=null"])


def test_slot_edits():
    from slotlab.methods.slot_edits import add_slots, remove_slots, swap_slots
    from slotlab.ops.matching import slot_for_region

    a, b = torch.arange(12.0).view(4, 3), -torch.arange(1.0, 10.0).view(3, 3)
    torch.testing.assert_close(remove_slots(a, [1, 3]), a[[0, 2]])
    zeroed = remove_slots(a, [1], mode="zero")
    assert zeroed.shape == a.shape and zeroed[1].abs().sum() == 0 and torch.equal(zeroed[0], a[0])
    torch.testing.assert_close(add_slots(a, b, [2]), torch.cat([a, b[2:3]]))
    a2, b2 = swap_slots(a, b, 0, 1)
    assert torch.equal(a2[0], b[1]) and torch.equal(b2[1], a[0]) and torch.equal(a2[1:], a[1:])
    with pytest.raises(ValueError, match="out of range"):
        remove_slots(a, [4])
    masks = torch.zeros(3, 4, 4)
    masks[0], masks[1, :2, :2], masks[2, 2:, 2:] = 0.5, 1.0, 1.0
    region = torch.zeros(4, 4, dtype=torch.bool)
    region[2:, 2:] = True
    assert slot_for_region(masks, region) == 2


def test_an_edit_names_the_original_slots_whatever_else_it_does():
    from slotlab.methods.slot_edits import edit_slots

    a, b = torch.arange(12.0).view(4, 3), -torch.arange(1.0, 10.0).view(3, 3)
    edited = edit_slots(a, b, remove=[0], add=[2], swap=(3, 1))  # slot 3 stays slot 3 after slot 0 goes
    torch.testing.assert_close(edited, torch.stack([a[1], a[2], b[1], b[2]]))
    torch.testing.assert_close(edit_slots(a, None, [1], [], None, mode="zero")[1], torch.zeros(3))
    with pytest.raises(ValueError, match="--with"):
        edit_slots(a, None, [], [0], None)


def test_slots_chosen_by_class_and_listed():
    from slotlab.methods.slot_edits import slot_for_class, slot_listing

    masks = torch.zeros(3, 4, 4)
    masks[0], masks[1, :2, :2], masks[2, 2:, 2:] = 0.5, 1.0, 1.0
    class_map = torch.zeros(4, 4, dtype=torch.int64)
    class_map[:2, :2], class_map[2:, 3] = 5, 2
    assert slot_for_class(masks, class_map, 5) == 1 and slot_for_class(masks, class_map, 2) == 2
    with pytest.raises(ValueError, match=r"class 3 has no pixel.*\[2, 5\]"):
        slot_for_class(masks, class_map, 3)
    lines = slot_listing(masks, class_map)
    assert lines[1] == "slot 1: 25.0% of the image; covers class 5 (100%)"
    assert lines[2] == "slot 2: 25.0% of the image; covers class 2 (50%)"


def test_interactive_answers_are_checked():
    from slotlab.cli.compose import ask_slots

    assert ask_slots("3, 0", 7) == [3, 0] and ask_slots("  ", 7) == []
    with pytest.raises(ValueError, match="not a list of slot indices"):
        ask_slots("the red one", 7)
    with pytest.raises(ValueError, match=r"--interactive: slot \[7\] out of range: this image has 7 slots \(0..6\)"):
        ask_slots("1 7", 7)


def test_mask_biased_decoder_trains_reloads_and_composes(generated_scenes, tmp_path):
    from PIL import Image

    from slotlab.cli import main
    from slotlab.methods.slot_edits import decoder_tokens

    train(paper_tiny_config(generated_scenes, ["model.diffusion_decoder.mask_bias_grid=4"]), tmp_path / "run", progress=False)
    model = ObjectCentricModel.from_pretrained(tmp_path / "run" / "model")
    decomposition = model.decompose(torch.rand(2, 3, 40, 40), seed=0)
    tokens = decoder_tokens(model, decomposition)
    assert tokens.shape == (2, 7, 32 + 16)
    pooled = torch.nn.functional.adaptive_avg_pool2d(decomposition.masks, 4).flatten(2)
    torch.testing.assert_close(tokens[..., 32:], pooled)  # each token carries its own slot's mask
    for i in range(2):
        Image.fromarray((torch.rand(40, 40, 3) * 255).byte().numpy()).save(tmp_path / f"img{i}.png")
    assert main(["compose", "--checkpoint", str(tmp_path / "run" / "model"), "--image", str(tmp_path / "img0.png"),
                 "--with", str(tmp_path / "img1.png"), "--remove", "1", "--add", "0", "--steps", "2",
                 "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "img0-composition.png").is_file()
