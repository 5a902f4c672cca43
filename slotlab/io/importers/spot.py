"""SPOT (gkakogeorgiou/spot) key names -> slotlab's modules.

The authors' ``SPOT`` module holds ``encoder.*`` (a timm ViT), ``second_encoder.*`` (stage
2's frozen copy), ``slot_attn.*``, ``input_proj.*``, ``slot_proj.*``, ``bos_tokens``
(9, 1, 1, d) and ``dec.*`` (``tf_dec.*`` in older runs): a ``TransformerDecoder`` or an
``MlpDecoder``. Each function here maps one part; what it cannot place is returned as
unused, never dropped silently.

``map_slot_attention`` takes the weights of the authors' ``SlotAttentionEncoder`` (under
``slot_attn.`` in a checkpoint) and its constructor arguments, which the checkpoint does not
store (their training script's flags: iterations, heads, truncation, init method):

    imported = map_slot_attention(checkpoint["model"], {"num_iterations": 3}, prefix="slot_attn.")
    print(imported.report.summary()); module = imported.build()
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from slotlab.io.importers.base import Imported, map_keys, map_mlp_decoder, rename, select
from slotlab.nn.slot_attention import SlotAttentionConfig

__all__ = ["map_keys", "map_mlp_decoder", "map_slot_attention", "slot_attention_config", "transformer_decoder_state"]

# Authors' TransformerDecoder sub-module names -> slotlab's AutoregressiveDecoder.
_DECODER_RENAMES = (
    (r"^blocks\.(\d+)\.self_attn\.proj_([qkv])\.", r"blocks.\1.self_attention.\2."),
    (r"^blocks\.(\d+)\.self_attn\.proj_o\.", r"blocks.\1.self_attention.out."),
    (r"^blocks\.(\d+)\.encoder_decoder_attn\.proj_([qkv])\.", r"blocks.\1.cross_attention.\2."),
    (r"^blocks\.(\d+)\.encoder_decoder_attn\.proj_o\.", r"blocks.\1.cross_attention.out."),
    (r"^blocks\.(\d+)\.self_attn_layer_norm\.", r"blocks.\1.self_norm."),
    (r"^blocks\.(\d+)\.encoder_decoder_attn_layer_norm\.", r"blocks.\1.cross_norm."),
    (r"^blocks\.(\d+)\.ffn_layer_norm\.", r"blocks.\1.ffn_norm."),
    (r"^blocks\.(\d+)\.ffn\.([02])\.", r"blocks.\1.ffn.\2."),
    (r"^layer_norm\.", "norm."),
)
# The causal mask the authors store as a frozen parameter: slotlab builds it on the fly.
_DECODER_DERIVED = re.compile(r"^blocks\.\d+\.self_attn_mask$")


def transformer_decoder_state(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """The authors' ``TransformerDecoder`` state dict -> the block stack of
    :class:`slotlab.nn.decoders.autoregressive.AutoregressiveDecoder` (``blocks.*``, ``norm.*``).

    Returns (mapped, unused); the stored causal masks are dropped as derived, not unused.
    """
    kept = {k: v for k, v in state.items() if not _DECODER_DERIVED.match(k)}
    return map_keys(kept, _DECODER_RENAMES)


SLOT_ATTENTION_RENAMES = {
    "layer_norm.": "input_mlp.0.",
    "mlp.0.": "input_mlp.1.",
    "mlp.2.": "input_mlp.3.",
    "slot_attention.norm_inputs.": "norm_inputs.",
    "slot_attention.norm_slots.": "norm_slots.",
    "slot_attention.norm_mlp.": "norm_mlp.",
    "slot_attention.project_q.": "to_q.",
    "slot_attention.project_k.": "to_k.",
    "slot_attention.project_v.": "to_v.",
    "slot_attention.gru.": "gru.",
    "slot_attention.mlp.": "mlp.",
    "slots_init.weight": "initializer.queries",
    "slot_mu": "initializer.mu",
    "slot_log_sigma": "initializer.log_sigma",
}

# The recipe of SPOT's training script where the checkpoint is silent.
DEFAULTS = {"num_iterations": 3, "num_heads": 1, "truncate": "bi-level"}


def slot_attention_config(authors_config: Mapping[str, Any]) -> SlotAttentionConfig:
    """slotlab's configuration of ``SlotAttentionEncoder(**authors_config)``: LayerNorm and an
    MLP at the input width, a second LayerNorm, keys/values from the input width, keys scaled
    per head, softmax over heads x slots, mask summed over heads, eps 1e-8 per entry, no
    position embedding and no output projection."""
    a = {**DEFAULTS, **authors_config}
    init = {"embedding": "learned_queries", "shared_gaussian": "gaussian"}.get(a.get("init_method", "embedding"))
    if init is None:
        raise ValueError(f"SPOT config: init_method={a['init_method']!r} is not 'embedding' or 'shared_gaussian'")
    if a.get("drop_path", 0.0):
        raise ValueError("SPOT config: drop_path > 0 is not supported by slotlab's slot attention")
    try:
        return SlotAttentionConfig(
            input_dim=a["input_channels"], slot_dim=a["slot_size"], num_slots=a["num_slots"],
            iters=a["num_iterations"], mlp_hidden=a["mlp_hidden_size"], heads=a["num_heads"], eps=1e-8,
            input_mlp=True, input_mlp_hidden=a["input_channels"], position_embedding=False, kv_width="input",
            key_scale="head", softmax="joint", mask_heads="sum", eps_mode="entry", output_dim=None,
            init=init, truncation=a["truncate"],
        )
    except KeyError as err:
        raise ValueError(f"SPOT slot-attention config lacks {err.args[0]!r}") from None


def map_slot_attention(
    state_dict: Mapping[str, Tensor], authors_config: Mapping[str, Any] | None = None, prefix: str = ""
) -> Imported:
    """Map ``SlotAttentionEncoder`` weights onto :class:`~slotlab.nn.slot_attention.SlotAttention`.
    Sizes and the init method missing from ``authors_config`` are read off the weights."""
    source = select(state_dict, prefix)
    if "slot_attention.project_k.weight" not in source:
        raise ValueError(f"no SPOT slot attention under prefix {prefix!r}: {prefix}slot_attention.project_k.weight is absent")
    k = source["slot_attention.project_k.weight"]
    inferred = {
        "input_channels": k.shape[1], "slot_size": k.shape[0],
        "mlp_hidden_size": source["slot_attention.mlp.0.weight"].shape[0],
        "init_method": "embedding" if "slots_init.weight" in source else "shared_gaussian",
    }
    if "slots_init.weight" in source:
        inferred["num_slots"] = source["slots_init.weight"].shape[0]
    config = slot_attention_config({**inferred, **(authors_config or {})})
    return rename(source, SLOT_ATTENTION_RENAMES, config, convert={"initializer.queries": lambda t: t.unsqueeze(0)})
