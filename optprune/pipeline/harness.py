"""Zero-shot accuracy through lm-evaluation-harness: `HFLM` wraps the model already in memory.

Offline, each task reads the local files of the data folder (the same items the built-in scorer
reads): they are rewritten in the schema of the harness's own dataset, and a task file that
`include`s the harness's own YAML (its prompt, choices, target and metrics unchanged) points
`dataset_path: json` at them.  With no local files and a reachable hub, the harness's tasks run by
name on its own datasets.  `evaluate_zeroshot` picks the harness when `lm_eval` is installed
(`optprune[eval]`), else the built-in scorer, and says which it used.
"""
from __future__ import annotations

import importlib.util
import json
import tempfile
from pathlib import Path

from ..data import find_data_dir, hub_reachable
from .zeroshot import _jsonl

SCORERS = ("auto", "harness", "builtin")


def _arc(path: Path) -> list[dict]:
    return [{"question": d["question"]["stem"], "answerKey": d["answerKey"],
             "choices": {"text": [c["text"] for c in d["question"]["choices"]],
                         "label": [c["label"] for c in d["question"]["choices"]]}} for d in _jsonl(path)]


def _piqa(root: Path) -> list[dict]:
    labels = (root / "valid-labels.lst").read_text().split()
    return [dict(goal=d["goal"], sol1=d["sol1"], sol2=d["sol2"], label=int(y))
            for d, y in zip(_jsonl(root / "valid.jsonl"), labels)]


def _boolq(root: Path) -> list[dict]:
    return [dict(passage=d["passage"], question=d["question"], label=int(d["label"] in ("true", True)))
            for d in _jsonl(root / "val.jsonl")]


def _rte(root: Path) -> list[dict]:
    return [dict(sentence1=d["premise"], sentence2=d["hypothesis"], label=0 if d["label"] == "entailment" else 1)
            for d in _jsonl(root / "val.jsonl")]


def _hellaswag(root: Path) -> list[dict]:
    return [dict(query=d["query"], choices=d["choices"], label=int(d["gold"]))
            for d in _jsonl(root / "olmes_val_subsample1000.jsonl")]


# task -> (the harness's YAML under lm_eval/tasks, local docs in the harness schema, overrides)
HARNESS_TASKS = {
    "arc_easy": ("arc/arc_easy.yaml", lambda r: _arc(r / "arc_easy" / "ARC-Easy-Test.jsonl"), {}),
    "arc_challenge": ("arc/arc_challenge.yaml", lambda r: _arc(r / "arc_challenge" / "ARC-Challenge-Test.jsonl"), {}),
    "piqa": ("piqa/piqa.yaml", lambda r: _piqa(r / "piqa"), {}),
    "boolq": ("super_glue/boolq/default.yaml", lambda r: _boolq(r / "boolq"), {}),
    "rte": ("glue/rte/default.yaml", lambda r: _rte(r / "rte"), {}),
    "openbookqa": ("openbookqa/openbookqa.yaml", lambda r: _jsonl(r / "openbookqa" / "test.jsonl"), {}),
    "winogrande": ("winogrande/default.yaml", lambda r: _jsonl(r / "winogrande" / "dev.jsonl"), {}),
    "hellaswag": ("hellaswag/hellaswag.yaml", lambda r: _hellaswag(r / "hellaswag"), {"process_docs": None}),
}


def harness_available() -> bool:
    return importlib.util.find_spec("lm_eval") is not None


def write_local_tasks(tasks: list[str], root: Path, folder: Path) -> None:
    """For each task: its local items as <task>.jsonl and <task>.yaml including the harness's YAML."""
    import lm_eval
    import yaml

    harness_tasks = Path(lm_eval.__file__).parent / "tasks"
    for task in tasks:
        source, docs, overrides = HARNESS_TASKS[task]
        data = folder / f"{task}.jsonl"
        data.write_text("".join(json.dumps(d) + "\n" for d in docs(root)), encoding="utf-8")
        spec = dict(include=str(harness_tasks / source), task=task, tag=None, dataset_path="json",
                    dataset_name=None, dataset_kwargs={"data_files": {"test": str(data)}},
                    training_split=None, validation_split=None, test_split="test", **overrides)
        (folder / f"{task}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")


def evaluate_harness(net, tok, tasks: list[str], data_dir: str = "", limit: int = 0, batch_size: int = 16) -> dict:
    """{task: {acc, acc_norm, n}} from lm_eval.simple_evaluate on HFLM(net), local files when found."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    if getattr(tok, "eos_token_id", None) is None:
        raise ValueError("lm-evaluation-harness needs a tokenizer with an EOS token: use --zeroshot-scorer builtin")
    root = find_data_dir(data_dir)
    lm = HFLM(pretrained=net, tokenizer=tok, batch_size=batch_size)
    with tempfile.TemporaryDirectory() as folder:
        if root is not None:
            write_local_tasks(tasks, root, Path(folder))
            manager = TaskManager(include_path=folder, include_defaults=False)
        else:
            manager = TaskManager()
        out = lm_eval.simple_evaluate(model=lm, tasks=tasks, task_manager=manager, limit=limit or None,
                                      log_samples=False, verbosity="WARNING")
    return {task: {"acc": r["acc,none"], "acc_norm": r.get("acc_norm,none"), "n": out["n-samples"][task]["effective"]}
            for task, r in out["results"].items()}


def check_zeroshot(tasks: list[str], data_dir: str, scorer: str) -> str:
    """The scorer that will run ('harness' or 'builtin'), or one line on what is missing."""
    if scorer not in SCORERS:
        raise ValueError(f"--zeroshot-scorer {scorer!r}: choose from {', '.join(SCORERS)}")
    unknown = [t for t in tasks if t not in HARNESS_TASKS]
    if unknown:
        raise ValueError(f"unknown zero-shot task {unknown[0]!r}; choose from {', '.join(sorted(HARNESS_TASKS))}")
    use = "harness" if scorer == "harness" or (scorer == "auto" and harness_available()) else "builtin"
    if use == "harness" and not harness_available():
        raise ValueError("--zeroshot-scorer harness needs lm-evaluation-harness: pip install 'optprune[eval]'")
    if find_data_dir(data_dir) is None and (use == "builtin" or not hub_reachable()):
        raise FileNotFoundError("zero-shot tasks need a local data folder (--data-dir)"
                                + ("" if use == "builtin" else " or the Hugging Face hub"))
    return use


def evaluate_zeroshot(net, tok, tasks: list[str], data_dir: str = "", limit: int = 0, scorer: str = "auto") -> dict:
    """{"scorer": which ran, "tasks": {task: {acc, acc_norm, n}}}: the harness when chosen or
    installed (scorer 'auto'), else optprune's built-in scorer (pipeline/zeroshot.py)."""
    use = check_zeroshot(tasks, data_dir, scorer)
    if use == "harness":
        import lm_eval

        return {"scorer": f"lm-evaluation-harness {lm_eval.__version__} (HFLM on the model in memory)",
                "tasks": evaluate_harness(net, tok, tasks, data_dir, limit)}
    from .zeroshot import evaluate_tasks

    return {"scorer": "optprune built-in scorer (lm-eval prompts, one forward per choice)",
            "tasks": evaluate_tasks(net, tok, tasks, data_dir, limit)}
