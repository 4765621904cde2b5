"""Resume state of a run: each finished block's weights and the report so far, in one folder.

An interrupted run restarts at the first unfinished block (earlier blocks are loaded, their
outputs recomputed), so a rerun finishes bit-identical to an uninterrupted run.  The folder holds
the run's fingerprint (everything that changes the result: model, settings, calibration windows,
optprune version); a rerun with a different fingerprint is refused with the differences named.
Every file is written atomically (temporary file, then rename) and the report before the block,
so a kill at any point leaves a state that resumes.  Structured-pruned blocks are shrunk to the
saved widths before loading."""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import torch

from ..adapters import ModelAdapter, shrink_to_state
from ..parallel import world
from .pages import release_file_pages

FINGERPRINT = "fingerprint.json"


class StaleStateError(ValueError):
    """A resume state or output folder made by a different run."""


def atomic_write(path: Path, write) -> None:
    """write(tmp_path), then rename over `path`: a reader sees the old file or the whole new one.  A failed
    write is one OSError line (`write_failure`)."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with writing(path):
            write(tmp)
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


FULL_DISK = 64 * 2 ** 20      # less free than this after a failed write: the disk is full


@contextlib.contextmanager
def writing(path: Path):
    """What a writer raises when the file system fails it (torch.save's RuntimeError, safetensors'
    SafetensorError, an OSError) as one OSError naming the path, and saying so when the disk is full: libraries report a full disk as an
    iostream or zip-writer error without errno."""
    try:
        yield
    except Exception as exc:
        if isinstance(exc, (OSError, RuntimeError)) or type(exc).__name__ == "SafetensorError":
            raise write_failure(path, exc) from exc
        raise


def write_failure(path: Path, exc: BaseException) -> OSError:
    probe = Path(path).absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if free < FULL_DISK or getattr(exc, "errno", None) == errno.ENOSPC or "No space left" in str(exc):
        return OSError(errno.ENOSPC, f"no space left on the device of {path} ({free / 2 ** 20:.1f} MiB free): "
                                     "what was finished is kept; free some space and rerun the same command")
    return OSError(getattr(exc, "errno", None) or errno.EIO, f"could not write {path}: {reason}")


def tensor_digest(t: torch.Tensor, sample: int = 4096) -> str:
    """sha256 of a tensor's shape, dtype and up to `sample` evenly strided values (cheap at any size)."""
    flat = t.detach().reshape(-1)
    step = max(1, flat.numel() // sample)
    values = flat[::step][:sample].to("cpu", torch.float32).contiguous().numpy().tobytes()
    return hashlib.sha256(f"{tuple(t.shape)}{t.dtype}".encode() + values).hexdigest()


def windows_digest(windows: torch.Tensor) -> str:
    """sha256 of every token of the calibration windows (they are small; a sample would not do)."""
    return hashlib.sha256(windows.cpu().numpy().tobytes()).hexdigest()


def model_digest(net) -> dict:
    """The model's part of a fingerprint: its config and its weights' names, shapes and sampled values."""
    config = {k: v for k, v in net.config.to_dict().items()
              if k not in ("_name_or_path", "transformers_version", "use_cache", "dtype", "torch_dtype")}
    weights = hashlib.sha256()
    for name, p in net.state_dict().items():
        weights.update(name.encode() + tensor_digest(p).encode())
    return {"model_config": hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest(),
            "weights": weights.hexdigest()}


def fingerprint_differences(saved: dict, current: dict) -> list[str]:
    """'key: saved -> current' for every entry that differs."""
    keys = sorted(set(saved) | set(current))
    return [f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in keys if saved.get(k) != current.get(k)]


RESUME_FIX = "rerun with the same settings, or start over (--no-resume; resume=False in the Python API)"


def check_fingerprint(path: Path, current: dict, holder: str, fix: str = RESUME_FIX) -> None:
    """Refuse when the fingerprint saved at `path` differs from `current` (entries absent from `current`
    are not compared: the settings are checked before the model is loaded, the rest after)."""
    if not path.exists():
        raise StaleStateError(f"{holder} without a fingerprint: delete it, or start over (--no-resume; "
                              "resume=False in the Python API)")
    saved = json.loads(path.read_text())
    diff = fingerprint_differences({k: saved.get(k) for k in current}, current)
    if diff:
        raise StaleStateError(f"{holder} of a different run ({'; '.join(diff)}): {fix}")


class ResumeState:
    """folder=None: an in-memory run that writes nothing (nothing to resume from).  resume=False
    discards what the folder holds; otherwise a state of another fingerprint is refused.
    fingerprint=None: only read a finished state (a benchmark rebuilding a model), unchecked."""

    def __init__(self, folder: str | Path | None, adapter: ModelAdapter, resume: bool = True,
                 fingerprint: dict | None = None):
        self.folder = Path(folder) if folder is not None else None
        self.adapter, self.resume, self.fingerprint = adapter, resume, fingerprint
        self.started = time.perf_counter()
        self.previous_sessions: list[float] = []
        if self.folder is not None and fingerprint is not None:
            self._open()

    def _open(self) -> None:
        """Check (every rank) or discard (rank 0) what the folder holds; rank 0 writes the fingerprint."""
        holds_state = self.folder.is_dir() and any(self.folder.iterdir())
        if holds_state and self.resume:
            check_fingerprint(self.folder / FINGERPRINT, self.fingerprint, f"{self.folder} holds a resume state")
        if world()[0] != 0:
            return
        if holds_state and not self.resume:
            if not (self.folder / FINGERPRINT).exists():
                raise StaleStateError(f"{self.folder} is not an optprune resume state: refusing to delete it")
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write(self.folder / FINGERPRINT, lambda p: p.write_text(json.dumps(self.fingerprint, indent=1)))

    def remember(self, name: str, compute):
        """compute()'s JSON result, saved as `name` in the folder and read back by a resumed run of the same
        fingerprint instead of computed again (an allocation's pricing pass: minutes)."""
        path = self.folder / name if self.folder is not None else None
        if path is not None and self.resume and path.exists():
            return json.loads(path.read_text())
        value = compute()
        if path is not None and world()[0] == 0:
            atomic_write(path, lambda p: p.write_text(json.dumps(value)))
        return value

    @property
    def report_path(self) -> Path | None:
        return self.folder / "report.json" if self.folder is not None else None

    def block_path(self, b: int) -> Path:
        return self.folder / f"block{b:03d}.pt"

    def progress(self, net) -> tuple[int, dict]:
        """(how many blocks 0, 1, ... are saved, the report restricted to them); each is loaded by
        `restore` when the walk reaches it (after the walk copied the dense block, if it needs one)."""
        resume = self.resume and self.folder is not None
        report = json.loads(self.report_path.read_text()) if resume and self.report_path.exists() else {}
        blocks = self.adapter.blocks(net)
        done = 0
        while resume and done < len(blocks) and self.block_path(done).exists():
            done += 1
        report["layers"] = [r for r in report.get("layers", []) if r["block"] < done]
        for key in ("block_seconds", "breakdown"):
            report[key] = {k: v for k, v in report.get(key, {}).items() if int(k) < done}
        if "reconstruction" in report:
            report["reconstruction"] = {k: v for k, v in report["reconstruction"].items() if int(k) < done}
        self.previous_sessions = report.pop("sessions", []) if done else []
        return done, report

    def load(self, net) -> tuple[int, dict]:
        """`progress`, with every saved block loaded at once (a benchmark rebuilding a finished model)."""
        done, report = self.progress(net)
        for b, block in enumerate(self.adapter.blocks(net)[:done]):
            self.restore(b, block)
        return done, report

    def restore(self, b: int, block) -> None:
        """Load saved block b into `block` (shrinking its modules first under structured pruning)."""
        state = torch.load(self.block_path(b))
        shrink_to_state(block, self.adapter, state)
        block.load_state_dict(state)

    def sessions(self) -> list[float]:
        """Seconds of each process that worked on this run (the last one: so far)."""
        return self.previous_sessions + [time.perf_counter() - self.started]

    @property
    def spill_dir(self) -> Path | None:
        return self.folder / "acts" if self.folder is not None else None

    def save(self, b: int, block, report: dict) -> None:
        """The report first, then the block: a kill between the two recomputes block b."""
        if self.folder is None:
            return
        saved = dict(report, sessions=self.sessions())
        atomic_write(self.report_path, lambda p: p.write_text(json.dumps(saved)))
        atomic_write(self.block_path(b), lambda p: torch.save(block.state_dict(), p))

    def map_block(self, b: int, block) -> None:
        """Re-point a finished block's parameters to a memory map of its saved state."""
        if self.folder is not None and self.block_path(b).exists():
            block.to("cpu")
            mapped = list(block.state_dict().values())
            block.load_state_dict(torch.load(self.block_path(b), mmap=True), assign=True)
            release_file_pages(mapped)          # the input model's pages of this block, if it was mapped
