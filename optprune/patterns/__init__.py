"""Sparsity patterns: one class per pattern, each owning its combinatorics (see base.py)."""
from .base import PATTERNS, Pattern, PatternError, check_mask, select_mask, stable_keep_top
from .unstructured import Unstructured
from .per_row import PerRow
from .nm import NM
from .structured import Structured
from .row_block import RowBlock

__all__ = ["PATTERNS", "Pattern", "PatternError", "check_mask", "select_mask", "stable_keep_top",
           "Unstructured", "PerRow", "NM", "Structured", "RowBlock"]
