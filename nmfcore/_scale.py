"""Scale handling of the fitting problem: exact powers of two and the starting product.

:class:`nmfcore.solvers.Problem` moves the data near 1 by an exact power of two
and then rescales the factor that carries the scale so that the starting
product matches the data (:func:`match_product`). Both together make every
fit scale-equivariant: with ``c > 0`` the fit of ``c V`` is ``c`` times the
fit of ``V`` (up to rounding), for every initialisation and solver, because
the multiplicative and HALS updates are equivariant once the starting product
scales with the data, and nothing overflows or underflows on the way (data
from the smallest subnormal to the largest finite value of the dtype).
"""

from __future__ import annotations

import math

import torch

__all__ = ["pow2", "pow2_exponent", "scale_pow2", "mul_pow2_", "restore_pow2_", "match_product", "step_unit"]


def pow2(x: float) -> float:
    """``2.0 ** x`` as a float, ``inf`` where it overflows (Python raises OverflowError)."""
    try:
        return 2.0 ** x
    except OverflowError:
        return math.inf


def times(x: float, factor: float) -> float:
    """``x * factor`` with ``0 * inf == 0`` (a zero penalty stays zero however the data is scaled)."""
    return x * factor if x else 0.0


def pow2_exponent(vmax: float, limit: int = 10) -> int:
    """``e`` with ``vmax / 2**e`` in [1, 2), or 0 where ``|e| <= limit`` (data near 1 is not copied)."""
    if not vmax > 0 or not math.isfinite(vmax):
        return 0
    e = math.frexp(vmax)[1] - 1  # exact, also for subnormals (log2 rounds near powers of two)
    return 0 if abs(e) <= limit else e


def _chunks(e: int, dtype: torch.dtype):
    """Split ``2**e`` into factors that are normal numbers of ``dtype`` (so every product is exact)."""
    step = max(1, math.frexp(torch.finfo(dtype).max)[1] // 2 - 2)
    while e:
        k = max(-step, min(step, e))
        yield 2.0 ** k
        e -= k


def scale_pow2(V: torch.Tensor, e: int) -> torch.Tensor:
    """``V * 2**e`` exactly (a new tensor; sparse COO stays sparse); ``V`` itself when ``e == 0``.

    The factor is applied in pieces that are normal numbers of V's dtype:
    ``2**-150`` or ``2**150`` is not a float32 number, and a tensor-scalar
    product rounds the scalar to the tensor's dtype.
    """
    if e == 0:
        return V
    if V.is_sparse:
        V = V.coalesce()
        values = V.values()
        for f in _chunks(e, values.dtype):
            values = values * f
        return torch.sparse_coo_tensor(V.indices(), values, V.shape, check_invariants=False).coalesce()
    out = None
    for f in _chunks(e, V.dtype):
        out = V * f if out is None else out.mul_(f)  # the first product keeps V's memory layout
    return out


def divide(V: torch.Tensor, d: float) -> torch.Tensor:
    """``V / d`` as a new tensor (sparse COO stays sparse)."""
    if V.is_sparse:
        V = V.coalesce()
        return torch.sparse_coo_tensor(V.indices(), V.values() / d, V.shape, check_invariants=False).coalesce()
    return V / d


def mul_pow2_(X: torch.Tensor, e: int) -> torch.Tensor:
    """In place: ``X *= 2**e`` exactly, in factors that are normal numbers of X's dtype."""
    for f in _chunks(e, X.dtype):
        X.mul_(f)
    return X


def step_unit(X: torch.Tensor, grad: torch.Tensor) -> float:
    """Unit of the step size of a projected gradient on ``X``: ``|X| / |grad|`` (1 where undefined).

    A step size in absolute units is not scale-free: the gradient scales with
    the data differently from ``X`` (and differently again once the
    components are renormalised); in this unit a step moves ``X`` by the same
    fraction of itself at any scale of the data.
    """
    xn, gn = float(X.norm(dtype=torch.float64)), float(grad.norm(dtype=torch.float64))
    step = xn / gn if gn > 0 else 1.0
    return step if math.isfinite(step) and step > 0 else 1.0


def restore_pow2_(carrier: torch.Tensor, other: torch.Tensor | None, e: int) -> None:
    """In place: ``carrier *= 2**e``, moving part of a large ``2**e`` into ``other`` where the
    carrier alone would overflow (data near the largest float); the product is the same."""
    if e > 0 and other is not None and carrier.numel() and other.numel():
        peak = float(carrier.abs().max())
        room = math.frexp(torch.finfo(carrier.dtype).max)[1] - 2  # keep a factor 2 below the largest float
        need = (math.frexp(peak)[1] + e - room) if peak > 0 else 0
        if need > 0:
            k = min(need, e)
            mul_pow2_(other, k)
            e -= k
    mul_pow2_(carrier, e)


def _product_sum(operator, W: torch.Tensor, H: torch.Tensor) -> float:
    """``sum(operator.reconstruct(H, W))`` in float64 (for NMF's ``H W^T`` from the column sums,
    without the product)."""
    from .operators import MatrixProduct

    if isinstance(operator, MatrixProduct):
        return float((H.sum(0, dtype=torch.float64) * W.sum(0, dtype=torch.float64)).sum())
    return float(operator.reconstruct(H, W).sum(dtype=torch.float64))


def match_product(operator, V: torch.Tensor, W: torch.Tensor, H: torch.Tensor, carrier: torch.Tensor | None,
                  mask: torch.Tensor | None = None) -> float:
    """Multiply ``carrier`` (W or H, in place) so that ``sum(W H) == sum(V)``; returns the factor.

    With a ``mask`` (weights broadcastable to ``V``) the sums are weighted:
    ``sum(M W H) == sum(M V)``, so that missing entries of ``V`` do not count.

    The factor is proportional to the scale of ``V`` (not rounded), which is
    what makes the fit of ``c V`` equal ``c`` times the fit of ``V`` for any
    starting factors, also random ones of unit size (``init=None``). Nothing
    happens (factor 1) without a trainable factor, for an all-zero ``V`` or
    product, or where the factor is not a finite positive number of the
    dtype.
    """
    if carrier is None:
        return 1.0
    if mask is not None:
        total = float((V * mask).sum(dtype=torch.float64))
        current = float((operator.reconstruct(H, W) * mask).sum(dtype=torch.float64))
    else:
        total = float(V.coalesce().values().sum(dtype=torch.float64)) if V.is_sparse \
            else float(V.sum(dtype=torch.float64))
        current = _product_sum(operator, W, H)
    if not (total > 0 and current > 0 and math.isfinite(total) and math.isfinite(current)):
        return 1.0
    k = total / current
    info = torch.finfo(carrier.dtype)
    # the rescaled carrier must stay finite and its largest entry a normal number
    peak = float(carrier.abs().max()) if carrier.numel() else 0.0
    if not (math.isfinite(k) and k > 0) or peak * k >= info.max or (peak > 0 and peak * k < info.tiny):
        return 1.0
    carrier.mul_(k)
    return k
