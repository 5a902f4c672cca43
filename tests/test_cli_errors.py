"""A user's mistakes on the command line end in exit code 2 and a message naming the option
(or file) and what is wrong, never in a traceback, and before anything is written."""

import argparse
import subprocess

import pytest

from slotlab.cli import build_parser, main
from slotlab.config import NumberOption
from tests.conftest import assert_clean_error
from tests.conftest import run_slotlab as slotlab


def _commands(parser: argparse.ArgumentParser, path=()):
    """(command words, parser) of every command, nested ones (data inspect) included."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*path, name))


def _numeric_options():
    for path, parser in _commands(build_parser()):
        for action in parser._actions:
            if action.option_strings and (isinstance(action.type, NumberOption) or action.type in (int, float)):
                yield path, action


def _invalid_values(option: NumberOption) -> list[str]:
    bounds = option.range
    values = ["x", "nan", "inf" if bounds.high is None else "-inf"]
    if bounds.low is not None:
        values.append(str(bounds.low if bounds.low_open else bounds.low - (1 if option.kind is int else 0.5)))
    if bounds.high is not None:
        values.append(str(bounds.high if bounds.high_open else bounds.high + (1 if option.kind is int else 0.5)))
    if option.kind is int:
        values.append("1.5")
    return values


NUMERIC = list(_numeric_options())


def test_every_numeric_option_declares_its_range():
    assert len(NUMERIC) > 20
    bare = [f"{' '.join(path)} {action.option_strings[0]}" for path, action in NUMERIC
            if not isinstance(action.type, NumberOption)]
    assert not bare, f"give these options a range (slotlab.config.int_option / float_option): {bare}"


@pytest.mark.parametrize("path, action", NUMERIC, ids=[f"{' '.join(p) or 'slotlab'} {a.option_strings[0]}" for p, a in NUMERIC])
def test_every_command_refuses_out_of_range_numbers_naming_the_option(path, action, capsys):
    option = action.option_strings[-1]
    count = action.nargs if isinstance(action.nargs, int) else 1
    for value in _invalid_values(action.type):
        if count == 1:
            given = [f"{option}={value}"]  # '-inf' would otherwise read as an option
        elif value == "-inf":
            continue
        else:
            given = [option, *[value] * count]
        argv = [*given, "presets"] if not path else [*path, *given]
        with pytest.raises(SystemExit) as stop:
            main(argv)
        err = capsys.readouterr().err
        assert stop.value.code == 2, (argv, err)
        assert f"argument {'/'.join(action.option_strings)}: must be" in err and "Traceback" not in err, (argv, err)


def test_bad_numbers_exit_2_from_a_real_process_without_a_traceback():
    assert_clean_error(slotlab("--threads", "-2", "presets"), "argument --threads: must be an integer >= 1, got '-2'")
    assert_clean_error(slotlab("compose", "--checkpoint", "m", "--image", "a.png", "--out", "o", "--steps", "0"),
                       "argument --steps: must be an integer >= 1, got '0'")
    assert_clean_error(slotlab("demo", "--steps", "-5"), "argument --steps: must be an integer >= 1, got '-5'")


@pytest.mark.parametrize("command", [
    ["demo"],
    ["generate", "--preset", "scenes-tiny", "--num", "2"],
    ["compose", "--checkpoint", "absent", "--image", "a.png", "--remove", "0"],
    ["reconstruct", "--checkpoint", "absent", "--images", "a.png"],
    ["data", "inspect", "scenes?size=2"],
], ids=lambda c: " ".join(c[:2]))
def test_an_out_that_is_a_file_or_lies_under_one(command, tmp_path, capsys):
    (tmp_path / "file").write_text("mine")
    for out, message in [(tmp_path / "file", "is a file, not a directory"), (tmp_path / "file" / "sub", "lies under")]:
        assert main([*command, "--out", str(out)]) in (1, 2)
        err = capsys.readouterr().err
        assert message in err and "--out" in err, err
    assert (tmp_path / "file").read_text() == "mine"


def test_compose_interactive_at_the_end_of_input(tmp_path, glass_twin_dir):
    import numpy as np
    from PIL import Image

    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "a.png")
    result = slotlab("compose", "--checkpoint", glass_twin_dir, "--image", tmp_path / "a.png", "--interactive",
                     "--out", tmp_path / "edits", stdin=subprocess.DEVNULL)
    assert_clean_error(result, "--interactive: the input ended before an answer", "--remove")
    assert result.stdout.startswith("slot 0:")  # the list came first
    assert not list((tmp_path / "edits").iterdir())


def test_eval_out_that_is_a_directory_is_refused_before_evaluating(tmp_path, glass_twin_dir):
    (tmp_path / "results").mkdir()
    result = slotlab("eval", "--checkpoint", glass_twin_dir, "--data", "scenes?split=val&size=2", "--out", tmp_path / "results")
    assert_clean_error(result, f"--out {tmp_path / 'results'} is a directory", "metrics.json")
    assert "protocol:" not in result.stdout  # nothing was evaluated
    assert not list((tmp_path / "results").iterdir()) and not list(tmp_path.glob(".*.tmp"))


def test_generate_thresholds_on_a_backend_without_them(tmp_path):
    result = slotlab("generate", "--preset", "scenes-tiny", "--out", tmp_path / "gen", "--thresholds", "paper")
    assert_clean_error(result, "--thresholds", "'scenes' backend", "drop --thresholds")
    assert "section 'sd'" not in result.stderr and not (tmp_path / "gen").exists()


def test_a_preset_input_left_unset_is_named_with_its_command(tmp_path):
    result = slotlab("train", "--preset", "glass-tiny", "--out", tmp_path / "run")
    assert_clean_error(result, "model.decoder_init is not set",
                       "--set model.decoder_init=runs/decoder/model", "slotlab train --preset glass-tiny-decoder")
    assert not (tmp_path / "run").exists()


def test_a_results_file_cannot_replace_a_directory(tmp_path):
    from slotlab.io.results import write_results

    (tmp_path / "metrics.json").mkdir()
    with pytest.raises(IsADirectoryError):
        write_results(tmp_path / "metrics.json", {"a": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]  # no temporary file left behind
