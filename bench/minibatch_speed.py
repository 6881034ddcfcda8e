"""Speed of the mini-batch solvers (nmfcore.minibatch) against full-batch MU and scikit-learn.

On a long spectrogram-like matrix (frames x bins, by default 60000 x 1025,
rank 40), for beta 1 and 2, from the same initial factors:

1. nmfcore's full-batch MU (``NMF.fit(solver='mu')``, over-relaxed steps) runs
   100 iterations; its loss is the target.
2. Each mini-batch solver runs epochs until its loss reaches the target (or the
   epoch / time cap); the time to target excludes the loss evaluations.
3. scikit-learn's ``MiniBatchNMF`` (same beta, same initial factors, its own
   batch size and forgetting factor, no early stopping) and ``NMF`` (MU for
   beta 1, coordinate descent for beta 2) run ladders of 1, 2, 4, ...
   epochs / iterations from the start; the time of the first rung that reaches
   the target is reported (an upper bound: the crossing lies in the last
   doubling).
4. Peak memory (peak RSS, VmHWM, of a fresh process) of an ``asag_mu`` fit from chunks
   generated block by block at 1x, 2x and 4x the length: it should grow with the
   batch and ``H`` (frames x rank), not with the data.

Usage::

    python bench/minibatch_speed.py            # full run (tens of minutes on 2 cores)
    python bench/minibatch_speed.py --quick    # 257 x 3000, rank 10: a smoke test
    python bench/minibatch_speed.py --budget 1 --clock cpu --solvers asg_mu --h-steps 1,4,8 --skip-memory
                                               # the speed target's run (bench/README.md)

Needs the ``bench`` extra (scikit-learn).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings

import numpy as np
import torch

from nmfcore import divergence as div
from nmfcore.init import random_like_data
from nmfcore.minibatch import SOLVERS, MiniBatchMU
from nmfcore.nmf import NMF

warnings.filterwarnings("ignore")

# the timer: wall time, or with --clock cpu this process's CPU time (one thread: robust to other load)
CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = [time.perf_counter]


def clock() -> float:
    return _clock[0]()


def templates(F_: int, seed: int = 0) -> torch.Tensor:
    """30 decaying harmonic-ish spectra (F_, 30), as bench/speed.py's data."""
    g = torch.Generator().manual_seed(seed)
    decay = torch.exp(-torch.arange(F_, dtype=torch.float32) / (F_ / 5))
    return torch.rand(F_, 30, generator=g) ** 4 * decay[:, None]


