import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from slotlab.metrics.generation import as_feature_extractor, evaluate_reconstructions, image_features
from slotlab.metrics.inception import FID_WEIGHTS_FILE, FIDInceptionV3

# ---- the published state dict, written out from the reference port's block definitions ----
# conv name -> (out, in, kh, kw). Every conv carries BatchNorm weight/bias/running_mean/
# running_var of size `out`; the file has no auxiliary classifier and a 1008-way fc.


def block_a(cin, pool):
    return {"branch1x1": (64, cin, 1, 1), "branch5x5_1": (48, cin, 1, 1), "branch5x5_2": (64, 48, 5, 5),
            "branch3x3dbl_1": (64, cin, 1, 1), "branch3x3dbl_2": (96, 64, 3, 3), "branch3x3dbl_3": (96, 96, 3, 3),
            "branch_pool": (pool, cin, 1, 1)}


def block_b(cin):
    return {"branch3x3": (384, cin, 3, 3), "branch3x3dbl_1": (64, cin, 1, 1), "branch3x3dbl_2": (96, 64, 3, 3),
            "branch3x3dbl_3": (96, 96, 3, 3)}


def block_c(cin, c7):
    return {"branch1x1": (192, cin, 1, 1), "branch7x7_1": (c7, cin, 1, 1), "branch7x7_2": (c7, c7, 1, 7),
            "branch7x7_3": (192, c7, 7, 1), "branch7x7dbl_1": (c7, cin, 1, 1), "branch7x7dbl_2": (c7, c7, 7, 1),
            "branch7x7dbl_3": (c7, c7, 1, 7), "branch7x7dbl_4": (c7, c7, 7, 1), "branch7x7dbl_5": (192, c7, 1, 7),
            "branch_pool": (192, cin, 1, 1)}


def block_d(cin):
    return {"branch3x3_1": (192, cin, 1, 1), "branch3x3_2": (320, 192, 3, 3), "branch7x7x3_1": (192, cin, 1, 1),
            "branch7x7x3_2": (192, 192, 1, 7), "branch7x7x3_3": (192, 192, 7, 1), "branch7x7x3_4": (192, 192, 3, 3)}


def block_e(cin):
    return {"branch1x1": (320, cin, 1, 1), "branch3x3_1": (384, cin, 1, 1), "branch3x3_2a": (384, 384, 1, 3),
            "branch3x3_2b": (384, 384, 3, 1), "branch3x3dbl_1": (448, cin, 1, 1), "branch3x3dbl_2": (384, 448, 3, 3),
            "branch3x3dbl_3a": (384, 384, 1, 3), "branch3x3dbl_3b": (384, 384, 3, 1), "branch_pool": (192, cin, 1, 1)}


REFERENCE_BLOCKS = {
    "Mixed_5b": block_a(192, 32), "Mixed_5c": block_a(256, 64), "Mixed_5d": block_a(288, 64), "Mixed_6a": block_b(288),
    "Mixed_6b": block_c(768, 128), "Mixed_6c": block_c(768, 160), "Mixed_6d": block_c(768, 160),
    "Mixed_6e": block_c(768, 192), "Mixed_7a": block_d(768), "Mixed_7b": block_e(1280), "Mixed_7c": block_e(2048),
}
REFERENCE_STEM = {"Conv2d_1a_3x3": (32, 3, 3, 3), "Conv2d_2a_3x3": (32, 32, 3, 3), "Conv2d_2b_3x3": (64, 32, 3, 3),
                  "Conv2d_3b_1x1": (80, 64, 1, 1), "Conv2d_4a_3x3": (192, 80, 3, 3)}

# torchvision documents 27,161,264 parameters for its inception_v3 (1000 classes, with the
# auxiliary classifier: convs 768->128 1x1 and 128->768 5x5 with BatchNorm, fc 768->1000).
# The FID port drops the auxiliary classifier and has 1008 classes.
TORCHVISION_INCEPTION_V3_PARAMS = 27_161_264
AUX_CLASSIFIER_PARAMS = (768 * 128 + 2 * 128) + (128 * 768 * 25 + 2 * 768) + (768 * 1000 + 1000)
FID_INCEPTION_PARAMS = TORCHVISION_INCEPTION_V3_PARAMS - AUX_CLASSIFIER_PARAMS + 8 * (2048 + 1)


