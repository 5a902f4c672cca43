"""Pretraining a small diffusion decoder the way Stable Diffusion is, for the CPU presets.

GLASS's decoder is SD 2.1, pretrained on captioned images before GLASS trains; in phase 1
L_recon flows through that frozen UNet into the slots. A tiny UNet trained from scratch
has no such prior, so the CPU presets first train it as a conditional generator of the
generated scenes: conditioned on **description tokens** written from each scene's masks
(one token per segment: its class, mean colour and box), the structured stand-in for a
caption. This module builds those tokens; ``Glass`` trains the decoder on them in a
pretraining stage (loss term ``pretrain_recon``) and then freezes it.

The tokens read ground truth (the scenes' class segments and pixels): a supervision the
paper's SD never had per object. Results of presets that use it say so.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from slotlab.data.sample import Batch

#: Features per segment besides its class: mean RGB (3) and box x0, y0, x1, y1 (4).
SEGMENT_FEATURES = 7


@dataclass(frozen=True)
class DescriptionConfig:
    """num_classes: class ids of the pseudo masks, background (0) included (the scenes: 7).
    max_tokens: tokens per image (background + segments, padded with the decoder's
    unconditional token); use the number of slots, so that slots can take their place."""

    num_classes: int = 7
    max_tokens: int = 7
    hidden: int = 128

    def __post_init__(self) -> None:
        if self.num_classes < 2 or self.max_tokens < 2 or self.hidden < 1:
            raise ValueError("DescriptionConfig: num_classes and max_tokens must be >= 2, hidden >= 1")


def segment_features(batch: Batch, max_tokens: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per image, the background and up to ``max_tokens - 1`` class segments of
    ``semantic_mask`` (uncertain pixels left out): class ids (B, T) long, features
    (B, T, SEGMENT_FEATURES) float and which tokens are real (B, T) bool."""
    images, labels = batch.image, batch.semantic_mask.long()
    valid = ~batch.ignore_mask.bool()
    size, height, width = images.shape[0], *labels.shape[-2:]
    classes = torch.zeros(size, max_tokens, dtype=torch.long, device=images.device)
    features = torch.zeros(size, max_tokens, SEGMENT_FEATURES, device=images.device)
    present = torch.zeros(size, max_tokens, dtype=torch.bool, device=images.device)
    rows = torch.linspace(0, 1, height, device=images.device)[:, None].expand(height, width)
    cols = torch.linspace(0, 1, width, device=images.device)[None, :].expand(height, width)
    for b in range(size):
        ids = [c for c in labels[b][valid[b]].unique().tolist() if c < 255][:max_tokens]
        for t, class_id in enumerate(ids):
            region = (labels[b] == class_id) & valid[b]
            colour = images[b][:, region].mean(1)
            box = torch.stack([cols[region].min(), rows[region].min(), cols[region].max(), rows[region].max()])
            classes[b, t], features[b, t], present[b, t] = class_id, torch.cat([colour, box]), True
    return classes, features, present


class SceneDescriber(nn.Module):
    """Description tokens (B, T, D) of a batch: class embedding + MLP(colour, box) per
    segment; padding positions take ``pad_token`` (the decoder's unconditional token)."""

    def __init__(self, config: DescriptionConfig, dim: int) -> None:
        super().__init__()
        self.config = config
        self.classes = nn.Embedding(config.num_classes, dim)
        # nn.Embedding draws N(0, 1) (token norm ~sqrt(dim)), which drowned the colour and box
        # part (norm ~1 from the MLP): the decoder then learned class alone. Start both at one scale.
        nn.init.normal_(self.classes.weight, std=dim**-0.5)
        self.attributes = nn.Sequential(
            nn.Linear(SEGMENT_FEATURES, config.hidden), nn.ReLU(), nn.Linear(config.hidden, dim)
        )

    def forward(self, batch: Batch, pad_token: Tensor) -> Tensor:
        classes, features, present = segment_features(batch, self.config.max_tokens)
        if int(classes.max()) >= self.config.num_classes:
            raise ValueError(
                f"pseudo masks hold class {int(classes.max())} but description.num_classes="
                f"{self.config.num_classes}; set it to the label set's size (background included)"
            )
        tokens = self.classes(classes) + self.attributes(features)
        return torch.where(present[..., None], tokens, pad_token.to(tokens.dtype).expand_as(tokens))
