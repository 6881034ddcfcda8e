"""Scratch buffers of a fit, kept apart from the values it caches from one ``V``.

A fit allocates nothing of the data's size per iteration: the reconstruction,
the two multiplicative-update terms and the operators' intermediate tensors
live in named buffers that are allocated on first use and then reused. Their
contents mean nothing between calls. Values *computed from the data* (its
squared norm, the constant part of the divergence, ``V`` floored at epsilon,
the transposed sparse ``V``, ``V W`` for the current ``W``) are something
else: they are only correct for the ``V`` they came from. A
:class:`Workspace` keeps the two apart, and its data values are bound to one
``V`` (the tensor object and its in-place version counter): asked for a value
of another ``V``, or of the same tensor after an in-place change, it forgets
what it had and recomputes, so a workspace reused across data can never
return a stale value.
"""

from __future__ import annotations

import weakref
from typing import Callable, Optional

import torch
from torch import Tensor

__all__ = ["Workspace"]


class Workspace:
    """Named scratch buffers plus the cached values of one data tensor.

    Examples
    --------
    >>> import torch
    >>> ws = Workspace()
    >>> V = torch.ones(2, 3)
    >>> float(ws.cached(V, "sqnorm", lambda: V.square().sum()))
    6.0
    >>> V3 = 3 * V  # another V: the value is recomputed, never reused
    >>> float(ws.cached(V3, "sqnorm", lambda: V3.square().sum()))
    54.0
    >>> buf = ws.buffer("Y", (2, 3), V)  # allocated once, then reused
    >>> buf is ws.buffer("Y", (2, 3), V), "Y" in ws
    (True, True)
    """

    __slots__ = ("_buffers", "_values", "_source", "_version")

    def __init__(self):
        self._buffers: dict = {}
        self._values: dict = {}
        self._source: Optional[weakref.ref] = None
        self._version = -1

    # ------------------------------------------------------------- buffers
    def buffer(self, key: str, like, ref: Optional[Tensor] = None) -> Tensor:
        """A buffer like ``like`` (same shape, strides, dtype and device), or of the shape ``like``
        with ``ref``'s dtype and device: allocated on first use, then reused (contents undefined)."""
        buf = self._buffers.get(key)
        if isinstance(like, Tensor):
            # in ``like``'s memory layout (e.g. a transposed view): passes over both run in memory order
            if buf is None or buf.shape != like.shape or buf.stride() != like.stride() or buf.dtype != like.dtype \
                    or buf.device != like.device:
                buf = self._buffers[key] = torch.empty_like(like)
            return buf
        shape = tuple(like)
        if buf is None or tuple(buf.shape) != shape or buf.dtype != ref.dtype or buf.device != ref.device:
            buf = self._buffers[key] = torch.empty(shape, dtype=ref.dtype, device=ref.device)
        return buf

    def share(self, key: str, tensor: Tensor) -> Tensor:
        """Use ``tensor`` (e.g. a slice of another buffer) as the buffer ``key``."""
        self._buffers[key] = tensor
        return tensor

    def __contains__(self, key) -> bool:
        return key in self._buffers

    def __getitem__(self, key) -> Tensor:
        return self._buffers[key]

    # -------------------------------------------------- values of one V
    def cached(self, V: Tensor, key, compute: Callable[[], object]):
        """``compute()``, computed once per ``V``: the value for ``key`` if it was computed from this
        very ``V`` (same tensor, not changed in place since), else computed now (and every value of
        another ``V`` forgotten)."""
        if not self.bound_to(V):
            self._values.clear()
            self._source = weakref.ref(V)
            self._version = V._version
        value = self._values.get(key)
        if value is None:
            value = self._values[key] = compute()
        return value

    def bound_to(self, V: Tensor) -> bool:
        """Whether the cached values were computed from ``V`` as it is now."""
        return self._source is not None and self._source() is V and self._version == V._version

    def store(self, V: Tensor, key, value) -> None:
        """Cache ``value`` for ``key`` as computed from ``V`` (forgetting the values of another ``V``)."""
        self.cached(V, key, lambda: value)
        self._values[key] = value

    def peek(self, V: Tensor, key):
        """The value cached for ``key`` from this ``V``, or None."""
        return self._values.get(key) if self.bound_to(V) else None
