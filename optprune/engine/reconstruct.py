"""Block reconstruction: after a block's layers are chosen, its kept weights are fitted to the dense outputs.

    min_{V_l, l in the block}  sum_windows ||block_V(X_hat) - Y||_F^2,   V_l = 0 off the masks M_l,

Y being the dense model's outputs of the block (the dense stream) and X_hat the block's inputs in the
pruned model.  Adam on the linears' kept weights (float32 master weights and Adam state during training,
the forward and backward passes in float32 or, with `autocast`, under bf16 autocast; the masks fixed by
zeroing the pruned entries after every step) over `epochs` passes of the training windows; each weight is
stepped inside the backward pass as soon as its gradient is complete, so one weight's gradient is held at a
time (an 8B block's would take 0.8 GiB together) with the same steps as one Adam over all.  It uses the
first `windows` calibration windows (all with 0; they are a random draw, so the first ones are one too),
of which the last `holdout` share is held out.  The relative output error ||block(X_hat) - Y||^2 / ||Y||^2 is
measured before training and after every epoch, on both slices, in the block's own dtype; the epoch
with the lowest held-out error is kept if it also lowers the error on the whole calibration stream,
else the block stays as the step left it: the error never increases.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch

from ..parallel import all_reduce_sum, world
from .capture import call_block


def _cast(obj, dtype):
    """Floating tensors inside (nested) args/kwargs to `dtype` (rope tables, additive masks)."""
    if isinstance(obj, torch.Tensor):
        return obj.to(dtype) if obj.is_floating_point() else obj
    if isinstance(obj, (tuple, list)):
        return type(obj)(_cast(o, dtype) for o in obj)
    if isinstance(obj, dict):
        return {k: _cast(v, dtype) for k, v in obj.items()}
    return obj


@dataclass
class BlockReconstruction:
    targets: Callable                   # block -> {name: linear} (the adapter's targets)
    epochs: int = 2
    lr: float = 1e-4
    holdout: float = 0.125
    batch: int = 2
    windows: int = 0
    autocast: bool = False
    progress: Callable[[str], None] | None = None

    def used(self, n: int) -> int:
        """How many of the n calibration windows the reconstruction uses (the first ones)."""
        return n if self.windows <= 0 else min(n, self.windows)

    def split(self, n: int) -> int:
        """Training windows are [0, split), held-out windows [split, n) (none with one window)."""
        held = 0 if n < 2 else min(n - 1, max(1, round(n * self.holdout)))
        return n - held

    @torch.no_grad()
    def errors(self, block, inps, outs, args, kwargs, device, split: int) -> tuple[float, float, float]:
        """(training, held-out, whole-stream) relative output errors, summed over ranks."""
        sums = torch.zeros(4, dtype=torch.float64)
        for s in range(self.used(len(inps))):
            y = outs.data[s:s + 1].to(device).float()
            diff = call_block(block, inps.data[s:s + 1].to(device), args, kwargs).float() - y
            k = 0 if s < split else 2
            sums[k] += float((diff ** 2).sum())
            sums[k + 1] += float((y ** 2).sum())
        all_reduce_sum(sums)
        train, held = float(sums[0] / sums[1].clamp_min(1e-30)), float(sums[2] / sums[3].clamp_min(1e-30))
        return train, (held if sums[3] > 0 else train), float((sums[0] + sums[2]) / (sums[1] + sums[3]).clamp_min(1e-30))

    def __call__(self, block, inps, outs, args, kwargs, device) -> dict:
        t0 = time.perf_counter()
        split = self.split(self.used(len(inps)))
        linears = self.targets(block)
        dtype = next(block.parameters()).dtype
        start = {n: lin.weight.detach().clone() for n, lin in linears.items()}
        before = self.errors(block, inps, outs, args, kwargs, device, split)
        best, best_state, history = before, None, [before]
        for param in block.parameters():
            param.requires_grad_(False)
        block.float()
        hooks = stepping_in_backward(linears, start, self.lr)
        try:
            for epoch in range(self.epochs):
                self._epoch(block, inps, outs, _cast(args, torch.float32), _cast(kwargs, torch.float32), device,
                            split, epoch)
                best, best_state = self._after_epoch(block, linears, dtype, (inps, outs, args, kwargs, device, split),
                                                     before, (best, best_state), history)
                if self.progress:
                    errs = history[-1]
                    self.progress(f"epoch {epoch + 1}/{self.epochs}: train {errs[0]:.4g}, held-out {errs[1]:.4g}")
        finally:
            for hook in hooks:
                hook.remove()
        block.to(dtype)
        for n, lin in linears.items():
            lin.weight.requires_grad_(False)
            lin.weight.data.copy_((best_state or start)[n])
        return dict(error_before=dict(train=before[0], held_out=before[1], all=before[2]),
                    error_after=dict(train=best[0], held_out=best[1], all=best[2]),
                    kept_epoch=None if best_state is None else history.index(best),
                    epochs=[dict(train=e[0], held_out=e[1], all=e[2]) for e in history],
                    train_windows=split, held_out_windows=self.used(len(inps)) - split,
                    seconds=time.perf_counter() - t0)

    def _after_epoch(self, block, linears, dtype, data, before, kept, history):
        """The errors in the block's dtype after an epoch (history grows by one); the (errors, weights) kept so
        far, replaced where the held-out error fell and the whole stream's stayed below `before`; the float32
        master weights restored for the next epoch."""
        weights = {n: lin.weight.detach().clone() for n, lin in linears.items()}
        block.to(dtype)
        errs = self.errors(block, *data)
        history.append(errs)
        best, best_state = kept
        if errs[1] < best[1] and errs[2] <= before[2]:
            best, best_state = errs, {n: lin.weight.detach().clone() for n, lin in linears.items()}
        block.float()
        for n, lin in linears.items():
            lin.weight.data.copy_(weights[n])
        return best, best_state

    def _epoch(self, block, inps, outs, args, kwargs, device, split, epoch) -> None:
        """One pass over the training windows in a fixed shuffled order; the backward pass steps each weight
        (`stepping_in_backward`, which also turned their gradients on; the dtype casts keep the flag)."""
        order = torch.randperm(split, generator=torch.Generator().manual_seed(epoch))
        for s in range(0, split, self.batch):
            idx = order[s:s + self.batch]
            x = inps.data[idx].to(device).float()
            y = outs.data[idx].to(device).float()
            with torch.enable_grad(), torch.autocast(device.type, torch.bfloat16, enabled=self.autocast):
                loss = ((call_block(block, x, args, kwargs).float() - y) ** 2).mean()
            loss.backward()


def stepping_in_backward(linears: dict, start: dict, lr: float) -> list:
    """Adam on each linear's weight, stepped as soon as its gradient is complete in the backward pass (averaged
    over ranks first) and freed at once, the pruned entries (start == 0) zeroed after the step: one weight's
    gradient alive at a time instead of the block's, the same steps as one Adam over all weights."""
    size = world()[1]
    hooks = []
    for n, lin in linears.items():
        lin.weight.requires_grad_(True)
        optimiser = torch.optim.Adam([lin.weight], lr=lr, foreach=False)

        def step(weight, optimiser=optimiser, kept=start[n] != 0):
            if size > 1:
                all_reduce_sum(weight.grad)
                weight.grad /= size
            optimiser.step()
            optimiser.zero_grad(set_to_none=True)
            with torch.no_grad():
                weight.mul_(kept)
        hooks.append(lin.weight.register_post_accumulate_grad_hook(step))
    return hooks
