"""Physically remove MLP channels: gate/up lose rows, down loses the matching columns.

With the same number of channels kept in every block, `config.intermediate_size`
is simply the new width, so the saved checkpoint loads with plain `from_pretrained`.
"""
from __future__ import annotations

import torch

GATED = ("gate_proj", "up_proj", "down_proj")


def gated_mlp(block):
    mlp = getattr(block, "mlp", None)
    if mlp is None or not all(isinstance(getattr(mlp, n, None), torch.nn.Linear) for n in GATED):
        raise ValueError("structured pruning needs a gated MLP (mlp.gate_proj / up_proj / down_proj), "
                         f"got {type(block).__name__}")
    return mlp


def _sliced(lin: torch.nn.Linear, weight: torch.Tensor) -> torch.nn.Linear:
    out = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=lin.bias is not None,
                          dtype=lin.weight.dtype, device=lin.weight.device)
    out.weight.data.copy_(weight)
    return out


def shrink_mlp(block, keep: torch.Tensor, down_weight: torch.Tensor | None = None) -> int:
    """Keep channels `keep` (indices); down_proj gets `down_weight` (out x len(keep)) if given."""
    mlp = gated_mlp(block)
    keep = keep.to(mlp.down_proj.weight.device)
    for name in ("gate_proj", "up_proj"):
        lin = getattr(mlp, name)
        new = _sliced(lin, lin.weight.data[keep])
        if lin.bias is not None:
            new.bias.data.copy_(lin.bias.data[keep])
        setattr(mlp, name, new)
    down = mlp.down_proj
    w = down.weight.data[:, keep] if down_weight is None else down_weight.to(down.weight)
    new = _sliced(down, w)
    if down.bias is not None:
        new.bias.data.copy_(down.bias.data)
    mlp.down_proj = new
    if hasattr(mlp, "intermediate_size"):
        mlp.intermediate_size = len(keep)
    return len(keep)


def attention_layout(block) -> tuple[int, int, int]:
    """(KV groups, query heads per group, head_dim) of a block's self-attention."""
    attn = getattr(block, "self_attn", None)
    if attn is None or not all(isinstance(getattr(attn, n, None), torch.nn.Linear)
                               for n in ("q_proj", "k_proj", "v_proj", "o_proj")):
        raise ValueError(f"cannot prune attention heads of {type(block).__name__}")
    hd = attn.head_dim
    return attn.k_proj.out_features // hd, attn.q_proj.out_features // attn.k_proj.out_features, hd


def _rows(lin: torch.nn.Linear, rows: torch.Tensor) -> torch.nn.Linear:
    new = _sliced(lin, lin.weight.data[rows])
    if lin.bias is not None:
        new.bias.data.copy_(lin.bias.data[rows])
    return new


def shrink_attention(block, keep_groups: torch.Tensor, o_weight: torch.Tensor | None = None) -> int:
    """Keep whole KV groups (their key/value head and the query heads that share it); under GQA
    query head h reads KV head h // n_rep, so group g owns o_proj columns [g n_rep hd, (g+1) n_rep hd)."""
    n_kv, n_rep, hd = attention_layout(block)
    attn = block.self_attn
    keep_groups = keep_groups.to(attn.o_proj.weight.device)
    offs = torch.arange(hd, device=keep_groups.device)
    kv_rows = (keep_groups[:, None] * hd + offs).flatten()
    q_heads = (keep_groups[:, None] * n_rep + torch.arange(n_rep, device=keep_groups.device)).flatten()
    q_rows = (q_heads[:, None] * hd + offs).flatten()
    attn.q_proj = _rows(attn.q_proj, q_rows)
    attn.k_proj = _rows(attn.k_proj, kv_rows)
    attn.v_proj = _rows(attn.v_proj, kv_rows)
    o = attn.o_proj
    new = _sliced(o, o.weight.data[:, q_rows] if o_weight is None else o_weight.to(o.weight))
    if o.bias is not None:
        new.bias.data.copy_(o.bias.data)
    attn.o_proj = new
    return len(keep_groups)
