"""Benchmark: bf16 against float32 on this CPU, the figures behind `--dtype auto` (config.native_bf16).

Measures, on the embedded SmolLM2-135M and random tokens, each in both dtypes, median of REPS after one warm-up:
a linear's product (2048 x 576 by 576 x 1536, an MLP projection of one window), a forward pass of the whole
model over one 2048-token window, and one block reconstruction step (block 3, one window, forward and backward
with every linear fitted) in float32 and under bf16 autocast.  Writes docs/results/cpu_dtype_<tag>.{md,json},
tag `native-bf16` or `emulated-bf16` by what the CPU reports (AMX tiles or AVX512-BF16), so both kinds of host
keep their page.

    python validation/cpu_dtype.py [REPS]          # about 2 min on 2 threads
"""
from __future__ import annotations

import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from optprune.checkpoints.model_io import load_model
from optprune.config import native_bf16, resolve_dtype

OUT = Path(__file__).resolve().parent.parent / "docs" / "results"


def median_seconds(run, reps: int) -> float:
    run()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def product_gflops(dtype, reps: int) -> float:
    a, w = torch.randn(2048, 576).to(dtype), torch.randn(1536, 576).to(dtype)
    return 2 * 2048 * 576 * 1536 / median_seconds(lambda: torch.nn.functional.linear(a, w), reps) / 1e9


def model_forward_seconds(net, dtype, reps: int) -> float:
    ids = torch.randint(0, net.config.vocab_size, (1, 2048), generator=torch.Generator().manual_seed(0))
    net.to(dtype)
    with torch.no_grad():
        return median_seconds(lambda: net(ids), reps)


def reconstruction_step_seconds(net, autocast: bool, reps: int) -> float:
    """One Adam-free step: forward and backward of block 3 on one window, gradients on every linear."""
    net.float()
    block = net.model.layers[3]
    x = torch.randn(1, 2048, net.config.hidden_size, generator=torch.Generator().manual_seed(0))
    pos = torch.arange(2048)[None]
    kwargs = dict(position_embeddings=net.model.rotary_emb(x, pos), position_ids=pos, attention_mask=None)
    for p in block.parameters():
        p.requires_grad_(False)
    for m in block.modules():
        if isinstance(m, torch.nn.Linear):
            m.weight.requires_grad_(True)

    def step():
        with torch.enable_grad(), torch.autocast("cpu", torch.bfloat16, enabled=autocast):
            out = block(x, **kwargs)
            loss = ((out[0] if isinstance(out, tuple) else out).float() ** 2).mean()
        loss.backward()
        block.zero_grad(set_to_none=True)
    return median_seconds(step, reps)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(reps: int = 5) -> None:
    net = load_model(dtype=torch.float32)[0]
    native = native_bf16()
    row = dict(cpu=cpu_name(), threads=torch.get_num_threads(), torch=torch.__version__, native_bf16=native,
               amx=bool(torch.cpu._is_amx_tile_supported()), avx512_bf16=bool(torch.cpu._is_avx512_bf16_supported()),
               auto=str(resolve_dtype("auto")).removeprefix("torch."),
               product_gflops={d: product_gflops(getattr(torch, d), reps) for d in ("float32", "bfloat16")},
               forward_s={d: model_forward_seconds(net, getattr(torch, d), reps) for d in ("float32", "bfloat16")},
               step_s={k: reconstruction_step_seconds(net, k == "autocast", reps) for k in ("float32", "autocast")})
    tag = "native-bf16" if native else "emulated-bf16"
    (OUT / f"cpu_dtype_{tag}.json").write_text(json.dumps(row, indent=1) + "\n")
    (OUT / f"cpu_dtype_{tag}.md").write_text(page(row, reps))
    print(json.dumps(row))


def page(row: dict, reps: int) -> str:
    g, f, s = row["product_gflops"], row["forward_s"], row["step_s"]
    return "\n".join([
        f"# bf16 against float32 on a CPU {'with' if row['native_bf16'] else 'without'} native bf16", "",
        f"`python validation/cpu_dtype.py {reps}` on {row['cpu']}, {row['threads']} threads, torch {row['torch']}; "
        f"AMX tiles: {row['amx']}, AVX512-BF16: {row['avx512_bf16']}; `--dtype auto` resolves to "
        f"**{row['auto']}** here. Median of {reps} after a warm-up; SmolLM2-135M (the embedded model), random tokens.",
        "", "| measure | float32 | bf16 | bf16 / float32 time |", "|---|---|---|---|",
        f"| product 2048x576 by 576x1536 (GFLOP/s) | {g['float32']:.0f} | {g['bfloat16']:.0f} | "
        f"{g['float32'] / g['bfloat16']:.2f} |",
        f"| model forward, one 2048-token window (s) | {f['float32']:.2f} | {f['bfloat16']:.2f} | "
        f"{f['bfloat16'] / f['float32']:.2f} |",
        f"| reconstruction step, block 3, one window (s; bf16 = autocast) | {s['float32']:.3f} | "
        f"{s['autocast']:.3f} | {s['autocast'] / s['float32']:.2f} |", "",
        "Where the CPU multiplies bf16 natively, bf16 passes are the faster ones and `auto` picks them; where torch "
        "emulates bf16 they are the slower ones, so `auto` picks float32 and the reconstruction's autocast "
        "(which follows the forward dtype) is off.", ""])


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
