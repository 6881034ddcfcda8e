"""Checks of constructor arguments added by the hardening pass (issue 14).

Kept apart from :mod:`nmfcore._validation` so that the models call them in
one line each.
"""

from __future__ import annotations

import numbers

import torch

from .exceptions import ParameterError

__all__ = ["kernel_tuple", "check_kernel_fits", "check_factor_pair", "check_layout"]


def kernel_tuple(value, n: int, name: str = "kernel_size") -> tuple:
    """``value`` as a tuple of ``n`` positive ints: an int ``k`` means ``(k,) * n``.

    Raises
    ------
    ParameterError
        A sequence of another length, or entries that are not positive integers.
    """
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (value,) * n
    try:
        items = tuple(value)
    except TypeError:
        raise ParameterError(f"{name}={value!r} must be a positive int or a tuple of {n} positive ints") from None
    if len(items) != n or not all(isinstance(k, numbers.Integral) and not isinstance(k, bool) and k >= 1
                                  for k in items):
        raise ParameterError(f"{name}={value!r} must be a positive int or a tuple of {n} positive ints")
    return tuple(int(k) for k in items)


def check_kernel_fits(kernel_size: tuple, sizes: tuple, name: str = "kernel_size") -> None:
    """Every kernel extent lies in [1, the size of V along that axis] (the activations are non-empty)."""
    for k, n in zip(kernel_size, sizes):
        if not 1 <= k <= n:
            raise ParameterError(f"{name}={tuple(kernel_size)} must lie within the size of V {tuple(sizes)}")


def check_factor_pair(W, H) -> None:
    """W and H given as tensors must share dtype and device (``forward`` multiplies them)."""
    if isinstance(W, torch.Tensor) and isinstance(H, torch.Tensor) and (W.dtype != H.dtype or W.device != H.device):
        raise ParameterError(f"W is {W.dtype} on {W.device} but H is {H.dtype} on {H.device}: "
                             "give both the same dtype and device")


def check_layout(V, name: str = "V") -> None:
    """Dense (strided) or sparse COO tensors only; CSR, CSC and block layouts are refused."""
    if isinstance(V, torch.Tensor) and V.layout not in (torch.strided, torch.sparse_coo):
        raise ParameterError(f"{name} has layout {V.layout}; give a dense tensor or a sparse COO tensor "
                             f"({name}.to_sparse_coo() or {name}.to_dense())")
