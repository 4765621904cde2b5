"""Calibration activations under a memory budget: in RAM, or memory-mapped on disk.

The pipeline holds two (nsamples, seqlen, hidden) buffers (a block's inputs and
outputs).  When one would exceed `budget_bytes`, it is a file-backed tensor
(torch.from_file, shared mapping) in `spill_dir`.  The OS pages it in and out,
so RAM use stays bounded while the code sees an ordinary tensor.  Batches move
to the accelerator only for the block's forward pass.
"""
from __future__ import annotations

import itertools
import math
from pathlib import Path

import torch

_ids = itertools.count()


class ActivationStore:
    def __init__(self, shape: tuple[int, ...], dtype: torch.dtype, budget_bytes: int | None = None,
                 spill_dir: str | Path | None = None):
        numel = math.prod(shape)
        nbytes = numel * torch.empty((), dtype=dtype).element_size()
        self.path = None
        if budget_bytes is None or nbytes <= budget_bytes:
            self.data = torch.empty(shape, dtype=dtype)
        else:
            if spill_dir is None:
                raise ValueError("activations exceed --max-memory and no spill folder was given")
            Path(spill_dir).mkdir(parents=True, exist_ok=True)
            self.path = Path(spill_dir) / f"acts{next(_ids)}.bin"
            self.data = torch.from_file(str(self.path), shared=True, size=numel, dtype=dtype).view(shape)

    @property
    def spilled(self) -> bool:
        return self.path is not None

    def __len__(self) -> int:
        return self.data.shape[0]

    def like(self) -> "ActivationStore":
        """An empty store of the same shape, budget decision and folder."""
        out = ActivationStore.__new__(ActivationStore)
        out.path = None
        if self.spilled:
            out.path = self.path.with_name(f"acts{next(_ids)}.bin")
            out.data = torch.from_file(str(out.path), shared=True, size=self.data.numel(),
                                       dtype=self.data.dtype).view(self.data.shape)
        else:
            out.data = torch.empty_like(self.data)
        return out

    def release(self) -> None:
        self.data = None
        if self.path is not None and self.path.exists():
            self.path.unlink()


def parse_memory(text: str) -> int | None:
    """'8GiB', '500MB', '1e9' -> bytes; '' -> None (no budget)."""
    text = (text or "").strip()
    if not text:
        return None
    units = {"kib": 2 ** 10, "mib": 2 ** 20, "gib": 2 ** 30, "kb": 1e3, "mb": 1e6, "gb": 1e9, "b": 1}
    unit = next((u for u in units if text.lower().endswith(u)), "")
    try:
        size = float(text[: len(text) - len(unit)]) * units.get(unit, 1)
    except ValueError:
        size = float("nan")
    if not size > 0 or size == float("inf"):
        raise ValueError(f"max_memory {text!r}: give a positive size like 8GiB, 500MB or 1e9 bytes")
    return int(size)
