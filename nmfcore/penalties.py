r"""Temporal continuity of activations (Virtanen 2007): its value and gradient terms.

The penalty on an activation tensor ``H`` along its time axis is

.. math::
    c(H) = \sum_j \frac{L}{\sum_t h_{j,t}^2} \sum_{t=1}^{L-1} (h_{j,t} - h_{j,t-1})^2,

summed over every series ``j`` (every index but time: components, batch),
with ``L`` frames. It is invariant to the scale of each series, so it does
not push activations towards zero; it only penalises frame-to-frame jumps,
which makes a component describe a sound that lasts rather than isolated
frames (better separation of sustained sources). :meth:`BaseComponent.fit
<nmfcore.nmf.BaseComponent.fit>` adds ``continuity * c(H)`` to the objective.

References
----------
.. [1] T. Virtanen, "Monaural sound source separation by nonnegative matrix
   factorization with temporal continuity and sparseness criteria", IEEE
   Transactions on Audio, Speech, and Language Processing 15(3), 2007.
"""

from __future__ import annotations

import torch

__all__ = ["temporal_continuity", "temporal_continuity_terms"]


def _sums(H: torch.Tensor, axis: int):
    """``H`` with time last, ``1 / S`` (0 for an all-zero series) and ``D``, per series."""
    X = H.movedim(axis, -1)
    S = X.square().sum(-1, keepdim=True)
    D = X.diff(dim=-1).square().sum(-1, keepdim=True)
    inv = torch.where(S > 0, 1.0 / S.clamp_min(torch.finfo(H.dtype).tiny), torch.zeros_like(S))
    return X, inv, D


def temporal_continuity(H: torch.Tensor, axis: int) -> torch.Tensor:
    r"""The penalty :math:`c(H)` along ``axis`` (a zero-dimensional tensor; 0 for all-zero series).

    Examples
    --------
    >>> import torch
    >>> float(temporal_continuity(torch.tensor([[1.0, 1.0, 1.0]]), axis=1))  # constant: no jumps
    0.0
    >>> float(temporal_continuity(torch.tensor([[0.0, 2.0]]), axis=1))  # L * 4 / 4
    2.0
    """
    X, inv, D = _sums(H, axis)
    return (X.shape[-1] * D * inv).sum()


def temporal_continuity_terms(H: torch.Tensor, axis: int):
    r"""``(neg, pos)``: the non-negative parts of :math:`\nabla c(H)` (``pos - neg``), shaped like ``H``.

    With :math:`S_j = \sum_t h_{j,t}^2` and :math:`D_j = \sum_t (h_{j,t} - h_{j,t-1})^2`,

    .. math::
        \text{pos}_{j,t} = \frac{2 L n_t h_{j,t}}{S_j}, \qquad
        \text{neg}_{j,t} = \frac{2 L (h_{j,t-1} + h_{j,t+1})}{S_j} + \frac{2 L h_{j,t} D_j}{S_j^2},

    where :math:`n_t` is the number of neighbours of frame t (1 at the ends,
    else 2) and missing neighbours count as zero. Virtanen's multiplicative
    update multiplies by ``neg / pos`` (with the divergence's terms added):
    a heuristic split that, unlike the divergence's own update, is not
    proven to decrease the objective at every step.
    """
    X, inv, D = _sums(H, axis)
    L = X.shape[-1]
    nb = torch.zeros_like(X)
    nb[..., 1:] += X[..., :-1]
    nb[..., :-1] += X[..., 1:]
    deg = torch.full((L,), 2.0, dtype=H.dtype, device=H.device)
    deg[0] = deg[-1] = 1.0 if L > 1 else 0.0
    pos = (2 * L) * deg * X * inv
    neg = (2 * L) * inv * (nb + X * (D * inv))
    return neg.movedim(-1, axis), pos.movedim(-1, axis)
