"""The fitting problem a solver works on: data, factors, penalties, operator and workspace.

A :class:`Problem` is the seam between the models and the solvers. It hands
out each factor's gradient parts (:meth:`Problem.terms`), evaluates the
objective, and owns the rescaling of the data and the frozen columns, so
that every solver gets them for free.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import Tensor

from .._workspace import Workspace
from ..exceptions import ParameterError
from ..operators import Operator
from ..penalties import temporal_continuity, temporal_continuity_terms

__all__ = ["Problem"]


class Problem:
    r"""One fit of ``V ~ operator(H, W)``, rescaled so that ``max(V)`` lies in [1, 2).

    The beta-divergence is homogeneous, ``d(sV | sY) = s**beta d(V | Y)``, and
    every reconstruction is linear in ``H`` and in ``W``: fitting ``V / s``
    with the scale moved into one trainable factor (the *carrier*) follows
    the same path as fitting ``V`` while keeping every intermediate value
    near 1 (data from 1e-30 to 1e30 fits in float32). ``s`` is a power of
    two, so the rescaling is exact, and data already within [2**-10, 2**10]
    is not copied at all. Penalties are rescaled to keep the objective the
    same, and :meth:`objective` reports it in the original units.
    :meth:`restore` moves the scale back (call it when the fit ends, also on
    errors).

    Parameters
    ----------
    operator : Operator
        The model's forward operator.
    W, H : torch.Tensor
        The factors (parameters); updated in place (their ``.detach()``).
        A factor with ``requires_grad=False`` is not trainable.
    V : torch.Tensor
        Data of the operator's output shape (dense or sparse COO).
    beta : float
    l1, l2 : float, default 0
        Penalties :math:`l_1 \|X\|_1 + \tfrac{l_2}{2} \|X\|_2^2` on both factors.
    continuity : float, default 0
        Weight of the temporal-continuity penalty on ``H`` along ``time_axis``.
    time_axis : int, optional
    vmax : float, optional
        ``max(V)`` if known.
    frozen_W_columns : sequence of int, optional
        Components whose templates ``W[:, r]`` the solvers never change.

    Attributes
    ----------
    V, W, H : torch.Tensor
        The (rescaled) data and factors the solvers update.
    trainable : tuple of str
        ``'W'``, ``'H'``, in update order.
    penalty : dict
        ``{'W': (l1, l2), 'H': (l1, l2)}`` in the rescaled problem.
    workspace : Workspace
        Scratch buffers and the values cached from ``V`` (this problem's own).
    """

    def __init__(self, operator: Operator, W: Tensor, H: Tensor, V: Tensor, beta: float, *, l1: float = 0.0,
                 l2: float = 0.0, continuity: float = 0.0, time_axis: Optional[int] = None,
                 vmax: Optional[float] = None, frozen_W_columns: Optional[Sequence[int]] = None):
        self.operator = operator
        self.beta = beta
        self.W = W.detach()
        self.H = H.detach()
        self.trainable = tuple(n for n, p in (("W", W), ("H", H)) if p.requires_grad)
        self.time_axis = time_axis
        self.workspace = Workspace()
        # the factor that carries the scale
        self.carrier = self.H if "H" in self.trainable else (self.W if "W" in self.trainable else None)
        if vmax is None:
            vmax = float((V.coalesce().values() if V.is_sparse else V).max()) if V.numel() else 0.0
        e = math.floor(math.log2(vmax)) if vmax > 0 else 0
        if self.carrier is None or abs(e) <= 10:
            e = 0
        s = self.s = 2.0 ** e
        if V.is_sparse:
            V = V.coalesce()
            if s != 1.0:
                V = torch.sparse_coo_tensor(V.indices(), V.values() / s, V.shape, check_invariants=False).coalesce()
        else:
            V = V if s == 1.0 else V / s  # the quotient keeps V's memory layout
            # a strided V is copied once where the updates pass over it elementwise and the
            # operator cannot write its reconstruction in V's layout (matrix products take any)
            if operator.passes_over_data(beta) and not operator.reconstructs_in_layout(V):
                V = V.contiguous()
        self.V = V
        # objective / s**beta: penalty on the carrier scales by s**(1-beta) (L1)
        # and s**(2-beta) (L2); on the other factor by s**(-beta).
        sb = s ** (-beta)
        pen = {"W": (l1 * sb, l2 * sb), "H": (l1 * sb, l2 * sb)}
        if self.carrier is not None:
            key = "H" if self.carrier is self.H else "W"
            pen[key] = (l1 * sb * s, l2 * sb * s * s)
        self.penalty = pen
        # the continuity penalty does not change with the scale of H
        self.continuity = continuity * sb
        self.loss_scale = s ** beta
        if s != 1.0:
            self.carrier.div_(s)
        self.frozen = {}
        if frozen_W_columns is not None and "W" in self.trainable:
            cols = torch.as_tensor(list(frozen_W_columns), dtype=torch.long)
            if cols.numel():
                if int(cols.min()) < 0 or int(cols.max()) >= self.W.shape[1]:
                    self.restore()
                    raise ParameterError(f"frozen_W_columns={list(frozen_W_columns)!r} must index the "
                                         f"{self.W.shape[1]} components of W")
                cols = cols.to(self.W.device)
                self.frozen["W"] = (cols, self.W.index_select(1, cols))

    def factor(self, which: str) -> Tensor:
        """The factor ``'W'`` or ``'H'`` (rescaled), updated in place by the solvers."""
        return self.W if which == "W" else self.H

    def terms(self, which: str):
        """``(neg, pos)``: the negative and positive parts of the gradient of the objective with respect
        to ``which`` (without the L1/L2 penalties, which :func:`~nmfcore.divergence.multiplicative_step`
        adds); ``pos`` may broadcast (beta = 1)."""
        neg, pos = self.operator.terms(which, self.V, self.W, self.H, self.beta, self.workspace)
        if which == "H" and self.continuity:
            tc_neg, tc_pos = temporal_continuity_terms(self.H, self.time_axis)
            neg = torch.add(neg, tc_neg, alpha=self.continuity)
            pos = torch.add(pos, tc_pos, alpha=self.continuity)
        return neg, pos

    def keep_frozen(self, which: str) -> None:
        """Put the frozen columns of ``which`` back (after a solver changed the factor)."""
        frozen = self.frozen.get(which)
        if frozen is not None:
            self.factor(which).index_copy_(1, *frozen)

    def divergence(self) -> float:
        """The divergence of the rescaled problem (no penalties, rescaled units)."""
        return float(self.operator.loss(self.V, self.W, self.H, self.beta, self.workspace))

    def objective(self) -> float:
        """Divergence plus penalties, in the units of the original data."""
        value = self.divergence()
        for name, X in (("W", self.W), ("H", self.H)):
            l1, l2 = self.penalty[name]
            if l1:
                value += l1 * float(X.sum())
            if l2:
                value += 0.5 * l2 * float(X.square().sum())
        if self.continuity:
            value += self.continuity * float(temporal_continuity(self.H, self.time_axis))
        return value * self.loss_scale

    def restore(self) -> None:
        """Move the scale back into the carrier (once)."""
        if self.carrier is not None and self.s != 1.0:
            self.carrier.mul_(self.s)
        self.carrier = None
