"""Unstructured: one budget for the whole layer, sum M = K (units: entries; one group)."""
from __future__ import annotations

from typing import ClassVar

from .base import Pattern


class Unstructured(Pattern):
    KIND: ClassVar[str] = "unstructured"
    SPEC: ClassVar[str] = "unstructured"
    budget_scope: ClassVar[str] = "layer"

    def to_units(self, x):
        return x.reshape(1, -1, 1)

    def from_units(self, t, rows, cols):
        return t.reshape(rows, cols)

    def pruned_per_group(self, rows, cols):
        return int(self.sparsity * rows * cols)

    def swap_span(self, cols):
        return cols          # a swap inside a row keeps the layer's count
