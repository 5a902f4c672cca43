"""MSF (Genera1Z/MultiScaleFusion) key names -> slotlab's quantisers and VQ-VAE.

The authors' ``VQVAEZMultiScale`` holds ``encode.*``, ``decode.*`` (their Sequentials),
``quant.0.*`` (the shared codebook) and ``quant.{1+n}.*`` (the codebook of scale n), each a
``QuantiZ`` with a frozen ``codebook.weight`` and a trained ``project`` Linear; ``LinearPinv``
holds ``weight`` and ``bias``. Keys that cannot be placed are returned as unused.

``map_slot_attention`` takes the weights of their ``SlotAttention`` (``aggregat.`` in their
SLATE / SlotDiffusion models) and its constructor arguments; ``init_prefix`` adds the learned
query means of their ``NormalSeparat`` initializer (``initializ.``):

    imported = map_slot_attention(state_dict, {"num_iter": 3, "trunc_bp": "bi-level"}, prefix="aggregat.")
    print(imported.report.summary()); module = imported.build()
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from slotlab.io.importers.base import Imported, map_keys, rename, select
from slotlab.nn.slot_attention import SlotAttentionConfig

# QuantiZ -> VectorQuantizer(codebook="projected"): the same names.
QUANTIZER_RENAMES = ((r"^(codebook\.weight|project\.(weight|bias))$", r"\1"),)
# VQVAEZMultiScale -> VQVAE with a "code"-variant MultiScaleQuantizer.
VQVAE_RENAMES = (
    (r"^encode\.", "encoder."),
    (r"^decode\.", "decoder."),
    (r"^quant\.0\.", "quantizer.shared."),
)


def vqvae_multiscale_state(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """The authors' multi-scale VQ-VAE state dict -> :class:`slotlab.nn.quantize.vqvae.VQVAE`
    with ``msf.variant='code'`` (returns mapped, unused). Their encoder and decoder
    Sequentials keep their indices, so the slotlab model must be built with the same layers."""
    specific = [(rf"^quant\.{n + 1}\.", f"quantizer.specific.{n}.") for n in range(len(state))]
    return map_keys(state, VQVAE_RENAMES + tuple(specific))


SLOT_ATTENTION_RENAMES = {
    "norm1kv.": "norm_inputs.",
    "norm1q.": "norm_slots.",
    "norm2.": "norm_mlp.",
    "proj_q.": "to_q.",
    "proj_k.": "to_k.",
    "proj_v.": "to_v.",
    "rnn.": "gru.",
    "ffn.": "mlp.",  # same layout: Linear, GELU, Dropout (when > 0), Linear
}

# MSF's configs: 7 slots, 3 iterations, bi-level truncation.
DEFAULTS = {"num_iter": 3, "trunc_bp": "bi-level", "dropout": 0.0, "num_slots": 7}


def slot_attention_config(authors_config: Mapping[str, Any]) -> SlotAttentionConfig:
    """slotlab's configuration of ``SlotAttention(**authors_config)``: LayerNorm on inputs and
    queries, no input MLP, no position embedding, one head, eps 1e-5 on the sum over inputs,
    GELU FFN; queries from learned means with the paper's annealed shared sigma."""
    a = {**DEFAULTS, **authors_config}
    if a["trunc_bp"] not in ("bi-level", None):
        raise ValueError(f"MSF config: trunc_bp={a['trunc_bp']!r} is not 'bi-level' or None")
    try:
        return SlotAttentionConfig(
            input_dim=a.get("kv_dim") or a["embed_dim"], slot_dim=a["embed_dim"], num_slots=a["num_slots"],
            iters=a["num_iter"], mlp_hidden=a["ffn_dim"], heads=1, eps=1e-5, eps_mode="sum",
            input_mlp=False, position_embedding=False, kv_width="input", mlp_activation="gelu",
            mlp_dropout=a["dropout"], output_dim=None, init="annealed_gaussian",
            truncation="bi-level" if a["trunc_bp"] == "bi-level" else "none",
        )
    except KeyError as err:
        raise ValueError(f"MSF slot-attention config lacks {err.args[0]!r}") from None


def map_slot_attention(
    state_dict: Mapping[str, Tensor],
    authors_config: Mapping[str, Any] | None = None,
    prefix: str = "",
    init_prefix: str | None = None,
) -> Imported:
    """Map the MSF code's ``SlotAttention`` onto :class:`~slotlab.nn.slot_attention.SlotAttention`.

    Sizes missing from ``authors_config`` are read off the weights. Without ``init_prefix``
    the query means are reported missing (pass the queries as ``slots=`` when calling). The
    authors' learned ``logstd`` is reported unused: slotlab anneals one shared sigma (paper).
    """
    source = select(state_dict, prefix)
    if "proj_k.weight" not in source:
        raise ValueError(f"no MSF slot attention under prefix {prefix!r}: {prefix}proj_k.weight is absent")
    inferred = {
        "embed_dim": source["proj_k.weight"].shape[0], "kv_dim": source["proj_k.weight"].shape[1],
        "ffn_dim": source["ffn.0.weight"].shape[0],
    }
    renames = dict(SLOT_ATTENTION_RENAMES)
    if init_prefix is not None:
        queries = select(state_dict, init_prefix)
        if "mean" not in queries:
            raise ValueError(f"no MSF query initializer under {init_prefix!r}: {init_prefix}mean is absent")
        inferred["num_slots"] = queries["mean"].shape[1]
        source.update({init_prefix + k: v for k, v in queries.items()})
        renames[init_prefix + "mean"] = "initializer.queries"
    config = slot_attention_config({**inferred, **(authors_config or {})})
    return rename(source, renames, config)
