"""Recipes: the settings that make a run's result, in one word or one file.

A recipe has up to four sections, named as the report's `settings` name them: `calibration`, `method` (method
and options, pattern, sparsity), `objective` (target, sequential, reconstruction and its schedule) and
`allocation` (kind, price, menu, bounds); each holds PruneConfig fields of that section.  It is a named preset
or a YAML file; `optprune prune --recipe best|balanced|fast|FILE.yaml` and `optprune.prune(..., recipe=...)`
take it, and explicit flags or keywords override it.  Every output folder holds `recipe.yaml`, the recipe that
was run, so `--recipe <out>/recipe.yaml` runs it again.  A preset's allocation is left out where the pattern
stays uniform per layer (N:M).  The presets, as measured on SmolLM2-135M at the full protocol
(`docs/results/smollm2_recipe_*.md`, 2 CPU threads, each against SparseGPT in the same run):

- `fast`: SparseGPT, 46.09 at 50% per-row in 724 s (100.79 at 2:4 in 827 s);
- `balanced`: SparseGPT + block reconstruction on the first 32 windows (bf16 autocast where the forward passes are
  bf16, 3 epochs, one window per step: twice the steps of two per step for 15% more time, a 4% lower held-out
  block error after 6 blocks of SmolLM2 at 50% per-row; a cosine step schedule and two epochs were each worse),
  no allocation: 48.68 at 2:4 in 1502 s (1.82x SparseGPT).  Since 2026-12-07 its loss is channel-relative and
  each linear's step is 1e-2 x the RMS of its kept weights (about the 2e-3 these figures ran with, on
  SmolLM2): at 32 windows, 50% per-row, first 40 test windows, SmolLM2 gives 32.39 against 32.27 with the
  tables' mse loss and step 2e-3 (`docs/results/smollm2_loss_per-row-0.50.md`), Gemma-3-270M 28.40 against
  1444.83 (`docs/results/gemma3_ablation_per-row-0.50.md`): one preset for both families;
- `best`: `balanced` + sensitivity-priced MILP allocation (menu step 0.05, priced on 8 windows), 32.92 at 50%
  per-row in 1435 s (1.98x SparseGPT, on a host whose forward passes ran 2.5x slower than the day before's:
  about 2.3x there; the earlier recipe, reconstruction on every window in float32 and
  pricing on 32 windows, gave 31.97 at 5.6x SparseGPT's time of that run); 47.05 at 60% (2.25x there; 1.88x on
  2026-12-07 once the reconstruction measured the error before training on the held-out windows only) and
  89.39 at 70% (2.20x)."""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import yaml

from .config import AllocationSpec, CalibrationSpec, MethodSpec, ObjectiveSpec, PruneConfig
from .settings import settings_of

SECTIONS = {"calibration": CalibrationSpec, "method": MethodSpec, "objective": ObjectiveSpec,
            "allocation": AllocationSpec}
RECIPE_FILE = "recipe.yaml"
QUICK_RECONSTRUCTION = {"reconstruct": "block", "reconstruct_windows": 32, "reconstruct_autocast": True,
                        "reconstruct_epochs": 3, "reconstruct_lr": 1e-2, "reconstruct_step": "relative",
                        "reconstruct_loss": "channel", "reconstruct_batch": 1}
PRESETS = {
    "fast": {"method": {"method": "sparsegpt"}},
    "balanced": {"method": {"method": "sparsegpt"}, "objective": dict(QUICK_RECONSTRUCTION)},
    "best": {"method": {"method": "sparsegpt"}, "objective": dict(QUICK_RECONSTRUCTION),
             "allocation": {"allocation": "milp", "allocation_cost": "sensitivity", "allocation_step": 0.05,
                            "allocation_windows": 8}},
}


def recipe_settings(recipe: str) -> dict:
    """{PruneConfig field: value} of a preset name, a YAML file, or a folder holding recipe.yaml; one line for
    a file that cannot be read or a key no section has."""
    if recipe in PRESETS:
        sections = PRESETS[recipe]
    else:
        sections = read_recipe_file(recipe)
    return flattened(sections, recipe)


def read_recipe_file(recipe: str) -> dict:
    path = Path(recipe)
    path = path / RECIPE_FILE if path.is_dir() else path
    if not path.is_file():
        raise ValueError(f"--recipe {recipe}: neither a preset ({', '.join(PRESETS)}) nor a recipe file")
    try:
        sections = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ValueError(f"--recipe {path}: not YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(sections, dict):
        raise ValueError(f"--recipe {path}: a recipe is a mapping of sections ({', '.join(SECTIONS)})")
    return sections


def flattened(sections: dict, source: str) -> dict:
    """The sections' settings as one {field: value}, every key checked against its section."""
    out = {}
    for name, values in sections.items():
        if name not in SECTIONS:
            raise ValueError(f"recipe {source}: unknown section {name!r}; sections: {', '.join(SECTIONS)}")
        known = [f.name for f in settings_of(SECTIONS[name])]
        for key, value in (values or {}).items():
            if key not in known:
                raise ValueError(f"recipe {source}: {name}.{key} is no setting; {name}'s: {', '.join(known)}")
            out[key] = value
    return out


def with_recipe(recipe: str, given: dict) -> dict:
    """The settings of a run: the recipe's, overridden by `given` (explicit flags or keywords); a preset's
    allocation dropped where the resulting pattern stays uniform per layer (N:M), and its pricing windows no more
    than the run's windows."""
    settings = recipe_settings(recipe)
    merged = {**settings, **given}
    if recipe not in PRESETS:
        return merged
    if ":" in str(merged.get("pattern", "per-row")):
        for f in settings_of(AllocationSpec):
            if f.name not in given:
                merged.pop(f.name, None)
    if "allocation_windows" in merged and "allocation_windows" not in given:   # never more than the run has
        nsamples = merged.get("nsamples", CalibrationSpec().nsamples)
        merged["allocation_windows"] = min(merged["allocation_windows"], nsamples)
    return merged


def recipe_of(config: PruneConfig) -> dict:
    """The recipe a config ran: its sections' settings that matter in this run and change the result (no
    paths, caches or placement)."""
    kept = {f.name for f in fields(PruneConfig) if f.metadata.get("fingerprint") is not False}
    specs = config.specs()
    return {name: {k: v for k, v in specs[name].items() if k in kept} for name in SECTIONS if specs.get(name)}


def write_recipe(config: PruneConfig, folder: Path) -> None:
    (Path(folder) / RECIPE_FILE).write_text(yaml.safe_dump(recipe_of(config), sort_keys=False), encoding="utf-8")
