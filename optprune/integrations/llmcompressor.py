"""optprune's methods inside llm-compressor's `oneshot`, as a Modifier.

    from llmcompressor import oneshot
    from optprune.integrations.llmcompressor import OptPruneModifier
    oneshot(model=model, dataset=ds, recipe=[OptPruneModifier(method="sparseswaps", sparsity=0.5,
                                                              ignore=["re:.*lm_head"])])

llm-compressor's sequential pipeline runs the calibration; this Modifier's forward hooks
accumulate each target linear's Gram G = sum_t x_t x_t^T (optprune's `accumulate_gram`), and at
the end of each sequential layer every linear is solved as optprune's `LayerProblem(W, G)` by the
registered method (`prune_layer`, optionally refit by least squares) and written back with
llm-compressor's `update_offload_parameter`.  The pattern: `mask_structure` "N:M" other than
"0:0" gives optprune's N:M pattern (N kept in every M inputs; "2:4"), otherwise `pattern`
("per-row", optprune's default, or "unstructured") at `sparsity`.  OWL profiles and per-layer
sparsity lists of llm-compressor's base class are honoured.

llm-compressor pins its own transformers range, so this module is exercised in its own
environment by `validation/llmcompressor_bridge.py`, not in the main test suite.
"""
from __future__ import annotations

import torch
from compressed_tensors.utils import align_module_device, update_offload_parameter
from llmcompressor.modifiers.pruning.sparsegpt.sgpt_base import SparsityModifierBase
from pydantic import Field, PrivateAttr

from ..engine.grams import accumulate_gram, finish_gram
from ..patterns import Pattern
from ..problem import LayerProblem
from ..solvers import prune_layer

__all__ = ["OptPruneModifier", "ready_for_oneshot"]


def ready_for_oneshot(model, folder) -> None:
    """llm-compressor (0.14) re-reads the model's config from `config.name_or_path`; a model built in
    memory (`from_config`, or optprune's dequantised GGUF, whose path is the GGUF's folder) has no
    config.json there, so its config is written to `folder` and named there."""
    from pathlib import Path

    if not (Path(model.config.name_or_path or "/nonexistent") / "config.json").is_file():
        model.config.save_pretrained(str(folder))
        model.config._name_or_path = str(folder)


class OptPruneModifier(SparsityModifierBase):
    """Any optprune method (sparsegpt, sparseswaps, admm, maiht, sparsefw, wanda, ...) on
    llm-compressor's calibration: a pure function of (W, G) per linear."""

    method: str = "sparseswaps"
    pattern: str = "per-row"
    method_options: dict = Field(default_factory=dict)
    refit: bool = False

    _grams: dict = PrivateAttr(default_factory=dict)
    _errors: dict = PrivateAttr(default_factory=dict)

    def calibrate_module(self, module: torch.nn.Module, args: tuple, _output: torch.Tensor) -> None:
        """G += x^T x over the tokens of this batch (lower triangle; mirrored before the solve)."""
        x = args[0]
        if module not in self._grams:
            self._grams[module] = torch.zeros(x.shape[-1], x.shape[-1], dtype=torch.float32, device=x.device)
        accumulate_gram(self._grams[module], x.detach())

    def layer_pattern(self, sparsity: float) -> Pattern:
        """N:M from mask_structure when it is not 0:0, else `pattern` at the layer's sparsity."""
        if self._prune_n:
            return Pattern.parse(f"{self._prune_n}:{self._prune_m}")
        return Pattern.parse(self.pattern, float(sparsity))

    def compress_modules(self) -> None:
        """Solve and write back every calibrated linear of the sequential layer just finished."""
        for module in list(self._grams):
            name = self._module_names[module]
            with torch.no_grad(), align_module_device(module):
                W = module.weight.detach().float()
                problem = LayerProblem(W, finish_gram(self._grams.pop(module)).to(W.device), name)
                pattern = self.layer_pattern(self._module_sparsities[module])
                result = prune_layer(problem, pattern, self.method, **self.method_options)
                weight = problem.refit(result.mask, result.weight) if self.refit else result.weight
                self._errors[name] = problem.relative_error(W_hat=weight)
                update_offload_parameter(module, "weight", weight.to(module.weight.dtype))

    def on_finalize(self, state, **kwargs) -> bool:
        if not self.ended_:
            self.on_end(state, None)
        if self._grams:
            raise ValueError(f"OptPruneModifier: {len(self._grams)} calibrated modules were never solved")
        return True

    @property
    def layer_errors(self) -> dict[str, float]:
        """Relative layer error f(W_hat)/f(0) of every solved linear, by module name."""
        return dict(self._errors)
