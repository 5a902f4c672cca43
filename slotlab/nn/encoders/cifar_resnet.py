"""The classic CIFAR ResNet-20/56 as an encoder: real pretrained weights small enough for a CPU."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slotlab.nn.encoders.base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Encoder,
    PretrainedEncoderConfig,
    last_blocks,
)
from slotlab.ops.random import fixed_randomness

# The public CIFAR ResNet-20/56 weights were trained on inputs normalised with the
# ImageNet statistics above (their training script says so), not the CIFAR-10 ones.
CIFAR_RESNET_MEAN = IMAGENET_MEAN


CIFAR_RESNET_STD = IMAGENET_STD


@dataclass
class CifarResNetEncoderConfig(PretrainedEncoderConfig):
    """The ``cifar_resnet`` encoder: ``path`` is a CIFAR-10 resnet20/resnet56 weight file;
    layer: the output stage 1, 2 or 3 (default 3)."""

    name: str = "cifar_resnet"
    layer: int = 3

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.layer not in (1, 2, 3):
            raise ValueError(f"encoder.layer={self.layer}: the CIFAR ResNet has stages 1, 2 and 3")


CIFAR_RESNET_STAGE_CHANNELS = (16, 32, 64)


class CifarBasicBlock(nn.Module):
    """BasicBlock of the CIFAR ResNet: two 3x3 conv-BN, ReLU, option-A shortcut.

    Option A: when the block downsamples, the shortcut takes every second pixel and pads
    the new channels with zeros (no parameters).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.stride = stride
        self.extra_channels = out_channels - in_channels

    def shortcut(self, x: Tensor) -> Tensor:
        if self.stride == 1 and self.extra_channels == 0:
            return x
        x = x[:, :, :: self.stride, :: self.stride]
        pad = self.extra_channels // 2
        return F.pad(x, (0, 0, 0, 0, pad, self.extra_channels - pad))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """The classic 3-stage CIFAR ResNet (16/32/64 channels, depth 6n+2, option-A shortcuts).

    Parameter names match the public CIFAR-10 checkpoints (``conv1``, ``bn1``,
    ``layer1..3``, ``linear``) so they load strictly.
    """

    def __init__(self, blocks_per_stage: tuple[int, int, int], num_classes: int = 10):
        super().__init__()
        c1, c2, c3 = CIFAR_RESNET_STAGE_CHANNELS
        self.conv1 = nn.Conv2d(3, c1, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c1)
        self.layer1 = self._stage(c1, c1, blocks_per_stage[0], stride=1)
        self.layer2 = self._stage(c1, c2, blocks_per_stage[1], stride=2)
        self.layer3 = self._stage(c2, c3, blocks_per_stage[2], stride=2)
        self.linear = nn.Linear(c3, num_classes)

    @staticmethod
    def _stage(in_channels: int, out_channels: int, num_blocks: int, stride: int) -> nn.Sequential:
        blocks = [CifarBasicBlock(in_channels, out_channels, stride)]
        blocks += [CifarBasicBlock(out_channels, out_channels, 1) for _ in range(num_blocks - 1)]
        return nn.Sequential(*blocks)

    @property
    def stages(self) -> tuple[nn.Sequential, nn.Sequential, nn.Sequential]:
        return self.layer1, self.layer2, self.layer3

    def features(self, x: Tensor, stage: int) -> Tensor:
        """Normalised images -> feature map (B, C, h, w) after ``stage`` (1, 2 or 3)."""
        x = F.relu(self.bn1(self.conv1(x)))
        for layer in self.stages[:stage]:
            x = layer(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        """Normalised images -> class logits (B, num_classes)."""
        return self.linear(self.features(x, 3).mean(dim=(2, 3)))


def cifar_resnet_blocks_per_stage(state_dict: dict[str, Tensor]) -> tuple[int, int, int]:
    """Number of BasicBlocks per stage, read off the tensor names ``layerS.I.*``."""
    counts = []
    for stage in (1, 2, 3):
        prefix = f"layer{stage}."
        indices = {int(key[len(prefix) :].split(".")[0]) for key in state_dict if key.startswith(prefix)}
        counts.append(len(indices))
    return counts[0], counts[1], counts[2]


def load_cifar_resnet(path: str | Path) -> CifarResNet:
    """Build the CIFAR ResNet described by a checkpoint file and load it strictly.

    The file is a dict with ``state_dict`` (keys prefixed ``module.`` by DataParallel) or a
    bare state dict; it is read with ``weights_only=True`` onto the CPU.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"encoder.path={str(path)!r}: no CIFAR ResNet weight file there. Pass the path of a "
            f"resnet20/resnet56 CIFAR-10 checkpoint (a dict with 'state_dict'), or tiny=True "
            f"for a random twin"
        )
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    state_dict = checkpoint.get("state_dict", checkpoint)
    state_dict = {key.removeprefix("module."): value for key, value in state_dict.items()}
    blocks = cifar_resnet_blocks_per_stage(state_dict)
    if min(blocks) == 0 or "linear.weight" not in state_dict:
        raise ValueError(f"{path}: not a CIFAR ResNet checkpoint (stages {blocks}, keys {list(state_dict)[:4]}...)")
    network = CifarResNet(blocks, num_classes=state_dict["linear.weight"].shape[0])
    network.load_state_dict(state_dict, strict=True)
    return network


class CifarResNetEncoder(Encoder):
    """Features of a CIFAR ResNet after stage ``layer`` as tokens.

    Stage strides are 1, 2 and 4 and channels 16, 32 and 64, so a 64 x 64 input gives
    64 x 64 x 16, 32 x 32 x 32 or 16 x 16 x 64 tokens (a 32 x 32 input: 16 x 16 x 32 from
    stage 2, 8 x 8 x 64 from stage 3). ``trainable_blocks`` counts BasicBlocks of the used
    stages from the end; BatchNorm statistics of frozen blocks stay fixed (eval mode).
    """

    def __init__(self, network: CifarResNet, image_size: int, layer: int, trainable_blocks: int):
        if layer not in (1, 2, 3):
            raise ValueError(f"encoder.layer={layer}: the CIFAR ResNet has stages 1, 2 and 3")
        super().__init__(CIFAR_RESNET_STAGE_CHANNELS[layer - 1], image_size, CIFAR_RESNET_MEAN, CIFAR_RESNET_STD)
        self.network = network
        self.layer = layer
        used_blocks = [block for stage in network.stages[:layer] for block in stage]
        self.set_trainable(last_blocks(used_blocks, trainable_blocks, "cifar_resnet"))

    def grid_size(self) -> tuple[int, int]:
        side = self.image_size
        for _ in range(self.layer - 1):  # each later stage halves the grid (rounding up)
            side = -(-side // 2)
        return side, side

    def encode(self, pixels: Tensor) -> Tensor:
        return self.network.features(pixels, self.layer).flatten(2).transpose(1, 2)

    def architecture(self) -> dict:
        return {
            "blocks_per_stage": [len(stage) for stage in self.network.stages],
            "num_classes": self.network.linear.out_features,
        }


def build_cifar_resnet_encoder(config: CifarResNetEncoderConfig, architecture: dict | None = None) -> Encoder:
    if architecture is not None:
        network = CifarResNet(tuple(architecture["blocks_per_stage"]), architecture["num_classes"])
    elif config.tiny:
        with fixed_randomness(config.seed):
            network = CifarResNet((1, 1, 1))
    elif config.path is None:
        raise ValueError(
            "the cifar_resnet encoder needs weights: pass encoder.path=FILE (a CIFAR-10 "
            "resnet20/resnet56 checkpoint with 'state_dict'), or tiny=True for a random twin"
        )
    else:
        network = load_cifar_resnet(config.path)
    encoder = CifarResNetEncoder(network.eval(), config.image_size, config.layer, config.trainable_blocks)
    config.check_matches_model("dim", encoder.dim)
    return encoder
