"""Sequential block-wise pruning of a causal LM (the pipeline; algorithms live in solvers/).

Block b sees the outputs of the already *pruned* blocks 0..b-1:
  1. run block b on the calibration activations with hooks that accumulate
     G = sum_t x_t x_t^T (float32) for every linear sub-layer;
  2. solve each sub-layer's LayerProblem(W, G) with the chosen method, write W_hat;
  3. run the pruned block to produce the next block's inputs.
Only one block is on the accelerator at a time.  After every block its pruned
weights and the report so far go to `<out>/.resume/`, so an interrupted run
restarts at the first unfinished block (earlier inputs are recomputed).
Under torch.distributed the layer problems of each block are sharded across
ranks (optprune.parallel); rank 0 writes the resume state and the output.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from ..parallel import solve_sharded, world
from ..patterns import Pattern
from ..problem import LayerProblem
from ..solvers import DATA_FREE_MASKS, prune_layer
from .activations import ActivationStore
from .model_io import decoder_layers, linear_sublayers
from .structured import attention_layout, gated_mlp, parameter_matched_split, shrink_attention, shrink_mlp


class _Stop(Exception):
    pass


@torch.no_grad()
def block_inputs(net, windows: torch.Tensor, device, budget: int | None = None,
                 spill_dir=None) -> tuple[ActivationStore, tuple, dict]:
    """Hidden states entering block 0 for every window (in a budgeted store), and the block kwargs."""
    layers = decoder_layers(net)
    first = layers[0]
    caught: dict = {}
    store: ActivationStore | None = None
    position = [0]

    class Catcher(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = first

        def __getattr__(self, name):
            try:
                return super().__getattr__(name)
            except AttributeError:
                return getattr(self.inner, name)

        def forward(self, hidden, *args, **kwargs):
            nonlocal store
            if store is None:
                store = ActivationStore((len(windows), *hidden.shape[1:]), hidden.dtype, budget, spill_dir)
            store.data[position[0]] = hidden[0].detach().cpu()
            position[0] += 1
            if not caught:
                caught.update(kwargs)
                caught["__args__"] = args
            raise _Stop

    layers[0] = Catcher()
    try:
        for w in windows:
            try:
                net(w[None].to(device))
            except _Stop:
                pass
    finally:
        layers[0] = first
    args = caught.pop("__args__", ())
    caught.pop("past_key_values", None)
    caught.pop("past_key_value", None)
    caught["use_cache"] = False
    return store, args, caught


def _call_block(block, x, args, kwargs):
    out = block(x, *args, **kwargs)
    return out[0] if isinstance(out, (tuple, list)) else out


def _device_of(block) -> torch.device:
    return next(block.parameters()).device


@torch.no_grad()
def run_block(block, inps: ActivationStore, args, kwargs, batch: int, outs: ActivationStore | None = None):
    """Block outputs for every stored input, batch by batch on the block's device."""
    device = _device_of(block)
    for s in range(0, len(inps), batch):
        y = _call_block(block, inps.data[s:s + batch].to(device), args, kwargs)
        if outs is not None:
            outs.data[s:s + batch] = y.to("cpu", outs.data.dtype)
    return outs


@torch.no_grad()
def block_grams(block, inps: ActivationStore, args, kwargs, batch: int) -> dict[str, torch.Tensor]:
    """G = sum_t x_t x_t^T (float32) for every linear sub-layer.  Linears fed the same tensor
    (q/k/v, gate/up) share one Gram: their names map to the same matrix."""
    linears = linear_sublayers(block)
    device = _device_of(block)
    grams: dict[str, torch.Tensor] = {}
    seen: list[tuple[torch.Tensor, str]] = []   # first batch: (input tensor object, linear accumulating it)

    def hook(_m, inp, _out, name):
        x = inp[0]
        if name not in grams:             # first batch: share with an earlier linear fed the same object
            first = next((n for t, n in seen if t is x), None)
            if first is None:
                seen.append((x, name))    # holding x also keeps its address from being reused
                grams[name] = torch.zeros(x.shape[-1], x.shape[-1], dtype=torch.float32, device=device)
            else:
                grams[name] = grams[first]
                shared.add(name)
        if name in shared:
            return
        flat = x.reshape(-1, x.shape[-1]).float()
        grams[name].addmm_(flat.T, flat)

    shared: set[str] = set()
    hooks = [mod.register_forward_hook(lambda m, i, o, name=name: hook(m, i, o, name))
             for name, mod in linears.items()]
    try:
        run_block(block, inps, args, kwargs, batch)
    finally:
        for h in hooks:
            h.remove()
        seen.clear()
    return grams


