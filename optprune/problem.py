"""The layer-wise mask-selection problem.

For a linear layer y = W x with calibration inputs X (d x T) and Gram G = X X^T:

    f(M, W_hat) = ||(W - W_hat) X||_F^2 = tr((W - W_hat) G (W - W_hat)^T),

with W_hat supported on the keep mask M (W_hat = W * M without refit).
Row i decouples given M:  f_i = r_i^T G r_i,  r_i = w_i - w_hat_i.
The relative error reported everywhere is f / tr(W G W^T).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .patterns import Pattern


class ProblemError(ValueError):
    """Raised for a layer problem with bad input."""


def _as_float_tensor(x, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        try:
            x = torch.as_tensor(x)
        except Exception as exc:  # noqa: BLE001 - re-raised with context
            raise ProblemError(f"{name} is not array-like: {exc}") from exc
    if not (x.is_floating_point()):
        x = x.double()
    if not bool(torch.isfinite(x).all()):
        raise ProblemError(f"{name} contains NaN or Inf")
    return x


@dataclass
class LayerProblem:
    """W (out x in) and G (in x in, symmetric PSD).  Accumulations are float32 (or float64 if given)."""

    W: torch.Tensor
    G: torch.Tensor
    name: str = "layer"

    def __post_init__(self):
        W = _as_float_tensor(self.W, "W")
        G = _as_float_tensor(self.G, "G")
        if W.dim() != 2:
            raise ProblemError(f"W must be 2-D (out, in), got shape {tuple(W.shape)}")
        if G.dim() != 2 or G.shape[0] != G.shape[1]:
            raise ProblemError(f"G must be square, got shape {tuple(G.shape)}")
        if G.shape[0] != W.shape[1]:
            raise ProblemError(f"G is {G.shape[0]}x{G.shape[1]} but W has {W.shape[1]} inputs")
        dtype = torch.float64 if (W.dtype == torch.float64 or G.dtype == torch.float64) else torch.float32
        W, G = W.to(dtype), G.to(dtype=dtype, device=W.device)
        scale = G.diagonal().abs().max().clamp_min(1e-30)
        if (G - G.T).abs().max() > 1e-4 * scale:
            raise ProblemError("G must be symmetric (G = X X^T)")
        if G.diagonal().min() < -1e-6 * scale:
            raise ProblemError("G has a negative diagonal entry: not a Gram matrix")
        self.W, self.G = W, 0.5 * (G + G.T)

    # -- basic facts -------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.W.shape)

    @property
    def device(self) -> torch.device:
        return self.W.device

    def to(self, device) -> "LayerProblem":
        return LayerProblem(self.W.to(device), self.G.to(device), self.name)

    def dense_energy(self) -> float:
        """tr(W G W^T): the error of pruning everything."""
        return float(((self.W @ self.G) * self.W).sum())

    def damped_gram(self, percdamp: float = 0.01) -> torch.Tensor:
        """G + lambda I, lambda = percdamp * mean(diag G): needed before inverting G."""
        lam = percdamp * self.G.diagonal().mean().clamp_min(1e-12)
        return self.G + lam * torch.eye(self.G.shape[0], dtype=self.G.dtype, device=self.G.device)

    # -- objective ---------------------------------------------------------------
    def check_mask_shape(self, mask: torch.Tensor) -> torch.Tensor:
        if tuple(mask.shape) != self.shape:
            raise ProblemError(f"mask shape {tuple(mask.shape)} != W shape {self.shape}")
        return mask.to(self.device).bool()

    def objective(self, mask: torch.Tensor | None = None, W_hat: torch.Tensor | None = None) -> float:
        """f = tr(D G D^T), D = W - W_hat (W_hat = W * mask when not given)."""
        return float(self.row_errors(mask, W_hat).sum())

    def row_errors(self, mask=None, W_hat=None) -> torch.Tensor:
        if W_hat is None:
            if mask is None:
                raise ProblemError("give a mask or W_hat")
            W_hat = self.W * self.check_mask_shape(mask)
        if tuple(W_hat.shape) != self.shape:
            raise ProblemError(f"W_hat shape {tuple(W_hat.shape)} != W shape {self.shape}")
        D = self.W - W_hat.to(self.W)
        return ((D @ self.G) * D).sum(1)

    def relative_error(self, mask=None, W_hat=None) -> float:
        return self.objective(mask, W_hat) / max(self.dense_energy(), 1e-30)

    def row(self, i: int) -> "LayerProblem":
        return LayerProblem(self.W[i:i + 1], self.G, f"{self.name}[{i}]")

    def check_pattern(self, pattern: Pattern) -> None:
        pattern.check_shape(*self.shape)


def load_layer_problems(path: str | Path, names: list[str] | None = None) -> dict[str, LayerProblem]:
    """Read `<name>.weight` / `<name>.gram` pairs from a safetensors file."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.exists():
        raise ProblemError(f"no such layer file: {path}")
    tensors = load_file(str(path))
    found = sorted(k[: -len(".weight")] for k in tensors if k.endswith(".weight"))
    missing = [n for n in found if f"{n}.gram" not in tensors]
    if missing:
        raise ProblemError(f"{path}: no .gram for {missing}")
    if names:
        unknown = [n for n in names if n not in found]
        if unknown:
            raise ProblemError(f"{path}: no layer(s) {unknown}; the file has {found}")
        found = names
    return {n: LayerProblem(tensors[f"{n}.weight"].float(), tensors[f"{n}.gram"].float(), n) for n in found}


def random_problem(rows: int, cols: int, tokens: int | None = None, seed: int = 0,
                   dtype=torch.float64) -> LayerProblem:
    """A test problem with correlated inputs (G = X X^T from a low-rank-plus-noise X)."""
    gen = torch.Generator().manual_seed(seed)
    tokens = tokens or 4 * cols
    base = torch.randn(cols, max(2, cols // 3), generator=gen, dtype=dtype)
    X = base @ torch.randn(base.shape[1], tokens, generator=gen, dtype=dtype) \
        + 0.5 * torch.randn(cols, tokens, generator=gen, dtype=dtype)
    X = X * (0.2 + torch.rand(cols, 1, generator=gen, dtype=dtype) * 2)
    W = torch.randn(rows, cols, generator=gen, dtype=dtype)
    return LayerProblem(W, X @ X.T, f"random{rows}x{cols}s{seed}")
