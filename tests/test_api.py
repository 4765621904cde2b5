"""The Python API: a model handed in keeps its own mode, and a perplexity is a number or an error."""
import re

import pytest
import torch


def _train_mode_copy(tiny):
    from transformers import AutoModelForCausalLM

    net = AutoModelForCausalLM.from_pretrained(str(tiny[0]), attention_dropout=0.5, dtype=torch.float32)
    return net.train()


def test_prune_and_evaluate_run_in_eval_mode_and_give_the_model_its_mode_back(tiny, tiny_net):
    import optprune

    reference, tok, windows = tiny_net
    optprune.prune(reference.eval(), windows, method="sparsegpt", pattern="per-row", sparsity=0.5, device="cpu")
    net = _train_mode_copy(tiny)
    optprune.prune(net, windows, method="sparsegpt", pattern="per-row", sparsity=0.5, device="cpu")
    assert net.training                          # the caller's mode, restored
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), reference.state_dict().values()))
    ppl = optprune.evaluate(net, tok, seqlen=32, data_dir=str(tiny[1]), device="cpu")["ppl"]
    assert net.training and ppl == optprune.evaluate(reference, tok, seqlen=32, data_dir=str(tiny[1]),
                                                     device="cpu")["ppl"]


def test_a_perplexity_that_is_not_finite_is_an_error_and_a_window_needs_two_tokens(tiny, tiny_net):
    import optprune

    net, tok, _ = tiny_net
    with pytest.raises(ValueError, match="seqlen must be >= 2"):
        optprune.evaluate(net, tok, seqlen=1, data_dir=str(tiny[1]), device="cpu")
    with torch.no_grad():
        net.model.layers[0].mlp.down_proj.weight.fill_(float("inf"))
    with pytest.raises(FloatingPointError, match="overflowed in torch.float32; evaluate in bfloat16 or float32"):
        optprune.evaluate(net, tok, seqlen=32, data_dir=str(tiny[1]), device="cpu")


@pytest.mark.parametrize("windows,message", [
    (torch.rand(4, 32), "integer tensor of token ids (n, seqlen), got torch.float32"),
    (torch.zeros(32, dtype=torch.long), "shape (n >= 1, seqlen >= 2), got (32,)"),
    (torch.zeros(2, 4, 32, dtype=torch.long), "shape (n >= 1, seqlen >= 2), got (2, 4, 32)"),
    (torch.zeros(0, 64, dtype=torch.long), "shape (n >= 1, seqlen >= 2), got (0, 64)"),
    (torch.full((2, 32), 10 ** 6), "token ids 1000000..1000000, outside the model's vocabulary"),
    (torch.full((2, 32), -1), "token ids -1..-1, outside"),
    (torch.zeros(2, 32, dtype=torch.long).numpy(), "data must be a tokenizer or a LongTensor"),
    ([[1, 2, 3]], "data must be a tokenizer or a LongTensor of token windows (n, seqlen), got list")])
def test_api_windows_the_model_cannot_read_get_one_line_before_any_pass(tiny_net, windows, message):
    import optprune

    net, _, _ = tiny_net
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(ValueError, match=re.escape(message)):
        optprune.prune(net, windows, method="wanda", pattern="per-row", sparsity=0.5, device="cpu")
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())     # nothing was pruned


@pytest.mark.parametrize("call,error,message", [
    (lambda net, tok: __import__("optprune").prune("llama", tok), ValueError,
     "optprune prunes transformers causal LMs (a PreTrainedModel with a config), got str"),
    (lambda net, tok: __import__("optprune").prune(torch.nn.Linear(3, 3), tok), ValueError,
     "optprune prunes transformers causal LMs (a PreTrainedModel with a config), got Linear"),
    (lambda net, tok: __import__("optprune").prune(net, tok, sparsityy=0.5), TypeError,
     "optprune.prune has no setting 'sparsityy': did you mean 'sparsity'"),
    (lambda net, tok: __import__("optprune").evaluate(net, None), TypeError,
     "tokenizer must be the model's tokenizer (callable on text), got NoneType"),
])
def test_api_arguments_of_the_wrong_kind_get_one_line(tiny_net, call, error, message):
    net, tok, _ = tiny_net
    with pytest.raises(error, match=re.escape(message)):
        call(net, tok)


def test_calibration_texts_given_as_a_dict_are_refused_in_one_line(tiny):
    import optprune

    net, tok = optprune.load_pretrained(str(tiny[0]))
    with pytest.raises(ValueError, match=re.escape("calibration texts as a dict (keys ['text']): pass its list of "
                                                   "strings (calib=d['text']) or the Dataset itself")):
        optprune.prune(net, tok, method="wanda", nsamples=2, seqlen=16, calib={"text": ["hello world"] * 4},
                       device="cpu")
