"""The one iteration loop shared by every fit in nmfcore.

Models and solvers provide a ``step()`` that updates the parameters in place
and a ``loss()`` that returns the current objective; this loop owns the
stopping rule, the progress bar and the callback.
"""

from __future__ import annotations

import math
import time
import warnings
from typing import Callable, Optional

from .exceptions import ConvergenceWarning

__all__ = ["run_iterations", "cuda_graphed"]

Callback = Callable[[int, float], Optional[bool]]

# Longest time between two progress reports: between the checks, a fit that
# has a callback or a progress bar also reports once this many seconds have
# passed (``None`` turns it off), so that slow models show progress.
REPORT_SECONDS: Optional[float] = 1.0


def run_iterations(step: Callable[[], None], loss: Callable[[], float], *, max_iter: int, tol: float,
                   check_every: int = 10, callback: Callback | None = None, verbose: bool = False,
                   desc: str = "fit", patience: Optional[int] = None) -> int:
    """Iterate ``step`` up to ``max_iter`` times and return the number of steps taken.

    Every ``check_every`` iterations (and after the last one) the objective
    is evaluated, passed to ``callback(iteration, loss)`` and tested against
    the tolerance as in the reference: the fit stops when
    ``(e_prev - e) / e_0 < tol`` with ``e = sqrt(2 * loss)``. ``tol <= 0``
    never stops early. A callback returning ``True`` stops the fit. When
    nothing would read it (``tol <= 0``, no callback, no progress bar) the
    objective is not evaluated at all.

    ``patience`` (an int >= 1) replaces that rule by the one for objectives
    that are not monotone (stochastic solvers, whose loss can rise for an
    epoch and then fall below its best): the fit stops once ``patience``
    checks in a row have not lowered the best ``e`` so far by ``tol * e_0``.
    On a non-increasing objective ``patience=1`` is the reference rule (the
    best is the previous value).

    With a callback or a progress bar, the loop also reports between the
    checks whenever :data:`REPORT_SECONDS` have passed since the last
    report: the callback and the bar see that iteration and its loss, but
    the stopping rule still compares the checks only, so it does not depend
    on the machine's speed.
    """
    if tol <= 0 and callback is None and not verbose:
        for _ in range(max_iter):
            step()
        return max_iter
    loss0 = float(loss())
    if callback is not None and callback(0, loss0):
        return 0
    err0 = math.sqrt(2 * max(loss0, 0.0))
    prev = best = err0
    waited = 0
    bar = None
    if verbose:
        from tqdm.auto import tqdm

        bar = tqdm(total=max_iter, desc=desc, leave=False)
    n = 0
    stopped = False
    interval = REPORT_SECONDS if callback is not None or bar is not None else None
    last_report = time.monotonic()
    try:
        for n in range(1, max_iter + 1):
            step()
            check = not n % check_every or n == max_iter
            if not check and (interval is None or time.monotonic() - last_report < interval):
                continue
            value = float(loss())
            last_report = time.monotonic()
            if bar is not None:
                bar.set_postfix(loss=f"{value:.4g}")
                bar.update(n - bar.n)
            if callback is not None and callback(n, value):
                stopped = True
                break
            if not check:
                continue
            err = math.sqrt(2 * max(value, 0.0))
            if patience is None:
                if tol > 0 and (err0 == 0 or (prev - err) / err0 < tol):
                    stopped = True
                    break
            elif tol > 0:
                # the patient rule: checks in a row without a new best by tol * e_0
                waited = 0 if err0 > 0 and (best - err) / err0 >= tol else waited + 1
                best = min(best, err)
                if err0 == 0 or waited >= patience:
                    stopped = True
                    break
            prev = err
    finally:
        if bar is not None:
            bar.close()
    if not stopped and tol > 0 and max_iter > 0:
        warnings.warn(f"fit stopped at max_iter={max_iter} before reaching tol={tol:g}",
                      ConvergenceWarning, stacklevel=3)
    return n


CUDA_GRAPHS = True  # module switch: tests compare the graphed and the eager loop
GRAPH_WARMUP = 2  # eager iterations before the capture (lazy buffers, tables, cuBLAS workspaces)
GRAPH_MIN_ITER = 20  # below this a capture (a few ms) does not pay


def cuda_graphed(step: Callable[[], None], device) -> Callable[[], None]:
    """``step`` replayed from a CUDA graph: one launch per iteration instead of dozens.

    On a GPU an iteration of a small factorisation is bound by the launches of
    its tens of kernels, not by the arithmetic (the GPU idles most of an
    iteration between launches). The first
    ``GRAPH_WARMUP`` calls run eagerly (they allocate the workspace and build
    the exponent tables); the next one captures ``step`` into a
    :class:`torch.cuda.CUDAGraph` and every call replays it. ``step`` must
    update tensors in place, allocate nothing that outlives it and never
    synchronise with the host (the multiplicative updates satisfy this).
    Where the capture fails the loop goes on eagerly; the result is the same
    either way (``tests/test_nmf.py`` compares the two on a GPU).
    """
    import torch

    state = {"calls": 0, "graph": None, "eager": False}

    def run() -> None:
        if state["graph"] is not None:
            replay()
            return
        state["calls"] += 1
        if state["eager"] or state["calls"] <= GRAPH_WARMUP:
            step()
            return
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.device(device), torch.cuda.graph(graph):
                step()  # recorded, not run
        except Exception:  # noqa: BLE001 - any failure to capture falls back to the eager loop
            state["eager"] = True
            torch.cuda.synchronize(device)
            step()
            return
        state["graph"] = graph
        replay()

    def replay() -> None:
        with torch.cuda.device(device):
            state["graph"].replay()

    return run
