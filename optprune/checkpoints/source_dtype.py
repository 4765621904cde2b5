"""The output in its input checkpoint's dtype.

`--dtype` is the dtype of the forward passes: a float32 checkpoint pruned with bfloat16 passes is still saved as
float32.  While it is saved the model is cast to the input's dtype, and every entry the run left as it was (equal
to the input's value in the forward dtype) is the input's own value, read back from its safetensors: embeddings,
norms and heads bit for bit, and the kept weights of a mask-only method too.  An entry the run changed (a zero, a
SparseGPT update, a reconstruction) holds the value the run computed.  Afterwards the model is back in the forward
dtype, holding the same values as before (a cast down of what was cast up).  Only plain safetensors folders are
read back; a GGUF input (quantised), a hub id or a sparse-format checkpoint keeps the forward dtype."""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch

STORED = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}


def source_files(source: str) -> list[Path]:
    """The safetensors files of a plain checkpoint folder ([] for anything else)."""
    folder = Path(source)
    if not folder.is_dir() or not (folder / "config.json").is_file():
        return []
    config = json.loads((folder / "config.json").read_text())
    if "quantization_config" in config or "optprune_model_type" in config or "optprune_block_widths" in config:
        return []
    return sorted(folder.glob("*.safetensors"))


def stored_dtype(files: list[Path]) -> torch.dtype | None:
    """The dtype most of the checkpoint's floating tensors are stored in."""
    from safetensors import safe_open

    counts: dict[torch.dtype, int] = {}
    for file in files:
        with safe_open(str(file), "pt") as fh:
            for name in fh.keys():
                dtype = STORED.get(fh.get_slice(name).get_dtype())
                if dtype is not None:
                    counts[dtype] = counts.get(dtype, 0) + 1
    return max(counts, key=counts.get) if counts else None


@contextlib.contextmanager
def in_source_dtype(net, source: str):
    """`net` in the dtype of the checkpoint at `source` while the caller saves it (module doc)."""
    files = source_files(source)
    stored = stored_dtype(files) if files else None
    forward = next(net.parameters()).dtype
    if stored is None or stored == forward:
        yield net
        return
    try:
        restore_unchanged(net, files, stored, forward)
        yield net
    finally:
        net.to(forward)


@torch.no_grad()
def restore_unchanged(net, files: list[Path], stored: torch.dtype, forward: torch.dtype) -> None:
    """Cast every floating tensor of `net` to `stored`, taking the input's value wherever the run left an entry
    as the forward dtype had it (same shape only: a shrunk structured layer is cast as it is)."""
    from safetensors import safe_open

    tensors = dict(net.named_parameters()) | dict(net.named_buffers())
    for file in files:
        with safe_open(str(file), "pt") as fh:
            for name in fh.keys():
                held = tensors.pop(name, None)
                if held is None or not held.is_floating_point():
                    continue
                original = fh.get_tensor(name).to(held.device)
                cast = held.data.to(stored)
                if original.shape == held.shape:      # a zero the run made stays a zero, however small the input
                    unchanged = (held.data == original.to(forward)) & (held.data != 0)
                    cast = torch.where(unchanged, original.to(stored), cast)
                held.data = cast
    for held in tensors.values():               # tied heads, buffers the file does not hold
        if held.is_floating_point() and held.dtype != stored:
            held.data = held.data.to(stored)
