"""A self-contained Markdown report for one layer: gap table and PNG figures.

Figures:
  objective.png  objective / tr(W G W^T) against iterations for every iterative solver
  gaps.png       each method's error next to the relaxation lower bound, and its certified sub-block gap
  overlap.png    mask agreement between methods: |M_a == M_b| / numel
  rows.png       per-row relative error, rows sorted by Wanda's error
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .compare import Comparison, compare, run_methods
from .patterns import Pattern
from .problem import LayerProblem


def mask_agreement(masks: dict[str, torch.Tensor]) -> np.ndarray:
    names = list(masks)
    out = np.ones((len(names), len(names)))
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            out[i, j] = float((masks[a] == masks[b]).float().mean())
    return out


def _row_gap_figure(cmp: Comparison, out: Path) -> list[str]:
    """Rows of each method by certified ratio to the QCR bound (only when the full-row bounds ran)."""
    if not (cmp.methods and cmp.methods[0].row_gap_histogram):
        return []
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bins = list(cmp.methods[0].row_gap_histogram)
    fig, ax = plt.subplots(figsize=(7, 3.8))
    width = 0.8 / len(cmp.methods)
    for k, r in enumerate(cmp.methods):
        ax.bar(np.arange(len(bins)) + k * width, [r.row_gap_histogram[b] for b in bins], width, label=r.method)
    ax.set_xticks(np.arange(len(bins)) + 0.4 - width / 2, bins)
    ax.set(xlabel="row error / row QCR bound (certified ratio to the row's optimum)", ylabel="rows",
           title="per-row certified gap")
    ax.legend(fontsize=7)
    fig.tight_layout(), fig.savefig(out / "row_gaps.png", dpi=110), plt.close(fig)
    return ["row_gaps.png"]


def _figures(problem: LayerProblem, results: dict, cmp: Comparison, out: Path) -> list[str]:
    """The report's PNG figures under `out`: solver progress, layer error vs bounds, mask agreement, row errors."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return [draw(plt, problem, results, cmp, out) for draw in
            (_progress_figure, _gaps_figure, _overlap_figure, _rows_figure)]


def _progress_figure(plt, problem: LayerProblem, results: dict, cmp: Comparison, out: Path) -> str:
    """Each iterative method's objective per iteration, relative to tr(W G W^T), against the relaxation bound."""
    energy = problem.dense_energy()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, res in results.items():
        if len(res.history) > 1:
            label = f"{name} (relaxed M)" if name == "sparsefw" else name
            ax.plot(np.arange(len(res.history)), np.asarray(res.history) / energy, label=label)
    ax.axhline(cmp.relaxation_bound, color="k", ls=":", label="relaxation bound")
    ax.set(xlabel="iteration", ylabel="objective / tr(W G W^T)", yscale="log", title=f"{problem.name}: solver progress")
    ax.legend(fontsize=8)
    fig.tight_layout(), fig.savefig(out / "objective.png", dpi=110), plt.close(fig)
    return "objective.png"


