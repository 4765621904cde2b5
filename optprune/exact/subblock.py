"""Sub-blocks of a layer problem as binary quadratic programs.

A sub-block picks rows R and a window C of input columns; every unit of the pattern inside them is
free, every entry outside keeps the status it has in a base mask.  Units (`Pattern.unit_ids`) must lie
wholly inside the window; a unit that spans rows outside R (a column of the structured pattern, a
row-block tile) brings its rows in.  With z_u = 1 meaning unit u is pruned, B_i the (units x C)
matrix of row i's window weights per unit and r_iF row i's pruned residual outside the window:

    sum_{i in R} r_i^T G r_i  =  z^T Q z + c^T z + const,
    Q = sum_i B_i G_CC B_i^T,   c = 2 sum_i B_i G_CF r_iF,   const = sum_i r_iF^T G_FF r_iF,

subject to one cardinality equality per group of the pattern that the units meet:
sum_{u in g} z_u = p_g, p_g being the base mask's count there, so the sub-block optimum is directly
comparable with the base mask.

For a dense-target problem (f_i(v) = v^T G v - 2 b_i^T v + kappa_i, `LayerProblem`) row i's weights are
v = a_i - B_i^T z on the window (a_i: w_i on the window, the base mask's kept weights outside), so

    Q = sum_i B_i G_CC B_i^T,   c = -2 sum_i B_i (G a_i - b_i)_C,   const = sum_i a_i^T G a_i - 2 b_i^T a_i + kappa_i,

which is the formula above when b_i = G w_i and kappa_i = w_i^T G w_i.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from formulations.mask import BinaryQP
from formulations.refit import RefitData
from ..patterns import Pattern, PatternError
from ..problem import LayerProblem


@dataclass
class SubBlock:
    """Where a BinaryQP sits in a layer: rows, window, base mask, unit -> entries map."""

    problem: LayerProblem
    pattern: Pattern
    rows: np.ndarray
    window: np.ndarray
    base_mask: torch.Tensor
    qp: BinaryQP
    unit_entries: list[tuple[np.ndarray, np.ndarray]] = field(repr=False)   # (rows, cols) of each unit

    def layer_mask(self, keep_units: np.ndarray) -> torch.Tensor:
        """The full-layer keep mask with the sub-block's units set from `keep_units` (True = kept)."""
        mask = self.base_mask.clone()
        for keep, (i, j) in zip(np.asarray(keep_units, bool), self.unit_entries):
            mask[torch.as_tensor(i), torch.as_tensor(j)] = bool(keep)
        return mask

    def keep_units(self, mask: torch.Tensor) -> np.ndarray:
        """The sub-block's unit keep vector of a layer mask (True = kept)."""
        m = mask.cpu().numpy()
        return np.array([bool(m[i[0], j[0]]) for i, j in self.unit_entries])

    def value(self, keep_units: np.ndarray) -> float:
        """The sub-block objective of a unit keep vector."""
        return self.qp.value(1.0 - np.asarray(keep_units, float))

    def refit_value(self, keep_units: np.ndarray) -> tuple[float, np.ndarray]:
        """(sum of the sub-block rows' errors, their exact least-squares weights) of a unit keep vector."""
        V = self.problem.refit_exact(self.layer_mask(keep_units).numpy()[self.rows], self.rows)
        if self.problem.dense_target:
            return float(self.problem.errors64(V, self.rows).sum()), V
        W, G = self.problem.float64()
        D = W[self.rows] - V
        return float(((D @ G) * D).sum()), V

    def refit_data(self, upper_bound: float) -> RefitData:
        """The data of the mask + refit statements, with rigorous big-M from `upper_bound`."""
        W_all, G = self.problem.float64()
        W = W_all[self.rows]
        try:
            L_inv = np.linalg.inv(np.linalg.cholesky(G))
        except np.linalg.LinAlgError:
            raise ValueError("exact refit needs a positive definite G: dampen it first "
                             "(LayerProblem(W, problem.damped_gram(...)))") from None
        ginv_diag = (L_inv ** 2).sum(0)            # (G^-1)_jj, G = L L^T
        B, kappa = self.problem.linear64() if self.problem.dense_target else (None, None)
        if B is not None:                          # f_i(v) = (v - w*)^T G (v - w*) + r_i, r_i >= 0, w* = G^-1 b_i
            B, kappa = B[self.rows], kappa[self.rows]
            W_star = (L_inv.T @ (L_inv @ B.T)).T
        else:
            W_star = W
        unit_of = -np.ones(W.shape, dtype=int)
        row_pos = {int(r): b for b, r in enumerate(self.rows)}
        for u, (i, j) in enumerate(self.unit_entries):
            unit_of[[row_pos[int(r)] for r in i], j] = u
        free = (unit_of >= 0) | self.base_mask.numpy()[self.rows]
        big_m = np.abs(W_star) + np.sqrt(max(upper_bound, 0.0) * ginv_diag)[None, :] + 1e-9
        return RefitData(W, G, unit_of, free, big_m, self.qp.groups, self.qp.n, B, kappa, W_star)


