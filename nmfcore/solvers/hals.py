r"""Hierarchical alternating least squares (HALS) for beta = 2 ([1]_).

For the matrix product only: the update of ``W`` (or ``H``) is an exact
minimisation over one column at a time of
:math:`\tfrac12 \mathrm{tr}(X G X^T) - \mathrm{tr}(P^T X)` (plus penalties)
with ``P = V^T H`` and ``G = H^T H`` (``V W`` and ``W^T W`` for ``H``): the
negative part of the gradient and the Gram matrix whose product with ``X``
is the positive part. Those two are the parts this solver hands to the hook
(a mini-batch HALS sums them over batches).

References
----------
.. [1] N. Gillis and F. Glineur, "Accelerated multiplicative updates and
   hierarchical ALS algorithms for nonnegative matrix factorization",
   Neural Computation 24(4), 2012.
"""

from __future__ import annotations

import warnings
from typing import Callable, List

import numpy as np
import torch
from torch import Tensor

from .. import divergence as div
from ..exceptions import ParameterError
from ..operators import MatrixProduct
from .base import Solver

__all__ = ["HALS", "HALS_MAX_SWEEPS", "HALS_STOP"]


class HALS(Solver):
    """Accelerated HALS sweeps on the matrix product (beta = 2).

    ``terms(which)`` is ``(P, G)``: ``(V^T H, H^T H)`` for ``W``, ``(V W, W^T W)``
    for ``H`` (the negative part of the gradient and the Gram matrix, the
    positive part being ``X @ G``); ``apply`` runs :func:`_hals_update`.

    Parameters
    ----------
    problem : Problem
        With a :class:`~nmfcore.operators.MatrixProduct` operator and beta = 2.
    hook : callable, optional, keyword-only
        ``hook(which, P, G) -> (P, G)``.

    Examples
    --------
    >>> import torch
    >>> from nmfcore.operators import MatrixProduct
    >>> from nmfcore.solvers import Problem
    >>> g = torch.Generator().manual_seed(0)
    >>> V = torch.rand(6, 5, generator=g)
    >>> W = (torch.rand(5, 2, generator=g) + 0.1).requires_grad_()
    >>> H = (torch.rand(6, 2, generator=g) + 0.1).requires_grad_()
    >>> prob = Problem(MatrixProduct(), W, H, V, beta=2)
    >>> before = prob.objective(); HALS(prob).step()
    >>> prob.objective() <= before
    True
    """

    def __init__(self, problem, *, hook=None):
        if not isinstance(problem.operator, MatrixProduct) or problem.beta != 2:
            raise ParameterError(f"HALS needs the matrix product and beta=2, got {type(problem.operator).__name__} "
                                 f"and beta={problem.beta:g}")
        super().__init__(problem, hook=hook)
        self.floor = div.eps_for(problem.V.dtype) * 1e-3
        self._keep: dict = {}

    def terms(self, which):
        p = self.problem
        P, G = p.operator.gram_terms(which, p.V, p.W, p.H, p.workspace)
        if which == "H":
            # W is final for this iteration: the loss reuses V W while W is unchanged
            p.workspace.store(p.V, "VW", (p.W, P, p.W._version))
        return P, G

    def apply(self, which, P, G):
        p = self.problem
        frozen = p.frozen.get(which)
        keep = () if frozen is None else self._keep.setdefault(which, tuple(frozen[0].tolist()))
        _hals_update(p.factor(which), P, G, *p.penalty[which], self.floor, keep=keep)


def _hals_sweep_py(Xt: Tensor, Pi: Tensor, Gs: Tensor, rows: List[int], floor: float, tmp: Tensor,
                   before: Tensor) -> float:
    """One pass over ``rows`` of ``Xt``: x_r <- max(floor, pi_r - Gs[r] X) (see :func:`_hals_update`).

    Returns the squared norm of the change (``before`` is scratch space).
    """
    before.copy_(Xt)
    XtT = Xt.t()
    for r in rows:
        torch.addmv(Pi[r], XtT, Gs[r], alpha=-1.0, out=tmp)
        torch.clamp_min(tmp, floor, out=Xt[r])
    return float(before.sub_(Xt).square().sum())


