"""Every SPOT preset builds with tiny twins and trains a few steps; stage-2 presets read a
stage-1 model trained here as their teacher."""

from __future__ import annotations

import pytest

from slotlab.config import PRESET_DIR, load_preset
from slotlab.train.config import build_train_config
from slotlab.train.trainer import train

PRESETS = sorted(p.stem for p in PRESET_DIR.glob("spot-*.yaml"))
SCENES = ["data.train=scenes?split=train&size=8&resolution=32", "data.val=scenes?split=val&size=4&resolution=32",
          "data.batch_size=2", "data.num_workers=0", "stages.0.steps=2", "stages.0.warmup_steps=1",
          "log_every=1", "checkpoint_every=2"]
# The paper presets' pretrained DINO swapped for a tiny random twin (width 32), the widths shrunk.
TWIN = ["model.encoder.path=null", "model.encoder.tiny=true", "model.encoder.image_size=32",
        "model.encoder.patch_size=8", "model.slot_attention.slot_dim=16", "model.slot_attention.mlp_hidden=16"]


def overrides(preset: str, teacher: str | None) -> list[str]:
    raw = load_preset(preset)["model"]
    extra = [] if raw["encoder"]["name"] == "patch" else list(TWIN)
    if raw["encoder"].get("trainable_blocks"):
        extra.append("model.encoder.trainable_blocks=2")  # the twin has 3 blocks
    if raw.get("decoder") is not None and extra:
        extra += ["model.decoder.width=32", "model.decoder.heads=2", "model.decoder.blocks=1"]
    if raw.get("mlp_decoder") is not None:
        extra.append("model.mlp_decoder.hidden_dim=16")
    if teacher is not None:
        extra.append(f"model.teacher={teacher}")
    return [*SCENES, *extra]


@pytest.fixture(scope="module")
def stage_one(tmp_path_factory):
    """Stage-1 twins, trained on demand, by preset name."""
    root, done = tmp_path_factory.mktemp("stage1"), {}

    def get(preset: str) -> str:
        if preset not in done:
            config = build_train_config(load_preset(preset), overrides(preset, None))
            done[preset] = str(train(config, root / preset, progress=False).model_dir)
        return done[preset]

    return get


def test_every_paper_setting_has_both_stages():
    for data in ("coco", "voc", "movi-c", "movi-e", "mlp-coco", "tiny"):
        assert {f"spot-{data}", f"spot-{data}-stage2"} <= set(PRESETS)


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_trains_a_few_steps(preset, stage_one, tmp_path):
    teacher = stage_one(preset.removesuffix("-stage2")) if preset.endswith("-stage2") else None
    config = build_train_config(load_preset(preset), overrides(preset, teacher))
    result = train(config, tmp_path / "run", progress=False)
    assert result.steps == 2 and (result.model_dir / "model.safetensors").is_file()
    assert config.optim.grad_clip == 0.3 and config.optim.grad_clip_norm == float("inf")
    if teacher is not None:
        assert "distillation" in result.model.default_loss_weights()


MOVI = [p for p in PRESETS if p.startswith("spot-movi-")]


def test_movi_presets_score_the_frames_at_128_as_the_paper(tmp_path):
    """SPOT Supp. D: MOVi masks are evaluated at the frames' full 128x128, not on the 320 grid
    of the COCO/VOC protocol: the ground truth is scored unresampled and the 14x14 slot masks
    are resized to it."""
    import dataclasses

    import numpy as np
    import torch
    from PIL import Image

    from slotlab.data.registry import TRANSFORM_KEYS, build_dataset, parse_spec
    from slotlab.data.sample import collate
    from slotlab.metrics.protocols import get_protocol

    assert len(MOVI) == 4
    rng = np.random.default_rng(0)
    labels = np.zeros((128, 128), np.uint8)
    labels[10:50, 20:90], labels[60:127, 5:40], labels[70:100, 70:120] = 1, 2, 3
    folder = tmp_path / "validation" / "video_0"
    folder.mkdir(parents=True)
    Image.fromarray(rng.integers(0, 255, (128, 128, 4), np.uint8), "RGBA").save(folder / "rgba_00000.png")
    Image.fromarray(labels, "L").save(folder / "segmentation_00000.png")
    for preset in MOVI:
        config = build_train_config(load_preset(preset), [])
        assert config.eval_protocol == "spot-movi", preset
        spec = parse_spec(config.data.val)
        assert not set(spec.options) & set(TRANSFORM_KEYS), f"{preset}: the validation labels must stay at 128"
        batch = collate([build_dataset(dataclasses.replace(spec, root=str(tmp_path)))[0]])
        protocol = get_protocol(config.eval_protocol)
        assert torch.equal(protocol.prepare_labels(batch).instance[0], torch.from_numpy(labels).long())
        truth = torch.nn.functional.one_hot(torch.from_numpy(labels).long(), 4).permute(2, 0, 1)[None].float()
        assert protocol.evaluate_batch(truth, batch)["spot-movi/mbo_i"].item() == 1.0
        assert protocol.eval_grid(*batch.image.shape[-2:]) == (128, 128)
    assert get_protocol("spot").eval_grid(128, 128) == (320, 320)  # what the presets used to score on
