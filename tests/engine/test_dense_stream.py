"""The engine's dense stream: paired statistics, within-block sequential stages, block reconstruction."""
import copy

import pytest
import torch

from optprune.adapters import adapter_for
from optprune.api import pruner_for, reconstruction_for, run_pruning
from optprune.config import PruneConfig
from optprune.engine import BlockReconstruction, DenseTargetGrams, Engine, ResumeState


def _config(**settings):
    return PruneConfig(**dict(dict(method="sparsegpt", pattern="per-row", sparsity=0.5, dtype="float32", device="cpu"),
                              **settings))


def _inputs_of(block, name, run):
    """The inputs the linear `name` of `block` receives during run() (flattened to tokens x d)."""
    seen = []
    hook = block.get_submodule(name).register_forward_hook(lambda m, i, o: seen.append(i[0].reshape(-1, i[0].shape[-1])))
    try:
        run()
    finally:
        hook.remove()
    return torch.cat(seen)


def _block_zero(tiny_net, batch: int):
    """(adapter, engine, captured calls, block 0, a dense copy of it)."""
    net, _, windows = tiny_net
    adapter = adapter_for(net)
    engine = Engine(net, adapter, batch=batch)
    block = adapter.blocks(net)[0]
    return adapter, engine, engine.capture(windows), block, copy.deepcopy(block)


def _pruned_block_zero(tiny_net):
    """(adapter, engine, calls, block 0 with half of each linear's weights zeroed, its dense outputs, start state)."""
    adapter, engine, calls, block, dense = _block_zero(tiny_net, batch=2)
    targets = engine.propagate(dense, 0, calls, calls.inputs, calls.inputs.like())
    with torch.no_grad():
        for lin in adapter.targets(block).values():
            lin.weight.mul_(lin.weight.abs() > lin.weight.abs().median())
    return adapter, engine, calls, block, targets, copy.deepcopy(block.state_dict())


def _gram_of(block, name, engine, calls):
    """X^T X of the inputs `name` receives when `block` (block 0) runs on the captured windows."""
    X = _inputs_of(block, name, lambda: engine.propagate(block, 0, calls, calls.inputs))
    return X.T @ X


def test_dense_target_statistics_pair_the_two_streams_token_by_token(tiny_net):
    adapter, engine, calls, block, dense = _block_zero(tiny_net, batch=3)
    with torch.no_grad():
        block.self_attn.q_proj.weight[:, ::2] = 0          # the "pruned" block differs from the dense copy
        block.mlp.up_proj.weight[::3] = 0
    drifted = calls.inputs.like()
    drifted.data.copy_(calls.inputs.data + 0.1 * torch.randn(calls.inputs.data.shape))
    grams, _, _ = engine.grams(block, 0, calls, drifted, dense=(dense, calls.inputs))
    for name in ("self_attn.q_proj", "mlp.down_proj"):
        X = _inputs_of(dense, name, lambda: engine.propagate(dense, 0, calls, calls.inputs))
        X_hat = _inputs_of(block, name, lambda: engine.propagate(block, 0, calls, drifted))
        stats = grams[name]
        assert isinstance(stats, DenseTargetGrams)
        for got, want in ((stats.G, X_hat.T @ X_hat), (stats.cross, X.T @ X_hat), (stats.target, X.T @ X)):
            assert torch.allclose(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max())), name
    assert grams["self_attn.k_proj"] is grams["self_attn.q_proj"]


