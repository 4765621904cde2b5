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
