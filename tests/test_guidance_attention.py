"""Attention capture on a tiny random Stable Diffusion UNet, checked against a direct computation."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor

from slotlab.datagen.attention import (
    AttentionCapture,
    CaptureConfig,
    CapturingAttnProcessor,
    ClassTokens,
    capturing,
    unet_place,
)
from slotlab.datagen.backends.sd import class_token_span, class_tokens, tiny_engine_sd
from slotlab.diffusion.sd import encode_text


@pytest.fixture(scope="module")
def parts():
    return tiny_engine_sd(seed=1)


class Recorder:
    """Reference processor: diffusers' plain AttnProcessor output, and every attention map
    of every call kept in lists (what the capture must average)."""

    def __init__(self, place, capture_processor, store, state):
        self.place, self.inner, self.store, self.state = place, capture_processor, store, state
        self.plain = AttnProcessor()

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb)  # feeds the capture
        out = self.plain(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        config, step = self.state["config"], self.state["step"]
        if not config.step_is_captured(step, self.state["num_steps"]) or self.place not in config.places:
            return out
        side = math.isqrt(hidden_states.shape[1])
        cond = hidden_states[self.state["cond"]]
        heads = attn.heads
        if encoder_hidden_states is None and side == config.self_resolution:
            q, k = attn.head_to_batch_dim(attn.to_q(cond)), attn.head_to_batch_dim(attn.to_k(cond))
            probs = attn.get_attention_scores(q, k).view(cond.shape[0], heads, side * side, side * side)
            self.store["self"].append(probs)
        if encoder_hidden_states is not None and side in config.cross_resolutions:
            for p, (image, positions) in enumerate(self.state["pairs"]):
                q = attn.head_to_batch_dim(attn.to_q(cond[image : image + 1]))
                k = attn.head_to_batch_dim(attn.to_k(self.state["class_embeddings"][p : p + 1]))
                probs = attn.get_attention_scores(q, k)  # (heads, N, 77)
                self.store["cross"][p].append(probs[:, :, positions].mean(-1))  # (heads, N)
        return out


@pytest.mark.parametrize(
    "config",
    [
        CaptureConfig(cross_resolutions=(8,), self_resolution=16),
        CaptureConfig(cross_resolutions=(8, 16), self_resolution=8, places=("up", "mid"), steps=(0.25, 0.75)),
    ],
)
def test_capture_averages_equal_direct_computation(parts, config):
    unet, tokenizer, text_encoder = parts.unet, parts.tokenizer, parts.text_encoder
    classes = [["traffic light", "dog"], ["zebrafoo"]]  # two-token name, one token, unknown word of several tokens
    # The reference positions come from the tokenizer directly: tokens after the start token.
    pairs = []
    for image, names in enumerate(classes):
        for name in names:
            ids = tokenizer(name).input_ids
            pairs.append((image, list(range(1, len(ids) - 1))))
    assert [len(p) for _, p in pairs] == [2, 1, 4]
    flat = [n for names in classes for n in names]
    tokens = class_tokens(tokenizer, text_encoder, classes, "per-class", torch.device("cpu"))

    capture = AttentionCapture(config)
    batch = 2
    capture.start(tokens, slice(batch, 2 * batch))
    store = {"self": [], "cross": [[] for _ in pairs]}
    num_steps = 4
    state = {
        "config": config, "num_steps": num_steps, "cond": slice(batch, 2 * batch), "pairs": pairs,
        "class_embeddings": encode_text(tokenizer, text_encoder, flat, torch.device("cpu")),
    }  # fmt: skip
    original = unet.attn_processors
    unet.set_attn_processor(
        {n: Recorder(unet_place(n), CapturingAttnProcessor(capture, unet_place(n)), store, state) for n in original}
    )
    generator = torch.Generator().manual_seed(0)
    text = torch.randn(2 * batch, 77, 32, generator=generator)
    with torch.no_grad():
        for step in range(num_steps):
            state["step"] = step
            capture.active = config.step_is_captured(step, num_steps)
            unet(torch.randn(2 * batch, 4, 16, 16, generator=generator), 999 - 250 * step, encoder_hidden_states=text)
    unet.set_attn_processor(original)

    expected_self = torch.cat(store["self"], dim=1).mean(1)  # mean over (step, layer, head)
    assert torch.allclose(capture.self_attention(), expected_self, atol=1e-6)
    cross = capture.cross_maps()
    assert sorted(cross) == sorted(config.cross_resolutions)
    for resolution, maps in cross.items():
        assert maps.shape == (len(pairs), resolution, resolution)
        for p in range(len(pairs)):
            direct = [m for m in store["cross"][p] if m.shape[-1] == resolution * resolution]
            expected = torch.cat(direct).mean(0).reshape(resolution, resolution)
            assert torch.allclose(maps[p], expected, atol=1e-6)


def test_capture_leaves_the_unet_output_unchanged(parts):
    unet = parts.unet
    tokens = class_tokens(parts.tokenizer, parts.text_encoder, [["dog"]], "per-class", torch.device("cpu"))
    generator = torch.Generator().manual_seed(2)
    x, text = torch.randn(2, 4, 16, 16, generator=generator), torch.randn(2, 77, 32, generator=generator)
    with torch.no_grad():
        plain = unet(x, 500, encoder_hidden_states=text).sample
        capture = AttentionCapture(CaptureConfig(cross_resolutions=(8, 16), self_resolution=16))
        capture.start(tokens, slice(1, 2))
        capture.active = True
        with capturing(unet, capture):
            captured = unet(x, 500, encoder_hidden_states=text).sample
    assert torch.allclose(plain, captured, atol=1e-5)
    assert capture.self_attention().shape == (1, 256, 256)
    assert torch.allclose(capture.self_attention().sum(-1), torch.ones(1, 256), atol=1e-5)  # rows stay distributions
    assert all(type(p).__name__ != "CapturingAttnProcessor" for p in unet.attn_processors.values())


def test_joint_and_per_class_token_weights(parts):
    tokenizer = parts.tokenizer
    assert class_token_span(tokenizer, "traffic light") == 2 and class_token_span(tokenizer, "dog") == 1
    per_class = class_tokens(tokenizer, parts.text_encoder, [["traffic light", "dog"]], "per-class", torch.device("cpu"))
    joint = class_tokens(tokenizer, parts.text_encoder, [["traffic light", "dog"]], "joint", torch.device("cpu"))
    assert per_class.token_weights[0, :4].tolist() == [0.0, 0.5, 0.5, 0.0]
    assert per_class.token_weights[1, :3].tolist() == [0.0, 1.0, 0.0]
    assert joint.token_weights[0, :5].tolist() == [0.0, 0.5, 0.5, 0.0, 0.0]
    assert joint.token_weights[1, :5].tolist() == [0.0, 0.0, 0.0, 1.0, 0.0]  # "dog" follows "traffic light"
    assert torch.allclose(joint.embeddings[0], joint.embeddings[1])  # one prompt for the image
    assert torch.allclose(per_class.token_weights.sum(-1), torch.ones(2))


def test_missing_resolution_error_names_the_available_ones(parts):
    capture = AttentionCapture(CaptureConfig(cross_resolutions=(32,), self_resolution=64))
    capture.start(ClassTokens(torch.zeros(0, 77, 32), torch.zeros(0, 77), torch.zeros(0, dtype=torch.long)), slice(0, 1))
    capture.active = True
    with torch.no_grad(), capturing(parts.unet, capture):
        parts.unet(torch.randn(1, 4, 16, 16), 10, encoder_hidden_states=torch.randn(1, 77, 32))
    with pytest.raises(ValueError, match=r"attention layers at \[8, 16\]"):
        capture.self_attention()


def test_capture_config_validation():
    with pytest.raises(ValueError, match="places"):
        CaptureConfig(places=("left",))
    with pytest.raises(ValueError, match="steps"):
        CaptureConfig(steps=(0.5, 0.5))
