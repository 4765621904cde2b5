"""One description of a pruning run (`PruneConfig`), checked before anything is loaded: five specs of
settings (calibration, method, objective, allocation, placement), each field declared once
(`optprune.settings`)."""
from __future__ import annotations

import ast
import inspect
from dataclasses import dataclass

import torch

from formulations.allocation import GroupBound
from .engine.activations import parse_memory
from .patterns import Pattern
from .solvers import DATA_FREE_MASKS, METHODS
from .solvers.base import check_method
from .settings import Spec, described, setting, settings_of

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


def one_of(*choices):
    """A check: the value is one of `choices`."""
    return lambda value: None if value in choices else f"must be one of {', '.join(choices)}"


def at_least(low):
    return lambda value: None if value >= low else f"must be >= {low}"


def positive(value) -> str | None:
    return None if value > 0 else "must be > 0"


def raises(check):
    """A check that raises its own one-line ValueError (dtype, device names)."""
    def run(value):
        check(value)
    return run


@dataclass(frozen=True)
class CalibrationSpec(Spec):
    """Calibration: the text, how many windows of how many tokens, drawn with which seed."""
    calib: str = setting("c4", "c4 (shipped sample, or the data folder's) | wikitext2 | hf:NAME[:CONFIG] (needs the "
                         "hub) | FILE (txt, jsonl, jsonl.gz)")
    nsamples: int = setting(128, "calibration windows", check=at_least(1))
    seqlen: int = setting(2048, "tokens per window (calibration and perplexity)", check=at_least(2))
    seed: int = setting(0, "seed of the window sampling")
    data_dir: str = setting("", "local data folder (shared/data layout)", fingerprint=False)
    layer_errors: bool = setting(False, "measure every layer's error even for a data-free method (magnitude), "
                                 "which then runs the calibration passes it does not otherwise need",
                                 fingerprint=False)


@dataclass(frozen=True)
class MethodSpec(Spec):
    """Method: the solver, its options, the pattern and sparsity it prunes to."""
    method: str = setting("sparseswaps", f"the layer solver: {', '.join(sorted(METHODS))}")
    method_options: dict = setting({}, "an option of the method, e.g. --method-arg iters=50 (repeatable; checked "
                                   "against the method's signature)", flag="--method-arg", repeat=True,
                                   parse=lambda items: parse_method_args(items), metavar="KEY=VALUE")
    pattern: str = setting("per-row", "unstructured | per-row | N:M | structured (MLP channels and KV groups)",
                           fingerprint=lambda c: c.parsed_pattern().name)
    sparsity: float | None = setting(None, "share of weights pruned; default 0.5 (N:M implies its own)",
                                     fingerprint=lambda c: c.parsed_pattern().sparsity)
    refit: bool = setting(False, "least-squares refit of the kept weights after any method")
    attn_sparsity: float | None = setting(
        None, "structured: share of KV groups of attention heads to remove, rounded down to whole groups (0 keeps "
        "attention); the MLP then loses --sparsity of its channels. Default: --sparsity is the share of each "
        "block's parameters removed, split between KV groups (round(s x groups)) and MLP channels")

    def relations(self):
        check_method(self.method, self.parsed_pattern())
        check_method_options(self.method, self.method_options)

    def parsed_pattern(self) -> Pattern:
        return Pattern.parse(self.pattern, self.sparsity, default=0.5)


