"""What a user gains at inference: SmolLM2 dense against its pruned models, in transformers on this machine.

Models: dense; structured 30% and 50% (SPAP, uniform widths and MILP-allocated widths); 50% unstructured and 2:4
(SparseGPT), each pruned by `optprune prune` on `--nsamples` C4 windows and saved as a plain checkpoint.  For
each model and dtype (bf16, fp32), in a fresh process so that peak memory is the model's alone: prefill tokens/s
(one forward of 1 x `--prefill` tokens), decode tokens/s at batch 1 and 8 (`--decode` new tokens after a
16-token prompt, KV cache on, greedy), the process's peak RSS, the weights' bytes as held, and WikiText-2
perplexity (first `--eval-windows` windows, once per model).  Each timing is the best of `--repeats`.
Unstructured and 2:4 zeros are also run through torch's sparse CSR matmul (the only CPU path in torch that skips
zeros), an honest row: if it is slower, it says so.  llama.cpp (validation/llama_cpp_rows.py): the dense and
structured models as GGUFs of each dtype, prefill and batch-1 decode, where llama-cpp-python and llama.cpp's
converter are here (`--llama-convert`).
Writes docs/results/inference_speed.md (+ .json) and inference_speed.png (perplexity against decode tokens/s).
Usage: python validation/inference_speed.py [--nsamples 32] [--dry-run]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import llama_cpp_rows
from dense_checkpoint import dense_folder

ROOT = Path(__file__).resolve().parents[1]
MILP = ["--allocation", "milp", "--allocation-step", "0.05"]   # a menu of 9 widths per layer: pricing in half the time
MODELS = {   # name: optprune prune arguments (None: the dense model)
    "dense": None,
    "structured 30% uniform": ["--method", "spap", "--pattern", "structured", "--sparsity", "0.3"],
    "structured 30% MILP": ["--method", "spap", "--pattern", "structured", "--sparsity", "0.3", *MILP],
    "structured 50% uniform": ["--method", "spap", "--pattern", "structured", "--sparsity", "0.5"],
    "structured 50% MILP": ["--method", "spap", "--pattern", "structured", "--sparsity", "0.5", *MILP],
    "unstructured 50%": ["--method", "sparsegpt", "--pattern", "unstructured", "--sparsity", "0.5"],
    "2:4": ["--method", "sparsegpt", "--pattern", "2:4"],
}
SPARSE_ZEROS = ("unstructured 50%", "2:4")
CSR_DTYPES = ("float32",)    # torch's CPU CSR matmul (MKL) has no bfloat16 kernel: "addmm_out_sparse_csr_impl_mkl"
LLAMA_CPP_FAILURES: list[str] = []      # models llama.cpp could not convert or load (the table says so)
LLAMA_CPP_MODELS = ("dense", "structured 30% uniform", "structured 30% MILP", "structured 50% uniform",
                    "structured 50% MILP")


def pruned_folder(name: str, args, work: Path) -> str:
    """The model's folder: `optprune prune` into work/<name> (resumed or reused when it is there)."""
    if MODELS[name] is None:
        return args.model
    out = work / name.replace(" ", "_").replace("%", "").replace(":", "of")
    cmd = [sys.executable, "-m", "optprune", "prune", "--out", str(out), "--nsamples", str(args.nsamples),
           "--seqlen", str(args.seqlen), *MODELS[name], *(["--model", args.model] if args.model else [])]
    subprocess.run(cmd, check=True, cwd=ROOT)
    return str(out)


