import math

import numpy as np
import pytest
import scipy.linalg
import torch
from safetensors.torch import save_file
from torch import nn

from slotlab.metrics.generation import (
    LPIPS,
    VGG16Features,
    as_feature_extractor,
    evaluate_reconstructions,
    fid_from_features,
    frechet_distance,
    gaussian_fit,
    load_lpips_weights,
    lpips_distance,
    psnr,
    ssim,
)


def images(n=4, size=16, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def random_gaussian(dim, rng):
    a = rng.standard_normal((dim, dim))
    return rng.standard_normal(dim), a @ a.T + 0.1 * np.eye(dim)


def scipy_frechet(mu1, s1, mu2, s2):
    root = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(root))


def test_psnr_identical_is_inf_and_known_value():
    x = images()
    assert torch.isinf(psnr(x, x)).all()
    y = (x + 0.1).clamp(0, 1)
    mse = ((x - y) ** 2).mean((1, 2, 3))
    assert torch.allclose(psnr(y, x), 10 * torch.log10(1 / mse), atol=1e-4)


def test_ssim_identical_is_one_and_noise_lowers_it():
    x = images(size=32)
    assert torch.allclose(ssim(x, x), torch.ones(4), atol=1e-5)
    noisy = (x + 0.3 * torch.randn_like(x)).clamp(0, 1)
    assert (ssim(noisy, x) < 0.9).all()


def test_metrics_refuse_images_outside_unit_range():
    x = images()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        psnr(x * 255, x)


@pytest.mark.parametrize("dim", [1, 3, 8])
def test_frechet_distance_matches_scipy_sqrtm(dim):
    rng = np.random.default_rng(dim)
    (mu1, s1), (mu2, s2) = random_gaussian(dim, rng), random_gaussian(dim, rng)
    ours = frechet_distance(*(torch.from_numpy(t) for t in (mu1, s1, mu2, s2)))
    assert float(ours) == pytest.approx(scipy_frechet(mu1, s1, mu2, s2), rel=1e-6, abs=1e-8)


def test_frechet_distance_of_shifted_equal_covariances_is_squared_shift():
    rng = np.random.default_rng(0)
    mu, s = random_gaussian(4, rng)
    shift = torch.tensor([1.0, -2.0, 0.0, 0.5], dtype=torch.float64)
    mu, s = torch.from_numpy(mu), torch.from_numpy(s)
    assert float(frechet_distance(mu, s, mu + shift, s)) == pytest.approx(float(shift.pow(2).sum()), abs=1e-8)


def test_fid_of_identical_features_is_zero_and_different_positive():
    feats = torch.randn(64, 5, generator=torch.Generator().manual_seed(0))
    assert fid_from_features(feats, feats.clone()) == pytest.approx(0.0, abs=1e-8)
    assert fid_from_features(feats, feats + 1.0) == pytest.approx(5.0, abs=1e-6)  # float32 input


def test_gaussian_fit_is_unbiased_like_numpy():
    feats = torch.randn(10, 3, dtype=torch.float64)
    mu, sigma = gaussian_fit(feats)
    assert np.allclose(sigma.numpy(), np.cov(feats.numpy(), rowvar=False))
    assert np.allclose(mu.numpy(), feats.numpy().mean(0))


def test_lpips_distance_by_hand_for_one_layer():
    a = torch.tensor([[3.0, 0.0]]).reshape(1, 2, 1, 1)
    b = torch.tensor([[0.0, 4.0]]).reshape(1, 2, 1, 1)
    w = torch.tensor([0.5, 2.0])
    # normalised: (1, 0) vs (0, 1) -> squared diffs (1, 1) -> weighted 0.5 + 2.0
    assert float(lpips_distance([a], [b], [w])) == pytest.approx(2.5)


def small_feature_net():
    torch.manual_seed(0)
    conv1, conv2 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 6, 3, stride=2, padding=1)

    def features(x):
        h1 = torch.relu(conv1(x))
        return [h1, torch.relu(conv2(h1))]

    return features


def test_lpips_identity_symmetry_and_order():
    lpips = LPIPS(small_feature_net(), [torch.rand(4), torch.rand(6)])
    x = images(size=16)
    assert torch.allclose(lpips(x, x), torch.zeros(4), atol=1e-7)
    y = images(size=16, seed=1)
    assert torch.allclose(lpips(x, y), lpips(y, x), atol=1e-6)
    slightly = (x + 0.02 * torch.randn_like(x)).clamp(0, 1)
    assert (lpips(slightly, x) < lpips(y, x)).all()


def test_lpips_weights_from_reference_layout_file(tmp_path):
    state = {f"lin{i}.model.1.weight": torch.full((1, c, 1, 1), float(i)) for i, c in enumerate((64, 128, 256, 512, 512))}
    path = tmp_path / "vgg.pth"
    torch.save(state, path)
    weights = load_lpips_weights(path)
    assert [w.numel() for w in weights] == [64, 128, 256, 512, 512]
    assert [float(w[0]) for w in weights] == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_lpips_vgg_from_files_with_random_backbone(tmp_path):
    vgg = VGG16Features()
    save_file({k: v.contiguous() for k, v in vgg.state_dict().items()}, str(tmp_path / "vgg16.safetensors"))
    save_file({f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate((64, 128, 256, 512, 512))},
              str(tmp_path / "lin.safetensors"))
    lpips = LPIPS.vgg_from_files(tmp_path / "vgg16.safetensors", tmp_path / "lin.safetensors")
    x, y = images(2, 32), images(2, 32, seed=3)
    assert lpips(x, x).abs().max() < 1e-6
    assert (lpips(x, y) > 0).all()


def test_missing_weight_files_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_lpips_weights(tmp_path / "nope.pth")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        as_feature_extractor(tmp_path / "missing.pt")
    with pytest.raises(TypeError, match="nn.Module"):
        as_feature_extractor(42)


class MeanColour(nn.Module):
    def forward(self, x: torch.Tensor, return_features: bool = True) -> torch.Tensor:
        return torch.cat([x.mean((2, 3)), x.std((2, 3))], 1)


def test_evaluate_reconstructions_over_batches():
    real = [images(4, 16, seed=s) for s in range(3)]
    result = evaluate_reconstructions(real, [r.clone() for r in real], fid_extractor=MeanColour(), fid_num_images=10)
    assert math.isinf(result["psnr"]) and result["ssim"] == pytest.approx(1.0, abs=1e-5)
    assert result["fid"] == pytest.approx(0.0, abs=1e-6) and result["fid_num_images"] == 10
    assert result["num_images"] == 12 and "lpips" not in result

    noisy = [(r + 0.2 * torch.randn_like(r)).clamp(0, 1) for r in real]
    lpips = LPIPS(small_feature_net(), [torch.rand(4), torch.rand(6)])
    worse = evaluate_reconstructions(real, noisy, lpips=lpips, fid_extractor=MeanColour(), fid_num_images=12)
    assert worse["psnr"] < 20 and worse["ssim"] < 0.9 and worse["fid"] > 0 and worse["lpips"] > 0


def test_evaluate_reconstructions_refuses_too_few_fid_images():
    real = [images(4)]
    with pytest.raises(ValueError, match="512"):
        evaluate_reconstructions(real, real, fid_extractor=MeanColour())
