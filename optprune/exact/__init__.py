"""Exact certification of sub-blocks with HiGHS, and relaxation lower bounds."""
from .subblock import SubBlock, brute_force, build_subblock
from .solve import (EXACT_METHODS, ExactMethod, block_value, certify_block, solve_block_refit_oa, solve_qp_milp,
                    solve_qp_oa)
from .relaxation import relaxation_bound
from formulations.mask import BinaryQP

__all__ = ["BinaryQP", "SubBlock", "brute_force", "build_subblock", "EXACT_METHODS", "ExactMethod", "block_value",
           "certify_block", "solve_block_refit_oa", "solve_qp_milp", "solve_qp_oa", "relaxation_bound"]
