"""Per-iteration time of nmfcore's fits alone, for before/after comparisons of the engine.

Fits NMF (V 257 x 500 given as the transposed view of a (freq, frames) array, rank 10) and
NMFD (V 129 x 300, rank 4, T = 4) on fixed random data for ``--iters`` iterations with
``tol=0`` and prints the best of ``--repeats`` timings per iteration, per beta and solver,
plus the final loss (equal losses mean equal iterates). Compare two versions of the package
by running it twice, alternating, with ``PYTHONPATH`` pointing at each::

    PYTHONPATH=/tmp/orig python bench/iter_speed.py
    PYTHONPATH=. python bench/iter_speed.py
"""

from __future__ import annotations

import argparse
import time

import torch

import nmfcore
from nmfcore.nmf import NMF, NMFD


def best_ms(make, fit, repeats):
    best, loss = float("inf"), None
    for _ in range(repeats):
        model = make()
        t = time.perf_counter()
        loss = fit(model)
        best = min(best, time.perf_counter() - t)
    return best * 1e3, loss


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--betas", default="2,1,0.5,0")
    args = p.parse_args(argv)
    betas = [float(b) for b in args.betas.split(",")]
    g = torch.Generator().manual_seed(0)
    S = torch.rand(257, 500, generator=g) ** 4 + 1e-3  # (freq, frames)
    V = S.t()
    Vd = (torch.rand(129, 300, generator=g) ** 4 + 1e-3)[None]
    print(f"nmfcore from {nmfcore.__file__}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    n = args.iters

    def run(model, X, **kw):
        last = []
        model.fit(X, tol=0, max_iter=n, check_every=n, callback=lambda i, loss: last.append(loss), **kw)
        return last[-1]

    for beta in betas:
        for solver in (("mu", "hals") if beta == 2 else ("mu",)):
            ms, loss = best_ms(lambda: NMF(V.shape, 10, generator=1), lambda m: run(m, V, beta=beta, solver=solver),
                               args.repeats)
            print(f"NMF  beta={beta:g} {solver:4s} {ms / n:7.3f} ms/it  loss {loss:.6g}")
    for beta in betas:
        ms, loss = best_ms(lambda: NMFD(Vd.shape, 4, 4, generator=1), lambda m: run(m, Vd, beta=beta), args.repeats)
        print(f"NMFD beta={beta:g} mu   {ms / n:7.3f} ms/it  loss {loss:.6g}")


if __name__ == "__main__":
    main()
