"""Declarative statements of the layer mask-selection problem.

Every formulation takes a sub-block (`optprune.exact.BinaryQP`, z = 1 means pruned)
or a row (w, G) and returns a modelling object that states the problem as written
in the docstrings; `optprune.exact` holds the solvers that certify them.

    integer_program     mask-only IP, its exact MILP linearisation, mask + refit IP (big-M)
    relaxation          convex relaxation (box + cardinality polytope)
    l0_penalized        l0-penalised least squares (the problem IHT / mAIHT attacks)
    penalty_alternating penalty form with alternating minimisation (SPAP-style)
    pyomo_export        the MILP linearisation as a Pyomo model, written to .lp / .mps
"""
