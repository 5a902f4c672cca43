"""Self-distillation without labels (DINO / iBOT style) for the CPU encoder of the scenes.

A student network and an exponential-moving-average teacher (DINO Eq. 2) see differently
augmented views of the same images (:mod:`slotlab.methods.ssl_views`). Their outputs go
through projection heads onto prototypes; the student's softmax at temperature
``student_temperature`` is trained to match the teacher's, centred and sharpened at
``teacher_temperature`` (DINO Eq. 1 and Sec. 3.1):

- image level (DINO): the mean token of each student view predicts the teacher's mean token
  of the whole image; local views (zoomed crops, about one object) must predict the
  distribution of the whole scene (in DINO, what makes the features say what an object is;
  at the CPU budget here it stayed at the uniform solution, docs/ssl-encoder.md);
- token level (iBOT's patch loss, with the correspondence of the views known exactly): each
  student token predicts the teacher token at the same image point; with ``mask_ratio`` the
  student sees parts of the image blanked and predicts their tokens from the context.

No label is read: the method sees ``batch.image`` only. After training the teacher network
is the encoder the CPU presets read (``encoder: {name: ssl, path: RUN/model}``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slotlab.config import bounded
from slotlab.data.sample import Batch
from slotlab.methods.base import Method, load_trained
from slotlab.methods.ssl_views import LabelFreeConfig, colour_jitter, image_points, method_input, random_views
from slotlab.nn.encoders.ssl import ConvNet


@dataclass
class SelfDistillationConfig(LabelFreeConfig):
    """:class:`LabelFreeConfig` (student and teacher share the ``network``'s shape; ``views``
    are the student's) and:

    Attributes:
        prototypes: outputs of the token-level head (iBOT's patch head).
        image_prototypes: outputs of the image-level head (DINO's head).
        head_hidden, head_bottleneck: the heads' MLP (DINO: 2048 and 256; small here).
        student_temperature, teacher_temperature: DINO's tau_s and tau_t.
        center_momentum: DINO's m for the running centre of the teacher outputs.
        teacher_momentum: DINO's lambda at the start; it follows a cosine to 1 over training.
        token_weight, image_weight: weights of the two losses (0 skips one).
    """

    prototypes: int = 256
    image_prototypes: int = 128
    head_hidden: int = 128
    head_bottleneck: int = 64
    student_temperature: float = bounded(0.1, low=0, low_open=True)
    teacher_temperature: float = bounded(0.04, low=0, low_open=True)
    center_momentum: float = bounded(0.9, low=0, high=1, high_open=True)
    teacher_momentum: float = bounded(0.99, low=0, high=1, high_open=True)
    token_weight: float = bounded(1.0, low=0)
    image_weight: float = bounded(1.0, low=0)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.token_weight + self.image_weight == 0:
            raise ValueError("token_weight and image_weight may not both be 0")


class ProjectionHead(nn.Module):
    """DINO's head: MLP -> L2-normalised bottleneck -> weight-normalised linear onto prototypes."""

    def __init__(self, dim: int, hidden: int, bottleneck: int, prototypes: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, bottleneck))
        self.prototypes = nn.utils.parametrizations.weight_norm(nn.Linear(bottleneck, prototypes, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        return self.prototypes(F.normalize(self.mlp(x), dim=-1))


class Branch(nn.Module):
    """The network and both heads: what the student trains and the teacher averages."""

    def __init__(self, config: SelfDistillationConfig):
        super().__init__()
        dim = config.network.dim
        self.network = ConvNet(config.network)
        self.token_head = ProjectionHead(dim, config.head_hidden, config.head_bottleneck, config.prototypes)
        self.image_head = ProjectionHead(dim, config.head_hidden, config.head_bottleneck, config.image_prototypes)


def distillation_loss(student_logits: Tensor, teacher_probs: Tensor, temperature: float) -> Tensor:
    """DINO Eq. 1 per row: cross-entropy H(P_t, P_s) with P_s = softmax(student / tau_s)."""
    return -(teacher_probs * F.log_softmax(student_logits.float() / temperature, dim=-1)).sum(-1)


def teacher_probabilities(logits: Tensor, center: Tensor, temperature: float) -> Tensor:
    """DINO's centring and sharpening: softmax((g_t - c) / tau_t)."""
    return F.softmax((logits.float() - center) / temperature, dim=-1)


def ema_momentum(base: float, step: int, total_steps: int) -> float:
    """DINO's teacher momentum: a cosine from ``base`` to 1 over training."""
    progress = min(step / max(total_steps, 1), 1.0)
    return 1.0 - (1.0 - base) * (math.cos(math.pi * progress) + 1) / 2


@dataclass
class StudentView:
    """The student's heads on one augmented view, and where the teacher's targets lie."""

    token_logits: Tensor | None  # (B, h, w, K) token head (global views; None without the token loss)
    token_targets: Tensor | None  # (B, h, w, K) the teacher's probabilities at the same image points
    inside: Tensor | None  # (B, h, w) the points of the view that lie inside the image
    image_logits: Tensor | None  # (B, K_img) image head on the mean token (None without the image loss)


@dataclass
class SelfDistillationOutput:
    views: list[StudentView]  # empty outside training
    image_targets: Tensor  # (B, K_img) the teacher's image-level probabilities
    teacher_tokens: Tensor  # (B, K, h, w) token prototype logits of the teacher (for masks)


class SelfDistillation(Method):
    method = "self_distillation"
    config_class = SelfDistillationConfig

    def __init__(self, config: SelfDistillationConfig, architectures: Mapping[str, dict] | None = None):
        super().__init__(config)
        self.student = Branch(config)
        self.teacher = Branch(config)
        self.teacher.load_state_dict(self.student.state_dict())
        self.teacher.requires_grad_(False)
        self.register_buffer("token_center", torch.zeros(config.prototypes))
        self.register_buffer("image_center", torch.zeros(config.image_prototypes))

    def default_loss_weights(self) -> dict[str, float]:
        return {"token": self.config.token_weight, "image": self.config.image_weight}

    def train(self, mode: bool = True) -> SelfDistillation:
        super().train(mode)
        self.teacher.eval()  # the teacher is an average, never trained
        return self

    def forward(self, batch: Batch | Tensor, num_slots: int | None = None) -> SelfDistillationOutput:
        images = method_input(batch, num_slots, self.config, "self-distillation")
        with torch.no_grad():
            teacher_map = self.teacher.network(normalise(colour_jitter(images, self.config.views)))
            teacher_token_logits = self.teacher.token_head(teacher_map.permute(0, 2, 3, 1))
            teacher_image_logits = self.teacher.image_head(teacher_map.mean((2, 3)))
            temperature = self.config.teacher_temperature
            teacher_token_probs = teacher_probabilities(teacher_token_logits, self.token_center, temperature)
            image_targets = teacher_probabilities(teacher_image_logits, self.image_center, temperature)
            if self.training:
                self.update_centers(teacher_token_logits, teacher_image_logits)
        views = []
        if self.training:
            for view in random_views(images, self.config.views):
                student_map = self.student.network(normalise(view.pixels))
                token_logits = targets = inside = image_logits = None
                if self.loss_weights["token"] and view.is_global:
                    points = image_points(view.theta, tuple(student_map.shape[-2:]))
                    targets = F.grid_sample(teacher_token_probs.permute(0, 3, 1, 2), points,
                                            align_corners=False).permute(0, 2, 3, 1)
                    inside = (points.abs() <= 1).all(-1)
                    token_logits = self.student.token_head(student_map.permute(0, 2, 3, 1))
                if self.loss_weights["image"]:
                    image_logits = self.student.image_head(student_map.mean((2, 3)))
                views.append(StudentView(token_logits, targets, inside, image_logits))
        return SelfDistillationOutput(views, image_targets, teacher_token_logits.permute(0, 3, 1, 2))

    @torch.no_grad()
    def update_centers(self, token_logits: Tensor, image_logits: Tensor) -> None:
        """DINO's centre: an EMA of the teacher's mean output over the batch (and tokens)."""
        m = self.config.center_momentum
        self.token_center.mul_(m).add_(token_logits.float().mean((0, 1, 2)), alpha=1 - m)
        self.image_center.mul_(m).add_(image_logits.float().mean(0), alpha=1 - m)

    def losses(self, outputs: SelfDistillationOutput, batch: Batch) -> dict[str, Tensor]:
        """DINO Eq. 1, H(P_t, P_s), at two levels, each averaged over the student's views:
        token level (iBOT's patch loss: each student token against the teacher token at the
        same image point, over the points inside the image) and image level (the mean token
        against the teacher's whole image); total token_weight x token + image_weight x image."""
        temperature = self.config.student_temperature
        token_losses, image_losses = [], []
        for view in outputs.views:
            if view.token_logits is not None:
                per_token = distillation_loss(view.token_logits, view.token_targets, temperature)
                token_losses.append(per_token[view.inside].mean() if view.inside.any() else per_token.sum() * 0)
            if view.image_logits is not None:
                image_losses.append(distillation_loss(view.image_logits, outputs.image_targets, temperature).mean())
        zero = torch.zeros((), device=outputs.image_targets.device)
        token = torch.stack(token_losses).mean() if token_losses else zero
        image = torch.stack(image_losses).mean() if image_losses else zero
        weights = self.loss_weights
        total = weights["token"] * token + weights["image"] * image
        return {"loss": total, "token": token, "image": image}

    @torch.no_grad()
    def on_step(self, step: int, total_steps: int) -> None:
        """DINO Eq. 2 before each step, i.e. after the previous optimiser step:
        teacher <- lambda teacher + (1 - lambda) student."""
        momentum = ema_momentum(self.config.teacher_momentum, step, total_steps)
        for teacher, student in zip(self.teacher.parameters(), self.student.parameters()):
            teacher.mul_(momentum).add_(student.detach(), alpha=1 - momentum)

    def masks(self, outputs: SelfDistillationOutput) -> Tensor:
        """The teacher's token assignment to the prototypes, one soft mask per prototype: a
        grouping without slots (a :class:`~slotlab.methods.contract.MaskModel`), which
        ``slotlab eval`` scores."""
        return outputs.teacher_tokens.float().softmax(dim=1)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"student": list(self.student.parameters())}


def normalise(images: Tensor) -> Tensor:
    """[0, 1] -> [-1, 1], as the ssl encoder normalises its input."""
    return images * 2 - 1


#: How to get what ``load_self_distillation`` asks for.
TRAIN_HINT = "train one with 'slotlab train --preset ssl-scenes-tiny --out runs/ssl' (its model is runs/ssl/model)"


def load_self_distillation(directory: str | Path, option: str) -> SelfDistillation:
    """A trained self-distillation checkpoint; errors name ``option`` and say how to train one."""
    return load_trained(SelfDistillation, directory, option, TRAIN_HINT)
