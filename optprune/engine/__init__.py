"""The block-wise engine (capture, Grams, walk, streamed evaluation): no architectures, no methods."""
from .activations import ActivationStore, parse_memory
from .capture import BlockCalls, call_block, capture_block_calls, replay_head
from .evaluate import eval_windows, head_nll, streamed_perplexity, window_nll
from .pages import release_file_pages
from .grams import DenseTargetGrams, DenseTargetHooks, GramHooks, accumulate_gram, finish_gram
from .reconstruct import BlockReconstruction
from .state import ResumeState, StaleStateError, model_digest, tensor_digest, windows_digest
from .walk import Engine

__all__ = ["ActivationStore", "BlockCalls", "BlockReconstruction", "DenseTargetGrams", "DenseTargetHooks", "Engine",
           "GramHooks", "ResumeState", "StaleStateError", "accumulate_gram", "finish_gram", "call_block",
           "capture_block_calls", "eval_windows", "head_nll", "parse_memory", "replay_head", "streamed_perplexity", "window_nll",
           "model_digest", "release_file_pages", "tensor_digest", "windows_digest"]
