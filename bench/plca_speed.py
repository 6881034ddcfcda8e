"""Speed of nmfcore's PLCA and SIPLCA against torchnmf 0.3.5, in one process.

PLCA on V (2000 frames x 1025 bins, a synthetic spectrogram), rank 20,
float32; SIPLCA with T = 8 on (1, 513, 1000), rank 8. Both libraries start
from the same W, H and Z. Printed: ms per EM iteration (best of ``--rounds``
interleaved timings of ``--n-fixed`` iterations, idle before each) of
nmfcore's default (joint) EM, of its ``update='alternating'`` order and of
torchnmf; the ratio joint / torchnmf; then the race to torchnmf's fit.

Both libraries' default iteration is textbook EM: one reconstruction, the
ratio ``V / Y``, its pull-back to each factor (three operator products for
PLCA); ``update='alternating'`` takes (W, Z) then (H, Z) from fresh
reconstructions (four products).

The race: torchnmf's fitted models give probability 0 to many bins that hold
data (its ``V / (Y + eps)`` with float32's eps in normalised units shrinks
quiet bins until they underflow), so their exact log-likelihood is -inf and
their KL divergence from the data +inf. The race is therefore run on the
*floored* criterion: ``KL(v | v_hat)`` with ``v = V / V.sum()`` and ``v_hat``
floored at float32's tiny (equivalently the floored log-likelihood
``sum v log v_hat``, the KL plus the data's entropy). Printed: torchnmf's
floored KL after ``--n-ref`` (200) iterations and their time, the iterations
and the time nmfcore needs to reach it (one run each; 0 iterations when its
random start is already better), the time ratio, nmfcore's floored KL after
the same number of iterations, and the bins with data at probability 0.

``--clock cpu`` times with the process's CPU time instead of the wall clock:
with ``--threads 1`` it is robust to other jobs on a shared machine (they
slow the wall clock, not the CPU time of this process, up to cache effects).

Usage::

    PYTHONPATH=. python bench/plca_speed.py           # a few minutes on 2 idle cores
    PYTHONPATH=. python bench/plca_speed.py --quick   # smaller problems, smoke test
    PYTHONPATH=. python bench/plca_speed.py --threads 1 --clock cpu --rounds 7

Needs torchnmf (the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import spectrogram_like  # noqa: E402

from nmfcore.plca import PLCA, SIPLCA  # noqa: E402

warnings.filterwarnings("ignore")
SETTLE_S = 0.25  # idle before each timed job (see bench/speed.py best_times)


TINY = torch.finfo(torch.float32).tiny


def kl(V: torch.Tensor, Y: torch.Tensor) -> float:
    """KL(v | y) = sum v log(v / y) with v = V / V.sum(), y floored at float32's tiny (in float64).

    The floor keeps a model that gives probability 0 to a bin with data finite
    (torchnmf's does: see :func:`zero_bins`); such a bin then costs v log(v / 1.2e-38).
    """
    V, Y = V.double(), Y.double()
    v = V / V.sum()
    return float((torch.xlogy(v, v) - torch.xlogy(v, Y.clamp_min(TINY))).sum())


def zero_bins(V: torch.Tensor, Y: torch.Tensor) -> int:
    """Bins with data that the model gives probability 0 (log-likelihood -inf without the floor)."""
    return int(((V > 0) & (Y <= 0)).sum())


CLOCK = time.perf_counter  # or time.process_time (--clock cpu)


def best_ms(jobs: dict, rounds: int, n: int) -> dict:
    """Best time per iteration of each job, interleaved over rounds, idle before each."""
    best = {k: float("inf") for k in jobs}
    for _ in range(rounds):
        for name, job in jobs.items():
            time.sleep(SETTLE_S)
            t0 = CLOCK()
            job(n)
            best[name] = min(best[name], (CLOCK() - t0) / n * 1000)
    return best


def case(name, ours_cls, theirs_cls, V, rank, kw, args):
    init = ours_cls(V.shape, rank, generator=0, **kw)
    W0, H0, Z0 = (init.W.detach().clone(), init.H.detach().clone(), init.Z.detach().clone())

    def ours(n, update=None):
        m = ours_cls(W=W0, H=H0, Z=Z0)
        m.fit(V, max_iter=n, tol=0, update=update)
        return m

    def theirs(n):
        m = theirs_cls(W=W0.clone(), H=H0.clone(), Z=Z0.clone())
        # tol=-inf: torchnmf stops when (previous - loss) / initial < tol, so tol=0 stops at the
        # first check where the float32 loss did not decrease
        m.n_iter, _ = m.fit(V, max_iter=n, tol=float("-inf"))
        return m

    ms = best_ms({"nmfcore": ours, "alternating": lambda n: ours(n, "alternating"), "torchnmf": theirs},
                 args.rounds, args.n_fixed)
    # torchnmf's floored KL after n_ref iterations, and nmfcore's iterations to reach it
    time.sleep(SETTLE_S)
    t0 = CLOCK()
    ref = theirs(args.n_ref)
    t_ref = CLOCK() - t0
    target = kl(V, ref().detach())
    seen, kls = {}, []
    m = ours_cls(W=W0, H=H0, Z=Z0)

    def cb(i, loss):  # untimed run: the floored KL of the model after every iteration
        kls.append(kl(V, m().detach()))
        if kls[-1] <= target and "n" not in seen:
            seen["n"] = i

    m.fit(V, max_iter=args.n_ref, tol=0, check_every=1, callback=cb)
    n_ours = seen.get("n")
    t_ours = None
    if n_ours is not None:
        t_ours = _timed(lambda: ours(n_ours))  # one run each, as torchnmf's reference run
    return dict(name=name, ms_ours=ms["nmfcore"], ms_alt=ms["alternating"], ms_theirs=ms["torchnmf"],
                target=target, t_ref=t_ref, n_ref=ref.n_iter + 1, n_ours=n_ours, t_ours=t_ours, final=kls[-1],
                zeros=(zero_bins(V, ref().detach()), zero_bins(V, m().detach())))


def _timed(fn) -> float:
    time.sleep(SETTLE_S)
    t0 = CLOCK()
    fn()
    return CLOCK() - t0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--n-fixed", type=int, default=20)
    p.add_argument("--n-ref", type=int, default=200)
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    from torchnmf.plca import PLCA as TPLCA
    from torchnmf.plca import SIPLCA as TSIPLCA

    scale = 4 if args.quick else 1
    V = spectrogram_like(1025 // scale, 2000 // scale, 0, "cpu").t().contiguous()
    Vs = spectrogram_like(513 // scale, 1000 // scale, 1, "cpu")[None].contiguous()
    rows = [case(f"PLCA {tuple(V.shape)} rank 20", PLCA, TPLCA, V, 20, {}, args),
            case(f"SIPLCA {tuple(Vs.shape)} T=8 rank 8", SIPLCA, TSIPLCA, Vs, 8, {"T": 8}, args)]
    print(f"# {datetime.date.today()} {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{args.threads} threads, float32, best of {args.rounds} x {args.n_fixed} iterations, "
          f"{args.clock} clock, load {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"# python bench/plca_speed.py {' '.join(sys.argv[1:])}".rstrip())
    print("| problem | nmfcore ms/it | nmfcore alternating ms/it | torchnmf ms/it | ratio "
          "| torchnmf: iters, floored KL, s | nmfcore to that KL: iters, s | time ratio "
          "| nmfcore floored KL, same iters | bins with data at p = 0: torchnmf, nmfcore |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r["n_ours"] is not None:
            reach = f"{r['n_ours']}, {r['t_ours']:.2f}"
            tr = f"{r['t_ours'] / r['t_ref']:.2f}"
        else:
            reach, tr = "not reached", "-"
        print(f"| {r['name']} | {r['ms_ours']:.1f} | {r['ms_alt']:.1f} | {r['ms_theirs']:.1f} "
              f"| {r['ms_ours'] / r['ms_theirs']:.2f} "
              f"| {r['n_ref']}, {r['target']:.5f}, {r['t_ref']:.2f} | {reach} | {tr} | {r['final']:.5f} "
              f"| {r['zeros'][0]}, {r['zeros'][1]} |")


if __name__ == "__main__":
    main()
