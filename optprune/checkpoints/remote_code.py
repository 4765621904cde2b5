"""Structured checkpoints of unequal block widths that load without optprune.

A family's config states one MLP width and one number of KV heads for every block, so a model whose blocks were
shrunk to different widths (`--allocation milp|owl` with `--pattern structured`) cannot be rebuilt from it.  Next
to its weights the checkpoint gets `modeling_optprune.py`, a subclass of the family's own causal-LM class that
builds the model at the config's (largest) widths and then gives every linear listed in the config's
`optprune_linear_shapes` its saved shape, before transformers reads the weights; `auto_map` points
`AutoModelForCausalLM` at it.  So `AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True)` loads it with
transformers and torch alone.  vLLM's own model classes and llama.cpp assume one width for every block; vLLM's
Transformers modeling backend is the only route there (not verified here: no vLLM on this machine).  Shrinking keeps whole KV groups, so every attention module keeps its query heads
per KV head and reshapes by -1: no attribute but the linears changes."""
from __future__ import annotations

import json
from pathlib import Path

import torch

MODELING_FILE = "modeling_optprune.py"
CLASS_NAME = "OptpruneWidthsForCausalLM"

TEMPLATE = '''"""Written by optprune: loads this structured checkpoint, whose blocks have unequal widths, with transformers
alone (AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)).  The {base} is built at the config's
widths, then each linear in config.optprune_linear_shapes gets its saved (out, in) shape before the weights load."""
import torch
from transformers import {base} as _Base


class {name}(_Base):
    def __init__(self, config):
        super().__init__(config)
        for path, (rows, cols) in getattr(config, "optprune_linear_shapes", {{}}).items():
            old = self.get_submodule(path)
            if (old.out_features, old.in_features) != (rows, cols):
                parent, _, child = path.rpartition(".")
                setattr(self.get_submodule(parent), child,
                        torch.nn.Linear(cols, rows, bias=old.bias is not None, device=old.weight.device,
                                        dtype=old.weight.dtype))
'''


def linear_shapes(net, adapter) -> dict[str, list[int]]:
    """{'<path in the model>': [out, in]} of every target linear of every block."""
    return {f"{adapter.blocks_path}.{b}.{name}": [lin.out_features, lin.in_features]
            for b, block in enumerate(adapter.blocks(net)) for name, lin in adapter.targets(block).items()}


def write_widths_loader(out: Path, net, adapter, config: dict) -> dict:
    """The modeling file in `out`, and in `config` (config.json's dict, changed in place) its `auto_map` and the
    linears' shapes; the weight files keyed by the modules' own names (`keyed_as_modules`)."""
    keyed_as_modules(Path(out), net)
    base = type(net).__name__
    (Path(out) / MODELING_FILE).write_text(TEMPLATE.format(base=base, name=CLASS_NAME))
    config["optprune_linear_shapes"] = linear_shapes(net, adapter)
    config["auto_map"] = {"AutoModelForCausalLM": f"{MODELING_FILE.removesuffix('.py')}.{CLASS_NAME}"}
    return config


def keyed_as_modules(out: Path, net) -> None:
    """Rename the saved tensors that transformers wrote under a legacy name (GPT-NeoX's head as `embed_out`) to
    the module's own: a subclass built from the modeling file, and optprune's loader, read them as they are.  A
    saved tensor is matched to the one module tensor of equal value that no saved name holds."""
    from safetensors.torch import load_file, save_file

    own, renamed = net.state_dict(), {}
    for file in sorted(out.glob("*.safetensors")):
        saved = load_file(str(file))
        strays = [k for k in saved if k not in own]
        if not strays:
            continue
        free = [k for k in own if k not in saved]
        for key in strays:
            match = [k for k in free if own[k].shape == saved[key].shape and torch.equal(own[k].cpu(), saved[key])]
            if len(match) == 1:
                saved[match[0]] = saved.pop(key)
                free.remove(match[0])
                renamed[key] = match[0]
        save_file(saved, str(file), metadata={"format": "pt"})
    index = out / "model.safetensors.index.json"
    if renamed and index.exists():
        data = json.loads(index.read_text())
        data["weight_map"] = {renamed.get(k, k): v for k, v in data["weight_map"].items()}
        index.write_text(json.dumps(data, indent=2))
