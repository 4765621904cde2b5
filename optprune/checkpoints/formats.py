"""Pruned checkpoints: plain by default, compressed-tensors' bitmask formats on request.

Formats (`--save-format`):
- plain (default): `save_pretrained` of the base architecture, zeros stored as zeros (structured: smaller
  matrices), no `quantization_config`.  transformers, vLLM and llama.cpp's converter load it as they load the
  base model.  (Until late 2026 the default carried compressed-tensors sparsity metadata; vLLM now refuses
  any `sparsity_config` with targets, so it is no longer written.  Such old checkpoints still load here.)
- compressed: sparse-24-bitmask for 2:4 (per weight: `shape`, `compressed` = the kept values
  (rows, cols/2), `bitmask` = the keep mask packed 8 per byte), sparse-bitmask for other patterns
  when it is smaller than dense (`shape`, `compressed` = the nonzeros row-major, `bitmask`,
  `row_offsets`), plain otherwise: compressed-tensors' layout, packed and unpacked with its own
  `pack_bitmasks` / `unpack_bitmasks`, declared in `config.json`'s `quantization_config` (quant_method
  "compressed-tensors", a `sparsity_config` validated by compressed-tensors' own classes).  Smaller on disk,
  but read by optprune's loader only: compressed-tensors >= 0.15 ships no sparse decompressors, so
  transformers would load these weights as missing (randomly initialised), and vLLM refuses them; its
  config.json therefore declares model_type "optprune-compressed" (the real one in `optprune_model_type`),
  which transformers refuses by name.
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch

from ..engine.pages import release_file_pages
from .remote_code import MODELING_FILE, write_widths_loader

SAVE_FORMATS = ("plain", "compressed")
RETIRED = {"dense": "dense (weights with compressed-tensors sparsity metadata) is no longer written: vLLM refuses "
                    "any sparsity_config with targets; plain (the default) loads everywhere"}
COMPRESSED_MODEL_TYPE = "optprune-compressed"     # transformers refuses it by name instead of loading random linears
COMPRESSED_WHY = ("compressed-tensors >= 0.15 ships no sparse decompressors, so transformers would load the pruned "
                  "linears as missing and vLLM refuses them")
BITMASK, BITMASK_24, DENSE = "sparse-bitmask", "sparse-24-bitmask", "dense"
PARTS = {BITMASK: ("shape", "compressed", "bitmask", "row_offsets"), BITMASK_24: ("shape", "compressed", "bitmask")}


def is_two_four(weight: torch.Tensor) -> bool:
    """At most 2 nonzeros in every group of 4 consecutive inputs."""
    return weight.shape[-1] % 4 == 0 and bool(((weight != 0).reshape(-1, 4).sum(1) <= 2).all())


def keep_two_of_four(weight: torch.Tensor) -> torch.Tensor:
    """The 2:4 keep mask of a weight with at most 2 nonzeros per group: its nonzeros, filled up to 2
    per group with the group's first zeros (a kept weight may be exactly 0)."""
    groups = (weight != 0).reshape(-1, 4)
    order = torch.argsort((~groups).to(torch.int8), dim=1, stable=True)[:, :2]
    return torch.zeros_like(groups).scatter_(1, order, True).reshape(weight.shape)


