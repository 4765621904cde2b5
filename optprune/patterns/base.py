"""A sparsity pattern owns its combinatorics; every solver asks it instead of branching on a kind.

A mask M is a boolean tensor shaped like W; True means *kept*.  Every pattern is described by
one *unit layout*: W (rows x cols) is viewed as a tensor (groups, units, entries) in which

    a unit   is a set of entries kept or pruned together (one entry; a column; a tile of rows),
    a group  is a set of units with an exact budget: p units pruned in every group.

Everything else is generic on that layout: projection of scores to the best valid mask
(`project`), the linear-minimisation oracle of the relaxed keep set (`lmo`), the mask check
(`check`), the unit and group ids the exact sub-blocks use, and the counts.  A pattern also says
how the problem decomposes (`row_block`: rows that form independent problems), which swaps keep it
feasible (`swap_span`) and whether a method may select it lazily in column spans
(`selection_span`).  A new pattern is one subclass in one file: its layout, its budget, its spec.

Ties in scores are broken by position (lower index kept), so a method on Q4-dequantised weights
(many equal magnitudes) is reproducible.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import ClassVar

import torch


class PatternError(ValueError):
    """Raised for a pattern that cannot be applied to a layer."""


PATTERNS: dict[str, type["Pattern"]] = {}


def stable_keep_top(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """Keep the `keep` largest entries along the last dim; ties -> lower index kept."""
    mask = torch.zeros_like(scores, dtype=torch.bool)
    if keep <= 0:
        return mask
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices
    mask.scatter_(-1, order[..., :keep], True)
    return mask


@dataclass(frozen=True)
class Pattern:
    """Base class; `Pattern(kind, sparsity, ...)` builds the registered subclass of that kind."""

    kind: str
    sparsity: float = 0.0
    n: int = 0
    m: int = 0
    group: int = 1

    KIND: ClassVar[str] = ""
    entrywise: ClassVar[bool] = True          # every unit is one entry
    removes_inputs: ClassVar[bool] = False    # units are whole input columns (the model can shrink)
    implies_sparsity: ClassVar[bool] = False  # the spec fixes the sparsity (N:M)
    budget_scope: ClassVar[str] = "local"     # "layer" | "row" | "local": where one budget lives

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if cls.KIND:
            PATTERNS[cls.KIND] = cls

    def __new__(cls, kind: str | None = None, *args, **kwargs):
        if cls is Pattern:
            if kind not in PATTERNS:
                raise PatternError(f"unknown pattern kind {kind!r}; expected one of {tuple(PATTERNS)}")
            cls = PATTERNS[kind]
        return object.__new__(cls)

    def __post_init__(self):
        if not (isinstance(self.sparsity, (int, float)) and math.isfinite(self.sparsity)
                and 0.0 <= self.sparsity < 1.0):
            raise PatternError(f"sparsity must lie in [0, 1), got {self.sparsity!r}")
        if self.group != 1 and not self.removes_inputs:
            raise PatternError("group > 1 is only for the structured pattern")

    @classmethod
    def parse(cls, spec: str, sparsity: float | None = None, default: float | None = None) -> "Pattern":
        """'unstructured' | 'per-row' | 'structured' | 'N:M' | 'row-block:H' (see each class's from_spec).
        `default` is the sparsity of a pattern that needs one when `sparsity` is None; N:M implies its
        own (1 - N/M) and refuses a different `sparsity`."""
        spec = spec.strip().lower()
        for kind_cls in PATTERNS.values():
            given = sparsity if sparsity is not None or kind_cls.implies_sparsity else default
            found = kind_cls.from_spec(spec, given)
            if found is not None:
                return found
        raise PatternError(f"unknown pattern {spec!r}; expected one of "
                           f"{', '.join(c.SPEC for c in PATTERNS.values())}")

    @classmethod
    def from_spec(cls, spec: str, sparsity: float | None) -> "Pattern | None":
        if spec != cls.KIND:
            return None
        if sparsity is None:
            raise PatternError(f"pattern {spec!r} needs a sparsity")
        return cls(cls.KIND, float(sparsity))

    @property
    def name(self) -> str:
        return self.kind

    # -- the layout (each subclass) ------------------------------------------------
    def check_shape(self, rows: int, cols: int) -> None:
        """Raise PatternError unless a rows x cols layer can carry the pattern."""

    def to_units(self, x: torch.Tensor) -> torch.Tensor:
        """(rows, cols) -> (groups, units, entries)."""
        raise NotImplementedError

    def from_units(self, t: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
        """(groups, units, entries) -> (rows, cols): the inverse of to_units."""
        raise NotImplementedError

    def pruned_per_group(self, rows: int, cols: int) -> int:
        """Units pruned in every group."""
        raise NotImplementedError

    # -- how the problem decomposes -------------------------------------------------
    row_block: ClassVar[int | None] = None     # rows that form independent problems (None: rows couple)

    def swap_span(self, cols: int) -> int | None:
        """Consecutive columns within which swapping one kept and one pruned entry of a row keeps the
        pattern (the whole row, an N:M group), or None when single-entry swaps are not moves of it."""
        return None

    def selection_span(self, cols: int) -> int | None:
        """Columns of one group when groups are local in the columns (N:M: M), else None."""
        return None

    @property
    def column_period(self) -> int:
        """Columns a unit or group repeats with (sub-block windows are aligned to it)."""
        return 1

    def keep_fraction(self, fraction: float) -> "Pattern | None":
        """The same pattern keeping `fraction` of every group's kept units (None: keeps nothing)."""
        return replace(self, sparsity=1 - (1 - self.sparsity) * fraction)

    # -- generic combinatorics ------------------------------------------------------
    def layout(self, rows: int, cols: int) -> tuple[int, int, int]:
        """(groups, units per group, entries per unit) of a rows x cols layer."""
        return tuple(self.to_units(torch.empty(rows, cols, dtype=torch.bool, device="meta")).shape)

    def pruned_total(self, rows: int, cols: int) -> int:
        groups, units, entries = self.layout(rows, cols)
        return groups * self.pruned_per_group(rows, cols) * entries

    def pruned_per_row(self, cols: int) -> int:
        """Entries pruned in each row (row-separable patterns) or in each row of a column mask."""
        return self.pruned_total(self.row_block or 1, cols) // (self.row_block or 1)

    def unit_scores(self, scores: torch.Tensor) -> torch.Tensor:
        """A unit's score is the sum of its entries' scores: (groups, units)."""
        return self.to_units(scores).sum(-1)

    def _expand(self, unit_mask: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
        entries = self.layout(rows, cols)[-1]
        return self.from_units(unit_mask[..., None].expand(*unit_mask.shape, entries), rows, cols).clone()

    def project(self, scores: torch.Tensor, pruned_per_group: int | None = None) -> torch.Tensor:
        """The valid keep mask of the highest unit scores (ties: lower index kept).
        pruned_per_group overrides the budget (a share of it, on a slice of columns)."""
        if scores.dim() != 2:
            raise PatternError(f"scores must be 2-D (out, in), got shape {tuple(scores.shape)}")
        rows, cols = scores.shape
        self.check_shape(rows, cols)
        unit = self.unit_scores(scores.float())
        p = self.pruned_per_group(rows, cols) if pruned_per_group is None else pruned_per_group
        return self._expand(stable_keep_top(unit, unit.shape[-1] - p), rows, cols)

    def lmo(self, grad: torch.Tensor, fixed: torch.Tensor | None = None) -> torch.Tensor:
        """argmin <grad, S> over the relaxed keep set {S in [0,1], at most the budget kept per group}
        (a vertex: the most negative unit gradients, never a positive one; ties in any order: a
        continuous oracle); `fixed` entries forced to 1."""
        rows, cols = grad.shape
        scores = -grad if fixed is None else torch.where(fixed, torch.full_like(grad, float("inf")), -grad)
        unit = self.unit_scores(scores)
        keep = unit.shape[-1] - self.pruned_per_group(rows, cols)
        idx = torch.topk(unit, keep, dim=-1, sorted=False).indices
        top = torch.zeros_like(unit, dtype=torch.bool).scatter_(-1, idx, True)
        return self._expand(top & (unit > 0), rows, cols)

    def check(self, mask: torch.Tensor) -> None:
        """Raise PatternError unless `mask` is a valid keep mask of this pattern."""
        rows, cols = mask.shape
        self.check_shape(rows, cols)
        units = self.to_units(mask.bool())
        if not bool((units == units[..., :1]).all()):
            raise PatternError(f"mask splits a unit of the {self.name} pattern")
        pruned = (~units[..., 0]).sum(-1)
        need = self.pruned_per_group(rows, cols)
        if not bool((pruned == need).all()):
            bad = sorted(set(pruned.tolist()) - {need})[:3]
            raise PatternError(f"mask is not {self.name}: a group prunes {bad} units, the pattern needs {need}")

    def complete(self, keep: torch.Tensor, free: torch.Tensor) -> torch.Tensor:
        """`keep` with units of `free` entries (whose being kept or pruned changes nothing, e.g. zero in both
        the dense model and the checkpoint) added, lowest index first, until each group keeps its budget: the
        mask a checkpoint's zeros mean when the dense model has zeros of its own.  A unit is added only if it
        holds no kept entry and all its entries are free; a group that cannot reach its budget so, or keeps
        more, is left as it was (`check` names it)."""
        rows, cols = keep.shape
        self.check_shape(rows, cols)
        units = self.to_units(keep.bool())
        candidates = ~units.any(-1) & self.to_units(free.bool()).all(-1)
        short = units.shape[1] - self.pruned_per_group(rows, cols) - units.all(-1).sum(-1, keepdim=True)
        added = candidates & (candidates.cumsum(-1) <= short) & (candidates.sum(-1, keepdim=True) >= short)
        return keep.bool() | self._expand(added, rows, cols)

    def unit_ids(self, rows: int, cols: int) -> torch.Tensor:
        """(rows, cols) ids of the unit each entry belongs to (entries of a unit share the id)."""
        groups, units, entries = self.layout(rows, cols)
        ids = torch.arange(groups * units).reshape(groups, units, 1).expand(groups, units, entries)
        return self.from_units(ids, rows, cols).clone()

    def group_ids(self, rows: int, cols: int) -> torch.Tensor:
        groups, units, entries = self.layout(rows, cols)
        ids = torch.arange(groups).reshape(groups, 1, 1).expand(groups, units, entries)
        return self.from_units(ids, rows, cols).clone()


def select_mask(scores: torch.Tensor, pattern: Pattern) -> torch.Tensor:
    """Keep mask of the highest scores that satisfies `pattern` (= pattern.project)."""
    return pattern.project(scores)


def check_mask(mask: torch.Tensor, pattern: Pattern) -> None:
    """Raise PatternError unless `mask` satisfies `pattern` exactly (= pattern.check)."""
    pattern.check(mask)
