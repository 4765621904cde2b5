"""Sub-blocks of a layer problem as binary quadratic programs.

A sub-block picks rows R and a window C of input columns; every entry outside
the window keeps the status it has in a base mask (the rest is fixed).  With
z_u = 1 meaning unit u is *pruned* (a unit is one entry, or one column for the
structured pattern) and r_i = w_i * z_i the pruned residual of row i:

    sum_{i in R} r_i^T G r_i  =  z^T Q z + c^T z + const,
    Q = blockdiag_i diag(w_iC) G_CC diag(w_iC)          (structured: G_CC * (W_RC^T W_RC)),
    c = 2 diag(w_iC) G_CF r_iF,  const = sum_i r_iF^T G_FF r_iF,

subject to one cardinality equality per group (a row's window, an N:M group,
the whole block for per-layer / structured): sum_{u in g} z_u = p_g.
`p_g` is the base mask's count in that group, so the optimum of the sub-block is
directly comparable with the base mask.  The refit variant keeps the entries
themselves (see RefitBlock).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..patterns import Pattern, PatternError
from ..problem import LayerProblem


@dataclass
class BinaryQP:
    """min z^T Q z + c^T z + const  s.t.  sum_{u in g} z_u = p_g (z = 1: pruned)."""

    Q: np.ndarray
    c: np.ndarray
    const: float
    groups: list[tuple[np.ndarray, int]]

    @property
    def n(self) -> int:
        return self.Q.shape[0]

    def value(self, z: np.ndarray) -> float:
        z = np.asarray(z, dtype=float)
        return float(z @ self.Q @ z + self.c @ z + self.const)

    def feasible(self, z: np.ndarray) -> bool:
        z = np.asarray(z)
        return bool(np.all((z == 0) | (z == 1))) and all(int(z[g].sum()) == p for g, p in self.groups)

    def lmo(self, grad: np.ndarray) -> np.ndarray:
        """argmin_{s in [0,1]^n, group sums} grad^T s: the p_g smallest entries of each group."""
        s = np.zeros(self.n)
        for g, p in self.groups:
            s[g[np.argsort(grad[g], kind="stable")[:p]]] = 1.0
        return s


@dataclass
class SubBlock:
    """Where a BinaryQP sits in a layer: rows, window, base mask, unit -> entries map."""

    problem: LayerProblem
    pattern: Pattern
    rows: np.ndarray
    window: np.ndarray
    base_mask: torch.Tensor
    qp: BinaryQP
    unit_entries: list[list[tuple[int, int]]] = field(repr=False)

    def mask_from_units(self, z: np.ndarray) -> torch.Tensor:
        """The full-layer keep mask with the window of `rows` replaced by z."""
        mask = self.base_mask.clone()
        for u, entries in enumerate(self.unit_entries):
            for i, j in entries:
                mask[i, j] = not bool(round(z[u]))
        return mask

    def units_from_mask(self, mask: torch.Tensor) -> np.ndarray:
        m = mask.cpu().numpy()
        return np.array([0.0 if m[e[0]] else 1.0 for e in self.unit_entries])


def _window_groups(pattern: Pattern, window: np.ndarray, cols: int) -> None:
    if pattern.kind == "nm":
        if len(window) % pattern.m or window[0] % pattern.m or \
                not np.array_equal(window, np.arange(window[0], window[0] + len(window))):
            raise PatternError(f"an N:M window must be contiguous and aligned to M={pattern.m}")
    if len(np.unique(window)) != len(window) or window.min() < 0 or window.max() >= cols:
        raise PatternError("window columns must be distinct and inside the layer")


def build_subblock(problem: LayerProblem, pattern: Pattern, base_mask: torch.Tensor,
                   rows=None, window=None) -> SubBlock:
    """Sub-block of `problem` over `rows` x `window`, the rest fixed to `base_mask`."""
    problem.check_pattern(pattern)
    out_dim, cols = problem.shape
    base_mask = problem.check_mask_shape(base_mask).cpu()
    rows = np.arange(out_dim) if rows is None else np.atleast_1d(np.asarray(rows, dtype=int))
    window = np.arange(cols) if window is None else np.asarray(window, dtype=int)
    _window_groups(pattern, window, cols)
    W = problem.W.detach().cpu().double().numpy()
    G = problem.G.detach().cpu().double().numpy()
    fixed = np.setdiff1d(np.arange(cols), window)
    keep = base_mask.numpy()
    G_CC, G_CF = G[np.ix_(window, window)], G[np.ix_(window, fixed)]

    if pattern.kind == "structured":
        if pattern.group != 1:
            raise PatternError("exact sub-blocks of grouped columns are not supported: use group=1")
        if not (keep[:, window] == keep[:1, window]).all():
            raise PatternError("base mask is not a column mask")
        W_R = W[rows]
        r_F = W_R[:, fixed] * (~keep[rows][:, fixed])
        Q = G_CC * (W_R[:, window].T @ W_R[:, window])
        c = 2 * ((r_F @ G_CF.T) * W_R[:, window]).sum(0)
        const = float(((r_F @ G[np.ix_(fixed, fixed)]) * r_F).sum())
        units = [[(int(i), int(j)) for i in rows] for j in window]
        groups = [(np.arange(len(window)), int((~keep[rows[0], window]).sum()))]
        qp = BinaryQP(Q, c, const, groups)
        return SubBlock(problem, pattern, rows, window, base_mask, qp, units)

    nC = len(window)
    n = len(rows) * nC
    Q = np.zeros((n, n))
    c = np.zeros(n)
    const = 0.0
    groups, units = [], []
    for b, i in enumerate(rows):
        w_C = W[i, window]
        r_F = W[i, fixed] * (~keep[i, fixed])
        sl = slice(b * nC, (b + 1) * nC)
        Q[sl, sl] = w_C[:, None] * G_CC * w_C[None, :]
        c[sl] = 2 * w_C * (G_CF @ r_F)
        const += float(r_F @ G[np.ix_(fixed, fixed)] @ r_F)
        units += [[(int(i), int(j))] for j in window]
        pruned = ~keep[i, window]
        if pattern.kind == "nm":
            for s in range(0, nC, pattern.m):
                groups.append((np.arange(b * nC + s, b * nC + s + pattern.m), int(pruned[s:s + pattern.m].sum())))
        elif pattern.kind == "per-row":
            groups.append((np.arange(b * nC, (b + 1) * nC), int(pruned.sum())))
    if pattern.kind == "unstructured":
        groups = [(np.arange(n), int((~keep[np.ix_(rows, window)]).sum()))]
    qp = BinaryQP(Q, c, const, groups)
    return SubBlock(problem, pattern, rows, window, base_mask, qp, units)


def brute_force(qp: BinaryQP) -> tuple[float, np.ndarray]:
    """Enumerate every feasible z (tests only: n <= ~16)."""
    from itertools import combinations, product

    per_group = [[np.array(ch, dtype=int) for ch in combinations(g, p)] for g, p in qp.groups]
    best, best_z = np.inf, None
    for choice in product(*per_group):
        z = np.zeros(qp.n)
        for ch in choice:
            z[ch] = 1.0
        v = qp.value(z)
        if v < best:
            best, best_z = v, z
    return best, best_z
