"""Layer solvers (torch, batched over rows; GPU when the tensors live there)."""
from .base import METHODS, PruneResult, prune_layer
from . import baselines, sparsegpt, sparsefw, sparseswaps, maiht, spap, admm  # noqa: F401  (register methods)
from .baselines import DATA_FREE_MASKS
from .sparseswaps import swap_search

__all__ = ["DATA_FREE_MASKS", "METHODS", "PruneResult", "prune_layer", "swap_search"]
