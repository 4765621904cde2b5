"""Progress lines for long runs: one line per block with the elapsed time and an estimate of what
remains, the same in a terminal and in a log file (no carriage returns, flushed at once).

    prune sparseswaps: block 3/30 (8.1 s); elapsed 25 s, about 3 min 39 s left
"""
from __future__ import annotations

import sys
import time


def clock(seconds: float) -> str:
    """12 s, 3 min 05 s, 1 h 02 min."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class BlockProgress:
    """`update(b)` after block b (0-based; `update()`: the next block) prints
    `label: block k/n (block seconds); elapsed, about T left`, T = mean seconds per block this process has
    run x blocks left, so a resumed run counts from its first unsaved block; `note(text)` prints a line within a block
    (e.g. the reconstruction's epochs).  Silent when `enabled` is False (ranks other than 0); `then()` runs
    after the last block (e.g. the next pass's `restart`)."""

    def __init__(self, label: str, total: int, stream=None, enabled: bool = True, then=None, unit: str = "block",
                 every: int = 1):
        self.label, self.total, self.done, self.enabled, self.then = label, total, 0, enabled, then
        self.unit, self.every = unit, max(1, every)      # a line every `every` steps (and at the last)
        self.ran = 0           # blocks this process has run (a resumed run starts past its saved blocks)
        self.stream = stream or sys.stderr
        self.restart()

    def restart(self) -> None:
        """Count elapsed time from now (a pass that ran before the first block is not this one's)."""
        self.start = self.last = time.perf_counter()

    def update(self, block: int | None = None, *_) -> None:
        now = time.perf_counter()
        self.done = self.done + 1 if block is None else block + 1
        self.ran += 1
        left = (now - self.start) / self.ran * (self.total - self.done)
        if self.done % self.every == 0 or self.done == self.total:
            step = f"{now - self.last:.1f} s" + ("" if self.every == 1 else f" for {self.every}")
            self._say(f"{self.unit} {self.done}/{self.total} ({step}); elapsed {clock(now - self.start)}"
                      + (f", about {clock(left)} left" if self.done < self.total else ", done"))
            self.last = now
        if self.done == self.total and self.then is not None:
            self.then()

    def note(self, text: str) -> None:
        self._say(f"{self.unit} {self.done + 1}/{self.total}: {text}")

    def _say(self, text: str) -> None:
        if self.enabled:
            print(f"{self.label}: {text}", file=self.stream, flush=True)
