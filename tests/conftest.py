import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "validation"))   # the cases and tiny model shared
from bad_input_cases import TEXT, build_tiny  # noqa: E402  with validation/reliability_table.py

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    return build_tiny(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def tiny_net(tiny):
    """A fresh float32 copy of the tiny Llama, its tokenizer and 4 calibration windows of 32 tokens."""
    from optprune.data import calibration_windows
    from optprune.checkpoints.model_io import load_model

    model_dir, data = tiny
    net, tok, _ = load_model(str(model_dir), dtype=torch.float32)
    return net, tok, calibration_windows(tok, "c4", 4, 32, 0, str(data))


@pytest.fixture
def cli_prune(tiny):
    """Run `optprune prune` on the tiny model: cli_prune(out, method, pattern, extra args) -> exit code."""
    from optprune.commands import main

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
