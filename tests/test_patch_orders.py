"""SPOT's nine patch orders: parity (exact), any grid size, errors, seeded sampling."""

from __future__ import annotations

import pytest
import torch

from slotlab.nn.decoders.orders import ORDER_NAMES, PatchOrders, patch_order
from tests.parity_cases import load_case


@pytest.mark.parametrize("side", [4, 14])
def test_orders_equal_spots(side):
    case = load_case("spot", "spot_orders")
    for name in ORDER_NAMES:
        assert torch.equal(patch_order(name, (side, side)), case.outputs[f"order_{side}x{side}.{name}"]), name


@pytest.mark.parametrize("grid", [(1, 1), (2, 2), (3, 3), (5, 5), (7, 7), (3, 5)])
def test_every_order_is_a_permutation(grid):
    names = ORDER_NAMES if grid[0] == grid[1] else ORDER_NAMES[:-1]
    for name in names:
        order = patch_order(name, grid)
        assert torch.equal(order.sort().values, torch.arange(grid[0] * grid[1])), name


def test_spiral_starts_at_the_centre_and_ends_top_right():
    order = patch_order("spiral", (6, 6))
    assert order[0].item() == 2 * 6 + 2 and order[1].item() == 3 * 6 + 2 and order[-1].item() == 5


def test_bad_names_and_grids_are_named():
    with pytest.raises(ValueError, match="unknown patch order.*'diagonal'.*choose from left_top"):
        patch_order("diagonal", (4, 4))
    with pytest.raises(ValueError, match="square token grid, got 4 x 6"):
        patch_order("spiral", (4, 6))
    with pytest.raises(ValueError, match="twice"):
        PatchOrders(["left_top", "left_top"], (2, 2))


def test_sampling_is_seeded_per_batch_or_per_sample():
    orders = PatchOrders(ORDER_NAMES, (4, 4))
    assert orders.sample(5).shape == (1,)
    draws = [orders.sample(64, per_sample=True, generator=torch.Generator().manual_seed(3)) for _ in range(2)]
    assert torch.equal(*draws) and draws[0].shape == (64,) and len(draws[0].unique()) == 9
    assert "orders" not in orders.state_dict()
