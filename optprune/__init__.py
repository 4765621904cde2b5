"""optprune: LLM pruning as mathematical optimisation (MIP / QP), certified and at scale."""
from .patterns import Pattern, PatternError, select_mask, check_mask
from .problem import LayerProblem, ProblemError, load_layer_problems, random_problem
from .solvers import METHODS, PruneResult, prune_layer
from .config import PruneConfig
from .api import evaluate, prune


def load_pretrained(path: str = "", dtype=None):
    """(model, tokenizer) of a checkpoint folder or hub id, in any format optprune saves (dense with
    sparsity metadata, compressed-tensors bitmask formats, plain), or the default SmolLM2 when
    `path` is empty; float32 unless `dtype` is given."""
    import torch

    from .pipeline.model_io import load_model

    net, tok, _ = load_model(path, dtype=dtype or torch.float32)
    return net, tok

__version__ = "0.1.0"
__all__ = ["Pattern", "PatternError", "select_mask", "check_mask", "LayerProblem", "ProblemError",
           "load_layer_problems", "random_problem", "METHODS", "PruneResult", "prune_layer",
           "PruneConfig", "prune", "evaluate", "load_pretrained"]
