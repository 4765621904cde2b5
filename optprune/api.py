"""The Python API: prune or evaluate a model object in a few lines, in memory.

    import optprune
    report = optprune.prune(model, tokenizer, method="sparsegpt", pattern="2:4")
    ppl = optprune.evaluate(model, tokenizer)["ppl"]

`data` is a tokenizer (calibration windows are sampled from `calib`, as on the command line:
a corpus name, or any list of strings or HF `Dataset` with a "text" column) or a LongTensor of
token windows (n, seqlen).  Nothing is written unless `resume_dir` is given.
"""
from __future__ import annotations

import contextlib
import dataclasses
import difflib
import math
import warnings
from pathlib import Path

import torch

from .adapters import ModelAdapter, adapter_for
from .allocation import allocate
from .data import calibration_windows, tokenize_long, wikitext_test_text, window_bos_id
from .config import CalibrationSpec, PruneConfig, resolve_device
from .engine import (BlockReconstruction, Engine, ResumeState, model_digest, parse_memory, release_file_pages,
                     streamed_perplexity, windows_digest)
from .parallel import world
from .settings import prefixed
from .pruner import BlockPruner
from .recipes import with_recipe


def prune(model, data, method: str | None = None, pattern: str | None = None, sparsity: float | None = None, *,
          recipe: str | None = None, config: PruneConfig | None = None, resume_dir: str | Path | None = None,
          progress=None, **settings) -> dict:
    """Prune `model` in place with one method and pattern (default: sparseswaps, per-row); returns the report
    (every layer's error, sparsity and seconds; per-block time breakdown).  `recipe`: a preset (best, balanced,
    fast) or a recipe YAML (`optprune.recipes`), which the other arguments override.  `settings`: any
    PruneConfig field; `calib` may also be a list of strings or an HF Dataset (reported as calib="texts")."""
    texts = settings.pop("calib") if not isinstance(settings.get("calib", ""), str) else None
    if texts is not None:
        settings["calib"] = "texts"
    check_setting_names(settings)
    given = {**{k: v for k, v in dict(method=method, pattern=pattern, sparsity=sparsity).items() if v is not None},
             **settings}
    config = config or PruneConfig(**(with_recipe(recipe, given) if recipe else given))
    adapter = adapter_for(model)
    tokenizer = callable(data) and not isinstance(data, torch.Tensor)
    if data is not None and not tokenizer and not isinstance(data, torch.Tensor):
        raise ValueError(f"data must be a tokenizer or a LongTensor of token windows (n, seqlen), got "
                         f"{type(data).__name__}: pass torch.as_tensor(...) of it")
    windows = (calibration_for(model, data, adapter, config, texts) if tokenizer and config.needs_calibration()
               else data)
    return run_pruning(model, windows, config, adapter, resume_dir, progress)


def check_setting_names(settings: dict) -> None:
    """One line for a keyword that is no setting, with the nearest ones."""
    known = {f.name for f in dataclasses.fields(PruneConfig)}
    for name in settings:
        if name not in known:
            near = difflib.get_close_matches(name, sorted(known), n=2)
            raise TypeError(f"optprune.prune has no setting {name!r}"
                            + (f": did you mean {' or '.join(map(repr, near))}?" if near else ""))


def calibration_for(model, tokenizer, adapter: ModelAdapter, config: CalibrationSpec, texts=None) -> torch.Tensor:
    """The calibration spec's windows, drawn from `texts` (strings or a Dataset) when given."""
    return calibration_windows(tokenizer, config.calib if texts is None else texts, config.nsamples, config.seqlen,
                               config.seed, config.data_dir, window_bos_id(adapter, tokenizer, model.config))


