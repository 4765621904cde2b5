"""Diagnostic: why block reconstruction needs a channel-relative loss and a relative step on Gemma-3.

For SmolLM2-135M and Gemma-3-270M (float32, the first calibration window: 512 tokens of the C4 sample, seed 0,
BOS first where the family wants it), prints per block output (blocks 1, 4, 8, 12 and the last but one) the
share of the summed squared norm that its largest channel holds (positions after the first), and the RMS of
block 6's linears' weights, which sets how far Adam's first steps (each about the step size) move them.
Usage: python validation/channel_norms.py
"""
import torch

from optprune.adapters import adapter_for
from optprune.api import calibration_for
from optprune.checkpoints.model_io import load_model
from optprune.config import PruneConfig


def report(model: str) -> None:
    net, tok, _ = load_model(model, dtype=torch.float32)
    adapter = adapter_for(net)
    window = calibration_for(net, tok, adapter, PruneConfig(nsamples=1, seqlen=512))
    with torch.no_grad():
        hidden = net(window, output_hidden_states=True).hidden_states
    print(f"{model or 'smollm2 (default)'}: {len(hidden) - 1} blocks")
    for i in (1, 4, 8, 12, len(hidden) - 2):
        power = (hidden[i][0, 1:] ** 2).sum(0)
        print(f"  block {i} output: largest channel {float(power.max() / power.sum()):.3f} of the squared norm "
              f"(d = {power.numel()})")
    for name, lin in adapter.targets(adapter.blocks(net)[6]).items():
        print(f"  block 6 {name}: weight RMS {float(lin.weight.detach().pow(2).mean().sqrt()):.4f}")


def main():
    for model in ("", "gemma3-270m"):
        report(model)


if __name__ == "__main__":
    main()
