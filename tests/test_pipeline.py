"""End-to-end pipeline on a tiny random Llama (no hub, no ../shared)."""
import hashlib
import json
import math
from pathlib import Path

import pytest
import torch

from optprune.cli import main
from optprune.pipeline.evaluate import perplexity

def _digest(folder: Path) -> str:
    return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()


def _prune(model_dir, data, out, method="wanda", pattern="per-row", extra=()):
    return main(["prune", "--model", str(model_dir), "--method", method, "--pattern", pattern,
                 "--sparsity", "0.5", "--nsamples", "4", "--seqlen", "32", "--data-dir", str(data),
                 "--out", str(out), "--device", "cpu", "--dtype", "float32", *extra])


@pytest.mark.parametrize("method,pattern", [("wanda", "per-row"), ("sparseswaps", "2:4"), ("sparsegpt", "unstructured")])
def test_prune_writes_a_sparse_checkpoint_and_leaves_the_input(tiny, tmp_path, method, pattern):
    from transformers import AutoModelForCausalLM

    model_dir, data = tiny
    before = _digest(model_dir)
    assert _prune(model_dir, data, tmp_path / "out", method, pattern, ["--eval-ppl"]) == 0
    assert _digest(model_dir) == before
    report = json.loads((tmp_path / "out" / "optprune_report.json").read_text())
    assert len(report["layers"]) == 14 and math.isfinite(report["wikitext2"]["ppl"])
    pruned = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    for name, p in pruned.named_parameters():
        if name.endswith("proj.weight"):
            assert float((p == 0).float().mean()) == pytest.approx(0.5, abs=0.02), name
    assert not (tmp_path / "out" / ".resume").exists()


def test_refuses_to_overwrite_the_input_model(tiny, capsys):
    model_dir, data = tiny
    before = _digest(model_dir)
    assert _prune(model_dir, data, model_dir) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert _digest(model_dir) == before


def test_resume_continues_from_the_first_unfinished_block(tiny, tmp_path):
    from optprune.patterns import Pattern
    from optprune.pipeline.data import calibration_windows
    from optprune.pipeline.model_io import load_model
    from optprune.pipeline.sequential import prune_sequential

    model_dir, data = tiny
    net, tok, _ = load_model(str(model_dir), dtype=torch.float32)
    windows = calibration_windows(tok, "c4", 4, 32, 0, str(data))
    pat = Pattern("per-row", 0.5)
    full = prune_sequential(net, windows, "sparseswaps", pat, tmp_path / "a")
    reference = {k: v.clone() for k, v in net.state_dict().items()}
    (tmp_path / "a" / ".resume" / "block001.pt").unlink()      # as if killed during block 1
    net2, _, _ = load_model(str(model_dir), dtype=torch.float32)
    redone = []
    again = prune_sequential(net2, windows, "sparseswaps", pat, tmp_path / "a", progress=lambda b, s: redone.append(b))
    assert redone == [1]
    # every block is timed once: block 0's time comes from the first run, block 1's from the second
    assert sorted(again["block_seconds"]) == sorted(full["block_seconds"]) == [str(b) for b in range(len(full["block_seconds"]))]
    assert again["block_seconds"]["0"] == full["block_seconds"]["0"]
    assert again["input_seconds"] == full["input_seconds"]
    assert [r["rel_error"] for r in again["layers"]] == pytest.approx([r["rel_error"] for r in full["layers"]])
    for k, v in net2.state_dict().items():
        assert torch.allclose(v, reference[k]), k


def test_calibration_is_seeded_and_bad_settings_fail(tiny):
    from optprune.pipeline.data import calibration_windows
    from optprune.pipeline.model_io import load_model

    model_dir, data = tiny
    _, tok, _ = load_model(str(model_dir), dtype=torch.float32)
    a = calibration_windows(tok, "c4", 3, 16, 0, str(data))
    assert torch.equal(a, calibration_windows(tok, "c4", 3, 16, 0, str(data)))
    assert not torch.equal(a, calibration_windows(tok, "c4", 3, 16, 1, str(data)))
    with pytest.raises(ValueError, match="fewer than seqlen"):
        calibration_windows(tok, "c4", 3, 10 ** 6, 0, str(data))


