"""Initialisation of the factors: random scaled to the data, and NNDSVD.

Pure functions: they take the data and a generator and return new tensors
on the data's device and dtype. The models' ``fit(init=...)`` calls them.

References
----------
.. [1] C. Boutsidis and E. Gallopoulos, "SVD based initialization: A head
   start for nonnegative matrix factorization", Pattern Recognition 41, 2008.
"""

from __future__ import annotations

import math

import torch

from ._validation import make_generator
from .exceptions import ParameterError

__all__ = ["INIT_METHODS", "random_like_data", "nndsvd"]

INIT_METHODS = ("random", "nndsvd", "nndsvda", "nndsvdar")


def _abs_randn(shape, like: torch.Tensor, generator) -> torch.Tensor:
    gen_device = generator.device if generator is not None else torch.device("cpu")
    x = torch.randn(shape, generator=generator, dtype=like.dtype, device=gen_device)
    return x.abs_().to(like.device)


def random_like_data(V: torch.Tensor, W_shape, H_shape, n_terms: int, generator=None):
    r"""Random non-negative ``W`` and ``H`` whose reconstruction matches V's mean.

    Entries are :math:`|z| \sqrt{\bar V / n}` with :math:`z \sim N(0, 1)` and
    ``n_terms`` the number of products summed per output entry (the rank times
    the kernel volume), as in scikit-learn's ``init='random'``.

    Examples
    --------
    >>> import torch
    >>> V = torch.full((30, 20), 4.0)
    >>> W, H = random_like_data(V, (20, 5), (30, 5), 5, generator=0)
    >>> W.shape, H.shape, bool((W >= 0).all())
    (torch.Size([20, 5]), torch.Size([30, 5]), True)
    """
    generator = make_generator(generator)
    mean = (V.coalesce().values().sum() / V.numel()) if V.is_sparse else V.mean()
    scale = math.sqrt(max(float(mean), 0.0) / max(n_terms, 1)) or 1.0
    return (_abs_randn(W_shape, V, generator).mul_(scale), _abs_randn(H_shape, V, generator).mul_(scale))


def nndsvd(V: torch.Tensor, rank: int, variant: str = "nndsvd", generator=None):
    r"""Non-negative double SVD of a matrix ``V`` (N, C) -> ``W`` (C, R), ``H`` (N, R).

    Follows [1]_ as implemented by scikit-learn: each singular pair is split
    into its positive and negative parts and the larger is kept. Zeros are
    kept (``'nndsvd'``, best for sparse results), filled with the data mean
    (``'nndsvda'``) or with small random values (``'nndsvdar'``).

    Shape
    -----
    - V: :math:`(N, C)`; W: :math:`(C, R)`; H: :math:`(N, R)` (``V ~ H W^T``).

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> V = torch.rand(40, 30, generator=g)
    >>> W, H = nndsvd(V, 4)
    >>> bool((W >= 0).all() and (H >= 0).all()), W.shape, H.shape
    (True, torch.Size([30, 4]), torch.Size([40, 4]))
    """
    if variant not in INIT_METHODS[1:]:
        raise ParameterError(f"variant={variant!r} must be one of {INIT_METHODS[1:]}")
    if V.ndim != 2:
        raise ParameterError(f"nndsvd needs a matrix, got V with shape {tuple(V.shape)}")
    generator = make_generator(generator)
    X = V.to_dense() if V.is_sparse else V
    work = X.double() if X.dtype != torch.float64 else X
    U, S, Vh = torch.linalg.svd(work, full_matrices=False)
    n, c = X.shape
    k = min(rank, S.numel())
    Hs = torch.zeros(n, rank, dtype=work.dtype, device=X.device)  # left factor
    Ws = torch.zeros(c, rank, dtype=work.dtype, device=X.device)  # right factor
    Hs[:, 0] = S[0].sqrt() * U[:, 0].abs()
    Ws[:, 0] = S[0].sqrt() * Vh[0].abs()
    for j in range(1, k):
        x, y = U[:, j], Vh[j]
        xp, xn = x.clamp_min(0), (-x).clamp_min(0)
        yp, yn = y.clamp_min(0), (-y).clamp_min(0)
        xpn, ypn, xnn, ynn = xp.norm(), yp.norm(), xn.norm(), yn.norm()
        mp, mn = xpn * ypn, xnn * ynn
        if mp > mn:
            u, v, sigma = xp / xpn, yp / ypn, mp
        else:
            u, v, sigma = xn / xnn, yn / ynn, mn
        lbd = (S[j] * sigma).sqrt()
        Hs[:, j] = lbd * u
        Ws[:, j] = lbd * v
    tol = 1e-6
    Hs[Hs < tol] = 0
    Ws[Ws < tol] = 0
    if variant != "nndsvd":
        avg = float(X.mean())
        if variant == "nndsvda":
            Hs[Hs == 0] = avg
            Ws[Ws == 0] = avg
        else:
            fill = avg / 100
            for M in (Hs, Ws):
                zeros = M == 0
                r = _abs_randn((int(zeros.sum()),), M, generator).mul_(fill)
                M[zeros] = r
    return Ws.to(X.dtype).nan_to_num_(0.0), Hs.to(X.dtype).nan_to_num_(0.0)