def reference_shapes():
    convs = dict(REFERENCE_STEM)
    convs.update({f"{block}.{name}": shape for block, layers in REFERENCE_BLOCKS.items() for name, shape in layers.items()})
    shapes = {"fc.weight": (1008, 2048), "fc.bias": (1008,)}
    for name, shape in convs.items():
        shapes[f"{name}.conv.weight"] = shape
        for tensor in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{name}.bn.{tensor}"] = (shape[0],)
    return shapes


def randomise(model: FIDInceptionV3, seed: int = 0) -> FIDInceptionV3:
    """He-normal convs (default init shrinks the features to near-constants) and random
    BatchNorm statistics/affines, so loading errors would show in the features."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("conv.weight"):
                tensor.copy_(torch.randn(tensor.shape, generator=g) * math.sqrt(2 / tensor[0].numel()))
            elif name.endswith(("running_var", "bn.weight")):
                tensor.copy_(torch.rand(tensor.shape, generator=g) * 0.5 + 0.75)
            elif name.endswith(("running_mean", "bn.bias")):
                tensor.copy_(torch.randn(tensor.shape, generator=g) * 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return randomise(FIDInceptionV3())


@pytest.fixture(scope="module")
def weight_files(model, tmp_path_factory):
    """The random weights as the published layout (.pth without batch counters) and as safetensors."""
    folder = tmp_path_factory.mktemp("fid_weights")
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, folder / FID_WEIGHTS_FILE)
    save_file(model.state_dict(), str(folder / "inception.safetensors"))
    return folder / FID_WEIGHTS_FILE, folder / "inception.safetensors"


def test_reference_parameter_count_follows_from_the_block_table():
    shapes = reference_shapes()
    learnable = sum(math.prod(s) for k, s in shapes.items() if not k.endswith(("running_mean", "running_var")))
    assert learnable == FID_INCEPTION_PARAMS == 23_850_960
    assert len(shapes) == 94 * 5 + 2  # 94 BasicConv2d, 5 tensors each, plus fc


def test_state_dict_matches_the_published_keys_and_shapes(model):
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert ours == reference_shapes()
    assert sum(p.numel() for p in model.parameters()) == FID_INCEPTION_PARAMS
    assert all(model.get_submodule(name).bn.eps == 1e-3 for name in REFERENCE_STEM)
    assert all(model.get_submodule(name).conv.bias is None for name in REFERENCE_STEM)


@pytest.mark.parametrize("size", [32, 64, 299])
def test_features_are_2048d_for_any_input_size(model, size):
    images = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(size))
    with torch.no_grad():
        features = model(images)
    assert features.shape == (2, 2048) and torch.isfinite(features).all()
    assert (features >= 0).all()  # average of ReLU outputs


def test_input_is_resized_bilinearly_and_scaled_to_symmetric_range():
    images = torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(1))
    prepared = FIDInceptionV3.prepare(images)
    expected = F.interpolate(images, size=(299, 299), mode="bilinear", align_corners=False) * 2 - 1
    assert prepared.shape == (1, 3, 299, 299) and torch.equal(prepared, expected)
    assert torch.allclose(FIDInceptionV3.prepare(torch.zeros(1, 3, 8, 8)), torch.tensor(-1.0))
    assert torch.allclose(FIDInceptionV3.prepare(torch.ones(1, 3, 8, 8)), torch.tensor(1.0))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        FIDInceptionV3.prepare(torch.rand(3, 8, 8))


def pool_branch_output(block, x, pool_features):
    with torch.no_grad():
        return block(x)[:, -pool_features:]


@pytest.mark.parametrize("block_name, channels, pool_features", [
    ("Mixed_5b", 192, 32), ("Mixed_6b", 768, 192), ("Mixed_7b", 1280, 192),
])
def test_average_pools_exclude_padding(model, block_name, channels, pool_features):
    block = model.get_submodule(block_name)
    x = torch.rand(1, channels, 5, 5, generator=torch.Generator().manual_seed(2))
    exclude = F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
    include = F.avg_pool2d(x, 3, 1, 1, count_include_pad=True)  # torchvision's InceptionV3
    with torch.no_grad():
        fid_branch, torchvision_branch = block.branch_pool(exclude), block.branch_pool(include)
    out = pool_branch_output(block, x, pool_features)
    assert torch.allclose(out, fid_branch, atol=1e-6)
    assert not torch.allclose(out, torchvision_branch, atol=1e-3)


def test_last_e_block_max_pools(model):
    block = model.Mixed_7c
    x = torch.rand(1, 2048, 4, 4, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        max_branch = block.branch_pool(F.max_pool2d(x, 3, 1, 1))
        avg_branch = block.branch_pool(F.avg_pool2d(x, 3, 1, 1))  # torchvision's InceptionE
    out = pool_branch_output(block, x, 192)
    assert torch.allclose(out, max_branch, atol=1e-6)
    assert not torch.allclose(out, avg_branch, atol=1e-3)


def test_round_trip_through_pth_and_safetensors_gives_identical_features(model, weight_files):
    images = torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = model(images)
    for path in weight_files:
        loaded = FIDInceptionV3.from_file(path)
        assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
        with torch.no_grad():
            assert torch.equal(loaded(images), expected), path.name


def test_missing_file_names_it_and_the_file_to_supply(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.pth") as error:
        FIDInceptionV3.from_file(tmp_path / "nowhere.pth")
    assert FID_WEIGHTS_FILE in str(error.value)
    with pytest.raises(FileNotFoundError, match=FID_WEIGHTS_FILE):
        as_feature_extractor(str(tmp_path / "nowhere.safetensors"))


def test_foreign_keys_and_shapes_are_refused(model, tmp_path):
    state = {k: v for k, v in model.state_dict().items() if k != "Mixed_6e.branch_pool.bn.running_var"}
    state["AuxLogits.fc.weight"] = torch.zeros(1008, 768)
    save_file(state, str(tmp_path / "aux.safetensors"))
    with pytest.raises(ValueError, match=r"Mixed_6e\.branch_pool\.bn\.running_var.*AuxLogits\.fc\.weight"):
        FIDInceptionV3.from_file(tmp_path / "aux.safetensors")

    state = dict(model.state_dict())
    state["fc.weight"] = torch.zeros(1000, 2048)
    save_file(state, str(tmp_path / "imagenet1000.safetensors"))
    with pytest.raises(ValueError, match=r"fc\.weight \(1000, 2048\)"):
        FIDInceptionV3.from_file(tmp_path / "imagenet1000.safetensors")


def test_pickled_programs_and_unknown_formats_are_refused(tmp_path):
    torch.save({"net": partial(max, 1)}, tmp_path / "program.pt")  # needs full unpickling
    with pytest.raises(ValueError, match="weights_only"):
        FIDInceptionV3.from_file(tmp_path / "program.pt")
    (tmp_path / "weights.npz").write_bytes(b"")
    with pytest.raises(ValueError, match="npz"):
        FIDInceptionV3.from_file(tmp_path / "weights.npz")


def test_feature_extractor_accepts_module_or_path_and_nothing_else(model, weight_files):
    assert as_feature_extractor(model) is model
    assert isinstance(as_feature_extractor(str(weight_files[1])), FIDInceptionV3)
    with pytest.raises(TypeError, match="nn.Module or the path"):
        as_feature_extractor(42)


def test_evaluate_reconstructions_with_weights_path(weight_files):
    g = torch.Generator().manual_seed(5)
    real = [torch.rand(3, 3, 32, 32, generator=g) for _ in range(2)]
    noisy = [(r + 0.3 * torch.randn(r.shape, generator=g)).clamp(0, 1) for r in real]
    path = weight_files[0]

    same = evaluate_reconstructions(real, [r.clone() for r in real], fid_extractor=path, fid_num_images=6)
    scale = float(image_features(FIDInceptionV3.from_file(path), torch.cat(real)).var(0).sum())
    # eigen-decompositions of rank-5 covariances of size 2048 leave float64 round-off only
    assert scale > 0.1 and same["fid_num_images"] == 6 and abs(same["fid"]) < 1e-4 * scale

    worse = evaluate_reconstructions(real, noisy, fid_extractor=str(path), fid_num_images=6)
    assert math.isfinite(worse["fid"]) and worse["fid"] > scale
