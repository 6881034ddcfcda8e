"""Speed of nmfcore against the reference libraries, in one process.

Runs nmfcore, torchnmf and scikit-learn (MU, and coordinate descent for
beta=2) on the same data from the same initial factors and prints, per beta:
ms per iteration, the loss after a fixed number of iterations, the time to
reach the loss scikit-learn's MU reaches in 200 iterations, and ratios. The
same for NMFD against torchnmf. It also measures what the matrix products
(and, for NMFD, the convolutions, the cheaper of torch's conv1d and their
matrix-product form) of one iteration cost alone on this machine, so that nmfcore's per-iteration time can be read against the cost
of the arithmetic it cannot avoid.

Usage::

    python bench/speed.py            # full run (a few minutes on 2 cores)
    python bench/speed.py --quick    # smaller problem, for a smoke test
    python bench/speed.py --device cuda

Needs the ``bench`` extra: ``pip install -e .[bench]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings

import torch
import torch.nn.functional as F

from nmfcore.metrics import beta_div
from nmfcore.nmf import NMF, NMFD

warnings.filterwarnings("ignore")


def spectrogram_like(F_: int, T_: int, seed: int, device, dtype=torch.float32) -> torch.Tensor:
    """Sparse sums of decaying harmonic-ish spectra with bursty activations, plus a noise floor."""
    g = torch.Generator().manual_seed(seed)
    k = 30
    decay = torch.exp(-torch.arange(F_, dtype=torch.float64) / (F_ / 5))
    W = torch.rand(F_, k, generator=g, dtype=torch.float64) ** 4 * decay[:, None]
    H = torch.rand(k, T_, generator=g, dtype=torch.float64) ** 3
    V = W @ H + 1e-3 * torch.rand(F_, T_, generator=g, dtype=torch.float64)
    return V.to(device=device, dtype=dtype)


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeat=5) -> float:
    """Best wall time of ``repeat`` calls of ``fn`` (seconds)."""
    best = float("inf")
    for _ in range(repeat):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def loss64(Y: torch.Tensor, V: torch.Tensor, beta: float) -> float:
    return float(beta_div(Y.double(), V.double(), beta))


# --------------------------------------------------------------- runners
# Each runner exposes: run(n) -> (fitted-state); loss(state); and
# curve(n_max, target) -> first iteration count reaching target (or None).

class Runner:
    name = ""

    def __init__(self, V, W0, H0, beta, device):
        self.V, self.W0, self.H0, self.beta, self.device = V, W0, H0, beta, device

    def iters_to(self, target, n_max):
        """Iterations to reach ``target``, stepping one iteration at a time (untimed)."""
        state = self.start()
        for i in range(1, n_max + 1):
            state = self.advance(state)
            if self.loss(state) <= target:
                return i
        return None


class Ours(Runner):
    """nmfcore NMF on V^T, so that the factor updated first is scikit-learn's W."""

    name = "nmfcore"
    solver = "auto"

    def model(self):
        # V^T (T, F) = H0^T W0^T: nmfcore's W is scikit-learn's W, updated first by both
        return NMF(W=self.W0.clone(), H=self.H0.t().contiguous())

    @property
    def X(self):
        return self.V.t()

    def run(self, n):
        m = self.model()
        m.fit(self.X, beta=self.beta, tol=0, max_iter=n, solver=self.solver)
        return m

    def loss(self, m):
        return loss64(m().t(), self.V, self.beta)

    def iters_to(self, target, n_max):
        m = self.model()
        hit = []

        def cb(i, _):
            if i and not hit and self.loss(m) <= target:
                hit.append(i)
                return True

        m.fit(self.X, beta=self.beta, tol=0, max_iter=n_max, solver=self.solver, check_every=1, callback=cb)
        return hit[0] if hit else None


class OursMU(Ours):
    name = "nmfcore-mu"
    solver = "mu"


class TorchNMF(Runner):
    name = "torchnmf"

    def model(self):
        import torchnmf.nmf as tn

        return tn.NMF(W=self.W0.clone(), H=self.H0.t().contiguous()).to(self.device)

    def run(self, n):
        m = self.model()
        m.fit(self.V.t(), beta=self.beta, tol=-1e30, max_iter=n)
        return m

    def start(self):
        return self.model()

    def advance(self, m):
        m.fit(self.V.t(), beta=self.beta, tol=-1e30, max_iter=1)
        return m

    def loss(self, m):
        with torch.no_grad():
            return loss64(m().t(), self.V, self.beta)


