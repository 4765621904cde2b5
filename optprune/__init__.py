"""optprune: LLM pruning as mathematical optimisation (MIP / QP), certified and at scale."""
from .patterns import Pattern, PatternError, select_mask, check_mask
from .problem import LayerProblem, ProblemError, load_layer_problems, random_problem
from .solvers import METHODS, PruneResult, prune_layer
from .config import PruneConfig
from .api import evaluate, prune
from .checkpoints import load_model, load_pretrained

__version__ = "0.1.0"
__all__ = ["Pattern", "PatternError", "select_mask", "check_mask", "LayerProblem", "ProblemError",
           "load_layer_problems", "random_problem", "METHODS", "PruneResult", "prune_layer",
           "PruneConfig", "prune", "evaluate", "load_model", "load_pretrained"]
