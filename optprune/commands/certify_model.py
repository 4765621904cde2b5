"""`optprune certify --dense M --pruned P`: the whole-model certificate.

Every row of every layer (of --blocks, default all) gets a rigorous lower bound on its mask-only error
(`--bound`, default `qcr`: `optprune.exact.bounds`), against the checkpoint's mask on the dense model's Grams:

    layer l:  error e_l = f_l(M_l) / E_l,  bound b_l <= min_M f_l(M) / E_l,  gap e_l / b_l    (E_l = tr(W G W^T))
    model:    sum_l e_l against sum_l b_l, per kind of layer (q, k, v, o, gate, up, down) and over all layers

Given the dense inputs the layers' problems are independent, so sum_l b_l bounds the least total relative error
any masks of the pattern reach, and the checkpoint is within sum e / sum b of it.  Where the pattern's rows are
independent, each row's own gap error_i / bound_i is binned.  A layer whose Gram is singular (no useful SDP
diagonal) gets the box bound, and its row says so.  Finished layers are appended to `<json>.partial` under the
run's fingerprint: the same command resumes after them (and gives the same JSON); another command refuses to mix.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np

from ..compare import GAP_BINS, ratio, row_gap_histogram
from ..exact.bounds import certifies, prove
from ..patterns import Pattern, PatternError
from ..problem import LayerProblem
from ..progress import BlockProgress, clock

MODEL_BOUNDS = ("qcr", "box")
DIAGONAL_SECONDS = 5.0      # the SDP diagonal's barrier method: on SmolLM2's Grams 5 s gave the bound 120 s gave


def shared_diagonals(problems: dict, todo) -> dict[str, tuple[np.ndarray | None, float]]:
    """One SDP diagonal per distinct Gram (q/k/v share their input's, gate/up theirs), weighted by the mean
    squared weights of every layer that shares it (any lam >= 0 with G - diag(lam) PSD is valid for each);
    None where the Gram is singular (the box bound then); each with its share of the seconds it took.  Computed
    for the Grams that a layer of `todo` uses, always from every layer that shares it (a resumed run gets the
    same diagonal)."""
    from ..exact.row_bounds import shared_diagonal

    groups: dict[int, list[str]] = {}
    for key, (_, G) in problems.items():
        groups.setdefault(id(G), []).append(key)
    out = {}
    for keys in groups.values():
        if not set(keys) & set(todo):
            continue
        t0 = time.perf_counter()
        G = problems[keys[0]][1].double().cpu().numpy()
        weights = np.concatenate([problems[k][0].double().cpu().numpy() ** 2 for k in keys]).mean(0)
        try:
            lam = shared_diagonal(G, weights, max_seconds=DIAGONAL_SECONDS)
        except ValueError:
            lam = None
        out.update({k: (lam, (time.perf_counter() - t0) / len(keys)) for k in keys})
    return out


def layer_certificate(key: str, problem: LayerProblem, pattern: Pattern, keep, weight, bound: str, iters: int,
                      diagonal=None, diagonal_seconds: float = 0.0) -> dict:
    """One layer's line: sparsity, relative error of the mask (and of the checkpoint's own weights: over 1, it
    errs more than all-zero weights), the bound proven on every row, their ratio, and the rows binned by their
    own ratio (rows independent)."""
    sparsity = float(1 - keep.float().mean())
    try:
        pattern.check(keep)
    except PatternError as exc:
        return dict(layer=key, kind=key.split(".")[-1], pattern_ok=False, sparsity=sparsity, problem=str(exc))
    t0 = time.perf_counter()
    if bound == "qcr" and diagonal is not None:
        proven = prove("qcr", problem, pattern, keep, iters=iters, diagonal=diagonal)
    else:                                      # asked for, or a singular Gram: the box bound still holds
        proven = prove("box", problem, pattern, keep, iters=iters)
    energy = max(problem.dense_energy(), 1e-300)
    row_errors = problem.row_errors(keep).double().cpu().numpy()
    error, value = float(row_errors.sum()) / energy, proven.value / energy
    weights_error = problem.relative_error(W_hat=weight.to(problem.W.dtype))
    return dict(layer=key, kind=key.split(".")[-1], pattern_ok=True, sparsity=sparsity, error=error, bound=value,
                error_weights=weights_error, worse_than_zero=weights_error > 1.0,
                bound_kind=proven.kind, gap=error / value if certifies(error, value) else float("nan"),
                rows=row_gap_histogram(row_errors, proven.per_row) if proven.per_row is not None else {},
                seconds=time.perf_counter() - t0 + diagonal_seconds)


def model_summary(layers: list[dict]) -> dict:
    """Sums of errors and bounds per kind of layer and over all layers, their ratio, the median and worst layer
    gaps, and the rows binned by gap over the model."""
    done = [r for r in layers if r["pattern_ok"]]

    def figures(rows: list[dict]) -> dict:
        error, bound = sum(r["error"] for r in rows), sum(r["bound"] for r in rows)
        gaps = [r["gap"] for r in rows if r["gap"] == r["gap"]]
        return dict(layers=len(rows), error=error, bound=bound,
                    gap=error / bound if certifies(error, bound) else float("nan"),
                    median_layer_gap=float(np.median(gaps)) if gaps else float("nan"),
                    worst_layer_gap=max(gaps, default=float("nan")),
                    uncertified_layers=len(rows) - len(gaps))

    kinds = sorted({r["kind"] for r in done}, key=[r["kind"] for r in done].index)
    histogram = {}
    for r in done:
        for b, n in r["rows"].items():
            histogram[b] = histogram.get(b, 0) + n
    return dict(overall=figures(done), per_kind={k: figures([r for r in done if r["kind"] == k]) for k in kinds},
                rows_by_gap=histogram, seconds=sum(r.get("seconds", 0.0) for r in done))


def markdown(layers: list[dict], summary: dict, header: str) -> str:
    """The per-layer table, the per-kind and overall figures, and the model's row-gap histogram."""
    bins = list(summary["rows_by_gap"]) or [f"<{GAP_BINS[1]:g}"]
    lines = [header, "", "| layer | sparsity | error (mask, relative) | bound | gap | error with its weights | "
             "bound kind | rows by gap: " + " / ".join(bins) + " | seconds |", "|---|---|---|---|---|---|---|---|---|"]
    for r in layers:
        if not r["pattern_ok"]:
            lines.append(f"| {r['layer']} | {r['sparsity']:.3f} | not the claimed pattern: {r['problem']} ||||||")
            continue
        counts = " / ".join(str(r["rows"].get(b, 0)) for b in bins) if r["rows"] else "-"
        lines.append(f"| {r['layer']} | {r['sparsity']:.3f} | {r['error']:.6g} | {r['bound']:.6g} | "
                     f"{ratio(r['gap'])} | {r['error_weights']:.6g} | {r['bound_kind']} | {counts} | "
                     f"{r['seconds']:.1f} |")
    lines += ["", "| layers | count | sum of errors | sum of bounds | model gap | median layer gap | worst layer gap |",
              "|---|---|---|---|---|---|---|"]
    for name, f in [*summary["per_kind"].items(), ("all", summary["overall"])]:
        lines.append(f"| {name} | {f['layers']} | {f['error']:.6g} | {f['bound']:.6g} | {ratio(f['gap'])} | "
                     f"{ratio(f['median_layer_gap'])} | {ratio(f['worst_layer_gap'])} |")
    hist = summary["rows_by_gap"]
    if hist:
        lines += ["", "Rows of the model by gap (error_i / bound_i): "
                  + ", ".join(f"{b}: {n}" for b, n in hist.items()) + "."]
    lines += ["", f"Bounds computed in {clock(summary['seconds'])}. A gap is error / bound (>= 1): the mask is "
              "within that factor of the optimum; '-' where the bound is under 0.1% of the error."]
    return "\n".join(lines) + "\n"


