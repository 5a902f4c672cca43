"""Silhouette contrast (SimCLR on the outlines of unsupervised colour regions), its network and
the ``ssl`` encoder reading it."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from slotlab.config import load_preset
from slotlab.methods.base import ObjectCentricModel
from slotlab.methods.encoder_parts import build_method_encoder
from slotlab.methods.silhouette_contrast import (SilhouetteContrast, SilhouetteViewsConfig, nt_xent,
                                                 random_transforms)
from slotlab.nn.encoders import build_encoder, encoder_config
from slotlab.nn.encoders.pixel_features import fourier_of_positions
from slotlab.nn.encoders.silhouettes import (SilhouetteNet, SilhouetteNetConfig, flat_regions, region_centroid_features,
                                             region_frames, silhouette_crops)
from slotlab.train.config import build_train_config
from slotlab.train.supervision import describe_supervision
from slotlab.train.trainer import build_model, train
from tests.label_free import losses_with_and_without_labels

SMALL_NETWORK = {"width": 8, "dim": 16, "crop_size": 16}


def small_preset(steps: int) -> dict:
    preset = load_preset("ssl-shapes-scenes-tiny")
    preset["model"]["network"].update(SMALL_NETWORK)
    preset["model"]["projector_hidden"] = 32
    preset["data"] = {"train": "scenes?split=train&size=16", "val": "scenes?split=val&size=4", "batch_size": 8}
    preset["stages"][0].update(steps=steps, warmup_steps=1)
    preset["checkpoint_every"] = steps
    preset["log_every"] = 1
    return preset


@pytest.fixture(scope="module")
def shapes_run(tmp_path_factory):
    torch.manual_seed(0)
    return train(build_train_config(small_preset(30)), tmp_path_factory.mktemp("shapes") / "run", progress=False)


def square(side: int, top: int, left: int, size: int = 32, background: float = 0.1) -> torch.Tensor:
    """A red square on a flat background, (1, 3, size, size)."""
    image = torch.full((1, 3, size, size), background)
    image[0, 0, top:top + side, left:left + side] = 0.9
    return image


def test_flat_regions_join_smooth_colour_and_drop_specks():
    image = square(6, 2, 2)
    image[0, 2, 20:26, 20:26] = 0.9  # a blue square
    image[0, :, 30, 0] = 1.0  # a white speck: too small to be a region
    image[0, 1] += torch.linspace(0, 0.3, 32)  # a smooth gradient across the image: steps of 0.01
    regions = flat_regions(image, threshold=0.06, min_pixels=4)[0]
    assert int(regions.max()) + 1 == 3  # background, red, blue
    assert regions[30, 0] == -1
    assert len(set(regions[2:8, 2:8].flatten().tolist())) == 1
    assert regions[3, 3] != regions[22, 22] != regions[0, 31]
    # two images are numbered apart
    both = flat_regions(torch.cat([image, image]), threshold=0.06, min_pixels=4)
    assert int(both.max()) + 1 == 6 and not set(both[0].unique().tolist()) & set(both[1].unique().tolist()) - {-1}


def square_crop(image: torch.Tensor, inside: tuple[int, int], transforms: torch.Tensor | None = None) -> torch.Tensor:
    """The silhouette crop (1, 16, 16) of the region at pixel ``inside``."""
    regions = flat_regions(image, 0.06, 4)
    frames = region_frames(regions)
    if transforms is not None:
        transforms = transforms.expand(len(frames.image), 2, 2)
    return silhouette_crops(regions, frames, 16, 2.2, transforms)[int(regions[0, inside[0], inside[1]])]


def test_a_silhouette_keeps_the_outline_and_drops_place_size_and_colour():
    small, large = square_crop(square(8, 2, 2), (4, 4)), square_crop(square(16, 12, 10), (20, 15))
    recoloured = square_crop(1 - square(16, 12, 10), (20, 15))
    assert (small - large).abs().mean() < 0.05 and torch.equal(large, recoloured)
    ys, xs = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    mass = large[0].sum()
    assert abs(float((large[0] * xs).sum() / mass) - 7.5) < 0.1 and abs(float((large[0] * ys).sum() / mass) - 7.5) < 0.1
    quarter_turn = torch.tensor([[0.0, -1.0], [1.0, 0.0]])
    assert torch.allclose(square_crop(square(16, 12, 10), (20, 15), quarter_turn), large, atol=1e-5)
    assert not torch.allclose(square_crop(square(16, 12, 10), (20, 15), quarter_turn * 0.7), large, atol=0.1)


def test_random_transforms_are_rotations_mirrors_and_zooms():
    views = SilhouetteViewsConfig(shear=0.0, zoom=0.2)
    transforms, shifts = random_transforms(500, views, torch.Generator().manual_seed(0))
    determinant = torch.linalg.det(transforms)
    assert (determinant < 0).float().mean().item() == pytest.approx(0.5, abs=0.08)  # mirrored half the time
    assert determinant.abs().sqrt().min() >= 0.8 - 1e-5 and determinant.abs().sqrt().max() <= 1.2 + 1e-5
    assert shifts.abs().max() <= views.shift
    fixed, _ = random_transforms(3, SilhouetteViewsConfig(rotation=0, mirror=0, zoom=0, shear=0))
    assert torch.allclose(fixed, torch.eye(2).expand(3, 2, 2))
    with pytest.raises(ValueError, match=r"views.mirror must be in \[0, 1\]"):
        SilhouetteViewsConfig(mirror=1.5)


def test_nt_xent_is_low_when_views_find_their_pair():
    codes = torch.eye(4) * 5
    low, match = nt_xent(codes, codes, 0.1)
    assert low < 1e-3 and match == 1
    high, match = nt_xent(codes, codes.roll(1, 0), 0.1)
    assert high > 5 and match == 0
    # a uniform embedding: every other view equally likely
    assert float(nt_xent(torch.ones(4, 3), torch.ones(4, 3), 0.1)[0]) == pytest.approx(math.log(7), abs=1e-4)


def test_training_reads_no_labels_and_the_loss_falls(shapes_run):
    records = [json.loads(line) for line in (shapes_run.model_dir.parent / "metrics.jsonl").read_text().splitlines()]
    losses = [record["loss"] for record in records if "loss" in record and "match" in record]
    assert len(losses) == 30 and sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.3
    with_labels, blank = losses_with_and_without_labels(shapes_run.model.train())
    assert torch.isfinite(with_labels) and torch.equal(with_labels, blank)
    assert "silhouette" in describe_supervision(json.loads(json.dumps(
        {"method": "dinosaur", "model": {"encoder": {"name": "ssl", "path": str(shapes_run.model_dir)}}})))


def test_the_ssl_encoder_reads_the_network_and_a_model_reloads_without_the_run(shapes_run, tmp_path):
    network = SilhouetteContrast.from_pretrained(shapes_run.model_dir).network
    encoder = build_method_encoder(encoder_config(name="ssl", path=str(shapes_run.model_dir), image_size=32,
                                                  colour_frequencies=2))
    images = torch.rand(2, 3, 32, 32).round()  # flat colours: regions of many pixels
    tokens = encoder(images)
    assert tokens.shape == (2, 16 * 16, 16 + 3 + 4) and not any(p.requires_grad for p in encoder.parameters())
    assert torch.allclose(tokens[..., :16], network(images * 2 - 1).flatten(2).transpose(1, 2), atol=1e-6)
    coarse = build_method_encoder(encoder_config(name="ssl", path=str(shapes_run.model_dir), image_size=32,
                                                 patch_size=4))
    assert coarse(images).shape == (2, 8 * 8, 16)
    rebuilt = build_encoder(encoder_config(name="ssl", image_size=32), encoder.architecture())
    assert isinstance(rebuilt.network, SilhouetteNet) and rebuilt.network.config == network.config

    moved = tmp_path / "shapes"
    shutil.copytree(shapes_run.model_dir, moved)
    model = build_model(build_train_config(load_preset("dinosaur-tiny"), [
        f"model.encoder={{name: ssl, path: {moved}, image_size: 64, patch_size: 2, colour_frequencies: 4}}",
        "inputs={}"]))
    model.save_pretrained(tmp_path / "model")
    shutil.rmtree(moved)
    loaded = ObjectCentricModel.from_pretrained(tmp_path / "model")
    images = torch.rand(2, 3, 64, 64).round()
    assert torch.allclose(loaded.encoder(images), model.eval().encoder(images))


def test_pixels_in_no_region_get_no_embedding():
    network = SilhouetteNet(SilhouetteNetConfig(**SMALL_NETWORK, output_stride=4)).eval()
    noise = torch.rand(1, 3, 16, 16) * 2 - 1  # every pixel its own colour: no region of 12 pixels
    assert torch.equal(network(noise), torch.zeros(1, 16, 4, 4))
    with pytest.raises(ValueError, match="multiples of its output_stride"):
        network(torch.zeros(1, 3, 18, 18))



def test_region_centroid_features_give_each_region_the_features_of_its_centroid():
    image = square(6, 2, 2)
    image[0, 0, 20:26, 14:20] = 0.9  # a second red square, apart from the first
    image[0, :, 30, 0] = 1.0  # a speck: in no region
    features = region_centroid_features(flat_regions(image, threshold=0.06, min_pixels=4), frequencies=3)[0]  # (12, 32, 32)
    first = fourier_of_positions(torch.tensor([(2 + 2.5 + 0.5) / 32, (2 + 2.5 + 0.5) / 32]), 3)
    second = fourier_of_positions(torch.tensor([(14 + 2.5 + 0.5) / 32, (20 + 2.5 + 0.5) / 32]), 3)  # (x, y)
    assert torch.allclose(features[:, 2:8, 2:8], first[:, None, None].expand(12, 6, 6), atol=1e-5)
    assert torch.allclose(features[:, 20:26, 14:20], second[:, None, None].expand(12, 6, 6), atol=1e-5)
    assert not torch.allclose(first, second, atol=0.1)  # same colour, same shape, told apart
    assert torch.equal(features[:, 30, 0], torch.zeros(12))


def test_ssl_encoder_region_features_are_each_cells_mean_scaled():
    network = SilhouetteNet(SilhouetteNetConfig(**SMALL_NETWORK, output_stride=4)).eval()
    image = square(6, 2, 2)
    image[0, 0, 20:26, 14:20] = 0.9
    settings = {"name": "ssl", "image_size": 32, "colour_frequencies": 2, "position_frequencies": 1}
    plain = build_encoder(encoder_config(**settings), network=network)
    placed = build_encoder(encoder_config(**settings, region_frequencies=3, region_scale=0.5), network=network)
    tokens, plain_tokens = placed(image), plain(image)
    assert placed.dim == plain.dim + 12 and tokens.shape[-1] == placed.dim
    assert torch.equal(tokens[..., :plain.dim], plain_tokens)
    cells = torch.nn.functional.avg_pool2d(region_centroid_features(network.regions(image * 2 - 1), 3), 4)[0]  # (12, 8, 8)
    assert torch.allclose(tokens[0, :, plain.dim:], 0.5 * cells.flatten(1).T, atol=1e-6)
    with pytest.raises(ValueError, match="encoder.region_scale scales encoder.region_frequencies"):
        encoder_config(**settings, region_scale=0.5)
