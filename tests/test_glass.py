"""GLASS end to end on tiny models: paper preset path, two phases, resume across the boundary."""

import pytest
from accelerate.utils import set_seed
import torch
from safetensors.torch import load_file

from slotlab.config import from_dict, load_preset
from slotlab.engine.config import build_train_config
from slotlab.engine.trainer import checkpoint_dirs, train
from slotlab.guidance.engine import GenerateConfig, run_generation
from slotlab.methods import ObjectCentricModel, get_method
from slotlab.methods.glass import PAPER_TWIN_OVERRIDES


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("generated")
    config = from_dict(GenerateConfig, {
        "backend": "scenes", "num": 16, "shard_size": 8,
        "prompts": {"source": "template", "label_set": "scenes", "dataset": "scenes?split=train&size=32&resolution=32"},
        "scenes": {"resolution": 32},
    })
    run_generation(config, out, resume=False, progress=False)
    return f"generated:{out}"


TRAIN_SHORT = ["data.batch_size=2", "stages.0.steps=2", "stages.1.steps=2", "checkpoint_every=2", "log_every=1"]


def paper_tiny_config(generated: str, extra=()):
    overrides = [*PAPER_TWIN_OVERRIDES, *TRAIN_SHORT, f"data.train={generated}", *extra]
    return build_train_config(load_preset("glass-coco"), overrides)


def test_paper_preset_runs_both_phases_on_tiny_twins(generated, tmp_path):
    config = paper_tiny_config(generated)
    set_seed(config.seed)  # the trainer builds its model after the same seeding
    model = get_method("glass")(config.model_config())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert type(model.encoder).__name__ == "DINOv2Encoder"
    assert type(model.diffusion_decoder.unet).__name__ == "UNet2DConditionModel"
    assert model.slot_attention.config.output_dim == 32  # projected to the UNet's cross-attention width
    del model

    result = train(config, tmp_path / "run", progress=False)
    assert result.steps == 4
    log = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert '"recon"' not in log[0] and '"recon"' in log[-1]  # L_recon only in phase 2
    after = load_file(str(tmp_path / "run" / "model" / "model.safetensors"))
    phase1 = load_file(str(checkpoint_dirs(tmp_path / "run")[0] / "model.safetensors"))
    unet_keys = [k for k in after if k.startswith("diffusion_decoder.unet.")]
    sa_keys = [k for k in after if k.startswith("slot_attention.")]
    # phase 2 trains the UNet ...
    assert any(not torch.equal(after[k], phase1[k]) for k in unet_keys)
    # ... and (almost) not slot attention (lr 1e-8)
    assert max((after[k] - phase1[k]).abs().max().item() for k in sa_keys) < 1e-6
    # phase 1 trained slot attention, left the UNet and the frozen encoder and VAE untouched
    assert any(not torch.equal(phase1[k], before[k]) for k in sa_keys)
    assert all(torch.equal(phase1[k], before[k]) for k in unet_keys)
    for k in after:
        if k.startswith(("encoder.", "diffusion_decoder.autoencoder.")):
            assert torch.equal(after[k], before[k]), k


def test_resume_across_the_phase_boundary(generated, tmp_path):
    config = paper_tiny_config(generated)
    straight = train(config, tmp_path / "a", progress=False)
    # stop exactly at the boundary: train phase 1 only, then resume the full config
    import shutil
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "b" / "model")
    for ckpt in checkpoint_dirs(tmp_path / "b")[1:]:
        shutil.rmtree(ckpt)
    assert [p.name for p in checkpoint_dirs(tmp_path / "b")] == ["step-00000002"]
    resumed = train(config, tmp_path / "b", resume=True, progress=False)
    assert resumed.steps == straight.steps == 4
    a = load_file(str(tmp_path / "a" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "model" / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)


def test_checkpoint_reloads_and_decomposes(generated, tmp_path):
    train(paper_tiny_config(generated), tmp_path / "run", progress=False)
    model = ObjectCentricModel.from_pretrained(tmp_path / "run" / "model")
    d = model.decompose(torch.rand(2, 3, 40, 40))
    assert d.masks.shape == (2, 7, 40, 40) and d.slots.shape == (2, 7, 32)
    torch.testing.assert_close(d.masks.sum(1), torch.ones(2, 40, 40))


def test_recon_weight_needs_a_diffusion_decoder():
    with pytest.raises(Exception, match="lambda_recon"):
        build_train_config(load_preset("glass-tiny"), ["model.diffusion_decoder=null"])