@dataclass(frozen=True)
class ObjectiveSpec(Spec):
    """Objective: what each layer reproduces, in which order, and the block reconstruction after it."""
    target: str = setting("pruned", "what each layer reproduces from the pruned model's inputs X_hat: its own output "
                          "on them (pruned: min ||W X_hat - W_hat X_hat||) or the dense model's output (dense: "
                          "min ||W X - W_hat X_hat||, which carries a second activation stream and implies "
                          "--sequential)", check=one_of("pruned", "dense"))
    target_ridge: float = setting(0.3, "dense target: the corrected weights W* = W + (B - W G)(G + r mean(diag G) "
                                  "I)^-1 that the methods prune are pulled towards W by this ridge r",
                                  check=positive, applies=lambda c: c.target == "dense")
    sequential: bool = setting(False, "within a block, prune input group after input group (q/k/v, o, gate/up, "
                               "down), each calibrated on the block with the earlier groups already pruned",
                               fingerprint=lambda c: c.runs_sequential())
    reconstruct: str = setting("none", "block: after each block is pruned, fit its kept weights (masks fixed) to "
                               "the dense block's outputs by Adam; 1/8 of the windows held out, never worse than "
                               "before", check=one_of("none", "block"))
    reconstruct_epochs: int = setting(2, "block reconstruction: epochs", check=at_least(1),
                                      applies=lambda c: c.reconstruct != "none")
    reconstruct_lr: float = setting(1e-3, "block reconstruction: Adam's step size", check=positive,
                                    applies=lambda c: c.reconstruct != "none")
    reconstruct_holdout: float = setting(0.125, "block reconstruction: share of the windows held out to stop "
                                         "an epoch that does not help",
                                         check=lambda v: None if 0 <= v < 1 else "must lie in [0, 1)",
                                         applies=lambda c: c.reconstruct != "none")
    reconstruct_windows: int = setting(0, "block reconstruction: fit on the first this many calibration windows "
                                       "(a random draw; 0: all); the layers' solves use every window",
                                       check=at_least(0), applies=lambda c: c.reconstruct != "none")
    reconstruct_autocast: bool = setting(False, "block reconstruction: forward and backward passes under bf16 "
                                         "autocast (float32 master weights and Adam state) where the forward "
                                         "passes run in reduced precision (--dtype); float32 forward passes "
                                         "train in float32",
                                         applies=lambda c: c.reconstruct != "none")
    reconstruct_batch: int = setting(2, "block reconstruction: windows per Adam step", check=at_least(1),
                                     applies=lambda c: c.reconstruct != "none")
    reconstruct_qkv_epochs: int = setting(-1, "block reconstruction: the first this many epochs also fit the "
                                          "attention's q/k/v projections, later ones the attention output and the "
                                          "MLP only, with a backward pass that stops before the attention (45% "
                                          "cheaper a step on SmolLM2); -1: every epoch", check=at_least(-1),
                                          applies=lambda c: c.reconstruct != "none")
    reconstruct_schedule: str = setting("constant", "block reconstruction: step size over the steps of all epochs: "
                                        "constant, or cosine (lr (1 + cos(pi t / T)) / 2 at step t of T)",
                                        check=one_of("constant", "cosine"), applies=lambda c: c.reconstruct != "none")

    reconstruct_loss: str = setting("mse", "block reconstruction: the output error fitted and measured: mse "
                                    "(squared error over every position and channel, so large-norm positions "
                                    "and channels weigh most), token (each position's squared error relative to "
                                    "its dense output's: on Gemma-3 the BOS position holds 61% of a window's "
                                    "squared norm) or channel (each channel's squared error relative to its "
                                    "dense mean square: one channel holds 82-93% of Gemma-3's)",
                                    check=one_of("mse", "token", "channel"),
                                    applies=lambda c: c.reconstruct != "none")
    reconstruct_step: str = setting("absolute", "block reconstruction: Adam's step size as given (absolute) or "
                                    "times the RMS of each linear's kept weights (relative; Gemma-3's weights "
                                    "are 4-13x smaller than SmolLM2's, so an absolute step made for one "
                                    "overshoots on the other)", check=one_of("absolute", "relative"),
                                    applies=lambda c: c.reconstruct != "none")

    def runs_sequential(self) -> bool:
        """Within-block sequential: asked for, or implied by the dense target (a layer fitted to the dense
        output on inputs that the block's earlier layers then change would correct twice)."""
        return self.sequential or self.target == "dense"


def _allocated(c) -> bool:
    return c.allocation != "uniform"


def _milp(c) -> bool:
    return c.allocation == "milp"


