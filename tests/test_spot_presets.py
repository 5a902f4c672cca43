"""The SPOT presets: both stages of every paper setting, with the authors' gradient clipping.
(Every preset builds and trains in tests/test_presets.py.)"""

from __future__ import annotations

from slotlab.config import PRESET_DIR, load_preset
from slotlab.train.config import build_train_config

PRESETS = sorted(p.stem for p in PRESET_DIR.glob("spot-*.yaml"))


def test_every_paper_setting_has_both_stages():
    for data in ("coco", "voc", "movi-c", "movi-e", "mlp-coco", "tiny"):
        assert {f"spot-{data}", f"spot-{data}-stage2"} <= set(PRESETS)


def test_every_preset_clips_gradients_as_the_authors_do():
    for preset in PRESETS:
        optim = build_train_config(load_preset(preset)).optim
        assert (optim.grad_clip, optim.grad_clip_norm) == (0.3, float("inf")), preset  # max-abs clipping at 0.3


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
