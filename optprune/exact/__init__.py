"""Exact certification of sub-blocks with HiGHS, and relaxation lower bounds."""
from .subblock import BinaryQP, SubBlock, brute_force, build_subblock
from .solve import ExactResult, solve_mask, solve_mask_milp, solve_mask_oa, solve_refit_oa
from .relaxation import relaxation_bound, certified_lower_bound

__all__ = ["BinaryQP", "SubBlock", "brute_force", "build_subblock", "ExactResult", "solve_mask",
           "solve_mask_milp", "solve_mask_oa", "solve_refit_oa", "relaxation_bound", "certified_lower_bound"]
