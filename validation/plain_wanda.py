"""A plain Wanda-style pruning script, independent of optprune: what a user of another tool brings to
`optprune certify --dense --pruned`.  Activation norms from forward hooks on one whole-model forward of the
text's first tokens, each row's lowest |W| ||x|| pruned, `save_pretrained`.

Usage: python validation/plain_wanda.py MODEL_DIR TEXT_FILE OUT_DIR [--sparsity 0.5] [--tokens 2048]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch


def wanda_script(model_dir, text: str, out_dir, sparsity: float = 0.5, tokens: int = 96):
    """Prune every linear of the blocks (not the head) per row at `sparsity`, save to `out_dir`; the model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(model_dir)
    ids = tok(text, return_tensors="pt").input_ids[:, :tokens]
    norms, hooks = {}, []
    linears = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and "lm_head" not in n}
    for name, lin in linears.items():
        hooks.append(lin.register_forward_hook(
            lambda m, i, o, name=name: norms.__setitem__(name, norms.get(name, 0) + i[0].reshape(-1, i[0].shape[-1]).pow(2).sum(0))))
    with torch.no_grad():
        model(ids)
    for h in hooks:
        h.remove()
    with torch.no_grad():
        for name, lin in linears.items():
            score = lin.weight.abs() * norms[name].sqrt()[None, :]
            k = int(lin.weight.shape[1] * sparsity)
            idx = torch.sort(score, dim=1, stable=True).indices[:, :k]
            lin.weight.scatter_(1, idx, 0.0)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return model


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_dir"), ap.add_argument("text_file"), ap.add_argument("out_dir")
    ap.add_argument("--sparsity", type=float, default=0.5)
    ap.add_argument("--tokens", type=int, default=2048)
    a = ap.parse_args()
    wanda_script(a.model_dir, Path(a.text_file).read_text(), a.out_dir, a.sparsity, a.tokens)
