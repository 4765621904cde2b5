"""Calibration windows, streamed perplexity and the zero-shot scorer (tiny model, local files)."""
import json
import math

import pytest
import torch

from optprune.engine import eval_windows, window_nll


def test_calibration_is_seeded_and_bad_settings_fail(tiny):
    from optprune.data import calibration_windows
    from optprune.checkpoints.model_io import load_model

    model_dir, data = tiny
    _, tok, _ = load_model(str(model_dir), dtype=torch.float32)
    a = calibration_windows(tok, "c4", 3, 16, 0, str(data))
    assert torch.equal(a, calibration_windows(tok, "c4", 3, 16, 0, str(data)))
    assert not torch.equal(a, calibration_windows(tok, "c4", 3, 16, 1, str(data)))
    with_bos = calibration_windows(tok, "c4", 3, 16, 0, str(data), bos_id=7)
    assert (with_bos[:, 0] == 7).all() and torch.equal(with_bos[:, 1:], a[:, :15])   # same starts
    with pytest.raises(ValueError, match="at most 0 distinct windows of 1000000, fewer than nsamples=3"):
        calibration_windows(tok, "c4", 3, 10 ** 6, 0, str(data))


def test_eval_windows_tile_the_stream_with_or_without_bos():
    ids = torch.arange(100)
    plain = eval_windows(ids, 20)
    assert plain.shape == (5, 20) and torch.equal(plain.flatten(), ids)
    bos = eval_windows(ids, 20, bos_id=-1)
    assert bos.shape == (5, 20) and (bos[:, 0] == -1).all() and torch.equal(bos[:, 1:].flatten(), ids[:95])
    assert eval_windows(ids, 20, max_windows=2).shape == (2, 20)
    with pytest.raises(ValueError, match="fewer than one window"):
        eval_windows(ids[:5], 20)


def test_uniform_logits_give_the_vocabulary_size_as_perplexity():
    x = torch.randint(0, 37, (3, 20))
    assert torch.allclose(window_nll(torch.zeros(3, 20, 37), x), torch.full((3,), math.log(37)))


def test_streamed_perplexity_equals_the_whole_model_forward(tiny):
    import optprune
    from optprune.data import tokenize_long, wikitext_test_text
    from optprune.checkpoints.model_io import load_model

    model_dir, data = tiny
    net, tok, _ = load_model(str(model_dir), dtype=torch.float32)
    streamed = optprune.evaluate(net, tok, seqlen=32, data_dir=str(data), device="cpu", batch=3)
    windows = eval_windows(tokenize_long(tok, wikitext_test_text(str(data))), 32)
    with torch.no_grad():
        direct = math.exp(float(window_nll(net(windows).logits, windows).mean()))
    assert streamed["windows"] == len(windows) and streamed["bos"] is False
    assert streamed["ppl"] == pytest.approx(direct, rel=1e-5)


def test_zero_shot_scorer_on_a_local_task(tiny, tmp_path):
    from optprune.checkpoints.model_io import load_model
    from optprune.evaluation.zeroshot import continuation_logprob, evaluate_tasks

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


@pytest.mark.parametrize("family", ["llama", "gemma3_text", "opt"])
def test_the_head_in_chunks_gives_the_whole_windows_nll(family):
    """head_nll runs the final norm, head and soft-capping a few positions at a time (bounded memory for a 262k
    vocabulary); the NLL is the whole window's, to float precision."""
    import torch

    from families import tiny_model, windows
    from optprune.adapters import adapter_for
    from optprune.engine import Engine, head_nll, window_nll

    net = tiny_model(family)
    adapter = adapter_for(net)
    window = windows(1, 23)
    engine = Engine(net, adapter, torch.device("cpu"))
    calls = engine.capture(window, shard=False)
    last = engine.dense_pass(calls)
    with torch.no_grad():
        whole = float(window_nll(net(window).logits, window))
        for chunk in (1, 5, 22, 512):
            assert head_nll(net, adapter, window, last.data, chunk) == pytest.approx(whole, rel=1e-5), chunk


class CharTokenizer:
    """A stand-in tokenizer: one id per character (ids 3..63), BOS 1, EOS 2."""
    bos_token_id, eos_token_id = 1, 2

    def __call__(self, text: str, add_special_tokens: bool = True):
        ids = [3 + ord(c) % 61 for c in text]
        return type("Encoding", (), {"input_ids": ([1] if add_special_tokens else []) + ids})()


@pytest.mark.parametrize("family, wants_bos", [("gemma3_text", True), ("llama", False)])
def test_zero_shot_scores_start_with_bos_where_the_family_wants_it(family, wants_bos, tmp_path, monkeypatch):
    """Gemma is trained to see BOS first: the built-in scorer scores log p(answer | BOS context), as the
    perplexity's windows start with BOS, and tells the harness to encode with BOS; Llama gets neither."""
    import torch.nn.functional as F

    from families import tiny_model
    from optprune.evaluation import zeroshot

    net, tok = tiny_model(family), CharTokenizer()
    bos = zeroshot.family_bos_id(net, tok)
    assert bos == (1 if wants_bos else None)
    ids = torch.tensor([([1] if wants_bos else []) + tok("The fox is quick", add_special_tokens=False).input_ids])
    n_ctx = ids.shape[1] - len(" quick")
    with torch.no_grad():
        logp = F.log_softmax(net(ids).logits[0, n_ctx - 1:-1], -1)
    expected = float(logp.gather(1, ids[0, n_ctx:, None]).sum())
    assert zeroshot.continuation_logprob(net, tok, "The fox is", " quick", bos) == pytest.approx(expected, rel=1e-5)

    seen = []
    monkeypatch.setattr(zeroshot, "continuation_logprob", lambda n, t, c, a, b=None: seen.append(b) or 0.0)
    (tmp_path / "arc_easy").mkdir()
    item = {"question": {"stem": "The fox is", "choices": [{"text": "quick", "label": "A"},
                                                          {"text": "slow", "label": "B"}]}, "answerKey": "A"}
    (tmp_path / "arc_easy" / "ARC-Easy-Test.jsonl").write_text(json.dumps(item) + "\n")
    zeroshot.evaluate_tasks(net, tok, ["arc_easy"], str(tmp_path))
    assert seen == [bos, bos]

    lm_eval_hf = pytest.importorskip("lm_eval.models.huggingface")
    told = {}

    def stub_hflm(**kwargs):
        told.update(kwargs)
        raise RuntimeError("stub")

    monkeypatch.setattr(lm_eval_hf, "HFLM", stub_hflm)
    monkeypatch.setattr(zeroshot, "check_zeroshot", lambda *a: "harness")
    with pytest.raises(RuntimeError, match="stub"):
        zeroshot.evaluate_zeroshot(net, tok, ["arc_easy"], str(tmp_path))
    assert told["add_bos_token"] is (True if wants_bos else None)
