"""What every factor-holding model shares: initial values, the rank axis, the shapes it records.

:class:`nmfcore.nmf.BaseComponent` (``W``, ``H``) and
:class:`nmfcore.plca.BaseComponent` (``W``, ``H``, ``Z``) both keep the rank
on axis 1 of ``W`` and ``H``, take each factor as a shape or a tensor, and
show the same summary in ``repr``; this module is the one place for that.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from typing import Optional

import torch
from torch import Tensor

from ._validation import make_generator, value_range
from .exceptions import ParameterError

__all__ = ["FactorModule", "initial_values"]


def initial_values(value, name: str, generator, like: Optional[Tensor] = None) -> Optional[Tensor]:
    """A factor's initial values: None, a copy of a finite non-negative tensor, or ``|N(0, 1)|`` draws of a shape.

    Draws use ``generator`` (a ``torch.Generator``, an int seed or None) and
    ``like``'s dtype and device (default: the default dtype on the CPU).

    Examples
    --------
    >>> initial_values((2, 3), "W", 0).shape
    torch.Size([2, 3])
    >>> initial_values((2, -1), "W", 0)
    Traceback (most recent call last):
    ...
    nmfcore.exceptions.ParameterError: W=(2, -1) must be a shape of positive integers or a tensor
    """
    if value is None:
        return None
    if isinstance(value, Tensor):
        value_range(value, name)
        return value.detach().clone()
    if isinstance(value, Iterable):
        shape = tuple(value)
        if not shape or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 1
                                for s in shape):
            raise ParameterError(f"{name}={shape!r} must be a shape of positive integers or a tensor")
        dtype = like.dtype if like is not None else torch.get_default_dtype()
        data = torch.randn(shape, generator=make_generator(generator), dtype=dtype).abs_()
        return data if like is None else data.to(like.device)
    raise ParameterError(f"{name} must be a shape tuple or a tensor, got {type(value).__name__}")


class FactorModule(torch.nn.Module):
    """A module holding ``W`` and ``H`` with the rank on axis 1: the checks and attributes of their shapes.

    Attributes (after :meth:`_record_shapes`)
    -----------------------------------------
    out_channels : int
        ``W.shape[0]``, where ``W`` is given.
    kernel_size : tuple of int
        ``W.shape[2:]``, for convolutive models.
    """

    def _check_rank_axes(self) -> None:
        """``W`` and ``H``, where given, have a rank axis (axis 1)."""
        for n in ("W", "H"):
            p = getattr(self, n)
            if p is not None and p.ndim < 2:
                raise ParameterError(f"{n} must have at least 2 dimensions (rank on axis 1), got shape {tuple(p.shape)}")

    def _record_shapes(self) -> None:
        """Set :attr:`out_channels` and :attr:`kernel_size` from ``W``."""
        if self.W is not None:
            self.out_channels = self.W.shape[0]
            if self.W.ndim > 2:
                self.kernel_size = tuple(self.W.shape[2:])

    def extra_repr(self) -> str:
        s = f"{self.rank}"
        if self.W is not None:
            s += f", out_channels={self.out_channels}"
            if hasattr(self, "kernel_size"):
                s += f", kernel_size={self.kernel_size}"
        return s