def _gaps_figure(plt, problem: LayerProblem, results: dict, cmp: Comparison, out: Path) -> str:
    """Layer errors against the lower bounds; each method's gap to the certified sub-block optimum."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.6))
    names = [r.method for r in cmp.methods]
    a1.bar(names, [r.rel_error for r in cmp.methods], color="tab:blue", label="with own weights")
    a1.bar(names, [r.rel_error_mask for r in cmp.methods], color="none", edgecolor="k", label="mask only")
    a1.axhline(cmp.relaxation_bound, color="r", ls="--", label="relaxation bound")
    if cmp.qcr_bound == cmp.qcr_bound:
        a1.axhline(cmp.qcr_bound, color="g", ls="-.", label="QCR bound (every row)")
    a1.set(ylabel="relative error", title="layer error vs lower bound")
    a1.legend(fontsize=7), a1.tick_params(axis="x", rotation=45)
    a2.bar(names, [100 * r.block_gap for r in cmp.methods], color="tab:orange")
    a2.set(ylabel="gap to certified optimum (%)", title=f"sub-block rows {cmp.rows}, {len(cmp.window)} cols")
    a2.tick_params(axis="x", rotation=45)
    fig.tight_layout(), fig.savefig(out / "gaps.png", dpi=110), plt.close(fig)
    return "gaps.png"


def _overlap_figure(plt, problem: LayerProblem, results: dict, cmp: Comparison, out: Path) -> str:
    """The share of decisions on which each pair of methods' masks agree."""
    agree = mask_agreement({n: r.mask for n, r in results.items()})
    fig, ax = plt.subplots(figsize=(5, 4.2))
    im = ax.imshow(agree, vmin=0.5, vmax=1.0, cmap="viridis")
    ax.set_xticks(range(len(results)), list(results), rotation=45, fontsize=8)
    ax.set_yticks(range(len(results)), list(results), fontsize=8)
    for i in range(len(results)):
        for j in range(len(results)):
            ax.text(j, i, f"{agree[i, j]:.2f}", ha="center", va="center", fontsize=7, color="w")
    fig.colorbar(im), ax.set_title("mask agreement")
    fig.tight_layout(), fig.savefig(out / "overlap.png", dpi=110), plt.close(fig)
    return "overlap.png"


def _rows_figure(plt, problem: LayerProblem, results: dict, cmp: Comparison, out: Path) -> str:
    """Each method's relative error per row (own weights), rows sorted by Wanda's (or the first method's)."""
    row_energy = ((problem.W @ problem.G) * problem.W).sum(1).clamp_min(1e-30)
    ref = next((n for n in ("wanda", *results) if n in results))
    order = torch.argsort(problem.row_errors(W_hat=results[ref].weight) / row_energy).cpu().numpy()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, res in results.items():
        ax.plot((problem.row_errors(W_hat=res.weight) / row_energy).cpu().numpy()[order], label=name, lw=1)
    ax.set(xlabel=f"row (sorted by {ref}'s error)", ylabel="row relative error", yscale="log", title="error per row")
    ax.legend(fontsize=8)
    fig.tight_layout(), fig.savefig(out / "rows.png", dpi=110), plt.close(fig)
    return "rows.png"


def layer_report(problem: LayerProblem, pattern: Pattern, methods: list[str], out_dir: str | Path,
                 rows=(0,), window_size: int = 24, exact_method: str = "milp", time_limit: float = 60.0,
                 workers: int = 1, full_row_bounds: bool = False, dnn_iters: int = 0) -> Path:
    """Run `methods`, certify sub-blocks (and, with full_row_bounds, bound every row), draw the figures;
    returns the path of report.md."""
    problem.check_certifiable()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = run_methods(problem, pattern, methods)
    cmp = compare(problem, pattern, results, rows=rows, window_size=window_size,
                  exact_method=exact_method, time_limit=time_limit, workers=workers, full_row_bounds=full_row_bounds,
                  dnn_iters=dnn_iters)
    files = _figures(problem, results, cmp, out) + _row_gap_figure(cmp, out)
    agree = mask_agreement({n: r.mask for n, r in results.items()})
    text = [f"# Layer report: `{problem.name}` ({problem.shape[0]}x{problem.shape[1]}), "
            f"{pattern.name} at sparsity {pattern.sparsity:.2f}\n",
            "Relative error = tr(D G D^T) / tr(W G W^T). The sub-block gap compares each method's mask with the "
            "HiGHS-certified optimum of the same sub-block, the rest of the row fixed to that method's mask.\n",
            cmp.to_markdown(),
            "\n## Mask agreement\n", "| | " + " | ".join(results) + " |", "|---" * (len(results) + 1) + "|"]
    text += [f"| {a} | " + " | ".join(f"{agree[i, j]:.3f}" for j in range(len(results))) + " |"
             for i, a in enumerate(results)]
    text.append("\n## Figures\n")
    text += [f"![{f[:-4]}]({f})\n" for f in files]
    (out / "report.md").write_text("\n".join(text))
    (out / "report.json").write_text(cmp.to_json())
    return out / "report.md"