def block(W: torch.Tensor, start: int, n: int, seed: int = 1) -> torch.Tensor:
    """Frames [start, start + n) of the spectrogram-like data (frames x bins), generated independently."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + start)
    H = torch.rand(n, W.shape[1], generator=g) ** 3
    return H @ W.t() + 1e-3 * torch.rand(n, W.shape[0], generator=g)


def data(F_: int, T_: int, step: int = 4096) -> torch.Tensor:
    W = templates(F_)
    return torch.cat([block(W, s, min(step, T_ - s)) for s in range(0, T_, step)])


def loss_of(V: torch.Tensor, W: torch.Tensor, H: torch.Tensor, beta: float, step: int = 8192) -> float:
    """d_beta(V | H W^T) in blocks of frames (float64 sum)."""
    return sum(float(div.beta_divergence(V[i:i + step], H[i:i + step] @ W.t(), beta))
               for i in range(0, V.shape[0], step))


class _Timed(MiniBatchMU):
    """MiniBatchMU that times its loss evaluations (the bench subtracts them)."""

    loss_time = 0.0

    def _loss(self, frames):
        t = clock()
        value = super()._loss(frames)
        self.loss_time += clock() - t
        return value


def full_mu(V, W0, H0, beta, iters):
    m = NMF(W=W0.clone(), H=H0.clone())
    time.sleep(0.25)
    t = clock()
    m.fit(V, beta=beta, tol=0, max_iter=iters, solver="mu", check_every=iters,
          callback=lambda n, loss: None)
    elapsed = clock() - t
    return elapsed, loss_of(V, m.W.detach(), m.H.detach(), beta)


def minibatch(V, W0, H0, beta, solver, batch_size, target, max_epochs, budget, **options):
    m = _Timed(W0.shape[1], solver=solver, beta=beta, batch_size=batch_size, generator=0, **options)
    record = {}
    time.sleep(0.25)
    t0 = clock()

    def cb(epoch, loss):
        now = clock() - t0 - m.loss_time
        record["epochs"], record["loss"], record["time"] = epoch, loss, now
        if loss <= target and "reached" not in record:
            record["reached"] = (epoch, now)
            return True
        return now > budget

    m.fit(V, W=W0, H=H0, max_epochs=max_epochs, tol=0, callback=cb)
    return record


def sklearn_ladder(make, V_np, W0, H0, beta, target, start, budget):
    """(rung, seconds, loss) of the first rung reaching target, or the last one run."""
    X = V_np
    n = start
    last = None
    spent = 0.0
    while True:
        est = make(n)
        Wi, Hi = H0.numpy().copy(), np.ascontiguousarray(W0.numpy().T)
        time.sleep(0.25)
        t = clock()
        A = est.fit_transform(X, W=Wi, H=Hi)
        elapsed = clock() - t
        spent += elapsed
        loss = loss_of(torch.from_numpy(X), torch.from_numpy(est.components_.T.copy()), torch.from_numpy(A), beta)
        last = (n, elapsed, loss)
        if loss <= target or spent > budget or n >= 1024:
            return last + (loss <= target,)
        n *= 2


def peak_memory(F_: int, T_: int, rank: int, batch: int, epochs: int, threads: int,
                mmap_threshold: int | None = None) -> float:
    """Peak RSS (MiB, VmHWM) of a fresh process fitting T_ frames from chunks generated on the fly.

    Not ``ru_maxrss``: Linux keeps it across ``execve``, so a child started by this (large) process
    reported the parent's peak (2250 MiB at every length in the first full run). ``mmap_threshold``
    (bytes) fixes glibc's ``MALLOC_MMAP_THRESHOLD_`` in the child: by default glibc raises the threshold
    to the size of the first large block freed, after which the batches' temporaries come from the
    heap, whose fragmentation can keep freed memory (bench/README.md)."""
    code = f"""
