"""What the engine needs to know about a model family, and nothing about methods.

A `ModelAdapter` names where the decoder blocks live, whether windows start with BOS,
which linears of a block are pruned, which share an input (one Gram for the group),
and the structured layouts (MLP channels, attention KV groups) with the config fields
that record their widths.  Everything else the engine infers from the model's own
forward: each block's extra inputs (masks, rope, layer type) are recorded per block.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch


class ArchitectureError(ValueError):
    """A model the engine cannot walk (an encoder, no repeated blocks, no linears)."""


@dataclass(frozen=True)
class MlpLayout:
    """MLP channels c = 0..I-1: rows of each input linear, columns of the output linear.
    A fused input (Phi-3's gate_up_proj = [gate; up]) holds `fused` row blocks of I rows."""
    inputs: tuple[str, ...]
    output: str
    fused: int = 1
    width_field: str = "intermediate_size"


@dataclass(frozen=True)
class AttentionLayout:
    """Separate q/k/v/o projections under grouped-query attention: KV group g owns k/v rows
    [g hd, (g+1) hd), q rows of its n_rep query heads and the matching o columns."""
    q: str = "self_attn.q_proj"
    k: str = "self_attn.k_proj"
    v: str = "self_attn.v_proj"
    o: str = "self_attn.o_proj"
    module: str = "self_attn"


@dataclass(frozen=True)
class ModelAdapter:
    model_type: str
    blocks_path: str = "model.layers"
    window_bos: bool = False
    gram_groups: tuple[tuple[str, ...], ...] | None = None
    ignore: tuple[str, ...] = ()
    mlp: MlpLayout | None = None
    attention: AttentionLayout | None = None
    attention_module: str | None = None    # the block's attention submodule (None: the family does not say)
    inferred: bool = False
    notes: str = field(default="", compare=False)

    def blocks(self, net) -> torch.nn.ModuleList:
        """The decoder blocks, in order."""
        blocks = net.get_submodule(self.blocks_path)
        if not isinstance(blocks, torch.nn.ModuleList) or len(blocks) == 0:
            raise ArchitectureError(f"{type(net).__name__}: no decoder blocks at {self.blocks_path}")
        return blocks

    def targets(self, block) -> dict[str, torch.nn.Linear]:
        """The prunable linears of a block (every nn.Linear not on the ignore list)."""
        return {n: m for n, m in block.named_modules()
                if isinstance(m, torch.nn.Linear) and not any(n == i or n.startswith(i + ".") for i in self.ignore)}

    def is_attention(self, path: str) -> bool:
        """Whether the block's linear at `path` belongs to attention (else to the MLP)."""
        module = self.attention_module or (self.attention.module if self.attention is not None else None)
        if module is None:
            raise ArchitectureError(f"the {self.model_type or 'generic'} adapter does not say which layers are "
                                    f"attention: bound blocks:A-B instead")
        return path == module or path.startswith(module + ".")

    def place_outside_blocks(self, net, device) -> None:
        """Move everything but the blocks (embeddings, rotary, final norm, head) to `device`."""
        parent_path, _, name = self.blocks_path.rpartition(".")
        parent = net.get_submodule(parent_path) if parent_path else net
        blocks = getattr(parent, name)
        setattr(parent, name, torch.nn.ModuleList())
        try:
            net.to(device)
        finally:
            setattr(parent, name, blocks)

    def outside_blocks(self, net) -> list[torch.Tensor]:
        """The tensors of everything but the blocks (embeddings, final norm, head), each once."""
        inside = {id(t) for block in self.blocks(net) for t in block.state_dict(keep_vars=True).values()}
        seen = {id(t): t for t in net.state_dict(keep_vars=True).values() if id(t) not in inside}
        return [t.detach() for t in seen.values()]

    def with_inferred_blocks(self, net) -> "ModelAdapter":
        return replace(self, blocks_path=infer_blocks_path(net))


def infer_blocks_path(net) -> str:
    """The ModuleList of repeated blocks: the longest one whose class is in `_no_split_modules`
    (or, failing that, the longest ModuleList of one class)."""
    no_split = set(getattr(net, "_no_split_modules", None) or ())
    best = ("", 0)
    for fallback in (False, True):
        for name, mod in net.named_modules():
            if not isinstance(mod, torch.nn.ModuleList) or len(mod) < 1:
                continue
            kinds = {type(m).__name__ for m in mod}
            if len(kinds) == 1 and (fallback or kinds <= no_split) and len(mod) > best[1]:
                best = (name, len(mod))
        if best[0]:
            break
    if not best[0]:
        raise ArchitectureError(f"{type(net).__name__} has no repeated blocks (no ModuleList of decoder layers)")
    if "encoder" in best[0].split("."):
        raise ArchitectureError(f"{type(net).__name__} is an encoder ({best[0]}): optprune prunes decoder-only LMs")
    return best[0]