def measure(folder: str, dtype: str, args, sparse: bool = False, ppl: bool = True) -> dict:
    """One model's figures, measured in a child process (`--child`): its peak RSS is the model's alone.
    Perplexity only where `ppl` (the same weights give it on every path and, to rounding, in either dtype)."""
    settings = dict(vars(args), eval_windows=args.eval_windows if ppl else 0)
    cmd = [sys.executable, __file__, "--child", folder or "", dtype, json.dumps(settings), str(sparse)]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if run.returncode:
        raise SystemExit(f"measuring {folder} ({dtype}) failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def child(folder: str, dtype: str, args: dict, sparse: bool) -> dict:
    """Prefill and decode tokens/s, perplexity and peak RSS of one model in this process."""
    import torch

    import optprune
    from optprune.config import resolve_dtype

    torch.manual_seed(0)
    net, tok = load_as_a_user_would(folder, resolve_dtype(dtype))
    net.config.use_cache = True
    if sparse:
        to_sparse_linears(net)
    vocab = net.get_input_embeddings().num_embeddings
    prefill = torch.randint(3, vocab, (1, args["prefill"]))
    out = dict(prefill_tok_s=args["prefill"] / best_seconds(lambda: net(prefill), args["repeats"]))
    for batch in (1, 8):
        prompt = torch.randint(3, vocab, (batch, 16))
        seconds = best_seconds(lambda: net.generate(prompt, max_new_tokens=args["decode"], min_new_tokens=args["decode"],
                                                    do_sample=False), args["repeats"])
        out[f"decode_b{batch}_tok_s"] = batch * args["decode"] / seconds
    out["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    out["weight_bytes"] = weight_bytes(net)
    if args["eval_windows"]:
        out["ppl"] = optprune.evaluate(net, tok, seqlen=args["seqlen"], max_windows=args["eval_windows"],
                                       device="cpu")["ppl"]
    return out


def load_as_a_user_would(folder: str, dtype):
    """transformers' from_pretrained (with trust_remote_code for blocks of unequal widths: the modeling file
    optprune writes beside them); the embedded dense model through optprune's GGUF loader."""
    import optprune
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not folder:
        return optprune.load_pretrained(folder, dtype=dtype)
    remote = "auto_map" in json.loads(Path(folder, "config.json").read_text())
    net = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, trust_remote_code=remote).eval()
    return net, AutoTokenizer.from_pretrained(folder)


def llama_cpp_measurements(name: str, folder: str, args, machine: str) -> list[dict]:
    """The model's llama.cpp rows (dense and structured models, each dtype as a GGUF), where llama.cpp is here."""
    convert = llama_cpp_rows.converter(args.llama_convert)
    if name not in LLAMA_CPP_MODELS or convert is None or llama_cpp_rows.llama_cpp_missing():
        return []
    work = Path(args.work)
    source = dense_folder(args.model, work) if MODELS[name] is None else folder
    rows = []
    for dtype in args.dtypes.split(","):
        outtype = {"bfloat16": "bf16", "float32": "f32", "float16": "f16"}[dtype]
        path = "llama.cpp" + (" (deci)" if "MILP" in name else "")
        try:
            gguf = llama_cpp_rows.to_gguf(source, outtype, work / f"{Path(source).name}-{outtype}.gguf", convert)
        except RuntimeError as exc:                     # said in the table, the other rows still measured
            LLAMA_CPP_FAILURES.append(f"{name} ({dtype}): {str(exc).splitlines()[-1]}")
            continue
        run = subprocess.run([sys.executable, __file__, "--llama-child", str(gguf), json.dumps(vars(args))],
                             capture_output=True, text=True, cwd=ROOT)
        if run.returncode:
            LLAMA_CPP_FAILURES.append(f"{name} ({dtype}): {(run.stderr.strip().splitlines() or ['?'])[-1]}")
            continue
        rows.append(dict(json.loads(run.stdout.strip().splitlines()[-1]), model=name, dtype=dtype, path=path,
                         machine=machine))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def same_weights_perplexity(rows: list[dict]) -> None:
    """Every row of a model gets the perplexity measured once for it (bf16, dense matmul): the same weights."""
    measured = {r["model"]: r["ppl"] for r in rows if "ppl" in r}
    for r in rows:
        r.setdefault("ppl", measured.get(r["model"], float("nan")))


def weight_bytes(net) -> int:
    """Bytes the weights take as held: every parameter once (a tied head once), CSR weights as stored."""
    import torch
    total = sum(p.numel() * p.element_size() for p in net.parameters())
    for module in net.modules():
        csr = getattr(module, "weight_csr", None)
        if isinstance(csr, torch.Tensor):
            total += sum(t.numel() * t.element_size() for t in (csr.values(), csr.crow_indices(), csr.col_indices()))
    return total


def best_seconds(run, repeats: int) -> float:
    import torch

    best = float("inf")
    with torch.no_grad():
        run()                                             # warm-up
        for _ in range(repeats):
            t0 = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - t0)
    return best


