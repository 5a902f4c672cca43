"""`slotlab import spot`: the authors' checkpoint.pt.tar, written here from the parity fixtures'
state dicts in the authors' layout with a tiny timm-layout ViT, becomes a slotlab model that
reproduces the authors' outputs; bad files give clear messages."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from slotlab.cli import main
from slotlab.methods import ObjectCentricModel
from tests.parity_cases import load_case

WIDTH, HEADS, PATCH, SIDE = 32, 2, 16, 4  # the fixtures' d_model and 4 x 4 token grid


def timm_vit(seed: int, depth: int = 2) -> dict[str, torch.Tensor]:
    """Random weights of a timm/DINO ViT (fused qkv) of the fixtures' width and grid."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape: torch.randn(*shape, generator=g) * 0.2  # noqa: E731
    state = {"cls_token": r(1, 1, WIDTH), "pos_embed": r(1, 1 + SIDE * SIDE, WIDTH),
             "patch_embed.proj.weight": r(WIDTH, 3, PATCH, PATCH), "patch_embed.proj.bias": r(WIDTH),
             "norm.weight": 1 + r(WIDTH), "norm.bias": r(WIDTH)}
    for i in range(depth):
        b = f"blocks.{i}."
        state.update({b + "norm1.weight": 1 + r(WIDTH), b + "norm1.bias": r(WIDTH), b + "attn.qkv.weight": r(3 * WIDTH, WIDTH),
                      b + "attn.qkv.bias": r(3 * WIDTH), b + "attn.proj.weight": r(WIDTH, WIDTH), b + "attn.proj.bias": r(WIDTH),
                      b + "norm2.weight": 1 + r(WIDTH), b + "norm2.bias": r(WIDTH), b + "mlp.fc1.weight": r(64, WIDTH),
                      b + "mlp.fc1.bias": r(64), b + "mlp.fc2.weight": r(WIDTH, 64), b + "mlp.fc2.bias": r(WIDTH)})
    return state