def fingerprint(dense_digest: dict, masks: dict, windows_digest: str, pattern: Pattern, bound: str,
                iters: int) -> str:
    """sha256 of everything a layer's line depends on: the dense model, the masks, the calibration windows,
    the pattern, the bound and its iterations."""
    h = hashlib.sha256(json.dumps([dense_digest, windows_digest, pattern.name, pattern.sparsity, bound, iters],
                                  sort_keys=True, default=str).encode())
    for key in sorted(masks):
        h.update(key.encode() + masks[key][0].cpu().numpy().tobytes())
    return h.hexdigest()


def finished_layers(partial: Path, print_: str) -> dict[str, dict]:
    """The layers `<json>.partial` holds for this fingerprint; refuses one written by another command."""
    if not partial.exists():
        return {}
    lines = [json.loads(line) for line in partial.read_text().splitlines() if line.strip()]
    if lines and lines[0].get("fingerprint") != print_:
        raise ValueError(f"{partial} holds layers of another certificate (other model, masks, calibration, "
                         "pattern or bound): delete it, or give another --json")
    return {line["report"]["layer"]: line["report"] for line in lines}


def certify_layers(problems, masks: dict, pattern: Pattern, bound: str, iters: int, partial: Path | None,
                   print_: str, done: dict, progress: BlockProgress) -> list[dict]:
    """Every layer's line in `problems`' order (from `done`, the layers finished so far, where it has it),
    appending each new one to `partial`, with a progress line per layer and an estimate of what is left."""
    out = []
    diagonals = shared_diagonals(problems, [k for k in problems if k not in done]) if bound == "qcr" else {}
    for key, (W, G) in problems.items():
        if key in done:
            out.append(done[key])
            continue
        report = layer_certificate(key, LayerProblem(W, G, key), pattern, *masks[key], bound, iters,
                                   *diagonals.get(key, (None, 0.0)))
        if partial is not None:
            with open(partial, "a") as f:
                f.write(json.dumps(dict(fingerprint=print_, report=report)) + "\n")
        out.append(report)
        progress.update()
    return out
