"""What each block is called with: block 0's input for every window, and every block's own
extra arguments (attention mask, rope, layer type), recorded from the model's own forward.

The blocks are swapped for recorders that pass the hidden state through unchanged, so the
forward costs only the embeddings; on the first window every block records its arguments
(Gemma-2/3 alternate sliding and full attention with their own masks and rope bases), on the
others the walk stops at block 0.  Arguments are recorded for a batch of one and broadcast."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..adapters import ModelAdapter
from .activations import ActivationStore

CACHE_ARGS = ("past_key_values", "past_key_value", "cache", "layer_past")


class _Stop(Exception):
    pass


class _Recorder(torch.nn.Module):
    """Stands in for a block: hands each call to `on_call`, answers attribute reads as the block."""

    def __init__(self, inner, on_call):
        super().__init__()
        self.inner = inner
        self.on_call = on_call

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.inner, name)

    def forward(self, hidden, *args, **kwargs):
        return self.on_call(hidden, args, kwargs)


@dataclass
class BlockCalls:
    inputs: ActivationStore          # hidden states entering block 0, one row per window
    args: list[tuple]                # block b's positional arguments after the hidden state
    kwargs: list[dict]               # block b's keyword arguments (no cache)


def _without_cache(kwargs: dict) -> dict:
    kwargs = {k: v for k, v in kwargs.items() if k not in CACHE_ARGS}
    if "use_cache" in kwargs:
        kwargs["use_cache"] = False
    return kwargs


@torch.no_grad()
def capture_block_calls(net, adapter: ModelAdapter, windows: torch.Tensor, device,
                        budget: int | None = None, spill_dir=None) -> BlockCalls:
    """Run the model's own forward with recorders in place of its blocks (see module doc)."""
    blocks = adapter.blocks(net)
    n = len(blocks)
    calls = BlockCalls(None, [None] * n, [None] * n)
    window = [0]

    def recorder(b):
        def on_call(hidden, args, kwargs):
            if b == 0:
                if calls.inputs is None:
                    calls.inputs = ActivationStore((len(windows), *hidden.shape[1:]), hidden.dtype, budget, spill_dir)
                calls.inputs.data[window[0]] = hidden[0].detach().cpu()
            if calls.kwargs[b] is None:
                calls.args[b], calls.kwargs[b] = args, _without_cache(kwargs)
            if window[0] > 0 or b == n - 1:
                raise _Stop
            return hidden
        return on_call

    originals = list(blocks)
    for b in range(n):
        blocks[b] = _Recorder(originals[b], recorder(b))
    try:
        for window[0], w in enumerate(windows):
            try:
                net(w[None].to(device))
            except _Stop:
                pass
    finally:
        for b in range(n):
            blocks[b] = originals[b]
    return calls


def call_block(block, x: torch.Tensor, args: tuple, kwargs: dict) -> torch.Tensor:
    out = block(x, *args, **kwargs)
    return out[0] if isinstance(out, (tuple, list)) else out


def replay_head(net, adapter: ModelAdapter, window: torch.Tensor, last_hidden: torch.Tensor) -> torch.Tensor:
    """The model's logits for `window` given the last block's output: the model runs its own
    embeddings, final norm, head and soft-capping while its blocks replay the stored state.  Gradients flow
    to `last_hidden` when the caller enables them (the output Fisher)."""
    blocks = adapter.blocks(net)
    originals = list(blocks)
    last = len(blocks) - 1
    for b in range(len(blocks)):
        blocks[b] = _Recorder(originals[b], (lambda h, a, k: last_hidden.to(h)) if b == last else
                              (lambda h, a, k: h))
    try:
        return net(window).logits
    finally:
        for b in range(len(blocks)):
            blocks[b] = originals[b]
