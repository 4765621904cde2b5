"""The layer-wise mask-selection problem.

For a linear layer y = W x with calibration inputs X (d x T) and Gram G = X X^T:

    f(M, W_hat) = ||(W - W_hat) X||_F^2 = tr((W - W_hat) G (W - W_hat)^T),

with W_hat supported on the keep mask M (W_hat = W * M without refit).
Row i decouples given M:  f_i = r_i^T G r_i,  r_i = w_i - w_hat_i.
The relative error reported everywhere is f / tr(W G W^T).

The dense-target problem: the layer sees the pruned model's inputs X_hat while its target stays the
dense model's output W X.  With G = X_hat X_hat^T (the Gram of what the layer sees), C = X X_hat^T
(`cross`) and G_t = X X^T (`target_gram`),

    f(W_hat) = ||W X - W_hat X_hat||_F^2 = tr(W_hat G W_hat^T) - 2 tr(B W_hat^T) + tr(W G_t W^T),   B = W C;

with X_hat = X (C = G_t = G) it is the problem above.  The torch methods solve it through its
symmetric equivalent (W*, G), W* = W + (B - W G)(G + lam I)^-1 (lam = target_ridge * mean diag G: the
least-squares correction, pulled towards W, overfits the calibration tokens otherwise), since for lam = 0
f(W_hat) = tr((W_hat - W*) G (W_hat - W*)^T) + const; the refits and the exact solvers use B directly.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
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
    cross: torch.Tensor | None = None          # C = X X_hat^T: the dense-target problem (with target_gram)
    target_gram: torch.Tensor | None = None    # G_t = X X^T
    target_ridge: float = 0.3                  # ridge of W* (a fraction of mean diag G; see symmetric_equivalent)
    _float64: tuple | None = field(default=None, init=False, repr=False, compare=False)
    _certifiable: bool = field(default=False, init=False, repr=False, compare=False)
    _linear64: tuple | None = field(default=None, init=False, repr=False, compare=False)

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
        if (self.cross is None) != (self.target_gram is None):
            raise ProblemError("a dense-target problem needs both cross (X X_hat^T) and target_gram (X X^T)")
        if self.cross is not None:
            self.cross = self._second_gram(self.cross, "cross")
            target = self._second_gram(self.target_gram, "target_gram")
            self.target_gram = 0.5 * (target + target.T)

    def _second_gram(self, M, name: str) -> torch.Tensor:
        M = _as_float_tensor(M, name)
        if tuple(M.shape) != tuple(self.G.shape):
            raise ProblemError(f"{name} must be {tuple(self.G.shape)} like G, got {tuple(M.shape)}")
        return M.to(dtype=self.G.dtype, device=self.G.device)

    # -- basic facts -------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.W.shape)

    @property
    def device(self) -> torch.device:
        return self.W.device

    @property
    def dense_target(self) -> bool:
        """True for the dense-target problem (inputs X_hat, target W X)."""
        return self.cross is not None

    def _extras(self, f) -> tuple:
        return (None, None) if not self.dense_target else (f(self.cross), f(self.target_gram))

    def to(self, device) -> "LayerProblem":
        return LayerProblem(self.W.to(device), self.G.to(device), self.name, *self._extras(lambda t: t.to(device)),
                            self.target_ridge)

    def dense_energy(self) -> float:
        """tr(W G_t W^T) = ||W X||^2: the error of pruning everything (G_t = G unless dense target)."""
        return float(((self.W @ (self.target_gram if self.dense_target else self.G)) * self.W).sum())

    def linear_term(self) -> torch.Tensor:
        """B = W C (W G unless dense target): f = tr(W_hat G W_hat^T) - 2 tr(B W_hat^T) + f(0)."""
        return self.W @ (self.cross if self.dense_target else self.G)

    def target_weights(self, percdamp: float = 0.01) -> torch.Tensor:
        """W* = W + (B - W G)(G + lam I)^-1: the dense weights that best map X_hat onto W X, ridge-pulled
        towards W (so W* = W exactly when X_hat = X)."""
        if not self.dense_target:
            return self.W
        W, G = self.W.double(), self.G.double()
        L = torch.linalg.cholesky(self.dampen(G, percdamp))
        shift = torch.cholesky_solve((self.linear_term().double() - W @ G).T, L).T
        return (W + shift).to(self.W.dtype)

    def symmetric_equivalent(self, ridge: float | None = None) -> "LayerProblem":
        """(W*, G): the problem every torch method solves for a dense-target layer (module doc; ridge:
        default target_ridge); the problem itself when it has no cross term or its cross term is G."""
        if not self.dense_target or torch.equal(self.cross, self.G):
            return self
        return LayerProblem(self.target_weights(self.target_ridge if ridge is None else ridge), self.G, self.name)

    @staticmethod
    def damping(G: torch.Tensor, percdamp: float = 0.01) -> torch.Tensor:
        """lambda = percdamp * mean(diag G): the one dampening every solver adds to G."""
        return percdamp * G.diagonal().mean()

    @staticmethod
    def dampen(G: torch.Tensor, percdamp: float = 0.01) -> torch.Tensor:
        """G + lambda I (see `damping`): needed before inverting an ill-conditioned Gram (a copy of G, its
        diagonal raised; no identity matrix is made)."""
        damped = G.clone()
        damped.diagonal().add_(LayerProblem.damping(G, percdamp))
        return damped

    def damped_gram(self, percdamp: float = 0.01) -> torch.Tensor:
        """This problem's G, dampened (needed before inverting an ill-conditioned Gram)."""
        return self.dampen(self.G, percdamp)

    def float64(self) -> tuple[np.ndarray, np.ndarray]:
        """(W, G) as float64 numpy arrays, made once (the exact solvers work on them)."""
        if self._float64 is None:
            self._float64 = (self.W.detach().cpu().double().numpy(), self.G.detach().cpu().double().numpy())
        return self._float64

    def linear64(self) -> tuple[np.ndarray, np.ndarray]:
        """(B, kappa) in float64: f_i(v) = v^T G v - 2 b_i^T v + kappa_i for row i (kappa_i = f_i(0)); made
        once (the exact solvers evaluate rows with it at every iteration)."""
        if self._linear64 is None:
            W, G = self.float64()
            if not self.dense_target:
                B = W @ G
                self._linear64 = (B, (B * W).sum(1))
            else:
                C, Gt = (t.detach().cpu().double().numpy() for t in (self.cross, self.target_gram))
                self._linear64 = (W @ C, ((W @ Gt) * W).sum(1))
        return self._linear64

    def errors64(self, V: np.ndarray, rows) -> np.ndarray:
        """Float64 errors f_i(v_i) of `rows` with weights V (len(rows) x d)."""
        W, G = self.float64()
        B, kappa = self.linear64()
        return ((V @ G) * V).sum(1) - 2 * (B[rows] * V).sum(1) + kappa[rows]

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
        if self.dense_target:
            V, W = W_hat.to(self.W).double(), self.W.double()
            quad = ((V @ self.G.double()) * V).sum(1) - 2 * (self.linear_term().double() * V).sum(1)
            return (quad + ((W @ self.target_gram.double()) * W).sum(1)).to(self.W.dtype)
        D = self.W - W_hat.to(self.W)
        return ((D @ self.G) * D).sum(1)

    def relative_error(self, mask=None, W_hat=None) -> float:
        return self.objective(mask, W_hat) / max(self.dense_energy(), 1e-30)

    def check_certifiable(self) -> None:
        """Refuse what no Gram X X^T gives or what has nothing to compare: an indefinite G (its smallest
        eigenvalue below -1e-6 times the largest: then f can go negative and no optimum exists) and
        f(0) = tr(W G W^T) = 0 (W or G all zero: every mask is exact).  Checked once per problem (the
        CLI, `layer_report` and `compare` each ask; the eigenvalues cost O(n^3))."""
        if self._certifiable:
            return
        if not torch.isfinite(self.W).all() or not torch.isfinite(self.G).all():
            raise ProblemError(f"{self.name}: W or G holds NaN or inf")
        eig = torch.linalg.eigvalsh(self.G.double().cpu())
        if eig[0] < -1e-6 * max(float(eig[-1]), 1e-30):
            raise ProblemError(f"{self.name}: G is not positive semidefinite (smallest eigenvalue {float(eig[0]):.4g}, "
                               f"largest {float(eig[-1]):.4g}): it cannot be a Gram X X^T")
        if self.dense_energy() <= 0.0:
            what = "W" if not self.W.any() else "G" if not self.G.any() else "W G W^T"
            raise ProblemError(f"{self.name}: {what} is zero, so every mask has error 0: nothing to compare")
        self._certifiable = True

    def row(self, i: int) -> "LayerProblem":
        return LayerProblem(self.W[i:i + 1], self.G, f"{self.name}[{i}]", self.cross, self.target_gram, self.target_ridge)

    def check_pattern(self, pattern: Pattern) -> None:
        pattern.check_shape(*self.shape)

    # -- refit: the kept weights re-solved for a fixed mask ------------------------
    def refit(self, mask: torch.Tensor, W_hat: torch.Tensor | None = None, iters: int = 100,
              percdamp: float = 0.01, tol: float = 1e-10) -> torch.Tensor:
        """Least-squares refit of the kept weights, all rows at once by preconditioned CG on
            P (G + lam I) P v = P b   (P = diag(mask_i), lam = percdamp * mean diag G, b = G w or C^T w),
        started from W_hat (default W * mask).  One CG step is one (rows x d) @ (d x d) product, so
        it is GPU-native.  A row keeps the refit only where it lowers the true (undamped) error."""
        from .refit import batched_masked_cg

        mask = self.check_mask_shape(mask)
        start = self.W * mask if W_hat is None else W_hat.to(self.W) * mask
        V = batched_masked_cg(self.linear_term(), self.G, mask, start, self.damping(self.G, percdamp), iters, tol)
        better = self.row_errors(W_hat=V) < self.row_errors(W_hat=start)
        return torch.where(better[:, None], V, start)

    def refit_exact(self, keep: np.ndarray, rows=None) -> np.ndarray:
        """Exact per-row least squares on the kept support (float64): G_SS v_S = b_S (b = G w, or C^T w
        for a dense target) for each row of `rows` (default all), keep being (len(rows), d)."""
        W, G = self.float64()
        rows = np.arange(W.shape[0]) if rows is None else np.asarray(rows)
        B = self.linear64()[0] if self.dense_target else None
        V = np.zeros((len(rows), W.shape[1]))
        for i, r in enumerate(rows):
            S = np.nonzero(keep[i])[0]
            b = G @ W[r] if B is None else B[r]
            if len(S):
                V[i, S] = np.linalg.lstsq(G[np.ix_(S, S)], b[S], rcond=None)[0]
        return V

    def refit_columns(self, keep_cols: torch.Tensor, percdamp: float = 0.01) -> torch.Tensor:
        """Refit when every row keeps the same columns S: V_S = W G_S (G_SS + lam I)^-1, one
        Cholesky for all rows (structured pruning); zeros elsewhere."""
        S = torch.nonzero(keep_cols).flatten()
        G_SS = self.G[S][:, S]
        L = torch.linalg.cholesky(G_SS + self.damping(self.G, percdamp)
                                  * torch.eye(len(S), dtype=self.G.dtype, device=self.G.device))
        V = torch.zeros_like(self.W)
        V[:, S] = torch.cholesky_solve((self.W @ (self.cross if self.dense_target else self.G)[:, S]).T, L).T
        return V


