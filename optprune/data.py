"""Calibration and evaluation text, from a local folder (shared/data layout) or HF `datasets`.

Calibration windows are sampled from the *concatenated* corpus (documents joined
with blank lines, tokenised once): nsamples uniform random starts (seeded), each
seqlen tokens.  C4 documents are short (only ~40 of the 1000 local ones exceed
2048 tokens), so windows may span document boundaries; this is stated, not hidden.
Evaluation text is the WikiText-2 raw test split joined with blank lines.
"""
from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import torch

C4_FILE = "c4/c4-sample.00000-of-00001.json.gz"
WIKI_TEST = "wikitext2/test.raw.txt"
WIKI_VALID = "wikitext2/valid.tokens.txt"


def find_data_dir(data_dir: str = "") -> Path | None:
    """--data-dir (which must exist when given), else $OPTPRUNE_DATA_DIR, else ./shared/data or
    ../shared/data if present."""
    if data_dir and not Path(data_dir).is_dir():
        raise FileNotFoundError(f"no data folder at {data_dir}")
    for cand in (data_dir, os.environ.get("OPTPRUNE_DATA_DIR", ""), "shared/data", "../shared/data"):
        if cand and Path(cand).is_dir():
            return Path(cand)
    return None


def read_text_file(path: Path) -> list[str]:
    """Documents from .txt (one text), .jsonl or .jsonl.gz / .json.gz (key 'text')."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such text file: {path}")
    if path.suffix == ".gz":
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            return [json.loads(line)["text"] for line in fh if line.strip()]
    if path.suffix == ".jsonl":
        return [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [path.read_text(encoding="utf-8")]


def corpus_documents(name: str, data_dir: str = "") -> list[str]:
    """'c4' | 'wikitext2' (validation, for calibration) | a file path."""
    if name not in ("c4", "wikitext2"):
        return read_text_file(Path(name))
    root = find_data_dir(data_dir)
    if root is not None:
        return read_text_file(root / (C4_FILE if name == "c4" else WIKI_VALID))
    from datasets import load_dataset  # online fallback
    if name == "c4":
        ds = load_dataset("allenai/c4", data_files={"train": "en/c4-train.00000-of-01024.json.gz"}, split="train")
        return list(ds["text"][:5000])
    return ["\n\n".join(load_dataset("wikitext", "wikitext-2-raw-v1", split="validation")["text"])]


def check_text_source(name: str, data_dir: str = "", test: bool = False) -> None:
    """One line, before any model is loaded, when a corpus cannot be read: a missing file, or no local
    folder and no way to reach the hub."""
    if name not in ("c4", "wikitext2"):
        if not Path(name).is_file():
            raise FileNotFoundError(f"--calib {name}: no such file (use c4, wikitext2 or a txt/jsonl file)")
        return
    root = find_data_dir(data_dir)
    wanted = WIKI_TEST if test else (C4_FILE if name == "c4" else WIKI_VALID)
    if root is not None:
        if not (root / wanted).is_file():
            raise FileNotFoundError(f"data folder {root} has no {wanted}")
        return
    import importlib.util

    if importlib.util.find_spec("datasets") is None or not hub_reachable():
        raise FileNotFoundError(f"no local data for {name} (looked in --data-dir, $OPTPRUNE_DATA_DIR, shared/data, "
                                "../shared/data) and the hub cannot be used: give --data-dir")


def hub_reachable(timeout: float = 3.0) -> bool:
    import socket
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def wikitext_test_text(data_dir: str = "") -> str:
    root = find_data_dir(data_dir)
    if root is not None:
        return (root / WIKI_TEST).read_text(encoding="utf-8")
    from datasets import load_dataset
    return "\n\n".join(load_dataset("wikitext", "wikitext-2-raw-v1", split="test")["text"])


def tokenize_long(tok, text: str) -> torch.Tensor:
    ids = tok(text, return_tensors="pt", add_special_tokens=False, verbose=False).input_ids[0]
    return ids


def calibration_windows(tok, name: str, nsamples: int, seqlen: int, seed: int = 0, data_dir: str = "",
                        bos_id: int | None = None) -> torch.Tensor:
    """(nsamples, seqlen) token windows from the concatenated corpus (seeded); with bos_id each
    window is BOS + seqlen - 1 corpus tokens (the same seeded starts)."""
    if nsamples <= 0 or seqlen <= 1:
        raise ValueError("nsamples must be positive and seqlen > 1")
    ids = tokenize_long(tok, "\n\n".join(corpus_documents(name, data_dir)))
    if len(ids) <= seqlen:
        raise ValueError(f"calibration corpus has {len(ids)} tokens, fewer than seqlen={seqlen}")
    gen = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(ids) - seqlen, (nsamples,), generator=gen)
    if bos_id is None:
        return torch.stack([ids[s:s + seqlen] for s in starts.tolist()])
    bos = torch.tensor([bos_id], dtype=ids.dtype)
    return torch.stack([torch.cat([bos, ids[s:s + seqlen - 1]]) for s in starts.tolist()])


def window_bos_id(adapter, tok, config) -> int | None:
    """The BOS id when the family's windows start with BOS (adapter.window_bos), else None."""
    if not adapter.window_bos:
        return None
    bos = getattr(tok, "bos_token_id", None) if tok is not None else None
    bos = bos if bos is not None else getattr(config, "bos_token_id", None)
    if bos is None:
        raise ValueError(f"{adapter.model_type} windows start with BOS, but neither tokenizer nor config has one")
    return int(bos)
