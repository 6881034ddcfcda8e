r"""Expectation-maximisation for PLCA ([1]_, [2]_), a solver on the seam.

PLCA's reconstruction is an NMF-family operator (:mod:`nmfcore.operators`)
applied to ``H`` and the templates weighted by ``Z``. For one factor ``X``,
the E-step's expected counts are the numerator of the KL (beta = 1)
multiplicative step, ``X * J^T (V / Y)``: :meth:`EMProblem.terms` asks the
operator for them (the same closed forms and product-form pull-backs as the
multiplicative updates). The M-step, :meth:`EM.apply`, adds the Dirichlet
prior counts ``alpha - 1``, clamps at zero and renormalises, for ``Z`` (from
the per-component totals) and for the factor.

Two orders of the blocks (``EMProblem(joint=...)``):

- *joint* (textbook EM, the default of :meth:`nmfcore.plca.BaseComponent.fit`
  without a mask): one E-step, :meth:`EMProblem.e_step`, gives the counts of
  ``W``, ``H`` and ``Z`` from the same posterior (one reconstruction, one
  ratio ``V / Y``, one pull-back per factor: three matrix products for
  PLCA), then the M-step sets all three. EM never decreases the
  log-posterior for ``alpha >= 1`` (the E-step's bound touches it at the
  current parameters and the M-step maximises the bound).
- *alternating*: ``W`` (with ``Z``) and then ``H`` (with ``Z``) take the
  step in turn, each from a fresh reconstruction (four products). Each step
  maximises the log-posterior over its block; without priors it is exactly
  the KL multiplicative update of NMF with the factors rescaled. Masked fits
  take this order (the weighted KL multiplicative step of each block).

References
----------
.. [1] P. Smaragdis and B. Raj, "Shift-Invariant Probabilistic Latent
   Component Analysis", Technical report TR2007-009, MERL, 2007.
.. [2] P. Smaragdis, B. Raj and M. Shashanka, "Sparse and shift-invariant
   feature extraction from non-negative data", ICASSP 2008.
"""

from __future__ import annotations

import math
import numbers
from typing import Optional, Union

import torch
from torch import Tensor

from .. import divergence as div
from .._workspace import Workspace
from ..operators import Operator
from .base import Solver

__all__ = ["EMProblem", "EM", "normalise", "m_step", "prior_term"]

Alpha = Union[float, Tensor]


def _component_dims(X: Tensor) -> list:
    """Every axis but the rank axis (1; a vector has only the rank axis)."""
    return [d for d in range(X.ndim) if d != 1] if X.ndim > 1 else [0]


def per_component(v: Tensor, X: Tensor) -> Tensor:
    """A (R,) vector shaped to broadcast along ``X``'s rank axis (axis 1)."""
    return v.reshape((1, -1) + (1,) * (X.ndim - 2)) if X.ndim > 1 else v


def normalise(X: Tensor) -> Tensor:
    """In place: every component of ``X`` sums to one (components summing to zero are left as they are).

    Examples
    --------
    >>> normalise(torch.tensor([[1.0, 0.0], [3.0, 0.0]]))
    tensor([[0.2500, 0.0000],
            [0.7500, 0.0000]])
    """
    s = X.sum(_component_dims(X), keepdim=X.ndim > 1)
    return X.div_(torch.where(s > 0, s, torch.ones_like(s)))


def m_step(X: Tensor, counts: Tensor, alpha: Alpha) -> None:
    """In place: ``X`` proportional to ``max(counts + alpha - 1, 0)`` per component.

    The maximiser of ``sum (counts + alpha - 1) log X`` over the simplex of
    each component (exact for ``alpha >= 1``; for ``alpha < 1`` the clamp is
    the sparse MAP estimate of [2]_). A component whose clamped counts are all
    zero keeps its values. ``counts`` is overwritten.

    Examples
    --------
    >>> Z = torch.full((2,), 0.5)
    >>> m_step(Z, torch.tensor([0.2, 0.6]), 1.0); Z
    tensor([0.2500, 0.7500])
    """
    if not (isinstance(alpha, numbers.Real) and alpha == 1):
        counts = counts.add_(alpha - 1).clamp_min_(0)
    s = counts.sum(_component_dims(X), keepdim=X.ndim > 1)
    keep = s <= 0
    counts.div_(torch.where(keep, torch.ones_like(s), s))
    X.copy_(torch.where(keep, X, counts))


