"""A plain checkpoint of the dense model, for the tools that read a folder (llama.cpp's converter, a plain
pruning script, `certify --dense`): the given folder, or the embedded model written once into work/dense."""
from __future__ import annotations

from pathlib import Path


def dense_folder(model: str, work: Path) -> str:
    if model and Path(model).is_dir():
        return model
    out = Path(work) / "dense"
    if not (out / "config.json").exists():
        from optprune.checkpoints.model_io import load_model, model_source, save_model
        net, tok, _ = load_model(model)
        save_model(net, tok, out, model_source(model))
    return str(out)