def test_unknown_architecture_is_rejected(tmp_path, capsys):
    from transformers import BertConfig

    BertConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
               intermediate_size=8).save_pretrained(tmp_path)
    assert main(["eval", "--model", str(tmp_path)]) == 2
    assert "unknown architecture" in capsys.readouterr().err


def test_perplexity_of_a_uniform_model_is_the_vocabulary_size():
    class Uniform(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return type("Out", (), {"logits": torch.zeros(*x.shape, 37)})()

    out = perplexity(Uniform(), torch.randint(0, 37, (100,)), seqlen=20)
    assert out["windows"] == 5 and out["ppl"] == pytest.approx(37.0, rel=1e-5)


def test_zero_shot_scorer_on_a_local_task(tiny, tmp_path):
    from optprune.pipeline.model_io import load_model
    from optprune.pipeline.zeroshot import continuation_logprob, evaluate_tasks

    model_dir, _ = tiny
    net, tok, _ = load_model(str(model_dir), dtype=torch.float32)
    (tmp_path / "arc_easy").mkdir()
    item = {"question": {"stem": "The fox is", "choices": [{"text": "quick", "label": "A"},
                                                          {"text": "slow", "label": "B"}]}, "answerKey": "A"}
    (tmp_path / "arc_easy" / "ARC-Easy-Test.jsonl").write_text((json.dumps(item) + "\n") * 3)
    res = evaluate_tasks(net, tok, ["arc_easy"], str(tmp_path))
    assert res["arc_easy"]["n"] == 3 and res["arc_easy"]["acc"] in (0.0, 1.0)
    with pytest.raises(ValueError, match="unknown zero-shot task"):
        evaluate_tasks(net, tok, ["nope"], str(tmp_path))
    torch.nn.init.zeros_(net.lm_head.weight)       # uniform next-token distribution
    n_cont = len(tok(" quick", add_special_tokens=False).input_ids)
    assert continuation_logprob(net, tok, "The fox is", " quick") == pytest.approx(
        -n_cont * math.log(net.config.vocab_size), rel=1e-5)


def test_certify_cli_reports_gaps(tmp_path, capsys):
    from safetensors.torch import save_file

    from optprune import random_problem

    prob = random_problem(4, 16, seed=3, dtype=torch.float32)
    save_file({"lin.weight": prob.W, "lin.gram": prob.G}, str(tmp_path / "layer.safetensors"))
    rc = main(["certify", "--layer", str(tmp_path / "layer.safetensors"), "--method", "wanda,sparseswaps",
               "--rows", "0,1", "--window", "8", "--json", str(tmp_path / "r.json")])
    assert rc == 0
    report = json.loads((tmp_path / "r.json").read_text())[0]
    for row in report["methods"]:
        assert row["block_status"] == "optimal"
        assert row["block_value"] >= row["block_optimum"] - 1e-9 * abs(row["block_optimum"])
        assert row["rel_error_mask"] >= report["relaxation_bound"] - 1e-12
    assert "| sparseswaps |" in capsys.readouterr().out
    assert main(["certify", "--layer", str(tmp_path / "missing.safetensors")]) == 2


def test_report_writes_markdown_and_real_pngs(tmp_path):
    from safetensors.torch import save_file

    from optprune import random_problem

    prob = random_problem(6, 16, seed=4, dtype=torch.float32)
    save_file({"lin.weight": prob.W, "lin.gram": prob.G}, str(tmp_path / "layer.safetensors"))
    assert main(["report", "--layer", str(tmp_path / "layer.safetensors"), "--method", "wanda,sparseswaps,maiht",
                 "--window", "8", "--out", str(tmp_path / "rep")]) == 0
    text = (tmp_path / "rep" / "report.md").read_text()
    for fig in ("objective", "gaps", "overlap", "rows"):
        assert f"({fig}.png)" in text
        assert (tmp_path / "rep" / f"{fig}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| sparseswaps |" in text and "optimal" in text


def test_mask_agreement_is_one_on_the_diagonal_and_symmetric():
    from optprune.report import mask_agreement

    a, b = torch.rand(4, 8) > 0.5, torch.rand(4, 8) > 0.5
    agree = mask_agreement({"a": a, "b": b, "not_a": ~a})
    assert (agree.diagonal() == 1).all() and (agree == agree.T).all()
    assert agree[0, 2] == 0.0


@pytest.mark.parametrize("method,extra", [("spap", []), ("wanda", ["--refit"])])
def test_structured_prune_writes_a_smaller_loadable_checkpoint(tiny, tmp_path, method, extra):
    from transformers import AutoModelForCausalLM

    model_dir, data = tiny
    dense = AutoModelForCausalLM.from_pretrained(model_dir)
    assert main(["prune", "--model", str(model_dir), "--method", method, "--pattern", "structured",
                 "--sparsity", "0.25", "--attn-sparsity", "0", "--nsamples", "4", "--seqlen", "32",
                 "--data-dir", str(data), "--out", str(tmp_path / "s"), "--device", "cpu", "--dtype", "float32",
                 *extra]) == 0
    small = AutoModelForCausalLM.from_pretrained(tmp_path / "s")
    assert small.config.intermediate_size == 48
    for blk in small.model.layers:
        assert blk.mlp.gate_proj.weight.shape == (48, 32) and blk.mlp.down_proj.weight.shape == (32, 48)
    removed = sum(p.numel() for p in dense.parameters()) - sum(p.numel() for p in small.parameters())
    assert removed == 2 * 16 * 32 * 3
    x = torch.randint(0, dense.config.vocab_size, (1, 16))
    assert torch.isfinite(small(x).logits).all()


def test_structured_resume_reloads_shrunk_blocks(tiny, tmp_path):
    from optprune.patterns import Pattern
    from optprune.pipeline.data import calibration_windows
    from optprune.pipeline.model_io import load_model
    from optprune.pipeline.sequential import prune_sequential

    model_dir, data = tiny
    net, tok, _ = load_model(str(model_dir), dtype=torch.float32)
    windows = calibration_windows(tok, "c4", 4, 32, 0, str(data))
    pat = Pattern("structured", 0.5)
    prune_sequential(net, windows, "spap", pat, tmp_path / "r")
    reference = {k: v.clone() for k, v in net.state_dict().items()}
    (tmp_path / "r" / ".resume" / "block001.pt").unlink()
    net2, _, _ = load_model(str(model_dir), dtype=torch.float32)
    prune_sequential(net2, windows, "spap", pat, tmp_path / "r")
    assert net2.config.intermediate_size == 32
    for k, v in net2.state_dict().items():
        assert torch.allclose(v, reference[k], atol=1e-6), k


def test_activations_spill_to_disk_under_a_memory_budget_with_identical_results(tiny, tmp_path):
    from optprune.patterns import Pattern
    from optprune.pipeline.activations import ActivationStore, parse_memory
    from optprune.pipeline.data import calibration_windows
    from optprune.pipeline.model_io import load_model
    from optprune.pipeline.sequential import prune_sequential

    assert parse_memory("2GiB") == 2 * 2 ** 30 and parse_memory("") is None and parse_memory("1e3") == 1000
    store = ActivationStore((3, 4, 5), torch.float32, budget_bytes=10, spill_dir=tmp_path / "s")
    assert store.spilled and store.path.stat().st_size == 3 * 4 * 5 * 4
    store.data[1] = 7.0
    twin = store.like()
    assert twin.spilled and twin.path != store.path
    store.release()
    assert not any((tmp_path / "s").glob(store.path.name))

    model_dir, data = tiny
    results = []
    for budget in (None, 1):
        net, tok, _ = load_model(str(model_dir), dtype=torch.float32)
        windows = calibration_windows(tok, "c4", 4, 32, 0, str(data))
        rep = prune_sequential(net, windows, "sparsegpt", Pattern("per-row", 0.5), tmp_path / f"b{budget}",
                               max_memory=budget)
        assert rep["activations_on_disk"] == (budget is not None)
        results.append(net.state_dict())
        assert not list((tmp_path / f"b{budget}" / ".resume").glob("acts/*.bin"))   # spill files removed
    for k in results[0]:
        assert torch.equal(results[0][k], results[1][k]), k


def test_mmap_weights_swap_pruned_blocks_to_disk_with_identical_results(tiny, tmp_path):
    from optprune.patterns import Pattern
    from optprune.pipeline.data import calibration_windows
    from optprune.pipeline.model_io import decoder_layers, load_model
    from optprune.pipeline.sequential import prune_sequential

    def mapped_files(tensor):
        """Files whose memory mapping holds the tensor's data (Linux /proc/self/maps)."""
        ptr, found = tensor.data_ptr(), set()
        for line in Path("/proc/self/maps").read_text().splitlines():
            parts = line.split()
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            if lo <= ptr < hi and len(parts) > 5:
                found.add(parts[5])
        return found

    model_dir, data = tiny
    states = []
    for mmap in (False, True):
        net, tok, _ = load_model(str(model_dir), dtype=torch.float32)
        assert any(f.endswith(".safetensors") for f in mapped_files(decoder_layers(net)[1].mlp.up_proj.weight))
        windows = calibration_windows(tok, "c4", 4, 32, 0, str(data))
        prune_sequential(net, windows, "sparsegpt", Pattern("per-row", 0.5), tmp_path / f"m{mmap}", mmap_weights=mmap)
        files = mapped_files(decoder_layers(net)[1].mlp.down_proj.weight)
        assert any(f.endswith("block001.pt") for f in files) == mmap
        states.append({k: v.clone() for k, v in net.state_dict().items()})
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k]), k


