"""N:M: in every row, each group of M consecutive inputs keeps N (units: entries; groups: M-runs)."""
from __future__ import annotations

import re
from typing import ClassVar

from .base import Pattern, PatternError


class NM(Pattern):
    KIND: ClassVar[str] = "nm"
    SPEC: ClassVar[str] = "N:M"
    row_block: ClassVar[int] = 1
    implies_sparsity: ClassVar[bool] = True

    def __post_init__(self):
        super().__post_init__()
        if not (0 < self.n < self.m):
            raise PatternError(f"N:M needs 0 < N < M, got {self.n}:{self.m}")

    @classmethod
    def from_spec(cls, spec, sparsity):
        if not re.fullmatch(r"\s*-?\d+\s*:\s*-?\d+\s*", spec):
            return None
        n, m = (int(s) for s in spec.split(":"))
        if m <= 0 or not (0 < n < m):
            raise PatternError(f"N:M needs 0 < N < M, got {spec!r}")
        if sparsity is not None and abs(float(sparsity) - (1.0 - n / m)) > 1e-9:
            raise PatternError(f"sparsity {sparsity} contradicts {n}:{m}, which prunes {1 - n / m:.4g} of every "
                               "row: leave the sparsity out")
        return cls(cls.KIND, 1.0 - n / m, n, m)

    @property
    def name(self):
        return f"{self.n}:{self.m}"

    def check_shape(self, rows, cols):
        if cols % self.m != 0:
            raise PatternError(f"N:M pattern {self.n}:{self.m} needs the input size ({cols}) "
                               f"to be divisible by M={self.m}")

    def to_units(self, x):
        return x.reshape(-1, self.m, 1)

    def from_units(self, t, rows, cols):
        return t.reshape(rows, cols)

    def pruned_per_group(self, rows, cols):
        return self.m - self.n

    def swap_span(self, cols):
        return self.m

    def selection_span(self, cols):
        return self.m

    @property
    def column_period(self):
        return self.m

    def keep_fraction(self, fraction):
        n_fix = int(self.n * fraction)
        return NM(self.KIND, 1 - n_fix / self.m, n_fix, self.m) if n_fix else None
