"""Data-parallel training over several local processes (``--procs N``).

On a CPU machine one process per core beats one process with N intra-op threads: convolutions on
small training batches scale poorly across threads, while N processes each working on
``batch / N`` crops scale almost linearly. The processes exchange gradients with one
``all_reduce`` per step over torch.distributed's gloo backend (TCP on 127.0.0.1).

* Rank 0 is the process the user started. It picks a free port, starts ranks 1..N-1 as child
  processes with the same command line plus ``--rank r --dist-port p``, and alone writes logs,
  validation results and checkpoints.
* Every rank loads the same checkpoint and optimizer state, so identical averaged gradients
  keep the replicas identical; rank 0 re-broadcasts its parameters every ``SYNC_EVERY`` steps
  anyway, so that rounding can never let them drift apart.
* The step's all-reduce also carries a stop flag (a signal on any rank stops all of them after
  the same step), a bad-loss flag (a non-finite loss on any rank skips the step everywhere) and
  the batch statistics, so the log shows the whole batch.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import torch
import torch.distributed as dist

SYNC_EVERY = 1000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pin_to_core(rank: int, procs: int) -> int | None:
    """Pin this process to one of the CPUs it may use (rank-th of them) when there are at least
    ``procs`` of them; returns the CPU or None."""
    try:
        allowed = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return None
    if len(allowed) < procs:
        return None
    cpu = allowed[rank % len(allowed)]
    os.sched_setaffinity(0, {cpu})
    return cpu


def spawn_workers(procs: int, port: int, argv: list[str]) -> list[subprocess.Popen]:
    """Start ranks 1..procs-1 of ``python -m codecflow.training.image <argv>``."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return [subprocess.Popen([sys.executable, "-m", "codecflow.training.image", *argv,
                              "--rank", str(r), "--dist-port", str(port)], env=env)
            for r in range(1, procs)]


class Group:
    """One process's view of the data-parallel group (a no-op when ``world == 1``)."""

    def __init__(self, rank: int = 0, world: int = 1, port: int | None = None,
                 timeout_s: float = 1800.0):
        self.rank, self.world = int(rank), int(world)
        if self.world > 1:
            from datetime import timedelta

            dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}",
                                    rank=self.rank, world_size=self.world,
                                    timeout=timedelta(seconds=timeout_s))

    @property
    def main(self) -> bool:
        return self.rank == 0

    def broadcast_params(self, model: torch.nn.Module) -> None:
        if self.world == 1:
            return
        with torch.no_grad():  # parameters only: rank 0's CDF buffers change when it validates
            for t in model.parameters():
                dist.broadcast(t.data, 0)

    def average(self, params: list, extras: list[float]) -> list[float]:
        """Average the gradients of ``params`` and the ``extras`` scalars over all ranks, in
        place for the gradients (a missing gradient counts as zero). Returns the extras' sums
        over the ranks (flags) -- callers divide by ``world`` where they want means."""
        if self.world == 1:
            return list(extras)
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads] +
                         [torch.tensor(extras, dtype=grads[0].dtype)])
        dist.all_reduce(flat)
        n = len(extras)
        tail = flat[-n:].tolist()
        flat = flat[:-n] / self.world
        off = 0
        for p, g in zip(params, grads):
            k = g.numel()
            if p.grad is None:
                p.grad = flat[off:off + k].view_as(p).clone()
            else:
                p.grad.copy_(flat[off:off + k].view_as(p))
            off += k
        return tail

    def replicas_identical(self, model: torch.nn.Module) -> bool:
        """True when every rank holds bit-identical parameters (checked by gathering a float64
        checksum vector from each rank)."""
        if self.world == 1:
            return True
        with torch.no_grad():
            mine = torch.stack([p.detach().double().reshape(-1).sum() for p in model.parameters()])
        got = [torch.zeros_like(mine) for _ in range(self.world)]
        dist.all_gather(got, mine)
        return all(torch.equal(got[0], g) for g in got[1:])

    def close(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()