class Sklearn(Runner):
    solver = "mu"

    @property
    def name(self):
        return f"sklearn-{self.solver}"

    def _fit(self, W, H, n):
        from sklearn.decomposition import NMF as SkNMF

        est = SkNMF(self.W0.shape[1], init="custom", solver=self.solver, beta_loss=self.beta, max_iter=n, tol=0)
        Wn = est.fit_transform(self.Vn, W=W.copy(), H=H.copy())
        return Wn, est.components_

    def __init__(self, *a):
        super().__init__(*a)
        self.Vn = self.V.cpu().numpy()
        self.Wn0 = self.W0.cpu().numpy()
        self.Hn0 = self.H0.cpu().numpy()

    def run(self, n):
        return self._fit(self.Wn0, self.Hn0, n)

    def start(self):
        return self.Wn0, self.Hn0

    def advance(self, state):
        return self._fit(state[0], state[1], 1)

    def loss(self, state):
        return loss64(torch.from_numpy(state[0] @ state[1]), self.V.cpu(), self.beta)


class SklearnCD(Sklearn):
    solver = "cd"


# ------------------------------------------------------- arithmetic floor
def gemm_floor(V, R, beta, device):
    """Time of the matrix products one nmfcore iteration needs, on this machine (ms).

    Timed in both memory layouts of the data, V^T copied contiguous (rows of
    C = 1025 bins) and V^T as the transposed view of V (rows of N frames), and
    the cheaper one kept: the products alone cost what the better layout costs
    (with 1025 bins the view's layout is about 25% cheaper here).
    """
    g = torch.Generator().manual_seed(1)
    N, C = V.shape[1], V.shape[0]
    H = torch.rand(N, R, generator=g).to(device, V.dtype)
    W = torch.rand(C, R, generator=g).to(device, V.dtype)
    t = lambda f: timed(lambda: [f() for _ in range(10)], device) / 10 * 1e3  # noqa: E731
    best = float("inf")
    for X in (V.t().contiguous(), V.t()):
        if X.is_contiguous():
            Y = torch.empty_like(X)
            t_hw = t(lambda: torch.mm(H, W.t(), out=Y))
        else:
            Yt = torch.empty_like(V)
            t_hw = t(lambda: torch.mm(W, H.t(), out=Yt))
        t_xw = t(lambda: X @ W)          # N x C x R
        t_xth = t(lambda: X.t() @ H)     # C x N x R
        if beta == 2:
            total = t_xw + t_xth  # HALS / MU: V W and V^T H, nothing of size N x C
        else:
            n_pull = 1 if beta == 1 else 2  # beta=1 denominators are sums
            total = 2 * t_hw + n_pull * (t_xw + t_xth)
        best = min(best, total)
    return best


def conv_floor(V, R, T, beta, device):
    """Time of the convolutions one NMFD iteration needs (ms): forward + pull-backs.

    Timed two ways and the cheaper kept: torch's conv1d, conv1d_input and
    conv1d_weight (each allocates its output), and the same operators as
    matrix products with the T lagged copies of H, written into buffers
    allocated once (the form nmfcore's NMFD uses; 2-3x cheaper here).
    """
    g = torch.Generator().manual_seed(1)
    Hs = (V.shape[0], R, V.shape[2] - T + 1)
    H = torch.rand(Hs, generator=g).to(device, V.dtype)
    W = torch.rand(V.shape[1], R, T, generator=g).to(device, V.dtype)
    t = lambda f: timed(lambda: [f() for _ in range(10)], device) / 10 * 1e3  # noqa: E731
    n_pull = 1 if beta == 1 else 2

    def total(t_fwd, t_in, t_wt):
        if beta == 2:
            return t_in + t_wt  # V pulled back through the operator; the Gram terms are small
        return 2 * t_fwd + n_pull * (t_in + t_wt)

    convs = total(t(lambda: F.conv1d(H, W.flip(2), padding=T - 1)),
                  t(lambda: torch.nn.grad.conv1d_input(H.shape, W.flip(2), V, padding=T - 1)),
                  t(lambda: torch.nn.grad.conv1d_weight(H, W.shape, V, padding=T - 1)))
    # product form: Y = Wf X, H-side pull Wf^T G (+ a strided sum over the lags), W-side G X^T
    N, C, L_out = V.shape
    Wf = W.flip(2).reshape(C, R * T)
    X = torch.rand(N, R * T, L_out, generator=g).to(device, V.dtype)
    Y = torch.empty_like(V)
    P = torch.empty(N, R * T, L_out, device=device, dtype=V.dtype)
    products = total(t(lambda: torch.matmul(Wf, X, out=Y)),
                     t(lambda: torch.matmul(Wf.t(), V, out=P)),
                     t(lambda: V[0] @ X[0].t()))
    return min(convs, products)