def test_block_grams_are_exact_and_shared_between_linears_fed_the_same_input(tiny):
    from optprune.pipeline.data import calibration_windows
    from optprune.pipeline.model_io import decoder_layers, linear_sublayers, load_model
    from optprune.pipeline.sequential import block_grams, block_inputs, run_block

    model_dir, data = tiny
    net, tok, _ = load_model(str(model_dir), dtype=torch.float32)
    inps, args, kwargs = block_inputs(net, calibration_windows(tok, "c4", 3, 16, 0, str(data)), "cpu")
    block = decoder_layers(net)[0]
    grams = block_grams(block, inps, args, kwargs, batch=2)
    seen = {}
    hooks = [m.register_forward_hook(lambda m_, i, o, n=n: seen.setdefault(n, []).append(i[0].reshape(-1, i[0].shape[-1])))
             for n, m in linear_sublayers(block).items()]
    run_block(block, inps, args, kwargs, 2)
    for h in hooks:
        h.remove()
    for name, xs in seen.items():
        X = torch.cat(xs)
        assert torch.allclose(grams[name], X.T @ X, rtol=1e-4, atol=1e-4), name
    assert grams["self_attn.q_proj"] is grams["self_attn.v_proj"] and grams["mlp.gate_proj"] is grams["mlp.up_proj"]
    assert grams["self_attn.q_proj"] is not grams["mlp.gate_proj"]
    assert grams["self_attn.o_proj"] is not grams["self_attn.q_proj"]


