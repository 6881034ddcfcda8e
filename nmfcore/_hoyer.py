"""Hoyer's projection onto a given L1 and L2 norm (the sparseness constraint).

Reference: P. O. Hoyer, "Non-negative Matrix Factorization with Sparseness
Constraints", JMLR 5, 2004, Sec. 3.1 (the projection operator).
"""

from __future__ import annotations

import math

import torch

__all__ = ["project", "l1_for_sparseness", "project_columns"]


def l1_for_sparseness(n: int, sparseness: float) -> float:
    """L1 norm of a unit-L2 vector of ``n`` entries with the given sparseness."""
    return math.sqrt(n) * (1 - sparseness) + sparseness


def project(x: torch.Tensor, l1: float, l2sq: float) -> torch.Tensor:
    """Closest non-negative vector to ``x`` with L1 norm ``l1`` and squared L2 norm ``l2sq``.

    Works on the flattened tensor and returns a tensor of ``x``'s shape.
    """
    shape = x.shape
    s = x.reshape(-1).clone()
    n = s.numel()
    if n == 0 or l2sq <= 0:
        return torch.zeros_like(x)
    v = s + (l1 - s.sum()) / n
    zero = torch.zeros(n, dtype=torch.bool, device=x.device)
    for _ in range(n + 1):  # each pass fixes at least one more zero
        m = l1 / (n - int(zero.sum()))
        midpoint = torch.where(zero, torch.zeros_like(v), torch.full_like(v, m))
        d = v - midpoint
        a = float(d @ d)
        b = float(2 * (d @ midpoint))
        c = float(midpoint @ midpoint) - l2sq
        if a <= 0:
            v = midpoint
        else:
            alpha = (-b + math.sqrt(max(b * b - 4 * a * c, 0.0))) / (2 * a)
            v = midpoint + alpha * d
        neg = v < 0
        if not bool(neg.any()):
            break
        zero |= neg
        v = v.clamp_min(0)
        k = n - int(zero.sum())
        if k == 0:
            break
        v = torch.where(zero, torch.zeros_like(v), v + (l1 - v.sum()) / k)
    return v.clamp_min_(0).reshape(shape)


def project_columns(X: torch.Tensor, sparseness: float, dim: int = 1, norms=None) -> torch.Tensor:
    """Project every slice ``X.select(dim, j)`` to the sparseness, in place.

    Each slice keeps its L2 norm, or takes ``norms[j]`` if given.
    """
    n = X.numel() // X.shape[dim]
    l1a = l1_for_sparseness(n, sparseness)
    for j in range(X.shape[dim]):
        col = X.select(dim, j)
        norm = float(col.norm()) if norms is None else float(norms[j])
        if norm > 0:
            col.copy_(project(col, l1a * norm, norm * norm))
    return X
