"""Tiny randomly initialised models of every supported family, built offline from their configs."""
import torch
import transformers as T

IDS = dict(pad_token_id=0, bos_token_id=1, eos_token_id=2)
LLAMA_LIKE = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=128, **IDS)
CONFIGS = {
    "llama": lambda: T.LlamaConfig(**LLAMA_LIKE),
    "mistral": lambda: T.MistralConfig(**LLAMA_LIKE, sliding_window=8),
    "qwen2": lambda: T.Qwen2Config(**LLAMA_LIKE),
    "qwen3": lambda: T.Qwen3Config(**LLAMA_LIKE, head_dim=8),
    "gemma2": lambda: T.Gemma2Config(**LLAMA_LIKE, head_dim=8, sliding_window=8),   # sliding / full alternate
    "gemma3_text": lambda: T.Gemma3TextConfig(**LLAMA_LIKE, head_dim=8, sliding_window=8, sliding_window_pattern=2,
                                              rope_local_base_freq=100.0),
    "phi3": lambda: T.Phi3Config(**LLAMA_LIKE),
    "opt": lambda: T.OPTConfig(vocab_size=64, hidden_size=32, ffn_dim=64, num_hidden_layers=4, num_attention_heads=4,
                               max_position_embeddings=128, word_embed_proj_dim=32, **IDS),
    "gpt_neox": lambda: T.GPTNeoXConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                                        num_attention_heads=4, max_position_embeddings=128, **IDS),
}


def tiny_model(family: str, seed: int = 0):
    torch.manual_seed(seed)
    return T.AutoModelForCausalLM.from_config(CONFIGS[family]()).eval()


def windows(n: int = 4, seqlen: int = 24, seed: int = 1) -> torch.Tensor:
    return torch.randint(3, 64, (n, seqlen), generator=torch.Generator().manual_seed(seed))
