"""Mask-biased cross-attention: no bias with full masks, a slot absent from every position is
(almost) ignored, tokens carry their masks through edits, and GLASS trains with it."""

import pytest
import torch

from slotlab.diffusion.config import cpu_config
from slotlab.diffusion.decoder import SlotDiffusionDecoder
from slotlab.diffusion.mask_attention import mask_bias, pack_slot_masks

DIM = 16


def decoders():
    torch.manual_seed(0)
    plain = SlotDiffusionDecoder.from_config(cpu_config(cross_attention_dim=DIM, attention_head_dim=DIM))
    biased = SlotDiffusionDecoder.from_config(cpu_config(cross_attention_dim=DIM, attention_head_dim=DIM, mask_bias_grid=4))
    biased.load_state_dict(plain.state_dict())  # same weights: the processor is the only difference
    return plain, biased


def inputs():
    generator = torch.Generator().manual_seed(1)
    slots = torch.randn(2, 3, DIM, generator=generator)
    noisy = torch.randn(2, 3, 32, 32, generator=generator)
    return slots, noisy, torch.tensor([5, 500])


def test_full_masks_give_plain_cross_attention():
    plain, biased = decoders()
    slots, noisy, steps = inputs()
    tokens = biased.context(slots, torch.ones(2, 3, 8, 8))
    assert tokens.shape == (2, 3, DIM + 16)
    torch.testing.assert_close(biased.denoise(noisy, steps, tokens), plain.denoise(noisy, steps, slots))


def test_a_slot_whose_mask_is_empty_barely_matters_and_one_with_a_mask_does():
    _, biased = decoders()
    slots, noisy, steps = inputs()
    masks = torch.zeros(2, 3, 8, 8)
    masks[:, 0] = 1.0  # slot 0 covers the image, slots 1 and 2 nothing
    other = slots.clone()
    other[:, 1:] = torch.randn(2, 2, DIM, generator=torch.Generator().manual_seed(2))
    reference = biased.denoise(noisy, steps, biased.context(slots, masks))
    absent_changed = biased.denoise(noisy, steps, biased.context(other, masks))
    present_changed = biased.denoise(noisy, steps, biased.context(slots.roll(1, dims=1), masks))
    assert (absent_changed - reference).abs().max() < 0.01 * reference.abs().mean()
    assert (present_changed - reference).abs().mean() > 0.1 * reference.abs().mean()


def test_bias_is_the_log_of_the_mask_at_each_query_position():
    masks = torch.zeros(1, 2, 2, 2)
    masks[0, 0, 0, 0] = 1.0
    masks[0, 1] = 0.5
    bias = mask_bias(masks.flatten(2), grid=2, num_queries=4)  # (1, 1, 4 queries, 2 slots)
    assert bias.shape == (1, 1, 4, 2)
    assert bias[0, 0, 0, 0] == 0 and torch.allclose(bias[0, 0, :, 1], torch.full((4,), 0.5).log())
    assert (bias[0, 0, 1:, 0] == torch.tensor(1e-3).log()).all()
    with pytest.raises(ValueError, match="square"):
        mask_bias(masks.flatten(2), grid=2, num_queries=6)


def test_tokens_need_masks_and_the_right_width():
    _, biased = decoders()
    slots, noisy, steps = inputs()
    with pytest.raises(ValueError, match="mask_bias_grid"):
        biased.context(slots)
    with pytest.raises(ValueError, match="slots \\+ masks"):
        biased.sample(slots, num_steps=2)
    with pytest.raises(ValueError, match="masks must be"):
        pack_slot_masks(slots, torch.ones(2, 4, 8, 8), grid=4)
    with pytest.raises(ValueError, match="mask_bias_grid"):
        cpu_config(mask_bias_grid=0)


def test_guided_sampling_and_the_loss_run_with_masks():
    _, biased = decoders()
    slots, _, _ = inputs()
    tokens = biased.context(slots, torch.rand(2, 3, 32, 32).softmax(1))
    images = biased.sample(tokens, num_steps=2, guidance_scale=2.0, generator=torch.Generator().manual_seed(0))
    assert images.shape == (2, 3, 32, 32)
    biased.train()
    loss = biased.loss(torch.rand(2, 3, 32, 32), tokens.requires_grad_(), generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and tokens.grad[..., :DIM].abs().sum() > 0


def test_hard_masks_pool_the_argmax_ownership():
    slots = torch.zeros(1, 2, 3)
    masks = torch.zeros(1, 2, 4, 4)
    masks[0, 0] = 0.6  # slot 0 owns every pixel by a small margin...
    masks[0, 1] = 0.4
    masks[0, 1, :2, :2] = 0.9  # ...except the top-left quarter, slot 1's
    soft = pack_slot_masks(slots, masks, grid=2)[..., 3:]
    hard = pack_slot_masks(slots, masks, grid=2, hard=True)[..., 3:]
    torch.testing.assert_close(soft[0, 1], torch.tensor([0.9, 0.4, 0.4, 0.4]))
    torch.testing.assert_close(hard[0], torch.tensor([[0.0, 1.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0]]))
    config = cpu_config(cross_attention_dim=DIM, attention_head_dim=DIM, mask_bias_grid=2, mask_bias_hard=True)
    decoder = SlotDiffusionDecoder.from_config(config)
    torch.testing.assert_close(decoder.context(torch.zeros(1, 2, DIM), masks)[..., DIM:], hard)
    with pytest.raises(ValueError, match="mask_bias_hard needs mask_bias_grid"):
        cpu_config(mask_bias_hard=True)
