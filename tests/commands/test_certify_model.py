"""`optprune certify --dense M --pruned P`: the whole-model certificate (every row of every layer bounded), its
model-level figures, its resume and its refusals."""
import json

import pytest
import torch

from optprune.commands import main
from test_certify_checkpoint import wanda_script


def certify(tiny, tmp_path, *extra, json_name="cert.json"):
    model_dir, data = tiny
    report = tmp_path / json_name
    code = main(["certify", "--dense", str(model_dir), "--pattern", "per-row", "--sparsity", "0.5", "--data-dir",
                 str(data), "--nsamples", "4", "--seqlen", "32", "--bound-iters", "60", "--json", str(report), *extra])
    return code, json.loads(report.read_text()) if report.exists() else None


def test_every_row_of_every_layer_is_bounded_below_the_checkpoint_s_error(tiny, tmp_path, capsys):
    wanda_script(tiny[0], tiny[1], tmp_path / "pruned")
    code, cert = certify(tiny, tmp_path, "--pruned", str(tmp_path / "pruned"))
    assert code == 0
    layers, summary = cert["layers"], cert["summary"]
    assert len(layers) == 14 and all(r["pattern_ok"] for r in layers)             # 2 blocks x 7 linears
    for r in layers:
        assert 0 < r["bound"] <= r["error"] * (1 + 1e-9)                           # no mask beats a bound
        assert r["gap"] == pytest.approx(r["error"] / r["bound"]) and r["bound_kind"] in ("qcr", "box")
    shapes = {f"{b}.{n}": m.weight.shape[0] for b, block in enumerate(
        __import__("transformers").AutoModelForCausalLM.from_pretrained(tiny[0]).model.layers)
        for n, m in block.named_modules() if isinstance(m, torch.nn.Linear)}
    assert sum(summary["rows_by_gap"].values()) == sum(shapes.values())           # every row of every layer
    overall = summary["overall"]
    assert overall["error"] == pytest.approx(sum(r["error"] for r in layers))
    assert overall["bound"] == pytest.approx(sum(r["bound"] for r in layers))
    assert overall["gap"] == pytest.approx(overall["error"] / overall["bound"]) and overall["gap"] >= 1
    assert set(summary["per_kind"]) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert sum(k["layers"] for k in summary["per_kind"].values()) == 14
    out = capsys.readouterr()
    assert "| all | 14 |" in out.out and "layer 14/14" in out.err and "about" in out.err


def test_an_interrupted_certificate_resumes_to_the_same_result_and_only_with_the_same_command(tiny, tmp_path, capsys):
    wanda_script(tiny[0], tiny[1], tmp_path / "pruned")
    _, whole = certify(tiny, tmp_path, "--pruned", str(tmp_path / "pruned"))
    partial = tmp_path / "cert.json.partial"
    lines = partial.read_text().splitlines()
    partial.write_text("\n".join(lines[:9]) + "\n")              # stopped after 9 of 14 layers
    (tmp_path / "cert.json").unlink()
    capsys.readouterr()
    code, resumed = certify(tiny, tmp_path, "--pruned", str(tmp_path / "pruned"))
    assert code == 0 and untimed(resumed) == untimed(whole)     # the same figures, bit for bit
    err = capsys.readouterr().err
    assert "layer 10/14" in err and "layer 9/14" not in err      # the finished layers are not computed again
    code, _ = certify(tiny, tmp_path, "--pruned", str(tmp_path / "pruned"), "--bound", "box")
    assert code == 2 and "holds layers of another certificate" in capsys.readouterr().err


def untimed(cert: dict) -> dict:
    """The certificate without its seconds (the only thing a rerun may change)."""
    return dict(layers=[{k: v for k, v in r.items() if k != "seconds"} for r in cert["layers"]],
                summary={k: v for k, v in cert["summary"].items() if k != "seconds"})


def test_a_layer_that_breaks_the_pattern_is_named_and_the_rest_certified(tiny, tmp_path, capsys):
    model = wanda_script(tiny[0], tiny[1], tmp_path / "pruned")
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[0, :] = 0.0
    model.save_pretrained(tmp_path / "pruned")
    code, cert = certify(tiny, tmp_path, "--pruned", str(tmp_path / "pruned"))
    assert code == 1
    assert [r["layer"] for r in cert["layers"] if not r["pattern_ok"]] == ["1.mlp.down_proj"]
    assert cert["summary"]["overall"]["layers"] == 13
    assert "break the claimed per-row pattern: 1.mlp.down_proj" in capsys.readouterr().out


@pytest.mark.parametrize("flags,message", [(["--neighbourhood", "3"], "--neighbourhood: options of the sub-block"),
                                           (["--full-row-bounds"], "--full-row-bounds: options of the sub-block"),
                                           (["--bound-iters", "0"], "--bound-iters 0: give at least 1 step")])
def test_sub_block_options_without_subblocks_are_refused_in_one_line(tiny, tmp_path, capsys, flags, message):
    code, _ = certify(tiny, tmp_path, "--pruned", str(tiny[0]), *flags)
    assert code == 2 and message in capsys.readouterr().err


def test_a_dense_model_s_own_zeros_do_not_break_the_checkpoint_s_pattern(tiny, tmp_path):
    """Where a group of the dense model holds more zeros than the pattern prunes (a quantised model's),
    the checkpoint keeps some zeros: certify reads them as kept, and the 2:4 checkpoint is certified."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from optprune import Pattern
    dense, tok = AutoModelForCausalLM.from_pretrained(tiny[0]), AutoTokenizer.from_pretrained(tiny[0])
    with torch.no_grad():
        for block in dense.model.layers:
            block.mlp.up_proj.weight[:, :3] = 0                     # 3 zeros in every row's first 2:4 group
    dense.save_pretrained(tmp_path / "dense")
    tok.save_pretrained(tmp_path / "dense")
    nm = Pattern.parse("2:4")
    with torch.no_grad():
        for lin in (m for m in dense.model.layers.modules() if isinstance(m, torch.nn.Linear)):
            lin.weight.mul_(nm.project(lin.weight.abs()))
    dense.save_pretrained(tmp_path / "pruned")
    tok.save_pretrained(tmp_path / "pruned")
    code, cert = certify((tmp_path / "dense", tiny[1]), tmp_path, "--pruned", str(tmp_path / "pruned"),
                         "--pattern", "2:4")
    assert code == 0 and all(r["pattern_ok"] for r in cert["layers"])
    up = [r for r in cert["layers"] if r["kind"] == "up_proj"]
    assert all(r["sparsity"] == pytest.approx(0.5) and r["bound"] <= r["error"] * (1 + 1e-9) for r in up)
