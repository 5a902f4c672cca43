"""Image-generation metrics for conditional generation / reconstruction (GLASS Table 7).

PSNR and SSIM come from torchmetrics. LPIPS and FID need pretrained backbones; slotlab
never downloads them: every backbone is passed in as a module or read from a local file,
and a missing file is an error that names it.

- PSNR (dB, higher is better): per image, then averaged. Identical images give ``inf``
  (no cap), exactly as torchmetrics computes it.
- SSIM (higher is better): Gaussian window 11, sigma 1.5 (Wang et al. 2004), per image.
- LPIPS (lower is better; Zhang et al. 2018): channel-normalised activations of a feature
  network, squared differences weighted per channel by learned linear layers, averaged
  over space and summed over layers.
- FID (lower is better; Heusel et al. 2017): Frechet distance between Gaussian fits of
  features of real and generated images. The standard FID uses the 2048-d pool features of
  the TensorFlow InceptionV3 "pt_inception-2015-12-05" weights: pass the path of that local
  file and slotlab builds the network (slotlab.metrics.inception). Numbers from any other
  extractor are not comparable to published FIDs.

All images are float (B, 3, H, W) in [0, 1].
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from slotlab.metrics.inception import FID_WEIGHTS_FILE, FIDInceptionV3, read_state_dict

#: Number of generated (and real) images GLASS Table 7 computes the FID on.
GLASS_FID_IMAGES = 512

# LPIPS input normalisation (images in [-1, 1] are shifted and scaled per channel).
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)

# VGG16 "features" layout (torchvision key names features.<i>.weight); LPIPS taps relu1_2,
# relu2_2, relu3_3, relu4_3 and relu5_3.
VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
VGG16_LPIPS_TAPS = (3, 8, 15, 22, 29)


def check_images(images: Tensor, name: str) -> None:
    """Refuse anything that is not a float batch (B, 3, H, W) in [0, 1]."""
    if images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
        raise ValueError(f"{name} must be float images (B, 3, H, W) in [0, 1], got {tuple(images.shape)} {images.dtype}")
    if images.numel() and (images.min() < 0 or images.max() > 1):
        raise ValueError(f"{name} must lie in [0, 1] (got [{images.min():.3g}, {images.max():.3g}]); rescale first")


def check_pair(generated: Tensor, real: Tensor) -> None:
    check_images(generated, "generated images")
    check_images(real, "real images")
    if generated.shape != real.shape:
        raise ValueError(f"generated {tuple(generated.shape)} and real {tuple(real.shape)} images differ in shape")


def psnr(generated: Tensor, real: Tensor) -> Tensor:
    """Per-image PSNR in dB (B,), data range 1; ``inf`` where the images are identical."""
    check_pair(generated, real)
    return peak_signal_noise_ratio(generated, real, data_range=1.0, reduction="none", dim=(1, 2, 3))


def ssim(generated: Tensor, real: Tensor) -> Tensor:
    """Per-image SSIM (B,), Gaussian window 11 / sigma 1.5, data range 1."""
    check_pair(generated, real)
    return structural_similarity_index_measure(generated, real, data_range=1.0, reduction="none")


# ---- LPIPS ---------------------------------------------------------------------------
FeatureNet = Callable[[Tensor], Sequence[Tensor]]


def normalise_channels(x: Tensor, eps: float = 1e-10) -> Tensor:
    """Unit L2 norm over the channel axis of (B, C, H, W) activations."""
    return x / (x.pow(2).sum(1, keepdim=True).sqrt() + eps)


def lpips_distance(features_a: Sequence[Tensor], features_b: Sequence[Tensor], weights: Sequence[Tensor]) -> Tensor:
    """LPIPS (Zhang et al. 2018, Eq. 1) from layer activations -> (B,).

    d = sum_l mean_{h,w} || w_l * (norm(a_l) - norm(b_l)) ||^2, with ``weights[l]`` the
    non-negative per-channel weights (C_l,) of layer l.
    """
    if not (len(features_a) == len(features_b) == len(weights)):
        raise ValueError(
            f"LPIPS needs one linear weight per layer: {len(features_a)} and {len(features_b)} activations, "
            f"{len(weights)} weights"
        )
    total = 0.0
    for a, b, w in zip(features_a, features_b, weights):
        if w.numel() != a.shape[1]:
            raise ValueError(f"LPIPS weight of {w.numel()} channels for an activation of {a.shape[1]} channels")
        diff = (normalise_channels(a) - normalise_channels(b)).pow(2)
        total = total + (diff * w.reshape(1, -1, 1, 1).to(diff)).sum(1).mean((1, 2))
    return total


def load_lpips_weights(path: str | Path) -> list[Tensor]:
    """Per-layer channel weights from a local file, ordered by layer index.

    Accepts safetensors or a plain state dict (read with ``weights_only=True``) whose keys
    hold a layer number, e.g. the reference ``lin0.model.1.weight`` ... ``lin4.model.1.weight``
    of shape (1, C, 1, 1) (file ``lpips/weights/v0.1/vgg.pth`` of the LPIPS package).
    """
    supply = ("the local file of the LPIPS linear layers (e.g. vgg.pth from the LPIPS v0.1 release, or a safetensors "
              "copy)")
    state = read_state_dict(path, "LPIPS linear weights", supply)
    layers = {}
    for key, value in state.items():
        found = re.search(r"(\d+)", key)
        if found is None or not key.endswith("weight"):
            raise ValueError(f"{path}: key {key!r} names no layer number; expected e.g. 'lin0.model.1.weight'")
        layers[int(found.group(1))] = value.flatten().float()
    return [layers[i] for i in sorted(layers)]


class VGG16Features(nn.Module):
    """VGG16 convolutional trunk returning the five activations LPIPS uses.

    Load torchvision-layout weights (keys ``features.<i>.weight``/``bias``) with
    :meth:`from_file`; a fresh instance has random weights (tests only).
    """

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for spec in VGG16_LAYOUT:
            if spec == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(channels, int(spec), 3, padding=1), nn.ReLU(inplace=False)]
                channels = int(spec)
        self.features = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> list[Tensor]:
        taps = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in VGG16_LPIPS_TAPS:
                taps.append(x)
        return taps

    @classmethod
    def from_file(cls, path: str | Path) -> "VGG16Features":
        supply = "a local VGG16 state dict with keys features.<i>.weight (torchvision layout; safetensors or .pth)"
        state = read_state_dict(path, "VGG16 weights", supply)
        model = cls()
        trunk = {k: v for k, v in state.items() if k.startswith("features.")}
        missing, _ = model.load_state_dict(trunk, strict=False)
        if missing:
            raise ValueError(f"{path} lacks VGG16 trunk weights {missing[:3]}...: not a VGG16 state dict")
        return model.eval()


class LPIPS(nn.Module):
    """LPIPS with a given feature network and per-layer linear weights (no downloads)."""

    def __init__(self, feature_net: FeatureNet, weights: Sequence[Tensor], normalise_input: bool = True):
        super().__init__()
        self.feature_net = feature_net
        self.weights = [w.detach().flatten().float() for w in weights]
        self.normalise_input = normalise_input
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).reshape(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).reshape(1, 3, 1, 1), persistent=False)

    @classmethod
    def vgg_from_files(cls, vgg_weights: str | Path, linear_weights: str | Path) -> "LPIPS":
        """The standard LPIPS-VGG from a local VGG16 state dict and the local linear-layer file."""
        return cls(VGG16Features.from_file(vgg_weights), load_lpips_weights(linear_weights))

    def prepare(self, images: Tensor) -> Tensor:
        """[0, 1] -> [-1, 1] -> LPIPS's per-channel shift and scale (if ``normalise_input``)."""
        x = images * 2 - 1
        return (x - self.shift.to(x)) / self.scale.to(x) if self.normalise_input else x

    @torch.no_grad()
    def forward(self, generated: Tensor, real: Tensor) -> Tensor:
        check_pair(generated, real)
        features = self.feature_net(self.prepare(torch.cat([generated, real])))
        halves = [f.chunk(2) for f in features]
        return lpips_distance([h[0] for h in halves], [h[1] for h in halves], self.weights)


