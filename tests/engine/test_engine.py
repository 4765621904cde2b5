"""The block engine on a tiny random Llama: resume, Grams, activation spill, weight mmap, API."""
from pathlib import Path

import pytest
import torch

import optprune
from optprune.adapters import adapter_for
from optprune.api import run_pruning
from optprune.config import PruneConfig


def _run(net, windows, folder, method="sparseswaps", pattern="per-row", progress=None, **settings):
    config = PruneConfig(method=method, pattern=pattern, sparsity=0.5, dtype="float32", device="cpu", **settings)
    return run_pruning(net, windows, config, adapter_for(net), folder, progress)


def test_resume_continues_from_the_first_unfinished_block(tiny, tiny_net, tmp_path):
    from optprune.checkpoints.model_io import load_model

    net, _, windows = tiny_net
    full = _run(net, windows, tmp_path / "a")
    reference = {k: v.clone() for k, v in net.state_dict().items()}
    (tmp_path / "a" / "block001.pt").unlink()      # as if killed during block 1
    net2, _, _ = load_model(str(tiny[0]), dtype=torch.float32)
    redone = []
    again = _run(net2, windows, tmp_path / "a", progress=lambda b, s: redone.append(b))
    assert redone == [1]
    # every block is timed once: block 0's time comes from the first run, block 1's from the second
    assert sorted(again["block_seconds"]) == sorted(full["block_seconds"]) == ["0", "1"]
    assert again["block_seconds"]["0"] == full["block_seconds"]["0"]
    assert again["input_seconds"] == full["input_seconds"]
    assert [r["rel_error"] for r in again["layers"]] == pytest.approx([r["rel_error"] for r in full["layers"]])
    for k, v in net2.state_dict().items():
        assert torch.allclose(v, reference[k]), k


def test_grams_are_exact_and_shared_as_the_adapter_declares(tiny_net):
    from optprune.engine import Engine, GramHooks

    net, _, windows = tiny_net
    adapter = adapter_for(net)
    engine = Engine(net, adapter, batch=2)
    calls = engine.capture(windows)
    block = adapter.blocks(net)[0]
    grams, _, _ = engine.grams(block, 0, calls, calls.inputs)
    seen = {}
    hooks = [m.register_forward_hook(lambda m_, i, o, n=n: seen.setdefault(n, []).append(i[0].reshape(-1, i[0].shape[-1])))
             for n, m in adapter.targets(block).items()]
    engine.propagate(block, 0, calls, calls.inputs)
    for h in hooks:
        h.remove()
    for name, xs in seen.items():
        X = torch.cat(xs)
        assert torch.allclose(grams[name], X.T @ X, rtol=1e-4, atol=1e-4), name
    assert grams["self_attn.q_proj"] is grams["self_attn.v_proj"] and grams["mlp.gate_proj"] is grams["mlp.up_proj"]
    assert grams["self_attn.q_proj"] is not grams["mlp.gate_proj"]
    # without declared groups, linears fed the same tensor are found and share one Gram
    hooks = GramHooks(adapter.targets(block), groups=None)
    engine.propagate(block, 0, calls, calls.inputs)
    detected = hooks.close()
    for name in grams:
        assert torch.allclose(detected[name], grams[name], rtol=1e-5), name
    assert detected["self_attn.k_proj"] is detected["self_attn.q_proj"]


def test_banded_lower_triangle_grams_equal_the_full_product():
    from optprune.engine import accumulate_gram, finish_gram

    gen = torch.Generator().manual_seed(0)
    G = torch.zeros(600, 600)
    xs = [torch.randn(3, 50, 600, generator=gen).to(torch.bfloat16), torch.randn(7, 600, generator=gen)]
    for x in xs:
        accumulate_gram(G, x)
    finish_gram(G)
    X = torch.cat([x.reshape(-1, 600).double() for x in xs])
    assert torch.equal(G, G.T)
    assert torch.allclose(G.double(), X.T @ X, rtol=1e-5, atol=1e-4)


