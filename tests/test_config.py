import pytest

from slotlab.config import ConfigError, apply_overrides, from_dict, list_presets, load_preset
from slotlab.train.config import TrainConfig, build_train_config
from tests.conftest import tiny_train_config


def test_every_preset_validates():
    names = list_presets()
    assert "dinosaur-tiny" in names and "glass-tiny" in names
    for name in names:
        config = build_train_config(load_preset(name))
        assert config.total_steps > 0


def test_overrides_reach_nested_fields_and_list_items():
    config = build_train_config(tiny_train_config(), ["stages.0.steps=11", "model.slot_attention.num_slots=3", "seed=5"])
    assert config.stages[0].steps == 11 and config.seed == 5
    assert config.model.slot_attention.num_slots == 3


@pytest.mark.parametrize(
    "override, message",
    [
        ("nonsense=1", "unknown key"),
        ("model.slot_attention.slots=3", "unknown key"),
        ("stages.4.steps=1", "index"),
        ("seed=abc", "must be int"),
        ("method=nope", "unknown method"),
        ("mixed_precision=fp8", "mixed_precision"),
        ("noequals", "key.path=value"),
    ],
)
def test_bad_overrides_name_the_problem(override, message):
    with pytest.raises(ConfigError, match=message):
        build_train_config(tiny_train_config(), [override])


def test_unknown_preset_lists_available():
    with pytest.raises(ConfigError, match="dinosaur-tiny"):
        load_preset("no-such-preset")


def test_stage_lr_for_unknown_group_is_rejected_at_train_time(tmp_path):
    from slotlab.train.trainer import train

    config = build_train_config(tiny_train_config(), ["stages.0.lr={grouping: 0.001, nonsense: 0.1}"])
    with pytest.raises(ConfigError, match="nonsense"):
        train(config, tmp_path / "run", progress=False)


def test_exponent_without_dot_is_a_float_and_text_is_rejected():
    config = build_train_config(tiny_train_config(), ["stages.0.lr={grouping: 1e-8, decoder: 2e-3}"])
    assert config.stages[0].lr == {"grouping": 1e-8, "decoder": 2e-3}
    with pytest.raises(ConfigError, match="must be a number"):
        build_train_config(tiny_train_config(), ["stages.0.lr={grouping: fast}"])


def test_from_dict_types():
    config = from_dict(TrainConfig, {"seed": 3, "optim": {"grad_clip": None}})
    assert config.optim.grad_clip is None
    assert apply_overrides({"a": {"b": 1}}, ["a.c=[1, 2]"]) == {"a": {"b": 1, "c": [1, 2]}}


def _without(preset: dict, *paths: str) -> dict:
    """``preset`` with the dotted ``paths`` removed (list items by index)."""
    import copy

    pruned = copy.deepcopy(preset)
    for path in paths:
        *parents, last = path.split(".")
        node = pruned
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        del node[int(last) if isinstance(node, list) else last]
    return pruned


def test_glass_tiny_compose_changes_only_the_decoder_and_its_training():
    """Its decoder reads masks, so it is not the pretrained one: trained from scratch in a longer
    phase 2, with phase 1 free of L_recon and at 1e-3, the rate its edits were measured with;
    everything else is glass-tiny's."""
    base, compose = load_preset("glass-tiny"), load_preset("glass-tiny-compose")
    decoder = compose["model"]["diffusion_decoder"]
    assert decoder["mask_bias_grid"] > 0 and decoder["mask_bias_hard"] is True
    assert compose["stages"][1]["steps"] > base["stages"][1]["steps"]
    assert compose["stages"][0]["loss_weights"] == {"recon": 0.0} and "decoder_init" not in compose["model"]
    assert compose["stages"][0]["lr"] == {"grouping": 1.0e-3, "instance_decoder": 1.0e-3}
    ignored = ("model.diffusion_decoder.mask_bias_grid", "model.diffusion_decoder.mask_bias_hard", "stages.1.steps",
               "stages.0.loss_weights", "stages.0.lr")
    # glass-tiny's one input is its pretrained decoder, which compose does not read
    assert set(base["inputs"]) == {"model.decoder_init"} and "inputs" not in compose
    assert _without(compose, *ignored) == _without(base, "stages.1.steps", "stages.0.lr", "model.decoder_init", "inputs")


def test_glass_tiny_long_changes_only_phase_1_steps():
    """Presets do not inherit: glass-tiny-long is a copy of glass-tiny whose phase 1 runs
    DINOSAUR's 2,200 steps; its comment and docs compare the two on that difference alone."""
    base, long = load_preset("glass-tiny"), load_preset("glass-tiny-long")
    assert long["stages"][0]["steps"] == 2200 > base["stages"][0]["steps"]
    assert _without(long, "stages.0.steps") == _without(base, "stages.0.steps")


def test_auto_precision_is_bf16_only_where_native(monkeypatch):
    from slotlab.train import config as engine_config

    assert isinstance(engine_config.bf16_is_native(), bool)  # the probe runs on this machine
    assert engine_config.resolve_precision("fp16") == "fp16"  # explicit choices pass through
    monkeypatch.setattr(engine_config, "bf16_is_native", lambda: True)
    assert engine_config.resolve_precision("auto") == "bf16"
    monkeypatch.setattr(engine_config, "bf16_is_native", lambda: False)
    assert engine_config.resolve_precision("auto") == "fp32"


