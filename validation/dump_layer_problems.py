"""Write real layer problems (weights + input Gram matrices) of chosen SmolLM2 blocks.

Same protocol as shared/data/layers: dense model, float32, 32 windows of 512 tokens
of the WikiText-2 validation text (random starts, seed 0); G is the raw sum of x x^T.
Keys: '<short>.weight', '<short>.gram' (short = q_proj, ..., down_proj), 'nsamples'.
Usage: python validation/dump_layer_problems.py --blocks 14 --out-dir runs/layers
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from safetensors.torch import save_file

from optprune.data import calibration_windows
from optprune.checkpoints.model_io import load_model
from optprune.api import dense_layer_problems


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--blocks", default="14")
    ap.add_argument("--nsamples", type=int, default=32)
    ap.add_argument("--seqlen", type=int, default=512)
    ap.add_argument("--data-dir", default="")
    ap.add_argument("--out-dir", default="runs/layers")
    args = ap.parse_args()
    blocks = [int(b) for b in args.blocks.split(",")]
    net, tok, _ = load_model(dtype=torch.float32)
    windows = calibration_windows(tok, "wikitext2", args.nsamples, args.seqlen, 0, args.data_dir)
    problems = dense_layer_problems(net, windows, blocks)
    Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    for b in blocks:
        tensors = {"nsamples": torch.tensor(args.nsamples * args.seqlen)}
        for key, (W, G) in problems.items():
            blk, name = key.split(".", 1)
            if int(blk) == b:
                short = name.split(".")[-1]
                tensors[f"{short}.weight"], tensors[f"{short}.gram"] = W.contiguous().clone(), G.contiguous().clone()
        path = Path(args.out_dir) / f"smollm2-135m_block{b:02d}.safetensors"
        save_file(tensors, str(path))
        print(path)


if __name__ == "__main__":
    main()
