r"""The beta-divergence: the only module that knows its special cases.

The beta-divergence between a target :math:`v` and a model :math:`y` is

.. math::
    d_\beta(v | y) = \frac{v^\beta + (\beta - 1) y^\beta - \beta v y^{\beta - 1}}
                          {\beta (\beta - 1)}

with the limits :math:`\beta = 1` (generalised Kullback-Leibler,
:math:`v \log(v/y) - v + y`) and :math:`\beta = 0` (Itakura-Saito,
:math:`v/y - \log(v/y) - 1`); :math:`\beta = 2` is half the squared error.

Its gradient with respect to the model is
:math:`\nabla_y d = y^{\beta-1} - v y^{\beta-2}`, a difference of two
non-negative terms. Every multiplicative update in nmfcore pulls these two
*output-space* terms back through a model's reconstruction (a
vector-Jacobian product) and multiplies the parameter by their ratio raised
to the exponent :func:`mu_exponent`. Every update, metric and trainer calls
this module for those pieces.

References
----------
.. [1] C. Févotte and J. Idier, "Algorithms for nonnegative matrix
   factorization with the beta-divergence", Neural Computation 23(9), 2011.
.. [2] M. Nakano et al., "Convergence-guaranteed multiplicative algorithms
   for nonnegative matrix factorization with beta-divergence", MLSP 2010.
"""

from __future__ import annotations

import math

import torch

from ._workspace import Workspace

__all__ = [
    "eps_for",
    "mu_exponent",
    "auxiliary",
    "beta_divergence",
    "elementwise_divergence",
    "divergence_sum",
    "divergence_of_zero",
    "mu_terms",
    "multiplicative_step",
    "power",
]


def eps_for(dtype: torch.dtype) -> float:
    """Machine epsilon of ``dtype``: the floor that keeps ratios finite."""
    return torch.finfo(dtype).eps


def mu_exponent(beta: float) -> float:
    r"""Exponent of the multiplicative update for ``beta``.

    The plain update (exponent 1) is proven monotone for
    :math:`\beta \in [0, 2]` ([1]_ Sec. 4, [2]_) and is the fastest choice
    there; outside that interval the majorisation-minimisation exponent of
    [1]_ keeps the objective non-increasing:
    :math:`1/(2-\beta)` for :math:`\beta < 0` and :math:`1/(\beta-1)` for
    :math:`\beta > 2`.

    Examples
    --------
    >>> mu_exponent(1.0), mu_exponent(-1.0), mu_exponent(3.0)
    (1.0, 0.3333333333333333, 0.5)
    """
    if beta < 0:
        return 1.0 / (2.0 - beta)
    if beta > 2:
        return 1.0 / (beta - 1.0)
    return 1.0


def _limit_beta(beta: float, eps: float) -> float:
    """beta itself, or the IS/KL limit (0 or 1) when within sqrt(eps) of it.

    Near 0 and 1 the general formula loses eps / |beta (beta - 1)| to
    cancellation (inf or NaN once beta underflows): within sqrt(eps), where
    that exceeds the distance to the limit, the limit is the better value.
    """
    if abs(beta - 1) < eps ** 0.5:
        return 1.0
    if abs(beta) < eps ** 0.5:
        return 0.0
    return beta


def _elementwise(V: torch.Tensor, Y: torch.Tensor, beta: float, eps: float) -> torch.Tensor:
    """Elementwise d_beta(V | Y), finite and >= 0 for zeros on either side."""
    if beta == 2:
        return 0.5 * (V - Y).square()
    beta = _limit_beta(beta, eps)
    if beta == 1:
        # v log(v/y) - v + y, with 0 log 0 = 0 and y floored where it divides
        Ys = Y.clamp_min(eps)
        return torch.xlogy(V, V) - torch.xlogy(V, Ys) - V + Y
    Vs = V.clamp_min(eps) if beta <= 0 else V
    Ys = Y.clamp_min(eps)
    if beta == 0:
        ratio = Vs / Ys
        return ratio - torch.log(ratio) - 1
    bm1 = beta - 1.0
    return (Vs.pow(beta) + bm1 * Ys.pow(beta) - beta * Vs * Ys.pow(bm1)) / (beta * bm1)


