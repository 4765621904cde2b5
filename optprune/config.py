"""One description of a pruning run (`PruneConfig`), checked before anything is loaded."""
from __future__ import annotations

import ast
import inspect
from dataclasses import asdict, dataclass, field

import torch

from .formulations.allocation import GroupBound
from .patterns import Pattern
from .solvers import DATA_FREE_MASKS, METHODS
from .solvers.base import check_method

TARGETS = ("pruned", "dense")
RECONSTRUCTIONS = ("none", "block")
ALLOCATIONS = ("uniform", "owl", "milp")
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


@dataclass(frozen=True)
class PruneConfig:
    """method and its options; pattern (spec and sparsity); calibration; numerics and placement."""
    method: str = "sparseswaps"
    method_options: dict = field(default_factory=dict)
    pattern: str = "per-row"
    sparsity: float | None = None          # None: 0.5, or what N:M implies
    refit: bool = False
    attn_sparsity: float | None = None
    target: str = "pruned"               # the layer problems' target: "pruned" (W X_hat) or "dense" (W X)
    target_ridge: float = 0.3            # dense target: ridge of the corrected weights W*, times mean diag G
    sequential: bool = False             # within a block, later linears see the earlier ones pruned
    allocation: str = "uniform"          # per-layer sparsities: uniform, owl, or milp (the proven optimum of a menu)
    allocation_cost: str = "error"       # milp: a layer's price: relative error, x loss sensitivity, or measured loss
    allocation_spread: float = 0.2       # milp menu: target +- spread ...
    allocation_step: float = 0.025       # ... in these steps ...
    allocation_max: float = 0.95         # ... at most this per layer
    allocation_windows: int = 0          # price the allocation on the first this many windows (0: all of them)
    allocation_bounds: tuple = ()        # milp: 'SELECTOR=LO:HI' sparsity bounds of groups (`GroupBound`)
    reconstruct: str = "none"            # "block": fit each pruned block's kept weights to the dense outputs
    reconstruct_epochs: int = 2
    reconstruct_lr: float = 1e-3
    calib: str = "c4"
    nsamples: int = 128
    seqlen: int = 2048
    seed: int = 0
    data_dir: str = ""
    dtype: str = "auto"
    device: str = "auto"
    batch: int = 8
    max_memory: str = ""
    offload: bool | None = None          # move each block back to the CPU when done; None: on accelerators
    row_shards: int = 1
    mmap_weights: bool = False
    layer_errors: bool = False

    def __post_init__(self):
        check_method(self.method, self.parsed_pattern())
        check_method_options(self.method, self.method_options)
        if self.nsamples < 1 or self.seqlen < 2 or self.batch < 1 or self.row_shards < 1:
            raise ValueError("nsamples, batch and row_shards must be >= 1 and seqlen >= 2")
        resolve_dtype(self.dtype)
        resolve_device(self.device)
        if self.target not in TARGETS:
            raise ValueError(f"unknown target {self.target!r}: use {' or '.join(TARGETS)}")
        if self.reconstruct not in RECONSTRUCTIONS:
            raise ValueError(f"unknown reconstruction {self.reconstruct!r}: use {' or '.join(RECONSTRUCTIONS)}")
        if self.allocation not in ALLOCATIONS:
            raise ValueError(f"unknown allocation {self.allocation!r}: use {', '.join(ALLOCATIONS)}")
        if self.allocation != "uniform" and self.parsed_pattern().name not in ("unstructured", "per-row", "structured"):
            raise ValueError(f"--allocation {self.allocation} allocates unstructured, per-row and structured sparsity; "
                             f"{self.parsed_pattern().name} stays uniform per layer")
        if self.allocation_cost not in ("error", "sensitivity", "loss"):
            raise ValueError(f"unknown allocation cost {self.allocation_cost!r}: use error, sensitivity or loss")
        if self.allocation_cost == "loss" and self.parsed_pattern().removes_inputs:
            raise ValueError("--allocation-cost loss prices single linears; structured units: use error or "
                             "sensitivity")
        bounds = [GroupBound.parse(b) for b in self.allocation_bounds]
        if bounds and self.allocation != "milp":
            raise ValueError("--allocation-bound bounds the MILP's groups: it needs --allocation milp")
        if not 0 <= self.allocation_windows <= self.nsamples:
            raise ValueError(f"allocation_windows must be between 0 (all) and nsamples={self.nsamples}, "
                             f"got {self.allocation_windows}")
        if not (0 < self.allocation_step <= self.allocation_spread and 0 < self.allocation_max < 1):
            raise ValueError("allocation menu: need 0 < step <= spread and 0 < max < 1")
        if not self.target_ridge > 0:
            raise ValueError(f"target_ridge must be > 0, got {self.target_ridge}")
        if self.reconstruct_epochs < 1 or not self.reconstruct_lr > 0:
            raise ValueError("reconstruct_epochs must be >= 1 and reconstruct_lr > 0")

    def parsed_pattern(self) -> Pattern:
        return Pattern.parse(self.pattern, self.sparsity, default=0.5)

    def needs_calibration(self) -> bool:
        """False for a data-free mask (magnitude) kept as is: no forward pass and no Gram is needed,
        unless the layer errors are wanted (they need G)."""
        data_free = (self.method in DATA_FREE_MASKS and not self.refit and not self.parsed_pattern().removes_inputs
                     and self.target == "pruned" and self.reconstruct == "none" and self.allocation == "uniform")
        return self.layer_errors or not data_free

    def runs_sequential(self) -> bool:
        """Within-block sequential: asked for, or implied by the dense target (a layer fitted to the dense
        output on inputs that the block's earlier layers then change would correct twice)."""
        return self.sequential or self.target == "dense"

    def as_dict(self) -> dict:
        return asdict(self)

    def result_settings(self) -> dict:
        """The settings that change the pruned weights (a run's fingerprint, with the model's and the
        calibration windows' digests): not paths, memory budgets or placement."""
        from . import __version__
        pattern = self.parsed_pattern()
        return dict(optprune=__version__, method=self.method, method_options=dict(self.method_options),
                    pattern=pattern.name, sparsity=pattern.sparsity, refit=self.refit,
                    attn_sparsity=self.attn_sparsity, target=self.target, sequential=self.runs_sequential(),
                    **({"target_ridge": self.target_ridge} if self.target == "dense" else {}),
                    reconstruct=self.reconstruct, allocation=self.allocation,
                    **({"allocation_menu": [self.allocation_spread, self.allocation_step, self.allocation_max],
                        "allocation_cost": self.allocation_cost}
                       if self.allocation == "milp" else {}),
                    **({"allocation_bounds": list(self.allocation_bounds)} if self.allocation_bounds else {}),
                    **({"allocation_windows": self.allocation_windows}
                       if self.allocation != "uniform" and self.allocation_windows else {}),
                    **({"reconstruct_epochs": self.reconstruct_epochs, "reconstruct_lr": self.reconstruct_lr}
                       if self.reconstruct != "none" else {}),
                    calib=self.calib, nsamples=self.nsamples, seqlen=self.seqlen,
                    seed=self.seed, dtype=str(resolve_dtype(self.dtype)), device=resolve_device(self.device).type,
                    batch=self.batch, row_shards=self.row_shards)


