"""`optprune dump-layers`: chosen blocks' layer problems, as the pipeline sees them, to a safetensors file."""
from __future__ import annotations

import dataclasses

from ..adapters import adapter_for
from ..api import calibration_for, check_blocks, dense_layer_problems, pruned_layer_problems
from ..checkpoints import check_model_argument, check_writable_file, load_model
from ..config import CalibrationSpec, PlacementSpec, PruneConfig, resolve_dtype
from ..data import check_text_source
from ..problem import save_layer_problems
from ..settings import from_args


@dataclasses.dataclass(frozen=True)
class DumpSpec(PlacementSpec, CalibrationSpec):
    """What the dense model's layer problems depend on: calibration and placement."""


def dump_layers_main(args) -> int:
    """`optprune dump-layers`: every check first, then one walk up to the last wanted block."""
    try:
        blocks = sorted({int(b) for b in args.blocks.split(",") if b.strip()})
    except ValueError:
        raise ValueError(f"--blocks {args.blocks!r}: give block indices like 0,14,29") from None
    if args.target == "dense" and not args.method:
        raise ValueError("--target dense needs --method: the dense target differs from the dense model's problem "
                         "only once earlier blocks are pruned")
    config = from_args(PruneConfig if args.method else DumpSpec, args)
    if not str(args.out).endswith(".safetensors"):
        raise ValueError(f"--out {args.out}: name a .safetensors file")
    check_writable_file(args.out, "--out")
    check_text_source(config.calib, config.data_dir)
    check_model_argument(args.model, args.gguf_file)
    net, tok, source = load_model(args.model, args.gguf_file, resolve_dtype(config.dtype), config.seqlen,
                                  check_skeleton=lambda skeleton: check_blocks(skeleton, adapter_for(skeleton), blocks))
    windows = calibration_for(net, tok, adapter_for(net), config)
    problems = (pruned_layer_problems(net, windows, blocks, config) if args.method else
                dense_layer_problems(net, windows, blocks, config.device, config.batch))
    save_layer_problems(problems, args.out, dict(model=source, blocks=blocks, calib=config.calib,
                                                 nsamples=config.nsamples, seqlen=config.seqlen, seed=config.seed,
                                                 method=args.method or "none (dense model)", target=args.target))
    print(f"wrote {len(problems)} layer problems of blocks {blocks} to {args.out}")
    return 0
