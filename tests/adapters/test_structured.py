"""Structured pruning (MLP channels, KV groups) on a tiny random Llama: smaller, loadable, resumable."""
import copy

import pytest
import torch

from optprune.adapters import adapter_for, attention_layout, shrink_attention
from optprune.commands import main


@pytest.mark.parametrize("method,extra", [("spap", []), ("wanda", ["--refit"])])
def test_structured_prune_writes_a_smaller_loadable_checkpoint(tiny, cli_prune, tmp_path, method, extra):
    from transformers import AutoModelForCausalLM

    model_dir, _ = tiny
    dense = AutoModelForCausalLM.from_pretrained(model_dir)
    args = ["--sparsity", "0.25", "--attn-sparsity", "0", *extra]
    assert cli_prune(tmp_path / "s", method, "structured", args) == 0
    small = AutoModelForCausalLM.from_pretrained(tmp_path / "s")
    assert small.config.intermediate_size == 48
    for blk in small.model.layers:
        assert blk.mlp.gate_proj.weight.shape == (48, 32) and blk.mlp.down_proj.weight.shape == (32, 48)
    removed = sum(p.numel() for p in dense.parameters()) - sum(p.numel() for p in small.parameters())
    assert removed == 2 * 16 * 32 * 3
    x = torch.randint(0, dense.config.vocab_size, (1, 16))
    assert torch.isfinite(small(x).logits).all()


def test_structured_resume_reloads_shrunk_blocks(tiny, tiny_net, tmp_path):
    from optprune.api import run_pruning
    from optprune.config import PruneConfig
    from optprune.checkpoints.model_io import load_model

    net, _, windows = tiny_net
    config = PruneConfig(method="spap", pattern="structured", sparsity=0.5, dtype="float32", device="cpu")
    run_pruning(net, windows, config, adapter_for(net), tmp_path / "r")
    reference = {k: v.clone() for k, v in net.state_dict().items()}
    (tmp_path / "r" / "block001.pt").unlink()
    net2, _, _ = load_model(str(tiny[0]), dtype=torch.float32)
    run_pruning(net2, windows, config, adapter_for(net2), tmp_path / "r")
    assert net2.config.intermediate_size == 32
    for k, v in net2.state_dict().items():
        assert torch.allclose(v, reference[k], atol=1e-6), k


def test_structured_prune_removes_whole_kv_groups(tiny, cli_prune, tmp_path):
    from transformers import AutoModelForCausalLM

    model_dir, _ = tiny
    x = torch.randint(0, 20, (1, 16))
    for attn, heads in (("0.5", (2, 1)), ("0", (4, 2))):
        out = tmp_path / f"a{attn}"
        assert cli_prune(out, "spap", "structured", ["--attn-sparsity", attn]) == 0
        small = AutoModelForCausalLM.from_pretrained(out)
        assert (small.config.num_attention_heads, small.config.num_key_value_heads) == heads
        assert small.config.head_dim == 8 and small.config.intermediate_size == 32
        attn_mod = small.model.layers[1].self_attn
        assert attn_mod.q_proj.weight.shape == (heads[0] * 8, 32) and attn_mod.k_proj.weight.shape == (heads[1] * 8, 32)
        assert attn_mod.o_proj.weight.shape == (32, heads[0] * 8)
        assert torch.isfinite(small(x).logits).all()


def test_default_structured_sparsity_is_the_share_of_block_parameters_removed(tiny, tmp_path):
    from transformers import AutoModelForCausalLM

    model_dir, data = tiny
    dense = AutoModelForCausalLM.from_pretrained(model_dir)
    block_params = lambda m: sum(p.numel() for blk in m.model.layers for n, p in blk.named_parameters()
                                 if "proj" in n)
    for sp, heads, width in (("0.25", (2, 1), 56), ("0.1", (4, 2), 54)):
        # tiny block: 2 KV groups of 1536 parameters, 64 MLP channels of 96; 0.25 x 9216 = 2304 =
        # 1 group + 8 channels; 0.1 x 9216 = 921.6: round(0.2) = 0 groups, round(9.6) = 10 channels
        out = tmp_path / sp
        assert main(["prune", "--model", str(model_dir), "--method", "wanda", "--pattern", "structured",
                     "--sparsity", sp, "--nsamples", "4", "--seqlen", "32", "--data-dir", str(data),
                     "--out", str(out), "--device", "cpu", "--dtype", "float32"]) == 0
        small = AutoModelForCausalLM.from_pretrained(out)
        assert (small.config.num_attention_heads, small.config.num_key_value_heads) == heads
        assert small.config.intermediate_size == width
        assert abs(1 - block_params(small) / block_params(dense) - float(sp)) < 96 / 9216


def test_shrunk_attention_equals_zeroing_the_removed_groups(tiny_net):
    from optprune.engine import Engine

    net, _, windows = tiny_net
    adapter = adapter_for(net)
    engine = Engine(net, adapter, batch=2)
    calls = engine.capture(windows[:2])
    block = adapter.blocks(net)[0]
    n_kv, n_rep, hd = attention_layout(block, adapter)
    assert (n_kv, n_rep, hd) == (2, 2, 8)
    zeroed, shrunk = copy.deepcopy(block), copy.deepcopy(block)
    zeroed.self_attn.o_proj.weight.data[:, : n_rep * hd] = 0       # group 0 = query heads 0, 1
    shrink_attention(shrunk, adapter, torch.tensor([1]))
    outs = [engine.propagate(blk, 0, calls, calls.inputs, calls.inputs.like()).data for blk in (zeroed, shrunk)]
    assert torch.allclose(outs[0], outs[1], atol=1e-5)
