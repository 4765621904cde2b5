"""Perplexity in the standard protocol: non-overlapping seqlen windows of the
whole token stream, ppl = exp(sum_w mean_nll_w * seqlen / (n_windows * seqlen))."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


@torch.no_grad()
def perplexity(net, ids: torch.Tensor, seqlen: int = 2048, batch: int = 1, max_windows: int = 0,
               progress=None) -> dict:
    device = next(net.parameters()).device
    n = len(ids) // seqlen
    if max_windows:
        n = min(n, max_windows)
    if n == 0:
        raise ValueError(f"text has {len(ids)} tokens, fewer than one window of {seqlen}")
    windows = ids[: n * seqlen].reshape(n, seqlen)
    total = 0.0
    for s in range(0, n, batch):
        x = windows[s:s + batch].to(device)
        logits = net(x).logits[:, :-1].float()
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="none")
        total += float(nll.reshape(len(x), -1).mean(1).sum()) * seqlen
        if progress:
            progress(len(x))
    return {"ppl": math.exp(total / (n * seqlen)), "windows": n, "seqlen": seqlen, "tokens": int(len(ids))}