def prior_term(X: Tensor, alpha: Alpha) -> Tensor:
    """``sum (alpha - 1) log X``, the log of a Dirichlet prior up to a constant (zeros floored at the dtype's
    tiny, so that it stays finite)."""
    if isinstance(alpha, numbers.Real) and alpha == 1:
        return X.new_zeros(())
    return (X.clamp_min(torch.finfo(X.dtype).tiny).log() * (alpha - 1)).sum()


class EMProblem:
    r"""One PLCA fit of ``V ~ norm * operator(H, W * Z)``, the seam's problem for :class:`EM`.

    The data is divided by a power of two ``s`` (exact) so that its maximum
    lies in [1, 2), and the templates carry the scale ``c = mass / s``: the
    reconstruction is then of the data's size (the floors at the dtype's
    epsilon never bite; data from 1e-30 to 1e30 fits in float32) and the
    ratio ``V / Y`` is that of the normalised data and model.

    Parameters
    ----------
    operator : Operator
        The NMF-family operator (matrix product or a convolution).
    W, H, Z : torch.Tensor
        The parameters (distributions; updated in place, their ``.detach()``);
        one with ``requires_grad=False`` is not trainable.
    V : torch.Tensor
        Dense data of the operator's output shape.
    alphas : dict
        ``{'W': ..., 'H': ..., 'Z': ...}``: Dirichlet parameters (floats or
        broadcastable tensors).
    mass : float
        ``V.sum()`` (with a mask, the observed mass ``(M V).sum()``).
    vmax : float
        ``max(V)``.
    mask : torch.Tensor, optional
        Non-negative weights broadcastable to ``V``: the data term is the
        weighted KL divergence, fitted by its multiplicative update's
        numerator over its denominator, ``X * J^T (M V / Y) / J^T M``, brought
        back to the scale of the unweighted counts by ``J^T 1``.
    joint : bool, default True
        One E-step for all blocks per iteration (see the module); False, or a
        mask, alternates the blocks.

    Attributes
    ----------
    trainable : tuple of str
        The blocks that :meth:`EM.step` updates, in order: ``'W'`` (with
        ``Z``), ``'H'`` (with ``Z``); ``('W',)`` if only ``Z`` is trainable.
    joint : bool
        Whether :meth:`EM.step` takes all blocks' counts from one E-step.
    """

    def __init__(self, operator: Operator, W: Tensor, H: Tensor, Z: Tensor, V: Tensor, *, alphas: dict,
                 mass: float, vmax: float, mask: Optional[Tensor] = None, joint: bool = True):
        self.operator = operator
        self.joint = bool(joint) and mask is None
        self.W, self.H, self.Z = W.detach(), H.detach(), Z.detach()
        self.train = {"W": W.requires_grad, "H": H.requires_grad, "Z": Z.requires_grad}
        blocks = tuple(b for b in ("W", "H") if self.train[b])
        self.trainable = blocks if blocks or not self.train["Z"] else ("W",)
        e = math.floor(math.log2(vmax)) if vmax > 0 else 0
        self.s = s = 2.0 ** e
        self.V = (V / s).contiguous() if s != 1.0 else V.contiguous()
        self.c = mass / s
        self.mask = mask
        self.alphas = alphas
        self.workspace = Workspace()

    def templates(self) -> Tensor:
        """``W * Z * c``: the operator's templates (a data-sized reconstruction)."""
        return self.W * per_component(self.Z * self.c, self.W)

    def terms(self, which: str):
        """``(counts, totals)``: the expected counts of ``which`` (in units of the normalised data, summing
        to one without a mask) and their per-component totals, the counts of ``Z``."""
        op, ws, A, H = self.operator, self.workspace, self.templates(), self.H
        X = A if which == "W" else H
        if self.mask is None:
            # here neg = J^T (V / Y): the numerator of the KL multiplicative step
            neg, _ = op.terms(which, self.V, A, H, 1.0, ws)
            counts = neg.mul(X).div_(self.c)
        else:
            M = self.mask
            Y = op.reconstruct_into(self.V, A, H, ws)
            ratio, _ = div.mu_terms(self.V, Y, 1.0)
            # here X * J^T (M V / Y) / J^T M * J^T 1 (J^T 1 is a sum over the other factor)
            neg, pos = op.pull(which, torch.stack([ratio.mul_(M), M.expand_as(Y)]), A, H, ws)
            ones = op.ones_pullback(which, A, H) if op.ones_pullback_is_sum else \
                op.pull(which, torch.ones_like(Y)[None], A, H, ws)[0]
            counts = neg.mul(X).mul_(ones).div_(pos.clamp_min(torch.finfo(neg.dtype).tiny)).div_(self.c)
        return counts, counts.sum(_component_dims(counts))

    def e_step(self) -> dict:
        """``{which: (counts, totals)}`` for every block of :attr:`trainable`, all from one posterior.

        One reconstruction ``Y``, the ratio ``V / Y`` in place in its buffer,
        and one pull-back of it per factor through the current templates
        (unmasked problems only).
        """
        op, ws, A, H = self.operator, self.workspace, self.templates(), self.H
        Y = op.reconstruct_into(self.V, A, H, ws)
        ratio, _ = div.mu_terms(self.V, Y, 1.0, out=Y)  # here V / max(Y, eps), in Y's buffer
        parts = {}
        for which in self.trainable:
            X = A if which == "W" else H
            # here X * J^T (V / Y) / c: the posterior-weighted counts (a pull-back may sit in a buffer that
            # the next one overwrites: the product is a new tensor)
            counts = op.pull(which, ratio[None], A, H, ws)[0].mul(X).div_(self.c)
            parts[which] = counts, counts.sum(_component_dims(counts))
        return parts

    def keep_frozen(self, which: str) -> None:
        """Nothing to put back: frozen parameters are never written (:meth:`EM.apply`)."""

    def objective(self) -> float:
        """The mass times the negative log-posterior less the data's entropy (KL(V | norm Y) without priors)."""
        Y = self.operator.reconstruct(self.H, self.templates())
        if self.mask is not None:
            # at the model's KL-optimal scale on the observed entries
            M = self.mask
            Y = Y * (float((self.V * M).sum()) / max(float((Y * M).sum()), torch.finfo(Y.dtype).tiny))
            data = float((M * div.elementwise_divergence(self.V, Y, 1.0)).sum())
        else:
            data = float(div.beta_divergence(self.V, Y, 1.0))
        prior = sum(float(prior_term(X, self.alphas[n])) for n, X in (("W", self.W), ("H", self.H), ("Z", self.Z)))
        return (data - self.c * prior) * self.s

    def norm(self) -> Tensor:
        """``V.sum()``, or with a mask the model's scale on the observed entries: ``norm * model()`` rebuilds V."""
        dtype, device = self.W.dtype, self.W.device
        if self.mask is None:
            return torch.tensor(self.c * self.s, dtype=dtype, device=device)
        Y = self.operator.reconstruct(self.H, self.W * per_component(self.Z, self.W))
        obs = float((Y * self.mask).sum(dtype=torch.float64))
        return torch.tensor(self.c * self.s / obs if obs > 0 else 0.0, dtype=dtype, device=device)


