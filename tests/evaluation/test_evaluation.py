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
