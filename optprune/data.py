"""Calibration and evaluation text: a local folder (shared/data layout), the texts shipped in the
package (`optprune/corpora/`: the C4 sample and the WikiText-2 raw test, licences and checksums in
its README), a txt/jsonl file, an HF `datasets` name (`hf:NAME[:CONFIG]`, when the hub is
reachable), or, from Python, any list of strings or HF `Dataset` with a "text" column.

Calibration windows are sampled from the *concatenated* corpus (documents joined
with blank lines, tokenised once): nsamples uniform random starts (seeded), each
seqlen tokens.  C4 documents are short (only ~40 of the 1000 local ones exceed
2048 tokens), so windows may span document boundaries; this is stated, not hidden.
Evaluation text is the WikiText-2 raw test split joined with blank lines.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import json
import os
from pathlib import Path

import torch

C4_FILE = "c4/c4-sample.00000-of-00001.json.gz"
WIKI_TEST = "wikitext2/test.raw.txt"
WIKI_VALID = "wikitext2/valid.tokens.txt"
SHIPPED = Path(__file__).parent / "corpora"
SHIPPED_FILES = {   # corpus -> (file in optprune/corpora, sha256 of its decompressed bytes)
    "c4": ("c4-sample.00000-of-00001.json.gz", "17f8203ba13f9fe0a9e71db9dafbce2eef34bcc665c856c10df284cfa92b0abf"),
    "wikitext2-test": ("wikitext2-test.raw.txt.gz", "696cca6b65a171b0a358a4be6732cdfdf2dd6164a32e20fd70e3c13fc4dfae83"),
}
HUB_PREFIX = "hf:"


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
    """Documents of a text file: .txt (one text); JSON lines with a 'text' key on every line (.jsonl, and .json
    as `datasets.to_json` writes it) or a .json array of such objects or of strings; each may be gzipped.
    A file that cannot be read so is refused with one line naming it (and the line at fault)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such text file: {path}")
    try:
        text = (gzip.open(path, "rt", encoding="utf-8").read() if path.suffix == ".gz"
                else path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except (OSError, EOFError) as exc:
        raise ValueError(f"{path}: cannot be read ({exc})") from None
    kind = Path(path.stem).suffix if path.suffix == ".gz" else path.suffix
    if kind not in (".json", ".jsonl") and path.suffix != ".gz":
        return [text]
    return json_documents(text, path)


def json_documents(text: str, path: Path) -> list[str]:
    """The 'text' of every record of a JSON array or of JSON lines (module doc of `read_text_file`)."""
    if text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from None
        return [record_text(r, path, f"item {k}") for k, r in enumerate(records)]
    docs = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: line {n} is not JSON ({exc.msg}); a .json/.jsonl calibration file holds "
                             "one {\"text\": ...} object per line") from None
        docs.append(record_text(record, path, f"line {n}"))
    if not docs:
        raise ValueError(f"{path}: no records")
    return docs


def record_text(record, path: Path, where: str) -> str:
    if isinstance(record, str):
        return record
    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
        keys = sorted(record) if isinstance(record, dict) else type(record).__name__
        raise ValueError(f"{path}: {where} has no 'text' string (it has {keys})")
    return record["text"]


def corpus_documents(name: str, data_dir: str = "") -> list[str]:
    """'c4' | 'wikitext2' (validation, for calibration) | 'hf:NAME[:CONFIG]' | a file path.
    c4 without a data folder is the shipped sample."""
    if name.startswith(HUB_PREFIX):
        return hub_documents(name)
    if name not in ("c4", "wikitext2"):
        return read_text_file(Path(name))
    root = find_data_dir(data_dir)
    if root is not None:
        return read_text_file(root / (C4_FILE if name == "c4" else WIKI_VALID))
    if name == "c4":
        return [json.loads(line)["text"] for line in shipped_text("c4").splitlines() if line.strip()]
    return hub_documents("hf:wikitext:wikitext-2-raw-v1", split="validation")


def hub_documents(name: str, split: str = "train") -> list[str]:
    """The "text" column of an HF dataset named 'hf:NAME[:CONFIG]' (needs `datasets` and the hub)."""
    from datasets import load_dataset

    path, _, subset = name[len(HUB_PREFIX):].partition(":")
    return [t for t in load_dataset(path, subset or None, split=split)["text"] if t]


@functools.lru_cache(maxsize=None)
def shipped_text(corpus: str) -> str:
    """A text shipped in optprune/corpora, checked against its recorded sha256 before use."""
    fname, digest = SHIPPED_FILES[corpus]
    with gzip.open(SHIPPED / fname, "rb") as fh:
        data = fh.read()
    if hashlib.sha256(data).hexdigest() != digest:
        raise ValueError(f"shipped text {SHIPPED / fname} does not match its sha256 {digest[:12]}...: reinstall optprune")
    return data.decode("utf-8")


def documents_of(texts) -> list[str]:
    """Calibration documents from a list of strings or an HF `Dataset` with a "text" column."""
    if isinstance(texts, dict):        # a batch of a Dataset, or {"text": [...]}: iterating it gives its keys
        raise ValueError(f"calibration texts as a dict (keys {sorted(texts)[:3]}): pass its list of strings "
                         "(calib=d['text']) or the Dataset itself")
    column = getattr(texts, "column_names", None)
    if column is not None:
        if "text" not in column:
            raise ValueError(f"the calibration Dataset has no 'text' column (it has {column})")
        texts = texts["text"]
    docs = [t for t in texts if t]
    if not docs or not all(isinstance(t, str) for t in docs):
        raise ValueError("calibration texts must be a non-empty list of strings or a Dataset with a 'text' column")
    return docs


