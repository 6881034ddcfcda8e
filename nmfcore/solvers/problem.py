"""The fitting problem a solver works on: data, factors, penalties, operator and workspace.

A :class:`Problem` is the seam between the models and the solvers. It hands
out each factor's gradient parts (:meth:`Problem.terms`), evaluates the
objective, and owns the rescaling of the data and the frozen columns, so
that every solver gets them for free.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor

from .. import _scale
from .. import divergence as div
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
    near 1 (data from the smallest subnormal to the largest float fits).
    ``s`` is a power of two, so the rescaling is exact, and data already
    within [2**-10, 2**10] is not copied at all. ``initialize`` (the fit's
    ``init``) runs on the scaled data, and then, without penalties, the
    carrier is multiplied so that the starting product has the data's sum
    (:func:`nmfcore._scale.match_product`): the fit of ``c V`` is ``c``
    times the fit of ``V`` for every ``c > 0``, init and solver. Penalties
    are rescaled to keep the objective the same, and :meth:`objective`
    reports it in the original units (``inf`` where it exceeds the largest
    float).
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
        Components whose templates ``W[:, r]`` the solvers never change
        (nor ``initialize``, nor the matching of the starting product).
    initialize : callable, optional
        ``initialize(V_scaled)`` sets the trainable factors from the data
        (in place), before the starting product is matched.
    match_start : bool, default True
        Scale the starting product to the data's sum (what makes fits
        scale-equivariant). Turn it off where ``V`` is one shard of a larger
        problem (a data-parallel fit): each shard's own sum would start the
        processes from different products.
    mask : torch.Tensor, optional
        Non-negative weights broadcastable to ``V`` (dense): the divergence
        becomes :math:`\sum m\, d_\beta(v | \hat v)`; :meth:`terms`
        multiplies both output-space terms by it before the pull-back.

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
                 vmax: Optional[float] = None, frozen_W_columns: Optional[Sequence[int]] = None,
                 initialize: Optional[Callable[[Tensor], None]] = None, mask: Optional[Tensor] = None,
                 match_start: bool = True):
        self.operator = operator
        self.mask = mask
        self.beta = beta
        self.W = W.detach()
        self.H = H.detach()
        self.trainable = tuple(n for n, p in (("W", W), ("H", H)) if p.requires_grad)
        self.time_axis = time_axis
        self.workspace = Workspace()
        # the frozen columns are checked before anything changes (an error leaves W and H as they were)
        cols = None
        if frozen_W_columns is not None and "W" in self.trainable:
            cols = torch.as_tensor(list(frozen_W_columns), dtype=torch.long)
            if not cols.numel():
                cols = None
            elif int(cols.min()) < 0 or int(cols.max()) >= self.W.shape[1]:
                raise ParameterError(f"frozen_W_columns={list(frozen_W_columns)!r} must index the "
                                     f"{self.W.shape[1]} components of W")
            else:
                cols = cols.to(self.W.device)
        # the factor that carries the scale
        self.carrier = self.H if "H" in self.trainable else (self.W if "W" in self.trainable else None)
        if vmax is None:
            vmax = float((V.coalesce().values() if V.is_sparse else V).max()) if V.numel() else 0.0
        e = _scale.pow2_exponent(vmax) if self.carrier is not None else 0
        self.e = e
        self.s = _scale.pow2(e)
        if V.is_sparse:
            V = _scale.scale_pow2(V.coalesce(), -e)
        else:
            V = _scale.scale_pow2(V, -e)  # exact; the product keeps V's memory layout
            # a strided V is copied once where the updates pass over it elementwise and the
            # operator cannot write its reconstruction in V's layout (matrix products take any)
            if operator.passes_over_data(beta) and not operator.reconstructs_in_layout(V):
                V = V.contiguous()
        self.V = V
        # objective / s**beta: penalty on the carrier scales by s**(1-beta) (L1)
        # and s**(2-beta) (L2); on the other factor by s**(-beta) (as powers of two:
        # s**beta overflows a float for float64 data near 1e300)
        sb = _scale.pow2(-e * beta)
        times = _scale.times  # 0 * inf is 0 here: an absent penalty stays absent
        pen = {"W": (times(l1, sb), times(l2, sb)), "H": (times(l1, sb), times(l2, sb))}
        if self.carrier is not None:
            key = "H" if self.carrier is self.H else "W"
            pen[key] = (times(l1, _scale.pow2(e * (1 - beta))), times(l2, _scale.pow2(e * (2 - beta))))
        self.penalty = pen
        # the continuity penalty does not change with the scale of H
        self.continuity = times(continuity, sb)
        self.loss_scale = _scale.pow2(e * beta)  # inf where the loss in V's units is not a float
        self._start(initialize, vmax, cols, match=match_start and not (l1 or l2))
        self.frozen = {} if cols is None else {"W": (cols, self.W.index_select(1, cols))}

    def _start(self, initialize, vmax: float, cols: Optional[Tensor], match: bool) -> None:
        """The starting factors of the rescaled problem: ``initialize`` (the fit's ``init``) on the
        scaled data, then the carrier multiplied so that the starting product has the data's sum
        (:func:`nmfcore._scale.match_product`): the fit of ``c V`` is ``c`` times the fit of ``V``
        for every ``c > 0``, init and solver. Frozen columns of W keep their values in V's units.

        Where the carrier is W and has frozen columns (H frozen), the fixed part of the product
        cannot follow the data's scale: W is then divided by the exact power of two alone (the
        frozen columns come back bit for bit in :meth:`restore`) and the product is not matched.
        A penalised fit without ``initialize`` (not matched) divides the carrier by the same power
        of two, so that it starts from the given product (where that stays a normal number).
        """
        e, carrier = self.e, self.carrier
        kept = self.W.index_select(1, cols) if cols is not None else None
        frozen_carrier = kept is not None and carrier is self.W
        if initialize is not None:
            # on the data divided by its maximum (an exact copy of V's shape for every scale c:
            # NNDSVDa's fill with the mean is not homogeneous in V), and no overflow at 1e38;
            # the carrier then takes that maximum back (the product is near the scaled V)
            peak = math.ldexp(vmax, -e) if vmax > 0 else 1.0  # exact (2**1063 is no float)
            initialize(self.V if peak == 1.0 else _scale.divide(self.V, peak))
            if peak != 1.0 and carrier is not None:
                carrier.mul_(peak)
        elif frozen_carrier or (not match and carrier is not None and self._fits_scaled(carrier, -e)):
            # the current factors in the scaled units: the frozen columns, and a penalised fit's start
            # (not matched to the data, so a warm start stays the same product)
            _scale.mul_pow2_(carrier, -e)
        if kept is not None:
            # init re-drew every column: the frozen ones go back (in the scaled units if W carries the scale)
            self.W.index_copy_(1, cols, _scale.scale_pow2(kept, -e) if frozen_carrier else kept)
        # the starting product takes the data's scale (exact factor, not a power of two):
        # (penalties in V's units make the objective inhomogeneous: the start is kept then)
        if match and not frozen_carrier:
            _scale.match_product(self.operator, self.V, self.W, self.H, carrier, self.mask)

    @staticmethod
    def _fits_scaled(X: Tensor, e: int) -> bool:
        """Whether ``X * 2**e`` keeps its largest entry a finite normal number of X's dtype."""
        peak = float(X.abs().max()) if X.numel() else 0.0
        info = torch.finfo(X.dtype)
        return peak == 0.0 or info.tiny <= math.ldexp(peak, e) < info.max

    def factor(self, which: str) -> Tensor:
        """The factor ``'W'`` or ``'H'`` (rescaled), updated in place by the solvers."""
        return self.W if which == "W" else self.H

    def terms(self, which: str):
        """``(neg, pos)``: the negative and positive parts of the gradient of the objective with respect
        to ``which`` (without the L1/L2 penalties, which :func:`~nmfcore.divergence.multiplicative_step`
        adds); ``pos`` may broadcast (beta = 1)."""
        if self.mask is None:
            neg, pos = self.operator.terms(which, self.V, self.W, self.H, self.beta, self.workspace)
        else:
            neg, pos = self._masked_terms(which)
        if which == "H" and self.continuity:
            tc_neg, tc_pos = temporal_continuity_terms(self.H, self.time_axis)
            neg = torch.add(neg, tc_neg, alpha=self.continuity)
            pos = torch.add(pos, tc_pos, alpha=self.continuity)
        return neg, pos

    def _masked_terms(self, which: str):
        """The parts of the weighted divergence: the mask times each output-space term, pulled back."""
        op, M = self.operator, self.mask
        Y = op.reconstruct_into(self.V, self.W, self.H, self.workspace)
        neg_out, pos_out = div.mu_terms(self.V, Y, self.beta)
        # here neg = J^T (M V Y**(beta-2)), pos = J^T (M Y**(beta-1))
        G = torch.stack([neg_out * M, M.expand_as(Y) if pos_out is None else pos_out * M])
        neg, pos = op.pull(which, G, self.W, self.H, self.workspace)
        return neg, pos

    def keep_frozen(self, which: str) -> None:
        """Put the frozen columns of ``which`` back (after a solver changed the factor)."""
        frozen = self.frozen.get(which)
        if frozen is not None:
            self.factor(which).index_copy_(1, *frozen)

    def divergence(self) -> float:
        """The divergence of the rescaled problem (no penalties, rescaled units)."""
        if self.mask is not None:
            Y = self.operator.reconstruct(self.H, self.W)
            return float((self.mask * div.elementwise_divergence(self.V, Y, self.beta)).sum())
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
        return value * self.loss_scale if value else 0.0

    def restore(self) -> None:
        """Move the scale back into the carrier (once); near the largest float, part of it goes into
        the other factor where that one is trainable (the product is the same)."""
        if self.carrier is not None and self.s != 1.0:
            other = self.W if self.carrier is self.H else self.H
            trainable = ("W" if self.carrier is self.H else "H") in self.trainable
            _scale.restore_pow2_(self.carrier, other if trainable else None, self.e)
        self.carrier = None
