"""Zero-shot accuracy through lm-evaluation-harness: `HFLM` wraps the model already in memory.

Offline, each task reads the local files of the data folder (the same items the built-in scorer
reads): they are rewritten in the schema of the harness's own dataset, and a task file that
`include`s the harness's own YAML (its prompt, choices, target and metrics unchanged) points
`dataset_path: json` at them (the one task table, `tasks.py`).  With no local files and a reachable hub,
the harness's tasks run by name on its own datasets.
"""
from __future__ import annotations

import importlib.util
import json
import tempfile
from pathlib import Path

from ..data import find_data_dir
from .tasks import TASKS


def harness_available() -> bool:
    return importlib.util.find_spec("lm_eval") is not None


def write_local_tasks(tasks: list[str], root: Path, folder: Path) -> None:
    """For each task: its local items as <task>.jsonl and <task>.yaml including the harness's YAML."""
    import lm_eval
    import yaml

    harness_tasks = Path(lm_eval.__file__).parent / "tasks"
    for task in tasks:
        data = folder / f"{task}.jsonl"
        data.write_text("".join(json.dumps(d) + "\n" for d in TASKS[task].docs(root)), encoding="utf-8")
        spec = dict(include=str(harness_tasks / TASKS[task].harness_yaml), task=task, tag=None, dataset_path="json",
                    dataset_name=None, dataset_kwargs={"data_files": {"test": str(data)}},
                    training_split=None, validation_split=None, test_split="test", **TASKS[task].overrides)
        (folder / f"{task}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")


def evaluate_harness(net, tok, tasks: list[str], data_dir: str = "", limit: int = 0, batch_size: int = 16,
                     add_bos: bool = False) -> dict:
    """{task: {acc, acc_norm, n}} from lm_eval.simple_evaluate on HFLM(net), local files when found; add_bos
    (families that want BOS first, Gemma) makes the harness encode every request with it, else the
    tokenizer's own default holds."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    if getattr(tok, "eos_token_id", None) is None:
        raise ValueError("lm-evaluation-harness needs a tokenizer with an EOS token: use --zeroshot-scorer builtin")
    root = find_data_dir(data_dir)
    lm = HFLM(pretrained=net, tokenizer=tok, batch_size=batch_size, add_bos_token=True if add_bos else None)
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
