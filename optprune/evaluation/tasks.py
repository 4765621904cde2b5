"""The zero-shot tasks: one table, read once from the local data folder, scored two ways.

Each task's local files are read into the schema of lm-evaluation-harness's own dataset (`docs`);
the harness runs its own YAML on them (`harness.py`), and optprune's built-in scorer turns each
doc into the harness's prompt, choices and gold answer (`prompt`, scored in `zeroshot.py`)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@dataclass(frozen=True)
class Task:
    """harness_yaml: the harness's YAML under lm_eval/tasks; docs(data folder): the local items in the
    harness's schema; prompt(doc): (context, choices, gold) as the harness states them (Winogrande:
    (contexts, continuation, gold), the option filling the blank); overrides: keys of the YAML replaced."""
    harness_yaml: str
    docs: Callable[[Path], list[dict]]
    prompt: Callable[[dict], tuple]
    overrides: dict = field(default_factory=dict)


def _arc_docs(path: Path) -> list[dict]:
    return [{"question": d["question"]["stem"], "answerKey": d["answerKey"],
             "choices": {"text": [c["text"] for c in d["question"]["choices"]],
                         "label": [c["label"] for c in d["question"]["choices"]]}} for d in read_jsonl(path)]


def _arc_prompt(d: dict) -> tuple:
    return (f"Question: {d['question']}\nAnswer:", [" " + t for t in d["choices"]["text"]],
            d["choices"]["label"].index(d["answerKey"]))


def _piqa_docs(root: Path) -> list[dict]:
    labels = (root / "valid-labels.lst").read_text().split()
    return [dict(goal=d["goal"], sol1=d["sol1"], sol2=d["sol2"], label=int(y))
            for d, y in zip(read_jsonl(root / "valid.jsonl"), labels)]


def _boolq_docs(root: Path) -> list[dict]:
    return [dict(passage=d["passage"], question=d["question"], label=int(d["label"] in ("true", True)))
            for d in read_jsonl(root / "val.jsonl")]


def _rte_docs(root: Path) -> list[dict]:
    return [dict(sentence1=d["premise"], sentence2=d["hypothesis"], label=0 if d["label"] == "entailment" else 1)
            for d in read_jsonl(root / "val.jsonl")]


def _hellaswag_docs(root: Path) -> list[dict]:
    return [dict(query=d["query"], choices=d["choices"], label=int(d["gold"]))
            for d in read_jsonl(root / "olmes_val_subsample1000.jsonl")]


def _winogrande_prompt(d: dict) -> tuple:
    pre, post = d["sentence"].split("_", 1)
    return [pre + d["option1"], pre + d["option2"]], " " + post.strip(), int(d["answer"]) - 1


TASKS: dict[str, Task] = {
    "arc_easy": Task("arc/arc_easy.yaml", lambda r: _arc_docs(r / "arc_easy" / "ARC-Easy-Test.jsonl"), _arc_prompt),
    "arc_challenge": Task("arc/arc_challenge.yaml", lambda r: _arc_docs(r / "arc_challenge" / "ARC-Challenge-Test.jsonl"),
                          _arc_prompt),
    "piqa": Task("piqa/piqa.yaml", lambda r: _piqa_docs(r / "piqa"),
                 lambda d: (f"Question: {d['goal']}\nAnswer:", [" " + d["sol1"], " " + d["sol2"]], d["label"])),
    "boolq": Task("super_glue/boolq/default.yaml", lambda r: _boolq_docs(r / "boolq"),
                  lambda d: (f"{d['passage']}\nQuestion: {d['question']}?\nAnswer:", [" no", " yes"], d["label"])),
    "rte": Task("glue/rte/default.yaml", lambda r: _rte_docs(r / "rte"),
                lambda d: (f"{d['sentence1']}\nQuestion: {d['sentence2']} True or False?\nAnswer:", [" True", " False"],
                           d["label"])),
    "openbookqa": Task("openbookqa/openbookqa.yaml", lambda r: read_jsonl(r / "openbookqa" / "test.jsonl"),
                       lambda d: (d["question_stem"], [" " + t for t in d["choices"]["text"]],
                                  "ABCD".index(d["answerKey"]))),
    "winogrande": Task("winogrande/default.yaml", lambda r: read_jsonl(r / "winogrande" / "dev.jsonl"),
                       _winogrande_prompt),
    "hellaswag": Task("hellaswag/hellaswag.yaml", lambda r: _hellaswag_docs(r / "hellaswag"),
                      lambda d: (d["query"], [" " + e for e in d["choices"]], d["label"]), {"process_docs": None}),
}


def check_tasks(tasks: list[str]) -> None:
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown zero-shot task {unknown[0]!r}; choose from {', '.join(sorted(TASKS))}")
