"""torch.distributed helpers: shard the layer problems of a block across ranks.

Launched with `torchrun --nproc-per-node N -m optprune prune ...` (gloo on CPU,
nccl on GPUs).  Each rank carries a slice of the calibration windows (rank r the
windows r, r + N, ...) through the forward passes; the Grams are summed over ranks
(`all_reduce_sum`), so every rank holds the full Grams, equal to a single process's
up to the order of the float sums.  Layer k of a block is solved on rank k mod N,
and its new weight and mask are broadcast from there.
"""
from __future__ import annotations

import os
import platform
from typing import Callable

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_from_env() -> tuple[int, int]:
    """Join the process group torchrun describes (WORLD_SIZE > 1); a no-op otherwise."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return world()


def all_reduce_sum(t: torch.Tensor) -> None:
    """t <- sum of t over the ranks, in place (a no-op in a single process)."""
    rank, size = world()
    if size == 1:
        return
    buf = t.to("cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(buf)
    t.copy_(buf)


def map_over_ranks(jobs: list, run_share: Callable[[list], list]) -> list:
    """run_share(jobs[rank::N]) on every rank, results gathered in job order on every rank
    (picklable results: job k is run on rank k mod N, like `solve_sharded`)."""
    rank, size = world()
    if size == 1:
        return run_share(jobs)
    gathered = [None] * size
    dist.all_gather_object(gathered, run_share(jobs[rank::size]))
    return [gathered[k % size][k // size] for k in range(len(jobs))]


def solve_sharded(jobs: list, solve: Callable) -> list:
    """Run solve(job) -> (weight, mask, info dict) for each job on its owner rank; return all results everywhere."""
    rank, size = world()
    local = {k: solve(job) for k, job in enumerate(jobs) if k % size == rank}
    if size == 1:
        return [local[k] for k in range(len(jobs))]
    out = []
    for k, job in enumerate(jobs):
        src = k % size
        shapes = [None]
        if rank == src:
            weight, mask, info = local[k]
            shapes = [(tuple(weight.shape), tuple(mask.shape), weight.dtype, info)]
        dist.broadcast_object_list(shapes, src=src)
        wshape, mshape, dtype, info = shapes[0]
        if rank != src:
            weight = torch.empty(wshape, dtype=dtype)
            mask = torch.empty(mshape, dtype=torch.bool)
        dev = "cuda" if dist.get_backend() == "nccl" else "cpu"
        w, m = weight.contiguous().to(dev), mask.contiguous().to(dev)
        dist.broadcast(w, src=src)
        dist.broadcast(m, src=src)
        out.append((w.to(weight.device), m.to(weight.device), info))
    return out


def machine_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    threads = torch.get_num_threads()
    return f"{platform.machine()} CPU, {threads} thread{'s' if threads != 1 else ''}"