def to_sparse_linears(net) -> None:
    """Every pruned linear of the blocks through torch's CSR matmul (y = x W^T with W in CSR)."""
    import torch

    class CSRLinear(torch.nn.Module):
        def __init__(self, lin):
            super().__init__()
            self.weight_csr = lin.weight.detach().to_sparse_csr()
            self.bias = lin.bias

        def forward(self, x):
            y = torch.sparse.mm(self.weight_csr, x.reshape(-1, x.shape[-1]).T).T.reshape(*x.shape[:-1], -1)
            return y if self.bias is None else y + self.bias

    from optprune.adapters import adapter_for
    adapter = adapter_for(net)
    for block in adapter.blocks(net):
        for name, lin in adapter.targets(block).items():
            parent, _, child_name = name.rpartition(".")
            setattr(block.get_submodule(parent) if parent else block, child_name, CSRLinear(lin))


SPARSE_NOTE = ("Zeros into speed: torch's sparse CSR matmul is the one CPU path in torch that skips zeros; it runs in "
               "float32 only (no bfloat16 kernel on CPU: \"addmm_out_sparse_csr_impl_mkl\" not implemented for "
               "'BFloat16'), so bfloat16 has no sparse row.  2:4 semi-structured kernels "
               "(torch.sparse.to_sparse_semi_structured) exist on CUDA only: on this CPU a 2:4 model runs as a "
               "dense one.")


def llama_cpp_note(args) -> str:
    """The table's line on llama.cpp: how its rows were made, or why there are none."""
    missing = llama_cpp_rows.llama_cpp_missing()
    if missing or llama_cpp_rows.converter(args.llama_convert) is None:
        return f"llama.cpp: no rows ({missing or 'no converter given (--llama-convert)'})."
    import llama_cpp
    return (f"llama.cpp: llama-cpp-python {llama_cpp.__version__}, built here from the package index's source "
            "(CMAKE_ARGS=-DGGML_NATIVE=ON); each model converted by its convert_hf_to_gguf.py to a GGUF of the "
            "row's dtype; a model of unequal block widths rewritten as llama.cpp's `deci` architecture (per-layer "
            "feed-forward widths and KV heads); batch 8 not measured (the Python API decodes one sequence); weights "
            "= the GGUF's bytes (token embeddings and head both stored)."
            + ("".join(f" Failed: {f}." for f in LLAMA_CPP_FAILURES)))


def table(rows: list[dict], args) -> str:
    lines = ["# Inference speed of pruned SmolLM2-135M (transformers, CPU)", "",
             f"Machine: {rows[0]['machine']}. Command: `python validation/inference_speed.py "
             f"{' '.join(sys.argv[1:])}`. Prefill: one forward of 1 x {args.prefill} tokens; decode: {args.decode} "
             f"new tokens after a 16-token prompt, KV cache, greedy; best of {args.repeats}. Perplexity: WikiText-2, "
             f"first {args.eval_windows} windows of {args.seqlen}, measured once per model (bf16, dense matmul) and "
             f"shown on each of its rows (the same weights). Peak RSS: the measuring process's. Each model loaded as a "
             "user would: `AutoModelForCausalLM.from_pretrained(out)`, with `trust_remote_code=True` for the MILP "
             "widths (the modeling file optprune writes beside them). The models: "
             + "; ".join(f"{n}: `optprune prune {' '.join(a)}`" for n, a in MODELS.items() if a)
             + f", each with `--nsamples {args.nsamples} --seqlen {args.seqlen}`.", "",
             "| model | dtype | path | prefill tok/s | decode tok/s b=1 | decode tok/s b=8 | peak RSS | weights | ppl |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['dtype']} | {r['path']} | {r['prefill_tok_s']:.0f} | "
                     f"{r['decode_b1_tok_s']:.1f} | {tok_s(r.get('decode_b8_tok_s'))} | {r['peak_rss_gib']:.2f} GiB | "
                     f"{r['weight_bytes'] / 2 ** 20:.0f} MB | {r.get('ppl', float('nan')):.2f} |")
    return "\n".join(lines + ["", SPARSE_NOTE, "", llama_cpp_note(args)]) + "\n"


