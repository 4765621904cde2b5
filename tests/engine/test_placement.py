"""No pass holds more than one block on the device (issue 42): measured where modules are placed.

Every `Module.to` is watched: a call that names a device marks each block inside the module as there.  The
device is `cpu:0`, which the engine must treat as not the host (it offloads after each block), so a pass
that moves the whole model, or forgets to move a block back, is seen without an accelerator.  At every
block's forward and at the head, the blocks on the device are counted; a block that computes while not on
the device is a stray.  `test_placement_on_cuda` measures the same with the CUDA allocator where a GPU is."""
import pytest
import torch

from families import tiny_model, windows

DEVICE = torch.device("cpu", 0)
FAMILIES = ["llama", "gemma3_text"]


class Placement:
    """Which blocks are on DEVICE, from every Module.to; the most ever there while a block or the head ran."""

    def __init__(self, net, adapter, monkeypatch):
        self.index = {id(b): i for i, b in enumerate(adapter.blocks(net))}
        self.where, self.most, self.strays = {}, 0, []
        original = torch.nn.Module.to

        def to(module, *args, **kwargs):
            device = torch._C._nn._parse_to(*args, **kwargs)[0]
            out = original(module, *args, **kwargs)
            if device is not None:
                for m in module.modules():
                    if id(m) in self.index:
                        self.where[self.index[id(m)]] = torch.device(device)
            return out
        monkeypatch.setattr(torch.nn.Module, "to", to)
        for i, block in enumerate(adapter.blocks(net)):
            block.register_forward_pre_hook(lambda _m, _a, i=i: self.seen(i))
        net.get_output_embeddings().register_forward_pre_hook(lambda _m, _a: self.seen(None))

    def on_device(self) -> int:
        return sum(d == DEVICE for d in self.where.values())

    def seen(self, block) -> None:
        self.most = max(self.most, self.on_device())
        if block is not None and self.where.get(block) != DEVICE:
            self.strays.append(block)


def prune_pass(**options):
    from optprune.api import run_pruning
    from optprune.config import PruneConfig

    def run(net, adapter):
        config = PruneConfig(device=str(DEVICE), nsamples=4, seqlen=24, **options)
        run_pruning(net, windows(4, 24), config, adapter)
    return run


def evaluation_pass(net, adapter):
    from optprune.engine import Engine, streamed_perplexity
    streamed_perplexity(Engine(net, adapter, DEVICE, batch=2), torch.randint(3, 64, (200,)), 24)


def dense_problems_pass(net, adapter):                    # certify --dense and dump-layers' dense problems
    from optprune.api import dense_layer_problems
    dense_layer_problems(net, windows(4, 24), [0, 2], str(DEVICE))


def pruned_problems_pass(net, adapter):                   # dump-layers --method
    from optprune.api import pruned_layer_problems
    from optprune.config import PruneConfig
    pruned_layer_problems(net, windows(4, 24), [1], PruneConfig(method="sparsegpt", device=str(DEVICE)))


PASSES = {
    "calibration and propagation": prune_pass(method="sparsegpt"),
    "dense stream and reconstruction": prune_pass(method="sparsegpt", target="dense", reconstruct="block",
                                                 reconstruct_epochs=1),
    "reconstruction alone": prune_pass(method="sparsegpt", reconstruct="block", reconstruct_epochs=1),
    "sequential": prune_pass(method="wanda", sequential=True),
    "owl scores": prune_pass(method="wanda", allocation="owl"),
    "error price": prune_pass(method="wanda", allocation="milp", allocation_cost="error"),
    "sensitivity price": prune_pass(method="wanda", allocation="milp", allocation_cost="sensitivity"),
    "loss price": prune_pass(method="wanda", allocation="milp", allocation_cost="loss"),
    "structured milp": prune_pass(method="wanda", pattern="structured", sparsity=0.25, allocation="milp"),
    "streamed evaluation": evaluation_pass,
    "dense layer problems": dense_problems_pass,
    "pruned layer problems": pruned_problems_pass,
}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("name", list(PASSES))
def test_no_pass_holds_more_than_one_block_on_the_device(family, name, monkeypatch):
    from optprune.adapters import adapter_for

    net = tiny_model(family)
    adapter = adapter_for(net)
    placement = Placement(net, adapter, monkeypatch)
    PASSES[name](net, adapter)
    assert placement.most == 1, f"{name}: {placement.most} blocks on the device at once"
    assert not placement.strays, f"{name}: blocks {sorted(set(placement.strays))} ran off the device"


def test_the_watch_sees_a_whole_model_on_the_device(monkeypatch):
    """The measurement itself: a model moved whole is counted as all its blocks."""
    from optprune.adapters import adapter_for

    net = tiny_model("llama")
    adapter = adapter_for(net)
    placement = Placement(net, adapter, monkeypatch)
    net.to(DEVICE)
    net(windows(1, 8))
    assert placement.most == len(adapter.blocks(net)) == 4 and not placement.strays


def wide_model(family: str):
    """16 blocks (about 67 MB each in float32) that dwarf a batch's activations, for the allocator's count."""
    import transformers as T
    size = dict(vocab_size=256, hidden_size=1024, intermediate_size=4096, num_hidden_layers=16,
                num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=128,
                pad_token_id=0, bos_token_id=1, eos_token_id=2)
    config = (T.LlamaConfig(**size) if family == "llama" else
              T.Gemma3TextConfig(**size, head_dim=128, sliding_window=8, sliding_window_pattern=2))
    torch.manual_seed(0)
    return T.AutoModelForCausalLM.from_config(config).eval()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("family", FAMILIES)
def test_placement_on_cuda(family):
    """On a GPU the allocator itself: while any block runs, through the pricing passes, the dense stream, the
    reconstruction and the streamed evaluation, the memory held stays below 10 blocks' weights plus the
    embeddings and head (and 16 MiB of activations) where the model has 16.  One block's reconstruction holds
    the block, its dense copy, the gradients and Adam's two moments in float32 (7.3 blocks' worth measured on an
    H200 with 4 blocks, whose bound this replaced); a pass that kept the model on the device would hold 16."""
    from optprune.adapters import adapter_for
    from optprune.api import run_pruning
    from optprune.config import PruneConfig
    from optprune.engine import Engine, streamed_perplexity

    net = wide_model(family)
    adapter = adapter_for(net)
    sizes = [sum(p.numel() * p.element_size() for p in b.parameters()) for b in adapter.blocks(net)]
    outside = sum(p.numel() * p.element_size() for p in net.parameters()) - sum(sizes)
    held = []
    for block in adapter.blocks(net):
        block.register_forward_pre_hook(lambda _m, _a: held.append(torch.cuda.memory_allocated()))
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    config = PruneConfig(device="cuda", method="wanda", allocation="milp", allocation_cost="sensitivity",
                         target="dense", reconstruct="block", reconstruct_epochs=1, nsamples=4, seqlen=24)
    run_pruning(net, windows(4, 24), config, adapter)
    streamed_perplexity(Engine(net, adapter, torch.device("cuda"), batch=2), torch.randint(3, 64, (200,)), 24)
    assert held and max(held) - base < 10 * max(sizes) + outside + 16 * 2 ** 20, (max(held) - base, sizes)
