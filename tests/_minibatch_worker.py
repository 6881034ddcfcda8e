"""Worker processes for the data-parallel tests of tests/test_minibatch.py (spawned, so importable)."""

import datetime
import traceback

import torch

from nmfcore.minibatch import SOLVERS, MiniBatchMU

N_PER_PROC, C, R, BATCH = 24, 10, 3, 6


def data(world_size: int):
    """Global frames V, initial W and H (float64, seeded), the same in every process."""
    g = torch.Generator().manual_seed(7)
    n = N_PER_PROC * world_size
    V = torch.rand(n, R, generator=g, dtype=torch.float64) @ torch.rand(R, C, generator=g, dtype=torch.float64)
    V += 0.01
    W = torch.rand(C, R, generator=g, dtype=torch.float64) + 0.1
    H = torch.rand(n, R, generator=g, dtype=torch.float64) + 0.1
    return V, W, H


def shard_rows(rank: int, world_size: int):
    """Rows of this process: batch j of process p holds global rows of the j-th block of size BATCH * P."""
    rows = []
    for j in range(N_PER_PROC // BATCH):
        start = j * BATCH * world_size + rank * BATCH
        rows.extend(range(start, start + BATCH))
    return torch.tensor(rows)


def fit_all(V, W, H, batch_size, parallel=None, order="cyclic"):
    """Factors of every solver (3 epochs from the same start)."""
    out = {}
    for solver in SOLVERS:
        m = MiniBatchMU(R, solver=solver, beta=1, batch_size=batch_size, order=order, generator=3,
                        parallel=parallel)
        m.fit(V, W=W, H=H, max_epochs=3, tol=0)
        out[solver] = (m.W, m.H)
    return out


def full_batch(V, W, H, hook=None):
    """3 plain full-batch MU steps on the solver seam, with an optional hook (the all-reduce)."""
    from nmfcore.operators import MatrixProduct
    from nmfcore.solvers import MultiplicativeUpdates, Problem

    prob = Problem(MatrixProduct(), W.clone().requires_grad_(), H.clone().requires_grad_(), V, beta=1.0,
                   match_start=False)
    mu = MultiplicativeUpdates(prob, hook=hook, relax=1.0)
    for _ in range(3):
        mu.step()
    return prob.W, prob.H


def worker(rank: int, world_size: int, init_file: str, out_dir: str, fail_rank: int):
    import torch.distributed as dist

    from nmfcore.distributed import DataParallel

    torch.set_num_threads(1)
    try:
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size,
                                timeout=datetime.timedelta(seconds=30))
        V, W, H = data(world_size)
        rows = shard_rows(rank, world_size)
        Vs, Hs = V[rows], H[rows]
        if rank == fail_rank:
            Vs = Vs.clone()
            Vs[2 * BATCH, 0] = float("nan")  # batch 2 of this process: fails in the first epoch
        if fail_rank >= 0:
            MiniBatchMU(R, solver="asg_mu", beta=1, batch_size=BATCH, order="cyclic", generator=3,
                        parallel=DataParallel()).fit(Vs, W=W, H=Hs, max_epochs=3, tol=0)
            result = "finished"
        else:
            result = fit_all(Vs, W, Hs, BATCH, DataParallel(), order="shuffle")
            result["full-batch hook"] = full_batch(Vs, W, Hs, DataParallel())
        torch.save({"ok": result}, f"{out_dir}/{rank}.pt")
    except BaseException as e:  # noqa: BLE001 - reported to the test
        torch.save({"error": f"{type(e).__name__}: {e}", "type": type(e).__name__,
                    "trace": traceback.format_exc()}, f"{out_dir}/{rank}.pt")
    finally:
        if dist.is_initialized():
            try:
                dist.destroy_process_group()
            except Exception:  # noqa: BLE001
                pass
