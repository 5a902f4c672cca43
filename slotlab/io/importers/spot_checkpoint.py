"""The authors' SPOT checkpoint (``checkpoint.pt.tar``) -> a slotlab SPOT model directory.

The file is a pickle of ``{epoch, best_*, best_epoch, model, optimizer}``. It is read with
``torch.load(weights_only=True)``: tensors and plain containers only, never code; where
that refuses, the import stops and names the reason. ``model`` holds the parts listed in
:mod:`slotlab.io.importers.spot`; the ViT (``encoder.*``, timm/DINO layout with a fused
``qkv``) maps onto the ``transformers`` ``ViTModel`` of slotlab's ``dino`` encoder.

What the weights do not say (iterations, heads of the slot attention and the decoder, the
number of slots of a shared-Gaussian model, the ViT's heads) comes from the authors'
training flags, passed as ``authors_args`` (their names: ``num_iterations``, ``num_slots``,
``num_heads``, ``vit_heads``...), with the defaults of their training scripts.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor

from slotlab.config import ConfigError
from slotlab.io.importers.base import ImportReport, map_keys, prefix_renames, select
from slotlab.io.importers.spot import SLOT_ATTENTION_RENAMES, slot_attention_config, transformer_decoder_state
from slotlab.methods.spot import Spot, SpotConfig
from slotlab.nn.decoders.autoregressive import AutoregressiveDecoderConfig
from slotlab.nn.decoders.mlp import MLPDecoderConfig
from slotlab.nn.decoders.orders import ORDER_NAMES, RASTER
from slotlab.nn.encoders import EncoderConfig, encoder_config
from slotlab.nn.encoders.vit import ViTEncoder

# The authors' training-script defaults for what a checkpoint does not store.
AUTHORS_DEFAULTS = {"num_iterations": 3, "num_heads": 6, "sa_heads": 1, "vit_heads": None, "image_size": 224}

# timm / DINO ViT -> transformers ViTModel, for both of transformers' layouts.
_VIT_LAYOUTS = {
    "layers.": {  # transformers >= 5
        "block": "layers.{i}.", "q": "attention.q_proj", "k": "attention.k_proj", "v": "attention.v_proj",
        "proj": "attention.o_proj", "norm1": "layernorm_before", "norm2": "layernorm_after",
        "fc1": "mlp.fc1", "fc2": "mlp.fc2",
    },
    "encoder.layer.": {  # transformers 4.x
        "block": "encoder.layer.{i}.", "q": "attention.attention.query", "k": "attention.attention.key",
        "v": "attention.attention.value", "proj": "attention.output.dense", "norm1": "layernorm_before",
        "norm2": "layernorm_after", "fc1": "intermediate.dense", "fc2": "output.dense",
    },
}
_VIT_TOP = {"cls_token": "embeddings.cls_token", "pos_embed": "embeddings.position_embeddings",
            "patch_embed.proj.": "embeddings.patch_embeddings.projection.", "norm.": "layernorm."}


def read_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """The ``model`` state dict of an authors' checkpoint, read without executing code."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: pass the authors' checkpoint.pt.tar")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as err:
        raise ConfigError(
            f"{path} was not read: torch.load(weights_only=True) refused it ({str(err).splitlines()[0]}). "
            "slotlab reads only tensors and plain containers from a pickle and never executes code from it"
        ) from None
    state = checkpoint.get("model") if isinstance(checkpoint, dict) else None
    if not isinstance(state, Mapping) or not state:
        keys = sorted(checkpoint)[:8] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ConfigError(f"{path} is not a SPOT checkpoint: no 'model' state dict (found {keys})")
    # Older runs named the decoder tf_dec.
    return {("dec." + k[len("tf_dec."):] if k.startswith("tf_dec.") else k): v for k, v in state.items()}


def vit_state(state: Mapping[str, Tensor], target_keys) -> tuple[dict[str, Tensor], list[str]]:
    """timm/DINO ViT weights -> ``transformers`` ViTModel names (the fused qkv split in three)."""
    layout = next((_VIT_LAYOUTS[p] for p in _VIT_LAYOUTS if any(k.startswith(p) for k in target_keys)), None)
    if layout is None:
        raise ValueError("the target ViT has neither transformers layout (layers.* or encoder.layer.*)")
    mapped, unused = {}, []
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "blocks" and len(parts) >= 4:
            block = layout["block"].format(i=parts[1])
            name, leaf = ".".join(parts[2:-1]), parts[-1]
            if name == "attn.qkv":
                for letter, chunk in zip("qkv", value.chunk(3, dim=0)):
                    mapped[f"{block}{layout[letter]}.{leaf}"] = chunk
                continue
            short = {"attn.proj": "proj", "norm1": "norm1", "norm2": "norm2", "mlp.fc1": "fc1", "mlp.fc2": "fc2"}.get(name)
            if short is not None:
                mapped[f"{block}{layout[short]}.{leaf}"] = value
                continue
        top = next((p for p in _VIT_TOP if key == p or (p.endswith(".") and key.startswith(p))), None)
        if top is not None:
            mapped[_VIT_TOP[top] + key[len(top):]] = value
        else:
            unused.append(key)
    return mapped, unused


