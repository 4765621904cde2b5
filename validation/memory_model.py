"""Print the per-block memory model of docs/memory.md from model shapes.

fp16 weights and activations, fp32 Grams (q/k/v and gate/up shared), 128 x 2048 calibration tokens.
Usage: python validation/memory_model.py
"""
MODELS = {  # hidden, MLP width, blocks, query heads, kv heads, head dim
    "LLaMA-2-7B": (4096, 11008, 32, 32, 32, 128),
    "LLaMA-2-13B": (5120, 13824, 40, 40, 40, 128),
    "LLaMA-3-70B": (8192, 28672, 80, 64, 8, 128),
    "LLaMA-3.1-405B": (16384, 53248, 126, 128, 8, 128),
}


def block_memory(h, f, qh, kvh, hd, nsamples=128, seqlen=2048, batch=8):
    params = h * qh * hd * 2 + h * kvh * hd * 2 + 3 * h * f
    gib = 2 ** 30
    weights = params * 2 / gib
    grams = (3 * h * h + f * f) * 4 / gib
    solver = (4 * h * f + 2 * f * f) * 4 / gib
    forward = batch * seqlen * f * 2 * 3 / gib
    acts = nsamples * seqlen * h * 2 / gib
    return params, weights, grams, solver, forward, weights + grams + solver + forward, acts


if __name__ == "__main__":
    print("| model | blocks | params / block | weights GiB | Grams GiB | solver GiB | forward GiB | "
          "**accelerator GiB / block** | activations GiB (CPU or disk) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, (h, f, n, qh, kvh, hd) in MODELS.items():
        p, w, g, s, fw, total, a = block_memory(h, f, qh, kvh, hd)
        print(f"| {name} | {n} | {p / 1e6:.0f}M | {w:.2f} | {g:.2f} | {s:.2f} | {fw:.2f} | **{total:.1f}** | {a:.1f} × 2 |")
