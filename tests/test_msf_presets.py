"""The VQ-VAE, SLATE and SlotDiffusion presets of every MSF paper setting and ablation.
(Every preset builds and trains in tests/test_presets.py.)"""

from __future__ import annotations

from slotlab.config import PRESET_DIR

PRESETS = sorted(p.stem for p in PRESET_DIR.glob("*.yaml") if p.stem.split("-")[0] in ("vqvae", "slate", "slotdiffusion"))


def test_every_paper_setting_has_its_presets():
    for data in ("clevrtex", "coco", "voc"):
        for method in ("slate", "slotdiffusion"):
            assert {f"{method}-{data}", f"{method}-msf-{data}"} <= set(PRESETS)
        assert {f"vqvae-{data}", f"vqvae-msf-{data}", f"vqvae-c4-{data}", f"vqvae-msf-c4-{data}"} <= set(PRESETS)
    ablations = {"no-inter", "no-intra", "no-fusion", "shared-specific", "2scales", "4scales"}
    assert {f"vqvae-msf-clevrtex-{a}" for a in ablations} <= set(PRESETS)
