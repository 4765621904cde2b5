"""Diagnostic: how much of a Gemma-3 block output's squared norm sits on the BOS position.

Block reconstruction fits a block by the mean squared error of its outputs over every position; where one
position's output norm dwarfs the others', that loss is mostly about it. Prints, for blocks 1, 4, 8, 12, 17 of
the embedded Gemma-3-270M (float32, one 256-token window starting with BOS), the BOS position's share of the
summed squared norm and its norm against the median token's.
Usage: python validation/bos_norms.py
"""
import torch

from optprune.checkpoints.model_io import load_model


def main():
    net, tok, _ = load_model("gemma3-270m", dtype=torch.float32)
    ids = tok("The quick brown fox jumps over the lazy dog. " * 40, return_tensors="pt").input_ids[:, :256]
    if ids[0, 0] != tok.bos_token_id:
        ids = torch.cat([torch.tensor([[tok.bos_token_id]]), ids[:, :255]], 1)
    with torch.no_grad():
        hidden = net(ids, output_hidden_states=True).hidden_states
    for i in (1, 4, 8, 12, 17):
        n2 = (hidden[i][0] ** 2).sum(-1)
        print(f"block {i} output: BOS share of the summed squared norm {float(n2[0] / n2.sum()):.3f}; "
              f"BOS norm {float(n2[0].sqrt()):.1f}, median token norm {float(n2[1:].sqrt().median()):.1f}")


if __name__ == "__main__":
    main()
