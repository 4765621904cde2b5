"""Perplexity in the standard protocol, streamed through the engine one block at a time.

Non-overlapping windows of the whole token stream; ppl = exp(mean over windows of the mean
next-token NLL).  Without BOS a window is `seqlen` tokens (seqlen - 1 predictions); with BOS
(families trained always to see it) a window is BOS + `seqlen - 1` tokens, every one predicted.
Streaming: all windows pass block 0, then block 1, ... (one block on the accelerator); the
model's own head (final norm, lm_head, soft-capping) then runs on the last block's output."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .capture import replay_head


def eval_windows(ids: torch.Tensor, seqlen: int, bos_id: int | None = None, max_windows: int = 0) -> torch.Tensor:
    """(n, seqlen) windows; with bos_id each is BOS + seqlen - 1 tokens of the stream."""
    step = seqlen - (bos_id is not None)
    n = len(ids) // step
    n = min(n, max_windows) if max_windows else n
    if n == 0:
        raise ValueError(f"text has {len(ids)} tokens, fewer than one window of {seqlen}")
    windows = ids[: n * step].reshape(n, step)
    if bos_id is not None:
        windows = torch.cat([torch.full((n, 1), bos_id, dtype=windows.dtype), windows], 1)
    return windows


def window_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean next-token NLL of each window (row of x) under `logits`."""
    logits = logits[:, :-1].float()
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="none")
    return nll.reshape(len(x), -1).mean(1)


def perplexity_of(nlls: list[float], windows: torch.Tensor, tokens: int, bos: bool) -> dict:
    return {"ppl": math.exp(sum(nlls) / len(nlls)), "windows": len(nlls), "seqlen": windows.shape[1],
            "tokens": int(tokens), "bos": bos}


@torch.no_grad()
def streamed_perplexity(engine, ids: torch.Tensor, seqlen: int, bos_id: int | None = None,
                        max_windows: int = 0, progress=None) -> dict:
    """Perplexity of engine.net on `ids`, one block at a time on engine.device (module doc)."""
    windows = eval_windows(ids, seqlen, bos_id, max_windows)
    calls = engine.capture(windows, shard=False)
    last = engine.dense_pass(calls, (lambda b, block, inps: progress(b)) if progress else None)
    try:
        nlls = [float(window_nll(replay_head(engine.net, engine.adapter, windows[i:i + 1].to(engine.device),
                                             last.data[i:i + 1]), windows[i:i + 1].to(engine.device)))
                for i in range(len(windows))]
    finally:
        last.release()
    return perplexity_of(nlls, windows, len(ids), bos_id is not None)
