"""Perplexity in the standard protocol, streamed through the engine one block at a time.

Non-overlapping windows of the whole token stream; ppl = exp(mean over windows of the mean
next-token NLL).  Without BOS a window is `seqlen` tokens (seqlen - 1 predictions); with BOS
(families trained always to see it) a window is BOS + `seqlen - 1` tokens, every one predicted.
Streaming: all windows pass block 0, then block 1, ... (one block on the accelerator); the
model's own head (final norm, lm_head, soft-capping) then runs on the last block's output, 512 positions at a
time (`head_nll`): a 262k vocabulary (Gemma-3) holds 0.5 GiB of logits at once, not 2 GiB a window."""
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


HEAD_TOKENS = 512        # the head's logits are computed this many positions at a time (262k vocabularies)


def head_nll(net, adapter, window: torch.Tensor, last: torch.Tensor, chunk: int = HEAD_TOKENS) -> float:
    """Mean next-token NLL of one window (1, seqlen) from its last block's output (1, seqlen, hidden), the head
    run on `chunk` positions at a time: the final norm and soft-capping act per position, so the logits of a
    slice are the whole window's, and memory holds chunk x vocabulary floats, not seqlen x vocabulary."""
    total, n = 0.0, window.shape[1] - 1
    for s in range(0, n, chunk):
        e = min(s + chunk, n)
        logits = replay_head(net, adapter, window[:, s:e], last[:, s:e]).float()
        total += float(F.cross_entropy(logits[0], window[0, s + 1:e + 1], reduction="sum"))
    return total / n


@torch.no_grad()
def streamed_perplexity(engine, ids: torch.Tensor, seqlen: int, bos_id: int | None = None,
                        max_windows: int = 0, progress=None, head_progress=None) -> dict:
    """Perplexity of engine.net on `ids`, one block at a time on engine.device (module doc); `progress(b)` after
    each block; `head_progress(n windows)` gives the callable run after each window's head."""
    windows = eval_windows(ids, seqlen, bos_id, max_windows)
    calls = engine.capture(windows, shard=False)
    last = engine.dense_pass(calls, (lambda b, block, inps: progress(b)) if progress else None)
    nlls, step = [], head_progress(len(windows)) if head_progress is not None else None
    try:
        for i in range(len(windows)):
            nlls.append(head_nll(engine.net, engine.adapter, windows[i:i + 1].to(engine.device), last.data[i:i + 1]))
            if step is not None:
                step()
    finally:
        last.release()
    return perplexity_of(nlls, windows, len(ids), bos_id is not None)
