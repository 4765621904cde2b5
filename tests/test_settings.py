"""Settings declared once: the specs' fields drive the CLI flags, the checks, the fingerprint, the report
and the API's keywords, so none of them can disagree with another."""
import argparse
from dataclasses import dataclass

import pytest
import torch

from optprune.commands import build_parser
from optprune.config import SPECS, PruneConfig, placement_note, resolve_dtype
from optprune.settings import (Spec, add_arguments, default_of, described, flag_of, from_args, prefixed, setting,
                               settings_of)


@dataclass(frozen=True)
class ToySpec(Spec):
    """Toy: one of each kind of setting."""
    count: int = setting(3, "how many", check=lambda v: None if v >= 1 else "must be >= 1")
    rate: float = setting(0.5, "a rate")
    name: str = setting("a", "a name", applies=lambda s: s.count > 1)
    folder: str = setting("", "a path", fingerprint=False)
    items: tuple = setting((), "repeatable", flag="--item", repeat=True, parse=tuple)
    hidden: bool | None = setting(None, "no flag", flag=None)


def test_one_field_gives_flag_default_type_and_check():
    parser = argparse.ArgumentParser()
    add_arguments(parser, ToySpec)
    args = parser.parse_args(["--count", "5", "--rate", "2", "--item", "x", "--item", "y"])
    spec = from_args(ToySpec, args)
    assert (spec.count, spec.rate, spec.items, spec.hidden) == (5, 2.0, ("x", "y"), None)
    assert isinstance(spec.rate, float)
    assert "--hidden" not in parser.format_help()
    with pytest.raises(ValueError, match="count must be >= 1, got 0"):
        ToySpec(count=0)
    with pytest.raises(ValueError, match="rate must be float, got 'fast'"):
        ToySpec(rate="fast")
    with pytest.raises(ValueError, match="count must be int, got True"):
        ToySpec(count=True)


def test_the_fingerprint_leaves_out_paths_and_settings_that_do_not_apply():
    assert described(ToySpec(count=1), result_only=True) == {"count": 1, "rate": 0.5, "items": [], "hidden": None}
    assert described(ToySpec(count=2), result_only=True)["name"] == "a"
    assert "folder" in described(ToySpec()) and "folder" not in described(ToySpec(), result_only=True)


def test_every_prune_flag_is_a_field_with_its_default_and_every_field_reaches_the_parser():
    parser = build_parser()
    prune = parser._subparsers._group_actions[0].choices["prune"]
    dests = {a.dest: a for a in prune._actions}
    for spec in SPECS:
        for f in settings_of(spec):
            if flag_of(f) is None:
                continue
            assert f.name in dests, f.name
            default = dests[f.name].default
            assert default == ([] if f.metadata["repeat"] else default_of(f)), f.name
    args = parser.parse_args(["prune", "--out", "x"])
    assert from_args(PruneConfig, args) == PruneConfig()


def test_the_api_keywords_are_the_fields_and_the_report_groups_them_by_spec():
    config = PruneConfig(method="sparsegpt", reconstruct="block", reconstruct_epochs=3)
    specs = config.specs()
    assert list(specs) == ["calibration", "method", "objective", "allocation", "placement"]
    assert specs["objective"]["reconstruct_epochs"] == 3 and "target_ridge" not in specs["objective"]
    assert prefixed(config, "reconstruct_")["epochs"] == 3
    with pytest.raises(TypeError):
        PruneConfig(no_such_setting=1)


def test_commands_share_one_declaration_of_a_setting():
    parser = build_parser()
    choices = parser._subparsers._group_actions[0].choices
    for flag in ("--nsamples", "--seqlen", "--seed", "--calib"):
        defaults = {name: next(a.default for a in sub._actions if flag in a.option_strings)
                    for name, sub in choices.items() if any(flag in a.option_strings for a in sub._actions)}
        assert len(set(defaults.values())) == 1, (flag, defaults)


def test_a_new_setting_reaches_the_code_that_uses_it_through_its_prefix():
    from optprune.adapters import ADAPTERS
    from optprune.api import reconstruction_for

    config = PruneConfig(method="sparsegpt", reconstruct="block", reconstruct_holdout=0.5)
    assert reconstruction_for(config, ADAPTERS["llama"]).holdout == 0.5
    assert config.result_settings()["reconstruct_holdout"] == 0.5
    assert "reconstruct_holdout" not in PruneConfig(method="sparsegpt").result_settings()
    with pytest.raises(ValueError, match=r"reconstruct_holdout must lie in \[0, 1\), got 1.0"):
        PruneConfig(reconstruct="block", reconstruct_holdout=1)


def _numeric_options():
    from optprune.config import method_parameters
    from optprune.solvers import METHODS
    return [(m, name, p.default) for m in METHODS for name, p in method_parameters(m).items()
            if isinstance(p.default, (int, float)) and not isinstance(p.default, bool)]


def test_every_numeric_option_of_every_method_has_a_range_its_default_meets():
    from optprune.config import OPTION_RANGES

    for method, name, default in _numeric_options():
        assert name in OPTION_RANGES, f"{method} option {name} has no declared range"
        assert OPTION_RANGES[name][0](default), f"{method} option {name}: default {default} out of its own range"


BAD_VALUES = {"blocksize": 0, "percdamp": 0.0, "iters": 0, "max_iter": -1, "bound_every": 0, "steps": 0, "inner": 0,
              "ramp": -1, "candidates": 0, "warm_fraction": 1.5, "track": -0.1, "rho0": 0.0, "rho": -1.0,
              "growth": 0.5}


@pytest.mark.parametrize("method,name,default", _numeric_options())
def test_an_option_out_of_its_range_is_one_line_naming_it(method, name, default):
    from optprune.config import PruneConfig

    bad = BAD_VALUES[name]
    pattern = "structured" if method == "spap" else "per-row"
    with pytest.raises(ValueError, match=f"{method} option {name}={bad!r}: must be"):
        PruneConfig(method=method, pattern=pattern, sparsity=0.25, method_options={name: bad})


@pytest.mark.parametrize("amx, avx512_bf16, expected", [(True, False, torch.bfloat16), (False, True, torch.bfloat16),
                                                        (False, False, torch.float32)])
def test_auto_dtype_is_bf16_only_on_a_cpu_that_multiplies_it_natively(monkeypatch, amx, avx512_bf16, expected):
    """Emulated bf16 is 2.8x slower than float32 a forward pass (docs/results/cpu_dtype_emulated-bf16.md): auto
    picks it only where the CPU has AMX tiles or AVX512-BF16; the fingerprint records what was picked."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    assert resolve_dtype("auto") == expected and resolve_dtype("float32") == torch.float32
    assert described(PruneConfig(method="wanda"), result_only=True)["dtype"] == str(expected)


@pytest.mark.parametrize("native", [True, False])
def test_bf16_asked_for_on_a_cpu_that_emulates_it_says_so(monkeypatch, native):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    note = placement_note(torch.bfloat16, torch.device("cpu"))
    assert note.startswith("bfloat16 forward passes on cpu") and ("emulates bf16" in note) is not native
    assert "emulates" not in placement_note(torch.float32, torch.device("cpu"))


def test_every_command_help_renders_a_percent_sign_in_a_setting_help():
    subcommands = build_parser()._subparsers._group_actions[0].choices
    helps = {name: sub.format_help() for name, sub in subcommands.items()}      # argparse's % formatting raises
    assert "45% cheaper" in helps["prune"]
