import gzip
import json

import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


TEXT = ("The quick brown fox jumps over the lazy dog. " * 40 + "\n\n") * 6


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    return build_tiny(tmp_path_factory.mktemp("tiny"))


def build_tiny(root):
    """A 2-block random Llama (hidden 32, 128 positions) with a character tokenizer, and a data
    folder in the shared/data layout: (model folder, data folder)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    chars = sorted(set(TEXT))
    vocab = {c: i for i, c in enumerate(chars)}
    vocab["<unk>"] = len(vocab)
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    model_dir = root / "model"
    LlamaForCausalLM(cfg).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    data = root / "data"
    (data / "wikitext2").mkdir(parents=True)
    (data / "c4").mkdir()
    (data / "wikitext2" / "test.raw.txt").write_text(TEXT)
    with gzip.open(data / "c4" / "c4-sample.00000-of-00001.json.gz", "wt") as fh:
        for _ in range(5):
            fh.write(json.dumps({"text": TEXT}) + "\n")
    return model_dir, data


@pytest.fixture
def tiny_net(tiny):
    """A fresh float32 copy of the tiny Llama, its tokenizer and 4 calibration windows of 32 tokens."""
    from optprune.data import calibration_windows
    from optprune.pipeline.model_io import load_model

    model_dir, data = tiny
    net, tok, _ = load_model(str(model_dir), dtype=torch.float32)
    return net, tok, calibration_windows(tok, "c4", 4, 32, 0, str(data))


@pytest.fixture
def cli_prune(tiny):
    """Run `optprune prune` on the tiny model: cli_prune(out, method, pattern, extra args) -> exit code."""
    from optprune.cli import main

    model_dir, data = tiny

    def run(out, method="wanda", pattern="per-row", extra=(), data_dir=None):
        return main(["prune", "--model", str(model_dir), "--method", method, "--pattern", pattern,
                     "--sparsity", "0.5", "--nsamples", "4", "--seqlen", "32", "--data-dir", str(data_dir or data),
                     "--out", str(out), "--device", "cpu", "--dtype", "float32", *extra])
    return run


def pytest_sessionstart(session):
    """Print pytest-randomly's seed even under -q, so a failing order can be repeated."""
    seed = getattr(session.config.option, "randomly_seed", None)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if seed is not None and reporter is not None:
        reporter.write_line(f"random file and test order: repeat it with --randomly-seed={seed}")
