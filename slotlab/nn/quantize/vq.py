"""Vector quantisation (van den Oord et al., 2017) as MSF states it (MSF Eq. 1, Eq. 2).

One module, two codebooks:

- ``learned`` (the paper, VQ-VAE): a trainable codebook C (m, c); the codebook loss pulls the
  selected codes to the encodings, the commitment loss pulls the encodings to their codes.
- ``projected`` (the authors' public code): frozen N(0, 1) codes (m, in_dim) mapped to
  (m, c) by a trainable Linear; matching logits are the negative distances normalised by the
  mean and standard deviation of the chi distribution with c degrees of freedom, and in
  training a Gumbel sample at an annealed scale picks the code.

Both keep code-usage statistics (an exponential moving average of the selection frequency)
and can replace dead codes by encodings of the current batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

CODEBOOKS = ("learned", "projected")


def chi_mean_std(degrees: int) -> tuple[float, float]:
    """Mean and standard deviation of the chi distribution with ``degrees`` degrees of freedom:
    the distance between two independent N(0, I) vectors divided by sqrt(2) follows it, which
    is why the projected codebook normalises its distances with these (times sqrt(2) for the
    mean)."""
    mean = math.sqrt(2.0) * math.exp(math.lgamma((degrees + 1) / 2) - math.lgamma(degrees / 2))
    return mean, math.sqrt(degrees - mean**2)


def gumbel_noise_like(logits: Tensor) -> Tensor:
    """Standard Gumbel noise -log(E), E ~ Exp(1), the draw torch's gumbel_softmax makes."""
    return -torch.empty_like(logits).exponential_().log()


def straight_through(encoding: Tensor, quantized: Tensor) -> Tensor:
    """Value of ``quantized``, gradient of ``encoding`` (the straight-through estimator)."""
    return encoding + (quantized - encoding).detach()


def annealed_residual(encoding: Tensor, quantized: Tensor, alpha: float) -> Tensor:
    """alpha * encoding + (1 - alpha) * quantized: the annealed residual connection of MSF's
    VQ-VAE (alpha goes 1 -> 0 over the first half of pretraining)."""
    return quantized if alpha <= 0 else encoding * alpha + quantized * (1 - alpha)


@dataclass
class Match:
    probs: Tensor  # (..., m) softmax (or Gumbel-softmax) of the matching logits: MSF Eq. 1's P
    indices: Tensor  # (..., ) argmax: MSF Eq. 1's I


