"""Resume state of a run: each finished block's weights and the report so far, in one folder.

An interrupted run restarts at the first unfinished block (earlier blocks are loaded, their
outputs recomputed).  Structured-pruned blocks are shrunk to the saved widths before loading."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..adapters import ModelAdapter, shrink_to_state


class ResumeState:
    """folder=None: an in-memory run that writes nothing (nothing to resume from)."""

    def __init__(self, folder: str | Path | None, adapter: ModelAdapter, resume: bool = True):
        self.folder = Path(folder) if folder is not None else None
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
        self.adapter = adapter
        self.report_path = self.folder / "report.json" if self.folder is not None else None
        self.resume = resume

    def block_path(self, b: int) -> Path:
        return self.folder / f"block{b:03d}.pt"

    def load(self, net) -> tuple[int, dict]:
        """Load the saved blocks 0, 1, ... in order; (how many, the report restricted to them)."""
        resume = self.resume and self.folder is not None
        report = json.loads(self.report_path.read_text()) if resume and self.report_path.exists() else {}
        blocks = self.adapter.blocks(net)
        done = 0
        while resume and done < len(blocks) and self.block_path(done).exists():
            state = torch.load(self.block_path(done))
            shrink_to_state(blocks[done], self.adapter, state)
            blocks[done].load_state_dict(state)
            done += 1
        report["layers"] = [r for r in report.get("layers", []) if r["block"] < done]
        for key in ("block_seconds", "breakdown"):
            report[key] = {k: v for k, v in report.get(key, {}).items() if int(k) < done}
        return done, report

    @property
    def spill_dir(self) -> Path | None:
        return self.folder / "acts" if self.folder is not None else None

    def save(self, b: int, block, report: dict) -> None:
        if self.folder is None:
            return
        torch.save(block.state_dict(), self.block_path(b))
        self.report_path.write_text(json.dumps(report))

    def map_block(self, b: int, block) -> None:
        """Re-point a finished block's parameters to a memory map of its saved state."""
        if self.folder is not None and self.block_path(b).exists():
            block.to("cpu")
            block.load_state_dict(torch.load(self.block_path(b), mmap=True), assign=True)