def resolve_dtype(name: str) -> torch.dtype:
    """'auto' is bf16 on the CPU (about 2x faster than fp32 there), fp16 on CUDA."""
    if name in ("", "auto"):
        return torch.bfloat16 if not torch.cuda.is_available() else torch.float16
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}: use auto, {', '.join(DTYPES)}")
    return DTYPES[name]


def method_parameters(method: str) -> dict[str, inspect.Parameter]:
    """The options a method takes (its keyword parameters after problem and pattern)."""
    params = list(inspect.signature(METHODS[method]).parameters.values())[2:]
    return {p.name: p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def check_method_options(method: str, options: dict) -> None:
    params = method_parameters(method)
    unknown = sorted(set(options) - set(params))
    if unknown:
        raise ValueError(f"{method} has no option {', '.join(unknown)}; its options: "
                         + (", ".join(f"{n}={p.default!r}" for n, p in params.items()) or "none"))
    warm = options.get("warm_start")
    if isinstance(warm, str) and (warm == method or warm not in METHODS):
        raise ValueError(f"{method}: unknown warm start {warm!r}; choose from "
                         + ", ".join(m for m in sorted(METHODS) if m != method))
    for name, value in options.items():
        default = params[name].default
        if default is not None and default is not inspect.Parameter.empty and not _fits(value, default):
            raise ValueError(f"{method} option {name}={value!r}: expected {type(default).__name__} "
                             f"like the default {default!r}")


def _fits(value, default) -> bool:
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, type(default))


def parse_method_args(items: list[str]) -> dict:
    """['iters=50', 'warm_start=magnitude'] -> {'iters': 50, 'warm_start': 'magnitude'}."""
    options = {}
    for item in items:
        key, eq, text = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"--method-arg {item!r}: write key=value")
        try:
            options[key.strip()] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            options[key.strip()] = text
    return options


def resolve_device(name: str) -> torch.device:
    """'auto' is CUDA when present, else the CPU; a CUDA device without CUDA is refused."""
    if name in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: this machine has no CUDA device (use cpu or auto)")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device
