"""Declarative statements of the layer problems, each built once as array data (`Statement`);
HiGHS, cvxpy and Pyomo only emit and solve them (`backends`).

    mask      mask-only integer program, its exact MILP linearisation, relaxation, OA master
    refit     mask + refit integer program (big-M) and its OA master
    l0        l0-penalised least squares (the problem mAIHT descends)
    penalty   penalty form with alternating V- and m-steps (the problem SPAP descends)
    dnn       the doubly nonnegative relaxation of a row's binary QP
    allocation  the sparsity allocation MILP (a multiple-choice knapsack over priced menus)

A top-level package of the distribution, beside `optprune`: it imports numpy, scipy and the solvers'
own libraries, never optprune, which imports it (`optprune.exact`, the solvers' docstrings, the
docs renderer `optprune.formulation_guide`).
"""
from .statement import ExactSolveError, Statement, StatementBuilder
from . import backends, l0, mask, penalty, refit

__all__ = ["ExactSolveError", "Statement", "StatementBuilder", "backends", "l0", "mask", "penalty", "refit"]