def test_one_coercion_reads_text_by_the_field_type():
    """YAML, --set and dataset specs share :func:`coerce`: text becomes the annotated type."""
    from typing import Literal

    from slotlab.config import coerce
    from slotlab.data.imageio import DatasetError
    from slotlab.data.registry import build_dataset

    assert coerce("3", int, "x") == 3 and coerce("1e-8", float, "x") == 1e-8 and coerce("no", bool, "x") is False
    assert coerce("none", int | None, "x") is None
    assert coerce("none", str | None, "x") == "none"  # text for a string stays text (slot_attention.truncation: none)
    with pytest.raises(ConfigError, match="x must be true or false, got 'maybe'"):
        coerce("maybe", bool, "x")
    with pytest.raises(ConfigError, match="x must be one of a, b, got 'c'"):
        coerce("c", Literal["a", "b"], "x")
    with pytest.raises(DatasetError, match="scenes\\?size must be int, got 'many'"):
        build_dataset("scenes?size=many")


def test_the_model_section_is_parsed_once_into_the_method_config_and_round_trips():
    import yaml

    from slotlab.config import to_dict
    from slotlab.methods.dinosaur import DinosaurConfig

    config = build_train_config(tiny_train_config(), ["model.slot_attention.num_slots=3"])
    assert isinstance(config.model, DinosaurConfig) and config.model.slot_attention.num_slots == 3
    saved = yaml.safe_load(yaml.safe_dump(to_dict(config)))  # what a run's config.yaml holds
    assert from_dict(TrainConfig, saved) == config
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['slots'\] in model.slot_attention"):
        build_train_config(tiny_train_config(), ["model.slot_attention.slots=3"])


def test_presets_name_no_run_outputs_but_list_them_as_inputs():
    import re

    from slotlab.config import to_dict

    def strings(node):
        if isinstance(node, dict):
            return [s for value in node.values() for s in strings(value)]
        return [node] if isinstance(node, str) else []

    for name in list_presets():
        config = build_train_config(load_preset(name))
        assert not [s for s in strings(to_dict(config.model)) if s.startswith("runs/")], name
        for key, made in config.inputs.items():
            assert config.setting(key) is None, (name, key)
            load_preset(re.search(r"--preset (\S+)", made.make).group(1))  # the command names a preset
    assert set(build_train_config(load_preset("glass-tiny")).inputs) == {"model.decoder_init"}
    assert not build_train_config(load_preset("dinosaur-tiny")).inputs  # label-free: reads no segmenter


def test_inputs_name_settings_of_the_config():
    with pytest.raises(ConfigError, match="inputs: 'model.nope' names no setting"):
        build_train_config(tiny_train_config(inputs={"model.nope": {"make": "slotlab train", "value": "x"}}))


def test_an_unset_input_stops_training_before_anything_is_written(tmp_path):
    from slotlab.train.trainer import train

    config = build_train_config(load_preset("glass-tiny"))
    with pytest.raises(ConfigError) as caught:
        train(config, tmp_path / "run", progress=False)
    assert "model.decoder_init is not set" in str(caught.value)
    assert "`slotlab train --preset glass-tiny-decoder --out runs/decoder --no-eval`" in str(caught.value)
    assert "--set model.decoder_init=runs/decoder/model" in str(caught.value)
    assert not (tmp_path / "run").exists()


def test_data_that_cannot_be_built_names_the_setting(tmp_path):
    from slotlab.data.imageio import DatasetError
    from slotlab.train.trainer import train

    config = build_train_config(tiny_train_config(), [f"data.train=generated:{tmp_path / 'absent'}"])
    with pytest.raises(DatasetError, match=r"data.train='generated:.*absent'.*\n.*--set data.train=SPEC"):
        train(config, tmp_path / "run", progress=False)


def test_a_config_family_is_parsed_into_the_member_its_field_names():
    from dataclasses import dataclass, field

    from slotlab.config import ConfigFamily

    @dataclass
    class Shape(ConfigFamily):
        kind: str = "circle"

        @classmethod
        def config_class_for(cls, data: dict) -> type:
            members = {"circle": Circle, "square": Square}
            if data.get("kind", "circle") not in members:
                raise ValueError(f"kind={data['kind']!r}: choose one of {', '.join(members)}")
            return members[data.get("kind", "circle")]

    @dataclass
    class Circle(Shape):
        radius: float = 1.0

    @dataclass
    class Square(Shape):
        kind: str = "square"
        side: float = 1.0

    @dataclass
    class Drawing:
        shape: Shape = field(default_factory=Circle)

    assert from_dict(Drawing, {"shape": {"kind": "square", "side": 2}}).shape == Square(side=2.0)
    assert from_dict(Drawing, {"shape": {"radius": 3}}).shape == Circle(radius=3.0)
    with pytest.raises(ConfigError, match=r"drawing.shape: kind='star': choose one of circle, square"):
        from_dict(Drawing, {"shape": {"kind": "star"}}, "drawing")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['side'\] in drawing.shape"):
        from_dict(Drawing, {"shape": {"side": 2}}, "drawing")