# ------------------------------------------------------------------ main
def best_times(jobs, device, rounds: int = 5) -> dict:
    """Best wall time (s) of each ``(runner, n)`` job (``runner.run(n)``) over ``rounds`` rounds.

    The jobs take turns within each round, so that a slow stretch of a shared
    machine falls on every library alike instead of on whichever was being
    timed then: the benchmark reports ratios. Before each job the process
    idles for ``SETTLE_S``: after a BLAS call OpenBLAS's worker threads (used
    by NumPy and scikit-learn) keep spinning on the cores for a while, and a
    torch job started in that window ran ~2x slower (nmfcore's 7 HALS
    iterations right after scikit-learn's CD: 106-133 ms; after 0.2 s idle:
    58-67 ms; CD itself was not affected; 2026-12-02, 2-core VM).
    """
    best = {job: float("inf") for job in jobs}
    for _ in range(rounds):
        for job in jobs:
            r, n = job
            if device == "cpu":
                time.sleep(SETTLE_S)
            best[job] = min(best[job], timed(lambda: r.run(n), device, repeat=1))
    return best


SETTLE_S = 0.25  # idle time before each timed job (see best_times)


def measure(runners, target: float, args, label: str) -> dict:
    """Per runner: ms per iteration (difference of the best times of 10 and 10 + n iterations), loss after
    ``args.n_fixed`` iterations, iterations and time to ``target``; all timings interleaved (:func:`best_times`)."""
    n1, n2 = 10, 10 + args.n_per_iter
    hits = {r: r.iters_to(target, args.n_max) for r in runners}
    jobs = [(r, n) for r in runners for n in (n1, n2)] + [(r, n) for r, n in hits.items() if n]
    t = best_times(list(dict.fromkeys(jobs)), runners[0].device)
    res = {}
    for r in runners:
        ms_iter = (t[r, n2] - t[r, n1]) / (n2 - n1) * 1e3
        loss_fixed = r.loss(r.run(args.n_fixed))
        n_hit = hits[r]
        t_hit = t[r, n_hit] if n_hit else None
        print(f"  {label} {r.name:12s} {ms_iter:7.2f} ms/it  loss@{args.n_fixed}={loss_fixed:.6g}  "
              f"to target: {n_hit} it, {t_hit if t_hit is None else round(t_hit * 1e3, 1)} ms", flush=True)
        res[r.name] = dict(ms_iter=ms_iter, loss=loss_fixed, iters_to_target=n_hit, time_to_target=t_hit)
    return res


def bench_nmf(args, device):
    F_, T_, R = (257, 500, 10) if args.quick else (1025, 2000, 20)
    V = spectrogram_like(F_, T_, 0, device)
    g = torch.Generator().manual_seed(7)
    scale = float(V.mean() / R) ** 0.5
    W0 = (torch.rand(F_, R, generator=g) * scale).to(device)  # scikit-learn W (F, R)
    H0 = (torch.rand(R, T_, generator=g) * scale).to(device)  # scikit-learn H (R, T)
    rows = []
    for beta in args.betas:
        runners = [Ours(V, W0, H0, beta, device)]
        if beta == 2:
            runners.append(OursMU(V, W0, H0, beta, device))
        runners.append(TorchNMF(V, W0, H0, beta, device))
        if device == "cpu":
            runners.append(Sklearn(V, W0, H0, beta, device))
            if beta == 2:
                runners.append(SklearnCD(V, W0, H0, beta, device))
        ref = next((r for r in runners if r.name == "sklearn-mu"), next(r for r in runners if r.name == "torchnmf"))
        target = ref.loss(ref.run(args.n_fixed))
        floor = gemm_floor(V, R, beta, device)
        res = measure(runners, target, args, f"beta={beta:g}")
        refs = [v["time_to_target"] for k, v in res.items() if not k.startswith("nmfcore") and v["time_to_target"]]
        best_ref = min(refs) if refs else None
        ours = res["nmfcore"]
        row = dict(beta=beta, target=target, floor_ms=floor, results=res,
                   ratio_to_best_ref=(ours["time_to_target"] / best_ref) if best_ref and ours["time_to_target"] else None,
                   ratio_to_products=ours["ms_iter"] / floor)
        print(f"  beta={beta:g}: products alone {floor:.2f} ms/it; nmfcore/products = {row['ratio_to_products']:.2f}; "
              f"nmfcore time-to-target / best reference = {row['ratio_to_best_ref']}", flush=True)
        rows.append(row)
    return rows


