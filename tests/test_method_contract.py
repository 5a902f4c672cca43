"""The method contract: which methods are slot models, capabilities as protocols, and GLASS's
losses as Eq. 3 on what forward computed."""

import pytest
import torch

from slotlab.config import load_preset
from slotlab.data.registry import build_dataset
from slotlab.data.sample import collate
from slotlab.diffusion.objective import denoising_loss
from slotlab.methods import MaskModel, SlotModel, Trainable, get_method, method_names
from slotlab.methods.contract import DiffusionGenerator, EncoderGrid, can_generate, generative_decoder
from slotlab.train.config import build_train_config
from slotlab.train.trainer import build_model

#: glass-tiny without the input of another run (the pretrained decoder).
STANDALONE = ["inputs={}", "mixed_precision=fp32"]


def glass_tiny(*extra: str):
    torch.manual_seed(0)
    return build_model(build_train_config(load_preset("glass-tiny"), [*STANDALONE, *extra]))


def test_every_method_is_trainable_and_only_object_centric_ones_are_slot_models():
    classes = {name: get_method(name) for name in method_names()}
    assert all(issubclass(cls, Trainable) for cls in classes.values())
    slot_models = {name for name, cls in classes.items() if issubclass(cls, SlotModel)}
    assert slot_models == {"dinosaur", "glass", "slate", "slotdiffusion", "spot"}
    # The supervised segmenter's class channels and the VQ-VAE stage are never scored as masks.
    mask_models = {name for name, cls in classes.items() if issubclass(cls, MaskModel)}
    assert mask_models == slot_models | {"self_distillation"}


def test_glass_losses_are_eq3_on_what_forward_computed():
    model = glass_tiny().train()
    batch = collate([build_dataset("scenes?split=train&size=4")[i] for i in range(4)])
    outputs = model(batch)
    assert outputs.denoising is not None and outputs.feature_reconstruction is not None
    losses = model.losses(outputs, batch)
    assert set(losses) == {"loss", "recon", "semantic", "instance"}
    torch.testing.assert_close(losses["recon"], denoising_loss(outputs.denoising))
    c = model.config
    expected = losses["recon"] + c.lambda_semantic * losses["semantic"] + c.lambda_instance * losses["instance"]
    torch.testing.assert_close(losses["loss"], expected)
    model.set_loss_weights({"recon": 0.0})  # a term of weight 0 is neither computed nor returned
    outputs = model(batch)
    assert outputs.denoising is None and "recon" not in model.losses(outputs, batch)


def test_the_decoder_loss_is_the_denoising_loss_of_its_prediction():
    decoder = glass_tiny().diffusion_decoder.train()
    images, slots = torch.rand(2, 3, 32, 32), torch.randn(2, 7, decoder.context_dim)
    loss = decoder.loss(images, slots, generator=torch.Generator().manual_seed(3))
    denoising = decoder.denoising(images, slots, generator=torch.Generator().manual_seed(3))
    assert torch.equal(loss, denoising_loss(denoising))


def test_capabilities_are_protocols():
    model = glass_tiny()
    assert isinstance(model, (EncoderGrid, DiffusionGenerator)) and can_generate(model)
    assert generative_decoder(model) is model.diffusion_decoder
    decomposition = model.decompose(torch.rand(1, 3, 64, 64), seed=0)
    assert decomposition.features.shape[-2:] == model.grid
    without = glass_tiny("model.diffusion_decoder=null", "model.lambda_recon=0")
    assert not can_generate(without)
    with pytest.raises(ValueError, match="without a diffusion decoder cannot generate"):
        generative_decoder(without)
