"""SPOT (gkakogeorgiou/spot) key names -> slotlab's modules.

The authors' ``SPOT`` module holds ``encoder.*`` (a timm ViT), ``second_encoder.*`` (stage
2's frozen copy), ``slot_attn.*``, ``input_proj.*``, ``slot_proj.*``, ``bos_tokens``
(9, 1, 1, d) and ``dec.*`` (``tf_dec.*`` in older runs): a ``TransformerDecoder`` or an
``MlpDecoder``. Each function here maps one part; what it cannot place is returned as
unused, never dropped silently.
"""

from __future__ import annotations

import re

from torch import Tensor

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


def map_keys(state: dict[str, Tensor], renames) -> tuple[dict[str, Tensor], list[str]]:
    """Apply the first matching (pattern, replacement) to each key; unmatched keys are unused."""
    mapped, unused = {}, []
    for key, value in state.items():
        for pattern, replacement in renames:
            new, count = re.subn(pattern, replacement, key)
            if count:
                mapped[new] = value
                break
        else:
            unused.append(key)
    return mapped, unused


def transformer_decoder_state(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """The authors' ``TransformerDecoder`` state dict -> the block stack of
    :class:`slotlab.nn.decoders.autoregressive.AutoregressiveDecoder` (``blocks.*``, ``norm.*``).

    Returns (mapped, unused); the stored causal masks are dropped as derived, not unused.
    """
    kept = {k: v for k, v in state.items() if not _DECODER_DERIVED.match(k)}
    return map_keys(kept, _DECODER_RENAMES)