def compress_weight(fmt: str, weight: torch.Tensor) -> dict[str, torch.Tensor]:
    """compressed-tensors' parts of one weight in `fmt` (sparse-bitmask or sparse-24-bitmask)."""
    from compressed_tensors.utils import pack_bitmasks

    keep = keep_two_of_four(weight) if fmt == BITMASK_24 else weight != 0
    values = weight[keep]
    if fmt == BITMASK_24:
        return dict(shape=torch.tensor(list(weight.shape)).reshape(-1, 1), bitmask=pack_bitmasks(keep),
                    compressed=values.reshape(weight.shape[0], weight.shape[1] // 2))
    counts = keep.sum(1)
    return dict(shape=torch.tensor(list(weight.shape)), compressed=values, bitmask=pack_bitmasks(keep),
                row_offsets=torch.cumsum(counts, 0) - counts)


def decompress_weight(parts: dict[str, torch.Tensor]) -> torch.Tensor:
    """The dense weight from its bitmask parts (either format), through compressed-tensors' unpacking."""
    from compressed_tensors.utils import unpack_bitmasks

    shape = parts["shape"].flatten().tolist()
    keep = unpack_bitmasks(parts["bitmask"], shape)
    dense = torch.zeros(shape, dtype=parts["compressed"].dtype)
    dense[keep] = parts["compressed"].flatten()
    return dense


def stored_bytes(fmt: str, weights: dict[str, torch.Tensor]) -> int:
    """Bytes the target weights take in `fmt` (dense: numel x element size)."""
    if fmt == DENSE:
        return sum(w.numel() * w.element_size() for w in weights.values())
    return sum(t.numel() * t.element_size() for w in weights.values() for t in compress_weight(fmt, w).values())


def choose_format(requested: str, weights: dict[str, torch.Tensor]) -> str:
    """dense (the weights as they are) unless compressed is asked: then sparse-24-bitmask when every target
    is 2:4, else sparse-bitmask when it takes fewer bytes than dense, else dense."""
    if requested != "compressed" or not weights:
        return DENSE
    if all(is_two_four(w) for w in weights.values()):
        return BITMASK_24
    return BITMASK if stored_bytes(BITMASK, weights) < stored_bytes(DENSE, weights) else DENSE


def sparsity_metadata(fmt: str, weights: dict[str, torch.Tensor]) -> dict:
    """The quantization_config block, its sparsity_config checked by compressed-tensors' registry."""
    import compressed_tensors
    from compressed_tensors.config import SparsityCompressionConfig

    zeros = sum(int((w == 0).sum()) for w in weights.values())
    total = sum(w.numel() for w in weights.values())
    structure = "2:4" if weights and all(is_two_four(w) for w in weights.values()) else "unstructured"
    config = SparsityCompressionConfig.load_from_registry(
        fmt, format=fmt, global_sparsity=zeros / max(total, 1), sparsity_structure=structure,
        targets=sorted(weights), ignore=["lm_head"])
    return dict(quant_method="compressed-tensors", format=DENSE, version=compressed_tensors.__version__,
                sparsity_config=config.model_dump())


def target_weights(net, adapter) -> dict[str, torch.Tensor]:
    """'<module name>' -> weight of every linear the adapter prunes, in every block."""
    names = {id(m): n for n, m in net.named_modules()}
    out = {}
    for block in adapter.blocks(net):
        for module in adapter.targets(block).values():
            out[names[id(module)]] = module.weight.detach()
    return out


def check_save_format(save_format: str) -> None:
    if save_format in RETIRED:
        raise ValueError(f"--save-format {save_format}: {RETIRED[save_format]}")
    if save_format not in SAVE_FORMATS:
        raise ValueError(f"--save-format {save_format!r}: choose from {', '.join(SAVE_FORMATS)}")


def save_checkpoint(net, tok, out: Path, adapter, save_format: str = "plain", structured: bool = False) -> dict:
    """save_pretrained, then (compressed) the targets' weights rewritten as bitmasks with the sparsity metadata
    in config.json (never for `structured`: smaller matrices, not sparse ones).  Returns what was written:
    format, `loader` (transformers, or optprune where only its loader reads the files, and `why`), and for
    compressed the measured global sparsity and the bytes of the target weights dense and as stored."""
    check_save_format(save_format)
    out = Path(out)
    save_for_generation(net, out)
    tok.save_pretrained(str(out))
    weights = target_weights(net, adapter)
    fmt = DENSE if save_format == "plain" or structured else choose_format(save_format, weights)
    if fmt == DENSE:
        if not getattr(net.config, "optprune_block_widths", None):
            return dict(format="plain", loader="transformers")
        config_file = out / "config.json"
        config = write_widths_loader(out, net, adapter, json.loads(config_file.read_text()))
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True))
        return dict(format="plain", loader="transformers (trust_remote_code=True)",
                    why=f"its blocks have unequal widths, which the family's config cannot state: {MODELING_FILE} "
                        "gives each linear its saved shape")
    _compress_files(out, fmt, set(weights))
    meta = sparsity_metadata(fmt, weights)
    config_file = out / "config.json"
    config = json.loads(config_file.read_text())
    config["quantization_config"] = meta
    config["optprune_model_type"], config["model_type"] = config["model_type"], COMPRESSED_MODEL_TYPE
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True))
    return dict(format=fmt, loader="optprune", why=COMPRESSED_WHY, global_sparsity=meta["sparsity_config"]["global_sparsity"],
                sparsity_structure=meta["sparsity_config"]["sparsity_structure"],
                dense_bytes=stored_bytes(DENSE, weights), stored_bytes=stored_bytes(fmt, weights))


