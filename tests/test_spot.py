"""SPOT: both stages on tiny parts, the MLP variant, ENS, masks, teacher errors."""

from __future__ import annotations

import pytest
import torch

from slotlab.config import ConfigError, from_dict
from slotlab.methods.spot import Spot, SpotConfig


def tiny_config(**extra) -> SpotConfig:
    raw = {
        "encoder": {"name": "patch", "image_size": 32, "patch_size": 8, "dim": 16},
        "slot_attention": {"slot_dim": 16, "num_slots": 3, "iters": 2, "mlp_hidden": 32},
        "decoder": {"width": 16, "blocks": 2, "heads": 2},
    }
    raw.update(extra)
    return from_dict(SpotConfig, raw)


def images(batch: int = 2) -> torch.Tensor:
    return torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(batch))


def test_stage_one_trains_and_evaluates_in_raster_order_or_ensemble():
    torch.manual_seed(0)
    model = Spot(tiny_config()).train()
    out = model(images())
    loss = model.losses(out, None)
    assert set(loss) == {"loss", "reconstruction"} and out.reconstruction.shape == (2, 16, 16)
    loss["loss"].backward()
    assert model.decoder.bos.grad is not None and model.slot_attention.initializer.mu.grad is not None
    model.eval()
    with torch.no_grad():
        raster = model.masks(model(images()))
        model.config.eval_orders = "ensemble"
        ens = model(images())
    assert raster.shape == (2, 3, 4, 4)
    torch.testing.assert_close(raster.sum(1), torch.ones(2, 4, 4))
    torch.testing.assert_close(ens.decoder_attention.sum(-1), torch.ones(2, 16))
    # ENS is the mean over the nine orders, each decoded on its own.
    with torch.no_grad():
        slots = ens.slots
        each = [model.decode(slots, ens.targets, torch.tensor([i]))[0] for i in range(9)]
    torch.testing.assert_close(ens.reconstruction, torch.stack(each).mean(0), atol=1e-5, rtol=1e-5)


def test_batch_of_one_and_per_sample_orders():
    model = Spot(tiny_config(per_sample_orders=True)).train()
    out = model(images(1))
    assert out.decoder_attention.shape == (1, 16, 3)
    model.losses(out, None)["loss"].backward()


def test_stage_two_reads_the_teacher_and_adds_the_distillation(tmp_path):
    torch.manual_seed(0)
    Spot(tiny_config()).save_pretrained(tmp_path / "teacher")
    student = Spot(tiny_config(teacher=str(tmp_path / "teacher"),
                               slot_attention={"slot_dim": 16, "num_slots": 3, "iters": 2, "mlp_hidden": 32,
                                               "init": "learned_queries"})).train()
    assert not any(k.startswith("teacher") for k in student.state_dict())
    out = student(images())
    assert out.teacher_attention.shape == (2, 16, 3)
    loss = student.losses(out, None)
    assert set(loss) == {"loss", "reconstruction", "distillation"}
    torch.testing.assert_close(loss["loss"], loss["reconstruction"] + 0.005 * loss["distillation"])
    loss["loss"].backward()
    student.save_pretrained(tmp_path / "student")
    reloaded = Spot.from_pretrained(tmp_path / "student")  # needs no teacher to evaluate
    assert reloaded.teacher is None


