"""`optprune eval`: perplexity and zero-shot accuracy of a saved model."""
from __future__ import annotations

import json
from pathlib import Path

from ..checkpoints import check_model_argument, check_writable_file, load_model
from ..config import CalibrationSpec, PlacementSpec, resolve_device, resolve_dtype
from ..data import check_text_source
from ..evaluation import check_zeroshot, evaluate_zeroshot, wikitext2_perplexity
from ..parallel import machine_name
from ..settings import from_args


def eval_main(args) -> int:
    window, place = from_args(CalibrationSpec, args), from_args(PlacementSpec, args)
    dtype = resolve_dtype(place.dtype)
    if args.json:
        check_writable_file(args.json, "--json")
    if args.ppl not in ("", "wikitext2"):
        raise ValueError(f"--ppl {args.ppl}: the perplexity set is wikitext2 (or \"\" for none)")
    if args.ppl:
        check_text_source("wikitext2", window.data_dir, test=True)
    if args.limit < 0 or args.max_windows < 0:
        raise ValueError("--limit and --max-windows must be >= 0")
    tasks = [t for t in args.zeroshot.split(",") if t]
    if tasks:
        check_zeroshot(tasks, window.data_dir, args.zeroshot_scorer)
    check_model_argument(args.model, args.gguf_file)
    net, tok, source = load_model(args.model, args.gguf_file, dtype, window.seqlen if args.ppl else 0)
    result = dict(model=source, machine=machine_name(), dtype=str(dtype))
    if args.ppl:
        result["wikitext2"] = wikitext2_perplexity(net, tok, window.seqlen, window.data_dir, args.max_windows,
                                                 place.device)
        print(f"wikitext2 ppl {result['wikitext2']['ppl']:.3f} over {result['wikitext2']['windows']} windows")
    if args.zeroshot:
        net.to(resolve_device(place.device))
        result["zeroshot"] = evaluate_zeroshot(net, tok, tasks, window.data_dir, args.limit, args.zeroshot_scorer)
        print(f"zero-shot scorer: {result['zeroshot']['scorer']}")
        for task, acc in result["zeroshot"]["tasks"].items():
            norm = "" if acc["acc_norm"] is None else f" acc_norm {acc['acc_norm']:.4f}"
            print(f"{task}: acc {acc['acc']:.4f}{norm} (n={acc['n']})")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0
