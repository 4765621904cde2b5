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


def parameter_matched_split(block, sparsity: float) -> tuple[float, float]:
    """(MLP, attention) sparsities that remove a share `sparsity` of the block's parameters.

    With P_g parameters per KV group (its q/k/v rows and o columns) and P_c per MLP channel
    (gate/up rows, down column): g = round(s n_kv) groups (fewer when they alone exceed the
    budget; at least one kept), then c = round((s P - g P_g) / P_c) channels.  Returned as
    fractions that `Pattern.pruned_per_row` maps back to exactly g groups and c channels."""
    mlp, attn = gated_mlp(block), block.self_attn
    n_kv = attention_layout(block)[0]
    width = mlp.down_proj.in_features
    p_group = sum(getattr(attn, n).weight.numel() for n in ("q_proj", "k_proj", "v_proj", "o_proj")) / n_kv
    p_channel = sum(getattr(mlp, n).weight.numel() for n in GATED) / width
    budget = sparsity * (n_kv * p_group + width * p_channel)
    groups = min(int(sparsity * n_kv + 0.5), n_kv - 1)
    while groups > 0 and groups * p_group > budget:
        groups -= 1
    channels = min(int((budget - groups * p_group) / p_channel + 0.5), width - 1)
    return (channels + 0.5) / width, (groups + 0.5) / n_kv
