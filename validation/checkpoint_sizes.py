"""Size on disk of SmolLM2-135M checkpoints: plain vs compressed-tensors bitmask formats, at 50% and 2:4.

Magnitude pruning (data-free, seconds) sets the zeros: the sizes depend on the pattern and the
sparsity, not on which weights are kept.  Each checkpoint is written by optprune's saver, read back
by optprune's loader (compressed-tensors' bitmask unpacking) and compared weight for weight.
Writes docs/results/checkpoint_sizes.{json,md}.

    python validation/checkpoint_sizes.py
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

import optprune
from optprune.adapters import adapter_for
from optprune.checkpoints.formats import DENSE, SAVE_FORMATS, stored_bytes, target_weights
from optprune.checkpoints.model_io import load_model, save_model

SETTINGS = [("unstructured", 0.5), ("per-row", 0.5), ("2:4", None), ("unstructured", 0.7)]


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.glob("*.safetensors"))


def one_setting(pattern: str, sparsity, dtype: torch.dtype, work: Path) -> list[dict]:
    net, tok, _ = load_model(dtype=dtype)
    optprune.prune(net, None, method="magnitude", pattern=pattern, sparsity=sparsity, device="cpu")
    rows = []
    weights = target_weights(net, adapter_for(net))
    sparsity = sum(int((w == 0).sum()) for w in weights.values()) / sum(w.numel() for w in weights.values())
    for fmt in SAVE_FORMATS:
        out = work / f"{pattern.replace(':', 'of')}-{sparsity}-{fmt}-{dtype}".replace("torch.", "")
        info = save_model(net, tok, out, "input", fmt)
        written = info["format"] if info["format"] != "plain" else DENSE
        back, _, _ = load_model(str(out), dtype=dtype)
        same = all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), back.state_dict().values()))
        rows.append(dict(pattern=pattern, sparsity=sparsity, dtype=str(dtype).replace("torch.", ""),
                         requested=fmt, format=info["format"], file_bytes=folder_bytes(out),
                         linear_bytes=stored_bytes(written, weights), dense_linear_bytes=stored_bytes(DENSE, weights),
                         round_trip_identical=same))
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for dtype in (torch.bfloat16, torch.float32):
            for pattern, sparsity in SETTINGS:
                rows += one_setting(pattern, sparsity, dtype, Path(work))
    out = Path("docs/results/checkpoint_sizes")
    out.with_suffix(".json").write_text(json.dumps(rows, indent=2))
    mb = 1e6
    lines = ["# Checkpoint size on disk: plain vs compressed-tensors formats (SmolLM2-135M)\n",
             "Magnitude pruning sets the zeros (the sizes depend only on pattern and sparsity); every checkpoint "
             "is written by `optprune prune`'s saver (`--save-format plain|compressed`) and read back by optprune's "
             "loader, weight for weight identical. Linear bytes: the 210 pruned linears (the embedding, tied to the "
             "head, and the norms stay dense). Command: `python validation/checkpoint_sizes.py`.\n",
             "| pattern | sparsity | dtype | --save-format | format written | safetensors MB | linears MB | linears vs dense | "
             "identical after reload |", "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['pattern']} | {r['sparsity']:.3f} | {r['dtype']} | {r['requested']} | {r['format']} | "
              f"{r['file_bytes'] / mb:.1f} | {r['linear_bytes'] / mb:.1f} | {r['linear_bytes'] / r['dense_linear_bytes']:.1%} | "
              f"{'yes' if r['round_trip_identical'] else 'NO'} |" for r in rows]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