@dataclass(frozen=True)
class AllocationSpec(Spec):
    """Allocation: the per-layer sparsities (uniform, OWL, or the MILP over a menu and its pricing)."""
    allocation: str = setting("uniform", "per-layer sparsities (unstructured, per-row, structured): uniform; owl "
                              "(outlier-weighted blocks, luuyin/OWL); milp (a menu of sparsities per layer priced "
                              "by each layer's error, the choice with the least total price and exactly the uniform "
                              "run's pruned count, proven optimal by HiGHS)", check=one_of("uniform", "owl", "milp"))
    allocation_cost: str = setting("error", "milp: price a layer by its relative error; by that error times its "
                                   "output energy and the calibration loss's diagonal Fisher on its outputs (one "
                                   "backward pass); or by its error curve scaled to the measured rise of the "
                                   "calibration loss when that layer alone is pruned at the target",
                                   check=one_of("error", "sensitivity", "loss"), applies=_milp)
    allocation_spread: float = setting(0.2, "milp menu: sparsity +- spread", applies=_milp)
    allocation_step: float = setting(0.025, "milp menu step", applies=_milp)
    allocation_max: float = setting(0.95, "milp menu: most a layer may lose", applies=_milp)
    allocation_windows: int = setting(0, "price the allocation (owl, milp) on the first this many calibration "
                                      "windows (0: all); the pruning itself uses every window",
                                      applies=lambda c: _allocated(c) and c.allocation_windows)
    allocation_bounds: tuple = setting((), "milp: bound a group's sparsity (its pruned share of its weights), "
                                       "repeatable; SELECTOR is attention, mlp or blocks:A-B, an empty LO is 0 and "
                                       "HI 1 (attention=:0.5)", flag="--allocation-bound", repeat=True,
                                       parse=tuple, metavar="SELECTOR=LO:HI",
                                       applies=lambda c: bool(c.allocation_bounds))
    pricing_cache: str = setting("", "keep the allocation's pricing pass in DIR and reuse it in any run that prices "
                                 "the same model, windows, pattern and menu with the same method",
                                 fingerprint=False, metavar="DIR", applies=_allocated)

    def relations(self):
        bounds = [GroupBound.parse(b) for b in self.allocation_bounds]
        if bounds and self.allocation != "milp":
            raise ValueError("--allocation-bound bounds the MILP's groups: it needs --allocation milp")
        if not (0 < self.allocation_step <= self.allocation_spread and 0 < self.allocation_max < 1):
            raise ValueError("allocation menu: need 0 < step <= spread and 0 < max < 1")


@dataclass(frozen=True)
class PlacementSpec(Spec):
    """Placement: numerics, device, batching, memory; none of it changes which weights are kept."""
    dtype: str = setting("auto", "auto | float32 | bfloat16 | float16: the forward passes' dtype (auto: fp16 on "
                         "CUDA, bf16 on a CPU that computes it natively (AMX or AVX512-BF16), float32 on other "
                         "CPUs); the output keeps the input checkpoint's dtype",
                         check=raises(lambda v: resolve_dtype(v)), fingerprint=lambda c: str(resolve_dtype(c.dtype)))
    device: str = setting("auto", "auto | cpu | cuda | cuda:N", check=raises(lambda v: resolve_device(v)),
                          fingerprint=lambda c: resolve_device(c.device).type)
    batch: int = setting(8, "windows per forward batch", check=at_least(1))
    max_memory: str = setting("", "RAM budget per activation buffer, e.g. 8GiB; larger ones are memory-mapped on "
                              "disk under --out", check=raises(parse_memory), fingerprint=False)
    offload: bool | None = setting(None, "move each block back to the CPU when done; None: on accelerators",
                                   flag=None, fingerprint=False)
    row_shards: int = setting(1, "split each layer's rows into this many independent problems (per-row and N:M "
                              "patterns), spread over the torchrun ranks with the layers", check=at_least(1))
    mmap_weights: bool = setting(False, "host RAM holds about one block: input safetensors stay memory-mapped and "
                                 "each pruned block is read back from its saved state on disk", fingerprint=False)


