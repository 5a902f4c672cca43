"""The InceptionV3 feature network of the standard FID, built in code, weights from a local file.

The FID (Heusel et al. 2017) is defined on the 2048-d global-average-pool features of the
TensorFlow InceptionV3 graph "inception-2015-12-05" (Szegedy et al. 2016, "Rethinking the
Inception Architecture for Computer Vision"). Its PyTorch port, the weights file
``pt_inception-2015-12-05-6726825d.pth`` of the PyTorch FID release, uses torchvision's
parameter names and differs from torchvision's InceptionV3 in the pooling branches:

- the 3x3 average pools of the A, C and first E blocks exclude the zero padding from the
  average (TensorFlow's SAME pooling), i.e. ``count_include_pad=False``;
- the last E block (``Mixed_7c``) max-pools in its pool branch instead of averaging.

Inputs are images in [0, 1], resized bilinearly (``align_corners=False``) to 299 x 299 as
PyTorch FID does, then scaled to [-1, 1]. torch-fidelity instead emulates TensorFlow 1's
resize on uint8 images; at input sizes other than 299 the two give slightly different
features. Nothing is ever downloaded: :meth:`FIDInceptionV3.from_file` reads the weights
from a local safetensors or ``.pth`` file (the latter with ``weights_only=True``).
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor, nn

#: The published weights file this architecture loads (PyTorch FID release "fid_weights").
FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
#: Input side length of the network.
FID_INPUT_SIZE = 299
#: Dimension of the pool features FID is computed on.
FID_FEATURE_DIM = 2048
#: Classes of the TensorFlow graph's softmax layer (1000 ImageNet classes plus 8 unused).
FID_NUM_CLASSES = 1008
#: BatchNorm epsilon of the TensorFlow graph.
BATCHNORM_EPS = 1e-3

Pool = Callable[[Tensor], Tensor]

# The three pools of the network. "Same" pools keep the size (3x3, stride 1, padding 1);
# TensorFlow's SAME average pool divides by the number of real pixels in the window.
avg_pool_same: Pool = partial(F.avg_pool2d, kernel_size=3, stride=1, padding=1, count_include_pad=False)
max_pool_same: Pool = partial(F.max_pool2d, kernel_size=3, stride=1, padding=1)
max_pool_reduce: Pool = partial(F.max_pool2d, kernel_size=3, stride=2)


class Conv(NamedTuple):
    """One BasicConv2d of a block: its attribute name, output channels and geometry."""

    name: str
    out_channels: int
    kernel: int | tuple[int, int]
    stride: int = 1
    padding: int | tuple[int, int] = 0


class Branch(NamedTuple):
    """One branch of an Inception block: optional pool, a chain of convs, then optionally
    a fork of parallel convs on the chain's output whose results are concatenated."""

    convs: tuple[Conv, ...] = ()
    pool: Pool | None = None
    fork: tuple[Conv, ...] = ()


class BasicConv2d(nn.Module):
    """Convolution without bias, BatchNorm (eps 1e-3), ReLU."""

    def __init__(self, in_channels: int, spec: Conv) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, spec.out_channels, spec.kernel, spec.stride, spec.padding, bias=False)
        self.bn = nn.BatchNorm2d(spec.out_channels, eps=BATCHNORM_EPS)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


class InceptionBlock(nn.Module):
    """Parallel branches concatenated over channels; convs are attributes named as in the
    published state dict (``branch1x1``, ``branch5x5_1``, ...)."""

    def __init__(self, in_channels: int, branches: Sequence[Branch]) -> None:
        super().__init__()
        self.branches = tuple(branches)
        self.out_channels = 0
        for branch in self.branches:
            channels = in_channels
            for spec in branch.convs:
                self.add_module(spec.name, BasicConv2d(channels, spec))
                channels = spec.out_channels
            for spec in branch.fork:
                self.add_module(spec.name, BasicConv2d(channels, spec))
            self.out_channels += sum(spec.out_channels for spec in branch.fork) if branch.fork else channels

    def run_branch(self, branch: Branch, x: Tensor) -> Tensor:
        if branch.pool is not None:
            x = branch.pool(x)
        for spec in branch.convs:
            x = self.get_submodule(spec.name)(x)
        if branch.fork:
            x = torch.cat([self.get_submodule(spec.name)(x) for spec in branch.fork], 1)
        return x

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.run_branch(branch, x) for branch in self.branches], 1)