class EM(Solver):
    """EM for PLCA on the seam: ``terms`` are the expected counts, ``apply`` the M-step with the priors.

    Parameters
    ----------
    problem : EMProblem
    hook : callable, optional, keyword-only
        ``hook(which, counts, totals) -> (counts, totals)`` between the E- and the M-step (a distributed
        fit would all-reduce the counts here).

    Examples
    --------
    >>> import torch
    >>> from nmfcore.operators import MatrixProduct
    >>> g = torch.Generator().manual_seed(0)
    >>> V = torch.rand(6, 5, generator=g)
    >>> W = normalise(torch.rand(5, 2, generator=g)).requires_grad_()
    >>> H = normalise(torch.rand(6, 2, generator=g)).requires_grad_()
    >>> Z = torch.full((2,), 0.5).requires_grad_()
    >>> prob = EMProblem(MatrixProduct(), W, H, Z, V, alphas={"W": 1.0, "H": 1.0, "Z": 1.0},
    ...                  mass=float(V.sum()), vmax=float(V.max()))
    >>> before = prob.objective(); EM(prob).step()
    >>> prob.objective() <= before, round(float(prob.Z.sum()), 5)
    (True, 1.0)
    """

    def terms(self, which):
        return self.problem.terms(which)

    def step(self) -> None:
        """One EM iteration: a joint E-step then the M-step of every block, or the blocks in turn."""
        p = self.problem
        if not p.joint:
            return super().step()
        for which, (counts, totals) in p.e_step().items():
            if self.hook is not None:
                counts, totals = self.hook(which, counts, totals)
            self.apply(which, counts, totals)

    def apply(self, which, counts, totals):
        p = self.problem
        # jointly, every block's totals are the same posterior's counts of Z: take the first block's
        if p.train["Z"] and (not p.joint or which == p.trainable[0]):
            m_step(p.Z, totals, p.alphas["Z"])
        if p.train[which]:
            m_step(p.W if which == "W" else p.H, counts, p.alphas[which])
