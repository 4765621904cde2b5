"""The bad-input cases of docs/reliability.md: each case, the arguments that make it and the one line a
user must see.  tests/commands/test_bad_input.py asserts them; validation/reliability_table.py publishes what the
command line prints for them.  Also the tiny model both run on (`build_tiny`): a 2-block random Llama and
a data folder in the shared/data layout, made offline in a second."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import torch
from safetensors.torch import save_file

TEXT = ("The quick brown fox jumps over the lazy dog. " * 40 + "\n\n") * 6


def build_tiny(root):
    """A 2-block random Llama (hidden 32, 128 positions) with a character tokenizer, and a data
    folder in the shared/data layout: (model folder, data folder)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    chars = sorted(set(TEXT))
    vocab = {c: i for i, c in enumerate(chars)}
    vocab["<unk>"] = len(vocab)
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    model_dir = root / "model"
    LlamaForCausalLM(cfg).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    data = root / "data"
    (data / "wikitext2").mkdir(parents=True)
    (data / "c4").mkdir()
    (data / "wikitext2" / "test.raw.txt").write_text(TEXT)
    with gzip.open(data / "c4" / "c4-sample.00000-of-00001.json.gz", "wt") as fh:
        for _ in range(5):
            fh.write(json.dumps({"text": TEXT}) + "\n")
    return model_dir, data


PRUNE_USAGE = [   # (extra arguments replacing the defaults, message)
    (["--method", "banana"], "unknown method 'banana'"),
    (["--method", "spap"], "spap handles column (structured) patterns, not per-row"),
    (["--method", "sparsegpt", "--pattern", "structured"], "sparsegpt handles unstructured"),
    (["--sparsity", "1.0"], "sparsity must lie in [0, 1)"),
    (["--sparsity", "nan"], "sparsity must lie in [0, 1)"),
    (["--pattern", "2:4", "--sparsity", "0.7"], "contradicts 2:4"),
    (["--pattern", "3:7"], "needs the input size (32) to be divisible by M=7"),
    (["--pattern", "4:2"], "N:M needs 0 < N < M"),
    (["--dtype", "fp8"], "unknown dtype 'fp8'"),
    (["--device", "banana"], "unknown device 'banana'"),
    (["--device", "cuda:99"], "--device cuda:99: "),
    (["--nsamples", "0"], "nsamples must be >= 1, got 0"),
    (["--row-shards", "0"], "row_shards must be >= 1, got 0"),
    (["--batch", "0"], "batch must be >= 1, got 0"),
    (["--target", "banana"], "target must be one of pruned, dense, got 'banana'"),
    (["--allocation-cost", "banana"], "allocation_cost must be one of error, sensitivity, loss"),
    (["--method-arg", "iters=3"], "wanda has no option iters"),
    (["--method", "sparseswaps", "--method-arg", "candidates=0"], "sparseswaps option candidates=0: must be >= 1"),
    (["--method", "sparsegpt", "--method-arg", "percdamp=-1"], "sparsegpt option percdamp=-1: must be in (0, 10)"),
    (["--calib", "/nonexistent/corpus.txt"], "--calib /nonexistent/corpus.txt: no such file"),
    (["--data-dir", "/nonexistent/data"], "no data folder at /nonexistent/data"),
    (["--target-ridge", "0"], "target_ridge must be > 0"),
    (["--reconstruct", "block", "--reconstruct-epochs", "0"], "reconstruct_epochs must be >= 1"),
    (["--method", "admm", "--pattern", "structured"], "admm handles entrywise"),
    (["--method", "admm", "--method-arg", "warm_start=admm"], "unknown warm start 'admm'"),
    (["--allocation", "milp", "--pattern", "2:4"], "2:4 stays uniform per layer"),
    (["--allocation", "milp", "--allocation-step", "0"], "need 0 < step <= spread"),
    (["--allocation", "milp", "--allocation-bound", "attention=0.7:0.2"], "need 0 <= LO <= HI <= 1"),
    (["--allocation", "owl", "--allocation-bound", "mlp=:0.5"], "it needs --allocation milp"),
    (["--allocation", "milp", "--allocation-windows", "9"], "allocation_windows must be between 0"),
    (["--seqlen", "4096"], "--seqlen 4096 is longer than this model's max_position_embeddings (128)"),
    (["--max-memory", "banana"], "max_memory 'banana': give a positive size like 8GiB, 500MB or 1e9 bytes"),
    (["--save-format", "bitmask"], "--save-format 'bitmask': choose from plain, compressed"),
    (["--save-format", "dense"], "--save-format dense: dense (weights with compressed-tensors sparsity metadata) is "
                                 "no longer written: vLLM refuses any sparsity_config with targets"),
]


def prune_args(tiny, out, extra=()):
    model_dir, data = tiny
    base = {"--model": str(model_dir), "--method": "wanda", "--pattern": "per-row", "--nsamples": "4",
            "--seqlen": "32", "--data-dir": str(data), "--out": str(out), "--device": "cpu", "--dtype": "float32"}
    extra = list(extra)
    flags = [a for a in extra if a.startswith("--")]
    args = [x for k, v in base.items() if k not in flags for x in (k, v)]
    return ["prune", *args, *extra]