def test_activations_spill_to_disk_under_a_memory_budget_with_identical_results(tiny, tmp_path):
    from optprune.engine import ActivationStore, parse_memory
    from optprune.data import calibration_windows
    from optprune.checkpoints.model_io import load_model

    assert parse_memory("2GiB") == 2 * 2 ** 30 and parse_memory("") is None and parse_memory("1e3") == 1000
    store = ActivationStore((3, 4, 5), torch.float32, budget_bytes=10, spill_dir=tmp_path / "s")
    assert store.spilled and store.path.stat().st_size == 3 * 4 * 5 * 4
    twin = store.like()
    assert twin.spilled and twin.path != store.path
    store.release()
    assert not any((tmp_path / "s").glob(store.path.name))

    model_dir, data = tiny
    results = []
    for budget in ("", "1"):
        net, tok, _ = load_model(str(model_dir), dtype=torch.float32)
        windows = calibration_windows(tok, "c4", 4, 32, 0, str(data))
        rep = _run(net, windows, tmp_path / f"b{budget}", "sparsegpt", max_memory=budget)
        assert rep["activations_on_disk"] == bool(budget)
        results.append(net.state_dict())
        assert not list((tmp_path / f"b{budget}").glob("acts/*.bin"))   # spill files removed
    for k in results[0]:
        assert torch.equal(results[0][k], results[1][k]), k


def _mapped_files(tensor):
    """Files whose memory mapping holds the tensor's data (Linux /proc/self/maps)."""
    ptr, found = tensor.data_ptr(), set()
    for line in Path("/proc/self/maps").read_text().splitlines():
        parts = line.split()
        lo, hi = (int(x, 16) for x in parts[0].split("-"))
        if lo <= ptr < hi and len(parts) > 5:
            found.add(parts[5])
    return found


def test_mmap_weights_swap_pruned_blocks_to_disk_with_identical_results(tiny, tmp_path):
    from optprune.data import calibration_windows
    from optprune.checkpoints.model_io import load_model

    model_dir, data = tiny
    states = []
    for mmap in (False, True):
        net, tok, _ = load_model(str(model_dir), dtype=torch.float32)
        assert any(f.endswith(".safetensors") for f in _mapped_files(net.model.layers[1].mlp.up_proj.weight))
        windows = calibration_windows(tok, "c4", 4, 32, 0, str(data))
        _run(net, windows, tmp_path / f"m{mmap}", "sparsegpt", mmap_weights=mmap)
        files = _mapped_files(net.model.layers[1].mlp.down_proj.weight)
        assert any(f.endswith("block001.pt") for f in files) == mmap
        states.append({k: v.clone() for k, v in net.state_dict().items()})
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k]), k


def test_only_a_data_free_mask_kept_as_is_skips_calibration():
    assert not PruneConfig(method="magnitude").needs_calibration()
    assert PruneConfig(method="magnitude", refit=True).needs_calibration()                # the refit needs G
    assert PruneConfig(method="magnitude", pattern="structured").needs_calibration()     # channels use G
    assert PruneConfig(method="wanda").needs_calibration()
    assert PruneConfig(method="magnitude", layer_errors=True).needs_calibration()


def test_the_python_api_prunes_in_memory_and_writes_nothing(tiny, tmp_path, monkeypatch):
    from optprune.checkpoints.model_io import load_model

    model_dir, data = tiny
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPTPRUNE_DATA_DIR", str(data))
    net, tok, _ = load_model(str(model_dir), dtype=torch.float32)
    dense_ppl = optprune.evaluate(net, tok, seqlen=32, device="cpu")["ppl"]
    report = optprune.prune(net, tok, method="sparsegpt", pattern="2:4", nsamples=4, seqlen=32, device="cpu")
    ppl = optprune.evaluate(net, tok, seqlen=32, device="cpu")["ppl"]
    assert len(report["layers"]) == 14 and report["adapter"] == "llama"
    assert float((net.model.layers[0].mlp.up_proj.weight == 0).float().mean()) == 0.5
    assert ppl != dense_ppl
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="unknown method"):
        optprune.prune(net, tok, method="nope")