def test_teacher_errors_are_named(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        Spot(tiny_config(teacher=str(tmp_path / "missing")))
    torch.manual_seed(0)
    Spot(tiny_config()).save_pretrained(tmp_path / "t1")
    Spot(tiny_config(teacher=str(tmp_path / "t1"))).save_pretrained(tmp_path / "t2")
    with pytest.raises(ConfigError, match="stage-2 SPOT model"):
        Spot(tiny_config(teacher=str(tmp_path / "t2")))
    (tmp_path / "run" / "model").mkdir(parents=True)  # a training run's directory instead of its model/
    Spot(tiny_config()).save_pretrained(tmp_path / "run" / "model")
    with pytest.raises(ConfigError, match=r"does not exist.*the run's model is in .*run/model"):
        Spot(tiny_config(teacher=str(tmp_path / "run")))
    other = tmp_path / "dino"
    other.mkdir()
    (other / "config.json").write_text('{"method": "dinosaur", "config": {}}')
    (other / "model.safetensors").write_bytes(b"")
    with pytest.raises(ConfigError, match="teacher=.*holds a 'dinosaur' model, not a 'spot' model"):
        Spot(tiny_config(teacher=str(other)))
    (other / "config.json").write_text("{")
    with pytest.raises(ConfigError, match="teacher=.*not valid JSON"):
        Spot(tiny_config(teacher=str(other)))
    four_slots = {"slot_dim": 16, "num_slots": 4, "iters": 2, "mlp_hidden": 32, "init": "learned_queries"}
    with pytest.raises(ConfigError, match="has a 4x4 token grid and 3 slots; the student has 4x4 and 4"):
        Spot(tiny_config(teacher=str(tmp_path / "t1"), slot_attention=four_slots))


def test_stage_two_with_a_batch_of_one(tmp_path):
    """The authors' squeeze() drops the batch axis of one image and their distillation fails; here it trains."""
    torch.manual_seed(0)
    Spot(tiny_config()).save_pretrained(tmp_path / "teacher")
    student = Spot(tiny_config(teacher=str(tmp_path / "teacher"), slot_attention={
        "slot_dim": 16, "num_slots": 3, "iters": 2, "mlp_hidden": 32, "init": "learned_queries"})).train()
    out = student(images(1))
    assert out.logits.shape == out.teacher_attention.shape == (1, 16, 3)
    loss = student.losses(out, None)
    assert torch.isfinite(loss["distillation"])
    loss["loss"].backward()


def test_mlp_variant_and_config_errors():
    model = Spot(tiny_config(decoder=None, mlp_decoder={"hidden_dim": 32, "hidden_layers": 2}, orders=["left_top"])).train()
    out = model(images())
    assert out.decoder_attention.shape == (2, 16, 3)
    model.losses(out, None)["loss"].backward()
    with pytest.raises(ConfigError, match="MLP decoder has no order"):
        tiny_config(decoder=None, mlp_decoder={"hidden_dim": 32})
    with pytest.raises(ConfigError, match="exactly one"):
        tiny_config(mlp_decoder={"hidden_dim": 32})
    with pytest.raises(ConfigError, match="unknown patch order"):
        tiny_config(orders=["left_top", "zigzag"])
    with pytest.raises(ConfigError, match="must include the raster order"):
        tiny_config(orders=["spiral"])
    with pytest.raises(ValueError, match="decoder.width=32 must equal the encoder's token width 16"):
        Spot(tiny_config(decoder={"width": 32, "blocks": 1, "heads": 2}))


def test_dino_layer_norm_epsilon_is_the_original_one(tmp_path):
    """DINO ran with LayerNorm eps 1e-6; its published transformers config says 1e-12."""
    import transformers

    from slotlab.nn.encoders import build_encoder, encoder_config

    config = transformers.ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                    patch_size=16, image_size=224, layer_norm_eps=1e-12)
    transformers.ViTModel(config, add_pooling_layer=False).save_pretrained(tmp_path / "dino")
    for dino in (encoder_config(name="dino", path=str(tmp_path / "dino")), encoder_config(name="dino", tiny=True)):
        norms = [m for m in build_encoder(dino).modules() if isinstance(m, torch.nn.LayerNorm)]
        assert norms and all(m.eps == 1e-6 for m in norms)


def test_a_saved_model_with_missing_weights_is_named(tmp_path):
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    Spot(tiny_config()).save_pretrained(tmp_path / "m")
    weights = load_file(tmp_path / "m" / "model.safetensors")
    del weights["decoder.bos"]
    save_file(weights, tmp_path / "m" / "model.safetensors")
    with pytest.raises(ConfigError, match=r"(?s)model.safetensors does not fit the 'spot' config.*Missing key.*decoder\.bos"):
        Spot.from_pretrained(tmp_path / "m")