# ---- the block types (Szegedy et al. 2016; conv names as in the weights file) ----
def block_a(in_channels: int, pool_features: int) -> InceptionBlock:
    """35x35 block: 1x1, 5x5, double 3x3 and pool branches."""
    return InceptionBlock(in_channels, [
        Branch((Conv("branch1x1", 64, 1),)),
        Branch((Conv("branch5x5_1", 48, 1), Conv("branch5x5_2", 64, 5, padding=2))),
        Branch((Conv("branch3x3dbl_1", 64, 1), Conv("branch3x3dbl_2", 96, 3, padding=1),
                Conv("branch3x3dbl_3", 96, 3, padding=1))),
        Branch((Conv("branch_pool", pool_features, 1),), pool=avg_pool_same),
    ])


def block_b(in_channels: int) -> InceptionBlock:
    """Grid reduction 35 -> 17."""
    return InceptionBlock(in_channels, [
        Branch((Conv("branch3x3", 384, 3, stride=2),)),
        Branch((Conv("branch3x3dbl_1", 64, 1), Conv("branch3x3dbl_2", 96, 3, padding=1),
                Conv("branch3x3dbl_3", 96, 3, stride=2))),
        Branch(pool=max_pool_reduce),
    ])


def row7(name: str, out_channels: int) -> Conv:
    return Conv(name, out_channels, (1, 7), padding=(0, 3))


def col7(name: str, out_channels: int) -> Conv:
    return Conv(name, out_channels, (7, 1), padding=(3, 0))


def block_c(in_channels: int, channels_7x7: int) -> InceptionBlock:
    """17x17 block with 7x7 convolutions factorised into 1x7 and 7x1."""
    c = channels_7x7
    return InceptionBlock(in_channels, [
        Branch((Conv("branch1x1", 192, 1),)),
        Branch((Conv("branch7x7_1", c, 1), row7("branch7x7_2", c), col7("branch7x7_3", 192))),
        Branch((Conv("branch7x7dbl_1", c, 1), col7("branch7x7dbl_2", c), row7("branch7x7dbl_3", c),
                col7("branch7x7dbl_4", c), row7("branch7x7dbl_5", 192))),
        Branch((Conv("branch_pool", 192, 1),), pool=avg_pool_same),
    ])


def block_d(in_channels: int) -> InceptionBlock:
    """Grid reduction 17 -> 8."""
    return InceptionBlock(in_channels, [
        Branch((Conv("branch3x3_1", 192, 1), Conv("branch3x3_2", 320, 3, stride=2))),
        Branch((Conv("branch7x7x3_1", 192, 1), row7("branch7x7x3_2", 192), col7("branch7x7x3_3", 192),
                Conv("branch7x7x3_4", 192, 3, stride=2))),
        Branch(pool=max_pool_reduce),
    ])


def block_e(in_channels: int, pool: Pool) -> InceptionBlock:
    """8x8 block with expanded filter banks; ``pool`` differs between the two E blocks."""

    def split(prefix: str) -> tuple[Conv, Conv]:
        return Conv(f"{prefix}a", 384, (1, 3), padding=(0, 1)), Conv(f"{prefix}b", 384, (3, 1), padding=(1, 0))

    return InceptionBlock(in_channels, [
        Branch((Conv("branch1x1", 320, 1),)),
        Branch((Conv("branch3x3_1", 384, 1),), fork=split("branch3x3_2")),
        Branch((Conv("branch3x3dbl_1", 448, 1), Conv("branch3x3dbl_2", 384, 3, padding=1)),
               fork=split("branch3x3dbl_3")),
        Branch((Conv("branch_pool", 192, 1),), pool=pool),
    ])


#: Stem convs in order; a max pool (3x3, stride 2) follows Conv2d_2b_3x3 and Conv2d_4a_3x3.
STEM = (
    Conv("Conv2d_1a_3x3", 32, 3, stride=2),
    Conv("Conv2d_2a_3x3", 32, 3),
    Conv("Conv2d_2b_3x3", 64, 3, padding=1),
    Conv("Conv2d_3b_1x1", 80, 1),
    Conv("Conv2d_4a_3x3", 192, 3),
)
STEM_POOLED_AFTER = ("Conv2d_2b_3x3", "Conv2d_4a_3x3")

#: Mixed blocks in order, each built from the channels of its input.
MIXED: tuple[tuple[str, Callable[[int], InceptionBlock]], ...] = (
    ("Mixed_5b", partial(block_a, pool_features=32)),
    ("Mixed_5c", partial(block_a, pool_features=64)),
    ("Mixed_5d", partial(block_a, pool_features=64)),
    ("Mixed_6a", block_b),
    ("Mixed_6b", partial(block_c, channels_7x7=128)),
    ("Mixed_6c", partial(block_c, channels_7x7=160)),
    ("Mixed_6d", partial(block_c, channels_7x7=160)),
    ("Mixed_6e", partial(block_c, channels_7x7=192)),
    ("Mixed_7a", block_d),
    ("Mixed_7b", partial(block_e, pool=avg_pool_same)),
    ("Mixed_7c", partial(block_e, pool=max_pool_same)),  # the port's max pool, kept for comparable FIDs
)


