"""Built-in zero-shot multiple-choice scorer (lm-eval-harness prompts), reading local files.

For each item: context c and choices a_k; score_k = sum log p(a_k | c) over the
continuation tokens.  acc = [argmax score_k = gold]; acc_norm divides score_k by the
choice's length in characters without the space that joins it to the context (lm-eval's acc_norm).  Winogrande uses partial
scoring: the option fills the blank in the context, the continuation is the rest.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from ..data import find_data_dir


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _arc(path):
    for d in _jsonl(path):
        ch = d["question"]["choices"]
        labels = [c["label"] for c in ch]
        yield f"Question: {d['question']['stem']}\nAnswer:", [" " + c["text"] for c in ch], labels.index(d["answerKey"])


def _piqa(root):
    labels = (root / "valid-labels.lst").read_text().split()
    for d, y in zip(_jsonl(root / "valid.jsonl"), labels):
        yield f"Question: {d['goal']}\nAnswer:", [" " + d["sol1"], " " + d["sol2"]], int(y)


def _boolq(root):
    for d in _jsonl(root / "val.jsonl"):
        yield f"{d['passage']}\nQuestion: {d['question']}?\nAnswer:", [" no", " yes"], int(d["label"] in ("true", True))


def _rte(root):
    for d in _jsonl(root / "val.jsonl"):
        yield (f"{d['premise']}\nQuestion: {d['hypothesis']} True or False?\nAnswer:", [" True", " False"],
               0 if d["label"] == "entailment" else 1)


def _obqa(root):
    for d in _jsonl(root / "test.jsonl"):
        yield d["question_stem"], [" " + t for t in d["choices"]["text"]], "ABCD".index(d["answerKey"])


def _winogrande(root):
    for d in _jsonl(root / "dev.jsonl"):
        pre, post = d["sentence"].split("_", 1)
        yield [pre + d["option1"], pre + d["option2"]], " " + post.strip(), int(d["answer"]) - 1


def _hellaswag(root):
    for d in _jsonl(root / "olmes_val_subsample1000.jsonl"):
        yield d["query"], [" " + e for e in d["choices"]], int(d["gold"])


TASKS = {
    "arc_easy": lambda r: _arc(r / "arc_easy" / "ARC-Easy-Test.jsonl"),
    "arc_challenge": lambda r: _arc(r / "arc_challenge" / "ARC-Challenge-Test.jsonl"),
    "piqa": lambda r: _piqa(r / "piqa"),
    "boolq": lambda r: _boolq(r / "boolq"),
    "rte": lambda r: _rte(r / "rte"),
    "openbookqa": lambda r: _obqa(r / "openbookqa"),
    "winogrande": lambda r: _winogrande(r / "winogrande"),
    "hellaswag": lambda r: _hellaswag(r / "hellaswag"),
}


@torch.no_grad()
def continuation_logprob(net, tok, context: str, continuation: str) -> float:
    device = next(net.parameters()).device
    ctx = tok(context, add_special_tokens=False).input_ids
    cont = tok(continuation, add_special_tokens=False).input_ids
    ids = torch.tensor([ctx + cont], device=device)
    logp = F.log_softmax(net(ids).logits[0, len(ctx) - 1:-1].float(), -1)
    return float(logp.gather(1, ids[0, len(ctx):, None]).sum())


def evaluate_tasks(net, tok, tasks: list[str], data_dir: str = "", limit: int = 0) -> dict:
    root = find_data_dir(data_dir)
    if root is None:
        raise FileNotFoundError("zero-shot tasks need a local data folder (--data-dir)")
    results = {}
    for task in tasks:
        if task not in TASKS:
            raise ValueError(f"unknown zero-shot task {task!r}; choose from {sorted(TASKS)}")
        n = correct = correct_norm = 0
        for ctx, choices, gold in TASKS[task](root):
            if isinstance(ctx, list):       # winogrande: choices are contexts, one continuation
                scores = [continuation_logprob(net, tok, c, choices) for c in ctx]
                lengths = [len(choices)] * len(ctx)
            else:
                scores = [continuation_logprob(net, tok, ctx, a) for a in choices]
                lengths = [len(a) - a.startswith(" ") for a in choices]   # lm-eval: the choice without its delimiter
            correct += int(max(range(len(scores)), key=scores.__getitem__) == gold)
            norm = [s / max(n_, 1) for s, n_ in zip(scores, lengths)]
            correct_norm += int(max(range(len(norm)), key=norm.__getitem__) == gold)
            n += 1
            if limit and n >= limit:
                break
        results[task] = {"acc": correct / max(n, 1), "acc_norm": correct_norm / max(n, 1), "n": n}
    return results
