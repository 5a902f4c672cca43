"""Metrics files are strict JSON: undefined scores become null, and a failed write leaves nothing."""

from __future__ import annotations

import json
import math

import pytest

from slotlab.io.results import defined_scores, results_json, write_results


def test_undefined_scores_become_null_at_any_depth():
    results = {"glass": {"removal_success": math.nan, "psnr": 13.5, "curve": [0.1, math.nan], "pair": (math.nan, 2)}}
    assert defined_scores(results) == {"glass": {"removal_success": None, "psnr": 13.5, "curve": [0.1, None],
                                                 "pair": [None, 2]}}
    assert json.loads(results_json(results))["glass"]["removal_success"] is None
    assert "NaN" not in results_json(results)


def test_write_results_is_strict_and_leaves_nothing_on_failure(tmp_path):
    path = write_results(tmp_path / "deep" / "metrics.json", {"mbo_i": 0.4, "fid": math.nan, "psnr": math.inf})
    assert json.loads(path.read_text()) == {"mbo_i": 0.4, "fid": None, "psnr": "inf"}  # identical images: inf dB
    with pytest.raises(TypeError):  # not JSON at all: nothing is written
        write_results(tmp_path / "bad.json", {"model": object()})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deep"]
