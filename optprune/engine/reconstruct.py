"""Block reconstruction: after a block's layers are chosen, its kept weights are fitted to the dense outputs.

    min_{V_l, l in the block}  sum_{windows s, positions t, channels c} w (block_V(X_hat) - Y)_{s,t,c}^2,
    V_l = 0 off the masks M_l,

Y being the dense model's outputs of the block (the dense stream), X_hat the block's inputs in the
pruned model and w = 1 (loss "mse"), w_{s,t} = 1 / ||Y_{s,t}||^2 (loss "token": each position's relative
error, so a BOS position with a 3-29x larger output than a token's does not dominate the fit) or, per channel c,
w_c = 1 / mean_{s,t} Y_{s,t,c}^2 (loss "channel": each channel's relative error, so the one channel of
Gemma-3's residual stream that holds 82-93% of its squared norm does not dominate it).
Adam on the linears' kept weights (float32 master weights and Adam state during training,
the forward and backward passes in float32 or, with `autocast` and a block in reduced precision (bf16,
fp16), under bf16 autocast (a float32 block trains in float32: on a CPU without native bf16 autocast would
triple a step's time, docs/results/cpu_dtype_emulated-bf16.md); the masks fixed by
zeroing the pruned entries after every step) over `epochs` passes of the training windows; each weight is
stepped inside the backward pass as soon as its gradient is complete, so one weight's gradient is held at a
time (an 8B block's would take 0.8 GiB together) with the same steps as one Adam over all.  It uses the
first `windows` calibration windows (all with 0; they are a random draw, so the first ones are one too),
of which the last `holdout` share is held out.  The relative output error
sum w (block(X_hat) - Y)^2 / sum w Y^2 is
measured in the block's own dtype on the windows that choose the epoch (the held-out windows; the training
windows where none is held out): before training and after every epoch.  The epoch of lowest error there is
kept if it is below the error before training, else the block stays as the step left it: the held-out error
never increases.  The kept block's error on every window used is read from the outputs the walk propagates
(a pass of its own without `carry`).  (The training windows' error before training is not measured: it cost
a forward pass over every window used, 11% of SmolLM2's reconstruction, and decided nothing: the whole
stream's error fell with the held-out one on all 60 blocks of the 60% and 70% per-row recipe runs.)
"""
from __future__ import annotations