def read_state_dict(path: str | Path, what: str, supply: str) -> dict[str, Tensor]:
    """Tensors of a safetensors file or of a plain ``.pth``/``.pt`` state dict (no unpickling of
    code); a missing file is an error naming ``what`` it should hold and what to ``supply``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} not found: supply {supply}")
    if path.suffix == ".safetensors":
        return load_file(str(path))
    if path.suffix not in (".pth", ".pt"):
        raise ValueError(f"{path}: unknown weights format {path.suffix!r}; use .safetensors, .pth or .pt")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{path} is not a plain state dict (torch.load with weights_only=True refused it): save "
            "model.state_dict() or convert the file to safetensors"
        ) from error
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict of tensors")
    return state


class FIDInceptionV3(nn.Module):
    """InceptionV3 (Szegedy et al. 2016) as ported for the FID (Heusel et al. 2017): images
    in [0, 1] (B, 3, H, W) -> 2048-d pool features (B, 2048).

    Parameter names follow the published state dict ``pt_inception-2015-12-05-6726825d.pth``
    (torchvision layout, no auxiliary classifier). The 1008-way ``fc`` layer is kept only so
    that file loads strictly; the features do not use it. A fresh instance has random
    weights; load the real ones with :meth:`from_file`.
    """

    def __init__(self) -> None:
        super().__init__()
        channels = 3
        for spec in STEM:
            self.add_module(spec.name, BasicConv2d(channels, spec))
            channels = spec.out_channels
        for name, build in MIXED:
            block = build(channels)
            self.add_module(name, block)
            channels = block.out_channels
        self.fc = nn.Linear(FID_FEATURE_DIM, FID_NUM_CLASSES)

    @staticmethod
    def prepare(images: Tensor) -> Tensor:
        """[0, 1] images -> bilinear resize to 299 x 299 -> [-1, 1]."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"FIDInceptionV3 expects images (B, 3, H, W) in [0, 1], got {tuple(images.shape)}")
        resized = F.interpolate(images, size=(FID_INPUT_SIZE, FID_INPUT_SIZE), mode="bilinear", align_corners=False)
        return resized * 2 - 1

    def forward(self, images: Tensor) -> Tensor:
        x = self.prepare(images)
        for spec in STEM:
            x = self.get_submodule(spec.name)(x)
            if spec.name in STEM_POOLED_AFTER:
                x = max_pool_reduce(x)
        for name, _ in MIXED:
            x = self.get_submodule(name)(x)
        return x.mean((2, 3))

    @classmethod
    def from_file(cls, path: str | Path) -> "FIDInceptionV3":
        """The network with the weights of a local file, in eval mode and frozen.

        ``path`` is the published ``pt_inception-2015-12-05-6726825d.pth`` (read with
        ``weights_only=True``) or a safetensors copy of it. BatchNorm batch counters
        (``num_batches_tracked``) may be present or absent; every other tensor must match.
        """
        supply = (f"{FID_WEIGHTS_FILE} from the PyTorch FID release (or a safetensors copy of it); slotlab never "
                  "downloads it")
        state = read_state_dict(path, "FID InceptionV3 weights", supply)
        model = cls()
        check_state_dict(model, state, Path(path))
        model.load_state_dict(state, strict=True)
        return model.eval().requires_grad_(False)


def check_state_dict(model: nn.Module, state: dict[str, Tensor], path: Path, shown: int = 4) -> None:
    """Refuse a state dict whose keys or shapes differ from the model's, naming a few of them."""
    expected = model.state_dict()
    optional = {key for key in expected if key.endswith("num_batches_tracked")}
    missing = sorted(set(expected) - set(state) - optional)
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{path} is not the FID InceptionV3 state dict ({FID_WEIGHTS_FILE}): {len(missing)} missing keys "
            f"{missing[:shown]}, {len(unexpected)} unexpected keys {unexpected[:shown]}"
        )
    wrong = [f"{key} {tuple(state[key].shape)} != {tuple(value.shape)}" for key, value in expected.items()
             if key in state and state[key].shape != value.shape]
    if wrong:
        raise ValueError(f"{path}: {len(wrong)} tensors have the wrong shape, e.g. {wrong[:shown]}")
