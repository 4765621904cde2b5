"""Recipes (issue 39 item 1): presets and YAML files expand to settings, explicit flags and keywords override
them, every output folder holds the recipe it ran (and reruns it bit-identically), a bad recipe is one line
before any model loads."""
import json

import pytest
import torch

from optprune.commands import main


def _prune(tiny, out, *extra):
    model_dir, data = tiny
    return main(["prune", "--model", str(model_dir), "--nsamples", "4", "--seqlen", "32", "--data-dir", str(data),
                 "--out", str(out), "--device", "cpu", "--dtype", "float32", *extra])


def test_presets_expand_and_explicit_settings_win():
    from optprune.recipes import with_recipe

    best = with_recipe("best", {})
    assert best["method"] == "sparsegpt" and best["reconstruct"] == "block"
    assert best["allocation"] == "milp" and best["allocation_cost"] == "sensitivity"
    assert with_recipe("best", {"method": "wanda"})["method"] == "wanda"
    two_four = with_recipe("best", {"pattern": "2:4"})              # N:M stays uniform: no allocation
    assert "allocation" not in two_four and two_four["reconstruct"] == "block"
    with pytest.raises(ValueError, match="2:4 stays uniform"):      # unless the user asks for it
        from optprune.config import PruneConfig
        PruneConfig(**with_recipe("best", {"pattern": "2:4", "allocation": "milp"}))


def test_the_cli_takes_a_recipe_and_flags_override_it_abbreviated_or_not(tiny, tmp_path):
    assert _prune(tiny, tmp_path / "fast", "--recipe", "fast") == 0
    assert json.loads((tmp_path / "fast" / "optprune_report.json").read_text())["method"] == "sparsegpt"
    assert _prune(tiny, tmp_path / "mine", "--recipe", "fast", "--method=wanda", "--spars", "0.3") == 0
    report = json.loads((tmp_path / "mine" / "optprune_report.json").read_text())
    assert report["method"] == "wanda" and report["achieved_sparsity"] == pytest.approx(0.3, abs=0.02)


def test_an_output_folder_holds_its_recipe_and_reruns_it_bit_identically(tiny, tmp_path):
    import yaml
    from safetensors.torch import load_file

    assert _prune(tiny, tmp_path / "a", "--method", "sparsegpt", "--reconstruct", "block", "--reconstruct-epochs",
                  "1", "--sparsity", "0.4", "--allocation", "owl") == 0
    recipe = yaml.safe_load((tmp_path / "a" / "recipe.yaml").read_text())
    assert recipe["method"]["method"] == "sparsegpt" and recipe["objective"]["reconstruct_epochs"] == 1
    assert recipe["allocation"]["allocation"] == "owl" and "data_dir" not in recipe["calibration"]
    assert _prune(tiny, tmp_path / "b", "--recipe", str(tmp_path / "a")) == 0       # the folder, or its file
    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


BAD_RECIPES = {
    "unknown key": ("method:\n  metod: wanda\n", "recipe {f}: method.metod is no setting; method's: method, "),
    "unknown section": ("placement:\n  device: cpu\n", "unknown section 'placement'; sections: calibration, method"),
    "wrong type": ("method:\n  sparsity: half\n", "sparsity"),
    "a pair the method refuses": ("method:\n  method: sparsegpt\n  pattern: structured\n", "sparsegpt handles"),
    "not YAML": ("method: [unclosed\n", "not YAML"),
    "not a mapping": ("- best\n", "a recipe is a mapping of sections"),
}


@pytest.mark.parametrize("case", list(BAD_RECIPES))
def test_a_bad_recipe_is_one_line_naming_it_before_the_model_loads(tiny, tmp_path, capsys, case):
    text, message = BAD_RECIPES[case]
    recipe = tmp_path / "r.yaml"
    recipe.write_text(text)
    assert _prune(tiny, tmp_path / "out", "--recipe", str(recipe)) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("optprune")]
    assert len(lines) == 1 and message.format(f=recipe) in lines[0] and "Loading weights" not in err, err
    assert not (tmp_path / "out").exists()


def test_an_unknown_preset_names_the_presets(tiny, tmp_path, capsys):
    assert _prune(tiny, tmp_path / "out", "--recipe", "quickest") == 2
    assert "--recipe quickest: neither a preset (fast, balanced, best) nor a recipe file" in capsys.readouterr().err


def test_the_api_takes_the_same_recipes(tiny_net):
    import copy

    import optprune

    net, _, windows = tiny_net
    report = optprune.prune(copy.deepcopy(net), windows, recipe="best", device="cpu", reconstruct_epochs=1)
    assert report["fingerprint"]["method"] == "sparsegpt" and report["fingerprint"]["reconstruct"] == "block"
    assert report["allocation"]["kind"] == "milp" and report["fingerprint"]["reconstruct_epochs"] == 1
    report = optprune.prune(copy.deepcopy(net), windows, "wanda", recipe="fast", device="cpu")
    assert report["fingerprint"]["method"] == "wanda"


@pytest.mark.parametrize("preset", ["balanced", "best"])
def test_the_presets_reconstruction_step_follows_the_weights_scale(tiny_net, preset):
    """The presets fit a channel-relative loss with each linear's step 1e-2 x its weights' RMS, so a family
    with small weights (Gemma-3's are 4-13x smaller than SmolLM2's) gets no step too large for it: on the tiny
    net (weights' RMS about 0.02) the earlier absolute 2e-3 is warned of, the preset is not."""
    from optprune.adapters import adapter_for
    from optprune.api import large_step_warning
    from optprune.config import PruneConfig
    from optprune.recipes import with_recipe

    net = tiny_net[0]
    adapter = adapter_for(net)
    settings = dict(with_recipe(preset, {}), device="cpu", dtype="float32")
    config = PruneConfig(**settings)
    assert (config.reconstruct_loss, config.reconstruct_step) == ("channel", "relative")
    assert large_step_warning(net, adapter, config) is None
    earlier = PruneConfig(**dict(settings, reconstruct_step="absolute", reconstruct_lr=2e-3))
    assert "--reconstruct-step relative" in large_step_warning(net, adapter, earlier)


def test_the_published_tables_method_names_keep_their_meaning_and_the_presets_have_one():
    """validation/pipeline_ppl.py's "+recon32" is the reconstruction the published SmolLM2 tables ran (mse loss,
    absolute step 2e-3), so their commands rerun them; "+recon32+chan+rel" and "+recon32+chan+rel+milpsens"
    are exactly the objective and allocation of `balanced` and `best` now."""
    import pipeline_ppl                                   # validation/ is on the path (conftest)

    from optprune.recipes import PRESETS

    earlier = pipeline_ppl.recipe("sparsegpt+recon32")
    assert (earlier["reconstruct_loss"], earlier["reconstruct_step"], earlier["reconstruct_lr"]) == \
        ("mse", "absolute", 2e-3)
    assert pipeline_ppl.recipe("sparsegpt+recon32+chan+rel") == PRESETS["balanced"]["objective"]
    best = PRESETS["best"]
    ingredients = pipeline_ppl.recipe("sparsegpt+recon32+chan+rel+milpsens")
    assert ingredients == {**best["objective"], "allocation": "milp", "allocation_cost": "sensitivity"}