def block_state_path(state_dir: Path, b: int) -> Path:
    """Where block b's pruned state is saved for resuming (and memory-mapped by mmap_weights)."""
    return Path(state_dir) / f"block{b:03d}.pt"


def load_pruned_blocks(net, state_dir: Path) -> int:
    """Load the saved block states block000.pt, block001.pt, ... in order (shrinking modules
    whose saved weights are narrower); returns how many blocks were loaded."""
    layers = decoder_layers(net)
    done = 0
    while done < len(layers) and block_state_path(state_dir, done).exists():
        state = torch.load(block_state_path(state_dir, done))
        block = layers[done]
        current = {k: v.shape for k, v in block.state_dict().items()}
        if "mlp.down_proj.weight" in state and state["mlp.down_proj.weight"].shape != current["mlp.down_proj.weight"]:
            shrink_mlp(block, torch.arange(state["mlp.down_proj.weight"].shape[1]))
        if "self_attn.k_proj.weight" in state and state["self_attn.k_proj.weight"].shape != current["self_attn.k_proj.weight"]:
            shrink_attention(block, torch.arange(state["self_attn.k_proj.weight"].shape[0] // attention_layout(block)[2]))
        block.load_state_dict(state)
        done += 1
    return done


def set_structured_config(net) -> None:
    """Record the (uniform) shrunk widths in the config so `from_pretrained` rebuilds the model."""
    layers = decoder_layers(net)
    net.config.intermediate_size = gated_mlp(layers[0]).down_proj.in_features
    n_kv, n_rep, hd = attention_layout(layers[0])
    net.config.head_dim = hd
    net.config.num_key_value_heads, net.config.num_attention_heads = n_kv, n_kv * n_rep


def row_chunks(rows: int, shards: int, pattern: Pattern) -> list[range]:
    """Contiguous row ranges of a layer.  The objective tr(D G D^T) = sum_i d_i G d_i^T separates
    over rows, and so do the constraints of a pattern whose budgets live in blocks of
    `pattern.row_block` rows (per-row, N:M: 1), so chunks of whole blocks are independent problems
    with the same optimum; per-layer and structured budgets couple all rows."""
    if shards < 1:
        raise ValueError(f"row_shards must be >= 1, got {shards}")
    block = pattern.row_block
    if shards > 1 and block is None:
        raise ValueError(f"row sharding needs a row-separable pattern (per-row, N:M, row-block), got {pattern.name}")
    blocks = rows // (block or 1)
    shards = min(shards, blocks)
    edges = [(block or 1) * (blocks * k // shards) for k in range(shards + 1)]
    return [range(edges[k], edges[k + 1]) for k in range(shards)]


def mean_layer_error(layers: list[dict]) -> float | None:
    """Mean relative layer error f(W_hat)/f(0) of a report; None when it was not measured (data-free)."""
    errors = [r["rel_error"] for r in layers if r["rel_error"] is not None]
    return sum(errors) / len(errors) if errors else None


def needs_calibration(method: str, pattern: Pattern, refit: bool = False, layer_errors: bool = False) -> bool:
    """False for a data-free mask (magnitude) kept as is: no forward pass and no Gram is needed,
    unless the layer errors are wanted (they need G)."""
    return layer_errors or not (method in DATA_FREE_MASKS and not refit and not pattern.removes_inputs)


@torch.no_grad()
def prune_without_data(net, method: str, pattern: Pattern, progress=None) -> dict:
    """Prune every linear sub-layer with a data-free mask (W_hat = W * M(W)), block by block.
    The result equals prune_sequential's (the mask ignores the inputs), in seconds instead of the
    calibration passes; layer errors need the Grams, so each layer's rel_error is None."""
    report = {"layers": [], "block_seconds": {}, "input_seconds": 0.0, "calibrated": False}
    for b, block in enumerate(decoder_layers(net)):
        t0 = time.perf_counter()
        for name, lin in linear_sublayers(block).items():
            t_layer = time.perf_counter()
            mask = DATA_FREE_MASKS[method](lin.weight.detach().float(), pattern)
            lin.weight.mul_(mask.to(lin.weight.dtype))
            report["layers"].append(dict(block=b, layer=name, rel_error=None, sparsity=float(1 - mask.float().mean()),
                                         seconds=time.perf_counter() - t_layer, peak_accel_bytes=None, row_shards=1))
        report["block_seconds"][str(b)] = time.perf_counter() - t0
        if progress:
            progress(b, report["block_seconds"][str(b)])
    return report


def prune_sequential(net, windows: torch.Tensor | None, method: str, pattern: Pattern, out_dir: Path,
                     device="cpu", batch: int = 8, options: dict | None = None, resume: bool = True,
                     progress=None, offload: bool = False, refit: bool = False,
                     max_memory: int | None = None, attn_sparsity: float | None = None,
                     row_shards: int = 1, mmap_weights: bool = False, layer_errors: bool = False) -> dict:
    """Prune every linear sub-layer of every block in place; returns the report.
    offload=True moves each block back to the CPU once its outputs are computed; refit=True adds a
    least-squares refit of the kept weights to any method.  The structured pattern prunes MLP
    channels (selected on down_proj, whose inputs are the channels) and whole KV groups of attention
    heads (selected on o_proj's column groups) and shrinks the modules: by default `sparsity` is the
    share of each block's parameters removed (`parameter_matched_split`); with attn_sparsity given,
    the MLP loses that share of channels and attention that share of KV groups (rounded down).
    max_memory bounds each activation buffer in RAM; larger ones are memory-mapped in
    <out>/.resume/acts.  Each report entry has the block's peak accelerator memory (CUDA).
    row_shards > 1 splits every layer's rows into that many chunks, solved as separate problems
    (see `row_chunks`) and spread over the torch.distributed ranks with the layers.
    mmap_weights=True swaps each finished block out of RAM: its parameters are re-pointed to a
    memory map of the block state saved for resuming, so the host holds about one block.
    The report keeps the wall seconds of computing the block-0 inputs and of each block
    (Grams + solves + propagation), so a resumed run still adds up to an uninterrupted one's time.
    A data-free method (magnitude, no refit) skips all of this unless layer_errors=True:
    see `prune_without_data`."""
    if not needs_calibration(method, pattern, refit, layer_errors):
        return prune_without_data(net, method, pattern, progress)
    if windows is None:
        raise ValueError(f"{method} needs calibration windows")
    options = options or {}
    layers = decoder_layers(net)
    state_dir = Path(out_dir) / ".resume"
    state_dir.mkdir(parents=True, exist_ok=True)
    report_path = state_dir / "report.json"
    report = json.loads(report_path.read_text()) if (resume and report_path.exists()) else {"layers": []}
    done = load_pruned_blocks(net, state_dir) if resume else 0
    report["layers"] = [r for r in report["layers"] if r["block"] < done]
    report["block_seconds"] = {k: v for k, v in report.get("block_seconds", {}).items() if int(k) < done}
    t_inputs = time.perf_counter()
    inps, args, kwargs = block_inputs(net, windows, device, max_memory, state_dir / "acts")
    report.setdefault("input_seconds", time.perf_counter() - t_inputs)
    outs = inps.like()
    report["activations_on_disk"] = inps.spilled
    cuda = torch.device(device).type == "cuda"
    for b, block in enumerate(layers):
        block.to(device)
        if b >= done:
            t0 = time.perf_counter()
            if cuda:
                torch.cuda.reset_peak_memory_stats(device)
            grams = block_grams(block, inps, args, kwargs, batch)
            targets = linear_sublayers(block)
            patterns = {name: pattern for name in targets}
            if pattern.removes_inputs:
                gated_mlp(block)
                n_kv, n_rep, hd = attention_layout(block)
                mlp_sp, attn_sp = ((pattern.sparsity, attn_sparsity) if attn_sparsity is not None
                                   else parameter_matched_split(block, pattern.sparsity))
                patterns["mlp.down_proj"] = Pattern("structured", mlp_sp)
                patterns["self_attn.o_proj"] = Pattern("structured", attn_sp, group=n_rep * hd)
                widths = {"mlp.down_proj": targets["mlp.down_proj"].in_features, "self_attn.o_proj": n_kv * n_rep * hd}
                targets = {n: targets[n] for n in widths if patterns[n].pruned_per_row(widths[n])}
            jobs = [(name, rows, lin.weight.detach().float()[rows.start:rows.stop], grams[name], patterns[name])
                    for name, lin in targets.items()
                    for rows in row_chunks(lin.out_features, row_shards, patterns[name])]

            def solve(job, b=b):
                name, rows, W, G, pattern = job
                problem = LayerProblem(W, G, f"{b}.{name}[{rows.start}:{rows.stop}]")
                res = prune_layer(problem, pattern, method, **options.get(method, {}))
                if refit:
                    res.weight = problem.refit(res.mask, res.weight)
                return res.weight, res.mask, dict(seconds=res.seconds, peak_accel_bytes=(
                    torch.cuda.max_memory_allocated(device) if cuda else None))

            solved = solve_sharded(jobs, solve)
            results = []
            for name, lin in targets.items():        # gather the row chunks of each layer
                parts = [r for job, r in zip(jobs, solved) if job[0] == name]
                weight, mask = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
                problem = LayerProblem(lin.weight.detach().float(), grams[name], f"{b}.{name}")
                peaks = [p[2]["peak_accel_bytes"] for p in parts if p[2]["peak_accel_bytes"] is not None]
                results.append((weight, mask, dict(
                    block=b, layer=name, rel_error=problem.relative_error(W_hat=weight),
                    sparsity=float(1 - mask.float().mean()), seconds=sum(p[2]["seconds"] for p in parts),
                    peak_accel_bytes=max(peaks) if peaks else None, row_shards=len(parts))))
            for (name, lin), (weight, mask, info) in zip(targets.items(), results):
                report["layers"].append(info)
                if not pattern.removes_inputs:
                    lin.weight.data = weight.to(lin.weight.dtype)
                    continue
                keep = torch.nonzero(mask[0]).flatten()
                if name == "self_attn.o_proj":
                    group = patterns[name].group
                    shrink_attention(block, keep[::group] // group, weight[:, keep])
                else:
                    shrink_mlp(block, keep, weight[:, keep])
            del grams
        run_block(block, inps, args, kwargs, batch, outs)
        inps, outs = outs, inps
        if b >= done:
            report["block_seconds"][str(b)] = time.perf_counter() - t0   # Grams + solves + propagation
            if world()[0] == 0:
                torch.save(block.state_dict(), block_state_path(state_dir, b))
                report_path.write_text(json.dumps(report))
            if progress:
                progress(b, report["block_seconds"][str(b)])
        if offload:
            block.to("cpu")          # keep one block at a time on the accelerator
        saved = block_state_path(state_dir, b)
        if mmap_weights and world()[0] == 0 and saved.exists():     # rank 0 wrote it
            block.to("cpu")
            block.load_state_dict(torch.load(saved, mmap=True), assign=True)
    inps.release()
    outs.release()
    if pattern.removes_inputs:
        set_structured_config(net)
    return report


@torch.no_grad()
def dense_layer_problems(net, windows: torch.Tensor, blocks: list[int], device="cpu", batch: int = 8) -> dict:
    """{'<block>.<linear>': (W, G)} from the dense model: weights and input Grams of chosen blocks."""
    layers = decoder_layers(net)
    if any(b < 0 or b >= len(layers) for b in blocks):
        raise ValueError(f"blocks must lie in [0, {len(layers)})")
    inps, args, kwargs = block_inputs(net, windows, device)
    outs = inps.like()
    out = {}
    for b in range(max(blocks) + 1):
        block = layers[b].to(device)
        if b in blocks:
            grams = block_grams(block, inps, args, kwargs, batch)
            for name, lin in linear_sublayers(block).items():
                out[f"{b}.{name}"] = (lin.weight.detach().float().cpu(), grams[name].cpu())
        run_block(block, inps, args, kwargs, batch, outs)
        inps, outs = outs, inps
    return out
