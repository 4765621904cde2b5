"""llama.cpp rows of validation/inference_speed.py: a pruned checkpoint as a GGUF, and its speed in llama.cpp.

A plain checkpoint goes through llama.cpp's own converter (`convert_hf_to_gguf.py`, found with `--llama-convert`
or $LLAMA_CPP_CONVERT; its `gguf-py` beside it).  A Llama of unequal block widths (`--allocation milp|owl`) has no
place in llama.cpp's `llama` architecture (one feed-forward width per model), but its `deci` architecture
(Nemotron-NAS) reads the feed-forward width and the KV heads per layer: the converter's GGUF is rewritten as `deci`
with those two keys as per-layer arrays, the tensors unchanged.  Timings run in llama-cpp-python (built here
from the package index's source), in a child process, `n_threads` = the machine's cores.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path


def converter(path: str) -> Path | None:
    """llama.cpp's convert_hf_to_gguf.py, or None where it is not given."""
    path = path or os.environ.get("LLAMA_CPP_CONVERT", "")
    return Path(path) if path and Path(path).is_file() else None


def llama_cpp_missing() -> str:
    """Why there are no llama.cpp rows here ('' where llama-cpp-python imports)."""
    try:
        import llama_cpp  # noqa: F401
        return ""
    except ImportError:
        return "llama-cpp-python is not installed here"


def to_gguf(folder: str, outtype: str, dest: Path, convert: Path) -> Path:
    """The checkpoint as a GGUF of `outtype` (bf16, f32) by llama.cpp's converter; a checkpoint of unequal block
    widths is rewritten for the `deci` architecture."""
    if dest.exists():
        return dest
    config = json.loads((Path(folder) / "config.json").read_text())
    widths = config.get("optprune_linear_shapes")
    plain = dest.with_suffix(".llama.gguf") if widths else dest
    env = dict(os.environ, PYTHONPATH=str(convert.parent / "gguf-py"))
    argv = [folder, "--outtype", outtype, "--outfile", str(plain)]
    command = ([sys.executable, "-c", per_head_converter(convert, config), *argv] if widths
               else [sys.executable, str(convert), *argv])
    run = subprocess.run(command, capture_output=True, text=True, env=env)
    if run.returncode:
        raise RuntimeError(f"llama.cpp's converter failed on {folder}:\n{run.stderr[-2000:]}")
    if widths:
        as_deci(plain, dest, per_layer_widths(widths, config["num_hidden_layers"]), env)
        plain.unlink()
    return dest


def per_head_converter(convert: Path, config: dict) -> str:
    """llama.cpp's converter with its rotary q/k permutation taken head by head: its own reshapes by the config's
    head counts, which a block with fewer heads (or KV heads) than the config's does not have.  The same
    permutation (each head's rows [x0 .. x_{d/2-1}, y0 ..] interleaved) for a block of the config's widths."""
    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    return f"""
import runpy, sys
sys.path.insert(0, {str(convert.parent)!r})
from conversion.llama import LlamaModel

def per_head(weights, n_head, n_head_kv):
    heads = weights.shape[0] // {head_dim}
    return weights.reshape(heads, 2, {head_dim} // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)

LlamaModel.permute = staticmethod(per_head)
sys.argv = [{str(convert)!r}, *sys.argv[1:]]
runpy.run_path({str(convert)!r}, run_name="__main__")
"""


def per_layer_widths(shapes: dict[str, list[int]], layers: int) -> dict[str, list[int]]:
    """Each block's feed-forward width (up_proj's rows), query and KV rows (q_proj's and k_proj's rows; heads =
    rows / head_dim) from the checkpoint's `optprune_linear_shapes` (module name -> [out, in])."""
    ff, q, kv = [0] * layers, [0] * layers, [0] * layers
    for name, (rows, _) in shapes.items():
        block = int(name.split("layers.")[1].split(".")[0])
        for suffix, widths in (("mlp.up_proj", ff), ("self_attn.q_proj", q), ("self_attn.k_proj", kv)):
            if name.endswith(suffix):
                widths[block] = rows
    return dict(ff=ff, q_rows=q, kv_rows=kv)


def as_deci(src: Path, dest: Path, widths: dict[str, list[int]], env: dict) -> None:
    """Rewrite a `llama` GGUF as `deci`: every `llama.*` key renamed, the feed-forward width and the KV heads as
    per-layer arrays, the tensors copied unchanged (gguf-py's reader and writer, run with the converter's gguf-py)."""
    code = f"""
import sys, numpy as np, gguf
widths = {json.dumps(widths)}
r = gguf.GGUFReader({str(src)!r})
w = gguf.GGUFWriter({str(dest)!r}, "deci")
heads = r.fields["llama.attention.head_count"].contents()
key_length = r.fields.get("llama.attention.key_length")
head_dim = key_length.contents() if key_length else r.fields["llama.embedding_length"].contents() // heads
for f in r.fields.values():
    if f.name.startswith("GGUF.") or f.name == "general.architecture":
        continue
    value = f.contents()
    name = "deci." + f.name[len("llama."):] if f.name.startswith("llama.") else f.name
    if name in ("deci.feed_forward_length", "deci.attention.head_count_kv", "deci.attention.head_count"):
        continue
    vtype = f.types[0]
    if vtype == gguf.GGUFValueType.ARRAY:
        w.add_key_value(name, value, vtype, sub_type=f.types[-1])
    else:
        w.add_key_value(name, value, vtype)
w.add_array("deci.feed_forward_length", widths["ff"])
w.add_array("deci.attention.head_count_kv", [k // head_dim for k in widths["kv_rows"]])
w.add_array("deci.attention.head_count", [q // head_dim for q in widths["q_rows"]])
for t in r.tensors:
    w.add_tensor_info(t.name, t.data.shape, t.data.dtype, t.data.nbytes, raw_dtype=t.tensor_type)
w.write_header_to_file(); w.write_kv_data_to_file(); w.write_ti_data_to_file()
for t in r.tensors:
    w.write_tensor_data(t.data)
w.close()
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if run.returncode:
        raise RuntimeError(f"rewriting {src} as deci failed:\n{run.stderr[-2000:]}")


def measure_gguf(gguf_path: str, args: dict) -> dict:
    """Prefill tokens/s (one eval of `prefill` tokens) and decode tokens/s at batch 1 (`decode` greedy tokens
    after a 16-token prompt) in llama-cpp-python, best of `repeats`; the process's peak RSS; the file's bytes."""
    import resource

    import numpy as np
    from llama_cpp import Llama

    llm = Llama(model_path=gguf_path, n_ctx=args["prefill"] + args["decode"] + 32, n_batch=args["prefill"],
                n_threads=os.cpu_count(), n_threads_batch=os.cpu_count(), verbose=False, seed=0)
    rng = np.random.default_rng(0)
    tokens = rng.integers(3, llm.n_vocab(), args["prefill"]).tolist()
    prompt = tokens[:16]

    def prefill():
        llm.reset()
        llm.eval(tokens)

    def decode():
        llm.reset()
        for i, _ in enumerate(llm.generate(prompt, temp=0.0, reset=True)):
            if i + 1 == args["decode"]:
                break

    out = dict(prefill_tok_s=args["prefill"] / best_of(prefill, args["repeats"]),
               decode_b1_tok_s=args["decode"] / best_of(decode, args["repeats"]))
    out["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    out["weight_bytes"] = Path(gguf_path).stat().st_size
    return out


def best_of(run, repeats: int) -> float:
    run()                                                  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
    return best
