"""The `slotlab` command: help, bad input, and a short demo."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from slotlab.cli import build_parser, main


def test_every_command_has_help(capsys):
    parser = build_parser()
    for command in ("demo", "train", "eval", "generate", "presets"):
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args([command, "--help"])
        assert exit_.value.code == 0
        out = capsys.readouterr().out
        assert "usage: slotlab" in out
    with pytest.raises(SystemExit):
        parser.parse_args(["data", "inspect", "--help"])
    assert "SPEC" in capsys.readouterr().out.upper()


def test_unknown_preset_is_a_clear_error(capsys, tmp_path):
    assert main(["train", "--preset", "nope", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "unknown preset 'nope'" in err and "dinosaur-tiny" in err
    assert not (tmp_path / "x").exists()


def test_unknown_set_key_is_a_clear_error(capsys, tmp_path):
    assert main(["train", "--preset", "dinosaur-tiny", "--out", str(tmp_path / "x"), "--set", "model.bogus=1"]) == 2
    assert "unknown key(s) ['bogus']" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_missing_checkpoint_is_a_clear_error(capsys, tmp_path):
    assert main(["eval", "--checkpoint", str(tmp_path / "none")]) == 2
    assert "not a slotlab checkpoint" in capsys.readouterr().err


def test_incompatible_checkpoint_is_a_clear_error(capsys, tmp_path):
    from slotlab.train.config import build_train_config
    from slotlab.train.trainer import train
    from tests.conftest import tiny_train_config

    train(build_train_config(tiny_train_config(steps=1)), tmp_path / "run", progress=False)
    config = tmp_path / "run" / "model" / "config.json"
    data = json.loads(config.read_text())
    data["config"]["slot_attention"]["slot_dim"] = 8
    config.write_text(json.dumps(data))
    assert main(["eval", "--checkpoint", str(tmp_path / "run" / "model")]) == 2
    assert "does not fit" in capsys.readouterr().err


def test_missing_dataset_root_is_a_clear_error(capsys, tmp_path, glass_preset_overrides):
    given = [word for override in glass_preset_overrides for word in ("--set", override)]
    code = main(["train", "--preset", "glass-tiny", "--out", str(tmp_path / "g"), *given,
                 "--set", f"data.train=generated:{tmp_path / 'missing'}"])
    assert code == 2
    err = capsys.readouterr().err
    assert f"data.train='generated:{tmp_path / 'missing'}'" in err and "--set data.train=SPEC" in err


@pytest.mark.slow
def test_demo_writes_metrics_pictures_and_report(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run([sys.executable, "-m", "slotlab.cli", "demo", "--out", str(out), "--steps", "8"],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"dinosaur", "glass", "blocks"} <= set(metrics)
    for name in ("dinosaur", "glass", "blocks"):
        assert 0.0 <= metrics[name]["mbo_i"] <= 1.0 and metrics[name]["protocol"] == "native"
    assert metrics["dinosaur"]["train_steps"] == 8
    # the default presets are label-free: no segmenter is trained
    assert "segmenter" not in metrics and not (out / "runs" / "segmenter").exists()
    assert metrics["dinosaur"]["preset"] == "dinosaur-tiny" and metrics["glass"]["preset"] == "glass-tiny"
    for name in ("dinosaur", "glass"):  # --tasks all by default
        assert 0.0 <= metrics[name]["probe_class_accuracy"] <= 1.0 and metrics[name]["probe_centre_mse"] >= 0.0
        assert metrics[name]["probe_centre_mse_mean_baseline"] > 0.0
        assert 0.0 < metrics[name]["probe_mask_mass_on_object"] <= 1.0
        assert 0.0 <= metrics[name]["probe_object_features_class_accuracy"] <= 1.0
        assert 0.0 <= metrics[name]["probe_image_features_class_accuracy"] <= 1.0
    # every row says what its features and training saw, read off the run's saved config
    assert metrics["dinosaur"]["supervision"].startswith("features: none (a CNN trained on images without labels")
    assert metrics["glass"]["supervision"].startswith("features: none (fixed pixel and colour features)")
    assert metrics["dinosaur"]["supervision"].endswith("training: none (reconstructs its encoder's features)")
    assert "the scenes generator's ground-truth class masks" in metrics["glass"]["supervision"]
    assert "decoder: pretrained on description tokens" in metrics["glass"]["supervision"]
    assert metrics["blocks"]["supervision"] == "none (no learning)"
    assert metrics["glass"]["decoder_train_steps"] == 8 and metrics["glass"]["decoder_preset"] == "glass-tiny-decoder"
    assert (out / "overlays.png").stat().st_size > 1000
    html = (out / "report.html").read_text()
    from slotlab.viz.report import UNKNOWN_SUPERVISION

    assert UNKNOWN_SUPERVISION not in html
    assert "data:image/png;base64" in html and "glass" in html
    # 8 steps teach the decoder nothing: the report says why the removal rates are n/a
    assert metrics["glass"]["removal_objects"] == 0 and "glass-tiny-compose trains a decoder" in html


def test_demo_segmenter_must_be_a_segmenter_checkpoint(capsys, tmp_path, segmenter_dir):
    from slotlab.config import load_preset
    from slotlab.train.config import build_train_config
    from slotlab.methods import get_method

    reader = ["--methods", "dinosaur-segmenter"]
    assert main(["demo", *reader, "--segmenter", str(tmp_path / "none"), "--out", str(tmp_path / "d")]) == 2
    assert "none" in capsys.readouterr().err
    config = build_train_config(load_preset("dinosaur-tiny-patch"), [f"model.encoder.semantic_model={segmenter_dir}"])
    get_method("dinosaur")(config.model).save_pretrained(tmp_path / "dino")
    assert main(["demo", *reader, "--segmenter", str(tmp_path / "dino"), "--out", str(tmp_path / "d")]) == 2
    assert "not a segmenter" in capsys.readouterr().err
    # the default methods are label-free: a segmenter given to them would be read by none
    assert main(["demo", "--segmenter", str(segmenter_dir), "--out", str(tmp_path / "d")]) == 2
    assert "none of the methods ['dinosaur', 'glass'] reads a segmenter" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_demo_rejects_unknown_tasks(capsys, tmp_path):
    assert main(["demo", "--tasks", "probe,colouring", "--out", str(tmp_path / "d")]) == 2
    assert "colouring" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:  # refused while parsing the options
        main(["demo", "--jobs", "0", "--out", str(tmp_path / "d")])
    assert stop.value.code == 2 and "argument --jobs: must be an integer >= 1" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


@pytest.mark.slow
def test_demo_methods_in_worker_processes_match_in_process(tmp_path, segmenter_dir):
    from slotlab.train.demo import run_demo
    from slotlab.train.demo_methods import DemoMethod

    methods = (DemoMethod("dinosaur", "dinosaur-tiny-patch", segmenter=True),
               DemoMethod("again", "dinosaur-tiny-patch", segmenter=True))
    parallel = run_demo(tmp_path / "p", steps=4, methods=methods, tasks=(), jobs=2, progress=False)
    assert parallel["segmenter"]["supervision"] == "training: supervised on scenes class maps"
    assert parallel["again"]["supervision"].startswith("features: colour + supervised segmenter on scenes class maps")
    # the segmenter the parallel run trained, given instead of trained again: the same run
    given = tmp_path / "p" / "runs" / "segmenter" / "model"
    serial = run_demo(tmp_path / "s", steps=4, methods=methods[:1], tasks=(), jobs=1, progress=False, segmenter=given)
    assert serial["segmenter"]["train_steps"] == 0 and parallel["segmenter"]["train_steps"] == 4
    for key in ("mbo_i", "miou_i", "fg_ari"):
        assert parallel["dinosaur"][key] == pytest.approx(serial["dinosaur"][key], abs=1e-6)
        assert parallel["again"][key] == pytest.approx(serial["dinosaur"][key], abs=1e-6)


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux-only")
def test_killed_demo_leaves_no_worker_behind(tmp_path):
    import signal
    import time

    demo = subprocess.Popen([sys.executable, "-m", "slotlab.cli", "demo", "--out", str(tmp_path / "d"), "--steps", "100000",
                             "--tasks", "none", "--jobs", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    workers: list[int] = []
    runs = tmp_path / "d" / "runs"
    # both workers are training once both run directories exist (their initialiser has run)
    while time.time() < deadline and not (len(workers) == 2 and (runs / "dinosaur").is_dir() and (runs / "glass").is_dir()):
        time.sleep(1)
        workers = [p for p in _children(demo.pid) if "spawn_main" in Path(f"/proc/{p}/cmdline").read_text()]
    assert len(workers) == 2, "the demo did not start its two workers"
    demo.send_signal(signal.SIGKILL)
    demo.wait()
    deadline = time.time() + 30
    while time.time() < deadline and any(Path(f"/proc/{p}").exists() for p in workers):
        time.sleep(0.5)
        for p in workers:  # reap nothing: they are not our children; a zombie counts as gone
            state = Path(f"/proc/{p}/stat")
            if state.exists() and state.read_text().rsplit(")", 1)[1].split()[0] == "Z":
                workers = [w for w in workers if w != p]
    assert not any(Path(f"/proc/{p}").exists() for p in workers)
    assert not (tmp_path / "d" / "metrics.json").exists()


def test_demo_preset_replaces_a_method_preset_of_the_same_method():
    from slotlab.train.demo_methods import DEMO_METHODS, with_presets

    methods = with_presets(DEMO_METHODS, ["glass=glass-tiny-compose"])
    assert [m.name for m in methods] == [m.name for m in DEMO_METHODS]
    glass = next(m for m in methods if m.name == "glass")
    assert glass.preset == "glass-tiny-compose" and glass.generate_preset == "generate-scenes-tiny"
    assert next(m for m in methods if m.name == "dinosaur").preset == "dinosaur-tiny"


@pytest.mark.parametrize(
    "assignment, message",
    [("glass", "NAME=PRESET"), ("spot=glass-tiny", "NAME=PRESET"), ("glass=", "NAME=PRESET"),
     ("glass=dinosaur-tiny", "trains method 'dinosaur'"), ("glass=nope", "unknown preset 'nope'")],
)
def test_demo_bad_preset_assignment_is_a_clear_error(capsys, tmp_path, assignment, message):
    assert main(["demo", "--preset", assignment, "--out", str(tmp_path / "d")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


@pytest.mark.slow
def test_demo_with_the_compose_preset_runs_the_removal_test(tmp_path):
    from slotlab.train.demo import run_demo
    from slotlab.train.demo_methods import DEMO_METHODS, with_presets

    glass = [m for m in with_presets(DEMO_METHODS, ["glass=glass-tiny-compose"]) if m.name == "glass"]
    metrics = run_demo(tmp_path / "d", steps=6, methods=tuple(glass), tasks=("generation",), jobs=1, progress=False)
    row = metrics["glass"]
    assert row["preset"] == "glass-tiny-compose" and row["train_steps"] == 6
    assert 0 <= row["removal_objects"] <= 32 and 0.0 <= row["recon_object_visible"] <= 1.0
    assert (tmp_path / "d" / "tasks" / "glass" / "removal.png").is_file()


def test_demo_methods_are_chosen_by_name(capsys, tmp_path):
    from slotlab.train.demo_methods import DEMO_METHODS, select_methods

    assert select_methods(None) == DEMO_METHODS
    assert [m.preset for m in select_methods(["spot", "dinosaur", "spot"])] == ["spot-tiny", "dinosaur-tiny"]
    assert main(["demo", "--methods", "dinosaur,msff", "--out", str(tmp_path / "d")]) == 2
    assert "msff" in capsys.readouterr().err and not (tmp_path / "d").exists()


def test_every_slot_method_is_in_the_demo_timed_and_pretrains_what_its_preset_starts_from():
    from slotlab.config import load_preset
    from slotlab.methods import method_names
    from slotlab.train.demo_methods import ALL_METHODS, MINUTES

    assert {m.name for m in ALL_METHODS} == set(MINUTES)  # --help lists a measured time for each
    trained = {load_preset(m.preset)["method"] for m in ALL_METHODS}
    without_slots = {"segmenter", "self_distillation", "region_contrast", "silhouette_contrast", "vqvae"}  # encoders and the VQ-VAE
    assert trained == set(method_names()) - without_slots  # every slot method
    for method in (m for m in ALL_METHODS if m.pretrain):
        inputs = load_preset(method.preset).get("inputs") or {}
        assert method.pretrain.key in inputs, f"{method.preset} does not start from {method.pretrain.key}"
        assert f"--preset {method.pretrain.preset} " in inputs[method.pretrain.key]["make"] + " "


@pytest.mark.slow
@pytest.mark.parametrize("name", ["spot", "slate-msf", "slotdiffusion-msf", "dinosaur-segmenter"])
def test_demo_runs_each_method(tmp_path, name):
    from slotlab.train.demo import run_demo
    from slotlab.train.demo_methods import select_methods

    (method,) = select_methods([name])
    metrics = run_demo(tmp_path / "d", steps=2, methods=(method,), tasks=("probe",), jobs=1, progress=False)
    assert set(metrics) == {name, "blocks"} | ({"segmenter"} if method.segmenter else set())
    assert metrics[name]["preset"] == method.preset
    assert 0.0 <= metrics[name]["mbo_i"] <= 1.0 and name in (tmp_path / "d" / "report.html").read_text()
    features = "features: colour + supervised segmenter on scenes class maps" if method.segmenter else "features: none"
    assert metrics[name]["supervision"].startswith(features) and "training: none" in metrics[name]["supervision"]
    # the probes run where decompose gives encoder tokens to compare the slots with, else the row says why not
    assert ("probe_class_accuracy" in metrics[name]) != ("probe_skipped" in metrics[name])
    if method.pretrain:  # e.g. the MSF VQ-VAE, trained first and named in the row
        assert metrics[name]["vqvae_train_steps"] == 2 and (tmp_path / "d" / "runs" / f"{name}-vqvae" / "model").is_dir()
