"""Input Grams G = sum_t x_t x_t^T (float32) of a block's linears, one per shared input.

The update fills G's lower triangle only, in row bands of about 256 features (band i needs
x_i^T x_{0..i}): (k + 1) / 2k of a full product's flops for k bands, float32 sums; `finish_gram`
mirrors it once.  Measured alternatives: BLAS ssyrk (half the flops) slowed the forward pass
around it by a third (its threads contend with torch's); bf16 products, 4x faster here,
leave G indefinite once each chunk product is rounded to bf16 (docs/results/engine_floor.md)."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

BAND = 256


def accumulate_gram(G: torch.Tensor, x: torch.Tensor) -> None:
    """Lower triangle of G += x^T x for x of shape (..., d) (see `finish_gram`)."""
    flat = x.reshape(-1, x.shape[-1]).float()
    d = G.shape[0]
    k = math.ceil(d / BAND)
    edges = [d * i // k for i in range(k + 1)]
    for lo, hi in zip(edges, edges[1:]):
        G[lo:hi, :hi].addmm_(flat[:, lo:hi].T, flat[:, :hi])


def finish_gram(G: torch.Tensor) -> torch.Tensor:
    """Mirror the lower triangle filled by `accumulate_gram` into the upper one."""
    G.copy_(torch.tril(G) + torch.tril(G, -1).T)
    return G


class GramHooks:
    """Forward hooks accumulating one Gram per input group while the block runs.
    `groups` (names sharing an input) come from the adapter; without them, linears fed the same
    tensor object in the first batch share one Gram.  `seconds` is the time spent in Grams."""

    def __init__(self, linears: dict[str, torch.nn.Linear], groups=None):
        self.grams: dict[str, torch.Tensor] = {}
        self.seconds = 0.0
        self.owner = _owners(linears, groups)
        self._seen: list[tuple[torch.Tensor, str]] = []
        self._aliases: set[str] = set()
        self._hooks = [mod.register_forward_hook(self._hook(name)) for name, mod in linears.items()
                       if self.owner is None or self.owner[name] == name]

    def _hook(self, name):
        def hook(_mod, inp, _out):
            t0 = time.perf_counter()
            x = inp[0]
            if name not in self.grams:
                self.grams[name] = self._new_or_shared(name, x)
            if name not in self._aliases:
                accumulate_gram(self.grams[name], x)
            self.seconds += time.perf_counter() - t0
        return hook

    def _new_or_shared(self, name: str, x: torch.Tensor) -> torch.Tensor:
        if self.owner is None:               # no declared groups: share with a linear fed the same tensor
            first = next((n for t, n in self._seen if t is x), None)
            if first is not None:
                self._aliases.add(name)
                return self.grams[first]
            self._seen.append((x, name))     # holding x keeps its address from being reused
        return torch.zeros(x.shape[-1], x.shape[-1], dtype=torch.float32, device=x.device)

    def close(self) -> dict[str, torch.Tensor]:
        """Remove the hooks; every linear's name -> its (possibly shared) Gram."""
        for h in self._hooks:
            h.remove()
        self._seen.clear()
        for G in {id(G): G for G in self.grams.values()}.values():
            finish_gram(G)
        if self.owner is not None:
            return {name: self.grams[owner] for name, owner in self.owner.items() if owner in self.grams}
        return self.grams


@dataclass
class DenseTargetGrams:
    """A dense-target layer's statistics: G = X_hat X_hat^T (what it sees), cross = X X_hat^T, target =
    X X^T (X: the dense model's inputs of the same tokens); see `LayerProblem`."""
    G: torch.Tensor
    cross: torch.Tensor
    target: torch.Tensor

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return self.G, self.cross, self.target


class DenseTargetHooks:
    """Hooks on a block (pruned stream) and its dense copy (dense stream), called batch for batch in
    lockstep, the dense copy first: its hooks keep each shared input x, the block's hooks then add
    G += x_hat^T x_hat, cross += x^T x_hat and target += x^T x.  Without declared groups every linear
    gets its own statistics."""

    def __init__(self, linears: dict[str, torch.nn.Linear], dense_linears: dict[str, torch.nn.Linear], groups=None):
        self.owner = _owners(linears, groups) or {name: name for name in linears}
        self.grams: dict[str, DenseTargetGrams] = {}
        self.pending: dict[str, torch.Tensor] = {}
        self.seconds = 0.0
        owners = sorted(set(self.owner.values()))
        self._hooks = ([dense_linears[n].register_forward_hook(self._keep(n)) for n in owners]
                       + [linears[n].register_forward_hook(self._accumulate(n)) for n in owners])

    def _keep(self, name):
        def hook(_mod, inp, _out):
            self.pending[name] = inp[0].detach()
        return hook

    def _accumulate(self, name):
        def hook(_mod, inp, _out):
            t0 = time.perf_counter()
            x_hat = inp[0].reshape(-1, inp[0].shape[-1]).float()
            x = self.pending.pop(name).reshape(x_hat.shape).float()
            if name not in self.grams:
                d = x_hat.shape[1]
                self.grams[name] = DenseTargetGrams(*(torch.zeros(d, d, device=x.device) for _ in range(3)))
            stats = self.grams[name]
            accumulate_gram(stats.G, x_hat)
            stats.cross.addmm_(x.T, x_hat)
            accumulate_gram(stats.target, x)
            self.seconds += time.perf_counter() - t0
        return hook

    def close(self) -> dict[str, DenseTargetGrams]:
        for h in self._hooks:
            h.remove()
        self.pending.clear()
        for stats in self.grams.values():
            finish_gram(stats.G)
            finish_gram(stats.target)
        return {name: self.grams[owner] for name, owner in self.owner.items() if owner in self.grams}


def _owners(linears: dict, groups) -> dict[str, str] | None:
    """name -> first name of its group, when the declared groups cover exactly these linears."""
    if groups is None:
        return None
    owner = {}
    for group in groups:
        members = [n for n in group if n in linears]
        owner.update({n: members[0] for n in members})
    return owner if set(owner) == set(linears) else None