import math
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
    schedule: str = "constant"          # or "cosine": lr (1 + cos(pi t / T)) / 2 at step t of all T steps
    qkv_epochs: int = -1                # epochs that fit the `attention_inputs` too (-1: all)
    loss: str = "mse"                   # or "token" / "channel": each position's / channel's relative error
    step: str = "absolute"              # or "relative": a linear's step size lr x the RMS of its kept weights
    attention_inputs: tuple = ()        # the block's q/k/v projections (names in `targets`)
    progress: Callable[[str], None] | None = None

    def output_weights(self, outs, used: int) -> Callable[[torch.Tensor], torch.Tensor | float]:
        """y -> w, the weights of the loss sum_{s,t,c} w_{s,t,c} e_{s,t,c}^2 over windows s, positions t, channels
        c: 1 (mse); 1 / ||y_{s,t}||^2 (token: every position's relative error weighs the same, a BOS whose dense
        output is 3-29x a token's no more than any other); 1 / mean_{s,t} y_{s,t,c}^2 over the `used` windows
        (channel: every channel's relative error weighs the same, a massive channel holding 82-93% of
        Gemma-3's squared output norm no more than any other; summed over the ranks' windows)."""
        if self.loss == "mse":
            return lambda y: 1.0
        if self.loss == "token":
            return lambda y: 1.0 / (y ** 2).sum(-1, keepdim=True).clamp_min(1e-12)
        power = sum((outs.data[s].float() ** 2).sum(0, dtype=torch.float64) for s in range(used))
        all_reduce_sum(power)                               # every rank's windows: one weighting for all
        weight = (power.sum() / power.clamp_min(1e-30 * float(power.sum()))).float()    # mean ~ 1 over channels
        return lambda y: weight.to(y.device)

    def scale(self, step: int, split: int) -> float:
        """The step size's factor at Adam step `step` (of epochs x ceil(split / batch))."""
        if self.schedule == "constant":
            return 1.0
        total = self.epochs * -(-split // self.batch)
        return 0.5 * (1.0 + math.cos(math.pi * step / total))

    def used(self, n: int) -> int:
        """How many of the n calibration windows the reconstruction uses (the first ones)."""
        return n if self.windows <= 0 else min(n, self.windows)

    def split(self, n: int) -> int:
        """Training windows are [0, split), held-out windows [split, n) (none with one window)."""
        held = 0 if n < 2 else min(n - 1, max(1, round(n * self.holdout)))
        return n - held

    @torch.no_grad()
    def errors(self, block, inps, outs, args, kwargs, device, split: int, weigh: Callable | None = None,
               only: range | None = None, given=None) -> tuple[float, float, float]:
        """(training, held-out, whole-stream) relative output errors over the windows used (or those in `only`;
        a slice with no window measured reads as the other), summed over ranks; `given`: a store already
        holding the block's outputs (no forward pass)."""
        weigh = weigh or self.output_weights(outs, self.used(len(inps)))
        sums = torch.zeros(4, dtype=torch.float64)
        for s in only if only is not None else range(self.used(len(inps))):
            y = outs.data[s:s + 1].to(device).float()
            got = (given.data[s:s + 1].to(device) if given is not None else
                   call_block(block, inps.data[s:s + 1].to(device), args, kwargs))
            weight = weigh(y)
            k = 0 if s < split else 2
            sums[k] += float(((got.float() - y) ** 2 * weight).sum())
            sums[k + 1] += float((y ** 2 * weight).sum())
        all_reduce_sum(sums)
        whole = float((sums[0] + sums[2]) / (sums[1] + sums[3]).clamp_min(1e-30))
        train = float(sums[0] / sums[1]) if sums[1] > 0 else whole
        held = float(sums[2] / sums[3]) if sums[3] > 0 else whole
        return train, held, whole

    def __call__(self, block, inps, outs, args, kwargs, device, carry=None) -> dict:
        """Fit the block (module doc); the report.  carry = (propagate, store): propagate() writes the block's
        outputs for every window into `store` (the walk's next inputs); given, the final check of the kept
        epoch reads its error from there instead of a pass of its own, and the report says `carried` when the
        store holds the outputs of the block as it is left (else the caller propagates)."""
        t0 = time.perf_counter()
        used = self.used(len(inps))
        split = self.split(used)
        stopping = range(split, used) if split < used else range(used)     # the windows that choose the epoch
        weigh = self.output_weights(outs, used)             # the loss weights, computed once
        data = (inps, outs, args, kwargs, device, split, weigh)
        linears = self.targets(block)
        dtype = next(block.parameters()).dtype
        autocast = self.autocast and dtype != torch.float32
        start = {n: lin.weight.detach().clone() for n, lin in linears.items()}
        before = self.errors(block, *data, only=stopping)[1]      # [1]: the stopping windows' error either way
        best_held, best_epoch, best_state, history = before, None, None, []
        for param in block.parameters():
            param.requires_grad_(False)
        block.float()
        rate = [self.lr]                                    # the step size of the coming step
        hooks = stepping_in_backward(linears, start, rate, relative=self.step == "relative")
        try:
            for epoch in range(self.epochs):
                self._fit_attention_inputs(linears, self.qkv_epochs < 0 or epoch < self.qkv_epochs)
                loss = self._epoch(block, inps, outs, _cast(args, torch.float32), _cast(kwargs, torch.float32),
                                   device, split, weigh, epoch, rate, autocast)
                held = self._held_out_after_epoch(block, linears, dtype, data, stopping)
                history.append(dict(train_loss=loss, held_out=held))
                if held < best_held:
                    best_held, best_epoch, best_state = held, epoch + 1, self._weights_in(block, linears, dtype)
                if self.progress:
                    self.progress(f"epoch {epoch + 1}/{self.epochs}: train loss {loss:.4g}, held-out {held:.4g}")
        finally:
            for hook in hooks:
                hook.remove()
        block.to(dtype)
        after = self._kept(block, linears, start, best_state, data, carry)
        error_before, error_after = _error_report(before, after, held_out=split < used)
        return dict(carried=best_state is not None and carry is not None, error_before=error_before,
                    error_after=error_after, kept_epoch=best_epoch, epochs=history,
                    train_windows=split, held_out_windows=used - split, autocast=autocast,
                    seconds=time.perf_counter() - t0)

    def _fit_attention_inputs(self, linears: dict, fit: bool) -> None:
        """q/k/v fitted this epoch or frozen: frozen, and with the block's input and norms constant, no gradient
        reaches the attention, so the backward pass skips it (its flash-attention backward was 39% of a step)."""
        for name in self.attention_inputs:
            linears[name].weight.requires_grad_(fit)

    def _kept(self, block, linears, start, best_state, data, carry=None):
        """The errors (training, held-out, whole) of the epoch of lowest stopping error, restored, where it
        lowered that error (read from the outputs `carry` propagates, else a pass of its own); else the start
        weights restored and None."""
        for param in block.parameters():
            param.requires_grad_(False)
        if best_state is None:
            for n, lin in linears.items():
                lin.weight.data.copy_(start[n])
            return None
        for n, lin in linears.items():
            lin.weight.data.copy_(best_state[n])
        if carry is not None:
            carry[0]()
        return self.errors(block, *data, given=None if carry is None else carry[1])

    def _weights_in(self, block, linears, dtype) -> dict:
        """The linears' weights as the block's dtype holds them (the float32 master weights untouched)."""
        return {n: lin.weight.detach().to(dtype).clone() for n, lin in linears.items()}

    def _held_out_after_epoch(self, block, linears, dtype, data, stopping: range) -> float:
        """The held-out error in the block's dtype, the float32 master weights restored afterwards."""
        weights = {n: lin.weight.detach().clone() for n, lin in linears.items()}
        block.to(dtype)
        held = self.errors(block, *data, only=stopping)[1]     # training windows only: [1] reads as the whole
        block.float()
        for n, lin in linears.items():
            lin.weight.data.copy_(weights[n])
        return held

    def _epoch(self, block, inps, outs, args, kwargs, device, split, weigh, epoch, rate: list,
               autocast: bool) -> float:
        """One pass over the training windows in a fixed shuffled order; the backward pass steps each weight
        (`stepping_in_backward`, which also turned their gradients on; the dtype casts keep the flag).  Returns
        the mean relative loss of the pass (measured while the weights moved); rate[0] is set to each step's
        size (`schedule`); `autocast`: the passes under bf16 autocast."""
        order = torch.randperm(split, generator=torch.Generator().manual_seed(epoch))
        num = den = 0.0
        steps = -(-split // self.batch)
        for s in range(0, split, self.batch):
            rate[0] = self.lr * self.scale(epoch * steps + s // self.batch, split)
            idx = order[s:s + self.batch]
            x = inps.data[idx].to(device).float()
            y = outs.data[idx].to(device).float()
            weight = weigh(y)
            with torch.enable_grad(), torch.autocast(device.type, torch.bfloat16, enabled=autocast):
                loss = ((call_block(block, x, args, kwargs).float() - y) ** 2 * weight).mean()
            loss.backward()
            num, den = num + float(loss.detach()), den + float((y ** 2 * weight).mean())
        return num / max(den, 1e-30)


def _error_report(before: float, after: tuple | None, held_out: bool) -> tuple[dict, dict]:
    """(error_before, error_after) as the report gives them: before, the error on the windows that chose the
    epoch (held-out ones, else every window, then the training windows too); after, (training, held-out,
    whole) of the kept block, or the same as before where no epoch was kept.  None: not measured."""
    before_ = dict(train=None, held_out=before, all=None) if held_out else dict(train=before, held_out=None,
                                                                                 all=before)
    if after is None:
        return before_, dict(before_)
    return before_, dict(train=after[0], held_out=after[1] if held_out else None, all=after[2])


def stepping_in_backward(linears: dict, start: dict, rate: list, relative: bool = False) -> list:
    """Adam on each linear's weight at step size rate[0] (read at each step; `relative`: times the RMS of the
    linear's kept start weights, so a model whose weights are 5x smaller takes 5x smaller steps), stepped as soon
    as its gradient is complete in the backward pass (averaged over ranks first) and freed at once, the pruned
    entries (start == 0) zeroed after the step: one weight's gradient alive at a time instead of the block's,
    the same steps as one Adam over all weights."""
    size = world()[1]
    hooks = []
    for n, lin in linears.items():
        lin.weight.requires_grad_(True)
        optimiser = torch.optim.Adam([lin.weight], lr=rate[0], foreach=False)
        kept = start[n] != 0
        scale = float(start[n].float()[kept].pow(2).mean().sqrt()) if relative and kept.any() else 1.0

        def step(weight, optimiser=optimiser, kept=kept, scale=scale):
            if size > 1:
                all_reduce_sum(weight.grad)
                weight.grad /= size
            optimiser.param_groups[0]["lr"] = rate[0] * scale
            optimiser.step()
            optimiser.zero_grad(set_to_none=True)
            with torch.no_grad():
                weight.mul_(kept)
        hooks.append(lin.weight.register_post_accumulate_grad_hook(step))
    return hooks
