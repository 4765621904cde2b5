"""Declarative statements of the layer problems, each built once as array data (`Statement`);
HiGHS, cvxpy and Pyomo only emit and solve them (`backends`).

    mask      mask-only integer program, its exact MILP linearisation, relaxation, OA master
    refit     mask + refit integer program (big-M) and its OA master
    l0        l0-penalised least squares (the problem mAIHT descends)
    penalty   penalty form with alternating V- and m-steps (the problem SPAP descends)
"""
from .statement import Statement, StatementBuilder
from . import backends, l0, mask, penalty, refit

__all__ = ["Statement", "StatementBuilder", "backends", "l0", "mask", "penalty", "refit"]
