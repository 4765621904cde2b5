"""Sparsity patterns and deterministic top-k mask selection.

A mask M is a boolean tensor shaped like W; True means *kept*.
Patterns:
  unstructured  one budget for the whole layer: sum M = K
  per-row       the same budget in every row: sum_j M_ij = k for all i
  N:M           in every row, each group of M consecutive inputs keeps N
  structured    whole input columns are kept or pruned: M_ij = c_j; with group > 1, whole
                groups of `group` consecutive columns (e.g. one KV group of attention heads)
Ties in scores are broken by position (lower flat index wins), so a
method on Q4-dequantised weights (many equal magnitudes) is reproducible.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

KINDS = ("unstructured", "per-row", "nm", "structured")


class PatternError(ValueError):
    """Raised for a pattern that cannot be applied to a layer."""


@dataclass(frozen=True)
class Pattern:
    kind: str
    sparsity: float
    n: int = 0
    m: int = 0
    group: int = 1      # structured: columns per unit

    def __post_init__(self):
        if self.kind not in KINDS:
            raise PatternError(f"unknown pattern kind {self.kind!r}; expected one of {KINDS}")
        if not (isinstance(self.sparsity, (int, float)) and math.isfinite(self.sparsity)
                and 0.0 <= self.sparsity < 1.0):
            raise PatternError(f"sparsity must lie in [0, 1), got {self.sparsity!r}")
        if self.kind == "nm":
            if not (0 < self.n < self.m):
                raise PatternError(f"N:M needs 0 < N < M, got {self.n}:{self.m}")
        if self.group < 1 or (self.group > 1 and self.kind != "structured"):
            raise PatternError("group > 1 is only for the structured pattern")

    @classmethod
    def parse(cls, spec: str, sparsity: float | None = None) -> "Pattern":
        """'unstructured' | 'per-row' | 'structured' | 'N:M' (sparsity implied by N:M)."""
        spec = spec.strip().lower()
        if ":" in spec:
            try:
                n, m = (int(s) for s in spec.split(":"))
            except ValueError:
                raise PatternError(f"cannot read N:M pattern {spec!r}") from None
            if m <= 0 or not (0 < n < m):
                raise PatternError(f"N:M needs 0 < N < M, got {spec!r}")
            return cls("nm", 1.0 - n / m, n, m)
        if sparsity is None:
            raise PatternError(f"pattern {spec!r} needs a sparsity")
        return cls(spec, float(sparsity))

    @property
    def name(self) -> str:
        return f"{self.n}:{self.m}" if self.kind == "nm" else self.kind

    def check_shape(self, rows: int, cols: int) -> None:
        if self.kind == "nm" and cols % self.m != 0:
            raise PatternError(f"N:M pattern {self.n}:{self.m} needs the input size ({cols}) "
                               f"to be divisible by M={self.m}")
        if cols % self.group != 0:
            raise PatternError(f"column groups of {self.group} need the input size ({cols}) to be divisible")

    def pruned_per_row(self, cols: int) -> int:
        """Number pruned in each row (per-row, N:M) or columns pruned (structured)."""
        if self.kind == "nm":
            return cols // self.m * (self.m - self.n)
        if self.kind == "structured":
            return self.group * int(self.sparsity * (cols // self.group))
        return int(self.sparsity * cols)

    def pruned_total(self, rows: int, cols: int) -> int:
        if self.kind == "unstructured":
            return int(self.sparsity * rows * cols)
        return rows * self.pruned_per_row(cols)


def _stable_keep_top(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """Keep the `keep` largest entries along the last dim; ties -> lower index kept."""
    mask = torch.zeros_like(scores, dtype=torch.bool)
    if keep <= 0:
        return mask
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices
    mask.scatter_(-1, order[..., :keep], True)
    return mask


def select_mask(scores: torch.Tensor, pattern: Pattern) -> torch.Tensor:
    """Keep mask of the highest scores that satisfies `pattern`."""
    if scores.dim() != 2:
        raise PatternError(f"scores must be 2-D (out, in), got shape {tuple(scores.shape)}")
    rows, cols = scores.shape
    pattern.check_shape(rows, cols)
    scores = scores.float()
    if pattern.kind == "unstructured":
        keep = rows * cols - pattern.pruned_total(rows, cols)
        return _stable_keep_top(scores.reshape(-1), keep).reshape(rows, cols)
    if pattern.kind == "per-row":
        return _stable_keep_top(scores, cols - pattern.pruned_per_row(cols))
    if pattern.kind == "nm":
        groups = scores.reshape(rows, cols // pattern.m, pattern.m)
        return _stable_keep_top(groups, pattern.n).reshape(rows, cols)
    # structured: a column group's score is the sum of its entries' scores
    g = pattern.group
    keep_groups = (cols - pattern.pruned_per_row(cols)) // g
    col_keep = _stable_keep_top(scores.sum(0).reshape(cols // g, g).sum(1), keep_groups).repeat_interleave(g)
    return col_keep.unsqueeze(0).expand(rows, cols).clone()


def check_mask(mask: torch.Tensor, pattern: Pattern) -> None:
    """Raise PatternError unless `mask` satisfies `pattern` exactly."""
    rows, cols = mask.shape
    mask = mask.bool()
    pruned = (~mask).sum().item()
    if pattern.kind == "unstructured":
        if pruned != pattern.pruned_total(rows, cols):
            raise PatternError(f"mask prunes {pruned}, pattern needs {pattern.pruned_total(rows, cols)}")
    elif pattern.kind == "per-row":
        per_row = (~mask).sum(1)
        if not bool((per_row == pattern.pruned_per_row(cols)).all()):
            raise PatternError("mask does not prune the same count in every row")
    elif pattern.kind == "nm":
        kept = mask.reshape(rows, cols // pattern.m, pattern.m).sum(-1)
        if not bool((kept == pattern.n).all()):
            raise PatternError(f"mask is not {pattern.n}:{pattern.m}")
    else:
        if not bool((mask == mask[:1]).all()) or (~mask[0]).sum().item() != pattern.pruned_per_row(cols):
            raise PatternError("mask is not a column (structured) mask of the right size")
        groups = mask[0].reshape(cols // pattern.group, pattern.group)
        if not bool((groups == groups[:, :1]).all()):
            raise PatternError(f"mask splits a column group of {pattern.group}")