def save_layer_problems(problems: dict, path: str | Path, meta: dict | None = None) -> None:
    """Write {name: (W, G) or (W, (G, cross, target))} as `<name>.weight`, `<name>.gram` (and `<name>.cross`,
    `<name>.target_gram` for a dense target) to a safetensors file; `meta`: string metadata."""
    from safetensors.torch import save_file

    tensors = {}
    for name, (W, stats) in problems.items():
        parts = stats.tensors() if hasattr(stats, "tensors") else (stats,)
        for key, t in zip(("gram", "cross", "target_gram"), parts):
            tensors[f"{name}.{key}"] = t.detach().float().cpu().clone().contiguous()
        tensors[f"{name}.weight"] = W.detach().float().cpu().clone().contiguous()
    save_file(tensors, str(path), metadata={k: str(v) for k, v in (meta or {}).items()})


def load_layer_problems(path: str | Path, names: list[str] | None = None) -> dict[str, LayerProblem]:
    """Read `<name>.weight` / `<name>.gram` pairs (with `<name>.cross` and `<name>.target_gram`: dense-target
    problems) from a safetensors file."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.exists():
        raise ProblemError(f"no such layer file: {path}")
    try:
        tensors = load_file(str(path))
    except Exception as exc:        # noqa: BLE001 - safetensors raises its own error types
        raise ProblemError(f"{path} is not a safetensors layer file ({str(exc).splitlines()[0]})") from None
    found = sorted(k[: -len(".weight")] for k in tensors if k.endswith(".weight"))
    if not found:
        grams = sorted(k for k in tensors if k.endswith(".gram"))
        raise ProblemError(f"{path}: no layer problems (no '<name>.weight' with its '<name>.gram'"
                           + (f"; it has {grams[:3]} without weights)" if grams else ")"))
    missing = [n for n in found if f"{n}.gram" not in tensors]
    if missing:
        raise ProblemError(f"{path}: no .gram for {missing}")
    if names:
        unknown = [n for n in names if n not in found]
        if unknown:
            raise ProblemError(f"{path}: no layer(s) {unknown}; the file has {found}")
        found = names
    return {n: LayerProblem(tensors[f"{n}.weight"].float(), tensors[f"{n}.gram"].float(), n,
                            tensors.get(f"{n}.cross"), tensors.get(f"{n}.target_gram")) for n in found}


def dense_target_problem(W: torch.Tensor, X: torch.Tensor, X_hat: torch.Tensor, name: str = "layer") -> LayerProblem:
    """The dense-target problem of weights W with dense inputs X and pruned inputs X_hat (d x T each)."""
    return LayerProblem(W, X_hat @ X_hat.T, name, X @ X_hat.T, X @ X.T)


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