def check_text_source(name: str, data_dir: str = "", test: bool = False) -> None:
    """One line, before any model is loaded, when a corpus cannot be read: a missing file, a data
    folder without it, or a hub dataset (or WikiText-2 validation without a folder) and no hub."""
    if name.startswith(HUB_PREFIX):
        return check_hub(f"--calib {name}")
    if name not in ("c4", "wikitext2"):
        if not Path(name).is_file():
            raise FileNotFoundError(f"--calib {name}: no such file (use c4, wikitext2, hf:NAME[:CONFIG] or a "
                                    "txt/jsonl file)")
        read_text_file(Path(name))           # its format checked now, before any model loads
        return
    root = find_data_dir(data_dir)
    wanted = WIKI_TEST if test else (C4_FILE if name == "c4" else WIKI_VALID)
    if root is not None:
        if not (root / wanted).is_file():
            raise FileNotFoundError(f"data folder {root} has no {wanted}")
        return
    if name == "c4" or test:
        return                                             # shipped in optprune/corpora
    check_hub("--calib wikitext2 (the validation split is not shipped; give --data-dir or use c4)")


def check_hub(what: str) -> None:
    import importlib.util

    if importlib.util.find_spec("datasets") is None:
        raise FileNotFoundError(f"{what} needs the `datasets` package: pip install 'optprune[data]'")
    if not hub_reachable():
        raise FileNotFoundError(f"{what} needs the Hugging Face hub, which cannot be reached from here")


def describe_source(name: str, data_dir: str = "", test: bool = False) -> str:
    """Where a corpus is read from, for the progress lines: a file, a data folder, the shipped copy or the hub."""
    if name.startswith(HUB_PREFIX) or name not in ("c4", "wikitext2"):
        return name
    root = find_data_dir(data_dir)
    if root is not None:
        return str(root / (WIKI_TEST if test else C4_FILE if name == "c4" else WIKI_VALID))
    return "the copy shipped in optprune/corpora" if name == "c4" or test else "the hub"


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
    """The WikiText-2 raw test: the data folder's file, else the shipped copy (the same bytes)."""
    root = find_data_dir(data_dir)
    if root is not None:
        return (root / WIKI_TEST).read_text(encoding="utf-8")
    return shipped_text("wikitext2-test")


def tokenize_long(tok, text: str) -> torch.Tensor:
    ids = tok(text, return_tensors="pt", add_special_tokens=False, verbose=False).input_ids[0]
    return ids


def calibration_windows(tok, name, nsamples: int, seqlen: int, seed: int = 0, data_dir: str = "",
                        bos_id: int | None = None) -> torch.Tensor:
    """(nsamples, seqlen) token windows from the concatenated corpus `name` (a corpus name, or a
    list of strings / HF Dataset); see sample_windows."""
    if nsamples <= 0 or seqlen <= 1:
        raise ValueError("nsamples must be positive and seqlen > 1")
    docs = corpus_documents(name, data_dir) if isinstance(name, str) else documents_of(name)
    return sample_windows(tokenize_long(tok, "\n\n".join(docs)), nsamples, seqlen, seed, bos_id)


def sample_windows(ids: torch.Tensor, nsamples: int, seqlen: int, seed: int, bos_id: int | None) -> torch.Tensor:
    """nsamples uniform random starts (seeded) in the token stream `ids`, each window seqlen tokens;
    with bos_id each window is BOS + seqlen - 1 corpus tokens (the same seeded starts).  A stream with fewer
    possible starts than nsamples is refused (its windows would repeat); in a longer one windows may still
    overlap, as random starts do (`distinct_windows` says how many differ)."""
    if len(ids) - seqlen < nsamples:
        raise ValueError(f"calibration text has {len(ids)} tokens: at most {max(len(ids) - seqlen, 0)} distinct "
                         f"windows of {seqlen}, fewer than nsamples={nsamples}; give more text or lower --nsamples "
                         "or --seqlen")
    gen = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(ids) - seqlen, (nsamples,), generator=gen)
    if bos_id is None:
        return torch.stack([ids[s:s + seqlen] for s in starts.tolist()])
    bos = torch.tensor([bos_id], dtype=ids.dtype)
    return torch.stack([torch.cat([bos, ids[s:s + seqlen - 1]]) for s in starts.tolist()])


def distinct_windows(windows: torch.Tensor) -> int:
    return len({tuple(w.tolist()) for w in windows})


def window_bos_id(adapter, tok, config) -> int | None:
    """The BOS id when the family's windows start with BOS (adapter.window_bos), else None."""
    if not adapter.window_bos:
        return None
    bos = getattr(tok, "bos_token_id", None) if tok is not None else None
    bos = bos if bos is not None else getattr(config, "bos_token_id", None)
    if bos is None:
        raise ValueError(f"{adapter.model_type} windows start with BOS, but neither tokenizer nor config has one")
    return int(bos)