def check_windows(windows: torch.Tensor, vocab: int) -> None:
    """One line for calibration windows the model cannot read: not an integer tensor of shape (n >= 1,
    seqlen >= 2), or token ids outside [0, vocab)."""
    if not isinstance(windows, torch.Tensor) or windows.is_floating_point() or windows.is_complex() \
            or windows.dtype == torch.bool:
        what = windows.dtype if isinstance(windows, torch.Tensor) else type(windows).__name__
        raise ValueError(f"calibration windows must be an integer tensor of token ids (n, seqlen), got {what}")
    if windows.dim() != 2 or windows.shape[0] < 1 or windows.shape[1] < 2:
        raise ValueError(f"calibration windows must have shape (n >= 1, seqlen >= 2), got {tuple(windows.shape)}")
    low, high = int(windows.min()), int(windows.max())
    if low < 0 or high >= vocab:
        raise ValueError(f"calibration windows hold token ids {low}..{high}, outside the model's vocabulary "
                         f"[0, {vocab})")


def run_fingerprint(net, windows: torch.Tensor | None, config: PruneConfig, digest: dict | None = None,
                    **extra) -> dict:
    """Everything that changes a run's result: settings, model (`digest`: its `model_digest`, when known),
    calibration windows, ranks."""
    data = windows_digest(windows) if windows is not None else None
    return dict(config.result_settings(), **(digest or model_digest(net)), windows=data, ranks=world()[1], **extra)


def pruner_for(net, config: PruneConfig, adapter: ModelAdapter | None = None) -> BlockPruner:
    """The step that applies `config`'s method and pattern to one block of `net`."""
    return BlockPruner(adapter or adapter_for(net), config)


def run_pruning(net, windows: torch.Tensor | None, config: PruneConfig, adapter: ModelAdapter,
                resume_dir=None, progress=None, resume: bool = True, identity: dict | None = None,
                say=None, pricing_progress=None) -> dict:
    """The engine with a BlockPruner step (the model in eval mode, its own mode restored after); the data-free
    path when no calibration is needed (`say`: a line of progress within a block, e.g. the reconstruction's
    epochs).  Windows the model cannot read are refused before any hashing or pass.
    With `resume_dir`, a state of the same fingerprint (plus `identity`) is resumed, another refused;
    the report's `sessions` lists the seconds of every process that worked on the run;
    `pricing_progress()` after each block of an allocation's pricing pass, which is kept in (and read back
    from) the folder config.pricing_cache when given (`allocation.cached_survey`)."""
    device = resolve_device(config.device)
    step = pruner_for(net, config, adapter)
    step.check_fits(net)
    if (line := large_step_warning(net, adapter, config)) is not None:
        warnings.warn(line, stacklevel=2)
    calibrated = config.needs_calibration()
    if calibrated and windows is None:
        raise ValueError(f"{config.method} needs calibration windows"
                         + (f" (--allocation {config.allocation})" if config.allocation != "uniform" else ""))
    if calibrated:
        check_windows(windows, net.get_input_embeddings().num_embeddings)
    before = layer_sizes(net, adapter)
    digest = model_digest(net)           # hashed once: the fingerprint's and the pricing cache's
    release_file_pages(net.state_dict().values())       # the mapped pages the digest's samples touched
    fingerprint = run_fingerprint(net, windows if calibrated else None, config, digest, **(identity or {}))
    state = ResumeState(resume_dir if calibrated else None, adapter, resume, fingerprint)
    allocation = None
    engine = Engine(net, adapter, device, config.batch, offload=config.offload,
                    max_memory=parse_memory(config.max_memory), mmap_weights=config.mmap_weights,
                    dense_target=config.target == "dense", sequential=config.runs_sequential(),
                    reconstruct=reconstruction_for(config, adapter, say),
                    dense_windows=0 if config.target == "dense" else config.reconstruct_windows)
    with eval_mode(net):                 # no dropout in the pricing pass or the calibration passes
        if config.allocation != "uniform":
            allocation = state.remember("allocation.json", lambda: allocate(
                net, adapter, windows, config, pricing_progress, digest))
            step.layer_sparsity = allocation["sparsity"]
        report = engine.run(windows if calibrated else None, step, state, progress)
    if calibrated:
        report["sessions"] = state.sessions()
    step.finish(net)
    if allocation is not None:
        report["allocation"] = allocation
    report["layer_sparsity"] = measured_sparsity(before, net, adapter)
    report["achieved_sparsity"] = weighted_sparsity(before, report["layer_sparsity"])
    report["calibrated"], report["fingerprint"] = calibrated, fingerprint
    report["adapter"] = adapter.model_type + (" (layout inferred)" if adapter.inferred else "")
    return report


