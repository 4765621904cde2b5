"""Render docs/formulations.md from the statements the code solves (their docstrings, their sizes
on an example, the exact-method registry and the pattern classes), so the guide cannot drift.

    python -m optprune.formulation_guide > docs/formulations.md
"""
from __future__ import annotations

import inspect
import textwrap

import numpy as np

INTRO = """# The layer problem and its formulations

*This page is generated from the code (`python -m optprune.formulation_guide > docs/formulations.md`);
a test fails when it differs from what the code states.*

A linear layer `y = W x` (W is `out x d`) sees calibration inputs `X` (`d x T`); `G = X X^T`.
Pruning chooses a keep mask `M` (True = kept) and new weights `W_hat` supported on `M`:

    f(M, W_hat) = ||(W - W_hat) X||_F^2 = tr((W - W_hat) G (W - W_hat)^T).

Every formulation below is built once, as array data (`formulations.Statement`); HiGHS
(highspy), cvxpy and Pyomo only emit and solve that statement (`formulations.backends`).
Each solver returns the one result type (`optprune.result.Result`: mask True = kept, objective,
proven lower bound, status in one vocabulary: `heuristic`, `optimal`, `time_limit`,
`iteration_limit`, `infeasible`).
"""


def _doc(obj) -> str:
    return textwrap.indent(inspect.cleandoc(obj.__doc__ or ""), "    ")


def _example():
    """A 2 x 6 per-row sub-block at 50%: the sizes quoted for every statement."""
    from .exact.subblock import build_subblock
    from .patterns import Pattern
    from .problem import random_problem

    prob = random_problem(2, 6, seed=0)
    pat = Pattern("per-row", 0.5)
    return prob, build_subblock(prob, pat, pat.project(prob.W.abs()))


def _size(st) -> str:
    return (f"{st.kind}: {st.n} variables ({int(st.integer.sum())} integer), {st.A.shape[0]} rows"
            f"{', quadratic objective' if st.Q is not None else ''}")


def _statements():
    from formulations import allocation, l0, mask, penalty, refit

    prob, block = _example()
    W, G = prob.float64()
    d = np.diag(G)
    data = block.refit_data(block.value(block.keep_units(block.base_mask)))
    m = np.array([1, 1, 1, 0, 0, 0], float)
    return [
        ("Mask integer program", mask.mask_ip, mask.mask_ip(block.qp), "enumeration (tests); via its MILP or OA"),
        ("Exact MILP linearisation", mask.mask_milp, mask.mask_milp(block.qp), "HiGHS, cvxpy, Pyomo (.lp/.mps)"),
        ("Convex relaxation", mask.mask_relaxation, mask.mask_relaxation(block.qp), "HiGHS QP, cvxpy (Clarabel)"),
        ("Outer-approximation master", mask.mask_oa_master, mask.mask_oa_master(block.qp), "HiGHS MILP + cuts"),
        ("Mask + refit integer program", refit.refit_ip, refit.refit_ip(data), "enumeration (tests); via OA"),
        ("Mask + refit OA master", refit.refit_oa_master, refit.refit_oa_master(data), "HiGHS MILP + cuts"),
        ("l0-penalised least squares (mAIHT)", l0.l0_penalized, l0.l0_penalized(W, G, 0.1, 10.0),
         "cvxpy / Pyomo with an MIQP solver; mAIHT descends it"),
        ("Penalty V-step (SPAP)", penalty.penalty_v_step, penalty.penalty_v_step(W, G, m, 1.0, d, 0.01),
         "HiGHS QP; SPAP's closed form"),
        ("Penalty m-step (SPAP)", penalty.penalty_m_step, penalty.penalty_m_step(W, d, 3, 1, 1.0),
         "HiGHS LP; SPAP's top-k"),
        ("Sparsity allocation across layers", allocation.allocation_milp,
         allocation.allocation_milp(_allocation_example()), "HiGHS MILP (proven optimum), cvxpy, Pyomo"),
    ]


def _allocation_example():
    from formulations.allocation import Allocation

    menu = np.array([0.4, 0.5, 0.6])
    pruned = np.round(np.array([[576 * 576], [576 * 1536]]) * menu).astype(int)
    return Allocation(["q_proj", "up_proj"], pruned, np.array([[1.0, 2.0, 4.0], [2.0, 3.0, 5.0]]),
                      budget=int(pruned[:, 1].sum()))


