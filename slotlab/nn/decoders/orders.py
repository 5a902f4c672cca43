"""SPOT's patch orders (SPOT Sec. 3.2, Fig. 2): the sequences an autoregressive decoder reads
a token grid in, their sampling during training and the ensemble over all of them (ENS).

Names say where the sequence starts and which way it runs first: ``left_top`` is the
raster order (row by row, left to right, from the top), ``top_left`` column by column from
the left, top to bottom; the other six flip these; ``spiral`` starts at the centre cell
(h/2 - 1, w/2 - 1), goes down first and winds counter-clockwise outwards to the top-right
corner. The tuple's order is SPOT's, so index i uses [BOS] token i of an imported model.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

ORDER_NAMES = (
    "left_top",
    "top_left",
    "top_right",
    "right_top",
    "bottom_right",
    "right_bottom",
    "bottom_left",
    "left_bottom",
    "spiral",
)
RASTER = "left_top"

# name -> (column-major?, rows reversed?, columns reversed?)
_LINE_ORDERS = {
    "left_top": (False, False, False),
    "top_left": (True, False, False),
    "top_right": (True, False, True),
    "right_top": (False, False, True),
    "bottom_right": (True, True, True),
    "right_bottom": (False, True, True),
    "bottom_left": (True, True, False),
    "left_bottom": (False, True, False),
}


def check_order_names(names) -> tuple[str, ...]:
    names = tuple(names)
    unknown = [n for n in names if n not in ORDER_NAMES]
    if unknown or not names:
        raise ValueError(f"unknown patch order(s) {unknown or names}; choose from {', '.join(ORDER_NAMES)}")
    if len(set(names)) != len(names):
        raise ValueError(f"patch orders {names} name an order twice")
    return names


def spiral_order(side: int) -> Tensor:
    """Raster indices of a side x side grid from the centre outwards (SPOT's spiral).

    Walked inwards from the top-right corner (down, left, up, right, turning when the
    next cell is outside the grid or already taken) and then reversed.
    """
    taken = torch.zeros(side, side, dtype=torch.bool)
    steps = ((1, 0), (0, -1), (-1, 0), (0, 1))  # (row, column): down, left, up, right
    row, col, direction = 0, side - 1, 0
    walk = []
    for _ in range(side * side):
        walk.append(row * side + col)
        taken[row, col] = True
        for turn in range(4):
            dr, dc = steps[(direction + turn) % 4]
            r, c = row + dr, col + dc
            if 0 <= r < side and 0 <= c < side and not taken[r, c]:
                row, col, direction = r, c, (direction + turn) % 4
                break
    return torch.tensor(walk[::-1], dtype=torch.long)


def patch_order(name: str, grid: tuple[int, int]) -> Tensor:
    """(h*w,) raster token indices in the order ``name`` reads an h x w grid."""
    check_order_names([name])
    height, width = grid
    if name == "spiral":
        if height != width:
            raise ValueError(f"the spiral patch order needs a square token grid, got {height} x {width}")
        return spiral_order(height)
    column_major, flip_rows, flip_cols = _LINE_ORDERS[name]
    cells = torch.arange(height * width).view(height, width)
    if flip_rows:
        cells = cells.flip(0)
    if flip_cols:
        cells = cells.flip(1)
    return (cells.T if column_major else cells).reshape(-1)


class PatchOrders(nn.Module):
    """The orders a model decodes in, one [BOS] index each, as a (num_orders, N) buffer.

    The buffer is derived from the grid, so it is not saved in checkpoints.
    """

    def __init__(self, names, grid: tuple[int, int]):
        super().__init__()
        self.names = check_order_names(names)
        self.register_buffer("orders", torch.stack([patch_order(n, grid) for n in self.names]), persistent=False)

    def __len__(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        if name not in self.names:
            raise ValueError(f"patch order {name!r} is not one of this model's orders {self.names}")
        return self.names.index(name)

    def sample(self, batch_size: int, per_sample: bool = False, generator: torch.Generator | None = None) -> Tensor:
        """Random order indices: one for the batch (SPOT; shape (1,)) or one per sample (B,).

        Drawn from ``generator`` or the global torch stream (which the trainer seeds per
        step), never from Python's unseeded ``random``.
        """
        count = batch_size if per_sample else 1
        return torch.randint(len(self), (count,), generator=generator).to(self.orders.device)