def test_sequential_stages_see_the_earlier_groups_pruned(tiny_net):
    """The step is called once per input group, in order; o_proj's Gram is taken after q/k/v were pruned."""
    net, _, windows = tiny_net
    adapter = adapter_for(net)
    pruner = pruner_for(net, _config(sequential=True), adapter)
    probe = Engine(net, adapter, batch=2)
    probe_calls = probe.capture(windows)
    dense_gram = _gram_of(adapter.blocks(net)[0], "self_attn.o_proj", probe, probe_calls)
    calls_seen, o_grams = [], {}

    def step(b, block, grams):
        calls_seen.append((b, tuple(sorted(grams))))
        if b == 0 and "self_attn.o_proj" in grams:
            o_grams["seen"] = grams["self_attn.o_proj"].clone()
            o_grams["direct"] = _gram_of(block, "self_attn.o_proj", probe, probe_calls)
        return pruner(b, block, grams)

    Engine(net, adapter, batch=2, sequential=True).run(windows, step, ResumeState(None, adapter))
    groups = [tuple(sorted(g)) for g in adapter.gram_groups]
    assert calls_seen == [(b, g) for b in range(2) for g in groups]
    assert torch.allclose(o_grams["seen"], o_grams["direct"], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(o_grams["seen"], dense_gram, rtol=1e-3)    # q/k/v were pruned before it


def test_reconstruction_never_increases_the_block_error_and_keeps_the_masks(tiny_net):
    adapter, engine, calls, block, targets, _ = _pruned_block_zero(tiny_net)
    zeros = {n: lin.weight == 0 for n, lin in adapter.targets(block).items()}
    args = (block, calls.inputs, targets, calls.args[0], calls.kwargs[0], torch.device("cpu"))
    report = BlockReconstruction(adapter.targets, epochs=3, lr=1e-3)(*args)
    assert report["error_after"]["held_out"] < report["error_before"]["held_out"]
    assert report["held_out_windows"] == 1 and report["train_windows"] == 3
    assert report["error_before"]["train"] is None and report["error_after"]["all"] is not None
    held = [e["held_out"] for e in report["epochs"]]          # the kept epoch: the lowest held-out error
    assert len(held) == 3 and report["error_after"]["held_out"] == min(held) == held[report["kept_epoch"] - 1]
    for n, lin in adapter.targets(block).items():
        assert bool((lin.weight[zeros[n]] == 0).all()), n
    before = {k: v.clone() for k, v in block.state_dict().items()}
    wild = BlockReconstruction(adapter.targets, epochs=1, lr=10.0)(*args)     # diverges: the block is kept
    assert wild["kept_epoch"] is None and wild["error_after"] == wild["error_before"]
    for k, v in block.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_reconstruction_measures_the_error_before_training_on_the_held_out_windows_only(tiny_net):
    """Forward passes of the block: the error before training on the held-out window, per epoch 3 training
    steps (one window each) and the held-out window, the kept epoch's error on all 4 windows; with no window
    held out the error before training is measured on every window and decides alone."""
    adapter, engine, calls, block, targets, start = _pruned_block_zero(tiny_net)
    calls_made = []
    hook = block.register_forward_hook(lambda m, i, o: calls_made.append(i[0].shape[0]))
    try:
        args = (block, calls.inputs, targets, calls.args[0], calls.kwargs[0], torch.device("cpu"))
        report = BlockReconstruction(adapter.targets, epochs=2, lr=1e-3, batch=1)(*args)
        assert report["kept_epoch"] is not None and len(calls_made) == 1 + 2 * (3 + 1) + 4
        block.load_state_dict(start)
        calls_made.clear()
        alone = BlockReconstruction(adapter.targets, epochs=2, lr=1e-3, batch=1, holdout=0.0, windows=1)(*args)
    finally:
        hook.remove()
    assert (alone["train_windows"], alone["held_out_windows"]) == (1, 0)
    assert alone["error_before"]["train"] == alone["error_before"]["all"] is not None
    assert len(calls_made) == 1 + 2 * (1 + 1) + 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bf16-autocast"])
def test_reconstruction_on_the_first_windows_reads_no_other_window(tiny_net, dtype):
    """`windows=2` fits on window 0 and stops on window 1: the other windows' inputs and targets may be anything;
    under autocast too (a bf16 block) the masks hold and the error never rises."""
    tiny_net[0].to(dtype)
    adapter, engine, calls, block, targets, start = _pruned_block_zero(tiny_net)
    zeros = {n: lin.weight == 0 for n, lin in adapter.targets(block).items()}
    step = BlockReconstruction(adapter.targets, epochs=2, lr=1e-3, windows=2, autocast=True)
    report = step(block, calls.inputs, targets, calls.args[0], calls.kwargs[0], torch.device("cpu"))
    fitted = copy.deepcopy(block.state_dict())
    assert report["autocast"] == (dtype == torch.bfloat16)
    assert (report["train_windows"], report["held_out_windows"]) == (1, 1) and len(calls.inputs.data) > 2
    assert report["error_after"]["held_out"] <= report["error_before"]["held_out"]
    assert report["kept_epoch"] is not None and any(not torch.equal(fitted[k], start[k]) for k in start)
    for n, lin in adapter.targets(block).items():
        assert bool((lin.weight[zeros[n]] == 0).all()), n
    block.load_state_dict(start)
    calls.inputs.data[2:].normal_()
    targets.data[2:].normal_()
    again = step(block, calls.inputs, targets, calls.args[0], calls.kwargs[0], torch.device("cpu"))
    assert again["error_after"] == report["error_after"]
    for k, v in block.state_dict().items():
        assert torch.equal(v, fitted[k]), k


def test_autocast_leaves_a_float32_block_in_float32(tiny_net):
    """A float32 block (float32 forward passes: `--dtype auto` on a CPU without native bf16) trains in float32
    whatever `autocast` says: the same weights bit for bit as without it, and the report says so."""
    adapter, engine, calls, block, targets, start = _pruned_block_zero(tiny_net)
    fitted = []
    for autocast in (True, False):
        block.load_state_dict(start)
        step = BlockReconstruction(adapter.targets, epochs=2, lr=1e-3, windows=2, autocast=autocast)
        report = step(block, calls.inputs, targets, calls.args[0], calls.kwargs[0], torch.device("cpu"))
        assert report["autocast"] is False and report["kept_epoch"] is not None
        fitted.append(copy.deepcopy(block.state_dict()))
    assert all(torch.equal(fitted[0][k], fitted[1][k]) for k in start)
    assert any(not torch.equal(fitted[0][k], start[k]) for k in start)


def test_reconstruction_on_the_first_windows_streams_only_those_through_the_dense_model(tiny_net, monkeypatch):
    """With reconstruct_windows=2 the dense stream runs 2 windows per block, and the pruned model is the one a
    full dense stream gives."""
    import optprune.api as api

    net, _, windows = tiny_net
    config = _config(reconstruct="block", reconstruct_epochs=1, reconstruct_windows=2)
    streamed = []

    class Spy(Engine):
        def propagate(self, block, b, calls, inps, outs=None, lead=None, count=0):
            streamed.append(count)
            return super().propagate(block, b, calls, inps, outs, lead, count)

    class FullStream(Engine):
        def __post_init__(self):
            super().__post_init__()
            self.dense_windows = 0

    a, b = copy.deepcopy(net), copy.deepcopy(net)
    monkeypatch.setattr(api, "Engine", Spy)
    run_pruning(a, windows, config, adapter_for(a))
    monkeypatch.setattr(api, "Engine", FullStream)
    run_pruning(b, windows, config, adapter_for(b))
    assert len(windows) > 2 and streamed.count(2) == len(adapter_for(a).blocks(a))
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k


@pytest.mark.parametrize("settings", [dict(target="dense"), dict(target="dense", sequential=True),
                                      dict(method="admm", reconstruct="block", reconstruct_epochs=1)],
                         ids=["dense", "dense+sequential", "admm+reconstruct"])
def test_the_pipeline_resumes_a_dense_stream_run_bit_for_bit(tiny, tiny_net, tmp_path, settings):
    from optprune.checkpoints.model_io import load_model

    net, _, windows = tiny_net
    config = _config(**settings)
    report = run_pruning(net, windows, config, adapter_for(net), tmp_path / "state")
    reference = {k: v.clone() for k, v in net.state_dict().items()}
    assert all(abs(r["sparsity"] - 0.5) < 1e-9 for r in report["layers"])
    assert ("reconstruction" in report) == (config.reconstruct == "block")
    (tmp_path / "state" / "block001.pt").unlink()          # as if killed during block 1
    net2, _, _ = load_model(str(tiny[0]), dtype=torch.float32)
    run_pruning(net2, windows, config, adapter_for(net2), tmp_path / "state")
    for k, v in net2.state_dict().items():
        assert torch.equal(v, reference[k]), k


def test_the_dense_target_changes_what_the_later_layers_solve(tiny_net):
    """Block 0's first group (q/k/v) sees the same inputs in both streams; after it the dense target is
    another problem (it implies within-block sequential, so it is compared with a sequential run)."""
    net, _, windows = tiny_net
    a, b = copy.deepcopy(net), copy.deepcopy(net)
    ra = run_pruning(a, windows, _config(sequential=True), adapter_for(a))
    rb = run_pruning(b, windows, _config(target="dense"), adapter_for(b))
    first = [r["rel_error"] for r in ra["layers"][:3]]
    assert [r["layer"] for r in rb["layers"][:3]] == ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"]
    assert [r["rel_error"] for r in rb["layers"][:3]] == pytest.approx(first, rel=1e-3)
    assert rb["layers"][3]["rel_error"] != pytest.approx(ra["layers"][3]["rel_error"], rel=0.1)
    wa, wb = adapter_for(a).blocks(a)[1].mlp.down_proj.weight, adapter_for(b).blocks(b)[1].mlp.down_proj.weight
    assert not torch.allclose(wa, wb)


def test_the_dense_walk_runs_each_block_once_and_calibrates_it_on_the_dense_outputs(tiny_net):
    """each_dense_block: block 1's Gram is that of the dense block 0's outputs, and every block forwards each
    window once (the calibrating forward carries the stream on)."""
    net, _, windows = tiny_net
    adapter = adapter_for(net)
    engine = Engine(net, adapter, batch=2)
    blocks = adapter.blocks(net)
    calls = engine.capture(windows)
    after_zero = engine.forward_block(blocks[0], 0, calls, calls.inputs.data)
    X = _inputs_of(blocks[1], "mlp.up_proj", lambda: engine.forward_block(blocks[1], 1, calls, after_zero))
    runs, seen = [0] * len(blocks), {}
    hooks = [blk.register_forward_hook(lambda m, i, o, b=b: runs.__setitem__(b, runs[b] + 1))
             for b, blk in enumerate(blocks)]
    try:
        engine.each_dense_block(windows, lambda b, block, grams: seen.__setitem__(b, grams["mlp.up_proj"]))
    finally:
        for h in hooks:
            h.remove()
    assert runs == [-(-len(windows) // 2)] * len(blocks)
    assert torch.allclose(seen[1], X.T @ X, rtol=1e-4, atol=1e-4 * float((X.T @ X).abs().max()))


def test_reconstruction_reads_its_final_check_from_the_outputs_it_carries_on(tiny_net):
    """carry=(propagate, store): the same block is kept as without it, the store holds that block's outputs for
    every window and the final error is read from them; a diverging fit is not carried (the caller propagates)."""
    adapter, engine, calls, block, targets, start = _pruned_block_zero(tiny_net)
    args = (block, calls.inputs, targets, calls.args[0], calls.kwargs[0], torch.device("cpu"))
    plain = BlockReconstruction(adapter.targets, epochs=2, lr=1e-3)(*args)
    fitted = copy.deepcopy(block.state_dict())
    block.load_state_dict(start)
    store = calls.inputs.like()
    carried = BlockReconstruction(adapter.targets, epochs=2, lr=1e-3)(
        *args, carry=(lambda: engine.propagate(block, 0, calls, calls.inputs, store), store))
    assert carried["carried"] and not plain["carried"] and carried["kept_epoch"] == plain["kept_epoch"]
    for k, v in block.state_dict().items():
        assert torch.equal(v, fitted[k]), k
    assert torch.equal(store.data, engine.propagate(block, 0, calls, calls.inputs, calls.inputs.like()).data)
    assert carried["error_after"]["all"] == pytest.approx(plain["error_after"]["all"], rel=1e-5)
    block.load_state_dict(start)
    wild = BlockReconstruction(adapter.targets, epochs=1, lr=10.0)(
        *args, carry=(lambda: engine.propagate(block, 0, calls, calls.inputs, store), store))
    assert not wild["carried"] and wild["kept_epoch"] is None
    for k, v in block.state_dict().items():
        assert torch.equal(v, start[k]), k


def test_reconstruction_schedule_and_batch_come_from_the_settings():
    """reconstruct_batch and reconstruct_schedule reach the reconstruction; cosine starts at the full step and
    falls towards 0 over all epochs' steps; constant stays."""
    from optprune.adapters import ModelAdapter

    step = reconstruction_for(_config(reconstruct="block", reconstruct_batch=1, reconstruct_schedule="cosine",
                                      reconstruct_epochs=2), ModelAdapter.__new__(ModelAdapter))
    assert (step.batch, step.schedule, step.epochs) == (1, "cosine", 2)
    factors = [step.scale(t, split=4) for t in range(8)]            # 2 epochs x 4 steps of one window
    assert factors[0] == 1.0 and all(a > b for a, b in zip(factors, factors[1:])) and 0 < factors[-1] < 0.05
    assert BlockReconstruction(None).scale(5, split=4) == 1.0
    with pytest.raises(ValueError, match="reconstruct_schedule"):
        _config(reconstruct="block", reconstruct_schedule="linear")


def test_reconstruction_fits_q_k_v_in_the_first_qkv_epochs_only(tiny_net):
    """reconstruct_qkv_epochs=1 of 2: q/k/v end as one epoch of the full fit leaves them (the same steps, then
    frozen) while o and the MLP go on moving; 0: q/k/v never move.  The masks hold either way."""
    adapter, engine, calls, block, targets, start = _pruned_block_zero(tiny_net)
    qkv = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")
    args = (block, calls.inputs, targets, calls.args[0], calls.kwargs[0], torch.device("cpu"))

    def fitted(**options):
        block.load_state_dict(start)
        step = reconstruction_for(_config(reconstruct="block", reconstruct_lr=1e-3, reconstruct_holdout=0.0,
                                          **options), adapter)
        report = step(*args)
        assert report["kept_epoch"] == options["reconstruct_epochs"], report["epochs"]
        return {n: lin.weight.detach().clone() for n, lin in adapter.targets(block).items()}
    one = fitted(reconstruct_epochs=1)
    two = fitted(reconstruct_epochs=2)
    split = fitted(reconstruct_epochs=2, reconstruct_qkv_epochs=1)
    frozen = fitted(reconstruct_epochs=2, reconstruct_qkv_epochs=0)
    for name in qkv:
        assert torch.equal(split[name], one[name]) and not torch.equal(two[name], one[name]), name
        assert torch.equal(frozen[name], start[f"{name}.weight"]), name
    for name in ("self_attn.o_proj", "mlp.down_proj"):
        assert not torch.equal(split[name], one[name]) and not torch.equal(frozen[name], start[f"{name}.weight"])
    for weights in (split, frozen):
        for name, w in weights.items():
            assert bool((w[start[f"{name}.weight"] == 0] == 0).all()), name


def test_reconstruct_qkv_epochs_needs_an_adapter_that_names_the_attention(tiny_net):
    from dataclasses import replace

    adapter = replace(adapter_for(tiny_net[0]), attention=None)
    with pytest.raises(ValueError, match="--reconstruct-qkv-epochs: the llama adapter does not name"):
        reconstruction_for(_config(reconstruct="block", reconstruct_qkv_epochs=0), adapter)
    assert reconstruction_for(_config(reconstruct="block"), adapter).attention_inputs == ()


@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_a_reconstruction_step_large_for_the_weights_is_warned_of_before_any_pass(tiny_net, scale, monkeypatch):
    """The absolute step 1e-3 is 5% of the tiny net's weights (RMS 0.02): warned of once, naming the relative
    step, before any calibration pass; with weights 30x larger, or a relative step, or no reconstruction: not."""
    import warnings

    from optprune.api import large_step_warning

    net = copy.deepcopy(tiny_net[0])
    adapter = adapter_for(net)
    with torch.no_grad():
        for lin in adapter.targets(adapter.blocks(net)[0]).values():
            lin.weight.mul_(scale)
    line = large_step_warning(net, adapter, _config(reconstruct="block", reconstruct_lr=1e-3))
    assert (line is None) == (scale > 1) and (line is None or "--reconstruct-step relative" in line)
    assert large_step_warning(net, adapter, _config(reconstruct="block", reconstruct_step="relative")) is None
    assert large_step_warning(net, adapter, _config(reconstruct="none")) is None
    calls = []

    def no_pass(*_, **__):
        calls.append(len(caught))
        raise RuntimeError("no pass")
    monkeypatch.setattr(Engine, "run", no_pass)
    with warnings.catch_warnings(record=True) as caught, pytest.raises(RuntimeError, match="no pass"):
        warnings.simplefilter("always")
        run_pruning(net, tiny_net[2], _config(reconstruct="block", reconstruct_lr=1e-3), adapter)
    said = [str(w.message) for w in caught if "of the RMS of this model's weights" in str(w.message)]
    assert len(said) == int(scale == 1.0) and calls == [len(caught)]       # warned before the engine ran


def test_the_token_and_channel_losses_weigh_each_position_or_channel_by_its_dense_output(tiny_net):
    """loss 'token': the measured error is the mean over positions of ||e_t||^2 / ||y_t||^2, so a position whose
    target is 30x the others' (as a BOS's) counts as one position; 'channel': the mean over channels of
    sum e_c^2 / sum y_c^2, so a channel 30x the others' (as Gemma-3's massive one) counts as one channel; in
    'mse', ||E||^2 / ||Y||^2, either rules.  The setting reaches the reconstruction."""
    adapter, engine, calls, block, targets, _ = _pruned_block_zero(tiny_net)
    out = engine.propagate(block, 0, calls, calls.inputs, calls.inputs.like()).data.float()
    args = (block, calls.inputs, targets, calls.args[0], calls.kwargs[0], torch.device("cpu"))
    n = len(calls.inputs)
    step = {loss: reconstruction_for(_config(reconstruct="block", reconstruct_loss=loss), adapter)
            for loss in ("mse", "token", "channel")}
    assert [s.loss for s in step.values()] == list(step)
    for scaled in (lambda y: y[:, 0], lambda y: y[..., 0]):             # position 0, then channel 0, x 30
        original = targets.data.clone()
        scaled(targets.data).mul_(30.0)
        y = targets.data.float().clone()
        err = {loss: s.errors(*args, split=n)[0] for loss, s in step.items()}
        targets.data.copy_(original)
        assert err["token"] == pytest.approx(float((((out - y) ** 2).sum(-1) / (y ** 2).sum(-1)).mean()), rel=1e-5)
        assert err["channel"] == pytest.approx(float((((out - y) ** 2).sum((0, 1)) / (y ** 2).sum((0, 1))).mean()),
                                               rel=1e-5)
        assert err["mse"] == pytest.approx(float(((out - y) ** 2).sum() / (y ** 2).sum()), rel=1e-5)
        assert err["mse"] > 0.5, err                                        # the scaled slice rules the mse
    with pytest.raises(ValueError, match="reconstruct_loss"):
        _config(reconstruct="block", reconstruct_loss="l1")


@pytest.mark.parametrize("relative", [False, True])
def test_the_first_adam_step_moves_each_kept_weight_by_the_step_size(relative):
    """Adam's first step moves every kept weight with a gradient by its step size: lr, or with a relative step
    lr x the RMS of the linear's kept weights (two linears 10x apart in scale, steps 10x apart); pruned ones
    stay 0.  The setting reaches the reconstruction."""
    from optprune.engine.reconstruct import stepping_in_backward

    torch.manual_seed(0)
    linears = {"a": torch.nn.Linear(6, 4, bias=False), "b": torch.nn.Linear(6, 4, bias=False)}
    with torch.no_grad():
        linears["b"].weight.mul_(10.0)
        for lin in linears.values():
            lin.weight[:, :3] = 0.0
    start = {n: lin.weight.detach().clone() for n, lin in linears.items()}
    hooks = stepping_in_backward(linears, start, [1e-3], relative=relative)
    x = torch.randn(5, 6)
    (linears["a"](x).sum() + linears["b"](x).pow(2).sum()).backward()
    for hook in hooks:
        hook.remove()
    for n, lin in linears.items():
        kept = start[n] != 0
        rms = float(start[n][kept].pow(2).mean().sqrt())
        moved = (lin.weight.detach() - start[n]).abs()
        assert torch.allclose(moved[kept], torch.full_like(moved[kept], 1e-3 * (rms if relative else 1.0)),
                              rtol=1e-3), n
        assert bool((lin.weight[~kept] == 0).all()), n
    from optprune.adapters import ModelAdapter

    step = reconstruction_for(_config(reconstruct="block", reconstruct_step="relative"),
                              ModelAdapter.__new__(ModelAdapter))
    assert step.step == "relative"
