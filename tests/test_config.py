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
    assert config.model_config().slot_attention.num_slots == 3


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
    phase 2, with phase 1 free of L_recon; everything else is glass-tiny's."""
    base, compose = load_preset("glass-tiny"), load_preset("glass-tiny-compose")
    decoder = compose["model"]["diffusion_decoder"]
    assert decoder["mask_bias_grid"] > 0 and decoder["mask_bias_hard"] is True
    assert compose["stages"][1]["steps"] > base["stages"][1]["steps"]
    assert compose["stages"][0]["loss_weights"] == {"recon": 0.0} and "decoder_init" not in compose["model"]
    ignored = ("model.diffusion_decoder.mask_bias_grid", "model.diffusion_decoder.mask_bias_hard", "stages.1.steps",
               "stages.0.loss_weights")
    assert _without(compose, *ignored) == _without(base, "stages.1.steps", "model.decoder_init")


def test_auto_precision_is_bf16_only_where_native(monkeypatch):
    from slotlab.train import config as engine_config

    assert isinstance(engine_config.bf16_is_native(), bool)  # the probe runs on this machine
    assert engine_config.resolve_precision("fp16") == "fp16"  # explicit choices pass through
    monkeypatch.setattr(engine_config, "bf16_is_native", lambda: True)
    assert engine_config.resolve_precision("auto") == "bf16"
    monkeypatch.setattr(engine_config, "bf16_is_native", lambda: False)
    assert engine_config.resolve_precision("auto") == "fp32"