def timm_forward(state: dict[str, torch.Tensor], pixels: torch.Tensor) -> torch.Tensor:
    """The timm/DINO ViT's last block output (no final norm), patch tokens only, written out."""
    x = F.conv2d(pixels, state["patch_embed.proj.weight"], state["patch_embed.proj.bias"], stride=PATCH)
    x = torch.cat([state["cls_token"].expand(len(x), -1, -1), x.flatten(2).transpose(1, 2)], 1) + state["pos_embed"]
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    for i in range(depth):
        p = lambda name: state[f"blocks.{i}.{name}"]  # noqa: E731
        h = F.layer_norm(x, (WIDTH,), p("norm1.weight"), p("norm1.bias"), eps=1e-6)
        q, k, v = F.linear(h, p("attn.qkv.weight"), p("attn.qkv.bias")).view(len(x), -1, 3, HEADS, WIDTH // HEADS).permute(2, 0, 3, 1, 4)
        a = ((q @ k.transpose(-1, -2)) / math.sqrt(WIDTH // HEADS)).softmax(-1)
        x = x + F.linear((a @ v).transpose(1, 2).reshape(len(x), -1, WIDTH), p("attn.proj.weight"), p("attn.proj.bias"))
        h = F.layer_norm(x, (WIDTH,), p("norm2.weight"), p("norm2.bias"), eps=1e-6)
        x = x + F.linear(F.gelu(F.linear(h, p("mlp.fc1.weight"), p("mlp.fc1.bias"))), p("mlp.fc2.weight"), p("mlp.fc2.bias"))
    return x[:, 1:]


def write_checkpoint(path, model_state) -> None:
    torch.save({"epoch": 3, "best_mbo_i": 30.5, "best_epoch": 2, "model": model_state,
                "optimizer": {"state": {}, "param_groups": [{"lr": 4e-4, "params": []}]}}, path)


def run_import(path, out, *extra) -> int:
    return main(["import", "spot", str(path), "--out", str(out), "--decoder-heads", "4", "--vit-heads", str(HEADS),
                 "--image-size", str(PATCH * SIDE), *extra])


def test_stage_two_checkpoint_round_trip(tmp_path, capsys):
    case = load_case("spot", "spot_model_student")
    vit, frozen = timm_vit(0), timm_vit(0)
    vit["blocks.1.mlp.fc2.bias"] = vit["blocks.1.mlp.fc2.bias"] + 0.1  # the last block fine-tuned
    state = {**case.state, **{"encoder." + k: v for k, v in vit.items()}, **{"second_encoder." + k: v for k, v in frozen.items()}}
    state = {("tf_dec." + k[4:] if k.startswith("dec.") else k): v for k, v in state.items()}  # the old prefix
    write_checkpoint(tmp_path / "checkpoint.pt.tar", state)
    assert run_import(tmp_path / "checkpoint.pt.tar", tmp_path / "model") == 0
    printed = capsys.readouterr().out
    assert "stage 2" in printed and "unused (0)" in printed and "missing (0)" in printed
    model = ObjectCentricModel.from_pretrained(tmp_path / "model")
    assert model.config.encoder.trainable_blocks == 1 and model.target_encoder is not None
    pixels = torch.randn(2, 3, PATCH * SIDE, PATCH * SIDE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(model.encoder.encode(pixels), timm_forward(vit, pixels), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model.target_encoder.encode(pixels), timm_forward(frozen, pixels), atol=1e-5, rtol=1e-5)
        tokens = case.inputs["emb_input"]
        out = model.from_tokens(tokens, tokens)
    torch.testing.assert_close(out.reconstruction, case.outputs["eval_standard.dec_recon"], atol=1e-4, rtol=1e-4)
    decomposition = model.decompose(torch.rand(1, 3, 40, 40))  # any image size, batch of one
    assert decomposition.masks.shape == (1, 4, 40, 40)


def test_stage_one_mlp_checkpoint(tmp_path, capsys):
    student, mlp = load_case("spot", "spot_model_student"), load_case("spot", "spot_mlp_decoder")
    sa = {k: v for k, v in load_case("spot", "spot_model_teacher").state.items() if k.startswith("slot_attn.")}
    # The authors' MLP model without slot projection (use_slot_proj=False) still builds input_proj and bos_tokens.
    unused_parts = {k: v for k, v in student.state.items() if k.startswith(("input_proj.", "bos_tokens"))}
    state = {**sa, **unused_parts, **{"dec." + k: v for k, v in mlp.state.items()},
             **{"encoder." + k: v for k, v in timm_vit(2).items()}}
    write_checkpoint(tmp_path / "ckpt.pt.tar", state)
    assert run_import(tmp_path / "ckpt.pt.tar", tmp_path / "model") == 2  # a shared Gaussian: slots needed
    assert "pass num_slots" in capsys.readouterr().err
    assert run_import(tmp_path / "ckpt.pt.tar", tmp_path / "model", "--num-slots", "4") == 0
    unused = capsys.readouterr().out.split("unused (4): ")[1].splitlines()[0]
    assert sorted(unused.split(", ")) == sorted(unused_parts)
    model = ObjectCentricModel.from_pretrained(tmp_path / "model")
    assert model.config.mlp_decoder is not None and model.slot_projection is None
    with torch.no_grad():
        recon, masks = model.decode(mlp.inputs["slots"], None, None)
    torch.testing.assert_close(recon, mlp.outputs["reconstruction"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(masks.transpose(1, 2), mlp.outputs["masks"], atol=1e-5, rtol=1e-5)


class NotATensor:
    pass


def test_bad_checkpoints_are_refused_with_the_reason(tmp_path, capsys):
    assert main(["import", "spot", str(tmp_path / "absent.pt"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    torch.save({"model": NotATensor()}, tmp_path / "code.pt")
    assert main(["import", "spot", str(tmp_path / "code.pt"), "--out", str(tmp_path / "o")]) == 2
    assert "weights_only=True) refused it" in capsys.readouterr().err
    torch.save({"model": {"unet.conv_in.weight": torch.zeros(1)}}, tmp_path / "other.pt")
    assert main(["import", "spot", str(tmp_path / "other.pt"), "--out", str(tmp_path / "o")]) == 2
    assert "not a SPOT checkpoint" in capsys.readouterr().err
    torch.save({"state_dict": {}}, tmp_path / "lightning.pt")
    assert main(["import", "spot", str(tmp_path / "lightning.pt"), "--out", str(tmp_path / "o")]) == 2
    assert "no 'model' state dict" in capsys.readouterr().err
    case = load_case("spot", "spot_model_student")
    partial = {k: v for k, v in case.state.items() if not k.startswith("input_proj.")}
    write_checkpoint(tmp_path / "partial.pt", {**partial, **{"encoder." + k: v for k, v in timm_vit(0).items()}})
    assert run_import(tmp_path / "partial.pt", tmp_path / "o") == 2
    assert "lacks input_proj.0.weight" in capsys.readouterr().err
    no_block = {k: v for k, v in case.state.items() if not k.startswith("dec.blocks.1.")}
    write_checkpoint(tmp_path / "no_block.pt", {**no_block, **{"encoder." + k: v for k, v in timm_vit(0).items()}})
    assert run_import(tmp_path / "no_block.pt", tmp_path / "o") == 0  # a one-block decoder: a different model
    write_checkpoint(tmp_path / "no_layer.pt", {k: v for k, v in {**case.state, **{"encoder." + k: v for k, v in timm_vit(0).items()}}.items()
                                                if not k.startswith("encoder.blocks.1.mlp")})
    assert run_import(tmp_path / "no_layer.pt", tmp_path / "o2") == 2
    assert "needs weights the checkpoint lacks: encoder.model." in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()
