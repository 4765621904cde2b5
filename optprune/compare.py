"""Comparator: objective of every method's mask, its gap to the exact optimum on
sub-blocks (HiGHS-certified), and to a relaxation lower bound on the whole layer.

For each method m with keep mask M_m and sub-block B (rows R x window C, the
rest of M_m fixed):  gap_B(m) = f_B(M_m) - min_B f_B  >= 0, where min_B is certified
by a registered exact method (`optprune.exact.EXACT_METHODS`: mask-only `milp` / `oa`, or
mask + refit `refit-oa`).  Status 'optimal' means lower bound = optimum within tolerance; any
other status reports the incumbent and the proven lower bound, never an optimum.  Each sub-block
also gets its convex-relaxation bound (HiGHS QP).  The layer bound is the Frank-Wolfe dual bound
of the convex relaxation (valid for the mask-only problem; weight updates can go below it).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from .exact import EXACT_METHODS, block_value, build_subblock, certify_block, relaxation_bound
from .exact.bounds import certifies
from .patterns import Pattern
from .problem import LayerProblem
from .solvers import PruneResult, prune_layer


@dataclass
class MethodRow:
    method: str
    rel_error: float              # f(W_hat) / tr(W G W^T), with the method's own weights
    rel_error_mask: float         # f(W * M) / tr(W G W^T), mask only
    seconds: float
    block_value: float = float("nan")      # f_B of the method's mask on the sub-block
    block_optimum: float = float("nan")    # certified optimum of the same sub-block (status optimal only)
    block_incumbent: float = float("nan")  # best value the exact method found
    block_lower_bound: float = float("nan")   # what it proved
    block_gap: float = float("nan")        # (value - optimum) / optimum (status optimal only)
    block_gap_at_most: float = float("nan")   # (value - lower bound) / value: the gap can be no larger
    block_status: str = ""
    block_relaxation: float = float("nan")    # convex-relaxation bound of the sub-block (mask only)
    gap_to_bound: float = float("nan")     # rel_error_mask / relaxation bound: within this factor of the optimum
    gap_qcr: float = float("nan")          # rel_error_mask / QCR bound: certified ratio to the mask-only optimum
    row_gap_histogram: dict = field(default_factory=dict)   # rows by certified ratio (error_i / QCR bound_i)
    gap_perspective: float = float("nan")  # refit error / perspective bound on `perspective_rows`
    gap_dnn: float = float("nan")          # mask-only error on `rows` / their DNN bound
    gap_certificate: float = float("nan")  # mask-only error on `rows` / row_certificate


@dataclass
class Comparison:
    layer: str
    pattern: str
    sparsity: float
    relaxation_bound: float                # relative units
    rows: list[int]
    window: list[int]
    exact_method: str = "milp"
    methods: list[MethodRow] = field(default_factory=list)
    qcr_bound: float = float("nan")        # relative units, every row (`exact.row_bounds.qcr_bound`)
    perspective_bound: float = float("nan")   # relative units, on perspective_rows (mask + refit)
    perspective_rows: list[int] = field(default_factory=list)
    full_row_seconds: float = float("nan")
    full_row_note: str = ""                # why the full-row bounds were asked for but not computed
    dnn_bound: float = float("nan")        # relative units, the DNN relaxation's bound summed over `rows`
    dnn_iterations: int = 0
    dnn_seconds: float = float("nan")
    dnn_note: str = ""                     # why the DNN bound was asked for but not computed
    row_certificate: float = float("nan")  # relative units: each of `rows`' larger bound of QCR and DNN, summed

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def to_markdown(self) -> str:
        head = (f"layer `{self.layer}`, pattern {self.pattern}, sparsity {self.sparsity:.2f}; "
                f"relaxation lower bound (mask only) {self.relaxation_bound:.6g}; "
                f"sub-block: rows {self.rows}, {len(self.window)} columns; exact method `{self.exact_method}` "
                f"({EXACT_METHODS[self.exact_method].problem} problem)\n\n")
        if self.full_row_note:
            head += f"Full-row bounds not computed: {self.full_row_note}\n\n"
        if self.qcr_bound == self.qcr_bound:
            head += (f"Full-row bounds ({self.full_row_seconds:.1f} s): QCR (mask only, every row) {self.qcr_bound:.6g}; "
                     f"perspective (mask + refit, rows {self.perspective_rows}) {self.perspective_bound:.6g}.\n\n")
        head += (f"Every gap is objective / lower bound (>= 1): the method is within that factor of the optimum; "
                 f"{self.verdict()}; '-' where a bound is too small to certify anything (under 0.1% of the "
                 "objective). A sub-block gap is (value - optimum) / optimum on the sub-block.\n\n")
        lines = ["| method | rel. error | rel. error (mask only) | gap to relaxation bound | sub-block value | "
                 "sub-block optimum | sub-block gap | status | seconds |",
                 "|---|---|---|---|---|---|---|---|---|"]
        for r in self.methods:
            optimum, gap = ((f"{r.block_optimum:.6g}", f"{r.block_gap:.3%}") if r.block_status == "optimal" else
                            (f">= {r.block_lower_bound:.6g} (best {r.block_incumbent:.6g})",
                             f"<= {r.block_gap_at_most:.3%}"))
            lines.append(f"| {r.method} | {r.rel_error:.6g} | {r.rel_error_mask:.6g} | {ratio(r.gap_to_bound)} | "
                         f"{r.block_value:.6g} | {optimum} | {gap} | {r.block_status} | {r.seconds:.2f} |")
        return head + "\n".join(lines) + "\n" + self._full_row_markdown() + self._dnn_markdown()

    def verdict(self) -> str:
        """Which mask-only bound of the whole layer the verdict rests on: the larger of the relaxation's and QCR's."""
        bounds = {"the relaxation bound": self.relaxation_bound, "the QCR bound": self.qcr_bound}
        name, value = max(((k, v) for k, v in bounds.items() if v == v), key=lambda kv: kv[1])
        return f"the layer's verdict rests on {name} ({value:.6g}), the larger mask-only bound"

    def _dnn_markdown(self) -> str:
        if self.dnn_note:
            return f"\nDNN bound not computed: {self.dnn_note}\n"
        if self.dnn_bound != self.dnn_bound:
            return ""
        gaps = "; ".join(f"{r.method} {ratio(r.gap_dnn)}" for r in self.methods)
        text = (f"\nDNN relaxation bound (mask only) on rows {self.rows}: {self.dnn_bound:.6g} "
                f"({self.dnn_iterations} ADMM steps per row, {self.dnn_seconds:.1f} s); gap to it: {gaps}.\n")
        if self.row_certificate == self.row_certificate:
            gaps = "; ".join(f"{r.method} {ratio(r.gap_certificate)}" for r in self.methods)
            text += (f"Certificate on rows {self.rows}, each row's larger bound of QCR and DNN: "
                     f"{self.row_certificate:.6g}; gap to it: {gaps}.\n")
        return text

    def _full_row_markdown(self) -> str:
        if self.qcr_bound != self.qcr_bound:
            return ""
        bins = list(self.methods[0].row_gap_histogram) if self.methods else []
        lines = ["", "| method | gap to QCR bound (mask only) | gap to perspective bound (refit) | rows by gap: "
                 + " / ".join(bins) + " |", "|---|---|---|---|"]
        for r in self.methods:
            counts = " / ".join(str(r.row_gap_histogram.get(b, 0)) for b in bins)
            lines.append(f"| {r.method} | {ratio(r.gap_qcr)} | {ratio(r.gap_perspective)} | {counts} |")
        return "\n".join(lines) + "\n"


def ratio(gap: float) -> str:
    """A gap (objective / bound) as printed: '-' where no bound certified anything."""
    return "-" if gap != gap else f"{gap:.4g}"


def layer_relaxation_bound(problem: LayerProblem, pattern: Pattern, iters: int = 300) -> float:
    """FW dual bound of the relaxation (absolute units); 0 for the structured pattern."""
    if not pattern.entrywise:
        return 0.0
    return prune_layer(problem, pattern, "sparsefw", iters=iters, warm_fraction=0.0).lower_bound or 0.0


def default_window(pattern: Pattern, cols: int, size: int, start: int = 0) -> np.ndarray:
    period = pattern.column_period
    size = max(period, size - size % period)
    start -= start % period
    start = min(start, cols - size)
    return np.arange(start, start + size)


def _certify(job):
    block, exact_method, time_limit, start = job
    return certify_block(block, exact_method, start, time_limit=time_limit)


def certify_many(jobs: list, workers: int = 1) -> list:
    """Solve (sub-block, exact method, time_limit, start keep units) jobs, fanned out over `workers` local processes, and,
    inside a torch.distributed run, over the ranks first (job k on rank k mod N, then gathered)."""
    from .parallel import map_over_ranks

    return map_over_ranks(jobs, lambda share: _certify_local(share, workers))


def _certify_local(jobs: list, workers: int) -> list:
    if workers <= 1 or len(jobs) <= 1:
        return [_certify(j) for j in jobs]
    from concurrent.futures import ProcessPoolExecutor
    import multiprocessing as mp

    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        return list(pool.map(_certify, jobs))


def compare(problem: LayerProblem, pattern: Pattern, results: dict[str, PruneResult],
            rows=(0,), window=None, window_size: int = 24, exact_method: str = "milp",
            time_limit: float = 60.0, bound_iters: int = 300, workers: int = 1,
            full_row_bounds: bool = False, dnn_iters: int = 0) -> Comparison:
    if dnn_iters < 0:
        raise ValueError(f"dnn_iters must be >= 0 (0: no DNN bound), got {dnn_iters}")
    problem.check_certifiable()
    rows = [int(r) for r in rows]
    window = default_window(pattern, problem.shape[1], window_size) if window is None else np.asarray(window)
    energy = problem.dense_energy()
    bound = layer_relaxation_bound(problem, pattern, bound_iters) / energy
    cmp = Comparison(problem.name, pattern.name, pattern.sparsity, bound, rows, [int(c) for c in window],
                     exact_method)
    blocks = {name: build_subblock(problem, pattern, res.mask, rows=rows, window=window)
              for name, res in results.items()}
    starts = {name: blocks[name].keep_units(res.mask) for name, res in results.items()}
    exacts = certify_many([(blocks[n], exact_method, time_limit, starts[n]) for n in results], workers)
    for (name, res), exact in zip(results.items(), exacts):
        mask_err = problem.relative_error(res.mask)
        row = MethodRow(name, problem.relative_error(W_hat=res.weight), mask_err, res.seconds,
                        gap_to_bound=mask_err / bound if certifies(mask_err, bound) else float("nan"))
        fill_block_certificate(row, blocks[name], starts[name], exact, exact_method, time_limit)
        cmp.methods.append(row)
    qcr_rows = add_full_row_bounds(cmp, problem, pattern, results, rows) if full_row_bounds else None
    if dnn_iters > 0:
        add_dnn_bounds(cmp, problem, pattern, results, rows, dnn_iters, qcr_rows)
    return cmp


def add_dnn_bounds(cmp: Comparison, problem: LayerProblem, pattern: Pattern, results: dict, rows,
                   iters: int, qcr_rows: np.ndarray | None = None) -> None:
    """The DNN relaxation's rigorous bound on each of `rows` (`optprune.exact.dnn.dnn_row_bound`, `iters` ADMM
    steps from the best method's mask) and each method's mask-only error on those rows over it; with the
    QCR bound of every row (`qcr_rows`, absolute), also the certificate max(QCR_i, DNN_i) summed over `rows`
    (each row's optimum is at least both, and the rows are independent)."""
    from .exact.bounds import prove
    from .exact.dnn import row_groups

    try:
        row_groups(problem, pattern)
    except ValueError as exc:
        cmp.dnn_note = str(exc)
        return
    t0, energy = time.perf_counter(), problem.dense_energy()
    best = min(zip(cmp.methods, results.values()), key=lambda pair: pair[0].rel_error_mask)[1].mask
    dnn = prove("dnn", problem, pattern, best, rows=cmp.rows, iters=iters).per_row
    cmp.dnn_bound, cmp.dnn_iterations = float(dnn.sum()) / energy, iters
    if qcr_rows is not None:
        cmp.row_certificate = float(np.maximum(dnn, qcr_rows[cmp.rows]).sum()) / energy
    for row, res in zip(cmp.methods, results.values()):
        errors = problem.row_errors(res.mask).double().cpu().numpy()[cmp.rows].sum() / energy
        errors = float(errors)
        row.gap_dnn = errors / cmp.dnn_bound if certifies(errors, cmp.dnn_bound) else float("nan")
        row.gap_certificate = (errors / cmp.row_certificate if certifies(errors, cmp.row_certificate)
                               else float("nan"))
    cmp.dnn_seconds = time.perf_counter() - t0


GAP_BINS = (1.0, 1.1, 1.25, 1.5, 2.0, 3.0, float("inf"))


def row_gap_histogram(errors: np.ndarray, bounds: np.ndarray) -> dict:
    """Rows counted by certified ratio error_i / bound_i, in the bins [1, 1.1), [1.1, 1.25), ... [3, inf)."""
    ratio = errors / np.maximum(bounds, 1e-300)
    edges = np.array(GAP_BINS)
    counts = np.histogram(np.clip(ratio, 1.0, 1e300), bins=np.append(edges[:-1], 1e301))[0]
    return {f"<{hi:g}" if hi != float("inf") else f">={lo:g}": int(c) for lo, hi, c in zip(edges, edges[1:], counts)}


def add_full_row_bounds(cmp: Comparison, problem: LayerProblem, pattern: Pattern, results: dict,
                        rows, max_seconds: float = 120.0) -> np.ndarray | None:
    """The QCR bound on every row (mask only) and the perspective bound on `rows` (mask + refit), with each
    method's certified ratio to them (`optprune.exact.row_bounds`); entrywise, symmetric problems only.
    Returns each row's QCR bound (absolute) when the rows are independent, else None."""
    from .exact.row_bounds import perspective_bound, qcr_bound, rows_independent, shared_diagonal

    if not pattern.entrywise or problem.dense_target:
        cmp.full_row_note = (f"they need an entrywise pattern, not {pattern.name}" if not pattern.entrywise else
                             "they bound the mask problem of (W, G), not a dense-target problem")
        return None
    t0, energy = time.perf_counter(), problem.dense_energy()
    W, G = problem.float64()
    lam = shared_diagonal(G, (W ** 2).mean(0), max_seconds=max_seconds)
    best = min(zip(cmp.methods, results.values()), key=lambda pair: pair[0].rel_error_mask)[1].mask
    qcr = qcr_bound(problem, pattern, lam, start=best)
    cmp.qcr_bound = qcr.value / energy
    rows = np.asarray(rows, int)
    separable = rows_independent(pattern)
    persp = perspective_bound(problem, pattern, lam, rows=rows, start=best) if separable else None
    cmp.perspective_bound = persp.value / energy if persp else float("nan")
    cmp.perspective_rows = rows.tolist() if persp else []
    for row, res in zip(cmp.methods, results.values()):
        row.gap_qcr = row.rel_error_mask / cmp.qcr_bound if certifies(row.rel_error_mask, cmp.qcr_bound) else float("nan")
        if separable:
            row.row_gap_histogram = row_gap_histogram(problem.row_errors(res.mask).double().cpu().numpy(), qcr.per_row)
            refit = float(problem.row_errors(W_hat=res.weight).double().cpu().numpy()[rows].sum())
            row.gap_perspective = persp.ratio(refit)
    cmp.full_row_seconds = time.perf_counter() - t0
    return qcr.per_row if separable else None


def fill_block_certificate(row: MethodRow, block, start, exact, exact_method: str, time_limit: float = 60.0) -> None:
    """What was proven on a method's sub-block: the optimum only when certified, else bound and incumbent; the
    relaxation's bound under the same time limit as each exact solve (--time-limit bounds every solve)."""
    value = block_value(block, start, exact_method)
    row.block_value, row.block_status = value, exact.status
    row.block_incumbent, row.block_lower_bound = exact.objective, exact.lower_bound
    row.block_gap_at_most = (value - exact.lower_bound) / max(abs(value), 1e-30)
    if exact.certified:
        row.block_optimum = exact.objective
        row.block_gap = (value - exact.objective) / max(abs(exact.objective), 1e-30)
    if EXACT_METHODS[exact_method].problem == "mask":
        row.block_relaxation = relaxation_bound(block.qp, time_limit).lower_bound


def run_methods(problem: LayerProblem, pattern: Pattern, methods, **options) -> dict[str, PruneResult]:
    out = {}
    for m in methods:
        out[m] = prune_layer(problem, pattern, m, **options.get(m, {}))
    return out

