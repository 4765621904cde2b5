"""Every family's adapter, end to end on a tiny random model built offline from its config."""
import itertools

import pytest
import torch
import transformers as T

import optprune
from optprune.adapters import ADAPTERS, ArchitectureError, adapter_for
from optprune.engine import Engine, GramHooks, eval_windows, streamed_perplexity, window_nll
from families import CONFIGS, tiny_model, windows

METHODS = ("magnitude", "wanda", "sparsegpt", "sparsefw", "sparseswaps", "maiht", "spap")
PATTERNS = ("unstructured", "per-row", "2:4", "structured")
ACCEPTS = {"spap": {"structured"}, "magnitude": set(PATTERNS), "wanda": set(PATTERNS)}


def _dense_walk(net, x):
    """Every block's output computed by the engine, block by block."""
    adapter = adapter_for(net)
    engine = Engine(net, adapter, batch=2)
    calls = engine.capture(x)
    inps, outs, states = calls.inputs, calls.inputs.like(), []
    for b, block in enumerate(adapter.blocks(net)):
        engine.propagate(block, b, calls, inps, outs)
        inps, outs = outs, inps
        states.append(inps.data.clone())
    return engine, calls, states


@pytest.mark.parametrize("family", CONFIGS)
def test_engine_propagation_equals_the_models_own_forward(family):
    net, x = tiny_model(family), windows()
    assert adapter_for(net) is ADAPTERS[family] and not adapter_for(net).inferred
    engine, _, states = _dense_walk(net, x)
    with torch.no_grad():
        ref = net(x, output_hidden_states=True)
    for b in range(len(states) - 1):          # the last hidden state is reported after the final norm
        assert torch.equal(states[b], ref.hidden_states[b + 1]), (family, b)
    ppl = streamed_perplexity(engine, x.flatten(), x.shape[1])
    assert ppl["ppl"] == pytest.approx(float(window_nll(ref.logits, x).mean().exp()), rel=1e-5)


@pytest.mark.parametrize("family", ["gemma2", "gemma3_text"])
def test_each_block_gets_its_own_mask_and_rope(family):
    """Calibrating a full-attention block with block 0's (sliding-window) arguments changes it."""
    net, x = tiny_model(family), windows()
    engine, calls, states = _dense_walk(net, x)
    assert net.config.layer_types[:2] == ["sliding_attention", "full_attention"]
    wrong = calls.inputs.like()
    calls.kwargs[1] = calls.kwargs[0]
    calls.inputs.data.copy_(states[0])
    engine.propagate(engine.adapter.blocks(net)[1], 1, calls, calls.inputs, wrong)
    assert not torch.allclose(wrong.data, states[1], atol=1e-3)


@pytest.mark.parametrize("family", CONFIGS)
def test_every_method_and_pattern_prunes_saves_and_reloads(family, tmp_path):
    x = windows()
    dense_size = sum(p.numel() for p in tiny_model(family).parameters())
    for method, pattern in itertools.product(METHODS, PATTERNS):
        if pattern not in ACCEPTS.get(method, set(PATTERNS) - {"structured"}):
            continue
        net = tiny_model(family)
        report = optprune.prune(net, x, method, pattern, 0.5, dtype="float32", device="cpu")
        assert report["layers"], (method, pattern)
        net.save_pretrained(tmp_path / f"{method}-{pattern}")
        again = T.AutoModelForCausalLM.from_pretrained(tmp_path / f"{method}-{pattern}").eval()
        with torch.no_grad():
            assert torch.allclose(again(x).logits, net(x).logits, atol=1e-5), (method, pattern)
        size = sum(p.numel() for p in again.parameters())
        assert (size < dense_size) == (pattern == "structured"), (method, pattern)


@pytest.mark.parametrize("family", CONFIGS)
def test_declared_gram_groups_are_the_linears_fed_the_same_input(family):
    net, x = tiny_model(family), windows()
    adapter = adapter_for(net)
    block = adapter.blocks(net)[0]
    engine = Engine(net, adapter)
    calls = engine.capture(x)
    hooks = GramHooks(adapter.targets(block), groups=None)
    engine.propagate(block, 0, calls, calls.inputs)
    grams = hooks.close()
    detected = {frozenset(n for n in grams if grams[n] is grams[first]) for first in grams}
    assert detected == {frozenset(g) for g in adapter.gram_groups}


def test_families_trained_with_bos_get_it_at_every_window():
    assert {name for name, a in ADAPTERS.items() if a.window_bos} == {"gemma", "gemma2", "gemma3_text", "gemma3"}
    ids = torch.arange(3, 50)
    assert (eval_windows(ids, 8, bos_id=1)[:, 0] == 1).all()


def test_a_family_without_an_adapter_is_inferred_and_prunes_entrywise(tmp_path):
    cfg = T.OlmoConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, max_position_embeddings=64, pad_token_id=0, bos_token_id=1,
                       eos_token_id=2)
    torch.manual_seed(0)
    net = T.AutoModelForCausalLM.from_config(cfg).eval()
    adapter = adapter_for(net)
    assert adapter.inferred and adapter.blocks_path == "model.layers"
    x = windows()
    for pattern in ("unstructured", "per-row", "2:4"):
        report = optprune.prune(net, x, "sparsegpt", pattern, 0.5, dtype="float32", device="cpu")
        assert report["adapter"] == "olmo (layout inferred)" and len(report["layers"]) == 14
    with pytest.raises(ArchitectureError, match="structured pruning needs the MLP layout of olmo"):
        optprune.prune(net, x, "wanda", "structured", 0.5, dtype="float32", device="cpu")


def test_encoders_and_models_without_repeated_blocks_are_refused():
    from optprune.checkpoints.model_io import check_architecture

    with pytest.raises(ArchitectureError, match="is an encoder"):
        check_architecture(T.BertConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                        intermediate_size=8))

    class Flat(torch.nn.Module):
        config = T.PretrainedConfig()

        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(2, 2)
    with pytest.raises(ArchitectureError, match="no repeated blocks"):
        adapter_for(Flat())


def test_the_adapter_says_which_layers_are_attention_and_the_generic_one_refuses():
    from optprune.adapters import ADAPTERS, ArchitectureError, ModelAdapter

    assert ADAPTERS["llama"].is_attention("self_attn.q_proj") and not ADAPTERS["llama"].is_attention("mlp.up_proj")
    assert ADAPTERS["gpt_neox"].is_attention("attention.dense")
    assert not ADAPTERS["gpt_neox"].is_attention("mlp.dense_4h_to_h")
    assert not ADAPTERS["llama"].is_attention("self_attn_norm.weight")       # a prefix of a part is not the module
    with pytest.raises(ArchitectureError, match="bound blocks:A-B instead"):
        ModelAdapter("custom", inferred=True).is_attention("attn.c_attn")
