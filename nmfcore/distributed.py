r"""Data-parallel mini-batch NMF on ``torch.distributed``: the hook that all-reduces W's parts.

Each process holds a shard of the frames and its rows of ``H``; ``W`` is the
same on every process. Between computing W's gradient parts and applying
them (the hook of the solver seam, :mod:`nmfcore.solvers`, or of
:class:`nmfcore.minibatch.MiniBatchMU`), :class:`DataParallel` sums them over the processes (one all-reduce per
update of ``W``), so every process takes the same step: the fit of ``P``
processes with batches ``b_p`` equals the fit of one process whose batch is
the union of the ``b_p`` ([1]_'s updates are sums over frames). The loss is
summed the same way, so the stopping rule agrees everywhere.

Start the processes with ``torchrun`` (or any launcher) and call
``torch.distributed.init_process_group`` with a ``timeout``: gloo on CPU,
NCCL on GPU. A process that fails (bad data, killed) makes the others'
next collective fail (the connection closes, or the timeout passes); they
raise :class:`DistributedError` naming the process and the operation instead
of hanging.

Example (``fit_shard.py``, run with ``torchrun --nproc_per_node 2 fit_shard.py``)::

    import datetime, torch, torch.distributed as dist
    from nmfcore.minibatch import MiniBatchMU
    from nmfcore.distributed import DataParallel

    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
    rank, size = dist.get_rank(), dist.get_world_size()
    V = torch.load("frames.pt")                      # (N, C), frames in rows
    shard = V[rank::size]                            # this process's frames
    m = MiniBatchMU(40, solver="asag_mu", beta=1, batch_size=512, generator=0,
                    parallel=DataParallel())        # same seed on every process
    m.fit(shard, max_epochs=50)
    if rank == 0:
        torch.save(m.W, "W.pt")
    dist.destroy_process_group()

References
----------
.. [1] R. Serizel, S. Essid and G. Richard, "Mini-batch stochastic approaches
   for accelerated multiplicative updates in nonnegative matrix factorisation
   with beta-divergence", IEEE MLSP 2016.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from .exceptions import NMFCoreError, ParameterError

__all__ = ["DataParallel", "DistributedError"]


class DistributedError(NMFCoreError, RuntimeError):
    """A collective operation failed: another process failed, exited or timed out."""


class DataParallel:
    """All-reduce of W's gradient parts and of the loss over the processes of a group.

    Parameters
    ----------
    group : torch.distributed.ProcessGroup, optional
        Default: the world.
    device : torch.device or str, optional
        Where scalar collectives run: ``'cuda'`` for NCCL (default: the CPU
        for gloo, the current CUDA device for NCCL).

    Raises
    ------
    ParameterError
        ``torch.distributed`` is not initialised.

    Examples
    --------
    >>> import torch.distributed as dist
    >>> dist.is_initialized()  # DataParallel() needs an initialised process group
    False
    """

    def __init__(self, group=None, *, device=None):
        import torch.distributed as dist

        if not dist.is_available() or not dist.is_initialized():
            raise ParameterError("DataParallel needs torch.distributed initialised: call "
                                 "torch.distributed.init_process_group(...) first (torchrun sets the environment)")
        self.dist = dist
        self.group = group
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)
        if device is None:
            device = f"cuda:{torch.cuda.current_device()}" if dist.get_backend(group) == "nccl" else "cpu"
        self.device = torch.device(device)

    def _run(self, what: str, op: Callable[[], None]) -> None:
        try:
            op()
        except RuntimeError as e:  # gloo / NCCL report a closed connection or a timeout as RuntimeError
            raise DistributedError(f"{what} failed on process {self.rank} of {self.world_size}: another "
                                   f"process failed, exited or timed out ({type(e).__name__}: {e})") from e

    def __call__(self, which: str, neg: Tensor, pos: Tensor):
        """The solver seam's hook (:class:`nmfcore.solvers.Solver`): W's parts summed over the processes,
        H's (each process's own rows) unchanged. With it, full-batch
        ``MultiplicativeUpdates(Problem(...), hook=DataParallel(), relax=1.0)`` on each process's shard
        is data-parallel full-batch MU (the problem must not rescale: data within [2**-10, 2**11), and
        ``Problem(..., match_start=False)``, since each shard's own sum would start the processes
        from different products)."""
        if which == "W":
            return self.sum_parts(neg, pos)
        return neg, pos

    def sum_parts(self, neg: Tensor, pos: Tensor):
        """``(neg, pos)`` summed over the processes (one all-reduce); new tensors of the same shapes."""
        flat = torch.cat([neg.reshape(-1), pos.reshape(-1)])
        self._run("all_reduce of W's gradient parts",
                  lambda: self.dist.all_reduce(flat, op=self.dist.ReduceOp.SUM, group=self.group))
        return flat[:neg.numel()].view(neg.shape), flat[neg.numel():].view(pos.shape)

    def sum_float(self, value: float) -> float:
        """A number summed over the processes (the loss)."""
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        self._run("all_reduce of the loss", lambda: self.dist.all_reduce(t, op=self.dist.ReduceOp.SUM,
                                                                          group=self.group))
        return float(t)

    def broadcast(self, X: Tensor, src: int = 0) -> Tensor:
        """``X`` overwritten in place by process ``src``'s (the initial ``W``)."""
        self._run("broadcast of W", lambda: self.dist.broadcast(X, src=src, group=self.group))
        return X

    def check_schedule(self, solver: str, frames, order: Optional[str]) -> None:
        """Every process must have the same number of batches (except for ``mu_batch``, which reduces once
        per epoch): the all-reduces of the other solvers run once per batch or draw the same random batch."""
        if solver == "mu_batch":
            return
        n = len(frames.sizes)
        t = torch.tensor([n, -n], dtype=torch.float64, device=self.device)
        self._run("all_reduce of the batch counts",
                  lambda: self.dist.all_reduce(t, op=self.dist.ReduceOp.MAX, group=self.group))
        hi, lo = int(t[0]), -int(t[1])
        if hi != lo:
            raise ParameterError(f"solver={solver!r} needs the same number of batches on every process, "
                                 f"but they have from {lo} to {hi} (this process {n}): shard the frames evenly "
                                 "or use solver='mu_batch'")
