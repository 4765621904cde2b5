"""Zero-shot scoring through lm-evaluation-harness (HFLM on the in-memory model, local task files)
agrees with the built-in scorer on the same items, and the scorer choice is checked up front."""
import json

import pytest


def _task_folder(root):
    """Three ARC-Easy and three BoolQ items in the local files' own formats."""
    arc = root / "arc_easy"
    arc.mkdir(parents=True)
    items = [("Which is a fox?", ["quick brown", "lazy dog", "the", "over"], "A"),
             ("What jumps?", ["dog", "fox", "the", "lazy"], "B"),
             ("Where?", ["over the", "brown", "quick", "jumps"], "C")]
    with open(arc / "ARC-Easy-Test.jsonl", "w") as fh:
        for q, texts, key in items:
            choices = [{"text": t, "label": lab} for t, lab in zip(texts, "ABCD")]
            fh.write(json.dumps({"question": {"stem": q, "choices": choices}, "answerKey": key}) + "\n")
    (root / "boolq").mkdir()
    with open(root / "boolq" / "val.jsonl", "w") as fh:
        for i, label in enumerate(["true", "false", "true"]):
            fh.write(json.dumps({"passage": "The quick brown fox.", "question": f"is it quick {i}",
                                 "label": label}) + "\n")
    return root


@pytest.fixture
def model_with_eos(tiny, tmp_path):
    """The tiny model with an EOS token (the harness needs one; the character tokenizer has none)."""
    import shutil

    from transformers import AutoTokenizer

    model_dir = tmp_path / "model"
    shutil.copytree(tiny[0], model_dir)
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    tok.eos_token = "<unk>"
    tok.save_pretrained(str(model_dir))
    return model_dir


def test_harness_and_builtin_scorers_agree_on_the_same_items(model_with_eos, tmp_path):
    import torch

    from optprune.evaluation import evaluate_zeroshot
    from optprune.checkpoints.model_io import load_model

    net, tok, _ = load_model(str(model_with_eos), dtype=torch.float32)
    root = _task_folder(tmp_path / "data")
    harness = evaluate_zeroshot(net, tok, ["arc_easy", "boolq"], str(root), scorer="harness")
    builtin = evaluate_zeroshot(net, tok, ["arc_easy", "boolq"], str(root), scorer="builtin")
    assert harness["scorer"].startswith("lm-evaluation-harness") and builtin["scorer"].startswith("optprune")
    for task in ("arc_easy", "boolq"):     # a character tokenizer: joint and separate tokenisation agree
        assert harness["tasks"][task]["n"] == builtin["tasks"][task]["n"] == 3
        assert harness["tasks"][task]["acc"] == pytest.approx(builtin["tasks"][task]["acc"])
    assert harness["tasks"]["arc_easy"]["acc_norm"] == pytest.approx(builtin["tasks"]["arc_easy"]["acc_norm"])
    limited = evaluate_zeroshot(net, tok, ["arc_easy"], str(root), limit=2, scorer="harness")
    assert limited["tasks"]["arc_easy"]["n"] == 2


def test_scorer_choice_and_missing_inputs_get_one_line(tmp_path, monkeypatch):
    from optprune.evaluation import zeroshot as harness

    root = _task_folder(tmp_path / "data")
    assert harness.check_zeroshot(["arc_easy"], str(root), "auto") == "harness"
    monkeypatch.setattr(harness, "harness_available", lambda: False)
    assert harness.check_zeroshot(["arc_easy"], str(root), "auto") == "builtin"
    with pytest.raises(ValueError, match="optprune\\[eval\\]"):
        harness.check_zeroshot(["arc_easy"], str(root), "harness")
    with pytest.raises(ValueError, match="unknown zero-shot task 'mmlu'"):
        harness.check_zeroshot(["mmlu"], str(root), "auto")
    with pytest.raises(ValueError, match="--zeroshot-scorer"):
        harness.check_zeroshot(["arc_easy"], str(root), "exact")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OPTPRUNE_DATA_DIR", raising=False)
    with pytest.raises(FileNotFoundError, match="--data-dir"):
        harness.check_zeroshot(["arc_easy"], "", "builtin")


def test_a_tokenizer_without_eos_is_refused_by_the_harness_path(tiny_net, tmp_path):
    from optprune.evaluation import evaluate_harness

    net, tok, _ = tiny_net
    with pytest.raises(ValueError, match="EOS token"):
        evaluate_harness(net, tok, ["arc_easy"], str(_task_folder(tmp_path / "data")))


def test_cli_eval_names_the_scorer_it_used(model_with_eos, tmp_path, capsys):
    from optprune.commands import main

    model_dir = model_with_eos
    root = _task_folder(tmp_path / "data")
    assert main(["eval", "--model", str(model_dir), "--ppl", "", "--zeroshot", "arc_easy", "--data-dir", str(root),
                 "--json", str(tmp_path / "r.json"), "--dtype", "float32"]) == 0
    assert "zero-shot scorer: lm-evaluation-harness" in capsys.readouterr().out
    result = json.loads((tmp_path / "r.json").read_text())["zeroshot"]
    assert result["tasks"]["arc_easy"]["n"] == 3
