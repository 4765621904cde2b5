"""The allocation per block, as a figure in the output folder (`allocation.png`, with the plots extra)."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path


def allocation_by_kind(sparsity: dict[str, float]) -> dict[str, dict[int, float]]:
    """{'<linear name>': {block: sparsity}} from an allocation's {'<block>.<linear>': s}."""
    kinds = defaultdict(dict)
    for key, s in sparsity.items():
        block, _, name = key.partition(".")
        kinds[name][int(block)] = s
    return dict(kinds)


def plot_allocation(allocation: dict, target: float, path: str | Path) -> bool:
    """One line per linear (structured: per unit, MLP channels and KV groups) of its sparsity against the
    block index, the run's target dashed; False (nothing written) without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6))
    for name, per_block in sorted(allocation_by_kind(allocation["sparsity"]).items()):
        blocks = sorted(per_block)
        ax.plot(blocks, [per_block[b] for b in blocks], marker=".", label=name)
    ax.axhline(target, color="black", linestyle="--", linewidth=1, label=f"target {target:g}")
    ax.set_xlabel("block")
    ax.set_ylabel("sparsity (structured: share of units)")
    ax.set_title(f"{allocation['kind']} allocation, achieved {allocation['achieved_sparsity']:.4f}")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
