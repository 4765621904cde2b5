"""Saved checkpoints carry compressed-tensors sparsity metadata and, on request, its bitmask formats;
compressed-tensors' own readers find them and optprune loads them back to the same weights."""
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


def test_default_dense_checkpoint_loads_with_plain_from_pretrained_and_states_its_sparsity(tiny_net, tmp_path):
    from transformers import AutoModelForCausalLM

    from optprune.checkpoints.model_io import save_model

    net, tok = _pruned(tiny_net, "per-row")
    info = save_model(net, tok, tmp_path / "out", "input")
    assert info["format"] == "dense"
    meta = json.loads((tmp_path / "out" / "config.json").read_text())["quantization_config"]
    assert meta["quant_method"] == "compressed-tensors"
    assert meta["sparsity_config"]["format"] == "dense" and meta["sparsity_config"]["sparsity_structure"] == "unstructured"
    assert meta["sparsity_config"]["global_sparsity"] == pytest.approx(0.5)
    assert len(meta["sparsity_config"]["targets"]) == 14 and meta["sparsity_config"]["ignore"] == ["lm_head"]
    assert _same_weights(AutoModelForCausalLM.from_pretrained(str(tmp_path / "out")), net)


def test_structured_and_plain_write_no_metadata_and_an_unknown_format_is_refused(tiny_net, tmp_path):
    from optprune.checkpoints.model_io import save_model

    net, tok, _ = tiny_net
    assert save_model(net, tok, tmp_path / "a", "input", "plain") == {"format": "plain"}
    assert save_model(net, tok, tmp_path / "b", "input", structured=True) == {"format": "plain"}
    assert "quantization_config" not in json.loads((tmp_path / "b" / "config.json").read_text())
    with pytest.raises(ValueError, match="--save-format"):
        save_model(net, tok, tmp_path / "c", "input", "bitmask")


def test_cli_prune_writes_the_format_it_reports(cli_prune, tmp_path):
    assert cli_prune(tmp_path / "out", pattern="2:4", extra=("--save-format", "compressed")) == 0
    report = json.loads((tmp_path / "out" / "optprune_report.json").read_text())
    assert report["checkpoint"]["format"] == "sparse-24-bitmask"
    assert report["checkpoint"]["sparsity_structure"] == "2:4"
