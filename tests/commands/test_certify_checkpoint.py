"""`optprune certify --dense --pruned`: masks made by another tool, read from a checkpoint's zeros."""
import json

import pytest
import torch

from optprune.commands import main


def wanda_script(model_dir, data_dir, out_dir, sparsity=0.5):
    """A plain Wanda-style script's checkpoint (validation/plain_wanda.py, independent of optprune's pipeline)."""
    from plain_wanda import wanda_script as plain

    return plain(model_dir, (data_dir / "wikitext2" / "test.raw.txt").read_text(), out_dir, sparsity)


def _certify(tiny, tmp_path, extra):
    model_dir, data = tiny
    report = tmp_path / "report.json"
    code = main(["certify", "--dense", str(model_dir), "--pattern", "per-row", "--sparsity", "0.5", "--blocks", "1",
                 "--data-dir", str(data), "--nsamples", "4", "--seqlen", "32", "--window", "8", "--time-limit", "30",
                 "--subblocks", "--json", str(report), *extra])
    return code, json.loads(report.read_text()) if report.exists() else None


def test_a_wanda_script_checkpoint_is_certified_layer_by_layer(tiny, tmp_path, capsys):
    wanda_script(tiny[0], tiny[1], tmp_path / "pruned")
    code, reports = _certify(tiny, tmp_path, ["--pruned", str(tmp_path / "pruned")])
    assert code == 0
    assert len(reports) == 7 and all(r["pattern_ok"] for r in reports)
    for r in reports:
        row = r["methods"][0]
        assert row["method"] == "checkpoint" and row["block_status"] == "optimal"
        assert row["block_optimum"] <= row["block_value"] * (1 + 1e-9)      # the certified optimum is no worse
        assert r["relaxation_bound"] <= row["rel_error_mask"] + 1e-12        # a bound never exceeds the mask
    printed = capsys.readouterr()
    assert "| checkpoint |" in printed.out and "warning" not in printed.err      # its own dense model: no warning


def test_a_mask_that_breaks_its_claimed_pattern_is_reported(tiny, tmp_path, capsys):
    model = wanda_script(tiny[0], tiny[1], tmp_path / "pruned")
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[0, :] = 0.0           # one row now prunes everything
    model.save_pretrained(tmp_path / "pruned")
    code, reports = _certify(tiny, tmp_path, ["--pruned", str(tmp_path / "pruned")])
    assert code == 1                                                      # not silently 0: one layer failed
    broken = {r["layer"]: r for r in reports if not r["pattern_ok"]}
    assert list(broken) == ["1.mlp.down_proj"] and "mask is not per-row" in broken["1.mlp.down_proj"]["problem"]
    assert "break the claimed per-row pattern: 1.mlp.down_proj" in capsys.readouterr().out


def test_masks_from_a_file_are_certified_like_a_checkpoint(tiny, tmp_path):
    from safetensors.torch import save_file

    model = wanda_script(tiny[0], tiny[1], tmp_path / "pruned")
    masks = {f"{b}.{n}": (model.model.layers[b].get_submodule(n).weight != 0).contiguous()
             for b in range(2) for n in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                                         "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")}
    save_file(masks, str(tmp_path / "masks.safetensors"))
    code, from_file = _certify(tiny, tmp_path, ["--masks", str(tmp_path / "masks.safetensors")])
    _, from_checkpoint = _certify(tiny, tmp_path, ["--pruned", str(tmp_path / "pruned")])
    assert code == 0
    for a, b in zip(from_file, from_checkpoint):
        assert a["methods"][0]["rel_error_mask"] == pytest.approx(b["methods"][0]["rel_error_mask"], rel=1e-9)


def test_certify_without_masks_is_refused(tiny, tmp_path, capsys):
    assert main(["certify", "--dense", str(tiny[0])]) == 2
    assert "needs --pruned CHECKPOINT or --masks FILE" in capsys.readouterr().err
    assert main(["certify"]) == 2
    assert "give --layer FILE" in capsys.readouterr().err


