"""Memory-mapped pages handed back: released pages leave the RSS and read back the same; a written page and
anonymous memory are never advised; the engine's walk and the checkpoint writer leave no block resident."""
import sys

import pytest
import torch

from optprune.engine import Engine, release_file_pages
from optprune.engine import pages

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise and /proc are Linux's")


def edge_kib(net) -> int:
    """The pages no tensor covers whole (its edges shared with a neighbour, small tensors): at most two per
    tensor, never released."""
    return 2 * len(net.state_dict()) * pages._PAGE // 1024


def mapped_kib(path) -> int:
    """Resident KiB of this process's mappings of `path` (/proc/self/smaps)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            head = line.split()
            if "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
                inside = len(head) == 6 and head[5] == str(path)
            elif inside and head[0] == "Rss:":
                total += int(head[1])
    return total


@pytest.fixture
def mapped(tmp_path):
    """A tiny Llama saved as bfloat16 safetensors and loaded back memory-mapped: (model, its file)."""
    import transformers as T
    cfg = T.LlamaConfig(hidden_size=256, intermediate_size=1024, num_hidden_layers=3, num_attention_heads=4,
                        num_key_value_heads=2, vocab_size=512, use_cache=False)
    torch.manual_seed(0)
    T.AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16).save_pretrained(tmp_path)
    net = T.AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16)
    file = (tmp_path / "model.safetensors").resolve()
    values = [p.detach().float().sum() for p in net.parameters()]       # every page touched
    assert mapped_kib(file) > 2000, "precondition: the weights are pages of a mapped file"
    return net, file, values


def test_released_pages_leave_the_rss_and_read_back_the_same(mapped):
    net, file, values = mapped
    advised = release_file_pages(net.state_dict().values())
    assert advised > 0
    assert mapped_kib(file) <= edge_kib(net)
    assert [p.detach().float().sum() for p in net.parameters()] == values


def test_a_written_page_is_kept(mapped):
    net, file, _ = mapped
    w = net.model.layers[1].mlp.down_proj.weight
    with torch.no_grad():
        w[:, :64] += 1.0                             # a private copy of some of the mapped pages
    written = w.detach().clone()
    release_file_pages([w])
    assert torch.equal(w.detach(), written)


def test_without_the_pagemap_check_a_written_page_would_be_lost(mapped, monkeypatch):
    net, file, _ = mapped
    w = net.model.layers[1].mlp.down_proj.weight
    with torch.no_grad():
        w.fill_(3.0)
    monkeypatch.setattr(pages, "clean_runs", lambda _pagemap, start, length: [(start, length)])
    release_file_pages([w])
    assert not torch.equal(w.detach(), torch.full_like(w, 3.0))   # what the pagemap check prevents


def test_anonymous_memory_is_never_advised():
    t = torch.arange(1 << 20, dtype=torch.float32)
    assert release_file_pages([t]) == 0
    assert torch.equal(t, torch.arange(1 << 20, dtype=torch.float32))


def test_a_walk_over_a_mapped_model_leaves_no_block_resident(mapped):
    from optprune.adapters import adapter_for
    net, file, _ = mapped
    release_file_pages(net.state_dict().values())
    engine = Engine(net, adapter_for(net), "cpu", 2)
    seen = []
    engine.each_dense_block(torch.randint(0, 512, (2, 16)), lambda b, block, grams: seen.append(mapped_kib(file)))
    assert min(seen) > 4 * edge_kib(net)                        # the block being visited is resident while it works
    assert mapped_kib(file) <= edge_kib(net)        # and nothing is once the walk is over


def test_the_checkpoint_writer_hands_each_shard_back(mapped, tmp_path, monkeypatch):
    from optprune.checkpoints import formats
    net, file, values = mapped
    monkeypatch.setattr(formats, "SHARD_SIZE", "1MB")
    formats.save_for_generation(net, tmp_path / "out")
    assert len(list((tmp_path / "out").glob("*.safetensors"))) > 1
    assert mapped_kib(file) <= edge_kib(net)
    assert [p.detach().float().sum() for p in net.parameters()] == values
