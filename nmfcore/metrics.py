r"""Divergences and the sparseness measure (the reference's ``torchnmf.metrics``).

All divergences are sums over every entry, finite and non-negative for zeros
on either side and any ``beta``; the beta cases themselves live in
:mod:`nmfcore.divergence`. Arguments follow the reference: ``input`` is the
model (the reconstruction), ``target`` the data.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from . import divergence as _div
from .exceptions import ParameterError

__all__ = ["beta_div", "euclidean", "kl_div", "is_div", "sparseness"]


def _check_pair(input: Tensor, target: Tensor):
    if input.shape != target.shape:
        raise ParameterError(f"input has shape {tuple(input.shape)} but target has shape {tuple(target.shape)}")


def beta_div(input: Tensor, target: Tensor, beta: float = 2) -> Tensor:
    r"""The :math:`\beta`-divergence :math:`\sum_n d_\beta(y_n | x_n)` of ``target`` y from ``input`` x.

    .. math::
        \ell(x, y) = \sum_{n} \frac{1}{\beta (\beta - 1)}\left( y_n^{\beta}
        + (\beta - 1) x_n^{\beta} - \beta y_n x_n^{\beta-1}\right)

    with the limits :func:`kl_div` (:math:`\beta = 1`) and :func:`is_div`
    (:math:`\beta = 0`).

    Parameters
    ----------
    input : torch.Tensor
        Model (reconstruction), any shape.
    target : torch.Tensor
        Data, same shape as ``input``.
    beta : float, default 2

    Returns
    -------
    torch.Tensor
        Zero-dimensional tensor.

    Examples
    --------
    >>> import torch
    >>> x = torch.tensor([1.0, 2.0]); y = torch.tensor([2.0, 2.0])
    >>> float(beta_div(x, y, 2))
    0.5
    >>> round(float(beta_div(x, y, 1)), 4)  # 2 log 2 - 2 + 1
    0.3863
    """
    _check_pair(input, target)
    return _div.beta_divergence(target, input, beta)


def euclidean(input: Tensor, target: Tensor) -> Tensor:
    r"""Half the squared Euclidean distance, :math:`\tfrac12 \sum_n (x_n - y_n)^2` (beta = 2).

    Examples
    --------
    >>> import torch
    >>> float(euclidean(torch.zeros(2), torch.ones(2)))
    1.0
    """
    return beta_div(input, target, 2)


def kl_div(input: Tensor, target: Tensor) -> Tensor:
    r"""Generalised Kullback-Leibler divergence :math:`\sum_n y_n \log(y_n / x_n) - y_n + x_n` (beta = 1).

    Examples
    --------
    >>> import torch
    >>> float(kl_div(torch.ones(3), torch.ones(3)))
    0.0
    """
    return beta_div(input, target, 1)


def is_div(input: Tensor, target: Tensor) -> Tensor:
    r"""Itakura-Saito divergence :math:`\sum_n y_n / x_n - \log(y_n / x_n) - 1` (beta = 0).

    Examples
    --------
    >>> import torch
    >>> round(float(is_div(torch.ones(1), torch.full((1,), 2.0))), 4)  # 2 - log 2 - 1
    0.3069
    """
    return beta_div(input, target, 0)


def sparseness(x: Tensor) -> Tensor:
    r"""Hoyer's sparseness of ``x``: 1 for the sparsest, 0 for the densest vector.

    .. math::
        f(x) = \frac{\sqrt{N} - \|x\|_1 / \|x\|_2}{\sqrt{N} - 1}

    A vector with a single non-zero entry (one-hot) has sparseness 1; a
    constant vector has sparseness 0. The all-zero vector, which has no
    non-zero entry at all, is given sparseness 1.

    Parameters
    ----------
    x : torch.Tensor
        Any shape with at least 2 entries (it is flattened).

    Returns
    -------
    torch.Tensor
        Zero-dimensional tensor in [0, 1].

    References
    ----------
    P. O. Hoyer, "Non-negative Matrix Factorization with Sparseness
    Constraints", JMLR 5, 2004.

    Examples
    --------
    >>> import torch
    >>> float(sparseness(torch.tensor([0.0, 0.0, 5.0, 0.0])))
    1.0
    >>> float(sparseness(torch.ones(4)))
    0.0
    """
    N = x.numel()
    if N < 2:
        raise ParameterError(f"sparseness needs at least 2 entries, got x with shape {tuple(x.shape)}")
    l2 = x.norm(2)
    if float(l2.detach()) == 0:
        return torch.ones((), dtype=x.dtype, device=x.device)
    value = (math.sqrt(N) - x.norm(1) / l2) / (math.sqrt(N) - 1)
    return value.clamp(0, 1)
