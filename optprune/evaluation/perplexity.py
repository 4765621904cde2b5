"""WikiText-2 perplexity of a model in memory (`optprune.evaluate`), with a progress bar per block."""
from __future__ import annotations

from ..adapters import adapter_for
from ..api import evaluate
from ..progress import BlockProgress


def wikitext2_perplexity(net, tok, seqlen: int, data_dir: str = "", max_windows: int = 0, device: str = "auto") -> dict:
    """The standard protocol's perplexity (non-overlapping windows of the whole test set, `max_windows`: the
    first ones only), streamed one block at a time through `device`."""
    bar = BlockProgress("wikitext2 ppl", len(adapter_for(net).blocks(net)))
    return evaluate(net, tok, "wikitext2", seqlen, data_dir=data_dir, max_windows=max_windows, device=device,
                    progress=bar.update, head_progress=head_bar)


def head_bar(windows: int):
    """The head's progress: a line for every tenth of the windows, with the time left."""
    return BlockProgress("wikitext2 ppl: head", windows, unit="window", every=max(1, windows // 10)).update
