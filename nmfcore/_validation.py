"""Shared checks at the public boundaries.

Each check raises :class:`~nmfcore.exceptions.ParameterError` with a message
that names the argument and the value that was given.
"""

from __future__ import annotations

import math
import numbers

import torch

from .exceptions import ParameterError

__all__ = [
    "check_nonnegative_tensor",
    "value_range",
    "check_rank",
    "check_beta_for_data",
    "check_fraction",
    "check_positive_int",
    "check_nonnegative_float",
    "check_finite_float",
    "check_int",
    "check_beta",
    "make_generator",
    "memory_order",
]


def _values(V: torch.Tensor) -> torch.Tensor:
    if V.is_sparse:
        return V.coalesce().values()
    return memory_order(V)


def memory_order(V: torch.Tensor) -> torch.Tensor:
    """``V`` with its axes permuted into memory order, for reductions over all entries.

    A whole-tensor reduction is the same in any axis order, but on a
    transposed view it runs strided, about ten times slower; permuting the
    view costs nothing.
    """
    if V.is_contiguous() or V.ndim < 2:
        return V
    order = sorted(range(V.ndim), key=lambda d: (-V.stride(d), -V.shape[d]))
    P = V.permute(order)
    return P if P.is_contiguous() else V


def check_nonnegative_tensor(V, name: str = "V") -> torch.Tensor:
    """Return ``V`` if it is a floating tensor of finite non-negative values."""
    value_range(V, name)
    return V


def value_range(V, name: str = "V") -> tuple[float, float]:
    """``(min, max)`` of a floating tensor after checking it is finite and non-negative.

    One pass over the data (``torch.aminmax``: NaN and infinities propagate
    into the extremes). Empty tensors give ``(0.0, 0.0)``.
    """
    if not isinstance(V, torch.Tensor):
        raise ParameterError(f"{name} must be a torch.Tensor, got {type(V).__name__}")
    if not V.is_floating_point():
        raise ParameterError(f"{name} must be a floating-point tensor, got dtype={V.dtype}")
    vals = _values(V)
    if not vals.numel():
        return 0.0, 0.0
    mn, mx = (float(x) for x in torch.aminmax(vals.detach()))
    if mn != mn or mx != mx or mx == float("inf"):
        bad = vals[~torch.isfinite(vals)][0].item()
        raise ParameterError(f"{name} must contain only finite values, found {name} entry {bad}")
    if mn < 0:
        raise ParameterError(f"{name} must be non-negative, found {name}.min()={mn:g}")
    if V.is_sparse and vals.numel() < V.numel():
        mn = min(mn, 0.0)  # implicit zeros
    return mn, mx


def check_rank(rank) -> int:
    if isinstance(rank, bool) or not isinstance(rank, numbers.Integral) or rank < 1:
        raise ParameterError(f"rank={rank!r} must be a positive integer")
    return int(rank)


def check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ParameterError(f"{name}={value!r} must be a positive integer")
    return int(value)


def is_int(value) -> bool:
    """Whether ``value`` is an integer (not a bool)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value) -> bool:
    """Whether ``value`` is a real number (not a bool)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_int(value, name: str, *, low: int, high: int | None = None) -> int:
    """An integer ``>= low`` (and ``<= high`` if given), as an int."""
    if not is_int(value) or value < low or (high is not None and value > high):
        span = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ParameterError(f"{name}={value!r} must be an integer {span}")
    return int(value)


def check_nonnegative_float(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0 or value == float("inf"):
        raise ParameterError(f"{name}={value!r} must be a finite non-negative number")
    return float(value)


def check_finite_float(value, name: str, *, allow_zero: bool = False) -> float:
    """A finite positive number (or non-negative, with ``allow_zero``), as a float."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        kind = "non-negative" if allow_zero else "positive"
        raise ParameterError(f"{name}={value!r} must be a finite {kind} number")
    return float(value)


def check_beta(beta) -> float:
    if isinstance(beta, bool) or not isinstance(beta, numbers.Real) or beta != beta or abs(beta) == float("inf"):
        raise ParameterError(f"beta={beta!r} must be a finite real number")
    return float(beta)


def check_beta_for_data(beta, vmin: float) -> float:
    """beta <= 0 is undefined where V has zeros (the divergence is infinite)."""
    beta = check_beta(beta)
    if beta <= 0 and vmin <= 0:
        raise ParameterError(
            f"beta={beta:g} <= 0 needs a strictly positive V, but V contains zeros: "
            "add a small constant to V or use beta > 0"
        )
    return beta


def check_fraction(value, name: str, *, low_inclusive: bool, high_inclusive: bool):
    """Check ``value`` lies in the unit interval with the given open/closed ends."""
    lo, hi = ("[" if low_inclusive else "("), ("]" if high_inclusive else ")")
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok:
        ok = (value >= 0 if low_inclusive else value > 0) and (value <= 1 if high_inclusive else value < 1)
    if not ok:
        raise ParameterError(f"{name}={value!r} must lie in {lo}0, 1{hi}")
    return float(value)


def make_generator(generator, device=None) -> torch.Generator | None:
    """Turn ``generator`` (None, int seed or torch.Generator) into a Generator.

    ``None`` gives ``None`` (use torch's default generator); the global RNG is
    never seeded.
    """
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, numbers.Integral) and not isinstance(generator, bool):
        g = torch.Generator(device=device if device is not None else "cpu")
        g.manual_seed(int(generator))
        return g
    raise ParameterError(f"generator={generator!r} must be None, an int seed or a torch.Generator")
