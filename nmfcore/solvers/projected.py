r"""Projected gradient with Hoyer's sparseness constraint ([1]_), and its step-size search.

A constrained factor takes a gradient step (the gradient is ``pos - neg``
from the problem's parts), every component is projected onto the target
sparseness, and the step is halved until the divergence does not increase
(:func:`search_step`); an unconstrained factor takes the multiplicative
update. :class:`nmfcore.trainer.SparsityProj` uses the same search.

References
----------
.. [1] P. O. Hoyer, "Non-negative matrix factorization with sparseness
   constraints", JMLR 5, 2004.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from .. import divergence as div
from .._hoyer import project_columns
from .base import Solver

__all__ = ["ProjectedGradient", "search_step", "STEP_SHRINK", "STEP_GROW", "STEP_TRIES"]

STEP_SHRINK = 0.5  # the step after a trial that increased the loss
STEP_GROW = 1.2  # the next call's first trial, after each call
STEP_TRIES = 10  # loss evaluations per call


def search_step(trial: Callable[[float], None], loss: Callable[[], object], reference, step: float,
                max_tries: int = STEP_TRIES):
    """Backtracking search: the first step size whose trial point does not increase the loss.

    Tries ``trial(step)`` (which sets the parameters to the projected trial
    point), ``trial(step * STEP_SHRINK)``, ... at most ``max_tries`` times,
    until ``loss() <= reference``.

    Parameters
    ----------
    trial : callable
        ``trial(step)`` moves the parameters to the trial point of that step.
    loss : callable
        The loss at the current parameters.
    reference : float or torch.Tensor
        The loss before the step.
    step : float
        First step size.
    max_tries : int, default STEP_TRIES

    Returns
    -------
    value : float, torch.Tensor or None
        The accepted loss, or None if no trial succeeded (the caller restores
        the parameters).
    next_step : float
        The step size to start from next time (the last one tried, grown by
        ``STEP_GROW``).

    Examples
    --------
    >>> x = [4.0]
    >>> def trial(s):
    ...     x[0] = 4.0 - s * 8.0   # gradient step on x**2 from x = 4
    >>> search_step(trial, lambda: x[0] ** 2, 15.0, 1.0)  # step 1 overshoots to x = -4
    (0.0, 0.6)
    """
    for _ in range(max_tries):
        trial(step)
        value = loss()
        if value <= reference:
            return value, step * STEP_GROW
        step *= STEP_SHRINK
    return None, step * STEP_GROW


class ProjectedGradient(Solver):
    """Hoyer's projected gradient for the constrained factors, MU for the others (no penalties).

    Parameters
    ----------
    problem : Problem
    targets : dict
        ``{'W': sW, 'H': sH}``: target sparseness in (0, 1) or None (MU).
    hook : callable, optional, keyword-only
        ``hook(which, neg, pos) -> (neg, pos)``.

    Examples
    --------
    >>> import torch
    >>> from nmfcore.operators import MatrixProduct
    >>> from nmfcore.solvers import Problem
    >>> from nmfcore.metrics import sparseness
    >>> g = torch.Generator().manual_seed(0)
    >>> V = torch.rand(8, 6, generator=g)
    >>> W = (torch.rand(6, 2, generator=g) + 0.1).requires_grad_()
    >>> H = (torch.rand(8, 2, generator=g) + 0.1).requires_grad_()
    >>> prob = Problem(MatrixProduct(), W, H, V, beta=2)
    >>> solver = ProjectedGradient(prob, {"W": None, "H": 0.5})
    >>> solver.step()
    >>> round(float(sparseness(prob.H[:, 0])), 3)
    0.5
    """

    def __init__(self, problem, targets: dict, *, hook=None):
        super().__init__(problem, hook=hook)
        self.targets = {k: (targets.get(k) if k in problem.trainable else None) for k in ("W", "H")}
        self.steps = {"W": 1.0, "H": 1.0}
        for which, target in self.targets.items():
            if target is not None:
                project_columns(problem.factor(which), target)
        self._renormalise = any(t is not None for t in self.targets.values()) and len(problem.trainable) == 2

    def terms(self, which):
        return self.problem.terms(which)

    def apply(self, which, neg, pos):
        p = self.problem
        X = p.factor(which)
        target: Optional[float] = self.targets[which]
        if target is None:
            div.multiplicative_step(X, neg, pos, p.beta)
            return
        grad = pos - neg  # gradient of the divergence w.r.t. X
        old = X.clone()

        def trial(step):
            X.copy_(old).sub_(grad, alpha=step)
            project_columns(X, target)

        value, self.steps[which] = search_step(trial, p.divergence, p.divergence(), self.steps[which])
        if value is None:
            X.copy_(old)  # no decrease found: keep the iterate

    def step(self):
        super().step()
        if self._renormalise:
            _renormalize(self.problem.W, self.problem.H)


def _renormalize(W: torch.Tensor, H: torch.Tensor):
    """Give every component of H unit L2 norm, moving the norm into W (WH unchanged)."""
    dims = [d for d in range(H.ndim) if d != 1]
    norms = H.square().sum(dims).sqrt_()
    norms = torch.where(norms > 0, norms, torch.ones_like(norms))
    H.div_(norms.reshape((1, -1) + (1,) * (H.ndim - 2)))
    W.mul_(norms.reshape((1, -1) + (1,) * (W.ndim - 2)))