import torch, sys
sys.path.insert(0, 'bench')
torch.set_num_threads({threads})
from minibatch_speed import templates, block
from nmfcore.minibatch import MiniBatchMU
W = templates({F_})
chunks = lambda: (block(W, s, min({batch}, {T_} - s)) for s in range(0, {T_}, {batch}))
MiniBatchMU({rank}, solver='asag_mu', beta=1, generator=0).fit(chunks, max_epochs={epochs}, tol=0)
print([int(line.split()[1]) for line in open('/proc/self/status') if line.startswith('VmHWM')][0] / 1024)
"""
    env = dict(os.environ)
    if mmap_threshold is not None:
        env["MALLOC_MMAP_THRESHOLD_"] = str(mmap_threshold)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    return float(out.stdout.strip().splitlines()[-1])


def print_table(beta, target, rows, mini, sk_minibatch, t_full):
    """The markdown table of one beta and the best mini-batch row against full MU and MiniBatchNMF."""
    print(f"\nbeta = {beta:g}: target = loss of full-batch MU after 100 iterations = {target:.6g}")
    print(f"| {'method':24s} | {'run':>7s} | {'seconds':>8s} | {'loss':>11s} | reached |")
    print(f"|{'-' * 26}|{'-' * 9}|{'-' * 10}|{'-' * 13}|---------|")
    for name, run, t, loss, ok in rows:
        print(f"| {name:24s} | {run:>7s} | {t:8.2f} | {loss:11.5g} | {'yes' if ok else 'no':7s} |")
    best = min((r for r in mini if r[4]), key=lambda r: r[2], default=None)
    if best is not None:
        vs_sk = ""
        if sk_minibatch is not None:
            vs_sk = f"; {best[2] / sk_minibatch[2]:.2f} of MiniBatchNMF's" if sk_minibatch[4] else \
                f"; MiniBatchNMF did not reach the target within its budget ({best[2] / sk_minibatch[2]:.2f} " \
                "of the time it ran)"
        print(f"best mini-batch: {best[0]}, {best[2] / t_full:.2f} of full-batch MU's time{vs_sk}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="257 x 3000, rank 10, batch 250")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--budget", type=float, default=2.0,
                   help="time per method before giving up, in units of full-batch MU's time (default 2)")
    p.add_argument("--skip-speed", action="store_true", help="only the peak-memory measurement")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1 on a shared machine: OpenMP spin-waits under load, bench/README.md)")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--clock", choices=sorted(CLOCK), default="wall",
                   help="wall time, or the process's CPU time (with one thread, less sensitive to other load)")
    p.add_argument("--h-steps", default="1",
                   help="comma-separated h_steps values: every mini-batch solver runs with each (default 1)")
    p.add_argument("--size", default=None, help="bins,frames,rank,batch instead of --quick's or the full size")
    p.add_argument("--solvers", default=",".join(SOLVERS), help="comma-separated mini-batch solvers")
    p.add_argument("--betas", default="1,2", help="comma-separated betas (1 and 2 have scikit-learn rows)")
    p.add_argument("--skip-memory", action="store_true", help="no peak-memory measurement")
    p.add_argument("--mmap-threshold", type=int, default=None,
                   help="bytes: the memory child's fixed MALLOC_MMAP_THRESHOLD_ (glibc); default: glibc's dynamic one")
    args = p.parse_args(argv)
    _clock[0] = CLOCK[args.clock]
    F_, T_, rank = (257, 3000, 10) if args.quick else (1025, 60000, 40)
    batch = args.batch_size or (250 if args.quick else 2000)
    if args.size:
        F_, T_, rank, batch = map(int, args.size.split(","))
    torch.set_num_threads(args.threads)
    V = data(F_, T_)
    W0, H0 = random_like_data(V, (F_, rank), (T_, rank), rank, generator=0)
    V_np = V.numpy()
    print(f"data {T_} frames x {F_} bins, rank {rank}, batch {batch}, torch threads {torch.get_num_threads()}")
    results = {"shape": [T_, F_], "rank": rank, "batch_size": batch, "rows": []}
    from sklearn.decomposition import NMF as SkNMF
    from sklearn.decomposition import MiniBatchNMF

    solvers = args.solvers.split(",")
    h_steps = [int(h) for h in args.h_steps.split(",")]
    for beta in (() if args.skip_speed else [float(b) for b in args.betas.split(",")]):
        t_full, target = full_mu(V, W0, H0, beta, 100)
        budget = args.budget * t_full
        rows = [("nmfcore full-batch MU", "100 it", t_full, target, True)]
        for solver in solvers:
            for h in h_steps:
                r = minibatch(V, W0, H0, beta, solver, batch, target, 100, budget, h_steps=h)
                reached = "reached" in r
                e, t = r["reached"] if reached else (r["epochs"], r["time"])
                rows.append((f"nmfcore {solver}" + (f" h{h}" if h != 1 else ""), f"{e} ep", t, r["loss"], reached))
        mini = rows[1:]
        if beta not in (1.0, 2.0):
            print_table(beta, target, rows, mini, None, t_full)
            continue
        loss_name = "kullback-leibler" if beta == 1 else "frobenius"
        mb = sklearn_ladder(lambda n: MiniBatchNMF(rank, init="custom", beta_loss=loss_name, batch_size=batch,
                                                   max_iter=n, tol=0, max_no_improvement=None, random_state=0),
                            V_np, W0, H0, beta, target, 1, budget)
        rows.append(("sklearn MiniBatchNMF", f"{mb[0]} ep", mb[1], mb[2], mb[3]))
        solver = "mu" if beta == 1 else "cd"
        sk = sklearn_ladder(lambda n: SkNMF(rank, init="custom", beta_loss=loss_name, solver=solver, max_iter=n,
                                            tol=0, random_state=0), V_np, W0, H0, beta, target, 4, budget)
        rows.append((f"sklearn NMF ({solver})", f"{sk[0]} it", sk[1], sk[2], sk[3]))
        print_table(beta, target, rows, mini, rows[len(mini) + 1], t_full)
        results["rows"].append({"beta": beta, "target": target,
                                "rows": [dict(zip(("method", "run", "seconds", "loss", "reached"), r)) for r in rows]})
    if args.skip_memory:
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1)
        return
    print("\npeak memory (peak RSS, MiB) of an asag_mu fit from chunks generated on the fly, 2 epochs:")
    mem = {}
    for k in (1, 2, 4):
        mem[k] = peak_memory(F_, k * T_, rank, batch, 2, args.threads, args.mmap_threshold)
        print(f"  {k}x ({k * T_} frames): {mem[k]:.0f} MiB")
    print(f"  4x / 2x: {mem[4] / mem[2]:.3f}")
    results["peak_mib"] = mem
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