LARGE_STEP_SHARE = 0.025     # an absolute reconstruction step above this share of the weights' RMS is warned of


def large_step_warning(net, adapter: ModelAdapter, config: PruneConfig) -> str | None:
    """The line warning that the reconstruction's absolute step is large for this model's weights (above
    LARGE_STEP_SHARE of the median RMS of block 0's linears), else None.  An absolute 2e-3 (the presets' until
    2026-12-07) is about 1% of SmolLM2-135M's weights and 5% of Gemma-3-270M's, where it ruined the model."""
    if config.reconstruct == "none" or config.reconstruct_step != "absolute":
        return None
    linears = adapter.targets(adapter.blocks(net)[0]).values()
    rms = sorted(float(lin.weight.detach().float().pow(2).mean().sqrt()) for lin in linears)[len(linears) // 2]
    share = config.reconstruct_lr / max(rms, 1e-30)
    if share <= LARGE_STEP_SHARE:
        return None
    return (f"block reconstruction: the step {config.reconstruct_lr:g} is {share:.1%} of the RMS of this model's "
            f"weights ({rms:.3g}; the presets' step is 1% of each linear's RMS: --reconstruct-step relative); on "
            f"Gemma-3-270M, 50% per-row, 8 windows, 2e-3 gave perplexity 517 (mse loss) and 43.5 (channel loss) "
            f"against SparseGPT's 31.9 on the first 8 test windows, and --reconstruct-step relative "
            f"--reconstruct-lr 1e-2 --reconstruct-loss channel gave 31.45 (docs/results/gemma3_loss_per-row-0.50.md)")


def reconstruction_for(config: PruneConfig, adapter: ModelAdapter, say=None) -> BlockReconstruction | None:
    """The block reconstruction `config` asks for (None: none), its options the `reconstruct_*` settings;
    `say` gets its epoch lines."""
    if config.reconstruct == "none":
        return None
    a = adapter.attention
    if config.reconstruct_qkv_epochs >= 0 and a is None:
        raise ValueError(f"--reconstruct-qkv-epochs: the {adapter.model_type} adapter does not name the attention's "
                         f"q/k/v projections; leave it at -1 (fit every linear every epoch)")
    return BlockReconstruction(adapter.targets, progress=say, attention_inputs=(a.q, a.k, a.v) if a else (),
                               **prefixed(config, "reconstruct_"))


def evaluate(model, tokenizer, dataset: str = "wikitext2", seqlen: int = 2048, *, data_dir: str = "",
             max_windows: int = 0, device: str = "auto", batch: int = 8, progress=None, head_progress=None) -> dict:
    """WikiText-2 perplexity of `model` (in eval mode; its own mode restored after), streamed one block at a
    time through `device`; windows start with BOS where the family's adapter says so (`bos` in the result).
    A perplexity that is not finite raises FloatingPointError: it is an overflow, never a result."""
    if dataset != "wikitext2":
        raise ValueError(f"unknown perplexity set {dataset!r}: use wikitext2")
    if not callable(tokenizer):
        raise TypeError(f"tokenizer must be the model's tokenizer (callable on text), got {type(tokenizer).__name__}")
    if seqlen < 2:
        raise ValueError(f"seqlen must be >= 2 (a window predicts its next tokens), got {seqlen}")
    adapter = adapter_for(model)
    dev = resolve_device(device)
    ids = tokenize_long(tokenizer, wikitext_test_text(data_dir))
    engine = Engine(model, adapter, dev, batch)
    with eval_mode(model):
        result = streamed_perplexity(engine, ids, seqlen, window_bos_id(adapter, tokenizer, model.config),
                                     max_windows, progress, head_progress)
    if not math.isfinite(result["ppl"]):
        dtype = next(model.parameters()).dtype
        raise FloatingPointError(f"perplexity is {result['ppl']}: the forward passes overflowed in {dtype}; "
                                 "evaluate in bfloat16 or float32 (--dtype)")
    return result


@contextlib.contextmanager
def eval_mode(net):
    """`net` in eval mode (no dropout) for a pass, its own mode restored afterwards."""
    was = net.training
    net.eval()
    try:
        yield net
    finally:
        net.train(was)


def pruned_layer_problems(net, windows: torch.Tensor, blocks: list[int], config: PruneConfig) -> dict:
    """{'<block>.<linear>': (W, statistics)} as the pipeline sees them under `config`: each wanted block's
    weights before its step and its input statistics (a Gram, or with the dense target the (G, cross,
    target) triple) on the stream of the model pruned up to that block."""
    adapter = adapter_for(net)
    check_blocks(net, adapter, blocks)
    step, out = pruner_for(net, config, adapter), {}

    def record(b, block, grams):
        if b in blocks:
            out.update({f"{b}.{name}": (adapter.targets(block)[name].weight.detach().float().cpu(), stats)
                        for name, stats in grams.items()})
        return step(b, block, grams)
    engine = Engine(net, adapter, resolve_device(config.device), config.batch,
                    dense_target=config.target == "dense", sequential=config.runs_sequential())
    engine.run(windows, record, ResumeState(None, adapter), stop=max(blocks) + 1)
    return out


def layer_sizes(net, adapter: ModelAdapter) -> dict[str, int]:
    """{'<block>.<linear>': its weight's entries} of every target linear."""
    return {f"{b}.{name}": lin.weight.numel() for b, block in enumerate(adapter.blocks(net))
            for name, lin in adapter.targets(block).items()}


@torch.no_grad()
def measured_sparsity(before: dict[str, int], net, adapter: ModelAdapter) -> dict[str, float]:
    """Each target linear's pruned share, measured from its weights now: (entries removed by shrinking + zeros
    left) / entries before (`before`: `layer_sizes` of the model as it came).  A model that already held
    zeros reports them: the figure is what the weights are, not what the run asked for."""
    out = {}
    for b, block in enumerate(adapter.blocks(net)):
        for name, lin in adapter.targets(block).items():
            key = f"{b}.{name}"
            out[key] = (before[key] - lin.weight.numel() + int((lin.weight == 0).sum())) / before[key]
    return out


def weighted_sparsity(before: dict[str, int], sparsity: dict[str, float]) -> float:
    """The share of all target entries pruned: each layer's measured share weighted by its size."""
    return sum(sparsity[k] * n for k, n in before.items()) / max(sum(before.values()), 1)


def mean_layer_error(layers: list[dict]) -> float | None:
    """Mean relative layer error f(W_hat)/f(0) of a report; None when it was not measured (data-free)."""
    errors = [r["rel_error"] for r in layers if r["rel_error"] is not None]
    return sum(errors) / len(errors) if errors else None


def check_blocks(net, adapter: ModelAdapter, blocks: list[int]) -> None:
    n = len(adapter.blocks(net))
    if not blocks or any(b < 0 or b >= n for b in blocks):
        raise ValueError(f"blocks must lie in [0, {n}), got {blocks}")


@torch.no_grad()
def dense_layer_problems(net, windows: torch.Tensor, blocks: list[int], device: str = "cpu", batch: int = 8) -> dict:
    """{'<block>.<linear>': (W, G)} of the dense model: weights and input Grams of chosen blocks."""
    adapter = adapter_for(net)
    check_blocks(net, adapter, blocks)
    out = {}

    def collect(b, block, grams):
        out.update({f"{b}.{name}": (lin.weight.detach().float().cpu(), grams[name].cpu())
                    for name, lin in adapter.targets(block).items()})
    Engine(net, adapter, resolve_device(device), batch).each_dense_block(windows, collect, blocks)
    return out
