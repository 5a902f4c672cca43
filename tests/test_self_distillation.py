"""Self-distillation (the CPU encoder trained without labels) and the ``ssl`` encoder that reads it."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import torch.nn.functional as F

from slotlab.config import load_preset
from slotlab.train.config import build_train_config
from slotlab.train.trainer import build_model, train
from slotlab.methods.base import ObjectCentricModel
from slotlab.methods.self_distillation import SelfDistillation, SelfDistillationConfig, ema_momentum
from slotlab.methods.ssl_views import ViewsConfig, image_points, random_views
from slotlab.methods.encoder_parts import build_method_encoder
from slotlab.nn.encoders import encoder_config
from tests.label_free import losses_with_and_without_labels

SMALL_NETWORK = {"channels": 16, "skip_channels": 8, "dim": 16, "dilations": [1, 2], "output_stride": 4}


def ssl_preset(steps: int) -> dict:
    preset = load_preset("ssl-scenes-tiny")
    preset["model"]["network"] = dict(SMALL_NETWORK)
    preset["model"]["prototypes"] = 32
    preset["model"]["image_prototypes"] = 16
    preset["data"] = {"train": "scenes?split=train&size=32", "val": "scenes?split=val&size=4", "batch_size": 8}
    preset["stages"][0].update(steps=steps, warmup_steps=1)
    preset["checkpoint_every"] = steps
    return preset


def test_views_know_which_image_point_each_token_shows():
    """Sampling the image at image_points gives the view's pixels (grey images: the channel
    permutation changes nothing; no colour change)."""
    torch.manual_seed(0)
    grey = torch.rand(3, 1, 32, 32).expand(-1, 3, -1, -1)
    config = ViewsConfig(global_views=1, local_views=1, gain=(1.0, 1.0), offset=0.0, grey_probability=0.0)
    for view in random_views(grey, config):
        points = image_points(view.theta, (32, 32))
        expected = F.grid_sample(grey, points, align_corners=False)
        assert torch.allclose(view.pixels, expected, atol=1e-6)


def test_teacher_momentum_follows_a_cosine_to_one():
    assert ema_momentum(0.99, 0, 100) == pytest.approx(0.99)
    assert ema_momentum(0.99, 50, 100) == pytest.approx(0.995)
    assert ema_momentum(0.99, 100, 100) == pytest.approx(1.0)


def test_teacher_is_an_average_of_the_student():
    torch.manual_seed(0)
    model = SelfDistillation(SelfDistillationConfig(network=build_small_network(), prototypes=8, image_prototypes=8))
    teacher = model.teacher.network.project.weight
    before = teacher.clone()
    with torch.no_grad():
        model.student.network.project.weight.add_(1.0)
    model.on_step(0, 10)  # momentum 0.99 at the start
    assert torch.allclose(teacher, 0.99 * before + 0.01 * model.student.network.project.weight)
    assert not any(p.requires_grad for p in model.teacher.parameters())
    assert set(model.parameter_groups()) == {"student"}


def build_small_network():
    from slotlab.nn.encoders.ssl import ConvNetConfig

    return ConvNetConfig(**{**SMALL_NETWORK, "dilations": tuple(SMALL_NETWORK["dilations"])})


def test_training_logs_both_terms_and_reads_no_labels(tmp_path):
    """A short run logs both loss terms; blanking every label leaves the loss unchanged."""
    result = train(build_train_config(ssl_preset(4)), tmp_path / "run", progress=False)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert records and all({"token", "image"} <= set(record) for record in records)
    model = result.model.train()
    state = {key: value.clone() for key, value in model.state_dict().items()}
    # the first pass moved the centres
    with_labels, blank = losses_with_and_without_labels(model, lambda: model.load_state_dict(state))
    assert torch.isfinite(with_labels) and torch.equal(with_labels, blank)


def test_resume_matches_an_uninterrupted_run(tmp_path):
    """Teacher, centres and student continue from a checkpoint exactly as without the break."""
    preset = ssl_preset(6)
    preset["checkpoint_every"] = 3
    full = train(build_train_config(preset), tmp_path / "full", progress=False)
    shutil.copytree(tmp_path / "full", tmp_path / "part")
    shutil.rmtree(tmp_path / "part" / "checkpoints" / "step-00000006")
    resumed = train(build_train_config(preset), tmp_path / "part", resume=True, progress=False)
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name


@pytest.fixture(scope="module")
def ssl_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ssl")
    return train(build_train_config(ssl_preset(2)), out, progress=False).model_dir


def test_ssl_encoder_reads_the_frozen_teacher(ssl_run):
    encoder = build_method_encoder(encoder_config(name="ssl", path=str(ssl_run), image_size=32))
    teacher = SelfDistillation.from_pretrained(ssl_run).teacher.network
    images = torch.rand(2, 3, 32, 32)
    tokens = encoder(images)
    assert tokens.shape == (2, 64, 16) and encoder.grid_size() == (8, 8)
    assert all(not p.requires_grad for p in encoder.parameters())
    assert torch.allclose(tokens, teacher(images * 2 - 1).flatten(2).transpose(1, 2), atol=1e-6)


def test_a_model_on_the_ssl_encoder_reloads_without_its_run(tmp_path, ssl_run):
    moved = tmp_path / "ssl"
    shutil.copytree(ssl_run, moved)
    preset = load_preset("dinosaur-tiny")
    model = build_model(build_train_config(preset, [f"model.encoder={{name: ssl, path: {moved}, image_size: 64}}",
                                                    "inputs={}"]))
    model.save_pretrained(tmp_path / "model")
    shutil.rmtree(moved)
    loaded = ObjectCentricModel.from_pretrained(tmp_path / "model")
    images = torch.rand(2, 3, 64, 64)
    assert torch.allclose(loaded.encoder(images), model.eval().encoder(images))


def test_missing_or_wrong_ssl_run_is_a_clear_error(tmp_path, ssl_run, segmenter_dir):
    with pytest.raises(ValueError, match="ssl-shapes-scenes-tiny"):
        build_method_encoder(encoder_config(name="ssl", image_size=64))
    with pytest.raises(FileNotFoundError, match="ssl-scenes-tiny"):
        build_method_encoder(encoder_config(name="ssl", path=str(tmp_path / "nothing"), image_size=64))
    with pytest.raises(ValueError, match="not a label-free encoder run"):
        build_method_encoder(encoder_config(name="ssl", path=str(segmenter_dir), image_size=64))
    with pytest.raises(ValueError, match="encoder.dim=32"):
        build_method_encoder(encoder_config(name="ssl", path=str(ssl_run), image_size=64, dim=32))
