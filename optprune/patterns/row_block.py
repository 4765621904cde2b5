"""Row blocks: vertical tiles of `height` rows x 1 column are kept or pruned together, the same number
in every block of `height` rows (vector-wise sparsity; height 1 is per-row).  Spec 'row-block:H'."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import Pattern, PatternError


@dataclass(frozen=True)
class RowBlock(Pattern):
    height: int = 2

    KIND: ClassVar[str] = "row-block"
    SPEC: ClassVar[str] = "row-block:H"
    entrywise: ClassVar[bool] = False

    def __post_init__(self):
        super().__post_init__()
        if self.height < 1:
            raise PatternError(f"row blocks need a height >= 1, got {self.height}")

    @classmethod
    def from_spec(cls, spec, sparsity):
        if not spec.startswith(cls.KIND):
            return None
        try:
            height = int(spec.split(":")[1]) if ":" in spec else 2
        except ValueError:
            raise PatternError(f"cannot read {spec!r}: use row-block:H") from None
        if sparsity is None:
            raise PatternError(f"pattern {spec!r} needs a sparsity")
        return cls(cls.KIND, float(sparsity), height=height)

    @property
    def name(self):
        return f"row-block:{self.height}"

    @property
    def row_block(self):
        return self.height

    def check_shape(self, rows, cols):
        if rows % self.height != 0:
            raise PatternError(f"row blocks of {self.height} need the output size ({rows}) to be divisible")

    def to_units(self, x):
        rows, cols = x.shape
        return x.reshape(rows // self.height, self.height, cols).transpose(1, 2)

    def from_units(self, t, rows, cols):
        return t.transpose(1, 2).reshape(rows, cols)

    def pruned_per_group(self, rows, cols):
        return int(self.sparsity * cols)