PATH_CASES = [   # (case, message)
    ("--model is a missing folder", "no such folder"),
    ("--model is an unreachable hub id", "--model no-such-org/no-such-model-xyz"),
    ("--out is a file", "is a file"),
    ("--out lies under a file", "is not a writable folder"),
    ("--out is an unrelated non-empty folder", "is not empty and holds no optprune run"),
    ("--calib is JSON lines without a 'text' key", "calib.json: line 1 has no 'text' string (it has ['body'])"),
    ("--calib is not UTF-8", "calib.txt: not UTF-8 text"),
]
CALIB_FILES = {"--calib is JSON lines without a 'text' key": ("calib.json", b'{"body": "hello"}\n'),
               "--calib is not UTF-8": ("calib.txt", "caf\xe9 au lait".encode("latin-1"))}


def path_case(case: str, tmp_path: Path) -> tuple[Path, list[str]]:
    """(--out, extra arguments) of a PATH_CASES case, with the files it needs made."""
    out = tmp_path / "out"
    if case == "--model is a missing folder":
        return out, ["--model", str(tmp_path / "nope")]
    if case == "--model is an unreachable hub id":
        return out, ["--model", "no-such-org/no-such-model-xyz"]
    if case in CALIB_FILES:
        name, content = CALIB_FILES[case]
        (tmp_path / name).write_bytes(content)
        return out, ["--calib", str(tmp_path / name)]
    if case == "--out is a file":
        out.write_text("x")
    elif case == "--out lies under a file":
        (tmp_path / "f").write_text("x")
        out = tmp_path / "f" / "out"
    else:
        out.mkdir()
        (out / "config.json").write_text("{\"mine\": 1}")
    return out, []


EVAL_USAGE = [   # (extra arguments of optprune eval on the tiny model, message)
    (["--zeroshot", "mmlu"], "unknown zero-shot task 'mmlu'"),
    (["--zeroshot", "arc_easy", "--zeroshot-scorer", "exact"], "--zeroshot-scorer 'exact': choose from auto, harness, "
                                                                "builtin"),
]


def eval_args(tiny, extra):
    model_dir, data = tiny
    return ["eval", "--model", str(model_dir), "--ppl", "", "--data-dir", str(data), *extra]


def layer_files(folder: Path) -> dict:
    torch.manual_seed(0)
    W, X = torch.randn(4, 16), torch.randn(16, 64)
    q, _ = torch.linalg.qr(torch.randn(16, 16))
    eig = torch.linspace(-18.9, 40.0, 16)
    indefinite = q @ torch.diag(eig) @ q.T
    indefinite.diagonal().clamp_(min=1.0)          # a positive diagonal does not make it a Gram
    files = {"ok": (W, X @ X.T), "indefinite": (W, indefinite), "zero W": (torch.zeros(4, 16), X @ X.T),
             "zero G": (W, torch.zeros(16, 16)), "NaN": (W.clone().index_fill_(1, torch.tensor([3]), float("nan")),
                                                       X @ X.T)}
    paths = {}
    for name, (w, g) in files.items():
        paths[name] = folder / f"{name.replace(' ', '_')}.safetensors"
        save_file({"l.weight": w, "l.gram": 0.5 * (g + g.T)}, str(paths[name]))
    paths["gram only"] = folder / "gram_only.safetensors"
    save_file({"l.gram": X @ X.T}, str(paths["gram only"]))
    paths["empty"] = folder / "empty.safetensors"
    save_file({}, str(paths["empty"]))
    paths["not safetensors"] = folder / "text.safetensors"
    paths["not safetensors"].write_text("hello")
    return paths


CERTIFY_USAGE = [   # (file, extra arguments, message)
    ("not safetensors", [], "is not a safetensors layer file"),
    ("gram only", [], "no layer problems (no '<name>.weight' with its '<name>.gram'; it has ['l.gram'] without weights)"),
    ("empty", [], "no layer problems (no '<name>.weight' with its '<name>.gram')"),
    ("indefinite", ["--method", "maiht,sparsegpt"], "G is not positive semidefinite"),
    ("zero W", [], "W is zero, so every mask has error 0"),
    ("zero G", [], "G is zero, so every mask has error 0"),
    ("NaN", [], "NaN"),
    ("ok", ["--rows", ""], "give at least one row"),
    ("ok", ["--rows", "-1"], "none negative"),
    ("ok", ["--rows", "0,0"], "each once"),
    ("ok", ["--rows", "9"], "layer l has rows 0..3"),
    ("ok", ["--window", "0"], "at least one column"),
    ("ok", ["--window", "40"], "wider than layer l (16 columns)"),
    ("ok", ["--workers", "0"], "--workers must be >= 1"),
    ("ok", ["--time-limit", "0"], "--time-limit > 0"),
    ("ok", ["--dnn-iters", "-1"], "--dnn-iters -1: give the ADMM steps per row"),
    ("ok", ["--device", "banana"], "unknown device 'banana'"),
    ("ok", ["--json", "/nonexistent/x.json"], "no folder /nonexistent"),
    ("ok", ["--method", "spap"], "spap handles column (structured) patterns"),
    ("ok", ["--method", "banana"], "unknown method 'banana'"),
    ("ok", ["--pattern", "2:3"], "divisible by M=3"),
    ("ok", ["--pattern", "2:4", "--sparsity", "0.6"], "contradicts 2:4"),
]
