"""Tests of slotlab.nn.encoders: shapes, grids, freezing, offline loading, token order."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from PIL import Image

from slotlab.ops.resize import center_crop, resize_image, shorter_side_size
from slotlab.nn.encoders import ENCODERS, build_encoder, encoder_config
from slotlab.nn.encoders.base import IMAGENET_MEAN, IMAGENET_STD
from slotlab.nn.encoders.cifar_resnet import CifarResNet, cifar_resnet_blocks_per_stage, load_cifar_resnet
from slotlab.nn.encoders.vit import vit_blocks
from tests.shared_dir import ASSETS, FIXTURES

CIFAR_DIR = ASSETS / "cifar_resnet"
CIFAR_WEIGHTS = {"resnet20": CIFAR_DIR / "resnet20-12fca82f.th", "resnet56": CIFAR_DIR / "resnet56-4bfd9763.th"}
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def images(batch: int = 2, size: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def imagenet_normalise(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def require_cifar_weights(name: str) -> Path:
    path = CIFAR_WEIGHTS[name]
    if not path.is_file():
        pytest.skip(f"real CIFAR ResNet weights not found at {path}")
    return path


# ------------------------------------------------------------------ shapes and grids

# (config, image sizes, expected (h, w) per size, expected dim)
SHAPE_CASES = [
    (dict(name="patch"), (32, 64), ((8, 8), (16, 16)), 64),
    (dict(name="patch", patch_size=8, dim=16, projection="learned"), (32, 64), ((4, 4), (8, 8)), 16),
    (dict(name="patch", projection="pixels"), (32, 64), ((8, 8), (16, 16)), 48),
    (dict(name="patch", projection="pixels", colour_frequencies=2), (32,), ((8, 8),), (3 + 4) * 16),
    (dict(name="patch", projection="pixels", edge_scales=(2.0, 4.0)), (32,), ((8, 8),), (3 + 6) * 16),
    (dict(name="patch", projection="pixels", structure_scales=(1.0, 2.0, 4.0)), (32,), ((8, 8),), (3 + 6) * 16),
    (dict(name="cnn"), (32, 64), ((8, 8), (16, 16)), 64),
    (dict(name="cnn", patch_size=8, dim=24, cnn_layers=3), (32, 64), ((4, 4), (8, 8)), 24),
    (dict(name="cifar_resnet", tiny=True), (32, 64), ((8, 8), (16, 16)), 64),
    (dict(name="cifar_resnet", tiny=True, layer=2), (32, 64), ((16, 16), (32, 32)), 32),
    (dict(name="cifar_resnet", tiny=True, layer=1), (32,), ((32, 32),), 16),
    (dict(name="dinov2", tiny=True), (56, 448), ((4, 4), (32, 32)), 32),
    (dict(name="dino", tiny=True), (64, 224), ((4, 4), (14, 14)), 32),
    (dict(name="mae", tiny=True), (64, 224), ((4, 4), (14, 14)), 32),
    (dict(name="dinov2", tiny=True, patch_size=8), (64,), ((8, 8),), 32),
]


@pytest.mark.parametrize("fields, sizes, grids, dim", SHAPE_CASES)
def test_output_shape_and_grid(fields, sizes, grids, dim):
    for size, grid in zip(sizes, grids):
        encoder = build_encoder(encoder_config(image_size=size, **fields))
        tokens = encoder(images(2, size))
        assert encoder.grid_size() == grid
        assert encoder.dim == dim
        assert tokens.shape == (2, grid[0] * grid[1], dim)
        assert torch.isfinite(tokens).all()


def test_inputs_of_another_size_are_resized_to_image_size():
    encoder = build_encoder(encoder_config(name="dino", tiny=True, image_size=64))
    odd = images(1, 100)[:, :, :, :90]
    expected = encoder(resize_image(odd, (64, 64)))
    assert torch.allclose(encoder(odd), expected)


def test_unknown_name_lists_the_names():
    with pytest.raises(ValueError) as error:
        build_encoder(encoder_config(name="resnet50"))
    for name in ENCODERS:
        assert name in str(error.value)


@pytest.mark.parametrize(
    "fields, field",
    [
        (dict(name="patch", final_norm=True), "final_norm"),
        (dict(name="dinov2", tiny=True, projection="learned"), "projection"),
        (dict(name="cnn", layer=2), "layer"),
        (dict(name="cifar_resnet", tiny=True, patch_size=4), "patch_size"),
    ],
)
def test_field_of_another_encoder_is_rejected(fields, field):
    with pytest.raises(ValueError, match=f"encoder.{field} does not apply"):
        build_encoder(encoder_config(**fields))


def test_image_size_not_multiple_of_patch_is_rejected():
    with pytest.raises(ValueError, match="multiple"):
        build_encoder(encoder_config(name="patch", image_size=30))
    with pytest.raises(ValueError, match="multiple"):
        build_encoder(encoder_config(name="dinov2", tiny=True, image_size=64))


def test_dim_that_contradicts_the_model_is_rejected():
    with pytest.raises(ValueError, match="encoder.dim=768"):
        build_encoder(encoder_config(name="dino", tiny=True, dim=768))


def test_bad_input_is_rejected():
    encoder = build_encoder(encoder_config(name="patch", image_size=32))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        encoder(torch.rand(3, 32, 32))


# ------------------------------------------------------------------ freezing and fine-tuning

FROZEN_CASES = [
    dict(name="patch"),
    dict(name="patch", projection="pixels"),
    dict(name="cnn"),
    dict(name="cifar_resnet", tiny=True),
    dict(name="dinov2", tiny=True),
    dict(name="dino", tiny=True),
    dict(name="mae", tiny=True),
]


@pytest.mark.parametrize("fields", FROZEN_CASES)
def test_frozen_by_default_and_stays_eval_after_train(fields):
    encoder = build_encoder(encoder_config(image_size=64 if fields["name"] != "dinov2" else 56, **fields))
    assert not any(p.requires_grad for p in encoder.parameters())
    parent = torch.nn.Sequential(encoder)
    parent.train()
    assert all(not module.training for module in encoder.modules())


def test_frozen_cifar_resnet_keeps_batchnorm_statistics():
    encoder = build_encoder(encoder_config(name="cifar_resnet", tiny=True, image_size=32))
    before = encoder.network.bn1.running_mean.clone()
    encoder.train()
    encoder(images(4, 32))
    assert torch.equal(encoder.network.bn1.running_mean, before)


def parameter_ids(module: torch.nn.Module) -> set[int]:
    return {id(p) for p in module.parameters()}


@pytest.mark.parametrize("name, final_norm", [("dinov2", True), ("dino", False), ("mae", False), ("dino", True)])
def test_trainable_blocks_unfreeze_exactly_the_last_blocks(name, final_norm):
    size = 56 if name == "dinov2" else 64
    config = encoder_config(name=name, tiny=True, image_size=size, trainable_blocks=2, final_norm=final_norm)
    encoder = build_encoder(config)
    blocks = vit_blocks(encoder.model)
    assert len(blocks) == 3
    expected = parameter_ids(blocks[1]) | parameter_ids(blocks[2])
    if final_norm:
        expected |= parameter_ids(encoder.model.layernorm)
    trainable = {id(p) for p in encoder.parameters() if p.requires_grad}
    assert trainable == expected

    encoder.train()
    assert not blocks[0].training and blocks[1].training and blocks[2].training
    assert not encoder.model.embeddings.training
    encoder.eval()
    assert not blocks[2].training

    encoder(images(2, size)).square().mean().backward()
    with_grad = {id(p) for p in encoder.parameters() if p.grad is not None}
    assert with_grad == expected


def test_trainable_blocks_of_cpu_encoders():
    cnn = build_encoder(encoder_config(name="cnn", image_size=32, trainable_blocks=1))
    assert {id(p) for p in cnn.parameters() if p.requires_grad} == parameter_ids(cnn.convs[-1])

    resnet = build_encoder(encoder_config(name="cifar_resnet", tiny=True, image_size=32, layer=2, trainable_blocks=1))
    assert {id(p) for p in resnet.parameters() if p.requires_grad} == parameter_ids(resnet.network.layer2[0])
    resnet.train()
    assert resnet.network.layer2[0].training and not resnet.network.layer1[0].training

    learned = build_encoder(encoder_config(name="patch", image_size=32, projection="learned"))
    assert {id(p) for p in learned.parameters() if p.requires_grad} == parameter_ids(learned.projection)
    assert learned.train().training


def test_too_many_trainable_blocks_is_a_clear_error():
    with pytest.raises(ValueError, match="trainable_blocks=4 but the dino encoder has 3 blocks"):
        build_encoder(encoder_config(name="dino", tiny=True, trainable_blocks=4))
    with pytest.raises(ValueError, match="projection='learned'"):
        build_encoder(encoder_config(name="patch", trainable_blocks=1))


# ------------------------------------------------------------------ ViT outputs, offline loading


def test_tiny_twins_are_reproducible_from_the_seed():
    first = build_encoder(encoder_config(name="dino", tiny=True, image_size=64, seed=3))
    second = build_encoder(encoder_config(name="dino", tiny=True, image_size=64, seed=3))
    other = build_encoder(encoder_config(name="dino", tiny=True, image_size=64, seed=4))
    x = images(1, 64)
    assert torch.equal(first(x), second(x))
    assert not torch.allclose(first(x), other(x))


def test_dinov2_tokens_are_normed_patch_tokens_of_imagenet_normalised_input():
    encoder = build_encoder(encoder_config(name="dinov2", tiny=True, image_size=56))
    x = images(2, 56)
    reference = encoder.model(pixel_values=imagenet_normalise(x)).last_hidden_state
    assert torch.allclose(encoder(x), reference[:, 1:], atol=1e-6)


@pytest.mark.parametrize("final_norm", [False, True])
def test_dino_final_norm_option(final_norm):
    encoder = build_encoder(encoder_config(name="dino", tiny=True, image_size=64, final_norm=final_norm))
    model = encoder.model
    pixels = imagenet_normalise(images(2, 64))
    output = model(pixel_values=pixels, interpolate_pos_encoding=True, output_hidden_states=True)
    block_output = output.hidden_states[-1][:, 1:]
    expected = model.layernorm(block_output) if final_norm else block_output
    assert torch.allclose(encoder(images(2, 64)), expected, atol=1e-6)


def test_tiny_dinov2_round_trip_through_a_local_directory(tmp_path):
    twin = build_encoder(encoder_config(name="dinov2", tiny=True, image_size=56))
    twin.model.save_pretrained(tmp_path)
    loaded = build_encoder(encoder_config(name="dinov2", path=str(tmp_path), image_size=56))
    x = images(2, 56)
    assert torch.equal(loaded(x), twin(x))
    assert not any(p.requires_grad for p in loaded.parameters())


@pytest.mark.parametrize("name", ["dino", "mae"])
def test_tiny_dino_and_mae_round_trip(tmp_path, name):
    twin = build_encoder(encoder_config(name=name, tiny=True, image_size=64))
    twin.model.save_pretrained(tmp_path)
    loaded = build_encoder(encoder_config(name=name, path=str(tmp_path), image_size=64))
    x = images(2, 64)
    assert torch.equal(loaded(x), twin(x))


def test_dinov2_register_tokens_are_dropped(tmp_path):
    config = transformers.Dinov2WithRegistersConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        patch_size=14, image_size=518, num_register_tokens=4,
    )
    model = transformers.Dinov2WithRegistersModel(config).eval()
    model.save_pretrained(tmp_path)
    encoder = build_encoder(encoder_config(name="dinov2", path=str(tmp_path), image_size=56))
    x = images(2, 56)
    tokens = encoder(x)
    reference = model(pixel_values=imagenet_normalise(x)).last_hidden_state
    assert reference.shape[1] == 1 + 4 + 16
    assert torch.allclose(tokens, reference[:, 5:], atol=1e-6)


def test_missing_weights_give_offline_instructions(tmp_path):
    with pytest.raises(ValueError, match="hf download facebook/dinov2-base"):
        build_encoder(encoder_config(name="dinov2"))
    with pytest.raises(FileNotFoundError, match="encoder.path=DIR"):
        build_encoder(encoder_config(name="dinov2", path=str(tmp_path / "absent")))
    with pytest.raises(FileNotFoundError, match="no config.json.*facebook/dino-vitb16"):
        build_encoder(encoder_config(name="dino", path=str(tmp_path)))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "vit_mae"}))
    with pytest.raises(FileNotFoundError, match="has no weights"):
        build_encoder(encoder_config(name="mae", path=str(tmp_path)))


def test_directory_of_another_model_is_rejected(tmp_path):
    build_encoder(encoder_config(name="dino", tiny=True)).model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="model_type 'vit' is not a dinov2 model"):
        build_encoder(encoder_config(name="dinov2", path=str(tmp_path)))


def test_tiny_and_path_together_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="tiny=True"):
        build_encoder(encoder_config(name="dino", tiny=True, path=str(tmp_path)))


def test_mae_keeps_every_token_deterministically():
    encoder = build_encoder(encoder_config(name="mae", tiny=True, image_size=64))
    x = images(2, 64)
    assert torch.equal(encoder(x), encoder(x))


def test_mae_token_order_is_raster(tmp_path):
    # With no transformer block a token is the (normed) patch embedding plus position
    # embedding of its own patch, which can be computed independently in raster order.
    config = transformers.ViTMAEConfig(
        hidden_size=32, num_hidden_layers=0, num_attention_heads=2, intermediate_size=64,
        patch_size=16, image_size=64, mask_ratio=0.75,
    )
    transformers.ViTMAEModel(config).save_pretrained(tmp_path)
    encoder = build_encoder(encoder_config(name="mae", path=str(tmp_path), image_size=64, final_norm=True))
    x = images(2, 64)
    model = encoder.model
    patches = model.embeddings.patch_embeddings.projection(imagenet_normalise(x)).flatten(2).transpose(1, 2)
    expected = model.layernorm(patches + model.embeddings.position_embeddings[:, 1:])
    assert torch.allclose(encoder(x), expected, atol=1e-6)


# ------------------------------------------------------------------ CPU encoders


def test_pixel_patch_tokens_follow_raster_order():
    encoder = build_encoder(encoder_config(name="patch", image_size=8, patch_size=4, projection="pixels"))
    x = images(1, 8)
    tokens = encoder(x)
    normalised = x * 2 - 1
    top_right = normalised[0, :, 0:4, 4:8].reshape(-1)
    bottom_left = normalised[0, :, 4:8, 0:4].reshape(-1)
    assert torch.allclose(tokens[0, 1], top_right)
    assert torch.allclose(tokens[0, 2], bottom_left)


def test_colour_features_depend_only_on_the_pixel_colour():
    encoder = build_encoder(
        encoder_config(name="patch", image_size=8, patch_size=4, projection="pixels", colour_frequencies=3)
    )
    x = torch.rand(1, 3, 1, 1).expand(1, 3, 8, 8).contiguous()
    tokens = encoder(x)
    assert torch.allclose(tokens, tokens[:, :1].expand_as(tokens))
    assert tokens.shape[-1] == (3 + 6) * 16


def test_edge_context_features_say_which_side_of_an_object_a_pixel_is_on():
    from slotlab.nn.encoders.pixel_features import edge_context_features

    flat = torch.full((1, 3, 32, 32), 0.3)
    assert edge_context_features(flat, (2.0, 4.0)).abs().max() == 0  # no edge, no context
    disc = flat.clone()
    y, x = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    disc[0, 0][(x - 15.5) ** 2 + (y - 15.5) ** 2 < 64] = 1.0  # centred between pixels 15 and 16
    features = edge_context_features(disc, (2.0,))
    strength, towards_x, towards_y = features[0]
    # inside the disc, 3 px from its left edge: the nearest edge is to the left
    assert towards_x[16, 11] < 0 < towards_x[16, 20]
    assert towards_y[11, 16] < 0 < towards_y[20, 16]
    assert strength[16, 8] > strength[16, 16]  # stronger on the edge than at the centre
    torch.testing.assert_close(towards_x, -towards_x.flip(-1), atol=1e-5, rtol=0)  # mirror symmetric
    with pytest.raises(ValueError, match="edge_scales"):
        build_encoder(encoder_config(name="patch", image_size=32, edge_scales=(0.0,)))


def test_structure_tensor_features_tell_edges_from_corners_whatever_the_rotation():
    from slotlab.nn.encoders.pixel_features import structure_tensor_features

    flat = torch.full((1, 3, 32, 32), 0.3)
    assert structure_tensor_features(flat, (1.0, 2.0)).abs().max() == 0  # no edge, no structure
    square = flat.clone()
    square[0, :, 8:24, 8:24] = 1.0
    larger, smaller = structure_tensor_features(square, (2.0,))[0]
    # halfway along a side: one strong direction; at a corner: two
    assert larger[16, 8] > 0.2 and smaller[16, 8] < 0.05 * larger[16, 8]
    assert smaller[8, 8] > 0.3 * larger[8, 8]
    # a quarter turn of an off-centre bar turns its features with it and changes nothing else
    bar = flat.clone()
    bar[0, :, 4:12, 6:26] = 1.0
    turned = structure_tensor_features(bar.rot90(1, (-2, -1)), (2.0,))
    torch.testing.assert_close(turned, structure_tensor_features(bar, (2.0,)).rot90(1, (-2, -1)))
    with pytest.raises(ValueError, match="structure_scales"):
        build_encoder(encoder_config(name="patch", image_size=32, structure_scales=(-1.0,)))


def test_random_projection_is_fixed_by_the_seed():
    x = images(1, 32)
    a = build_encoder(encoder_config(name="patch", image_size=32, seed=1))(x)
    b = build_encoder(encoder_config(name="patch", image_size=32, seed=1))(x)
    c = build_encoder(encoder_config(name="patch", image_size=32, seed=2))(x)
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_cnn_patch_size_must_be_reachable():
    with pytest.raises(ValueError, match="power of 2"):
        build_encoder(encoder_config(name="cnn", image_size=48, patch_size=6))
    with pytest.raises(ValueError, match="cnn_layers=2"):
        build_encoder(encoder_config(name="cnn", image_size=64, patch_size=8, cnn_layers=2))


def test_cifar_resnet_needs_a_path(tmp_path):
    with pytest.raises(ValueError, match="encoder.path=FILE"):
        build_encoder(encoder_config(name="cifar_resnet"))
    with pytest.raises(FileNotFoundError, match="no CIFAR ResNet weight file"):
        build_encoder(encoder_config(name="cifar_resnet", path=str(tmp_path / "absent.th")))


def test_cifar_resnet_option_a_shortcut_is_parameter_free_and_pads_channels():
    block = CifarResNet((1, 1, 1)).layer2[0]
    x = torch.rand(1, 16, 8, 8)
    shortcut = block.shortcut(x)
    assert shortcut.shape == (1, 32, 4, 4)
    assert torch.equal(shortcut[:, 8:24], x[:, :, ::2, ::2])
    assert shortcut[:, :8].abs().sum() == 0 and shortcut[:, 24:].abs().sum() == 0


@pytest.mark.parametrize("depth, blocks", [("resnet20", 3), ("resnet56", 9)])
def test_real_cifar_resnet_loads_strictly(depth, blocks):
    path = require_cifar_weights(depth)
    network = load_cifar_resnet(path)
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    assert cifar_resnet_blocks_per_stage({k.removeprefix("module."): v for k, v in state.items()}) == (blocks,) * 3
    loaded = network.state_dict()
    for key, value in state.items():
        assert torch.equal(loaded[key.removeprefix("module.")], value)
    learned = {name for name, _ in network.named_parameters()}
    assert learned <= {key.removeprefix("module.") for key in state}
    logits = network(torch.zeros(2, 3, 32, 32))
    assert logits.shape == (2, 10)


def fixture_photo(relative: str, size: int) -> torch.Tensor:
    array = np.array(Image.open(FIXTURES / relative).convert("RGB"))
    image = torch.from_numpy(array).permute(2, 0, 1).float() / 255
    image = resize_image(image, shorter_side_size(image.shape[1], image.shape[2], size))
    return center_crop(image, (size, size))


@pytest.mark.parametrize("depth", ["resnet20", "resnet56"])
def test_real_cifar_resnet_calls_buses_trucks(depth):
    # CIFAR-10 has no bus; its nearest class, "truck", is what a working network and
    # input normalisation must give for two photos dominated by a bus.
    path = require_cifar_weights(depth)
    photos = ["coco_instances_sample/images/000000128372.jpg", "voc_sample/JPEGImages/2011_000025.jpg"]
    if not all((FIXTURES / photo).is_file() for photo in photos):
        pytest.skip(f"bus photos not found under {FIXTURES}")
    encoder = build_encoder(encoder_config(name="cifar_resnet", path=str(path), image_size=32))
    x = torch.stack([fixture_photo(photo, 32) for photo in photos])
    with torch.no_grad():
        predicted = encoder.network(encoder.preprocess(x)).argmax(dim=-1)
    assert [CIFAR_CLASSES[i] for i in predicted] == ["truck", "truck"]


def test_real_cifar_resnet_tokens_are_its_stage_features():
    path = require_cifar_weights("resnet20")
    encoder = build_encoder(encoder_config(name="cifar_resnet", path=str(path), image_size=64, layer=2))
    x = images(2, 64)
    tokens = encoder(x)
    assert tokens.shape == (2, 32 * 32, 32)
    features = encoder.network.features(imagenet_normalise(x), stage=2)
    assert torch.allclose(tokens, features.flatten(2).transpose(1, 2))
    assert (tokens >= 0).all()  # stage outputs end in a ReLU


def test_patch_position_features_make_tokens_position_dependent():
    from slotlab.nn.encoders.pixel_features import position_fourier_features

    config = encoder_config(name="patch", image_size=16, patch_size=4, dim=8, position_frequencies=2)
    tokens = build_encoder(config)(torch.full((1, 3, 16, 16), 0.5))
    assert tokens.shape == (1, 16, 8)
    assert not torch.allclose(tokens[0, 0], tokens[0, 5])  # same colour, other place
    plain = build_encoder(encoder_config(name="patch", image_size=16, patch_size=4, dim=8))
    flat = plain(torch.full((1, 3, 16, 16), 0.5))
    torch.testing.assert_close(flat[0, 0], flat[0, 5])
    features = position_fourier_features(3, 5, 2)
    assert features.shape == (8, 3, 5)
    torch.testing.assert_close(features[0, 0], torch.sin(torch.pi * torch.linspace(0, 1, 5)))


def test_patch_position_scale_sets_the_amplitude_of_the_position_features():
    def tokens(scale: float) -> torch.Tensor:
        config = encoder_config(name="patch", image_size=16, patch_size=4, dim=8, position_frequencies=2,
                                position_scale=scale)
        return build_encoder(config)(torch.full((1, 3, 16, 16), 0.5))

    full, half, quarter = tokens(1.0), tokens(0.5), tokens(0.25)
    position = 2 * (full - half)  # the fixed projection is linear: tokens = colour + scale * position
    assert position.abs().amax() > 0.1
    torch.testing.assert_close(half - quarter, position / 4)
    with pytest.raises(ValueError, match="encoder.position_scale scales encoder.position_frequencies"):
        encoder_config(name="patch", image_size=16, position_scale=0.5)


@pytest.mark.parametrize("values, message", [
    ({"colour_frequencies": -1}, "encoder.colour_frequencies must be >= 0, got -1"),
    ({"position_frequencies": -2}, "encoder.position_frequencies must be >= 0, got -2"),
    ({"semantic_gain": 0.0}, "encoder.semantic_gain must be > 0, got 0.0"),
    ({"position_scale": 0.0}, "encoder.position_scale must be > 0, got 0.0"),
])
def test_patch_config_fields_out_of_range_are_refused_by_name(values, message):
    from slotlab.nn.encoders.patch import PatchEncoderConfig

    with pytest.raises(ValueError, match=message):
        PatchEncoderConfig(image_size=32, **values)