SHARD_SIZE = "2GB"       # safetensors shards: a memory-mapped model's pages go back after each (pages.py)


def save_for_generation(net, out: Path) -> None:
    """save_pretrained with the KV cache on in config.json and generation_config.json (the engine turns it off
    while pruning; a checkpoint saved that way decodes without a cache, several times slower), in shards of
    at most SHARD_SIZE, each shard's mapped pages handed back once written."""
    use_cache = net.config.use_cache
    net.config.use_cache = True
    net.generation_config.use_cache = True
    try:
        with pages_released_per_shard():
            net.save_pretrained(str(out), safe_serialization=True, max_shard_size=SHARD_SIZE)
    finally:
        net.config.use_cache = use_cache


@contextlib.contextmanager
def pages_released_per_shard():
    """transformers' shard writer wrapped so that each written shard's memory-mapped pages are released
    (`release_file_pages`): writing a model loaded with --mmap-weights touches every page once, and without
    this they would all stay resident until the end (where transformers names its writer otherwise, a no-op)."""
    import transformers.modeling_utils as modeling

    write = getattr(modeling, "safe_save_file", None)
    if write is None:
        yield
        return

    def write_then_release(tensors, *args, **kwargs):
        result = write(tensors, *args, **kwargs)
        release_file_pages(tensors.values())
        return result
    modeling.safe_save_file = write_then_release
    try:
        yield
    finally:
        modeling.safe_save_file = write


def with_saved_generation_config(net, path: str | Path):
    """The folder's generation_config.json on a model built from its config (from_config reads only config.json,
    whose use_cache an older optprune wrote as false); the cache on where the folder says nothing."""
    from transformers import GenerationConfig

    if Path(path, "generation_config.json").is_file():
        net.generation_config = GenerationConfig.from_pretrained(str(path))
    else:
        net.generation_config.use_cache = True
    return net


def _compress_files(out: Path, fmt: str, targets: set[str]) -> None:
    """Rewrite every safetensors file of `out`: '<target>.weight' -> '<target>.<part>' (and the index)."""
    from safetensors.torch import load_file, save_file

    renamed = {}
    for path in sorted(out.glob("*.safetensors")):
        tensors = load_file(str(path))
        for key in [k for k in tensors if k.endswith(".weight") and k[:-len(".weight")] in targets]:
            prefix = key[:-len(".weight")]
            for part, value in compress_weight(fmt, tensors.pop(key)).items():
                tensors[f"{prefix}.{part}"] = value.contiguous()
                renamed.setdefault(key, []).append((f"{prefix}.{part}", path.name))
        save_file(tensors, str(path), metadata={"format": "pt"})
    index = out / "model.safetensors.index.json"
    if index.exists():
        data = json.loads(index.read_text())
        for key, parts in renamed.items():
            data["weight_map"].pop(key, None)
            data["weight_map"].update(dict(parts))
        index.write_text(json.dumps(data, indent=2))


