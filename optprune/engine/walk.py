"""The block-wise engine: calibrate -> solve -> propagate, one block at a time.

Block b sees the outputs of the already *pruned* blocks 0..b-1:
  1. run block b on the calibration activations with hooks accumulating each input's Gram;
  2. hand the block and its Grams to the `step` (what is done to a block: a method, a surgery);
  3. optionally reconstruct the block (its kept weights fitted to the dense block's outputs);
  4. run the changed block to produce the next block's inputs.
With `dense_target` (or a reconstruction) the walk also carries the dense model's activations: under
`dense_target` each block is copied before the step and run on the dense stream, and the hooks pair the
two streams token by token (G = X_hat X_hat^T, cross = X X_hat^T, target = X X^T); for a reconstruction
alone the block runs the dense stream itself before its step (no copy).  With `sequential` the step is called
once per input group in the block's order (q/k/v, o, gate/up, down), each on Grams taken after the
earlier groups were pruned.
The engine knows neither architectures (the adapter says where the blocks are) nor methods
(the step).  Only one block is on the accelerator at a time.  Under torch.distributed each
rank carries a slice of the windows and the Grams are summed over ranks (`all_reduce_sum`);
rank 0 writes the resume state.  The report times every block: forward, Grams, solve,
propagation and I/O seconds."""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Callable, Protocol

import torch

from ..adapters import ModelAdapter
from ..parallel import all_reduce_sum, world
from .capture import BlockCalls, call_block, capture_block_calls
from .grams import DenseTargetHooks, GramHooks
from .pages import release_file_pages, trim_heap
from .state import ResumeState


class BlockStep(Protocol):
    """What is done to block b given its Grams (None: data-free); returns its layers' report entries."""
    def __call__(self, b: int, block, grams: dict | None) -> list[dict]: ...


@dataclass
class _Held:
    """A plain tensor standing where the walk expects an ActivationStore."""
    data: torch.Tensor

    def __len__(self) -> int:
        return len(self.data)


@dataclass
class _Walk:
    """The state of one walk over the blocks: arguments, the two activation buffers, step, output."""
    calls: BlockCalls
    inps: object
    outs: object
    step: BlockStep
    state: ResumeState
    report: dict
    progress: Callable[[int, float], None] | None
    dense_inps: object = None        # the dense model's activations (dense target, reconstruction)
    dense_outs: object = None

    def swap(self) -> None:
        self.inps, self.outs = self.outs, self.inps
        self.dense_inps, self.dense_outs = self.dense_outs, self.dense_inps

    def release(self) -> None:
        for store in (self.inps, self.outs, self.dense_inps, self.dense_outs):
            if store is not None:
                store.release()


