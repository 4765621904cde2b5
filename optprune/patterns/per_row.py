"""Per-row: the same budget in every row, sum_j M_ij = k for all i (units: entries; groups: rows)."""
from __future__ import annotations

from typing import ClassVar

from .base import Pattern


class PerRow(Pattern):
    KIND: ClassVar[str] = "per-row"
    SPEC: ClassVar[str] = "per-row"
    budget_scope: ClassVar[str] = "row"
    row_block: ClassVar[int] = 1

    def to_units(self, x):
        return x.reshape(x.shape[0], x.shape[1], 1)

    def from_units(self, t, rows, cols):
        return t.reshape(rows, cols)

    def pruned_per_group(self, rows, cols):
        return int(self.sparsity * cols)

    def swap_span(self, cols):
        return cols
