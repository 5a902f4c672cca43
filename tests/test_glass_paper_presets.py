"""The GLASS paper presets evaluate on their validation data (tiny twins, shared COCO/VOC
samples), and every preset trains on the folder its generate command writes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from slotlab.config import PRESET_DIR, load_preset
from slotlab.data.registry import DatasetSpec, build_dataset, parse_spec
from slotlab.train.config import build_train_config
from slotlab.train.evaluate import evaluate_model
from slotlab.train.trainer import build_model
from slotlab.methods.glass import PAPER_TWIN_OVERRIDES
from slotlab.metrics.protocols import get_protocol
from tests.shared_dir import FIXTURES

# The shared samples in their native layouts; the preset's own options (geometry, crowds) are kept.
SAMPLES = {
    "coco": (FIXTURES / "coco_instances_sample", {"annotations": "instances.json", "images": "images"}, "split"),
    "voc": (FIXTURES / "voc_sample", {"split": "all"}, None),
}


def on_shared_sample(val: str) -> str:
    """The preset's validation spec with its root (and split) replaced by the shared sample."""
    spec = parse_spec(val)
    root, options, drop = SAMPLES[spec.name]
    kept = {k: v for k, v in spec.options.items() if k != drop and k not in options}
    return str(DatasetSpec(spec.name, str(root), {**options, **kept}))


@pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"shared COCO/VOC samples {FIXTURES} are absent")
@pytest.mark.parametrize("preset, protocol", [("glass-coco", "glass-authors"), ("glass-voc", "glass")])
def test_paper_preset_evaluates_on_its_validation_data(preset, protocol):
    """The preset's model (tiny twins; training is tests/test_presets.py's) scored on its own
    validation spec over the shared samples, under the paper's protocol."""
    config = build_train_config(load_preset(preset), list(PAPER_TWIN_OVERRIDES))
    assert config.eval_protocol == protocol
    options = parse_spec(config.data.val).options
    assert (options["resize"], options["crop"]) == ("448", "448")  # the encoder's view
    model = build_model(config)

    dataset = build_dataset(on_shared_sample(config.data.val))
    assert tuple(dataset[0].image.shape[-2:]) == (448, 448)  # images of any size batch together
    metrics = evaluate_model(model, dataset, protocol=config.eval_protocol, batch_size=len(dataset), progress=False)
    assert metrics["protocol"] == protocol and metrics["settings"]["eval_size"] == 256
    assert metrics["images"] == len(dataset)
    for name in get_protocol(protocol).image_metrics:
        low = -1.0 if "ari" in name.split("_") else 0.0  # ARI is below 0 for worse-than-chance partitions (untrained model)
        assert low <= metrics["metrics"][name] <= 1.0, name


GENERATE_COMMAND = re.compile(r"slotlab generate --preset (\S+)(?: .*)? --out (\S+)")


def test_every_preset_trains_on_what_its_generate_command_writes():
    checked = 0
    for path in sorted(PRESET_DIR.glob("*.yaml")):
        train_spec = (load_preset(path.stem).get("data") or {}).get("train", "")
        if not train_spec.startswith("generated:"):
            continue
        commands = GENERATE_COMMAND.findall(path.read_text())
        assert len(commands) == 1, f"{path.name}: name the one 'slotlab generate --preset P ... --out DIR' it trains on"
        generate_preset, out = commands[0]
        assert (PRESET_DIR / f"generate-{generate_preset}.yaml").is_file(), f"{path.name}: no generate preset {generate_preset}"
        assert parse_spec(train_spec).root == str(Path(out)), f"{path.name}: data.train {train_spec} but --out {out}"
        checked += 1
    assert checked >= 8
