"""`slotlab import glass`: the authors' release layout (multiheadstevesa/ + unet2dconditionmodel/)
with tiny twins -> a slotlab GLASS model directory that reproduces their slot attention and
decomposes, evaluates and samples without the source directories."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from slotlab.io.importers.glass_checkpoint import SLOT_ATTENTION_DIR, UNET_DIR, import_glass
from slotlab.methods import ObjectCentricModel
from slotlab.nn.encoders import build_encoder, encoder_config
from tests.test_diffusion_decoder import SlotDiffusionDecoder, tiny_config, write_tiny_sd_directory
from tests.shared_dir import PARITY

CASE = PARITY / "glass" / "glass_sa"
pytestmark = pytest.mark.skipif(not CASE.with_suffix(".json").is_file(), reason=f"GLASS parity fixture {CASE} is absent")


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> dict[str, Path]:
    """The authors' folders holding the fixture's slot attention and a tiny UNet of its width,
    a tiny DINOv2 (width = the fixture's input size, 4x4 tokens at 56 px) and a tiny SD 2.1."""
    from safetensors.torch import load_file, save_file

    root = tmp_path_factory.mktemp("glass")
    meta = json.loads(CASE.with_suffix(".json").read_text())
    tensors = load_file(str(CASE.with_suffix(".safetensors")))
    state = {k[len("state_dict."):]: v for k, v in tensors.items() if k.startswith("state_dict.")}
    (root / "release" / SLOT_ATTENTION_DIR).mkdir(parents=True)
    config = {"_class_name": "MultiHeadSTEVESA", **meta["constructor_args"]}
    (root / "release" / SLOT_ATTENTION_DIR / "config.json").write_text(json.dumps(config))
    save_file(state, str(root / "release" / SLOT_ATTENTION_DIR / "diffusion_pytorch_model.safetensors"))
    width = meta["constructor_args"]["out_size"]
    torch.manual_seed(1)
    SlotDiffusionDecoder.from_config(tiny_config(cross_attention_dim=width)).unet.save_pretrained(root / "release" / UNET_DIR)
    build_encoder(encoder_config(name="dinov2", tiny=True, image_size=56)).model.save_pretrained(root / "dinov2")
    write_tiny_sd_directory(root / "sd", dim=width)
    return {"root": root, "release": root / "release", "encoder": root / "dinov2", "sd": root / "sd",
            "inputs": tensors}  # fmt: skip


def write(release: dict, out: Path, position_grid: str = "centres") -> Path:
    """`slotlab import glass` on the release."""
    from slotlab.cli import main

    assert main(["import", "glass", str(release["release"]), "--out", str(out), "--encoder", str(release["encoder"]),
                 "--sd", str(release["sd"]), "--image-size", "56", "--resolution", "32",
                 "--position-grid", position_grid]) == 0
    return out


@pytest.mark.parametrize("position_grid", ["centres", "corners"])
def test_imported_slot_attention_reproduces_the_authors(release, tmp_path, position_grid):
    model = ObjectCentricModel.from_pretrained(write(release, tmp_path / "model", position_grid))
    assert model.instance_decoder is None and model.slot_attention.config.position_grid == position_grid
    t = release["inputs"]
    inputs = t["input.inputs"][:, 0]  # (B, C, h, w), one frame
    tokens = inputs.flatten(2).transpose(1, 2)
    out = model.slot_attention(tokens, tuple(inputs.shape[-2:]), noise=t["input.noise.0"])
    torch.testing.assert_close(out.slots, t["output.slots"][:, 0], atol=1e-5, rtol=1e-5)
    masks = out.attention.transpose(1, 2).reshape(*t["output.eval_masks"].shape)
    torch.testing.assert_close(masks, t["output.eval_masks"], atol=1e-5, rtol=1e-5)


def test_imported_model_decomposes_evaluates_and_samples_without_the_sources(release, tmp_path):
    from slotlab.data.registry import build_dataset
    from slotlab.train.evaluate import evaluate_model

    shutil.copytree(release["root"], tmp_path / "src")
    src = {"release": tmp_path / "src" / "release", "encoder": tmp_path / "src" / "dinov2", "sd": tmp_path / "src" / "sd"}
    model_dir = write(src, tmp_path / "model")
    torch.manual_seed(0)
    reference, _ = import_glass(src["release"], src["encoder"], src["sd"], image_size=56, resolution=32)
    shutil.rmtree(tmp_path / "src")  # the directory must stand alone
    model = ObjectCentricModel.from_pretrained(model_dir)
    images = torch.rand(2, 3, 56, 56)
    torch.testing.assert_close(model.decompose(images, seed=0).masks, reference.decompose(images, seed=0).masks)
    for name, tensor in reference.diffusion_decoder.state_dict().items():
        torch.testing.assert_close(model.diffusion_decoder.state_dict()[name], tensor, msg=name)
    slots = model.decompose(images, seed=0).slots
    assert model.diffusion_decoder.sample(slots, num_steps=2).shape == (2, 3, 32, 32)
    metrics = evaluate_model(model, build_dataset("scenes?split=val&size=4&resolution=56"), batch_size=4, progress=False)
    assert metrics["images"] == 4


def test_missing_folder_is_a_clear_error(release, tmp_path, capsys):
    from slotlab.cli import main

    (tmp_path / "release" / SLOT_ATTENTION_DIR).mkdir(parents=True)
    code = main(["import", "glass", str(tmp_path / "release"), "--out", str(tmp_path / "out"),
                 "--encoder", str(release["encoder"]), "--sd", str(release["sd"])])
    assert code == 2 and "config.json is missing" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
