"""Zero-shot accuracy: lm-evaluation-harness when chosen or installed (`harness.py`), else the built-in
multiple-choice scorer here; both read the tasks of `tasks.py` (lm-eval-harness prompts) from local files.

Built-in scorer:

For each item: context c and choices a_k; score_k = sum log p(a_k | c) over the
continuation tokens (c preceded by BOS in families whose windows start with it, Gemma: as the perplexity's
windows, and as the harness is told).  acc = [argmax score_k = gold]; acc_norm divides score_k by the
choice's length in characters without the space that joins it to the context (lm-eval's acc_norm).  Winogrande uses partial
scoring: the option fills the blank in the context, the continuation is the rest.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data import find_data_dir, hub_reachable
from .harness import evaluate_harness, harness_available
from .tasks import TASKS, check_tasks

SCORERS = ("auto", "harness", "builtin")


def family_bos_id(net, tok) -> int | None:
    """The BOS id the model's family puts at the start of every sequence (Gemma), else None."""
    from ..adapters import adapter_for
    from ..data import window_bos_id

    return window_bos_id(adapter_for(net), tok, net.config)


@torch.no_grad()
def continuation_logprob(net, tok, context: str, continuation: str, bos_id: int | None = None) -> float:
    """sum log p(continuation | [BOS] context) over the continuation's tokens."""
    device = next(net.parameters()).device
    ctx = ([] if bos_id is None else [bos_id]) + tok(context, add_special_tokens=False).input_ids
    cont = tok(continuation, add_special_tokens=False).input_ids
    ids = torch.tensor([ctx + cont], device=device)
    logp = F.log_softmax(net(ids).logits[0, len(ctx) - 1:-1].float(), -1)
    return float(logp.gather(1, ids[0, len(ctx):, None]).sum())


def evaluate_tasks(net, tok, tasks: list[str], data_dir: str = "", limit: int = 0) -> dict:
    root = find_data_dir(data_dir)
    if root is None:
        raise FileNotFoundError("zero-shot tasks need a local data folder (--data-dir)")
    check_tasks(tasks)
    results, bos_id = {}, family_bos_id(net, tok)
    for task in tasks:
        n = correct = correct_norm = 0
        for ctx, choices, gold in map(TASKS[task].prompt, TASKS[task].docs(root)):
            if isinstance(ctx, list):       # winogrande: choices are contexts, one continuation
                scores = [continuation_logprob(net, tok, c, choices, bos_id) for c in ctx]
                lengths = [len(choices)] * len(ctx)
            else:
                scores = [continuation_logprob(net, tok, ctx, a, bos_id) for a in choices]
                lengths = [len(a) - a.startswith(" ") for a in choices]   # lm-eval: the choice without its delimiter
            correct += int(max(range(len(scores)), key=scores.__getitem__) == gold)
            norm = [s / max(n_, 1) for s, n_ in zip(scores, lengths)]
            correct_norm += int(max(range(len(norm)), key=norm.__getitem__) == gold)
            n += 1
            if limit and n >= limit:
                break
        results[task] = {"acc": correct / max(n, 1), "acc_norm": correct_norm / max(n, 1), "n": n}
    return results


def check_zeroshot(tasks: list[str], data_dir: str, scorer: str) -> str:
    """The scorer that will run ('harness' or 'builtin'), or one line on what is missing."""
    if scorer not in SCORERS:
        raise ValueError(f"--zeroshot-scorer {scorer!r}: choose from {', '.join(SCORERS)}")
    check_tasks(tasks)
    use = "harness" if scorer == "harness" or (scorer == "auto" and harness_available()) else "builtin"
    if use == "harness" and not harness_available():
        raise ValueError("--zeroshot-scorer harness needs lm-evaluation-harness: pip install 'optprune[eval]'")
    if find_data_dir(data_dir) is None and (use == "builtin" or not hub_reachable()):
        raise FileNotFoundError("zero-shot tasks need a local data folder (--data-dir)"
                                + ("" if use == "builtin" else " or the Hugging Face hub"))
    return use


def evaluate_zeroshot(net, tok, tasks: list[str], data_dir: str = "", limit: int = 0, scorer: str = "auto") -> dict:
    """{"scorer": which ran, "tasks": {task: {acc, acc_norm, n}}}: the harness when chosen or
    installed (scorer 'auto'), else optprune's built-in scorer (`evaluate_tasks`)."""
    use = check_zeroshot(tasks, data_dir, scorer)
    if use == "harness":
        import lm_eval

        return {"scorer": f"lm-evaluation-harness {lm_eval.__version__} (HFLM on the model in memory)",
                "tasks": evaluate_harness(net, tok, tasks, data_dir, limit,
                                          add_bos=family_bos_id(net, tok) is not None)}
    return {"scorer": "optprune built-in scorer (lm-eval prompts, one forward per choice)",
            "tasks": evaluate_tasks(net, tok, tasks, data_dir, limit)}