def checkpoint_config(path: str | Path):
    """The HF config of a saved folder; a compressed checkpoint's declares model_type optprune-compressed (so
    plain transformers refuses it by name instead of loading its bitmask linears as random weights), and its
    own type is read from `optprune_model_type`."""
    from transformers import AutoConfig

    raw = json.loads((Path(path) / "config.json").read_text())
    if raw.get("model_type") != COMPRESSED_MODEL_TYPE:
        return AutoConfig.from_pretrained(str(path))
    raw.pop("model_type")
    return AutoConfig.for_model(raw.pop("optprune_model_type"), **raw)


def sparsity_format(config) -> str | None:
    """The compressed-tensors sparsity format a (HF) config declares, None when it declares none."""
    meta = getattr(config, "quantization_config", None)
    meta = meta if isinstance(meta, dict) else getattr(meta, "to_dict", lambda: None)() or {}
    if meta.get("quant_method") != "compressed-tensors" or meta.get("config_groups"):
        return None
    return (meta.get("sparsity_config") or {}).get("format")


def load_sparse_checkpoint(path: str | Path, config, dtype: torch.dtype):
    """A checkpoint saved by save_checkpoint (or any with only compressed-tensors sparsity metadata):
    the model built from its config without the metadata, bitmask weights decompressed."""
    from transformers import AutoModelForCausalLM

    fmt = sparsity_format(config)
    clean = type(config).from_dict({k: v for k, v in config.to_dict().items() if k != "quantization_config"})
    if fmt not in PARTS:
        return AutoModelForCausalLM.from_pretrained(str(path), config=clean, dtype=dtype)
    tensors = saved_tensors(path)
    state = {k: v for k, v in tensors.items() if not any(k.endswith("." + p) for p in PARTS[fmt])}
    for prefix in {k.rsplit(".", 1)[0] for k in tensors if k.endswith(".bitmask")}:
        state[prefix + ".weight"] = decompress_weight({p: tensors[f"{prefix}.{p}"] for p in PARTS[fmt]})
    net = AutoModelForCausalLM.from_config(clean, dtype=dtype)
    load_every_weight(net, state, clean, f"{path}: the {fmt} checkpoint does not fit its config")
    return with_saved_generation_config(net, path)


def saved_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of every safetensors file of a checkpoint folder."""
    from safetensors.torch import load_file

    tensors = {}
    for file in sorted(Path(path).glob("*.safetensors")):
        tensors.update(load_file(str(file)))
    return tensors


def load_every_weight(net, state: dict, config, what: str) -> None:
    """load_state_dict that refuses a missing or unexpected weight (a tied head aside) instead of leaving
    it initialised at random."""
    missing, unexpected = net.load_state_dict(state, strict=False)
    tied = {k for k in missing if k.endswith("lm_head.weight") and getattr(config, "tie_word_embeddings", False)}
    if set(missing) - tied or unexpected:
        raise ValueError(f"{what} (missing {sorted(set(missing) - tied)[:3]}, unexpected {sorted(unexpected)[:3]})")
    if tied:
        net.tie_weights()


def load_block_widths_checkpoint(path: str | Path, config, dtype: torch.dtype):
    """A structured checkpoint whose blocks have different widths (`optprune_block_widths` in its config):
    built at the largest widths, each block shrunk to its own, then every saved weight loaded (strictly)."""
    from transformers import AutoModelForCausalLM

    from ..adapters import adapter_for, shrink_to_widths

    net = AutoModelForCausalLM.from_config(config, dtype=dtype)
    shrink_to_widths(net, adapter_for(net), config.optprune_block_widths)
    load_every_weight(net, saved_tensors(path), config, f"{path}: the checkpoint does not fit its block widths")
    return with_saved_generation_config(net, path)
