"""Optimisers for NMF models built from modules (the reference's ``torchnmf.trainer``).

They follow ``torch.optim.Optimizer``: parameter groups with their own
hyper-parameters, and ``step(closure)``. Use them to train chained models,
for example an ``nn.Sequential`` of :class:`~nmfcore.nmf.NMF` modules.
"""

from __future__ import annotations

import torch
from torch.optim.optimizer import Optimizer

from . import divergence as div
from ._hoyer import project_columns
from ._validation import check_beta, check_fraction, check_nonnegative_float, check_positive_int
from .operators import pull_back
from .solvers.projected import search_step

__all__ = ["BetaMu", "SparsityProj"]


class BetaMu(Optimizer):
    r"""Multiplicative updates minimising the beta-divergence through any model.

    For each parameter in turn (the others held fixed) the two non-negative
    terms of the gradient of :math:`d_\beta(V | \hat V)` are pulled back
    through the model's graph by vector-Jacobian products
    (:func:`nmfcore.operators.pull_back`), and the parameter
    is multiplied by their ratio raised to :func:`nmfcore.divergence.mu_exponent`.
    The model's output must be non-decreasing in every parameter (products and
    sums of non-negative tensors, as in chained NMF modules).

    Parameters
    ----------
    params : iterable
        Parameters or dicts defining parameter groups.
    beta : float, default 1
    l1_reg : float, default 0
        L1 penalty :math:`l_1 \|p\|_1`.
    l2_reg : float, default 0
        L2 penalty :math:`\tfrac{l_2}{2} \|p\|_2^2`.
    orthogonal : float, default 0
        Penalty :math:`\tfrac{o}{2} \sum_{i \ne j} p_{\cdot i} \cdot p_{\cdot j}` pushing
        the components along axis 1 apart.

    Examples
    --------
    >>> import torch, torch.nn as nn
    >>> from nmfcore.nmf import NMF
    >>> g = torch.Generator().manual_seed(0)
    >>> V = torch.rand(64, 1024, generator=g)
    >>> model = nn.Sequential(NMF((1024, 10), rank=4, generator=0),
    ...                       NMF(W=(24, 10), generator=1), NMF(W=(64, 24), generator=2))
    >>> trainer = BetaMu(model.parameters())
    >>> def closure():
    ...     trainer.zero_grad()
    ...     return V.t(), model(None)
    >>> first = float(trainer.step(closure))
    >>> for _ in range(20):
    ...     last = float(trainer.step(closure))
    >>> last < first
    True
    """

    def __init__(self, params, beta=1, l1_reg=0, l2_reg=0, orthogonal=0):
        defaults = dict(beta=check_beta(beta), l1_reg=check_nonnegative_float(l1_reg, "l1_reg"),
                        l2_reg=check_nonnegative_float(l2_reg, "l2_reg"),
                        orthogonal=check_nonnegative_float(orthogonal, "orthogonal"))
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure):
        """One update of every parameter; returns the divergence before the step.

        ``closure()`` must return ``(target, prediction)``.
        """
        loss = None
        for group in self.param_groups:
            beta = group["beta"]
            for p in group["params"]:
                if not p.requires_grad:
                    continue
                with torch.enable_grad():
                    V, Y = closure()
                if not Y.requires_grad:
                    continue
                Yd = Y.detach()
                if loss is None:
                    loss = div.beta_divergence(V, Yd, beta)
                neg_out, pos_out = div.mu_terms(V, Yd, beta)
                if pos_out is None:
                    pos_out = torch.ones_like(Yd)
                neg, pos = pull_back(Y, p, [neg_out, pos_out], allow_unused=True)
                if neg is None:  # the prediction does not depend on p
                    continue
                neg.clamp_min_(0)
                pos.clamp_min_(0)
                if group["orthogonal"]:
                    pos.add_(p.sum(1, keepdim=True) - p, alpha=group["orthogonal"])
                div.multiplicative_step(p, neg, pos, beta, group["l1_reg"], group["l2_reg"])
        return loss


class SparsityProj(Optimizer):
    r"""Projected gradient with Hoyer's sparseness constraint.

    Takes a gradient step, projects every slice along ``dim`` onto the target
    sparseness (keeping its L2 norm) and halves the step until the loss does
    not increase (at most ``max_iter`` evaluations; if none succeeds the
    parameters are left unchanged): :func:`nmfcore.solvers.search_step`, the
    search of ``sparse_fit``. The step grows by ``STEP_GROW`` after each call.

    Parameters
    ----------
    params : iterable
    sparsity : float in (0, 1)
        Target sparseness (:func:`nmfcore.metrics.sparseness`).
    dim : int, default 1
        Axis that indexes the components.
    max_iter : int, default 10
        Maximum loss evaluations per step.

    References
    ----------
    P. O. Hoyer, "Non-negative Matrix Factorization with Sparseness
    Constraints", JMLR 5, 2004.
    """

    def __init__(self, params, sparsity, dim=1, max_iter=10):
        sparsity = check_fraction(sparsity, "sparsity", low_inclusive=False, high_inclusive=False)
        max_iter = check_positive_int(max_iter, "max_iter")
        super().__init__(params, dict(sparsity=sparsity, lr=1.0, dim=dim, max_iter=max_iter))

    @torch.no_grad()
    def step(self, closure):
        """One projected step; ``closure()`` returns the loss. Returns the final loss."""
        loss = None
        for group in self.param_groups:
            with torch.enable_grad():
                init_loss = closure()
                init_loss.backward()
            loss = init_loss.detach()
            params = [(p, p.grad.clone(), p.detach().clone()) for p in group["params"] if p.grad is not None]
            dim = group["dim"]

            def trial(lr):
                for p, g, old in params:
                    dims = [d for d in range(p.ndim) if d != dim]
                    norms = old.square().sum(dims).sqrt()
                    p.copy_(old).sub_(g, alpha=lr)
                    project_columns(p, group["sparsity"], dim=dim, norms=norms)

            new, group["lr"] = search_step(trial, lambda: closure().detach(), init_loss, group["lr"],
                                           group["max_iter"])
            if new is None:
                for p, _, old in params:
                    p.copy_(old)
            else:
                loss = new
        return loss