class OursD(Runner):
    name = "nmfcore"
    solver = "auto"
    X = property(lambda self: self.V)

    def model(self):
        return NMFD(W=self.W0.clone(), H=self.H0.clone())

    def run(self, n):
        m = self.model()
        m.fit(self.V, beta=self.beta, tol=0, max_iter=n)
        return m

    def loss(self, m):
        with torch.no_grad():
            return loss64(m(), self.V, self.beta)

    iters_to = Ours.iters_to


class TorchNMFD(TorchNMF):
    def model(self):
        import torchnmf.nmf as tn

        return tn.NMFD(W=self.W0.clone(), H=self.H0.clone()).to(self.device)

    def run(self, n):
        m = self.model()
        m.fit(self.V, beta=self.beta, tol=-1e30, max_iter=n)
        return m

    def advance(self, m):
        m.fit(self.V, beta=self.beta, tol=-1e30, max_iter=1)
        return m

    def loss(self, m):
        with torch.no_grad():
            return loss64(m(), self.V, self.beta)


def bench_nmfd(args, device):
    F_, T_, R, K = (129, 300, 4, 4) if args.quick else (513, 1000, 8, 8)
    V = spectrogram_like(F_, T_, 1, device).unsqueeze(0)
    g = torch.Generator().manual_seed(8)
    scale = float(V.mean() / (R * K)) ** 0.5
    W0 = (torch.rand(F_, R, K, generator=g) * scale).to(device)
    H0 = (torch.rand(1, R, T_ - K + 1, generator=g) * scale).to(device)
    rows = []
    for beta in args.betas:
        ours, ref = OursD(V, W0, H0, beta, device), TorchNMFD(V, W0, H0, beta, device)
        target = ref.loss(ref.run(args.n_fixed))
        floor = conv_floor(V, R, K, beta, device)
        res = measure([ours, ref], target, args, f"NMFD beta={beta:g}")
        row = dict(beta=beta, target=target, floor_ms=floor, results=res,
                   speedup_per_iter=res["torchnmf"]["ms_iter"] / res["nmfcore"]["ms_iter"],
                   ratio_to_convs=res["nmfcore"]["ms_iter"] / floor)
        if res["nmfcore"]["time_to_target"] and res["torchnmf"]["time_to_target"]:
            row["speedup_to_target"] = res["torchnmf"]["time_to_target"] / res["nmfcore"]["time_to_target"]
        print(f"  NMFD beta={beta:g}: convolutions alone {floor:.2f} ms/it; nmfcore/convs = {row['ratio_to_convs']:.2f}; "
              f"speed-up vs torchnmf per iteration {row['speedup_per_iter']:.2f}x, "
              f"to target {row.get('speedup_to_target')}", flush=True)
        rows.append(row)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small problem (smoke test)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--betas", default="2,1,0.5,0")
    p.add_argument("--skip-nmfd", action="store_true")
    p.add_argument("--skip-nmf", action="store_true")
    p.add_argument("--json", default=None, help="write the results to this file")
    args = p.parse_args(argv)
    args.betas = [float(b) for b in args.betas.split(",")]
    args.n_fixed = 50 if args.quick else 200
    args.n_per_iter = 20 if args.quick else 40
    args.n_max = 150 if args.quick else 600
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}, "
          f"{platform.processor() or platform.machine()}", flush=True)
    out = {"torch": torch.__version__, "threads": torch.get_num_threads(), "device": args.device}
    if not args.skip_nmf:
        print("NMF", flush=True)
        out["nmf"] = bench_nmf(args, args.device)
    if not args.skip_nmfd:
        print("NMFD", flush=True)
        out["nmfd"] = bench_nmfd(args, args.device)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1, default=float)
    return out


if __name__ == "__main__":
    main()
