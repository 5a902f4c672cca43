"""Stored benchmark results name no folder of the machine that produced them, and every demo row says what supervision it saw."""

import json
import re
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
# An absolute path in a string value: a temporary folder, a home, a scratch or work tree.
MACHINE_PATH = re.compile(r"(^|[\s=:'\"])/(tmp|home|root|work|Users|var/folders)/")


@pytest.fixture
def report(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import report

    return report


def strings(value):
    if isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)
    elif isinstance(value, str):
        yield value


def test_without_machine_paths_rewrites_paths_under_the_named_folders_only(report, tmp_path):
    out, cache = tmp_path / "demo", tmp_path / "cache"
    result = {"a": {"model": f"{out}/runs/segmenter/model", "cache": f"{cache}/segmenter/abc"},
              "b": [f"{out}x/other", "scenes?split=test", 0.5, None]}
    cleaned = report.without_machine_paths(result, {out: "", cache: "CACHE"})
    assert cleaned == {"a": {"model": "runs/segmenter/model", "cache": "CACHE/segmenter/abc"},
                       "b": [f"{out}x/other", "scenes?split=test", 0.5, None]}


def test_stored_results_name_no_machine_folder():
    files = sorted((BENCHMARKS / "results").glob("*.json"))
    assert files, "benchmarks/results holds no JSON"
    found = [(f.name, s) for f in files for s in strings(json.loads(f.read_text())) if MACHINE_PATH.search(s)]
    assert not found, f"results naming a folder of the machine that produced them: {found[:5]}"


def test_every_method_row_of_a_stored_demo_result_names_its_supervision():
    demos = [(f, json.loads(f.read_text())) for f in sorted((BENCHMARKS / "results").glob("*.json"))]
    demos = [(f, d) for f, d in demos if isinstance(d, dict) and str(d.get("benchmark", "")).startswith("slotlab demo")]
    assert demos, "benchmarks/results holds no demo result"
    missing = [(f.name, method) for f, d in demos for method, row in d["metrics"].items() if "supervision" not in row]
    assert not missing, f"demo rows that do not say what supervision they saw: {missing[:5]}"
