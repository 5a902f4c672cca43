"""Region-level contrast (DetCon) on unsupervised colour regions, and the ssl encoder reading it."""

from __future__ import annotations

import json

import pytest
import torch

from slotlab.config import load_preset
from slotlab.methods.encoder_parts import build_method_encoder
from slotlab.methods.region_contrast import RegionContrast, colour_regions, pool_regions, region_contrastive_loss
from slotlab.nn.encoders import encoder_config
from slotlab.train.config import build_train_config
from slotlab.train.trainer import train
from tests.label_free import losses_with_and_without_labels

SMALL_NETWORK = {"channels": 16, "skip_channels": 8, "dim": 16, "dilations": [1, 2], "output_stride": 4}


def small_preset(steps: int) -> dict:
    preset = load_preset("ssl-regions-scenes-tiny")
    preset["model"]["network"] = dict(SMALL_NETWORK)
    preset["model"]["projector_hidden"] = 32
    preset["data"] = {"train": "scenes?split=train&size=16", "val": "scenes?split=val&size=4", "batch_size": 8}
    preset["stages"][0].update(steps=steps, warmup_steps=1)
    preset["checkpoint_every"] = steps
    return preset


def two_squares() -> torch.Tensor:
    image = torch.full((1, 3, 16, 16), 0.1)
    image[0, 0, 2:6, 2:6] = 0.9  # red square, 16 px
    image[0, 2, 9:14, 9:14] = 0.9  # blue square, 25 px
    image[0, :, 0, 15] = 1.0  # a white speck: too small to be a region
    return image


def test_colour_regions_are_the_flat_colour_components():
    regions = colour_regions(two_squares(), levels=4, min_pixels=4)[0]
    assert int(regions.max()) + 1 == 3  # background, red, blue
    assert regions[0, 15] == -1
    assert len(set(regions[2:6, 2:6].flatten().tolist())) == 1
    assert regions[3, 3] != regions[10, 10] != regions[0, 0]


def test_regions_are_pooled_at_the_image_points_of_a_view():
    """Under the identity transform a region's pooled feature is the mean over its pixels."""
    regions = colour_regions(two_squares(), levels=4, min_pixels=4)
    features = torch.randn(1, 5, 16, 16)
    identity = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    pooled, counts = pool_regions(features, regions, identity, 3)
    for region in range(3):
        inside = regions[0] == region
        assert counts[0, region] == inside.sum()
        assert torch.allclose(pooled[0, region], features[0][:, inside].mean(1), atol=1e-5)


def test_contrastive_loss_is_low_when_regions_find_themselves():
    codes = torch.eye(4) * 5
    assert region_contrastive_loss(codes, codes, 0.1) < 1e-3
    assert region_contrastive_loss(codes, codes.roll(1, 0), 0.1) > 10


def test_training_reads_no_labels_and_the_ssl_encoder_reads_the_network(tmp_path):
    result = train(build_train_config(small_preset(3)), tmp_path / "run", progress=False)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert records and all("regions" in record for record in records if "loss" in record)
    with_labels, blank = losses_with_and_without_labels(result.model.train())
    assert torch.isfinite(with_labels) and torch.equal(with_labels, blank)

    encoder = build_method_encoder(encoder_config(name="ssl", path=str(result.model_dir), image_size=32))
    network = RegionContrast.from_pretrained(result.model_dir).network
    images = torch.rand(2, 3, 32, 32)
    assert encoder(images).shape == (2, 64, 16)
    assert torch.allclose(encoder(images), network(images * 2 - 1).flatten(2).transpose(1, 2), atol=1e-6)


def test_bad_views_are_refused():
    from slotlab.methods.region_contrast import RegionContrastConfig
    from slotlab.methods.ssl_views import ViewsConfig

    with pytest.raises(ValueError, match="exactly two views"):
        RegionContrastConfig(views=ViewsConfig(global_views=2, local_views=2))


@pytest.mark.parametrize("field, value, message", [
    ("temperature", 0.0, "temperature must be > 0"),
    ("colour_levels", 1, "colour_levels must be >= 2"),
    ("image_size", 30, "image_size=30 must be a positive multiple of 4"),
])
def test_out_of_range_fields_are_refused_in_code_as_in_presets(field, value, message):
    from slotlab.config import ConfigError, from_dict
    from slotlab.methods.region_contrast import RegionContrastConfig

    with pytest.raises(ValueError, match=message):
        RegionContrastConfig(**{field: value})
    with pytest.raises(ConfigError, match=f"model.*{message}"):
        from_dict(RegionContrastConfig, {field: value}, "model")


