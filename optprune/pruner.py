"""What is done to each block: one method, one pattern, on every target linear (the engine's step).

For each target, LayerProblem(W, G) is solved by the registered method (optionally refit by
least squares) and W_hat written back.  Row-separable patterns may split a layer's rows into
independent problems, spread over the torch.distributed ranks with the layers.  The structured
pattern removes MLP channels (chosen on the MLP's output linear, whose inputs are the channels)
and whole KV groups of attention heads (on the attention output's column groups) and shrinks the
modules through the adapter's layouts."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import time

import torch

from .engine.grams import DenseTargetGrams
from .adapters import (ModelAdapter, attention_layout, mlp_width, parameter_matched_split, set_structured_config,
                       shrink_attention, shrink_mlp)
from .parallel import solve_sharded
from .patterns import Pattern
from .problem import LayerProblem
from .solvers import DATA_FREE_MASKS, prune_layer
from .config import PruneConfig, resolve_device


def layer_problem(W: torch.Tensor, stats, name: str, target_ridge: float = 0.3) -> LayerProblem:
    """The layer problem of weights W and the engine's statistics of its inputs (a Gram, or the
    dense-target triple).  Statistics that are not finite name the layer: the forward passes overflowed."""
    grams = stats.tensors() if isinstance(stats, DenseTargetGrams) else (stats,)
    if not all(bool(torch.isfinite(g).all()) for g in grams):
        raise FloatingPointError(f"layer {name}: the Gram of its inputs holds NaN or Inf: the forward passes "
                                 "overflowed (float16 ends at 65504); prune in bfloat16 or float32 (--dtype)")
    if isinstance(stats, DenseTargetGrams):
        return LayerProblem(W, stats.G, name, stats.cross, stats.target, target_ridge)
    return LayerProblem(W, stats, name)


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


@dataclass
class BlockPruner:
    """The step of a run's settings (`config`: method and options, pattern, refit, attention share, row shards,
    device, the dense target's ridge)."""
    adapter: ModelAdapter
    config: PruneConfig
    layer_sparsity: dict | None = None      # '<block>.<linear>' -> its sparsity (an allocation); else the pattern's
    _patterns: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self.pattern = self.config.parsed_pattern()
        self.device = resolve_device(self.config.device)

    def __call__(self, b: int, block, grams: dict | None) -> list[dict]:
        """Prune block b in place; one report entry per pruned linear (those `grams` holds: the engine
        may hand a block over one input group at a time)."""
        targets, patterns = self.layer_patterns(block, b)
        if grams is None:
            return [self._data_free(b, name, lin, patterns[name]) for name, lin in targets.items()]
        targets = {name: lin for name, lin in targets.items() if name in grams}
        jobs = [(name, rows, lin.weight, grams[name], patterns[name])      # each float32 copy made in _solve
                for name, lin in targets.items()
                for rows in row_chunks(lin.out_features, self.config.row_shards, patterns[name])]
        solved = solve_sharded(jobs, lambda job: self._solve(b, *job))
        infos = []
        for name, lin in targets.items():
            parts = [r for job, r in zip(jobs, solved) if job[0] == name]
            weight, mask = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
            infos.append(self._layer_info(b, name, lin, grams[name], weight, mask, [p[2] for p in parts]))
            self._write(block, name, lin, weight, mask, patterns[name])
        return infos

    def check_fits(self, net) -> None:
        """Every target of every block takes its pattern (N:M divides its inputs, ...): one line
        before any calibration instead of an error at the first block that does not."""
        for b, block in enumerate(self.adapter.blocks(net)):
            targets, patterns = self.layer_patterns(block)
            for name, lin in targets.items():
                try:
                    patterns[name].check_shape(lin.out_features, lin.in_features)
                except ValueError as exc:
                    raise type(exc)(f"block {b} {name}: {exc}") from None

    def layer_patterns(self, block, b: int | None = None) -> tuple[dict, dict]:
        """(targets, pattern of each): the structured pattern splits into MLP channels and KV groups,
        in the shares block b had before its first step (kept while its groups are pruned one by one)."""
        targets = self.adapter.targets(block)
        if not self.pattern.removes_inputs:
            return targets, {name: self.layer_pattern(b, name) for name in targets}
        if b is not None and b in self._patterns:
            patterns = self._patterns[b]
            return {n: targets[n] for n in patterns if n in targets}, patterns
        attn = self.config.attn_sparsity
        mlp_sp, attn_sp = ((self.pattern.sparsity, attn) if attn is not None
                           else parameter_matched_split(block, self.adapter, self.pattern.sparsity))
        allocated = self.layer_sparsity or {}                 # an allocation's shares of block b, if any
        mlp_sp = allocated.get(f"{b}.{self.adapter.mlp.output}", mlp_sp)
        if self.adapter.attention is not None:
            attn_sp = allocated.get(f"{b}.{self.adapter.attention.o}", attn_sp)
        patterns = {self.adapter.mlp.output: Pattern("structured", mlp_sp)}
        widths = {self.adapter.mlp.output: mlp_width(block, self.adapter)}
        if self.adapter.attention is not None:
            n_kv, n_rep, hd = attention_layout(block, self.adapter)
            patterns[self.adapter.attention.o] = Pattern("structured", attn_sp, group=n_rep * hd)
            widths[self.adapter.attention.o] = n_kv * n_rep * hd
        keep = [n for n in patterns if patterns[n].pruned_per_row(widths[n])]
        if b is not None:
            self._patterns[b] = {n: patterns[n] for n in keep}
        return {n: targets[n] for n in keep}, patterns

    def layer_pattern(self, b: int | None, name: str) -> Pattern:
        """The pattern of linear `name` of block b: the allocated sparsity, or the run's."""
        s = (self.layer_sparsity or {}).get(f"{b}.{name}")
        return self.pattern if s is None else replace(self.pattern, sparsity=s)

    def _solve(self, b, name, rows, weight, G, pattern):
        W = weight.detach().float()[rows.start:rows.stop]
        problem = layer_problem(W, G, f"{b}.{name}[{rows.start}:{rows.stop}]", self.config.target_ridge)
        res = prune_layer(problem, pattern, self.config.method, **self.config.method_options)
        if self.config.refit:
            res.weight = problem.refit(res.mask, res.weight)
        cuda = self.device.type == "cuda"
        return res.weight, res.mask, dict(seconds=res.seconds,
                                          peak_accel_bytes=torch.cuda.max_memory_allocated(self.device) if cuda else None)

    @staticmethod
    def _layer_info(b, name, lin, G, weight, mask, parts: list[dict]) -> dict:
        """The layer's report entry (its error in the problem it solved: the ridge does not enter it)."""
        problem = layer_problem(lin.weight.detach().float(), G, f"{b}.{name}")
        peaks = [p["peak_accel_bytes"] for p in parts if p["peak_accel_bytes"] is not None]
        return dict(block=b, layer=name, rel_error=problem.relative_error(W_hat=weight),
                    sparsity=float(1 - mask.float().mean()), seconds=sum(p["seconds"] for p in parts),
                    peak_accel_bytes=max(peaks) if peaks else None, row_shards=len(parts))

    def _write(self, block, name, lin, weight, mask, pattern) -> None:
        """W_hat into the linear; under the structured pattern, shrink the modules to the kept inputs."""
        if not self.pattern.removes_inputs:
            lin.weight.data = weight.to(lin.weight.dtype)
            return
        keep = torch.nonzero(mask[0]).flatten()
        if self.adapter.attention is not None and name == self.adapter.attention.o:
            shrink_attention(block, self.adapter, keep[::pattern.group] // pattern.group, weight[:, keep])
        else:
            shrink_mlp(block, self.adapter, keep, weight[:, keep])

    @torch.no_grad()
    def _data_free(self, b, name, lin, pattern) -> dict:
        """W_hat = W * M(W) for a data-free mask; the error needs G, so rel_error is None."""
        t0 = time.perf_counter()
        mask = DATA_FREE_MASKS[self.config.method](lin.weight.detach().float(), pattern)
        lin.weight.mul_(mask.to(lin.weight.dtype))
        return dict(block=b, layer=name, rel_error=None, sparsity=float(1 - mask.float().mean()),
                    seconds=time.perf_counter() - t0, peak_accel_bytes=None, row_shards=1)

    def finish(self, net) -> None:
        """After the last block: record structured widths in the config."""
        if self.pattern.removes_inputs:
            set_structured_config(net, self.adapter)