def beta_divergence(V: torch.Tensor, Y: torch.Tensor, beta: float) -> torch.Tensor:
    r"""Sum over all entries of :math:`d_\beta(V | Y)`.

    Zeros on either side are floored at the dtype's epsilon where the formula
    divides or takes a log, so the result is finite and non-negative for every
    real ``beta``.

    Parameters
    ----------
    V : torch.Tensor
        Target (data), any shape.
    Y : torch.Tensor
        Model, same shape as ``V``.
    beta : float
        Divergence parameter.

    Returns
    -------
    torch.Tensor
        Zero-dimensional tensor on ``V``'s device and dtype.

    Examples
    --------
    >>> import torch
    >>> V = torch.tensor([1.0, 2.0]); Y = torch.tensor([1.0, 1.0])
    >>> float(beta_divergence(V, Y, 2))
    0.5
    """
    eps = eps_for(V.dtype)
    # elementwise clamp at 0 removes rounding below zero
    return _elementwise(V, Y, float(beta), eps).clamp_min_(0).sum()


def elementwise_divergence(V: torch.Tensor, Y: torch.Tensor, beta: float) -> torch.Tensor:
    r"""Elementwise :math:`d_\beta(v | y)`, the terms that :func:`beta_divergence` sums.

    Finite and non-negative for zeros on either side (same floors); a weighted
    divergence is ``(M * elementwise_divergence(V, Y, beta)).sum()``.

    Examples
    --------
    >>> import torch
    >>> elementwise_divergence(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 1.0]), 2)
    tensor([0.0000, 0.5000])
    """
    return _elementwise(V, Y, float(beta), eps_for(V.dtype)).clamp_min_(0)


def divergence_sum(V: torch.Tensor, Y: torch.Tensor, beta: float, workspace: Workspace | None = None) -> torch.Tensor:
    r"""Sum of :math:`d_\beta(V | Y)` for the fit loop: fewer passes, ``Y`` overwritten.

    Splits the divergence into terms of ``V`` alone (computed once per ``V``
    and cached in ``workspace``) and two or three in-place passes over ``Y``:

    - beta = 1: :math:`\sum v\log v - v` (cached) :math:`- \sum v \log y + \sum y`
    - beta = 0: :math:`-\sum \log v - n` (cached) :math:`+ \sum v / y + \sum \log y`
    - otherwise: :math:`\sum v^\beta` (cached), :math:`\sum y^\beta` and
      :math:`\sum v y^{\beta-1}`.

    Same floors as :func:`beta_divergence`; the total (not each entry) is
    clamped at zero.

    Parameters
    ----------
    V : torch.Tensor
        Target, any shape.
    Y : torch.Tensor
        Model, same shape as ``V``; overwritten.
    beta : float
        Divergence parameter.
    workspace : Workspace, optional
        Where the terms of ``V`` are cached (bound to this ``V``: another
        ``V`` recomputes them) and, for beta other than 0, 1 and 2, a scratch
        buffer of ``Y``'s shape is kept, so repeated calls allocate nothing.
        None: a fresh one.

    Returns
    -------
    torch.Tensor
        Zero-dimensional tensor, equal to :func:`beta_divergence` up to rounding.

    Examples
    --------
    >>> import torch
    >>> from nmfcore._workspace import Workspace
    >>> V = torch.tensor([1.0, 2.0]); Y = torch.tensor([1.0, 1.0])
    >>> ws = Workspace()
    >>> round(float(divergence_sum(V, Y.clone(), 1, ws)), 4), round(float(beta_divergence(V, Y, 1)), 4)
    (0.3863, 0.3863)
    """
    ws = Workspace() if workspace is None else workspace
    eps = eps_for(Y.dtype)
    beta = _limit_beta(beta, eps)
    if beta == 2:
        return beta_divergence(V, Y, 2)
    if beta in (0, 1):
        v, y = _flat_views(V, Y)
    else:
        v, y, scratch = _flat_views(V, Y, ws.buffer("scratch", Y))  # scratch: Y's layout

    def constant():
        # in place on one temporary of V's size (long spectrograms: no second copy)
        if beta == 1:
            return torch.xlogy(v, v).sub_(v).sum()
        if beta == 0:
            return -v.clamp_min(eps).log_().sum() - v.numel()
        vs = v.clamp_min(eps) if beta <= 0 else v
        return vs.pow(beta).sum() / (beta * (beta - 1))

    const = ws.cached(V, ("const", beta), constant)
    if beta == 1:
        total = y.sum()
        return (const + total - torch.dot(v, y.clamp_min_(eps).log_())).clamp_min(0)
    y.clamp_min_(eps)
    if beta == 0:
        vs = ws.cached(V, "v_floor", lambda: v.clamp_min(eps))
        inv_dot = torch.dot(vs, y.reciprocal_())
        return (const + inv_dot - y.log_().sum()).clamp_min(0)  # log(1/y) = -log(y)
    p = power(y, beta - 1, out=scratch, approx=False)
    vs = v.clamp_min(eps) if beta <= 0 else v
    # (v^b + (b-1) y^b - b v y^(b-1)) / (b (b-1))
    return (const + torch.dot(p, y) / beta - torch.dot(vs, p) / (beta - 1)).clamp_min(0)


