"""Physical removal of MLP channels and attention KV groups, through a family's layouts.

Every block keeps the same numbers, so the config's width fields are simply the new
widths and the saved checkpoint loads with plain `from_pretrained`."""
from __future__ import annotations

import torch

from .base import ArchitectureError, ModelAdapter


def _linear(block, name: str) -> torch.nn.Linear:
    return block.get_submodule(name)


def _replace(block, name: str, rows: torch.Tensor | None = None, cols: torch.Tensor | None = None,
             weight: torch.Tensor | None = None) -> None:
    """Swap linear `name` for one holding the given rows/columns (or `weight`)."""
    lin = _linear(block, name)
    w = lin.weight.data
    w = w[rows] if rows is not None else w
    w = (w[:, cols] if cols is not None else w) if weight is None else weight.to(lin.weight)
    new = torch.nn.Linear(w.shape[1], w.shape[0], bias=lin.bias is not None, dtype=w.dtype, device=w.device)
    new.weight.data.copy_(w)
    if lin.bias is not None:
        new.bias.data.copy_(lin.bias.data[rows] if rows is not None else lin.bias.data)
    parent, _, attr = name.rpartition(".")
    setattr(block.get_submodule(parent) if parent else block, attr, new)


def mlp_width(block, adapter: ModelAdapter) -> int:
    if adapter.mlp is None:
        raise ArchitectureError(f"structured pruning needs the MLP layout of {adapter.model_type}; "
                                "this family has none (use unstructured, per-row or N:M)")
    return _linear(block, adapter.mlp.output).in_features


def shrink_mlp(block, adapter: ModelAdapter, keep: torch.Tensor, out_weight: torch.Tensor | None = None) -> int:
    """Keep MLP channels `keep`; the output linear gets `out_weight` (out x len(keep)) if given."""
    width, layout = mlp_width(block, adapter), adapter.mlp
    keep = keep.to(_linear(block, layout.output).weight.device)
    rows = torch.cat([keep + k * width for k in range(layout.fused)])
    for name in layout.inputs:
        _replace(block, name, rows=rows)
    _replace(block, layout.output, cols=keep, weight=out_weight)
    return len(keep)


def attention_layout(block, adapter: ModelAdapter) -> tuple[int, int, int]:
    """(KV groups, query heads per group, head_dim) of a block's self-attention."""
    if adapter.attention is None:
        raise ArchitectureError(f"{adapter.model_type}: attention heads cannot be removed ({adapter.notes})")
    a = adapter.attention
    hd = block.get_submodule(a.module).head_dim
    k, q = _linear(block, a.k).out_features, _linear(block, a.q).out_features
    return k // hd, q // k, hd


def shrink_attention(block, adapter: ModelAdapter, keep_groups: torch.Tensor,
                     o_weight: torch.Tensor | None = None) -> int:
    """Keep whole KV groups (their key/value head and the query heads that share it); query head h
    reads KV head h // n_rep, so group g owns o columns [g n_rep hd, (g+1) n_rep hd)."""
    n_kv, n_rep, hd = attention_layout(block, adapter)
    a = adapter.attention
    keep_groups = keep_groups.to(_linear(block, a.o).weight.device)
    offs = torch.arange(hd, device=keep_groups.device)
    kv_rows = (keep_groups[:, None] * hd + offs).flatten()
    q_heads = (keep_groups[:, None] * n_rep + torch.arange(n_rep, device=keep_groups.device)).flatten()
    q_rows = (q_heads[:, None] * hd + offs).flatten()
    _replace(block, a.q, rows=q_rows)
    _replace(block, a.k, rows=kv_rows)
    _replace(block, a.v, rows=kv_rows)
    _replace(block, a.o, cols=q_rows, weight=o_weight)
    return len(keep_groups)


