"""The `--out` folder of `optprune prune`: checked before anything is loaded, written atomically.

A folder is optprune's when it holds a completion marker (`optprune_complete.json`, a finished
output), a resume state (`.resume/fingerprint.json`, a run in progress) or `.staging/` (a final
save that was cut short; a data-free run has no resume state); any other non-empty
folder is refused, and so is an output or a state of a different run (the settings are compared
before the model is loaded, the whole fingerprint after).  The model is saved into `.staging/`,
its files are renamed into place one by one, and the marker is written last: a folder without
the marker is never a finished output, and its resume state finishes it bit-identically.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from pathlib import Path

import yaml

from ..engine.state import FINGERPRINT, atomic_write, check_fingerprint, writing
from ..recipes import RECIPE_FILE
from .card import CARD, model_card
from .model_io import check_output_dir, save_model

MARKER = "optprune_complete.json"
REPORT = "optprune_report.json"
LOCK = ".lock"


class OutputFolder:
    def __init__(self, path: str | Path, source: str):
        self.path, self.source = Path(path), source
        self.resume_dir, self.staging = self.path / ".resume", self.path / ".staging"

    def check(self, settings: dict, resume: bool) -> bool:
        """Refuse an unusable folder (one line); True when it already holds this run's finished output."""
        check_output_dir(self.path, self.source)
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"--out {self.path} is a file: choose a folder")
        check_writable(self.path)
        if (self.path / MARKER).exists():          # a finished output: this run's, or refused
            check_fingerprint(self.path / MARKER, settings, f"--out {self.path} holds the finished output",
                              "choose another folder or delete it")
            return True
        in_progress = (self.resume_dir / FINGERPRINT).exists()
        ours = in_progress or self.staging.is_dir() or (self.path / LOCK).exists()   # a run, or its cut-short save
        if self.path.is_dir() and any(self.path.iterdir()) and not ours:
            raise ValueError(f"--out {self.path} is not empty and holds no optprune run: choose a new or empty "
                             "folder")
        if in_progress and resume:
            check_fingerprint(self.resume_dir / FINGERPRINT, settings, f"{self.resume_dir} holds a resume state")
        return False

    @contextlib.contextmanager
    def locked(self, enabled: bool = True):
        """An exclusive lock on the folder for the run (flock on <out>/.lock, released when the run ends or its
        process dies): a second run on the same folder is refused at once with one line."""
        if not enabled:
            yield
            return
        created = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ValueError(f"--out {self.path} is in use by another optprune run (pid "
                                 f"{os.pread(fd, 32, 0).decode(errors='replace').strip() or '?'}): wait for it to "
                                 "finish, or choose another folder") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            try:
                yield
            finally:            # a run that wrote nothing (refused after the lock) leaves nothing behind
                if [p.name for p in self.path.iterdir()] == [LOCK]:
                    (self.path / LOCK).unlink()
                    if created:
                        self.path.rmdir()
        finally:
            os.close(fd)

    def report(self) -> dict:
        return json.loads((self.path / REPORT).read_text())

    def begin(self) -> None:
        """The run starts: whatever finished output the folder held is no longer this folder's result.
        A cut-short save's `.staging` stays until `save` replaces it: it marks the folder as optprune's."""
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / MARKER).unlink(missing_ok=True)

    def save(self, net, tok, summary: dict, fingerprint: dict, save_format: str = "plain") -> None:
        """Stage, rename into place, marker last; then the resume state is no longer needed.
        summary["checkpoint"] records what was written (`formats.save_checkpoint`), and the model card
        (`card.model_card`) is written from the summary."""
        shutil.rmtree(self.staging, ignore_errors=True)
        with writing(self.staging):
            summary["checkpoint"] = save_model(net, tok, self.staging, self.source, save_format,
                                               structured=summary.get("pattern", "").startswith("structured"))
            (self.staging / REPORT).write_text(json.dumps(summary, indent=2))
            if summary.get("recipe"):             # the recipe that was run: --recipe <out>/recipe.yaml reruns it
                (self.staging / RECIPE_FILE).write_text(yaml.safe_dump(summary["recipe"], sort_keys=False))
            (self.staging / CARD).write_text(model_card(summary, self.path.name), encoding="utf-8")
        for item in sorted(self.staging.iterdir()):
            os.replace(item, self.path / item.name)
        atomic_write(self.path / MARKER, lambda p: p.write_text(json.dumps(fingerprint, indent=1)))
        shutil.rmtree(self.staging, ignore_errors=True)
        shutil.rmtree(self.resume_dir, ignore_errors=True)

    def update_report(self, summary: dict) -> None:
        """The report and the model card again, with what was measured after the save (perplexity)."""
        atomic_write(self.path / REPORT, lambda p: p.write_text(json.dumps(summary, indent=2)))
        atomic_write(self.path / CARD, lambda p: p.write_text(model_card(summary, self.path.name), encoding="utf-8"))


def check_writable(path: Path) -> None:
    """The folder (or its nearest existing parent) must accept new files."""
    path = Path(path).absolute()
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write into {path}: {probe} is not a writable folder")


def check_writable_file(path: str | Path, flag: str) -> None:
    """An output file (--json) must be creatable before any work is done."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{flag} {path} is a folder: give a file name")
    if not path.parent.exists():
        raise ValueError(f"{flag} {path}: no folder {path.parent}")
    target = path if path.exists() else path.parent
    if not os.access(target, os.W_OK):
        raise ValueError(f"{flag} {path} cannot be written (permission denied)")
