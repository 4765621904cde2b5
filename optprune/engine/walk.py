"""The block-wise engine: calibrate -> solve -> propagate, one block at a time.

Block b sees the outputs of the already *pruned* blocks 0..b-1:
  1. run block b on the calibration activations with hooks accumulating each input's Gram;
  2. hand the block and its Grams to the `step` (what is done to a block: a method, a surgery);
  3. run the changed block to produce the next block's inputs.
The engine knows neither architectures (the adapter says where the blocks are) nor methods
(the step).  Only one block is on the accelerator at a time.  Under torch.distributed each
rank carries a slice of the windows and the Grams are summed over ranks (`all_reduce_sum`);
rank 0 writes the resume state.  The report times every block: forward, Grams, solve,
propagation and I/O seconds."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Protocol

import torch

from ..adapters import ModelAdapter
from ..parallel import all_reduce_sum, world
from .capture import BlockCalls, call_block, capture_block_calls
from .grams import GramHooks
from .state import ResumeState


class BlockStep(Protocol):
    """What is done to block b given its Grams (None: data-free); returns its layers' report entries."""
    def __call__(self, b: int, block, grams: dict | None) -> list[dict]: ...


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


@dataclass
class Engine:
    net: torch.nn.Module
    adapter: ModelAdapter
    device: torch.device = torch.device("cpu")
    batch: int = 8
    offload: bool | None = None          # back to the CPU after each block; None: on an accelerator
    max_memory: int | None = None
    mmap_weights: bool = False

    def __post_init__(self):
        if self.offload is None:
            self.offload = torch.device(self.device).type != "cpu"

    @torch.no_grad()
    def capture(self, windows: torch.Tensor, spill_dir=None, shard: bool = True) -> BlockCalls:
        """Block 0's inputs for the windows (this rank's slice when `shard`), and every block's arguments."""
        rank, size = world() if shard else (0, 1)
        self.adapter.place_outside_blocks(self.net, self.device)
        return capture_block_calls(self.net, self.adapter, windows[rank::size], self.device, self.max_memory,
                                   spill_dir)

    @torch.no_grad()
    def propagate(self, block, b: int, calls: BlockCalls, inps, outs=None):
        """Block b's outputs for every stored input, batch by batch on the block's device."""
        for s in range(0, len(inps), self.batch):
            y = call_block(block, inps.data[s:s + self.batch].to(self.device), calls.args[b], calls.kwargs[b])
            if outs is not None:
                outs.data[s:s + self.batch] = y.to("cpu", outs.data.dtype)
        return outs

    @torch.no_grad()
    def grams(self, block, b: int, calls: BlockCalls, inps) -> tuple[dict, float, float]:
        """(Grams summed over ranks, forward seconds, Gram seconds) of block b."""
        t0 = time.perf_counter()
        hooks = GramHooks(self.adapter.targets(block), self.adapter.gram_groups)
        try:
            self.propagate(block, b, calls, inps)
        finally:
            grams = hooks.close()
        for G in {id(G): G for G in grams.values()}.values():
            all_reduce_sum(G)
        total = time.perf_counter() - t0
        return grams, total - hooks.seconds, hooks.seconds

    @torch.no_grad()
    def dense_pass(self, calls: BlockCalls, visit=None, stop: int | None = None):
        """Carry the captured inputs through blocks 0..stop-1 unchanged, one block on the device at a
        time, calling visit(b, block, inputs of b) first; returns the last outputs (the other buffer
        is released)."""
        inps, outs = calls.inputs, calls.inputs.like()
        try:
            for b, block in enumerate(self.adapter.blocks(self.net)[:stop]):
                block.to(self.device)
                if visit:
                    visit(b, block, inps)
                self.propagate(block, b, calls, inps, outs)
                if self.offload:
                    block.to("cpu")
                inps, outs = outs, inps
        except BaseException:
            inps.release()
            raise
        finally:
            outs.release()
        return inps

    def run(self, windows: torch.Tensor, step: BlockStep, state: ResumeState,
            progress: Callable[[int, float], None] | None = None) -> dict:
        """Walk every block (see module doc); returns the report (layers, timings)."""
        done, report = state.load(self.net)
        t0 = time.perf_counter()
        calls = self.capture(windows, state.spill_dir)
        report.setdefault("input_seconds", time.perf_counter() - t0)
        report["activations_on_disk"] = calls.inputs.spilled
        walk = _Walk(calls, calls.inputs, calls.inputs.like(), step, state, report, progress)
        try:
            for b, block in enumerate(self.adapter.blocks(self.net)):
                self._run_block(b, block, b >= done, walk)
                walk.inps, walk.outs = walk.outs, walk.inps
        finally:
            walk.inps.release()
            walk.outs.release()
        return report

    def _run_block(self, b: int, block, solve: bool, walk: "_Walk") -> None:
        """Block b: Grams and step (unless loaded from the resume state), then propagation."""
        t0 = time.perf_counter()
        block.to(self.device)
        times = {}
        if solve and self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        if solve:
            grams, times["forward"], times["grams"] = self.grams(block, b, walk.calls, walk.inps)
            t1 = time.perf_counter()
            walk.report["layers"] += walk.step(b, block, grams)
            times["solve"] = time.perf_counter() - t1
            del grams
        t1 = time.perf_counter()
        self.propagate(block, b, walk.calls, walk.inps, walk.outs)
        times["propagate"] = time.perf_counter() - t1
        if solve:
            self._record(b, block, t0, times, walk)
        if self.offload:
            block.to("cpu")
        if self.mmap_weights and world()[0] == 0:
            walk.state.map_block(b, block)

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

    def run_without_data(self, step: BlockStep, progress=None) -> dict:
        """Apply a data-free step (a mask of W alone) block by block: no forward pass at all."""
        report = {"layers": [], "block_seconds": {}, "breakdown": {}, "input_seconds": 0.0}
        for b, block in enumerate(self.adapter.blocks(self.net)):
            t0 = time.perf_counter()
            report["layers"] += step(b, block, None)
            report["block_seconds"][str(b)] = time.perf_counter() - t0
            if progress:
                progress(b, report["block_seconds"][str(b)])
        return report