def _flat_views(V: torch.Tensor, *Ys: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``V`` and the ``Ys`` (one memory layout) flattened in that layout's memory order.

    The ``Ys`` are views (:func:`divergence_sum` writes into them); ``V`` is
    copied only if its layout differs from theirs.
    """
    Y = Ys[0]
    if Y.is_contiguous():
        return (V.reshape(-1),) + tuple(T.view(-1) for T in Ys)
    order = sorted(range(Y.ndim), key=lambda d: (-Y.stride(d), -Y.shape[d]))
    return (V.permute(order).reshape(-1),) + tuple(T.permute(order).view(-1) for T in Ys)


def divergence_of_zero(Y: torch.Tensor, beta: float) -> torch.Tensor:
    r"""Elementwise :math:`d_\beta(0 | y) = y^\beta / \beta` (``beta > 0``).

    Used to write the divergence of a sparse target as a sum over its stored
    entries plus a term over all entries that needs no dense target.
    """
    if beta == 1:
        return Y
    if beta == 2:
        return 0.5 * Y.square()
    return Y.pow(beta) / beta


def mu_terms(V: torch.Tensor, Y: torch.Tensor, beta: float, *, out: torch.Tensor | None = None,
             workspace: Workspace | None = None):
    r"""The two non-negative output-space terms of :math:`\nabla_Y d_\beta(V|Y)`.

    Returns ``(neg, pos)`` with :math:`\nabla_Y d = pos - neg`:

    ========  =====================  ====================
    beta      neg                    pos
    ========  =====================  ====================
    2         V                      Y
    1         V / Y                  ``None`` (all ones)
    0         V / Y**2               1 / Y
    other     V * Y**(beta - 2)      Y**(beta - 1)
    ========  =====================  ====================

    ``Y`` is floored at the dtype's epsilon wherever it is raised to a
    negative power. ``pos`` is ``None`` for beta = 1 so that callers can use
    the closed form of a vector-Jacobian product with ones (a sum).

    Parameters
    ----------
    V : torch.Tensor
        Target (data), any shape.
    Y : torch.Tensor
        Model (the reconstruction), same shape as ``V``.
    beta : float
        Divergence parameter.
    out : torch.Tensor, optional, keyword-only
        ``Y`` itself, to write the terms in place: into ``Y`` and, for beta
        other than 1 and 2, into the scratch buffer of ``workspace`` (allocated
        only for those betas), so that the fit loop allocates nothing of the
        data's size (a fresh large tensor costs page faults on every iteration).
    workspace : Workspace, optional, keyword-only
        Holds that scratch buffer; None: a fresh one.

    Returns
    -------
    neg : torch.Tensor
        Of ``V``'s shape.
    pos : torch.Tensor or None
        Of ``V``'s shape, or None for beta = 1.

    Raises
    ------
    ValueError
        ``out`` is given and is not ``Y``.

    Examples
    --------
    >>> import torch
    >>> V = torch.tensor([2.0, 4.0]); Y = torch.tensor([1.0, 2.0])
    >>> mu_terms(V, Y, 1)
    (tensor([2., 2.]), None)
    >>> neg, pos = mu_terms(V, Y, 0)
    >>> neg, pos
    (tensor([2., 1.]), tensor([1.0000, 0.5000]))
    """
    if beta == 2:
        return V, Y
    eps = eps_for(Y.dtype)
    inplace = out is not None
    if inplace and out is not Y:
        raise ValueError("mu_terms: out must be Y itself")
    if beta == 1:
        if inplace:
            return torch.div(V, Y.clamp_min_(eps), out=Y), None
        return V / Y.clamp_min(eps), None
    Ys = Y.clamp_min_(eps) if inplace else Y.clamp_min(eps)
    scratch = (Workspace() if workspace is None else workspace).buffer("scratch", Y) if inplace else None
    if beta == 0:
        pos = Ys.reciprocal_() if inplace else Ys.reciprocal()
        neg = torch.mul(V, pos, out=scratch) if inplace else V * pos
        return neg.mul_(pos), pos
    # one power: Y**(beta-1) = Y**(beta-2) * Y
    if inplace:
        P = power(Ys, beta - 2, out=scratch)
        pos = Ys.mul_(P)  # before P is overwritten by neg
        return P.mul_(V), pos
    P = power(Ys, beta - 2)
    return V * P, P.mul_(Ys)


_TORCH_FAST_EXPONENTS = (-2.0, -1.0, -0.5, 0.5, 1.0, 2.0, 3.0)  # torch.pow special-cases these


def power(Y: torch.Tensor, p: float, *, out: torch.Tensor | None = None, approx: bool = True) -> torch.Tensor:
    r"""``Y ** p`` for positive ``Y`` by the cheapest route (the fit loop's only power).

    ``torch.pow`` with a general exponent costs many multiplications on the
    CPU. Exponents torch special-cases go to ``torch.pow``; ``p = +-1.5``
    (beta = 0.5, the usual choice for music, and 3.5) is a square root or
    reciprocal square root cubed (much faster, within 4 ulp); any other
    exponent is ``exp(p log Y)`` (faster than ``pow``; relative error
    :math:`|p \log Y|` ulp, harmless in an update), or, with
    ``approx=False``, ``torch.pow`` (the loss, whose sum may be dominated by tiny ``Y``).

    Examples
    --------
    >>> import torch
    >>> y = torch.tensor([0.25, 4.0], dtype=torch.float64)
    >>> power(y, -1.5), power(y, 0.5)
    (tensor([8.0000, 0.1250], dtype=torch.float64), tensor([0.5000, 2.0000], dtype=torch.float64))
    """
    p = float(p)
    if abs(p) == 1.5:
        root = torch.rsqrt if p < 0 else torch.sqrt
        return (root(Y, out=out) if out is not None else root(Y)).pow_(3)
    if p in _TORCH_FAST_EXPONENTS or not approx:
        return torch.pow(Y, p, out=out) if out is not None else torch.pow(Y, p)
    L = torch.log(Y, out=out) if out is not None else torch.log(Y)
    return L.mul_(p).exp_()


def auxiliary(rho: torch.Tensor, m: torch.Tensor, beta: float) -> torch.Tensor:
    r"""Per-coordinate majorising function of [1]_, up to a positive factor and a constant.

    For a coordinate at its current value :math:`\tilde x` with
    ``m = neg / pos`` (the plain multiplicative ratio), the objective at
    :math:`x = \rho \tilde x` (all other coordinates fixed) is majorised by a
    function of :math:`\rho` proportional to

    =================  =================================================
    beta               auxiliary(rho)
    =================  =================================================
    beta < 1           rho + m rho**(beta-1) / (1-beta)
    beta = 1           rho - m log(rho)
    1 < beta <= 2      rho**beta / beta - m rho**(beta-1) / (beta-1)
    beta > 2           rho**beta / beta - m rho
    =================  =================================================

    (convex terms bounded by Jensen's inequality, concave ones by their
    tangent). It equals the objective at :math:`\rho = 1`, so any step with
    ``auxiliary(rho) <= auxiliary(1)`` in every coordinate does not increase
    the objective; its minimiser is :math:`m^{\gamma}` with
    :math:`\gamma` = :func:`mu_exponent`'s MM value.
    """
    if beta < 1:
        return rho + m * rho.pow(beta - 1) / (1 - beta)
    if beta == 1:
        return rho - m * torch.log(rho)
    if beta <= 2:
        return rho.pow(beta) / beta - m * rho.pow(beta - 1) / (beta - 1)
    return rho.pow(beta) / beta - m * rho


def multiplicative_step(param: torch.Tensor, neg: torch.Tensor, pos: torch.Tensor, beta: float,
                        l1: float = 0.0, l2: float = 0.0, relax=1.0) -> torch.Tensor:
    r"""In place: ``param *= (neg / (pos + l1 + l2 * param)) ** gamma``, ``gamma = mu_exponent(beta)``.

    ``neg`` and ``pos`` are the parameter-space terms (the output-space terms
    of :func:`mu_terms` pulled back through the model). The L1 and L2
    penalties :math:`l_1 \|x\|_1 + \tfrac{l_2}{2}\|x\|_2^2` add their gradients
    to the positive part. A coordinate whose ratio is not a number leaves
    the parameter unchanged: ``0 / 0`` (both parts zero: the data carry no
    information about it, e.g. a template whose activations in a mini-batch
    are all zero, or an all-zero component of a full fit), ``x / 0`` and
    overflowing terms. ``neg`` may be overwritten.

    ``relax`` (a factor or a sequence of factors > 1; used only without
    penalty) over-relaxes the step: each coordinate takes the ratio
    ``m ** (gamma * c)`` for the largest factor ``c`` that :func:`auxiliary`
    certifies does not increase the objective, and ``m ** gamma`` where none
    does. The step is longer and the objective still never increases.
    Whether a factor is certified depends on ``m`` alone, so the choice is
    read from a table over ``log(m)`` built once per beta
    (:func:`_relax_table`): a handful of cheap passes instead of evaluating
    the auxiliary function for every candidate.

    Parameters
    ----------
    param : torch.Tensor
        The factor, updated in place.
    neg, pos : torch.Tensor
        The negative and positive parts of the gradient with respect to
        ``param`` (``pos`` may broadcast to ``param``, e.g. the column sums
        of beta = 1). ``neg`` may be overwritten.
    beta : float
        Divergence parameter (for the exponent).
    l1, l2 : float, default 0
        Penalty weights.
    relax : float or sequence of float, default 1
        Over-relaxation factors (no over-relaxation with a penalty).

    Returns
    -------
    torch.Tensor
        ``param``.

    Examples
    --------
    >>> import torch
    >>> x = torch.tensor([1.0, 2.0])
    >>> multiplicative_step(x, torch.tensor([3.0, 1.0]), torch.tensor([1.0, 2.0]), beta=1)
    tensor([3., 1.])
    """
    denom = pos
    if l1 or l2:
        denom = pos + l1 if l2 == 0 else torch.add(pos, param, alpha=l2).add_(l1)
    gamma = mu_exponent(beta)
    # no floor on the denominator: 0 / 0 is NaN and x / 0 infinite, and both become a ratio of 1 below (no
    # step), where a floor gave 0 / tiny = 0 and wiped a template that a batch carried no information about
    if isinstance(denom, torch.Tensor):
        ratio = neg.div_(denom) if _broadcasts_to(denom.shape, neg.shape) else neg / denom
    else:
        ratio = neg / float(denom)
    factors = tuple(sorted(c for c in ((relax,) if isinstance(relax, (int, float)) else relax) if c > 1))
    table = None
    if factors and not (l1 or l2):
        table, scale, offset = _relax_table(beta, factors, ratio.dtype, ratio.device)
    if table is not None:
        # a NaN or infinite ratio (0 / 0, x / 0, overflowing terms) leaves its coordinate unchanged,
        # never a worse objective; a zero ratio (log -inf, made the most negative finite number) gives
        # exactly zero, as the plain step; the cell is computed in float32 at least, where float16
        # would round the last cell index 4095 up to 4096
        log_m = ratio.log_().nan_to_num_(nan=0.0, posinf=0.0)
        x = log_m if log_m.dtype in (torch.float32, torch.float64) else log_m.float()
        cell = x.mul(scale).add_(offset).clamp_(0, table.numel() - 1).long()
        ratio = torch.take(table, cell).mul_(log_m).exp_()  # m ** exponent
    else:
        ratio.nan_to_num_(nan=1.0, posinf=1.0)  # as above: no step where the ratio is not a number
        if gamma != 1:
            ratio = ratio.pow_(gamma)
    return param.mul_(ratio)


def _broadcasts_to(shape, target) -> bool:
    """Whether a tensor of ``shape`` broadcasts to ``target`` (cheaper than ``torch.broadcast_shapes``)."""
    return len(shape) <= len(target) and all(a in (1, b) for a, b in zip(reversed(shape), reversed(target)))


_RELAX_LOG_RANGE = 60.0  # tables cover m in [e**-60, e**60] at most; beyond, the plain exponent
_RELAX_CELLS = 4096
_RELAX_TABLES: dict = {}


def _relax_table(beta: float, factors: tuple, dtype: torch.dtype, device) -> tuple[torch.Tensor, float, float]:
    r"""Exponent of the over-relaxed step as a table over cells of ``log(m)``.

    A cell takes ``gamma * c`` for the largest ``c`` in ``factors`` with
    ``auxiliary(m ** (gamma c), m) <= auxiliary(1, m)`` at 34 points spread over
    the cell widened by 1% on each side (so rounding of ``log(m)`` into a
    neighbouring cell stays certified; each difference is a sum of at most
    four exponentials in ``log(m)``, so it has at most three sign changes and
    the grid finds them), else ``gamma``; the two end cells (and so everything
    beyond the range) take ``gamma``. The range is ``|log(m)| <= 60``, narrowed
    so that no relaxed ratio underflows to zero in ``dtype``. Returns ``(table, scale, offset)`` with
    the cell of ``log(m)`` at ``floor(log(m) * scale + offset)``; ``table`` is None where no factor is
    certified in any cell (beta = 0: there the relaxed step is the plain one).
    """
    key = (float(beta), factors, dtype, str(device))
    hit = _RELAX_TABLES.get(key)
    if hit is not None:
        return hit
    gamma = mu_exponent(beta)
    # no relaxed ratio may underflow to zero (or overflow) in the dtype
    n = _RELAX_CELLS
    span = min(_RELAX_LOG_RANGE, -0.9 * math.log(torch.finfo(dtype).tiny) / (gamma * max(factors)))
    width = 2 * span / n
    starts = -span + width * torch.arange(n, dtype=torch.float64)
    u = starts[:, None] + width * torch.linspace(-0.01, 1.01, 34, dtype=torch.float64)[None]
    m = u.exp()
    level = auxiliary(torch.ones_like(m), m, beta)
    best = torch.ones(n, dtype=torch.float64)
    with torch.no_grad():
        for c in factors:  # ascending: a larger certified factor overrides a smaller one
            value = auxiliary((gamma * c * u).exp(), m, beta)
            ok = (value <= level).all(1) & torch.isfinite(value).all(1)
            best = torch.where(ok, torch.full_like(best, c), best)
    best[0] = best[-1] = 1.0
    # no factor certified anywhere (beta = 0): the plain step, without the table's passes
    table = (gamma * best).to(dtype=dtype, device=device) if bool((best > 1).any()) else None
    entry = (table, n / (2 * span), n / 2)
    if len(_RELAX_TABLES) > 64:
        _RELAX_TABLES.clear()
    _RELAX_TABLES[key] = entry
    return entry
