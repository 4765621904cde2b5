"""Architecture adapters: where the blocks are and how each family is shaped (no methods here)."""
from .base import ArchitectureError, AttentionLayout, MlpLayout, ModelAdapter, infer_blocks_path
from .families import ADAPTERS, adapter_for
from .structured import (attention_layout, block_widths, mlp_width, parameter_matched_split, set_structured_config,
                         shrink_attention, shrink_mlp, shrink_to_state, shrink_to_widths)

__all__ = ["ADAPTERS", "ArchitectureError", "AttentionLayout", "MlpLayout", "ModelAdapter", "adapter_for",
           "attention_layout", "infer_blocks_path", "mlp_width", "parameter_matched_split",
           "set_structured_config", "shrink_attention", "shrink_mlp", "shrink_to_state", "shrink_to_widths",
           "block_widths"]
