"""The model card of a pruned checkpoint: `README.md` with the Hub's YAML front matter, written from the run's
report (`optprune_report.json`), whose figures are measured from the saved weights.

Front matter: `base_model` (the source's hub id, when it has one), `library_name: transformers`, `tags`
(`pruned`, `optprune`, the method and pattern), and with a measured perplexity a `model-index` entry.
Body: what was done (method and options, pattern, sparsity measured from the weights, per-layer range,
calibration, objective, allocation), the command, the perplexity, how to load it, the optprune version."""
from __future__ import annotations

from pathlib import Path

import yaml

CARD = "README.md"
from .embedded import DEFAULT, EMBEDDED, embedded_hub_id
from .model_io import DEFAULT_PACKAGE

DEFAULT_HUB_ID = EMBEDDED[DEFAULT].hub_id      # the embedded default model's origin


def base_model(source: str) -> str | None:
    """The hub id a checkpoint was pruned from: the source itself when it reads as one (org/name, not a local
    path), the embedded SmolLM2's origin for the default, else None (a local folder has no hub id)."""
    if source.startswith(DEFAULT_PACKAGE.split("==")[0]) or embedded_hub_id(source):
        return embedded_hub_id(source) or DEFAULT_HUB_ID
    parts = source.split("/")
    if len(parts) == 2 and all(parts) and not Path(source).exists() and not source.startswith("."):
        return source
    return None


def front_matter(summary: dict, name: str) -> dict:
    """The card's YAML block (Hub model-card metadata) from the run's report."""
    tags = ["pruned", "optprune", "sparsity", summary["method"], summary["pattern"].split(":")[0]]
    meta = {"library_name": "transformers", "tags": list(dict.fromkeys(tags)), "pipeline_tag": "text-generation"}
    base = base_model(summary.get("model", ""))
    if base:
        meta = {"base_model": base, **meta}
    ppl = (summary.get("wikitext2") or {}).get("ppl")
    if ppl is not None:
        meta["model-index"] = [{"name": name, "results": [{
            "task": {"type": "text-generation", "name": "Language modelling"},
            "dataset": {"name": "WikiText-2 (raw, test)", "type": "wikitext", "config": "wikitext-2-raw-v1",
                        "split": "test"},
            "metrics": [{"type": "perplexity", "value": round(float(ppl), 4),
                         "name": f"perplexity ({summary['wikitext2']['seqlen']}-token windows)"}]}]}]
    return meta


def facts(summary: dict) -> list[str]:
    """The table rows of what was done, each from the report."""
    layers = summary.get("layer_sparsity") or {}
    spread = (f"{min(layers.values()):.4f} .. {max(layers.values()):.4f} over {len(layers)} layers"
              if layers else "-")
    options = ", ".join(f"{k}={v}" for k, v in (summary.get("method_options") or {}).items()) or "defaults"
    settings = summary.get("settings", {})
    rows = [("method", f"{summary['method']} ({options})"), ("pattern", summary["pattern"]),
            ("sparsity, measured from the saved weights", f"{summary['achieved_sparsity']:.4f}"),
            ("per-layer sparsity", spread),
            ("calibration", f"{summary.get('nsamples')} windows x {summary.get('seqlen')} tokens of "
                            f"{summary.get('calib')} (seed {summary.get('seed')})" if summary.get("calibrated", True)
             else "none (data-free)"),
            ("objective", ", ".join(f"{k}={v}" for k, v in settings.get("objective", {}).items()) or "-"),
            ("allocation", (summary.get("allocation") or {}).get("kind", "uniform")),
            ("prune time", f"{summary['prune_seconds']:.0f} s on {summary.get('machine')}"),
            ("optprune", summary.get("optprune", "-"))]
    ppl = summary.get("wikitext2")
    if ppl:
        rows.insert(4, ("WikiText-2 perplexity", f"{ppl['ppl']:.4f} ({ppl['windows']} windows of {ppl['seqlen']})"))
    return [f"| {k} | {v} |" for k, v in rows]


LOADERS = {"transformers": ["from transformers import AutoModelForCausalLM",
                            "model = AutoModelForCausalLM.from_pretrained(\"<this folder>\")"],
           "transformers (trust_remote_code=True)": [
               "from transformers import AutoModelForCausalLM",
               "model = AutoModelForCausalLM.from_pretrained(\"<this folder>\", trust_remote_code=True)"],
           "optprune": ["import optprune", "model, tokenizer = optprune.load_pretrained(\"<this folder>\")"]}


def loading(checkpoint: dict) -> str:
    """Which runtimes load the saved weights, from what `save_checkpoint` wrote."""
    if checkpoint.get("loader", "transformers") == "transformers":
        return ("The weights are a plain transformers checkpoint of the base architecture (zeros stored as zeros; "
                "structured pruning: smaller matrices) with no `quantization_config`, so transformers, vLLM and "
                "llama.cpp's converter load it as they load the base model.")
    if checkpoint.get("loader") == "transformers (trust_remote_code=True)":
        return (f"The weights are a plain transformers checkpoint, but {checkpoint.get('why', '')}: transformers loads "
                "it with `trust_remote_code=True` (below), optprune's loader too. vLLM's own model classes and "
                "llama.cpp assume one width for every block; vLLM's Transformers modeling backend (`--model-impl "
                "transformers --trust-remote-code`) is the only route there, not verified by optprune.")
    return (f"The weights are stored as {checkpoint.get('format')}: {checkpoint.get('why', '')}; load them with "
            "`optprune.load_pretrained` (below), which rebuilds the model; other runtimes cannot read this format.")


def model_card(summary: dict, name: str) -> str:
    """The whole README.md: YAML front matter, then Markdown."""
    body = [f"# {name}", "",
            f"{base_model(summary.get('model', '')) or summary.get('model', 'A model')} pruned by optprune with "
            f"{summary['method']} to the "
            f"{summary['pattern']} pattern.", "", loading(summary.get("checkpoint") or {}), "",
            "| | |", "|---|---|", *facts(summary), ""]
    if summary.get("command"):
        body += ["Command:", "", "```", summary["command"], "```", ""]
    body += ["```python", *LOADERS[(summary.get("checkpoint") or {}).get("loader", "transformers")], "```", "",
             "Every figure above is in `optprune_report.json`, with each layer's error, sparsity and seconds.", ""]
    return "---\n" + yaml.safe_dump(front_matter(summary, name), sort_keys=False) + "---\n\n" + "\n".join(body)


def read_card(path: str | Path) -> tuple[dict, str]:
    """(front matter, Markdown body) of a model card; ValueError when it has no YAML front matter."""
    text = Path(path).read_text(encoding="utf-8")
    if not text.startswith("---\n") or "\n---\n" not in text[4:]:
        raise ValueError(f"{path}: no YAML front matter")
    head, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(head), body
