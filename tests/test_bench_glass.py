"""The grouping oracles of benchmarks/bench_glass.py."""

from pathlib import Path

import pytest
import torch

from slotlab.data.registry import build_dataset
from slotlab.data.sample import collate

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import bench_glass

    return bench_glass


def test_instance_groups_merge_instances_that_agree_on_every_key(bench):
    batch = collate([build_dataset("scenes?split=test&size=8")[i] for i in range(8)])
    by_colour = bench.instance_groups(batch, ("color",))
    by_both = bench.instance_groups(batch, ("color", "class"))
    merged_somewhere = False
    for item, meta in enumerate(batch.meta):
        objects = meta["objects"]
        for a in range(len(objects)):
            for b in range(a + 1, len(objects)):
                pixels_a = batch.instance_mask[item] == a + 1
                pixels_b = batch.instance_mask[item] == b + 1
                if not (pixels_a.any() and pixels_b.any()):
                    continue
                same_colour = objects[a]["color"] == objects[b]["color"]
                same_both = same_colour and objects[a]["class"] == objects[b]["class"]
                assert (by_colour[item][pixels_a][0] == by_colour[item][pixels_b][0]) == same_colour
                assert (by_both[item][pixels_a][0] == by_both[item][pixels_b][0]) == same_both
                merged_somewhere |= same_colour and not same_both
        # background stays background
        assert torch.equal(by_both[item] == 0, batch.instance_mask[item] == 0)
    # the sample holds a pair the two keys tell apart, so the check above compares both ways
    assert merged_somewhere
