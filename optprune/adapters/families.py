"""Explicit adapters for the supported decoder families, and the registry lookup.

A family without an entry gets the generic adapter: blocks inferred from the model
(`infer_blocks_path`), every linear pruned, Grams shared by detecting linears fed the
same tensor, no structured layouts (unstructured, per-row and N:M only)."""
from __future__ import annotations

import torch

from .base import ArchitectureError, AttentionLayout, MlpLayout, ModelAdapter

QKV = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")
GATED = MlpLayout(inputs=("mlp.gate_proj", "mlp.up_proj"), output="mlp.down_proj")
LLAMA_GROUPS = (QKV, ("self_attn.o_proj",), ("mlp.gate_proj", "mlp.up_proj"), ("mlp.down_proj",))


def _llama_like(model_type: str, bos: bool = False, notes: str = "") -> ModelAdapter:
    return ModelAdapter(model_type, window_bos=bos, gram_groups=LLAMA_GROUPS, mlp=GATED,
                        attention=AttentionLayout(), notes=notes)


ADAPTERS: dict[str, ModelAdapter] = {a.model_type: a for a in (
    _llama_like("llama"),
    _llama_like("mistral"),
    _llama_like("qwen2"),
    _llama_like("qwen3"),
    _llama_like("gemma", bos=True),
    _llama_like("gemma2", bos=True, notes="alternating sliding/full attention: each block keeps its own mask"),
    _llama_like("gemma3_text", bos=True, notes="sliding/full layers with their own rope bases"),
    ModelAdapter("phi3", attention_module="self_attn", gram_groups=(("self_attn.qkv_proj",), ("self_attn.o_proj",), ("mlp.gate_up_proj",),
                                      ("mlp.down_proj",)),
                 mlp=MlpLayout(inputs=("mlp.gate_up_proj",), output="mlp.down_proj", fused=2),
                 notes="fused qkv_proj: structured pruning removes MLP channels only"),
    ModelAdapter("opt", blocks_path="model.decoder.layers", attention_module="self_attn",
                 gram_groups=(("self_attn.k_proj", "self_attn.v_proj", "self_attn.q_proj"), ("self_attn.out_proj",),
                              ("fc1",), ("fc2",)),
                 mlp=MlpLayout(inputs=("fc1",), output="fc2", width_field="ffn_dim"),
                 notes="head_dim = hidden/heads: structured pruning removes MLP channels only"),
    ModelAdapter("gpt_neox", blocks_path="gpt_neox.layers", attention_module="attention",
                 gram_groups=(("attention.query_key_value",), ("attention.dense",), ("mlp.dense_h_to_4h",),
                              ("mlp.dense_4h_to_h",)),
                 mlp=MlpLayout(inputs=("mlp.dense_h_to_4h",), output="mlp.dense_4h_to_h"),
                 notes="fused query_key_value: structured pruning removes MLP channels only"),
)}
ADAPTERS["gemma3"] = ADAPTERS["gemma3_text"]


def adapter_for(net) -> ModelAdapter:
    """The family's adapter, or the generic one inferred from the model (saying so)."""
    if not isinstance(net, torch.nn.Module) or not hasattr(net, "config"):
        raise ArchitectureError(f"optprune prunes transformers causal LMs (a PreTrainedModel with a config), got "
                                f"{type(net).__name__}: load one with optprune.load_model or "
                                "AutoModelForCausalLM.from_pretrained")
    config = net.config
    if getattr(config, "is_encoder_decoder", False):
        raise ArchitectureError(f"{config.model_type} is an encoder-decoder: optprune prunes decoder-only LMs")
    model_type = getattr(config, "model_type", "")
    if model_type in ADAPTERS:
        adapter = ADAPTERS[model_type]
        try:
            net.get_submodule(adapter.blocks_path)
        except AttributeError:
            raise ArchitectureError(f"{type(net).__name__} ({model_type}) has no blocks at {adapter.blocks_path}") from None
        return adapter
    adapter = ModelAdapter(model_type, inferred=True).with_inferred_blocks(net)
    if not any(adapter.targets(b) for b in adapter.blocks(net)):
        raise ArchitectureError(f"{type(net).__name__}: its blocks hold no torch.nn.Linear to prune")
    return adapter