def tok_s(value) -> str:
    """A rate to one decimal, '-' where it was not measured."""
    return "-" if value is None else f"{value:.1f}"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rows:
        if r["path"] == "dense matmul" and r["dtype"] == "bfloat16" and r.get("ppl"):
            ax.scatter(r["decode_b1_tok_s"], r["ppl"])
            ax.annotate(r["model"], (r["decode_b1_tok_s"], r["ppl"]), fontsize=7)
    ax.set_xlabel("decode tokens/s, batch 1 (bf16)")
    ax.set_ylabel("WikiText-2 perplexity")
    ax.set_yscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), sys.argv[5] == "True")))
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "--llama-child":
        print(json.dumps(llama_cpp_rows.measure_gguf(sys.argv[2], json.loads(sys.argv[3]))))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="", help="the dense model (default: the embedded SmolLM2-135M)")
    ap.add_argument("--nsamples", type=int, default=32)
    ap.add_argument("--seqlen", type=int, default=2048)
    ap.add_argument("--prefill", type=int, default=2048)
    ap.add_argument("--decode", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--eval-windows", type=int, default=40)
    ap.add_argument("--dtypes", default="bfloat16,float32")
    ap.add_argument("--work", default=str(ROOT / "runs" / "inference_speed"))
    ap.add_argument("--out", default=str(ROOT / "docs" / "results" / "inference_speed.md"))
    ap.add_argument("--llama-convert", default="", help="llama.cpp's convert_hf_to_gguf.py (default: "
                    "$LLAMA_CPP_CONVERT); without it, or without llama-cpp-python, no llama.cpp rows")
    ap.add_argument("--skip", default="", help="models of the table not to measure (comma-separated names)")
    ap.add_argument("--dry-run", action="store_true", help="a folder model (--model), 2 models, tiny sizes")
    args = ap.parse_args()
    for name in filter(None, args.skip.split(",")):
        if name not in MODELS:
            raise SystemExit(f"--skip {name!r}: not a model of the table ({', '.join(MODELS)})")
        MODELS.pop(name)
    if args.dry_run:
        args.nsamples, args.seqlen, args.prefill, args.decode, args.repeats, args.eval_windows = 2, 32, 32, 4, 1, 1
        for name in [n for n in MODELS if n not in ("dense", "unstructured 50%")]:
            MODELS.pop(name)
    from optprune.parallel import machine_name
    rows = []
    for name in MODELS:
        folder = pruned_folder(name, args, Path(args.work))
        for i, dtype in enumerate(args.dtypes.split(",")):
            for sparse in ([False, True] if name in SPARSE_ZEROS and dtype in CSR_DTYPES else [False]):
                r = measure(folder, dtype, args, sparse, ppl=i == 0 and not sparse)
                rows.append(dict(r, model=name, dtype=dtype, path="sparse CSR" if sparse else "dense matmul",
                                 machine=machine_name()))
                print(json.dumps(rows[-1]), flush=True)
        rows += llama_cpp_measurements(name, folder, args, machine_name())
        write(rows, args)                     # after each model: a run cut short keeps what it measured
    return 0


def write(rows: list[dict], args) -> None:
    same_weights_perplexity(rows)
    out = Path(args.out)
    out.write_text(table(rows, args))
    out.with_suffix(".json").write_text(json.dumps(rows, indent=2))
    plot(rows, out.with_suffix(".png"))
    print(f"wrote {out}", flush=True)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