def vit_config(state: Mapping[str, Tensor], heads: int | None, image_size: int) -> dict:
    """transformers ViTConfig fields read off timm ViT weights (``heads``: not stored)."""
    width = state["cls_token"].shape[-1]
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    if heads is None:
        if width % 64:
            raise ConfigError(f"the ViT's width {width} does not say its heads: pass vit_heads")
        heads = width // 64  # ViT-S/B/L: 64 channels per head
    return dict(hidden_size=width, num_hidden_layers=depth, num_attention_heads=heads,
                intermediate_size=state["blocks.0.mlp.fc1.weight"].shape[0],
                patch_size=state["patch_embed.proj.weight"].shape[-1],
                image_size=image_size, qkv_bias="blocks.0.attn.qkv.bias" in state, layer_norm_eps=1e-6)


def spot_config(state: Mapping[str, Tensor], args: Mapping[str, Any], encoder: EncoderConfig) -> SpotConfig:
    """slotlab's SpotConfig for an authors' SPOT state dict and training flags ``args``."""
    a = {**AUTHORS_DEFAULTS, **args}
    sa_source = select(state, "slot_attn.")
    if "slot_attention.project_k.weight" not in sa_source:
        raise ConfigError("not a SPOT checkpoint: slot_attn.slot_attention.project_k.weight is absent")
    learned = "slots_init.weight" in sa_source
    if not learned and "num_slots" not in a:
        raise ConfigError("the checkpoint's slots use a shared Gaussian, which does not store their number: pass num_slots")
    k = sa_source["slot_attention.project_k.weight"]
    sa = slot_attention_config({
        "input_channels": k.shape[1], "slot_size": k.shape[0],
        "mlp_hidden_size": sa_source["slot_attention.mlp.0.weight"].shape[0],
        "num_slots": sa_source["slots_init.weight"].shape[0] if learned else a["num_slots"],
        "num_iterations": a["num_iterations"], "num_heads": a["sa_heads"],
        "init_method": "embedding" if learned else "shared_gaussian",
        "truncate": a.get("truncate", "bi-level" if learned else "none"),
    })
    is_mlp = "dec.pos_embed" in state
    needed = ("bos_tokens",) if is_mlp else ("bos_tokens", "input_proj.0.weight", "slot_proj.0.weight", "dec.blocks.0.self_attn.proj_q.weight")
    absent = [key for key in needed if key not in state]
    if absent:
        raise ConfigError(f"the SPOT checkpoint lacks {', '.join(absent)}: it is incomplete or not a SPOT model's state dict")
    num_bos = state["bos_tokens"].shape[0]
    orders = ORDER_NAMES if num_bos == len(ORDER_NAMES) else (RASTER,)
    if num_bos not in (1, len(ORDER_NAMES)):
        raise ConfigError(f"bos_tokens holds {num_bos} tokens; SPOT has 1 (raster) or {len(ORDER_NAMES)}")
    if is_mlp:
        linears = sorted(int(key.split(".")[2]) for key in state if key.startswith("dec.decoder.") and key.endswith(".weight"))
        first = state[f"dec.decoder.{linears[0]}.weight"]
        mlp = MLPDecoderConfig(hidden_dim=first.shape[0], hidden_layers=len(linears) - 1, zero_bias_init=True)
        return SpotConfig(encoder=encoder, slot_attention=sa, decoder=None, mlp_decoder=mlp, orders=(RASTER,),
                          mlp_slot_projection="slot_proj.0.weight" in state)
    blocks = 1 + max(int(key.split(".")[2]) for key in state if key.startswith("dec.blocks."))
    width = state["input_proj.0.weight"].shape[0]
    decoder = AutoregressiveDecoderConfig(width=width, blocks=blocks, heads=a["num_heads"])
    return SpotConfig(encoder=encoder, slot_attention=sa, decoder=decoder, orders=orders)