def test_neighbourhood_certificates_of_a_checkpoint_state_their_window_or_a_better_mask(tiny, tmp_path, capsys):
    wanda_script(tiny[0], tiny[1], tmp_path / "pruned")
    code, reports = _certify(tiny, tmp_path, ["--pruned", str(tmp_path / "pruned"), "--rows", "0",
                                              "--neighbourhood", "3"])
    assert code == 0
    for r in reports:
        assert [n["row"] for n in r["neighbourhood"]] == [0]           # every asked row is reported
        for n in r["neighbourhood"]:
            if n["size"] == 0:                                            # nothing finished in time: said so
                assert not n["certified"] and "no window finished" in n["statement"]
                continue
            assert n["size"] >= 16 and n["status"] == "optimal" and (n["certified"] or n["improved"])
            assert n["lower_bound"] <= n["optimum"] * (1 + 1e-7) + 1e-12 and n["optimum"] <= n["value"] * (1 + 1e-9)
            if n["improved"]:                                             # better than the checkpoint's mask
                assert n["optimum"] < n["original_value"]
    assert "no better mask differs from this one only inside" in capsys.readouterr().out or \
        any(n["improved"] for r in reports for n in r["neighbourhood"])


def test_a_claim_no_layer_holds_is_refused_and_a_foreign_dense_model_is_named(tiny, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    wanda_script(tiny[0], tiny[1], tmp_path / "pruned")
    model_dir, data = tiny
    code = main(["certify", "--dense", str(model_dir), "--pattern", "2:4", "--blocks", "1", "--data-dir", str(data),
                 "--nsamples", "4", "--seqlen", "32", "--pruned", str(tmp_path / "pruned")])
    assert code == 2 and "no layer's mask is 2:4" in capsys.readouterr().err
    other = AutoModelForCausalLM.from_pretrained(str(model_dir))
    torch.manual_seed(1)
    with torch.no_grad():
        for p in other.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn_like(p) * p.std())                    # same shapes, other weights
    other.save_pretrained(tmp_path / "other")
    (tmp_path / "other" / "tokenizer.json").write_bytes((model_dir / "tokenizer.json").read_bytes())
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        if (model_dir / name).exists():
            (tmp_path / "other" / name).write_bytes((model_dir / name).read_bytes())
    code = main(["certify", "--dense", str(tmp_path / "other"), "--pattern", "per-row", "--sparsity", "0.5", "--blocks",
                 "1", "--data-dir", str(data), "--nsamples", "4", "--seqlen", "32", "--pruned", str(tmp_path / "pruned")])
    err = capsys.readouterr().err
    assert code == 0 and "err more than all-zero weights would" in err and "was it pruned from --dense" in err


CHECKPOINT_MODE_REFUSALS = {   # case: message (issue 38 cases 13 and 14), each before any calibration
    "--rows past the smallest layer": (["--rows", "0,20"], "--rows 0,20: layer 0.self_attn.k_proj has 16 rows"),
    "--window wider than a layer": (["--window", "1000"], "--window 1000: layer 0.self_attn.q_proj has 32 columns"),
    "transposed masks": (["--masks", "transposed"], "(transposed: masks are out x in, as the weight)"),
    "masks that are not 0/1": (["--masks", "scores"], "holds values other than 0/1"),
    "--pruned of another family": (["--pruned", "opt"], "is a opt of 4 blocks, the dense model a llama of 2: not "
                                                        "pruned from it"),
}


@pytest.mark.parametrize("case", list(CHECKPOINT_MODE_REFUSALS))
def test_checkpoint_mode_refuses_bad_input_in_one_line_before_calibrating(tiny, tmp_path, capsys, monkeypatch, case):
    import optprune.commands.certify_checkpoint as certify
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    from families import tiny_model

    args, message = CHECKPOINT_MODE_REFUSALS[case]
    dense = AutoModelForCausalLM.from_pretrained(tiny[0])
    weights = {f"{b}.{n}": m.weight.detach() for b, block in enumerate(dense.model.layers)
               for n, m in block.named_modules() if isinstance(m, torch.nn.Linear)}
    if "--masks" in args:
        file = tmp_path / "masks.safetensors"
        masks = ({k: (w != 0).T.contiguous() for k, w in weights.items()} if args[1] == "transposed" else
                 {k: w.abs().contiguous() for k, w in weights.items()})
        save_file(masks, str(file))
        args = ["--masks", str(file)]
    elif args[0] == "--pruned":
        tiny_model("opt").save_pretrained(tmp_path / "opt")
        args = ["--pruned", str(tmp_path / "opt")]
    else:
        args = [*args, "--pruned", str(tiny[0])]
    monkeypatch.setattr(certify, "dense_layer_problems", lambda *a, **k: pytest.fail("calibrated before refusing"))
    code, _ = _certify(tiny, tmp_path, ["--blocks", "0,1", *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
