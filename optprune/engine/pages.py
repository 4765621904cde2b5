"""Handing a memory-mapped checkpoint's pages back to the kernel.

A tensor read from a memory-mapped file (transformers' safetensors, `torch.load(mmap=True)`) costs no RAM
until it is touched; from then on its pages count in the process's RSS for as long as the mapping lives,
which for a model loaded with `--mmap-weights` is the whole run: touched once, every block would stay
resident and the RSS would grow with the model.  `release_file_pages` drops the pages of tensors that are
done with (madvise MADV_DONTNEED on the whole pages inside each tensor's bytes): a clean file page is read
back from the page cache or the disk on its next touch, so the values never change.  Only pages inside a
file-backed mapping that are still the file's own are advised: /proc/self/pagemap tells each page's kind,
and a page written since it was mapped (a private mapping's copy, anonymous memory) is left alone, so
nothing written is ever lost.  Linux only; elsewhere a no-op.
"""
from __future__ import annotations

import bisect
import ctypes
import mmap
import os
import sys

import numpy as np
import torch

MADV_DONTNEED = 4
_PAGE = mmap.PAGESIZE


def file_mappings() -> list[tuple[int, int]]:
    """Sorted (start, end) addresses of this process's file-backed mappings (/proc/self/maps lines with an
    inode), adjacent ones merged."""
    spans = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            parts = line.split(None, 5)
            if len(parts) == 6 and parts[4] != "0" and parts[5].startswith("/"):
                start, end = (int(a, 16) for a in parts[0].split("-"))
                if spans and spans[-1][1] == start:
                    spans[-1] = (spans[-1][0], end)
                else:
                    spans.append((start, end))
    return sorted(spans)


def _inner_pages(t: torch.Tensor) -> tuple[int, int] | None:
    """The whole pages inside a contiguous CPU tensor's bytes, (start, length), or None when there is none."""
    if t.device.type != "cpu" or t.numel() == 0 or not t.is_contiguous():
        return None
    begin = t.data_ptr()
    end = begin + t.numel() * t.element_size()
    start, stop = -(-begin // _PAGE) * _PAGE, end // _PAGE * _PAGE
    return (start, stop - start) if stop > start else None


def clean_runs(pagemap: int, start: int, length: int) -> list[tuple[int, int]]:
    """(start, length) runs of the pages in [start, start + length) that hold no written copy: a present page
    whose pagemap entry lacks bit 61 (file page) is anonymous, a private mapping's page written since, and a
    swapped one (bit 62) is one too."""
    entries = np.frombuffer(os.pread(pagemap, length // _PAGE * 8, start // _PAGE * 8), dtype=np.uint64)
    bit = lambda k: ((entries >> np.uint64(k)) & np.uint64(1)).astype(bool)
    written = (bit(63) & ~bit(61)) | bit(62)
    edges = np.flatnonzero(np.diff(np.concatenate(([True], written, [True])).astype(np.int8)))
    return [(start + int(a) * _PAGE, int(b - a) * _PAGE) for a, b in zip(edges[::2], edges[1::2])]


def release_file_pages(tensors) -> int:
    """Drop the resident pages of the tensors' bytes that lie in file-backed mappings and were never
    written; the bytes advised."""
    if not sys.platform.startswith("linux"):
        return 0
    spans = file_mappings()
    starts = [s for s, _ in spans]
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    advised, pagemap = 0, os.open("/proc/self/pagemap", os.O_RDONLY)
    try:
        for t in tensors:
            pages = _inner_pages(t)
            if pages is None:
                continue
            i = bisect.bisect_right(starts, pages[0]) - 1
            if i < 0 or pages[0] + pages[1] > spans[i][1]:
                continue                   # not (wholly) in a file mapping: anonymous memory, left alone
            for start, length in clean_runs(pagemap, *pages):
                if libc.madvise(start, length, MADV_DONTNEED) == 0:
                    advised += length
    finally:
        os.close(pagemap)
    return advised


def trim_heap() -> None:
    """Hand the C heap's free pages back to the kernel (glibc's malloc_trim): tensors under malloc's mmap
    threshold come from the heap, whose freed middle pages otherwise stay resident, so the RSS of a walk
    would creep up block after block.  A no-op where the C library has no malloc_trim."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (AttributeError, OSError):
        pass
