"""The artefact cache: keyed by config, seed and code; the demo's segmenter is trained once."""

import slotlab.io.cache as cache
from slotlab.train.demo import train_segmenter
from slotlab.io.cache import artefact_dir, cache_root


def test_the_key_changes_with_config_seed_and_code(monkeypatch, tmp_path):
    monkeypatch.setenv("SLOTLAB_CACHE", str(tmp_path))
    first = artefact_dir("segmenter", {"steps": 3}, 0)
    assert first.parent == tmp_path / "segmenter" == cache_root() / "segmenter"
    assert first == artefact_dir("segmenter", {"steps": 3}, 0)
    assert len({first, artefact_dir("segmenter", {"steps": 4}, 0), artefact_dir("segmenter", {"steps": 3}, 1)}) == 3
    monkeypatch.setattr(cache, "code_digest", lambda: "changed code")
    assert artefact_dir("segmenter", {"steps": 3}, 0) != first


def test_the_demo_segmenter_is_trained_once_then_reused(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("SLOTLAB_CACHE", str(tmp_path / "cache"))
    trained = train_segmenter(tmp_path / "a", steps=2, seed=0, threads=1, progress=False)
    assert trained["train_steps"] == 2 and "training segmenter-scenes-tiny for 2 steps" in capsys.readouterr().out
    reused = train_segmenter(tmp_path / "b", steps=2, seed=0, threads=1, progress=False)
    assert reused["train_steps"] == 0 and "reusing" in capsys.readouterr().out
    model = "runs/segmenter/model/model.safetensors"
    assert (tmp_path / "b" / model).read_bytes() == (tmp_path / "a" / model).read_bytes()
    assert train_segmenter(tmp_path / "c", steps=3, seed=0, threads=1, progress=False)["train_steps"] == 3
