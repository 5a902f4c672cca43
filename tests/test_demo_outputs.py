"""The demo never loses earlier results: it writes into a fresh folder, replaces its own
earlier outputs only once complete, and never touches what it did not write."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from slotlab.io.files import OutputPathError
from slotlab.io.staged import MANIFEST, OutputConflictError, begin_outputs, commit_outputs


def _earlier_demo(out):
    """``out`` as an earlier demo left it, plus a run of the user's own beside its runs."""
    (out / "runs" / "dinosaur").mkdir(parents=True)
    (out / "runs" / "dinosaur" / "config.yaml").write_text("earlier")
    (out / "tasks" / "glass").mkdir(parents=True)
    (out / "metrics.json").write_text('{"earlier": true}')
    (out / MANIFEST).write_text(json.dumps({"products": ["metrics.json", "runs/dinosaur", "tasks/glass"]}))
    (out / "runs" / "mine").mkdir()
    (out / "runs" / "mine" / "config.yaml").write_text("the user's own run")


def test_commit_replaces_only_earlier_products(tmp_path):
    out = tmp_path / "out"
    _earlier_demo(out)
    staging = begin_outputs(out, ["metrics.json", "runs/dinosaur", "runs/segmenter"])
    assert (out / "metrics.json").read_text() == '{"earlier": true}'  # nothing replaced before the commit
    (staging / "runs" / "dinosaur").mkdir(parents=True)
    (staging / "runs" / "dinosaur" / "config.yaml").write_text("new")
    (staging / "metrics.json").write_text("{}")
    assert commit_outputs(staging, out) == ["metrics.json", "runs/dinosaur"]
    assert (out / "metrics.json").read_text() == "{}" and (out / "runs" / "dinosaur" / "config.yaml").read_text() == "new"
    assert (out / "runs" / "mine" / "config.yaml").read_text() == "the user's own run"
    assert not (out / "tasks" / "glass").exists()  # an earlier product this run did not make is stale
    assert not staging.exists()
    assert json.loads((out / MANIFEST).read_text())["products"] == ["metrics.json", "runs/dinosaur"]


def test_a_product_in_place_of_a_foreign_file_is_refused_before_anything_runs(tmp_path):
    out = tmp_path / "out"
    _earlier_demo(out)
    with pytest.raises(OutputConflictError, match="runs/mine"):
        begin_outputs(out, ["metrics.json", "runs/mine"])
    assert not list(out.glob(".incomplete-*"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputPathError, match="is a file"):
        begin_outputs(tmp_path / "file", ["metrics.json"])
    with pytest.raises(OutputPathError, match="lies under"):
        begin_outputs(tmp_path / "file" / "sub", ["metrics.json"])


def test_a_killed_demo_leaves_the_earlier_outputs_and_the_users_runs(tmp_path):
    out = tmp_path / "out"
    _earlier_demo(out)
    demo = subprocess.Popen([sys.executable, "-m", "slotlab.cli", "demo", "--out", str(out), "--steps", "50"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not list(out.glob(".incomplete-*/runs")) and time.monotonic() < deadline:
            assert demo.poll() is None, "the demo ended before it wrote anything"
            time.sleep(0.2)
        assert list(out.glob(".incomplete-*/runs")), "the demo never started writing"
        time.sleep(1)
    finally:
        demo.send_signal(signal.SIGKILL)
        demo.wait()
    assert (out / "metrics.json").read_text() == '{"earlier": true}'
    assert (out / "runs" / "dinosaur" / "config.yaml").read_text() == "earlier"
    assert (out / "runs" / "mine" / "config.yaml").read_text() == "the user's own run"
    # the next run clears the killed one's staging folder (its process is gone)
    staging = begin_outputs(out, ["metrics.json"])
    assert [p.name for p in out.glob(".incomplete-*")] == [staging.name] == [f".incomplete-{os.getpid()}"]


@pytest.mark.slow
def test_a_complete_demo_replaces_its_earlier_outputs_and_names_final_paths(tmp_path, segmenter_dir):
    from slotlab.train.demo import run_demo
    from slotlab.train.demo_methods import DemoMethod

    out = tmp_path / "out"
    _earlier_demo(out)
    run_demo(out, steps=2, methods=(DemoMethod("dinosaur", "dinosaur-tiny-patch", segmenter=True),), tasks=(), jobs=1,
             progress=False, segmenter=segmenter_dir)
    assert json.loads((out / "metrics.json").read_text())["dinosaur"]["train_steps"] == 2
    assert (out / "runs" / "mine" / "config.yaml").read_text() == "the user's own run"
    assert not (out / "tasks" / "glass").exists() and not list(out.glob(".incomplete-*"))
    config = (out / "runs" / "dinosaur" / "config.yaml").read_text()
    assert str(out / "runs" / "segmenter" / "model") in config and ".incomplete-" not in config
