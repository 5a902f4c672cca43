"""GLASS (visinf/glass) weights -> slotlab modules.

The authors release their slot attention as a diffusers folder ``multiheadstevesa/``
(``config.json`` with the constructor arguments of ``MultiHeadSTEVESA`` + weights). Their MLP
decoder is not released; :func:`map_mlp_decoder` maps the layout of their code.

    imported = map_slot_attention(state_dict, authors_config)   # config.json as a dict
    print(imported.report.summary()); module = imported.build()
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from slotlab.io.importers.base import Imported, map_mlp_decoder, rename, select
from slotlab.nn.slot_attention import SlotAttentionConfig, cartesian_grid

__all__ = ["map_slot_attention", "map_mlp_decoder", "slot_attention_config", "convert_position_grid"]

RENAMES = {
    "pos.projection.": "position.",
    "in_layer_norm.": "input_mlp.0.",
    "in_mlp.0.": "input_mlp.1.",
    "in_mlp.2.": "input_mlp.3.",
    "norm_inputs.": "norm_inputs.",
    "norm_slots.": "norm_slots.",
    "norm_mlp.": "norm_mlp.",
    "project_q.": "to_q.",
    "project_k.": "to_k.",
    "project_v.": "to_v.",
    "gru.": "gru.",
    "mlp.": "mlp.",
    "out_layer_norm.": "output.0.",
    "out_linear.": "output.1.",
    "slot_log_sigma": "initializer.log_sigma",
}


def slot_attention_config(authors_config: Mapping[str, Any]) -> SlotAttentionConfig:
    """slotlab's configuration of the authors' ``MultiHeadSTEVESA(**authors_config)``:
    cell-centre grid, the MLP at the input width, keys scaled by the full slot size, softmax
    over heads x slots, eps per entry; the mask averaged over heads as their evaluation does."""
    a = dict(authors_config)
    if a.get("init_mlp"):
        raise ValueError("GLASS config: init_mlp=True (slots initialised from boxes) has no slotlab counterpart")
    if a.get("bi_level") and not a.get("learnable_slot_init"):
        raise ValueError("GLASS config: bi_level=True needs learnable_slot_init=True, as in the authors' code")
    try:
        return SlotAttentionConfig(
            input_dim=a["input_size"], slot_dim=a["slot_size"], num_slots=a["num_slots"],
            iters=a["num_iterations"], mlp_hidden=a["mlp_hidden_size"], heads=a["num_heads"],
            eps=a.get("epsilon", 1e-8), input_mlp=True, input_mlp_hidden=a["input_size"],
            position_embedding=True, position_grid="centres", kv_width="input", key_scale="slot",
            softmax="joint", mask_heads="mean", eps_mode="entry", output_dim=a["out_size"],
            init="learned_queries" if a.get("learnable_slot_init") else "gaussian",
            truncation="bi-level" if a.get("bi_level") else "none",
        )
    except KeyError as err:
        raise ValueError(f"GLASS slot-attention config lacks {err.args[0]!r} (MultiHeadSTEVESA's config.json)") from None


def map_slot_attention(
    state_dict: Mapping[str, Tensor],
    authors_config: Mapping[str, Any],
    prefix: str = "",
    position_grid: str = "centres",
) -> Imported:
    """Map ``MultiHeadSTEVESA`` weights onto :class:`~slotlab.nn.slot_attention.SlotAttention`.

    ``pos.pe`` is not stored by slotlab (the grid is computed for any resolution); it is
    checked against the cell-centre grid. ``position_grid="corners"`` converts the position
    projection exactly to slotlab's end-point grid at the stored resolution instead.
    """
    source = select(state_dict, prefix)
    config = slot_attention_config(authors_config)
    pe = source.get("pos.pe")
    if pe is None:
        raise ValueError(f"GLASS slot attention: {prefix}pos.pe is missing, so the grid resolution is unknown")
    height, width = pe.shape[-2:]
    computed = cartesian_grid(height, width, "centres").T.reshape(1, 4, height, width)
    if not torch.allclose(pe.float(), computed, atol=1e-6):
        raise ValueError(f"GLASS slot attention: {prefix}pos.pe is not the cell-centre grid slotlab computes")
    checked = {"pos.pe": f"(checked: cell-centre grid {height}x{width}, computed by slotlab)"}
    slot_mu = "initializer.queries" if config.init == "learned_queries" else "initializer.mu"
    convert = {"position.weight": lambda t: t.reshape(t.shape[0], 4)}  # 1x1 conv -> Linear
    imported = rename(source, {**RENAMES, "slot_mu": slot_mu}, config, convert=convert, checked=checked)
    if position_grid != "centres":
        weight, bias = convert_position_grid(
            imported.state_dict["position.weight"], imported.state_dict["position.bias"],
            (height, width), "centres", position_grid,
        )
        imported.state_dict.update({"position.weight": weight, "position.bias": bias})
        imported.config.position_grid = position_grid
    return imported


def convert_position_grid(
    weight: Tensor, bias: Tensor, grid: tuple[int, int], source: str, target: str
) -> tuple[Tensor, Tensor]:
    """Position-projection weights for the ``target`` grid variant that give, at every cell of
    ``grid``, the embedding ``weight @ features + bias`` gives on the ``source`` variant.

    Both grids are affine in the cell's (row, column), so an exact solution exists; it is the
    least-squares one, computed in float64.
    """
    height, width = grid
    embedding = cartesian_grid(height, width, source).double() @ weight.double().T + bias.double()
    features = cartesian_grid(height, width, target).double()
    design = torch.cat([features, torch.ones(len(features), 1, dtype=torch.float64)], dim=1)
    solution = torch.linalg.lstsq(design, embedding, driver="gelsd").solution  # (5, C)
    return solution[:4].T.to(weight.dtype).contiguous(), solution[4].to(bias.dtype).contiguous()