@dataclass
class Engine:
    net: torch.nn.Module
    adapter: ModelAdapter
    device: torch.device = torch.device("cpu")
    batch: int = 8
    offload: bool | None = None          # back to the CPU after each block; None: on any device but the host
    max_memory: int | None = None
    mmap_weights: bool = False
    dense_target: bool = False           # layer problems against the dense model's outputs
    sequential: bool = False             # one step per input group, later groups see earlier ones pruned
    reconstruct: Callable | None = None  # (block, inputs, dense outputs, args, kwargs, device) -> report
    dense_windows: int = 0               # the dense stream covers the first this many windows only (0: all)

    @property
    def carries_dense_stream(self) -> bool:
        return self.dense_target or self.reconstruct is not None

    def __post_init__(self):
        self.device = torch.device(self.device)
        if self.offload is None:
            self.offload = self.device != torch.device("cpu")

    @torch.no_grad()
    def capture(self, windows: torch.Tensor, spill_dir=None, shard: bool = True) -> BlockCalls:
        """Block 0's inputs for the windows (this rank's slice when `shard`), and every block's arguments."""
        rank, size = world() if shard else (0, 1)
        self.adapter.place_outside_blocks(self.net, self.device)
        return capture_block_calls(self.net, self.adapter, windows[rank::size], self.device, self.max_memory,
                                   spill_dir)

    @torch.no_grad()
    def propagate(self, block, b: int, calls: BlockCalls, inps, outs=None, lead=None, count: int = 0):
        """Block b's outputs for every stored input (the first `count` with count > 0), batch by batch on the
        block's device; lead = (another block, its inputs) is run on the same batch first (the dense copy, in
        lockstep for paired hooks)."""
        n = len(inps) if count <= 0 else min(count, len(inps))
        for s in range(0, n, self.batch):
            if lead is not None:
                call_block(lead[0], lead[1].data[s:s + self.batch].to(self.device), calls.args[b], calls.kwargs[b])
            y = call_block(block, inps.data[s:s + self.batch].to(self.device), calls.args[b], calls.kwargs[b])
            if outs is not None:
                outs.data[s:s + self.batch] = y.to("cpu", outs.data.dtype)
        return outs

    @torch.no_grad()
    def grams(self, block, b: int, calls: BlockCalls, inps, names=None, dense=None,
              outs=None) -> tuple[dict, float, float]:
        """(Grams summed over ranks, forward seconds, Gram seconds) of block b's linears (`names`: a
        subset).  dense = (dense copy of the block, dense stream): the dense-target statistics.  With `outs`
        the calibrating forward also stores the block's outputs there (the hooks only read inputs)."""
        t0 = time.perf_counter()
        linears = self.adapter.targets(block)
        linears = linears if names is None else {n: linears[n] for n in names}
        if dense is None:
            hooks = GramHooks(linears, self.adapter.gram_groups)
        else:
            hooks = DenseTargetHooks(linears, self.adapter.targets(dense[0]), self.adapter.gram_groups)
        try:
            self.propagate(block, b, calls, inps, outs, lead=dense)
        finally:
            grams = hooks.close()
        for stats in {id(G): G for G in grams.values()}.values():
            for G in (stats.tensors() if dense is not None else (stats,)):
                all_reduce_sum(G)
        total = time.perf_counter() - t0
        return grams, total - hooks.seconds, hooks.seconds

    def stages(self, block) -> list[tuple[str, ...] | None]:
        """The linears handed to the step together: all at once, or (sequential) one input group after
        the other in the adapter's order (linears of no declared group last, one by one)."""
        if not self.sequential:
            return [None]
        targets = self.adapter.targets(block)
        groups = [tuple(n for n in group if n in targets) for group in (self.adapter.gram_groups or ())]
        grouped = {n for group in groups for n in group}
        return [g for g in groups if g] + [(n,) for n in targets if n not in grouped]

    @torch.no_grad()
    def each_dense_block(self, windows: torch.Tensor, visit, blocks: list[int] | None = None) -> None:
        """visit(b, block, Grams of its linears) for every block of the unchanged model (or those in
        `blocks`, the walk stopping after the last), calibrated on `windows`: one forward per block, whose
        outputs are the next block's inputs (`visit` reads the block, never changes it)."""
        calls = self.capture(windows)

        def calibrated(b, block, inps, outs):
            if blocks is None or b in blocks:
                visit(b, block, self.grams(block, b, calls, inps, outs=outs)[0])
            else:
                self.propagate(block, b, calls, inps, outs)
        self.dense_pass(calls, carry=calibrated, stop=None if blocks is None else max(blocks) + 1).release()

    @torch.no_grad()
    def dense_pass(self, calls: BlockCalls, visit=None, stop: int | None = None, carry=None):
        """Carry the captured inputs through blocks 0..stop-1 unchanged, one block on the device at a
        time, calling visit(b, block, inputs of b) first; carry(b, block, inputs, outputs) stands in for the
        plain propagation where given; returns the last outputs (the other buffer is released)."""
        inps, outs = calls.inputs, calls.inputs.like()
        try:
            for b, block in self.on_device(stop):
                if visit:
                    visit(b, block, inps)
                if carry:
                    carry(b, block, inps, outs)
                else:
                    self.propagate(block, b, calls, inps, outs)
                inps, outs = outs, inps
        except BaseException:
            inps.release()
            raise
        finally:
            outs.release()
        return inps

    def on_device(self, stop: int | None = None, order=None):
        """Blocks 0..stop-1 in order (or the indices in `order`, e.g. reversed for a backward pass), each on
        the device while the caller works on it (back to the CPU after it when offloading): the one walk
        every pass of the engine takes."""
        blocks = self.adapter.blocks(self.net)
        for b in (range(len(blocks))[:stop] if order is None else order):
            blocks[b].to(self.device)
            yield b, blocks[b]
            if self.offload:
                blocks[b].to("cpu")
            release_file_pages(blocks[b].state_dict().values())     # a memory-mapped block's touched pages
        release_file_pages(self.adapter.outside_blocks(self.net))  # go back (pages.py)

    @torch.no_grad()
    def forward_block(self, block, b: int, calls: BlockCalls, x: torch.Tensor) -> torch.Tensor:
        """Block b's outputs (on the host, x's dtype) for the hidden states x (n, seqlen, hidden) on the host."""
        return self.propagate(block, b, calls, _Held(x), _Held(torch.empty_like(x))).data

    def run(self, windows: torch.Tensor | None, step: BlockStep, state: ResumeState,
            progress: Callable[[int, float], None] | None = None, stop: int | None = None) -> dict:
        """Walk blocks 0..stop-1 (all by default; see module doc); returns the report (layers, timings).
        Without windows the step is data-free (grams None) and no forward pass runs at all."""
        if windows is None:
            return self._run_without_data(step, progress, stop)
        done, report = state.progress(self.net)
        t0 = time.perf_counter()
        calls = self.capture(windows, state.spill_dir)
        report.setdefault("input_seconds", time.perf_counter() - t0)
        report["activations_on_disk"] = calls.inputs.spilled
        walk = _Walk(calls, calls.inputs, calls.inputs.like(), step, state, report, progress)
        try:
            if self.carries_dense_stream:
                walk.dense_inps, walk.dense_outs = calls.inputs.like(), calls.inputs.like()
                walk.dense_inps.data.copy_(calls.inputs.data)
            for b, block in self.on_device(stop):
                self._run_block(b, block, b >= done, walk)
                walk.swap()
        finally:
            walk.release()
        return report

    def _run_block(self, b: int, block, solve: bool, walk: "_Walk") -> None:
        """Block b (on the device): Grams and step (unless loaded from the resume state), then propagation."""
        t0 = time.perf_counter()
        times = {}
        if self.carries_dense_stream and not self.dense_target:     # no paired hooks: the block itself runs the
            t1 = time.perf_counter()                                # dense stream before its step, no copy
            self.propagate(block, b, walk.calls, walk.dense_inps, walk.dense_outs, count=self.dense_windows)
            times["dense_propagate"] = time.perf_counter() - t1
        dense = copy.deepcopy(block) if self.dense_target else None
        if not solve:
            walk.state.restore(b, block)
        if solve and self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        if solve:
            self._solve_block(b, block, dense, walk, times)
        elif dense is not None:
            self.propagate(dense, b, walk.calls, walk.dense_inps, walk.dense_outs, count=self.dense_windows)
        del dense                           # the dense copy is done with before the reconstruction's state
        carried = solve and self.reconstruct is not None and self._reconstruct_block(b, block, walk, times)
        if not carried:                     # (a rejected fit propagates nothing: the walk does)
            t1 = time.perf_counter()
            self.propagate(block, b, walk.calls, walk.inps, walk.outs)
            times["propagate"] = times.get("propagate", 0.0) + time.perf_counter() - t1
        if solve:
            self._record(b, block, t0, times, walk)
        if self.mmap_weights and world()[0] == 0:
            walk.state.map_block(b, block)
        trim_heap()

    def _solve_block(self, b: int, block, dense, walk: "_Walk", times: dict) -> None:
        """The step on each stage's Grams; the dense stream's outputs."""
        times.update(forward=0.0, grams=0.0, solve=0.0)
        for names in self.stages(block):
            pair = (dense, walk.dense_inps) if self.dense_target else None
            grams, forward, gram_seconds = self.grams(block, b, walk.calls, walk.inps, names, pair)
            t1 = time.perf_counter()
            walk.report["layers"] += walk.step(b, block, grams)
            times["forward"] += forward
            times["grams"] += gram_seconds
            times["solve"] += time.perf_counter() - t1
            del grams
        if dense is not None:
            t1 = time.perf_counter()
            self.propagate(dense, b, walk.calls, walk.dense_inps, walk.dense_outs, count=self.dense_windows)
            times["dense_propagate"] = time.perf_counter() - t1

    def _reconstruct_block(self, b: int, block, walk: "_Walk", times: dict) -> bool:
        """The block's kept weights fitted to the dense stream's outputs (`reconstruct`), which may propagate
        the block it keeps (its final check reads those outputs): whether walk.outs now holds them."""
        t1 = time.perf_counter()
        times["propagate"] = 0.0

        def propagate():
            t2 = time.perf_counter()
            self.propagate(block, b, walk.calls, walk.inps, walk.outs)
            times["propagate"] += time.perf_counter() - t2
        info = self.reconstruct(block, walk.inps, walk.dense_outs, walk.calls.args[b], walk.calls.kwargs[b],
                                self.device, carry=(propagate, walk.outs))
        walk.report.setdefault("reconstruction", {})[str(b)] = info
        times["reconstruct"] = time.perf_counter() - t1 - times["propagate"]
        return bool(info.get("carried"))

    @staticmethod
    def _record(b: int, block, t0: float, times: dict, walk: "_Walk") -> None:
        """Block b's seconds into the report; rank 0 saves the block and the report for resuming."""
        t1 = time.perf_counter()
        walk.report["block_seconds"][str(b)] = t1 - t0
        walk.report["breakdown"][str(b)] = times
        if world()[0] == 0:
            walk.state.save(b, block, walk.report)
        times["io"] = time.perf_counter() - t1      # saved with the next block
        if walk.progress:
            walk.progress(b, walk.report["block_seconds"][str(b)])

    def _run_without_data(self, step: BlockStep, progress=None, stop: int | None = None) -> dict:
        """A data-free step (a mask of W alone) block by block: no forward pass at all."""
        report = {"layers": [], "block_seconds": {}, "breakdown": {}, "input_seconds": 0.0}
        for b, block in self.on_device(stop):
            t0 = time.perf_counter()
            report["layers"] += step(b, block, None)
            report["block_seconds"][str(b)] = time.perf_counter() - t0
            if progress:
                progress(b, report["block_seconds"][str(b)])
        return report