@dataclass(frozen=True)
class PruneConfig(PlacementSpec, AllocationSpec, ObjectiveSpec, MethodSpec, CalibrationSpec):
    """Every setting of a pruning run: calibration, method, objective, allocation, placement (the specs)."""

    def relations(self):
        pattern = self.parsed_pattern()
        if self.allocation != "uniform" and pattern.name not in ("unstructured", "per-row", "structured"):
            raise ValueError(f"--allocation {self.allocation} allocates unstructured, per-row and structured "
                             f"sparsity; {pattern.name} stays uniform per layer")
        if self.allocation_cost == "loss" and pattern.removes_inputs:
            raise ValueError("--allocation-cost loss prices single linears; structured units: use error or "
                             "sensitivity")
        if not 0 <= self.allocation_windows <= self.nsamples:
            raise ValueError(f"allocation_windows must be between 0 (all) and nsamples={self.nsamples}, "
                             f"got {self.allocation_windows}")

    def needs_calibration(self) -> bool:
        """False for a data-free mask (magnitude) kept as is: no forward pass and no Gram is needed,
        unless the layer errors are wanted (they need G)."""
        data_free = (self.method in DATA_FREE_MASKS and not self.refit and not self.parsed_pattern().removes_inputs
                     and self.target == "pruned" and self.reconstruct == "none" and self.allocation == "uniform")
        return self.layer_errors or not data_free

    def specs(self) -> dict:
        """{spec name: its settings that matter in this run} (the report's `settings`)."""
        settings = described(self)
        return {spec.__name__.removesuffix("Spec").lower(): {f.name: settings[f.name] for f in settings_of(spec)
                                                             if f.name in settings}
                for spec in SPECS}

    def result_settings(self) -> dict:
        """The settings that change the pruned weights (a run's fingerprint, with the model's and the
        calibration windows' digests): not paths, memory budgets or placement."""
        from . import __version__
        return dict(optprune=__version__, **described(self, result_only=True))


SPECS = (CalibrationSpec, MethodSpec, ObjectiveSpec, AllocationSpec, PlacementSpec)


def resolve_dtype(name: str) -> torch.dtype:
    """'auto' is fp16 on CUDA; on the CPU bf16 where it computes bf16 natively (`native_bf16`), else float32."""
    if name in ("", "auto"):
        if torch.cuda.is_available():
            return torch.float16
        return torch.bfloat16 if native_bf16() else torch.float32
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}: use auto, {', '.join(DTYPES)}")
    return DTYPES[name]


def native_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AMX tiles or AVX512-BF16).  There bf16 forward passes run
    about 2x faster than float32; elsewhere torch emulates them and they are the slower ones: a SmolLM2
    forward pass over a 2048-token window took 11.7 s in bf16 against 4.2 s in float32 on a 2-core AVX512
    Xeon without either (docs/results/cpu_dtype_emulated-bf16.md)."""
    probes = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    return any(bool(probe()) for probe in probes if callable(probe))


def placement_note(dtype: torch.dtype, device: torch.device) -> str:
    """What a run says of its numerics: the forward dtype and device, and a hint where bf16 was asked for on a
    CPU that emulates it (`native_bf16`)."""
    note = f"{str(dtype).removeprefix('torch.')} forward passes on {device.type}"
    if device.type == "cpu" and dtype == torch.bfloat16 and not native_bf16():
        note += " (this CPU emulates bf16: float32 ran SmolLM2's forward pass 2.8x faster on one; --dtype float32)"
    return note


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
        if name in OPTION_RANGES and value is not None and not isinstance(value, (str, torch.Tensor)):
            holds, wanted = OPTION_RANGES[name]
            if not holds(value):
                raise ValueError(f"{method} option {name}={value!r}: must be {wanted}")


OPTION_RANGES = {   # every numeric option of every method: what a value must satisfy (one meaning per name)
    "blocksize": (lambda v: v >= 1, ">= 1"),
    "percdamp": (lambda v: 0 < v < 10, "in (0, 10): the damping's share of the mean diagonal of G"),
    "iters": (lambda v: v >= 1, ">= 1"),
    "max_iter": (lambda v: v >= 0, ">= 0 (0: the warm start unchanged)"),
    "bound_every": (lambda v: v >= 1, ">= 1"),
    "steps": (lambda v: v >= 1, ">= 1"),
    "inner": (lambda v: v >= 1, ">= 1"),
    "ramp": (lambda v: v >= 0, ">= 0"),
    "candidates": (lambda v: v >= 1, ">= 1 (or None: every pair)"),
    "warm_fraction": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "track": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "rho0": (lambda v: v > 0, "> 0"),
    "rho": (lambda v: v > 0, "> 0"),
    "growth": (lambda v: v >= 1, ">= 1"),
}


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