def _numpy_sweeper(Xt: Tensor, Pi: Tensor, Gs: Tensor, rows: List[int], floor: float, tmp: Tensor,
                   before: Tensor) -> Callable[[], float]:
    """The same sweep through NumPy views of CPU tensors: the loop is dispatch-bound,
    and NumPy's per-call overhead is a fraction of torch's."""
    X, P, G, t, b = Xt.numpy(), Pi.numpy(), Gs.numpy(), tmp.numpy(), before.numpy()
    plan = [(G[r], P[r], X[r]) for r in rows]
    dot, subtract, maximum, copyto = np.dot, np.subtract, np.maximum, np.copyto

    def sweep() -> float:
        copyto(b, X)
        for g, p, x in plan:
            dot(g, X, out=t)
            subtract(p, t, out=t)
            maximum(t, floor, out=x)
        d = subtract(b, X, out=b).ravel()
        return float(dot(d, d))

    return sweep


_SWEEP = []


def _torch_sweeper(Xt: Tensor, Pi: Tensor, Gs: Tensor, rows: List[int], floor: float, tmp: Tensor,
                   before: Tensor) -> Callable[[], float]:
    """The sweep in torch for any device, compiled with TorchScript on first use (faster: the
    loop is dispatch-bound); plain Python where TorchScript is unavailable."""
    if not _SWEEP:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _SWEEP.append(torch.jit.script(_hals_sweep_py))
        except Exception:  # pragma: no cover - depends on the torch build
            _SWEEP.append(_hals_sweep_py)
    return lambda: _SWEEP[0](Xt, Pi, Gs, rows, floor, tmp, before)


def _hals_sweeper(Xt: Tensor, Pi: Tensor, Gs: Tensor, rows: List[int], floor: float) -> Callable[[], float]:
    """A function running one sweep in place and returning its squared change:
    NumPy for CPU float32/float64, torch otherwise."""
    tmp = torch.empty(Xt.shape[1], dtype=Xt.dtype, device=Xt.device)
    before = torch.empty_like(Xt)
    numpy_ok = Xt.device.type == "cpu" and Xt.dtype in (torch.float32, torch.float64)
    return (_numpy_sweeper if numpy_ok else _torch_sweeper)(Xt, Pi, Gs, rows, floor, tmp, before)


HALS_MAX_SWEEPS = 6
HALS_STOP = 0.05


def _hals_update(X: Tensor, P: Tensor, G: Tensor, l1: float, l2: float, floor: float,
                 max_sweeps: int = HALS_MAX_SWEEPS, keep: tuple = ()):
    r"""Accelerated HALS sweeps over the columns of ``X`` ([5]_).

    Minimises :math:`\tfrac12 \mathrm{tr}(X G X^T) - \mathrm{tr}(P^T X) + l_1 \|X\|_1
    + \tfrac{l_2}{2}\|X\|^2` over ``X >= floor`` one column at a time; each
    column update is exact, so the objective never increases:
    :math:`x_r \leftarrow \max(\text{floor}, (p_r - l_1 - \sum_{j \ne r} G_{jr} x_j) / G_{rr})`
    (columns with :math:`G_{rr} = 0` do not enter the objective and are kept).
    As in Gillis and Glineur's accelerated HALS the sweep is repeated
    (reusing ``P`` and ``G``, whose computation costs several sweeps) while it
    still changes ``X`` by more than ``sqrt(HALS_STOP)`` (about a fifth) of
    the first sweep's change, at most ``max_sweeps`` times (the values were
    tuned to reach a given loss fastest). ``P`` is not modified. The columns in
    ``keep`` are not updated (frozen templates): the others are minimised with
    them fixed, so the objective still never increases.
    """
    R = X.shape[1]
    if l2:
        G = G + l2 * torch.eye(R, dtype=G.dtype, device=G.device)
    diag = G.diagonal()
    inv = torch.where(diag > 0, 1.0 / diag, torch.zeros_like(diag))
    Gs = G * inv[:, None]  # row r: G[r] / G[r, r] without the diagonal
    Gs.fill_diagonal_(0)
    Pi = torch.empty(P.shape[::-1], dtype=P.dtype, device=P.device)  # (R, n), rows contiguous
    torch.mul(P.t(), inv[:, None], out=Pi)
    if l1:
        Pi.sub_(l1 * inv[:, None])
    rows = [r for r in torch.nonzero(diag > 0)[:, 0].tolist() if r not in keep]
    Xt = X.t().contiguous()  # components as contiguous rows
    sweep = _hals_sweeper(Xt, Pi, Gs, rows, floor)
    first = None
    for _ in range(max_sweeps):
        change = sweep()
        if first is None:
            first = change
        elif change <= HALS_STOP * first:  # ||dX|| <= sqrt(HALS_STOP) ||dX_1||
            break
    X.copy_(Xt.t())