def _patterns_section() -> str:
    from .patterns import PATTERNS

    rows = ["| pattern | spec | unit | rows separate in blocks of | single-entry swaps |",
            "|---|---|---|---|---|"]
    for cls in PATTERNS.values():
        unit = "one entry" if cls.entrywise else "several entries"
        block = cls.row_block if isinstance(cls.row_block, int) else ("H" if cls.KIND == "row-block" else "no")
        swaps = "yes" if cls.entrywise else "no"
        rows.append(f"| {cls.KIND} | `{cls.SPEC}` | {unit} | {block} | {swaps} |")
    from .patterns import base
    return ("## Patterns\n\n" + _doc(base).strip("\n") + "\n\n" + "\n".join(rows) + "\n")


def _exact_section() -> str:
    from .exact import solve

    from .exact.solve import EXACT_METHODS
    rows = ["| exact method | problem | statement |", "|---|---|---|"]
    rows += [f"| `{m.name}` | {m.problem} | {m.statement} |" for m in EXACT_METHODS.values()]
    return "## Exact methods (`optprune certify --exact`)\n\n" + _doc(solve) + "\n\n" + "\n".join(rows) + "\n"


def _bounds_section() -> str:
    from .exact import bounds

    rows = ["| bound | problem | what is relaxed | rows |", "|---|---|---|---|"]
    rows += [f"| `{m.name}` | {m.problem} | {m.statement} | "
             f"{'independent rows only' if m.needs_independent_rows else 'any'} |" for m in bounds.BOUNDS.values()]
    return "## Bounds (`optprune.exact.bounds`)\n\n" + _doc(bounds) + "\n\n" + "\n".join(rows) + "\n"


def _full_row_section() -> str:
    from .exact import row_bounds
    from formulations.refit import perspective_relaxation

    return ("## Full-row bounds (`optprune certify --full-row-bounds`)\n\n" + _doc(row_bounds) + "\n\n"
            "The perspective relaxation as a statement — `formulations.refit.perspective_relaxation`:\n\n"
            + _doc(perspective_relaxation) + "\n\nThe QCR relaxation of a whole row is the sub-block statement "
            "`mask_relaxation(convex_reformulation(qp, w_i^2 lam))` with the row as its window; a test checks that "
            "the layer-scale solvers' bounds reach both statements' optima within 1%.\n\n"
            + _dnn_section())


def _dnn_section() -> str:
    from .exact import dnn
    from formulations import dnn as dnn_statement

    _, block = _example()
    rel = dnn_statement.dnn_relaxation(block.qp)
    return ("### The doubly nonnegative relaxation — `formulations.dnn.dnn_relaxation`\n\n"
            + _doc(dnn_statement) + f"\n\nExample (the 2 x 6 per-row sub-block): a {rel.size} x {rel.size} matrix "
            f"variable, {rel.A.shape[0]} linear rows, face of dimension {rel.face.shape[1]}. Emitted to cvxpy "
            "(`to_cvxpy`, Clarabel or SCS) on small instances; solved at full-row scale by "
            "`optprune.exact.dnn` (`dnn_row_bound`):\n\n" + _doc(dnn) + "\n")


def render() -> str:
    from formulations import allocation, l0, mask, penalty, refit, statement
    from .exact import subblock

    parts = [INTRO, "## Statements\n\n" + _doc(statement) + "\n",
             "## Sub-blocks\n\n" + _doc(subblock) + "\n"]
    modules = {mask.mask_ip: mask, refit.refit_ip: refit, l0.l0_penalized: l0, penalty.penalty_v_step: penalty,
               allocation.allocation_milp: allocation}
    for k, (title, builder, st, solved_by) in enumerate(_statements(), 1):
        if builder in modules:
            parts.append(f"### From `{modules[builder].__name__}`\n\n" + _doc(modules[builder]) + "\n")
        example = ("2 layers, a menu of 3 sparsities" if builder is allocation.allocation_milp
                   else "2 x 6 per-row sub-block at 50%")
        parts.append(f"#### {k}. {title} — `{builder.__module__}.{builder.__name__}`\n\n{_doc(builder)}\n\n"
                     f"Example ({example}): {_size(st)}. Solved by: {solved_by}.\n")
    parts += [_exact_section(), _bounds_section(), _full_row_section(), _patterns_section()]
    return "\n".join(parts)


if __name__ == "__main__":
    print(render(), end="")