def test_structured_prune_removes_whole_kv_groups(tiny, tmp_path):
    from transformers import AutoModelForCausalLM

    model_dir, data = tiny
    dense = AutoModelForCausalLM.from_pretrained(model_dir)
    x = torch.randint(0, dense.config.vocab_size, (1, 16))
    for attn, heads in (("0.5", (2, 1)), ("0", (4, 2))):
        out = tmp_path / f"a{attn}"
        assert main(["prune", "--model", str(model_dir), "--method", "spap", "--pattern", "structured",
                     "--sparsity", "0.5", "--attn-sparsity", attn, "--nsamples", "4", "--seqlen", "32",
                     "--data-dir", str(data), "--out", str(out), "--device", "cpu", "--dtype", "float32"]) == 0
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


def test_shrunk_attention_equals_zeroing_the_removed_groups(tiny):
    import copy

    from optprune.pipeline.data import calibration_windows
    from optprune.pipeline.model_io import decoder_layers, load_model
    from optprune.pipeline.sequential import block_inputs, run_block
    from optprune.pipeline.activations import ActivationStore
    from optprune.pipeline.structured import attention_layout, shrink_attention

    model_dir, data = tiny
    net, tok, _ = load_model(str(model_dir), dtype=torch.float32)
    inps, args, kwargs = block_inputs(net, calibration_windows(tok, "c4", 2, 16, 0, str(data)), "cpu")
    block = decoder_layers(net)[0]
    n_kv, n_rep, hd = attention_layout(block)
    assert (n_kv, n_rep, hd) == (2, 2, 8)
    zeroed, shrunk = copy.deepcopy(block), copy.deepcopy(block)
    zeroed.self_attn.o_proj.weight.data[:, : n_rep * hd] = 0       # group 0 = query heads 0, 1
    shrink_attention(shrunk, torch.tensor([1]))
    outs = []
    for blk in (zeroed, shrunk):
        out = ActivationStore(tuple(inps.data.shape), inps.data.dtype)
        run_block(blk, inps, args, kwargs, 2, out)
        outs.append(out.data)
    assert torch.allclose(outs[0], outs[1], atol=1e-5)


