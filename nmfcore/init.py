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

__all__ = ["INIT_METHODS", "random_like_data", "nndsvd", "nndsvd_blocks"]

INIT_METHODS = ("random", "nndsvd", "nndsvda", "nndsvdar")
#: above this many entries :func:`nndsvd` works block by block of rows (:func:`nndsvd_blocks`): the float64
#: SVD of the whole matrix would take about 6 times its float32 size
SVD_MAX_ENTRIES = 2 ** 24
#: entries per block of rows of :func:`nndsvd` on a large matrix
_BLOCK_ENTRIES = 2 ** 20


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
    (``'nndsvda'``) or with small random values (``'nndsvdar'``). A matrix of
    more than :data:`SVD_MAX_ENTRIES` entries is decomposed block by block of
    rows (:func:`nndsvd_blocks`, the same result up to rounding).

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
    X = V.to_dense() if V.is_sparse else V
    if X.numel() > SVD_MAX_ENTRIES:
        return nndsvd_blocks(torch.split(X, max(1, _BLOCK_ENTRIES // max(1, X.shape[1]))), rank, variant, generator)
    work = X.double() if X.dtype != torch.float64 else X
    U, S, Vh = torch.linalg.svd(work, full_matrices=False)
    return _nndsvd_factors(U, S, Vh, rank, variant, float(X.mean()), generator, X.dtype)


def _nndsvd_factors(U: torch.Tensor, S: torch.Tensor, Vh: torch.Tensor, rank: int, variant: str, avg: float,
                    generator, dtype):
    """NNDSVD [1]_ from the leading singular triplets ``U (n, k)``, ``S (k,)``, ``Vh (k, c)`` (float64, ``S``
    descending) of the data, whose mean is ``avg``; returns ``W (c, rank)``, ``H (n, rank)`` in ``dtype``."""
    generator = make_generator(generator)
    n, c = U.shape[0], Vh.shape[1]
    k = min(rank, S.numel())
    Hs = torch.zeros(n, rank, dtype=U.dtype, device=U.device)  # left factor
    Ws = torch.zeros(c, rank, dtype=U.dtype, device=U.device)  # right factor
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
        if variant == "nndsvda":
            Hs[Hs == 0] = avg
            Ws[Ws == 0] = avg
        else:
            fill = avg / 100
            for M in (Hs, Ws):
                zeros = M == 0
                r = _abs_randn((int(zeros.sum()),), M, generator).mul_(fill)
                M[zeros] = r
    return Ws.to(dtype).nan_to_num_(0.0), Hs.to(dtype).nan_to_num_(0.0)


def nndsvd_blocks(blocks, rank: int, variant: str = "nndsvd", generator=None):
    r"""The NNDSVD of :func:`nndsvd` of a matrix given as blocks of rows, never held whole.

    ``blocks`` is a re-iterable of matrices ``(n_i, C)`` (the rows of ``V``
    in order), read twice: the Gram matrix :math:`V^T V` (C x C, float64)
    summed over the blocks gives the right singular vectors and the singular
    values (its eigenvectors and the square roots of its eigenvalues), and
    the left singular vectors are :math:`V v_j / s_j`, block by block. The
    memory is C x C and N x rank whatever N. The singular triplets equal
    those of the SVD up to rounding (the Gram matrix squares the condition
    number: singular values below about 1e-8 of the largest lose their
    accuracy, far below those an NMF start uses), and NNDSVD does not
    depend on their signs, so the result is :func:`nndsvd`'s.

    Shape
    -----
    - blocks: :math:`(n_i, C)`; W: :math:`(C, R)`; H: :math:`(\sum n_i, R)`

    Examples
    --------
    >>> import torch
    >>> V = torch.rand(300, 20, generator=torch.Generator().manual_seed(0))
    >>> W, H = nndsvd_blocks(torch.split(V, 64), 4, "nndsvda")
    >>> W0, H0 = nndsvd(V, 4, "nndsvda")
    >>> bool(torch.allclose(W, W0, atol=1e-5) and torch.allclose(H, H0, atol=1e-5))
    True
    """
    if variant not in INIT_METHODS[1:]:
        raise ParameterError(f"variant={variant!r} must be one of {INIT_METHODS[1:]}")
    gram, total, n, like = None, 0.0, 0, None
    for X in blocks:
        if X.ndim != 2:
            raise ParameterError(f"nndsvd_blocks needs blocks of rows (matrices), got shape {tuple(X.shape)}")
        Xd = X.double()
        gram = Xd.t() @ Xd if gram is None else gram.addmm_(Xd.t(), Xd)
        total += float(Xd.sum())
        n, like = n + X.shape[0], X
    if gram is None:
        raise ParameterError("nndsvd_blocks got no blocks")
    c = gram.shape[0]
    k = min(rank, n, c)
    evals, evecs = torch.linalg.eigh(gram)  # ascending
    S = evals.flip(0)[:k].clamp_min(0).sqrt()
    Vh = evecs.flip(1)[:, :k].t().contiguous()
    inv = torch.where(S > 0, 1 / S.clamp_min(torch.finfo(S.dtype).tiny), torch.zeros_like(S))
    U = torch.cat([(X.double() @ Vh.t()) * inv for X in blocks])
    return _nndsvd_factors(U, S, Vh, rank, variant, total / (n * c), generator, like.dtype)