def spot_state(state: Mapping[str, Tensor], model: Spot) -> tuple[dict[str, Tensor], list[str]]:
    """The authors' SPOT state dict renamed onto ``model``'s keys: (mapped, unused)."""
    parts = {}
    sa, unused = map_keys(select(state, "slot_attn."), prefix_renames(SLOT_ATTENTION_RENAMES))
    unused = ["slot_attn." + k for k in unused]
    if "initializer.queries" in sa:
        sa["initializer.queries"] = sa["initializer.queries"].unsqueeze(0)
    parts["slot_attention."] = sa
    if model.config.decoder is not None:
        dec, dec_unused = transformer_decoder_state(select(state, "dec."))
        if "bos_tokens" in state:
            dec["bos"] = state["bos_tokens"].reshape(state["bos_tokens"].shape[0], -1)
        for source, target in (("input_proj.", "input_projection."), ("slot_proj.", "slot_projection.")):
            dec.update({target + k: v for k, v in select(state, source).items()})
        parts["decoder."] = dec
    else:
        dec, dec_unused = map_keys(select(state, "dec."), prefix_renames({"pos_embed": "position", "decoder.": "mlp."}))
        if "position" in dec:
            dec["position"] = dec["position"].unsqueeze(1)
        parts["decoder."] = dec
        parts["slot_projection."] = select(state, "slot_proj.")
        unused += [k for k in state if k.startswith(("input_proj.", "bos_tokens"))]  # built, never used
    unused += ["dec." + k for k in dec_unused]
    for source, target in (("encoder.", "encoder."), ("second_encoder.", "target_encoder.")):
        vit = select(state, source)
        module = getattr(model, target[:-1])
        if not vit:
            continue
        if not isinstance(module, ViTEncoder):  # the authors' ViT maps onto a transformers ViT only
            unused += [source + k for k in vit]
            continue
        mapped, vit_unused = vit_state(vit, module.model.state_dict())
        parts[target + "model."] = mapped
        unused += [source + k for k in vit_unused]
    known = ("slot_attn.", "dec.", "bos_tokens", "input_proj.", "slot_proj.", "encoder.", "second_encoder.")
    unused += [k for k in state if not k.startswith(known)]
    return {prefix + k: v for prefix, part in parts.items() for k, v in part.items()}, unused


@dataclass
class SpotImport:
    model: Spot
    report: ImportReport
    stage: int


def import_spot(state: Mapping[str, Tensor], args: Mapping[str, Any] | None = None,
                encoder: EncoderConfig | None = None) -> SpotImport:
    """Build the slotlab SPOT model of an authors' state dict and load it.

    ``encoder``: the encoder config; None reads a DINO-style ViT off ``encoder.*``.
    Raises ConfigError when a slotlab parameter gets no value or a shape does not fit.
    """
    args = dict(args or {})
    if "slot_attn.slot_attention.project_k.weight" not in state:
        heads = sorted({k.split(".")[0] for k in state})[:6]
        raise ConfigError(f"not a SPOT checkpoint: no slot_attn.* weights (its model holds {heads}...)")
    stage = 2 if "slots_init.weight" in select(state, "slot_attn.") else 1
    if encoder is None:
        vit = select(state, "encoder.")
        if "cls_token" not in vit or "blocks.0.attn.qkv.weight" not in vit:
            raise ConfigError("the checkpoint holds no timm/DINO ViT under encoder.*: pass the encoder config")
        a = {**AUTHORS_DEFAULTS, **args}
        trainable = 0
        second = select(state, "second_encoder.")
        if second:  # stage 2: the blocks that differ from the frozen copy were fine-tuned
            depth = 1 + max(int(k.split(".")[1]) for k in vit if k.startswith("blocks."))
            tuned = [i for i in range(depth) if any(
                not torch.equal(v, second[k]) for k, v in vit.items() if k.startswith(f"blocks.{i}.") and k in second)]
            trainable = depth - min(tuned) if tuned else 0
        encoder = encoder_config(name="dino", image_size=a["image_size"], trainable_blocks=trainable)
        architecture = {"config": {"model_type": "vit", **vit_config(vit, a["vit_heads"], a["image_size"])}}
        architectures = {"encoder": architecture, "target_encoder": architecture}
    else:
        architectures = None
    config = spot_config(state, args, encoder)
    model = Spot(config, architectures)
    mapped, unused = spot_state(state, model)
    expected = model.state_dict()
    report = ImportReport(unused=unused)
    for key, value in mapped.items():
        if key not in expected:
            report.unused.append(key)
            continue
        if value.shape != expected[key].shape:
            raise ConfigError(f"{key}: the checkpoint's shape {tuple(value.shape)} does not fit slotlab's "
                              f"{tuple(expected[key].shape)}; check the training flags passed")
        report.mapped[key] = key  # slotlab key (the authors' names are in the module tables)
    buffers = {name for name, _ in model.named_buffers()}
    report.missing = [k for k in expected if k not in mapped and k not in buffers]
    report.defaults = [k for k in expected if k not in mapped and k in buffers]
    model.load_state_dict({**expected, **{k: v for k, v in mapped.items() if k in expected}})
    return SpotImport(model=model.eval(), report=report, stage=stage)