def _units_in(pattern: Pattern, shape, rows: np.ndarray, window: np.ndarray):
    """Unit ids of the sub-block in order of appearance (rows, then window), their entries, and
    the rows they bring in."""
    unit_id = pattern.unit_ids(*shape).numpy()
    order = unit_id[np.ix_(rows, window)].reshape(-1)
    ids = order[np.sort(np.unique(order, return_index=True)[1])]
    inside = np.zeros(shape[1], bool)
    inside[window] = True
    entries = []
    for u in ids:
        i, j = np.nonzero(unit_id == u)
        if not inside[j].all():
            raise PatternError(f"the window splits a unit of the {pattern.name} pattern: align it to "
                               f"{pattern.column_period} columns")
        entries.append((i, j))
    all_rows = np.unique(np.concatenate([rows] + [i for i, _ in entries]))
    extra = np.setdiff1d(all_rows, rows)
    return ids, entries, np.concatenate([rows, extra])


def _row_units(W, i: int, entries, pos, width: int) -> tuple[list[int], np.ndarray]:
    """(the units row i holds, their (units x window) matrix of row i's window weights: B_i)."""
    units = [u for u, (ri, _) in enumerate(entries) if i in ri]
    B = np.zeros((len(units), width))
    for k, u in enumerate(units):
        ri, cj = entries[u]
        j = cj[ri == i]
        B[k, pos[j]] = W[i, j]
    return units, B


def _quadratic_terms(W, G, keep, rows, window, entries):
    """Q, c, const of the sub-block objective (see the module docstring)."""
    cols = W.shape[1]
    fixed = np.setdiff1d(np.arange(cols), window)
    G_CC, G_CF, G_FF = G[np.ix_(window, window)], G[np.ix_(window, fixed)], G[np.ix_(fixed, fixed)]
    pos = np.full(cols, -1)
    pos[window] = np.arange(len(window))
    n = len(entries)
    Q, c, const = np.zeros((n, n)), np.zeros(n), 0.0
    for i in rows:
        units, B = _row_units(W, i, entries, pos, len(window))
        r_F = W[i, fixed] * (~keep[i, fixed])
        Q[np.ix_(units, units)] += B @ G_CC @ B.T
        c[units] += 2 * B @ (G_CF @ r_F)
        const += float(r_F @ G_FF @ r_F)
    return Q, c, const


def _dense_target_terms(problem: LayerProblem, keep, rows, window, entries):
    """Q, c, const of a dense-target sub-block (module docstring)."""
    W, G = problem.float64()
    B, kappa = problem.linear64()
    pos = np.full(W.shape[1], -1)
    pos[window] = np.arange(len(window))
    n = len(entries)
    Q, c, const = np.zeros((n, n)), np.zeros(n), 0.0
    for i in rows:
        units, E = _row_units(W, i, entries, pos, len(window))
        a = W[i] * keep[i]
        a[window] = W[i, window]
        Ga = G @ a
        Q[np.ix_(units, units)] += E @ G[np.ix_(window, window)] @ E.T
        c[units] += -2 * E @ (Ga - B[i])[window]
        const += float(a @ Ga - 2 * B[i] @ a + kappa[i])
    return Q, c, const


def build_subblock(problem: LayerProblem, pattern: Pattern, base_mask: torch.Tensor,
                   rows=None, window=None) -> SubBlock:
    """Sub-block of `problem` over `rows` x `window`, the rest fixed to `base_mask`."""
    problem.check_pattern(pattern)
    out_dim, cols = problem.shape
    base_mask = problem.check_mask_shape(base_mask).cpu()
    pattern.check(base_mask)
    rows = np.arange(out_dim) if rows is None else np.atleast_1d(np.asarray(rows, dtype=int))
    window = np.arange(cols) if window is None else np.asarray(window, dtype=int)
    for name, idx, size in (("rows", rows, out_dim), ("window columns", window, cols)):
        if len(idx) == 0 or len(np.unique(idx)) != len(idx) or idx.min() < 0 or idx.max() >= size:
            raise PatternError(f"sub-block {name} must be distinct and inside the layer (0..{size - 1})")
    ids, entries, rows = _units_in(pattern, (out_dim, cols), rows, window)
    W, G = problem.float64()
    keep = base_mask.numpy()
    if problem.dense_target:
        Q, c, const = _dense_target_terms(problem, keep, rows, window, entries)
    else:
        Q, c, const = _quadratic_terms(W, G, keep, rows, window, entries)
    group_id = pattern.group_ids(out_dim, cols).numpy()
    unit_group = np.array([group_id[i[0], j[0]] for i, j in entries])
    pruned = np.array([not keep[i[0], j[0]] for i, j in entries])
    groups = []
    for g in unit_group[np.sort(np.unique(unit_group, return_index=True)[1])]:
        members = np.nonzero(unit_group == g)[0]
        groups.append((members, int(pruned[members].sum())))
    return SubBlock(problem, pattern, rows, window, base_mask, BinaryQP(Q, c, const, groups), entries)


def brute_force(qp: BinaryQP) -> tuple[float, np.ndarray]:
    """Enumerate every feasible z (tests only: n <= ~16); returns (optimum, z with 1 = pruned)."""
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
