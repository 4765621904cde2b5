"""Structured: whole input columns are kept or pruned, M_ij = c_j; with group > 1, whole groups of
`group` consecutive columns (one KV group of attention heads).  Units: column groups; one group."""
from __future__ import annotations

from typing import ClassVar

from .base import Pattern, PatternError


class Structured(Pattern):
    KIND: ClassVar[str] = "structured"
    SPEC: ClassVar[str] = "structured"
    entrywise: ClassVar[bool] = False
    removes_inputs: ClassVar[bool] = True
    budget_scope: ClassVar[str] = "layer"

    def check_shape(self, rows, cols):
        if cols % self.group != 0:
            raise PatternError(f"column groups of {self.group} need the input size ({cols}) to be divisible")

    def to_units(self, x):
        rows, cols = x.shape
        return x.reshape(rows, cols // self.group, self.group).permute(1, 0, 2).reshape(1, cols // self.group, -1)

    def from_units(self, t, rows, cols):
        g = self.group
        return t.reshape(cols // g, rows, g).permute(1, 0, 2).reshape(rows, cols)

    def unit_scores(self, scores):
        g = self.group
        return scores.sum(0).reshape(scores.shape[1] // g, g).sum(1)[None]

    def pruned_per_group(self, rows, cols):
        return int(self.sparsity * (cols // self.group))

    @property
    def column_period(self):
        return self.group
