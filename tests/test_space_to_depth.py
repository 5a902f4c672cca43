"""The space-to-depth working space of the diffusion decoder: exact, and trainable end to end."""

import pytest
import torch

from slotlab.nn.autoencoders import SpaceToDepth
from slotlab.diffusion.config import cpu_config
from slotlab.diffusion.decoder import SlotDiffusionDecoder


def test_space_to_depth_is_an_exact_inverse():
    images = torch.rand(2, 3, 16, 16)
    space = SpaceToDepth(4)
    latents = space.encode(images)
    assert latents.shape == (2, 48, 4, 4) and latents.min() >= -1 and latents.max() <= 1
    torch.testing.assert_close(space.decode(latents), images, rtol=0, atol=1e-6)
    # channel c * 16 + i * 4 + j of block (y, x) is pixel (4 y + i, 4 x + j) of channel c
    assert latents[1, 1 * 16 + 2 * 4 + 3, 1, 2] == pytest.approx(images[1, 1, 4 + 2, 8 + 3].item() * 2 - 1)
    with pytest.raises(ValueError, match="factor"):
        SpaceToDepth(0)


def test_decoder_trains_and_samples_in_space_to_depth():
    config = cpu_config(cross_attention_dim=16, latent="space_to_depth", resolution=32, space_to_depth_factor=4)
    decoder = SlotDiffusionDecoder.from_config(config)
    assert decoder.latent_shape == (48, 8, 8)
    slots = torch.randn(2, 3, 16)
    loss = decoder.loss(torch.rand(2, 3, 32, 32), slots, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and any(p.grad is not None for p in decoder.unet.parameters())
    images = decoder.sample(slots, num_steps=2, generator=torch.Generator().manual_seed(0))
    assert images.shape == (2, 3, 32, 32) and images.min() >= 0 and images.max() <= 1


def test_factor_only_with_space_to_depth():
    with pytest.raises(ValueError, match="space_to_depth_factor"):
        cpu_config(space_to_depth_factor=2)