class VectorQuantizer(nn.Module):
    """Nearest-code quantiser of channels-last encodings (..., c) (MSF Eq. 1 and Eq. 2).

    num_codes:    m, the codebook size.
    code_dim:     c, the code (and encoding) dimension.
    codebook:     ``learned`` (paper) or ``projected`` (authors' code, see the module doc).
    in_dim:       ``projected``: dimension of the frozen random codes (1024 in the code).
    usage_decay:  decay of the moving average of code usage (``usage``).
    dead_threshold: every ``replace_every`` training steps, codes used less than this fraction
                  of a uniform share are moved onto encodings of the batch (0 = never; MSF's
                  appendix replaces codes instead of adding a utilisation loss).
    """

    def __init__(self, num_codes: int, code_dim: int, codebook: str = "learned", in_dim: int = 1024,
                 usage_decay: float = 0.99, dead_threshold: float = 0.0, replace_every: int = 100):
        super().__init__()
        if codebook not in CODEBOOKS:
            raise ValueError(f"codebook={codebook!r} is unknown; choose one of {CODEBOOKS}")
        if num_codes < 2 or code_dim < 1:
            raise ValueError(f"a codebook needs num_codes >= 2 and code_dim >= 1, got {num_codes} x {code_dim}")
        self.num_codes, self.code_dim, self.kind = num_codes, code_dim, codebook
        self.usage_decay, self.dead_threshold, self.replace_every = usage_decay, dead_threshold, replace_every
        self.steps_seen = 0
        if codebook == "learned":
            self.codebook = nn.Embedding(num_codes, code_dim)
            nn.init.uniform_(self.codebook.weight, -1.0 / num_codes, 1.0 / num_codes)
            self.project = None
            self.chi = None
        else:
            self.codebook = nn.Embedding(num_codes, in_dim)
            nn.init.normal_(self.codebook.weight)
            self.codebook.weight.requires_grad_(False)  # frozen: only the projection learns
            self.project = nn.Linear(in_dim, code_dim)
            self.chi = chi_mean_std(code_dim)
        # Schedule values and statistics, not weights: set by the training loop's per-step hook.
        self.register_buffer("gumbel_scale", torch.tensor(0.0), persistent=False)
        self.register_buffer("usage", torch.full((num_codes,), 1.0 / num_codes), persistent=False)

    def codes(self) -> Tensor:
        """The effective codebook C (m, c)."""
        weight = self.codebook.weight
        return weight if self.project is None else self.project(weight)

    def logits(self, encoding: Tensor, codes: Tensor | None = None) -> Tensor:
        """-||z - C||_2 for every code (MSF Eq. 1's softmax argument), chi-normalised for the
        projected codebook. No gradient: the losses, not the matching, train the codes."""
        codes = self.codes() if codes is None else codes
        with torch.no_grad():
            flat = encoding.reshape(-1, encoding.shape[-1])
            logits = -torch.cdist(flat, codes.to(flat.dtype), p=2).reshape(*encoding.shape[:-1], -1)
        if self.chi is not None:
            mean, std = self.chi
            logits = (logits - mean) / std
        return logits

    def match(self, encoding: Tensor, gumbel: Tensor | None = None, codes: Tensor | None = None) -> Match:
        """MSF Eq. 1: P = softmax(-||Z - C||), I = argmax P. In training with a positive
        ``gumbel_scale``, P is the Gumbel-softmax of scale * logits (temperature 1); ``gumbel``
        gives the standard Gumbel noise instead of drawing it (to replay a recorded draw)."""
        logits = self.logits(encoding, codes)
        scale = float(self.gumbel_scale)
        if self.training and scale > 0:
            noise = gumbel if gumbel is not None else gumbel_noise_like(logits)
            probs = (logits * scale + noise).softmax(-1)
        else:
            probs = logits.softmax(-1)
        return Match(probs, probs.argmax(-1))

    def select(self, indices: Tensor, codes: Tensor | None = None) -> Tensor:
        """MSF Eq. 2: X = select(C, I), channels last."""
        codes = self.codes() if codes is None else codes
        return F.embedding(indices, codes)

    def forward(self, encoding: Tensor, gumbel: Tensor | None = None) -> tuple[Match, Tensor]:
        """Match and select: returns the match and the selected codes (..., c) (no STE)."""
        codes = self.codes()
        found = self.match(encoding, gumbel, codes)
        if self.training:
            self.record_usage(found.indices, encoding)
        return found, self.select(found.indices, codes)

    # ---- usage statistics and dead codes ---------------------------------------------
    @torch.no_grad()
    def record_usage(self, indices: Tensor, encodings: Tensor) -> None:
        """Fold the codes selected in a training step into the usage average; every
        ``replace_every`` steps move dead codes onto ``encodings`` (..., c) of this step."""
        self.steps_seen += 1
        frequency = torch.bincount(indices.reshape(-1), minlength=self.num_codes).float()
        frequency = frequency / frequency.sum().clamp_min(1)
        self.usage.mul_(self.usage_decay).add_(frequency.to(self.usage), alpha=1 - self.usage_decay)
        if self.dead_threshold > 0 and self.steps_seen % self.replace_every == 0:
            self.replace_dead_codes(encodings, self.dead_threshold)

    def perplexity(self) -> float:
        """exp(entropy) of the usage average: the effective number of codes in use."""
        p = self.usage / self.usage.sum().clamp_min(1e-12)
        return float(torch.exp(-(p * p.clamp_min(1e-12).log()).sum()))

    def dead_codes(self, threshold: float) -> Tensor:
        """Indices of codes whose usage average is below ``threshold`` / num_codes."""
        return torch.nonzero(self.usage < threshold / self.num_codes).flatten()

    @torch.no_grad()
    def replace_dead_codes(self, encodings: Tensor, threshold: float = 0.03,
                           generator: torch.Generator | None = None) -> int:
        """Move each dead code onto a random encoding of ``encodings`` (..., c); returns how
        many moved. A projected code is moved by solving for frozen coordinates whose
        projection is that encoding (least squares, exact when in_dim >= c)."""
        dead = self.dead_codes(threshold)
        if dead.numel() == 0:
            return 0
        flat = encodings.reshape(-1, self.code_dim).float()
        pick = torch.randint(flat.shape[0], (dead.numel(),), generator=generator).to(flat.device)
        targets = flat[pick]
        if self.project is None:
            self.codebook.weight[dead] = targets.to(self.codebook.weight)
        else:
            from slotlab.nn.quantize.projection import solve_linear

            rows = solve_linear(self.project.weight.float(), self.project.bias.float(), targets)
            self.codebook.weight[dead] = rows.to(self.codebook.weight)
        self.usage[dead] = 1.0 / self.num_codes  # give them time to be picked
        return int(dead.numel())


def vq_losses(encoding: Tensor, quantized: Tensor, residual: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(codebook, commitment) losses of VQ-VAE: ||sg[z] - q||^2 moves the codes,
    ||z - sg[r]||^2 commits the encoder (r = the annealed residual, = q once alpha is 0)."""
    target = quantized if residual is None else residual
    return F.mse_loss(quantized, encoding.detach()), F.mse_loss(encoding, target.detach())