def parameter_matched_split(block, adapter: ModelAdapter, sparsity: float) -> tuple[float, float]:
    """(MLP, attention) sparsities that remove a share `sparsity` of the block's parameters.

    With P_g parameters per KV group (its q/k/v rows and o columns) and P_c per MLP channel:
    g = round(s n_kv) groups (fewer when they alone exceed the budget; at least one kept;
    none when the family's attention cannot shrink), then c = round((s P - g P_g) / P_c)
    channels.  Returned as fractions that `Pattern.pruned_per_row` maps back to g and c."""
    width, layout = mlp_width(block, adapter), adapter.mlp
    p_channel = sum(_linear(block, n).weight.numel() for n in (*layout.inputs, layout.output)) / width
    if adapter.attention is None:
        return (min(int(sparsity * width + 0.5), width - 1) + 0.5) / width, 0.0
    n_kv = attention_layout(block, adapter)[0]
    a = adapter.attention
    p_group = sum(_linear(block, n).weight.numel() for n in (a.q, a.k, a.v, a.o)) / n_kv
    budget = sparsity * (n_kv * p_group + width * p_channel)
    groups = min(int(sparsity * n_kv + 0.5), n_kv - 1)
    while groups > 0 and groups * p_group > budget:
        groups -= 1
    channels = min(int((budget - groups * p_group) / p_channel + 0.5), width - 1)
    return (channels + 0.5) / width, (groups + 0.5) / n_kv


def shrink_to_state(block, adapter: ModelAdapter, state: dict) -> None:
    """Shrink a dense block so that a saved (structured-pruned) state dict fits it."""
    if adapter.mlp is not None:
        saved = state.get(adapter.mlp.output + ".weight")
        if saved is not None and saved.shape[1] != mlp_width(block, adapter):
            shrink_mlp(block, adapter, torch.arange(saved.shape[1]))
    if adapter.attention is not None:
        saved = state.get(adapter.attention.k + ".weight")
        n_kv, _, hd = attention_layout(block, adapter)
        if saved is not None and saved.shape[0] != n_kv * hd:
            shrink_attention(block, adapter, torch.arange(saved.shape[0] // hd))


def block_widths(block, adapter: ModelAdapter) -> dict:
    """A block's structured widths: MLP channels and KV groups (None where the family has no such layout)."""
    return dict(mlp=mlp_width(block, adapter) if adapter.mlp is not None else None,
                kv_groups=attention_layout(block, adapter)[0] if adapter.attention is not None else None)


def set_structured_config(net, adapter: ModelAdapter) -> None:
    """Record the shrunk widths in the config so the model can be rebuilt: when every block has the same
    widths, those (plain `from_pretrained` rebuilds it); else the largest, and every block's in
    `optprune_block_widths` (an allocation's non-uniform shares), which optprune's loader shrinks to."""
    blocks = adapter.blocks(net)
    widths = [block_widths(block, adapter) for block in blocks]
    if adapter.mlp is not None:
        setattr(net.config, adapter.mlp.width_field, max(w["mlp"] for w in widths))
    if adapter.attention is not None:
        _, n_rep, hd = attention_layout(blocks[0], adapter)
        n_kv = max(w["kv_groups"] for w in widths)
        net.config.head_dim = hd
        net.config.num_key_value_heads, net.config.num_attention_heads = n_kv, n_kv * n_rep
    if any(w != widths[0] for w in widths):
        net.config.optprune_block_widths = widths


def shrink_to_widths(net, adapter: ModelAdapter, widths: list[dict]) -> None:
    """Shrink each block of a model built at the largest widths to its recorded `optprune_block_widths`."""
    for block, w in zip(adapter.blocks(net), widths):
        if w["mlp"] is not None and w["mlp"] != mlp_width(block, adapter):
            shrink_mlp(block, adapter, torch.arange(w["mlp"]))
        if w["kv_groups"] is not None and w["kv_groups"] != attention_layout(block, adapter)[0]:
            shrink_attention(block, adapter, torch.arange(w["kv_groups"]))