def test_magnitude_needs_no_calibration_and_matches_the_layer_solver(tiny, tmp_path):
    from transformers import AutoModelForCausalLM

    from optprune.patterns import Pattern
    from optprune.problem import LayerProblem
    from optprune.solvers import prune_layer

    model_dir, data = tiny
    dense = AutoModelForCausalLM.from_pretrained(model_dir).state_dict()
    # no calibration data exists at --data-dir: the data-free path must not read any
    assert _prune(model_dir, tmp_path / "no-data", tmp_path / "out", "magnitude", "2:4") == 0
    report = json.loads((tmp_path / "out" / "optprune_report.json").read_text())
    assert report["mean_rel_error"] is None and len(report["layers"]) == 14
    pruned = AutoModelForCausalLM.from_pretrained(tmp_path / "out").state_dict()
    for name, W in dense.items():
        if name.endswith("proj.weight"):
            problem = LayerProblem(W, torch.eye(W.shape[1]), name)
            expected = prune_layer(problem, Pattern.parse("2:4", 0.5), "magnitude").weight
            assert torch.equal(pruned[name], expected), name
        else:
            assert torch.equal(pruned[name], W), name
    # with --layer-errors the calibrated path runs: same weights, errors measured
    assert _prune(model_dir, data, tmp_path / "calibrated", "magnitude", "2:4", ["--layer-errors"]) == 0
    calibrated = json.loads((tmp_path / "calibrated" / "optprune_report.json").read_text())
    assert all(r["rel_error"] > 0 for r in calibrated["layers"])
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "calibrated").state_dict()
    assert all(torch.equal(again[k], v) for k, v in pruned.items())


def test_only_a_data_free_mask_kept_as_is_skips_calibration():
    from optprune.patterns import Pattern
    from optprune.pipeline.sequential import needs_calibration

    per_row = Pattern("per-row", 0.5)
    assert not needs_calibration("magnitude", per_row)
    assert needs_calibration("magnitude", per_row, refit=True)          # the refit needs G
    assert needs_calibration("magnitude", Pattern("structured", 0.5))   # channels are chosen with G
    assert needs_calibration("wanda", per_row)
    assert needs_calibration("magnitude", per_row, layer_errors=True)