# ---- FID -----------------------------------------------------------------------------
def gaussian_fit(features: Tensor) -> tuple[Tensor, Tensor]:
    """Mean (D,) and unbiased covariance (D, D) of features (N, D), in float64."""
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"a Gaussian fit needs features (N >= 2, D), got {tuple(features.shape)}")
    x = features.double()
    return x.mean(0), torch.cov(x.T, correction=1)


def _sqrt_psd(matrix: Tensor) -> Tensor:
    """Square root of a symmetric positive semi-definite matrix (negative eigenvalues clipped)."""
    values, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * values.clamp_min(0).sqrt()) @ vectors.T


def frechet_distance(mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor) -> Tensor:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2) (FID, Heusel et al. 2017).

    d^2 = ||mu1 - mu2||^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^(1/2)).
    The trace term is computed as tr((s1^(1/2) s2 s1^(1/2))^(1/2)), which has the same
    eigenvalues but is symmetric, so no complex parts or ill-conditioned sqrtm arise.
    """
    mu1, mu2, sigma1, sigma2 = (t.double() for t in (mu1, mu2, sigma1, sigma2))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.numel(), mu1.numel()):
        raise ValueError(
            f"frechet_distance: means {tuple(mu1.shape)}, {tuple(mu2.shape)} and covariances "
            f"{tuple(sigma1.shape)}, {tuple(sigma2.shape)} do not describe two D-dimensional Gaussians"
        )
    root1 = _sqrt_psd(sigma1)
    cross = torch.linalg.eigvalsh(root1 @ sigma2 @ root1).clamp_min(0).sqrt().sum()
    return (mu1 - mu2).pow(2).sum() + sigma1.trace() + sigma2.trace() - 2 * cross


def as_feature_extractor(extractor: nn.Module | str | Path) -> nn.Module:
    """The FID feature network: an ``nn.Module`` mapping [0, 1] images to (B, D) features,
    or the path of the standard FID InceptionV3 weights (``pt_inception-2015-12-05-6726825d.pth``
    or a safetensors copy), which builds :class:`FIDInceptionV3` from that file.

    Serialized programs (TorchScript, pickles) are never loaded: networks are built in code
    and their weights read from safetensors or with ``torch.load(weights_only=True)``.
    """
    if isinstance(extractor, (str, Path)):
        return FIDInceptionV3.from_file(extractor)
    if not isinstance(extractor, nn.Module):
        raise TypeError(
            f"fid_extractor must be an nn.Module or the path of the FID InceptionV3 weights ({FID_WEIGHTS_FILE}), "
            f"got {type(extractor).__name__}"
        )
    return extractor


@torch.no_grad()
def image_features(extractor: nn.Module, images: Tensor) -> Tensor:
    """(B, D) features of images in [0, 1]; spatial outputs are average-pooled."""
    check_images(images, "FID images")
    features = extractor(images)
    if features.ndim == 4:  # (B, C, h, w) -> (B, C)
        features = features.mean((2, 3))
    return features.reshape(features.shape[0], -1).double().cpu()


def fid_from_features(real: Tensor, generated: Tensor) -> float:
    """FID between two feature sets (N, D) and (M, D)."""
    return float(frechet_distance(*gaussian_fit(real), *gaussian_fit(generated)))


# ---- dataset-level evaluation ----------------------------------------------------------
def evaluate_reconstructions(
    real_batches: Iterable[Tensor],
    generated_batches: Iterable[Tensor],
    lpips: LPIPS | None = None,
    fid_extractor: nn.Module | str | Path | None = None,
    fid_num_images: int = GLASS_FID_IMAGES,
) -> dict[str, float]:
    """GLASS Table 7 over a split: PSNR, SSIM (and LPIPS) averaged over all image pairs,
    FID on the first ``fid_num_images`` generated vs real images (512 in the paper).

    ``generated_batches[i]`` are the reconstructions of ``real_batches[i]``, both
    (B, 3, H, W) in [0, 1]. LPIPS and FID are computed only when their networks are given;
    ``fid_extractor`` is a module or the path of the FID InceptionV3 weights.
    Fewer images than ``fid_num_images`` is an error, since the FID depends on the count.
    """
    extractor = None if fid_extractor is None else as_feature_extractor(fid_extractor)
    sums = {"psnr": 0.0, "ssim": 0.0, "lpips": 0.0}
    count = 0
    real_feats: list[Tensor] = []
    gen_feats: list[Tensor] = []
    fid_seen = 0
    for real, generated in zip(real_batches, generated_batches, strict=True):
        sums["psnr"] += float(psnr(generated, real).sum())
        sums["ssim"] += float(ssim(generated, real).sum())
        if lpips is not None:
            sums["lpips"] += float(lpips(generated, real).sum())
        count += len(real)
        take = min(len(real), fid_num_images - fid_seen)
        if extractor is not None and take > 0:
            real_feats.append(image_features(extractor, real[:take]))
            gen_feats.append(image_features(extractor, generated[:take]))
            fid_seen += take
    if count == 0:
        raise ValueError("evaluate_reconstructions got no images")
    results = {"psnr": sums["psnr"] / count, "ssim": sums["ssim"] / count, "num_images": float(count)}
    if lpips is not None:
        results["lpips"] = sums["lpips"] / count
    if extractor is not None:
        if fid_seen < fid_num_images:
            raise ValueError(
                f"FID needs {fid_num_images} images but the split has {fid_seen}; pass fid_num_images={fid_seen} "
                "(FIDs of different counts are not comparable)"
            )
        results["fid"] = fid_from_features(torch.cat(real_feats), torch.cat(gen_feats))
        results["fid_num_images"] = float(fid_seen)
    return results
