"""Structured checkpoints of unequal block widths load without optprune (issue 37): transformers alone, through
the modeling file optprune writes beside the weights, in a process where optprune cannot be imported, gives the
same logits and generates, for every family with a structured layout."""
import json
import subprocess
import sys

import pytest
import torch

from families import CONFIGS, tiny_model, windows

LOADER = r"""
import json, sys
sys.modules["optprune"] = None                      # any import of optprune fails in this process
sys.modules["formulations"] = None
import torch
from transformers import AutoModelForCausalLM
for folder in json.loads(sys.argv[1]):
    net = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True, dtype=torch.float32).eval()
    ids = torch.load(folder + "/ids.pt")
    with torch.no_grad():
        same = torch.allclose(net(ids).logits, torch.load(folder + "/logits.pt"), atol=1e-5, rtol=1e-5)
        new = net.generate(ids, max_new_tokens=3, do_sample=False).shape[1] - ids.shape[1]
    print(json.dumps({"folder": folder, "class": type(net).__name__, "same_logits": same, "generated": new}))
"""


class _NoTokenizer:
    def save_pretrained(self, _path):
        pass


def _structured_families():
    from optprune.adapters import adapter_for
    return [f for f in CONFIGS if adapter_for(tiny_model(f)).mlp is not None]


def _unequal_checkpoint(family: str, out) -> None:
    from optprune.adapters import adapter_for
    from optprune.api import run_pruning
    from optprune.checkpoints.model_io import save_model
    from optprune.config import PruneConfig

    net = tiny_model(family)
    net.config.use_cache = False                        # as load_model leaves a model it loads for pruning
    config = PruneConfig(method="wanda", pattern="structured", sparsity=0.3, allocation="milp", dtype="float32",
                         device="cpu", nsamples=4, seqlen=24)
    run_pruning(net, windows(4, 24), config, adapter_for(net))
    assert net.config.optprune_block_widths, f"{family}: the MILP gave equal widths; nothing to test"
    saved = save_model(net, _NoTokenizer(), out, "input", structured=True)
    assert saved["loader"] == "transformers (trust_remote_code=True)"
    ids = torch.randint(3, 64, (1, 10), generator=torch.Generator().manual_seed(0))
    torch.save(ids, out / "ids.pt")
    with torch.no_grad():
        torch.save(net(ids).logits, out / "logits.pt")


def test_every_structured_family_loads_its_unequal_widths_without_optprune(tmp_path):
    families = _structured_families()
    assert {"llama", "qwen3", "gemma3_text"} <= set(families)
    folders = []
    for family in families:
        _unequal_checkpoint(family, tmp_path / family)
        folders.append(str(tmp_path / family))
    run = subprocess.run([sys.executable, "-c", LOADER, json.dumps(folders)], capture_output=True, text=True,
                         cwd=tmp_path, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    results = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert len(results) == len(families)
    for family, r in zip(families, results):
        assert r["class"] == "OptpruneWidthsForCausalLM" and r["same_logits"] and r["generated"] == 3, (family, r)


def test_without_trust_remote_code_transformers_refuses_rather_than_guessing(tmp_path):
    from transformers import AutoModelForCausalLM

    _unequal_checkpoint("llama", tmp_path / "llama")
    with pytest.raises(Exception, match="mismatched_sizes|size mismatch"):
        AutoModelForCausalLM.from_pretrained(str(tmp_path / "llama"))


def _step_lengths(net, ids) -> list[int]:
    """Tokens the model reads at each step of a greedy generate: [prompt, 1, 1] with a KV cache, growing without."""
    seen = []
    hook = net.get_input_embeddings().register_forward_hook(lambda _m, args, _out: seen.append(args[0].shape[1]))
    with torch.no_grad():
        net.generate(ids, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    hook.remove()
    return seen


def test_a_saved_checkpoint_decodes_with_its_kv_cache_through_every_loader(tmp_path):
    """The engine prunes with use_cache off; the checkpoint must not keep it off (decode ran 2.5x slower)."""
    from transformers import AutoModelForCausalLM

    from optprune.checkpoints.formats import load_block_widths_checkpoint
    from optprune.checkpoints.model_io import checkpoint_config

    _unequal_checkpoint("llama", tmp_path / "llama")
    assert json.loads((tmp_path / "llama" / "config.json").read_text())["use_cache"] is True
    ids = torch.load(tmp_path / "llama" / "ids.pt")
    folder = tmp_path / "llama"
    for net in (load_block_widths_checkpoint(folder, checkpoint_config(str(folder)), torch.float32).eval(),
                AutoModelForCausalLM.from_pretrained(str(tmp_path / "llama"), trust_remote_code=True).eval()):
        assert _step_lengths(net, ids) == [ids.shape[1], 1, 1], type(net).__name__
