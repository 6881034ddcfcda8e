r"""Multiplicative updates for the beta-divergence ([1]_, [2]_).

``X <- X * (neg / (pos + penalties)) ** gamma`` with the parts of
:meth:`~.problem.Problem.terms` and the exponent and certified
over-relaxation of :func:`nmfcore.divergence.multiplicative_step`: the
objective never increases.

References
----------
.. [1] D. D. Lee and H. S. Seung, "Algorithms for non-negative matrix
   factorization", NIPS 2001.
.. [2] C. Févotte and J. Idier, "Algorithms for nonnegative matrix
   factorization with the beta-divergence", Neural Computation 23(9), 2011.
"""

from __future__ import annotations

from .. import divergence as div
from .base import Solver

__all__ = ["MultiplicativeUpdates", "MU_RELAX"]

#: Over-relaxation factors of the multiplicative step, each used only where certified monotone
#: (:func:`nmfcore.divergence.multiplicative_step`): about half the iterations of the plain update
#: to a given loss.
MU_RELAX = (1.9, 1.3)


class MultiplicativeUpdates(Solver):
    """The multiplicative update of every trainable factor, through the problem's operator.

    Parameters
    ----------
    problem : Problem
    hook : callable, optional, keyword-only
        ``hook(which, neg, pos) -> (neg, pos)`` between the parts and the step.
    relax : float or tuple of float, optional, keyword-only
        Over-relaxation factors (default: the module's :data:`MU_RELAX`); 1 for the plain update.

    Examples
    --------
    >>> import torch
    >>> from nmfcore.operators import MatrixProduct
    >>> from nmfcore.solvers import Problem
    >>> g = torch.Generator().manual_seed(0)
    >>> V = torch.rand(6, 5, generator=g)
    >>> W = (torch.rand(5, 2, generator=g) + 0.1).requires_grad_()  # trainable
    >>> H = (torch.rand(6, 2, generator=g) + 0.1).requires_grad_()
    >>> prob = Problem(MatrixProduct(), W, H, V, beta=1)
    >>> seen = []
    >>> mu = MultiplicativeUpdates(prob, hook=lambda which, neg, pos: (seen.append(which), (neg, pos))[1])
    >>> before = prob.objective(); mu.step()
    >>> seen, prob.objective() <= before
    (['W', 'H'], True)
    """

    def __init__(self, problem, *, hook=None, relax=None):
        super().__init__(problem, hook=hook)
        self.relax = MU_RELAX if relax is None else relax

    def terms(self, which):
        return self.problem.terms(which)

    def apply(self, which, neg, pos):
        p = self.problem
        # Virtanen's continuity update is applied plain: the over-relaxation is certified for the divergence alone
        relax = 1.0 if which == "H" and p.continuity else self.relax
        div.multiplicative_step(p.factor(which), neg, pos, p.beta, *p.penalty[which], relax=relax)
