"""The invertible project-up / project-down of MSF (MSF Eq. 3 and Eq. 5), after OGDR."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def solve_linear(weight: Tensor, bias: Tensor | None, outputs: Tensor) -> Tensor:
    """Minimum-norm x with ``x @ weight.T + bias = outputs`` (least squares when there is
    none): ``(outputs - bias) @ pinv(weight).T``. Differentiable in ``weight``."""
    if bias is not None:
        outputs = outputs - bias
    return outputs @ torch.linalg.pinv(weight).transpose(0, 1)


class PinvProjection(nn.Module):
    """A trainable project-down W from ``wide`` to ``narrow`` channels and its pseudo-inverse.

    ``forward`` is the project-down of MSF Eq. 5 (concat(X_si, X_sv) . W); ``inverse`` is the
    project-up of MSF Eq. 3 (Z . pinv(W)): ``forward(inverse(y)) == y`` whenever W has full
    rank, so what is added between the two (quantisation, fusion) is all that changes.
    Channels last.
    """

    def __init__(self, wide: int, narrow: int, bias: bool = True):
        super().__init__()
        if narrow > wide:
            raise ValueError(f"project-down goes from more to fewer channels, got {wide} -> {narrow}")
        linear = nn.Linear(wide, narrow, bias=bias)
        if bias:
            nn.init.zeros_(linear.bias)
        self.weight, self.bias = linear.weight, linear.bias

    def forward(self, x: Tensor) -> Tensor:
        """Project down (MSF Eq. 5's W): (..., wide) -> (..., narrow)."""
        return F.linear(x, self.weight, self.bias)

    def inverse(self, y: Tensor) -> Tensor:
        """Project up (MSF Eq. 3's pinv(W)): (..., narrow) -> (..., wide)."""
        return solve_linear(self.weight, self.bias, y)