def test_ssl_encoder_adds_each_cells_colour_on_a_finer_grid(tmp_path):
    from slotlab.nn.encoders.ssl import ConvNet, ConvNetConfig, SSLEncoder

    torch.manual_seed(0)
    network = ConvNet(ConvNetConfig(channels=16, skip_channels=8, dim=16, dilations=(1,), output_stride=4))
    encoder = SSLEncoder(network, image_size=32, patch_size=2, colour_frequencies=2, colour_sigma=1.0)
    images = torch.rand(2, 3, 32, 32)
    tokens = encoder(images).transpose(1, 2).reshape(2, -1, 16, 16)
    assert encoder.dim == 16 + 3 + 4 and encoder.grid_size() == (16, 16)
    learned = torch.nn.functional.interpolate(network(images * 2 - 1), size=(16, 16), mode="bilinear",
                                              align_corners=False)
    assert torch.allclose(tokens[:, :16], learned, atol=1e-5)
    assert torch.allclose(tokens[:, 16:19], torch.nn.functional.avg_pool2d(images * 2 - 1, 2), atol=1e-5)
    with pytest.raises(ValueError, match="must divide"):
        SSLEncoder(network, image_size=48, patch_size=6)


def test_ssl_encoder_network_scale_weighs_the_network_dims_and_leaves_the_colour_dims():
    from slotlab.config import ConfigError, from_dict
    from slotlab.nn.encoders import build_encoder, encoder_config
    from slotlab.nn.encoders.ssl import ConvNet, ConvNetConfig, SSLEncoderConfig

    torch.manual_seed(0)
    network = ConvNet(ConvNetConfig(channels=16, skip_channels=8, dim=16, dilations=(1,), output_stride=2))
    images = torch.rand(2, 3, 32, 32)
    settings = {"name": "ssl", "image_size": 32, "colour_frequencies": 2, "colour_sigma": 1.0}
    plain = build_encoder(encoder_config(**settings), network=network)(images)
    scaled = build_encoder(encoder_config(**settings, network_scale=0.25), network=network)(images)
    assert scaled.shape == plain.shape and plain[..., :16].abs().max() > 0.1
    assert torch.allclose(scaled[..., :16], 0.25 * plain[..., :16], atol=1e-6)
    assert torch.equal(scaled[..., 16:], plain[..., 16:])
    for bad in (0.0, -1.0):
        with pytest.raises(ConfigError, match="model.encoder.*network_scale.*must be > 0"):
            from_dict(SSLEncoderConfig, {"network_scale": bad}, "model.encoder")


def test_ssl_encoder_colour_pooling_averages_each_pixels_colour_features():
    from slotlab.nn.encoders import build_encoder, encoder_config
    from slotlab.nn.encoders.pixel_features import colour_fourier_features
    from slotlab.nn.encoders.ssl import ConvNet, ConvNetConfig

    torch.manual_seed(0)
    network = ConvNet(ConvNetConfig(channels=16, skip_channels=8, dim=16, dilations=(1,), output_stride=2))
    images = torch.rand(2, 3, 32, 32)
    settings = {"name": "ssl", "image_size": 32, "colour_frequencies": 2, "colour_sigma": 3.0}
    of_mean = build_encoder(encoder_config(**settings), network=network)
    pooled = build_encoder(encoder_config(**settings, colour_pooling="features"), network=network)
    tokens, mean_tokens = pooled(images), of_mean(images)
    pixels = images * 2 - 1
    expected = torch.nn.functional.avg_pool2d(colour_fourier_features(pixels, pooled.colour_frequencies), 2)
    assert torch.allclose(tokens[..., 19:], expected.flatten(2).transpose(1, 2), atol=1e-5)
    assert torch.equal(tokens[..., :19], mean_tokens[..., :19])  # network dims and mean colour agree
    assert not torch.allclose(tokens[..., 19:], mean_tokens[..., 19:], atol=1e-2)
    with pytest.raises(ValueError, match="colour_pooling='pixel': choose one of"):
        encoder_config(**settings, colour_pooling="pixel")


def test_ssl_encoder_position_features_are_each_cells_mean_of_its_pixels_scaled():
    from slotlab.nn.encoders import build_encoder, encoder_config
    from slotlab.nn.encoders.pixel_features import position_fourier_features
    from slotlab.nn.encoders.ssl import ConvNet, ConvNetConfig

    torch.manual_seed(0)
    network = ConvNet(ConvNetConfig(channels=16, skip_channels=8, dim=16, dilations=(1,), output_stride=2))
    images = torch.rand(2, 3, 32, 32)
    settings = {"name": "ssl", "image_size": 32, "colour_frequencies": 2}
    plain = build_encoder(encoder_config(**settings), network=network)
    placed = build_encoder(encoder_config(**settings, position_frequencies=3, position_scale=0.25), network=network)
    tokens, plain_tokens = placed(images), plain(images)
    assert placed.dim == plain.dim + 12 and tokens.shape[-1] == placed.dim
    assert torch.equal(tokens[..., :plain.dim], plain_tokens)
    cells = torch.nn.functional.avg_pool2d(position_fourier_features(32, 32, 3), 2)  # (12, 16, 16)
    expected = 0.25 * cells.flatten(1).T
    assert torch.allclose(tokens[0, :, plain.dim:], expected, atol=1e-6)
    assert torch.equal(tokens[0, :, plain.dim:], tokens[1, :, plain.dim:])  # position does not depend on the image
    with pytest.raises(ValueError, match="encoder.position_scale scales encoder.position_frequencies"):
        encoder_config(**settings, position_scale=0.5)
