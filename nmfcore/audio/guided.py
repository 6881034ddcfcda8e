r"""Guided separation: the user marks where each source sounds, the factorisation follows.

The user draws boxes on the mixture's spectrogram, each a :class:`Mark`
``(source, t0, t1, f0, f1)`` in seconds and Hz with a confidence ``weight``
in [0, 1]: "only source ``s`` sounds here", or with ``absent=True`` "source
``s`` is silent here"; a mark may also be a polygon (a lasso,
:meth:`Mark.from_polygon`). :func:`mark_weights` turns the marks into
per-source time-frequency weights :math:`A_s(f, t) \in [0, 1]` on the STFT
grid:

* a mark "only ``s`` here" of weight ``w`` sets :math:`A_{s'} = 1 - w` for
  every other source :math:`s'` in its box (and :math:`A_s = 1`);
* a mark "``s`` absent" of weight ``w`` sets :math:`A_s = 1 - w` in its box;
* everywhere else :math:`A_s = 1`;
* where boxes overlap, marks are applied in order of increasing weight,
  and in the order given among equal weights: **the higher-weight mark wins,
  and of two equal weights the later one**.

The model gives every source a block of ``k`` components (the settings'
``rank`` shared as evenly as possible) and reconstructs the magnitude
spectrogram ``V`` (freq, frames) as

.. math::
    \hat V = \sum_s A_s \odot (W_s H_s^T)

which is linear in ``W`` and ``H``, so the beta-divergence multiplicative
updates apply unchanged (Lefèvre, Bach and Févotte [1]_). The objective is

.. math::
    d_\beta(V \,|\, \hat V) + \lambda c \sum_s \langle 1[A_s = 0], W_s H_s^T \rangle,
    \qquad c = \textstyle\sum V^\beta / \sum V,

whose second term (``penalty`` :math:`= \lambda`) makes a source's own
energy cost where a certain mark (weight 1) excludes it. For beta = 1,
:math:`\lambda = 1` and marks of weight 1 this is Bryan and Mysore's
posterior-regularised PLCA [2]_ (their E-step posteriors reweighted by
:math:`A_s`, the M-step normalised by the unweighted sums): the update of
``H`` is :math:`H_s \leftarrow H_s \odot ((A_s \odot V / \hat V)^T W_s) /
(1^T W_s)`. Without the penalty a source is merely left out of the model in
the boxes of the others ("don't care"); with it, it is also pushed to
silence there, which shapes its templates and activations from few marks.
With :math:`\lambda = 0` the model is the weighted one alone.

What the weight does: with ``w = 1`` the other sources are removed from the
model in the box and penalised there (their masks are 0: the box goes
entirely to ``s``). With ``w < 1`` their contribution to the model is
scaled by ``1 - w`` and nothing is penalised, so a source that really
sounds in the box can still explain it by being louder there: the fit is
bent, the source is not silenced (its mask keeps the share
:math:`(1 - w) P_{s'} / \hat V`). The closer ``w`` is to 1, the more the
other sources win the box. The same weights shape the soft masks of the
result (:class:`GuidedSeparation`), so the sources still sum to the
mixture.

A source with no marks gets no forced components: its block is fitted
freely wherever the other sources' marks leave room, and the result lists it
in :attr:`GuidedSeparation.unmarked`.

References
----------
.. [1] A. Lefèvre, F. Bach and C. Févotte, "Semi-supervised NMF with
   time-frequency annotations for single-channel source separation",
   ISMIR 2012.
.. [2] N. J. Bryan and G. J. Mysore, "An efficient posterior regularized
   latent variable model for interactive sound source separation",
   ICML 2013.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import warnings
from dataclasses import dataclass, field
from time import perf_counter
from typing import Mapping, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from .. import divergence as _div
from .._fit import run_iterations
from ..exceptions import ConvergenceWarning, ParameterError
from ..init import random_like_data
from .separation import Callback, Separation, SeparationSettings, _model_data, _prepare, _recorder, check_device

__all__ = ["Mark", "parse_marks", "check_marks", "load_marks", "mark_weights", "source_blocks", "GuidedSeparation",
           "separate_guided", "refine", "separate_marked", "guided_objective"]

#: Default strength of the penalty on a source's energy where a certain mark excludes it (Bryan and
#: Mysore's posterior regularisation for beta = 1); 0 gives the weighted model of Lefèvre et al. alone.
DEFAULT_PENALTY = 1.0
#: Iterations of a refinement (:func:`refine`) when not given: it starts from a fitted model.
REFINE_ITER = 50

_KEYS = ("source", "t0", "t1", "f0", "f1", "weight", "absent", "polygon")


@dataclass(frozen=True)
class Mark:
    """One annotation: a box (or a polygon) of the spectrogram where a source is (or is not).

    Parameters
    ----------
    source : int
        Index of the source, from 0.
    t0, t1 : float
        Start and end in seconds (``t0 < t1``).
    f0, f1 : float, default 0 and None
        Lowest and highest frequency in Hz; ``f1=None`` means ``sr / 2``
        (so ``Mark(s, t0, t1)`` marks a whole time span).
    weight : float in [0, 1], default 1
        The user's confidence: 1 "certainly only this source here" (the
        others get weight 0 in the box), 0 no effect.
    absent : bool, default False
        The mark says that ``source`` is *not* in the box.
    polygon : tuple of (float, float), optional
        A region of any shape (a lasso): its vertices ``(seconds, Hz)`` in
        order, at least three; the mark then covers the STFT cells whose
        centres lie inside it (:func:`mark_weights`) and the box
        ``t0, t1, f0, f1`` is its bounding box (:meth:`from_polygon` fills
        it in).

    Examples
    --------
    >>> Mark(0, 1.0, 2.5, 200, 800).to_dict()
    {'source': 0, 't0': 1.0, 't1': 2.5, 'f0': 200.0, 'f1': 800.0, 'weight': 1.0, 'absent': False}
    >>> Mark.from_polygon(1, [(1.0, 200), (2.0, 300), (1.5, 900)])
    Mark(source=1, t0=1.0, t1=2.0, f0=200.0, f1=900.0, weight=1.0, absent=False, polygon=((1.0, 200.0), (2.0, 300.0), (1.5, 900.0)))
    """

    source: int
    t0: float
    t1: float
    f0: float = 0.0
    f1: Optional[float] = None
    weight: float = 1.0
    absent: bool = False
    polygon: Optional[tuple] = None

    def __repr__(self) -> str:
        poly = "" if self.polygon is None else f", polygon={self.polygon!r}"
        return (f"Mark(source={self.source!r}, t0={self.t0!r}, t1={self.t1!r}, f0={self.f0!r}, f1={self.f1!r}, "
                f"weight={self.weight!r}, absent={self.absent!r}{poly})")

    @classmethod
    def from_polygon(cls, source: int, vertices, weight: float = 1.0, absent: bool = False) -> "Mark":
        """A mark over a polygon (vertices ``(seconds, Hz)``), its box the polygon's bounding box.

        Raises
        ------
        ParameterError
            Fewer than three vertices, or a vertex that is not a pair of
            finite numbers.
        """
        poly = _polygon(vertices, "polygon")
        ts, fs = [v[0] for v in poly], [v[1] for v in poly]
        return cls(source, min(ts), max(ts), min(fs), max(fs), weight, absent, poly)

    def to_dict(self) -> dict:
        """The mark as plain JSON-able data (the format :func:`parse_marks` reads)."""
        out = {"source": int(self.source), "t0": float(self.t0), "t1": float(self.t1), "f0": float(self.f0),
               "f1": None if self.f1 is None else float(self.f1), "weight": float(self.weight),
               "absent": bool(self.absent)}
        if self.polygon is not None:
            out["polygon"] = [[float(t), float(f)] for t, f in self.polygon]
        return out


def _polygon(vertices, what: str) -> tuple:
    """Vertices as a tuple of (t, f) float pairs, at least three, all finite."""
    if isinstance(vertices, (str, bytes, Mapping)) or not isinstance(vertices, (Sequence, np.ndarray)):
        raise ParameterError(f"{what}={vertices!r} must be a list of [seconds, Hz] vertices")
    out = []
    for j, v in enumerate(vertices):
        if isinstance(v, (str, bytes, Mapping)) or not isinstance(v, (Sequence, np.ndarray)) or len(v) != 2:
            raise ParameterError(f"{what}[{j}]={v!r} must be a vertex [seconds, Hz]")
        out.append((_number(v[0], f"{what}[{j}] time"), _number(v[1], f"{what}[{j}] frequency")))
    if len(out) < 3:
        raise ParameterError(f"{what} has {len(out)} vertices: a polygon needs at least 3")
    return tuple(out)


def _number(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ParameterError(f"{what}={value!r} must be a number")
    value = float(value)
    if not math.isfinite(value):
        raise ParameterError(f"{what}={value!r} must be a finite number")
    return value


def parse_marks(marks) -> list[Mark]:
    """Marks from plain data: :class:`Mark` objects, tuples or dicts.

    A tuple is ``(source, t0, t1)``, ``(source, t0, t1, f0, f1)``,
    ``(source, t0, t1, f0, f1, weight)`` or ``(..., weight, absent)``; a dict has the keys ``source``,
    ``t0``, ``t1`` and optionally ``f0``, ``f1`` (null: ``sr / 2``),
    ``weight`` and ``absent`` (the JSON format of the command line), or
    ``source`` and ``polygon`` (a list of ``[seconds, Hz]`` vertices, at
    least three) instead of the box, whose keys may then be left out (they
    are the polygon's bounding box; given, they must be it). Every
    number must be finite; the values are checked against the audio by
    :func:`check_marks`.

    Raises
    ------
    ParameterError
        Naming the mark (its index) and the bad value.

    Examples
    --------
    >>> parse_marks([(1, 0.0, 2.0), {"source": 0, "t0": 2, "t1": 3, "f0": 100, "f1": 400, "weight": 0.8}])
    [Mark(source=1, t0=0.0, t1=2.0, f0=0.0, f1=None, weight=1.0, absent=False), Mark(source=0, t0=2.0, t1=3.0, f0=100.0, f1=400.0, weight=0.8, absent=False)]
    >>> parse_marks([(0, 1.0, float("nan"))])
    Traceback (most recent call last):
    ...
    nmfcore.exceptions.ParameterError: marks[0]: t1=nan must be a finite number
    >>> parse_marks([{"source": 0, "polygon": [[0, 100], [1, 100]]}])
    Traceback (most recent call last):
    ...
    nmfcore.exceptions.ParameterError: marks[0]: polygon has 2 vertices: a polygon needs at least 3
    """
    if marks is None:
        return []
    if isinstance(marks, (str, bytes, Mapping)) or not isinstance(marks, Sequence):
        raise ParameterError(f"marks must be a list of marks (Mark, tuple or dict), got {type(marks).__name__}")
    out = []
    for i, m in enumerate(marks):
        where = f"marks[{i}]"
        if isinstance(m, Mark):
            d = m.to_dict()
        elif isinstance(m, Mapping):
            unknown = sorted(str(k) for k in m if k not in _KEYS)
            if unknown:
                raise ParameterError(f"{where} has unknown keys {unknown}; known: {list(_KEYS)}")
            needed = ("source",) if m.get("polygon") is not None else ("source", "t0", "t1")
            missing = [k for k in needed if k not in m]
            if missing:
                raise ParameterError(f"{where}={dict(m)!r} lacks {missing}")
            d = dict(m)
        elif isinstance(m, (tuple, list)) and len(m) in (3, 5, 6, 7):
            d = dict(zip(_KEYS, m))
        else:
            raise ParameterError(f"{where}={m!r} must be a Mark, a dict or a tuple (source, t0, t1[, f0, f1"
                                 "[, weight[, absent]]])")
        s = d["source"]
        if isinstance(s, bool) or not isinstance(s, numbers.Integral):
            raise ParameterError(f"{where}: source={s!r} must be an integer source index")
        w = _number(d.get("weight", 1.0), f"{where}: weight")
        absent = d.get("absent", False)
        if not isinstance(absent, (bool, np.bool_)):
            raise ParameterError(f"{where}: absent={absent!r} must be true or false")
        if d.get("polygon") is not None:
            poly = Mark.from_polygon(int(s), _polygon(d["polygon"], f"{where}: polygon"), w, bool(absent))
            for key in ("t0", "t1", "f0", "f1"):
                if d.get(key) is not None:
                    given, box = _number(d[key], f"{where}: {key}"), getattr(poly, key)
                    if abs(given - box) > 1e-9 * max(1.0, abs(box)):
                        raise ParameterError(f"{where}: {key}={given:g} is not the polygon's bounding box "
                                             f"({key}={box:g}); give the polygon alone")
            out.append(poly)
            continue
        t0, t1 = _number(d["t0"], f"{where}: t0"), _number(d["t1"], f"{where}: t1")
        f0 = _number(d.get("f0", 0.0), f"{where}: f0")
        f1 = d.get("f1")
        f1 = None if f1 is None else _number(f1, f"{where}: f1")
        out.append(Mark(int(s), t0, t1, f0, f1, w, bool(absent)))
    return out


def check_marks(marks, *, n_sources: int, duration: float, sr: int) -> list[Mark]:
    """Parse (:func:`parse_marks`) and check marks against the audio.

    Parameters
    ----------
    marks : list of Mark, tuple or dict
    n_sources : int
    duration : float
        Length of the audio in seconds.
    sr : int
        Its sample rate (frequencies lie in [0, sr / 2]).

    Returns
    -------
    list of Mark
        With ``f1`` filled in (``sr / 2`` where it was None).

    Raises
    ------
    ParameterError
        A source index outside ``[0, n_sources)``, ``t1 <= t0``, times
        outside ``[0, duration]``, frequencies outside ``[0, sr / 2]``,
        ``f1 <= f0``, a weight outside [0, 1] or a non-finite number (for a
        polygon, of its bounding box: a polygon of no width or no height is
        refused); the message names the mark and the value.

    Examples
    --------
    >>> check_marks([(0, 0.5, 1.0, 0, None)], n_sources=2, duration=2.0, sr=8000)[0].f1
    4000.0
    >>> check_marks([(2, 0.5, 1.0)], n_sources=2, duration=2.0, sr=8000)
    Traceback (most recent call last):
    ...
    nmfcore.exceptions.ParameterError: marks[0]: source=2 is not a source index in [0, 2)
    """
    out = []
    nyquist = sr / 2
    for i, m in enumerate(parse_marks(marks)):
        where = f"marks[{i}]"
        if not 0 <= m.source < n_sources:
            raise ParameterError(f"{where}: source={m.source} is not a source index in [0, {n_sources})")
        if m.t1 <= m.t0:
            raise ParameterError(f"{where}: t1={m.t1:g} s must be greater than t0={m.t0:g} s")
        if m.t0 < 0 or m.t1 > duration + 1e-9:
            bad = ("t0", m.t0) if m.t0 < 0 else ("t1", m.t1)
            raise ParameterError(f"{where}: {bad[0]}={bad[1]:g} s lies outside the audio [0, {duration:g}] s")
        f1 = nyquist if m.f1 is None else m.f1
        for name, f in (("f0", m.f0), ("f1", f1)):
            if not 0 <= f <= nyquist:
                raise ParameterError(f"{where}: {name}={f:g} Hz lies outside [0, {nyquist:g}] Hz (sr / 2)")
        if f1 <= m.f0:
            raise ParameterError(f"{where}: f1={f1:g} Hz must be greater than f0={m.f0:g} Hz")
        if not 0 <= m.weight <= 1:
            raise ParameterError(f"{where}: weight={m.weight:g} must lie in [0, 1]")
        out.append(Mark(m.source, m.t0, m.t1, m.f0, f1, m.weight, m.absent, m.polygon))
    return out


def _box(m: Mark, sr: int, n_fft: int, hop_length: int, n_bins: int, n_times: int) -> tuple[slice, slice]:
    """Bins and frames of a checked mark: centres in [f0, f1) and [t0, t1), the end included when the box
    reaches sr/2 or the last frame; at least one of each (the nearest)."""
    def span(lo, hi, step, n, to_end):
        a = min(n - 1, max(0, math.ceil(lo / step - 1e-9)))
        b = n if to_end else min(n, max(0, math.ceil(hi / step - 1e-9)))
        return slice(a, max(b, a + 1))

    fs, ts = sr / n_fft, hop_length / sr
    return (span(m.f0, m.f1, fs, n_bins, m.f1 >= sr / 2),
            span(m.t0, m.t1, ts, n_times, m.t1 >= (n_times - 1) * ts))


def _inside(polygon, t: Tensor, f: Tensor) -> Tensor:
    """Even-odd rule: which points ``(t[j], f[k])`` of a grid lie inside the polygon (bool, (len f, len t)).

    A horizontal ray from each point crosses an edge when the point's ``f`` lies in the edge's half-open span
    and the crossing lies right of it; the points on the lower and left edges of a box are inside, those on the
    upper and right edges outside, as for the box rule of :func:`mark_weights`.
    """
    T, Fq = t[None, :].double(), f[:, None].double()
    inside = torch.zeros((len(f), len(t)), dtype=torch.bool)
    n = len(polygon)
    for i in range(n):
        (t1, f1), (t2, f2) = polygon[i], polygon[(i + 1) % n]
        if f1 == f2:
            continue  # a horizontal edge crosses no horizontal ray
        spans = (Fq >= min(f1, f2)) & (Fq < max(f1, f2))
        cross = t1 + (Fq - f1) * (t2 - t1) / (f2 - f1)  # the edge's time at each point's frequency
        inside ^= spans & (T < cross)
    return inside


def _region(m: Mark, sr: int, n_fft: int, hop_length: int, n_bins: int, n_times: int):
    """(bins, frames, cells): the mark's box (:func:`_box`) and, for a polygon, which of its cells it covers
    (bool (bins, frames); None: the whole box)."""
    fb, tb = _box(m, sr, n_fft, hop_length, n_bins, n_times)
    if m.polygon is None:
        return fb, tb, None
    # cell centres, moved into the bounding box where the box rule takes a cell beyond it (the Nyquist bin,
    # the last frame, the nearest cell of a thin box): a rectangle covers exactly its box's cells
    f = torch.arange(fb.start, fb.stop, dtype=torch.float64) * (sr / n_fft)
    t = torch.arange(tb.start, tb.stop, dtype=torch.float64) * (hop_length / sr)
    f = f.clamp(m.f0, math.nextafter(m.f1, -math.inf))
    t = t.clamp(m.t0, math.nextafter(m.t1, -math.inf))
    cells = _inside(m.polygon, t, f)
    if not bool(cells.any()):
        return fb, tb, None  # thinner than a cell everywhere: its box's cells, as for a thin box
    return fb, tb, cells


def mark_weights(marks, n_sources: int, *, sr: int, n_frames: int, n_fft: int = 2048,
                 hop_length: int = 512) -> Tensor:
    r"""Per-source time-frequency weights :math:`A_s(f, t)` of the marks, on the STFT grid.

    See the module's description for the rules (a mark "only ``s``" of
    weight ``w`` sets the other sources to ``1 - w`` in its box, "``s``
    absent" sets ``s`` to ``1 - w``; the higher-weight mark wins where boxes
    overlap, the later one among equal weights). A frame belongs to a box
    when its centre time lies in ``[t0, t1)``, a bin when its frequency lies
    in ``[f0, f1)`` (the box's last frame and the Nyquist bin are included
    when it reaches them); a box narrower than one bin or one frame still
    covers the nearest one. A polygon mark covers the cells of its bounding
    box whose centres lie inside the polygon (even-odd rule; centres beyond
    the box, as the Nyquist bin, are moved onto its edge first, so a
    rectangular polygon covers exactly its box's cells), or, when it holds
    no centre at all, its bounding box's cells.

    Parameters
    ----------
    marks : list of Mark, tuple or dict
        Already checked (:func:`check_marks`) or at least parsed;
        ``f1=None`` means ``sr / 2``.
    n_sources : int
    sr : int
    n_frames : int
        Frames of the centred STFT (``1 + samples // hop_length``).
    n_fft, hop_length : int, keyword-only

    Returns
    -------
    torch.Tensor [shape=(n_sources, n_fft // 2 + 1, n_frames)], float32
        Values in [0, 1], 1 where no mark applies.

    Examples
    --------
    >>> A = mark_weights([(0, 0.0, 0.5)], 2, sr=8000, n_frames=126, n_fft=512, hop_length=128)
    >>> A.shape, float(A[1, :, :31].max()), float(A[1, :, 32:].min()), float(A[0].min())
    (torch.Size([2, 257, 126]), 0.0, 1.0, 1.0)
    """
    n_bins = n_fft // 2 + 1
    A = torch.ones((n_sources, n_bins, n_frames))
    parsed = parse_marks(marks)
    order = sorted(range(len(parsed)), key=lambda i: parsed[i].weight)  # stable: later wins among equals
    for i in order:
        m = parsed[i]
        if m.f1 is None:
            m = dataclasses.replace(m, f1=sr / 2)
        fb, tb, cells = _region(m, sr, n_fft, hop_length, n_bins, n_frames)
        if cells is None:
            if m.absent:
                A[m.source, fb, tb] = 1.0 - m.weight
            else:
                A[:, fb, tb] = 1.0 - m.weight
                A[m.source, fb, tb] = 1.0
            continue
        box = A[:, fb, tb]  # a view: the polygon's cells are set in place
        if m.absent:
            box[m.source][cells] = 1.0 - m.weight
        else:
            box[:, cells] = 1.0 - m.weight
            box[m.source][cells] = 1.0
    return A


def source_blocks(rank: int, n_sources: int) -> list[list[int]]:
    """Components of each source: ``rank`` shared in consecutive blocks, the first ones one larger.

    Examples
    --------
    >>> source_blocks(8, 3)
    [[0, 1, 2], [3, 4, 5], [6, 7]]
    >>> source_blocks(2, 3)
    Traceback (most recent call last):
    ...
    nmfcore.exceptions.ParameterError: n_sources=3 is more than the rank=2 components: each source needs at least one (raise the rank)
    """
    if n_sources > rank:
        raise ParameterError(f"n_sources={n_sources} is more than the rank={rank} components: each source "
                             "needs at least one (raise the rank)")
    q, r = divmod(rank, n_sources)
    out, start = [], 0
    for s in range(n_sources):
        k = q + (s < r)
        out.append(list(range(start, start + k)))
        start += k
    return out


# ------------------------------------------------------------------ the model
def _spans(groups) -> list[tuple[int, int]]:
    return [(g[0], g[-1] + 1) for g in groups]


def _reconstruct(W: Tensor, H: Tensor, A: Tensor, spans, marked) -> Tensor:
    r"""``sum_s A_s * (W_s H_s^T)`` (freq, frames); unmarked sources skip their all-ones weight."""
    Y = None
    for s, (a, b) in enumerate(spans):
        P = W[:, a:b] @ H[:, a:b].t()
        if marked[s]:
            P.mul_(A[s])
        Y = P if Y is None else Y.add_(P)
    return Y


def _excluded(A: Tensor) -> Tensor:
    """``1[A == 0]``: the bins a certain mark (weight 1) takes from a source, where the penalty acts."""
    return (A == 0).to(A.dtype)


def _penalty_value(W, H, A, spans, marked, lam_c: float) -> float:
    # lam c sum_s <1[A_s = 0], W_s H_s^T> = lam c sum_s sum(W_s * (1[A_s = 0] H_s))
    if not lam_c:
        return 0.0
    total = 0.0
    for s, (a, b) in enumerate(spans):
        if marked[s]:
            total += float((W[:, a:b] * (_excluded(A[s]) @ H[:, a:b])).sum())
    return lam_c * total


def guided_objective(V: Tensor, W: Tensor, H: Tensor, A: Tensor, groups, beta: float, penalty: float) -> float:
    r"""The objective :math:`d_\beta(V|\hat V) + \lambda c \sum_s \langle 1[A_s = 0], W_s H_s^T\rangle`.

    Shape
    -----
    - V: :math:`(F, T)`, the spectrogram; W: :math:`(F, R)`; H: :math:`(T, R)`
    - A: :math:`(S, F, T)`; ``groups``: consecutive blocks of components, one per source.

    Examples
    --------
    >>> V = torch.ones(3, 4); W = torch.ones(3, 2); H = torch.ones(4, 2) / 2
    >>> guided_objective(V, W, H, torch.ones(2, 3, 4), [[0], [1]], 1.0, 1.0)
    0.0
    """
    spans = _spans(groups)
    marked = [bool((A[s] < 1).any()) for s in range(len(spans))]
    Y = _reconstruct(W, H, A, spans, marked)
    c = _penalty_scale(V, beta)
    return float(_div.beta_divergence(V, Y, beta)) + _penalty_value(W, H, A, spans, marked, penalty * c)


def _penalty_scale(V: Tensor, beta: float) -> float:
    """``c = sum(V**beta) / sum(V)``: puts the penalty in the divergence's units (1 for beta = 1)."""
    if beta == 1:
        return 1.0
    total = float(V.sum(dtype=torch.float64))
    return float(V.double().pow(beta).sum()) / total if total > 0 else 1.0


def _pos_weights(A: Tensor, marked, lam_c: float) -> list:
    """For beta = 1, the output-space positive terms ``A_s + lam c 1[A_s = 0]`` of every source, which do not
    change during the fit (None where they are all ones: the pull-back is then a sum)."""
    out = []
    for s, m in enumerate(marked):
        if not m:
            out.append(None)
            continue
        P = A[s] + lam_c * _excluded(A[s]) if lam_c else A[s]
        out.append(None if bool((P == 1).all()) else P)
    return out


def _terms(which: str, V: Tensor, W: Tensor, H: Tensor, A: Tensor, spans, marked, beta: float,
           lam_c: float, pos_weights: Optional[list] = None) -> tuple[Tensor, Tensor]:
    r"""(neg, pos) of the multiplicative update of ``which`` (closed form; the tests pin it to autograd's
    vector-Jacobian product of the reconstruction).

    Here, for source ``s`` with output-space terms ``n, p`` of :func:`nmfcore.divergence.mu_terms`:
    neg_s = (A_s * n) @ other_s and pos_s = (A_s * p + lam c 1[A_s = 0]) @ other_s
    (transposed for H), the penalty's gradient joining the positive part. For beta = 1, ``p`` is all
    ones, so the positive terms are fixed (:func:`_pos_weights`, computed once per fit).
    """
    Y = _reconstruct(W, H, A, spans, marked)
    # in place (into Y) where no scratch buffer is needed
    neg_out, pos_out = _div.mu_terms(V, Y, beta, out=Y) if beta in (1, 2) else _div.mu_terms(V, Y, beta)
    if pos_out is None and pos_weights is None:
        pos_weights = _pos_weights(A, marked, lam_c)
    X = W if which == "W" else H
    neg, pos = torch.empty_like(X), torch.empty_like(X)
    for s, (a, b) in enumerate(spans):
        other = (H if which == "W" else W)[:, a:b]
        n_s = neg_out * A[s] if marked[s] else neg_out
        if pos_out is None:
            p_s = pos_weights[s]
        elif marked[s]:
            p_s = pos_out * A[s]
            if lam_c:
                p_s.add_(_excluded(A[s]), alpha=lam_c)
        else:
            p_s = pos_out
        if which == "W":
            neg[:, a:b] = n_s @ other
            pos[:, a:b] = other.sum(0) if p_s is None else p_s @ other
        else:
            neg[:, a:b] = n_s.t() @ other
            pos[:, a:b] = other.sum(0) if p_s is None else p_s.t() @ other
    return neg, pos


#: The marked-bins path (:class:`_Marked`) is taken when the marks cover at most this share of the plane.
SPARSE_SHARE = 0.3
_CHUNK = 1 << 18  # bins per gather of the marked-bins path (bounds its scratch memory to _CHUNK x rank)


class _Marked:
    r"""The bins ``U`` where some source's weight differs from 1 (the marks' union), for a faster fit.

    Off ``U`` every weight is 1, so the model is the plain product :math:`W H^T` there, and a source's term
    :math:`(A_s \odot n) H_s` is :math:`n_0 H_s` plus a sum over ``U`` alone, :math:`n_0` being ``n`` with the
    bins of ``U`` set to zero. One product with all components and gathers over ``U`` replace a product and a
    weighted copy of the whole plane per source; every term stays a sum of non-negative parts (no
    cancellation), so the results equal the dense path's up to rounding.
    """

    def __init__(self, A: Tensor, spans, lam_c: float):
        S, F, T = A.shape
        self.f, self.t = (A != 1).any(0).nonzero(as_tuple=True)
        self.flat = self.f * T + self.t
        self.a = A[:, self.f, self.t]                          # (S, |U|) the weights on U
        self.e = (self.a == 0).to(A.dtype)                     # where the penalty acts
        self.col = torch.cat([torch.full((b - a,), s, dtype=torch.long) for s, (a, b) in enumerate(spans)])
        self.col = self.col.to(A.device)
        P = self.a + lam_c * self.e                            # beta = 1: the fixed positive weights on U
        self.pos_fixed = None if bool((P == 1).all()) else P
        self.keep = None                                       # 1 off U (beta = 1 with pos_fixed), on demand
        self.shape = (F, T)

    def chunks(self):
        for i in range(0, len(self.flat), _CHUNK):
            yield slice(i, i + _CHUNK)

    def source_products(self, W: Tensor, H: Tensor, c: slice) -> Tensor:
        """(S, chunk) each source's model :math:`W_s H_s^T` on the chunk ``c`` of ``U``."""
        prods = W[self.f[c]] * H[self.t[c]]                   # (chunk, R)
        out = torch.zeros((self.a.shape[0], prods.shape[0]), dtype=prods.dtype, device=prods.device)
        return out.index_add_(0, self.col, prods.t())

    def reconstruct(self, W: Tensor, H: Tensor) -> Tensor:
        Y = W @ H.t()
        flat = Y.view(-1)
        for c in self.chunks():
            flat[self.flat[c]] = (self.a[:, c] * self.source_products(W, H, c)).sum(0)
        return Y

    def penalty(self, W: Tensor, H: Tensor) -> float:
        r""":math:`\sum_s \langle 1[A_s = 0], W_s H_s^T \rangle`."""
        return float(sum((self.e[:, c] * self.source_products(W, H, c)).sum() for c in self.chunks()))

    def pull_back(self, which: str, M: Tensor, values: Tensor, W: Tensor, H: Tensor) -> Tensor:
        """``(G_s * M) @ H_s`` for every source at once (``M^T W_s`` for H), ``G_s`` being 1 off ``U`` and
        ``values[s] / M`` on it: ``M``, whose bins of ``U`` must be zero, times all components, plus the
        sum over ``U`` of ``values``."""
        other = H if which == "W" else W
        out = M @ other if which == "W" else M.t() @ other
        rows, cols = (self.f, self.t) if which == "W" else (self.t, self.f)
        for c in self.chunks():
            out.index_add_(0, rows[c], other[cols[c]] * values[:, c].t()[:, self.col])
        return out


def _terms_marked(which: str, V: Tensor, W: Tensor, H: Tensor, mk: _Marked, beta: float,
                  lam_c: float) -> tuple[Tensor, Tensor]:
    """:func:`_terms` by the marked-bins path (:class:`_Marked`)."""
    Y = mk.reconstruct(W, H)
    neg_out, pos_out = _div.mu_terms(V, Y, beta, out=Y) if beta in (1, 2) else _div.mu_terms(V, Y, beta)
    if neg_out.data_ptr() == V.data_ptr():
        neg_out = neg_out.clone()  # beta = 2: neg is V itself, whose bins of U are about to be zeroed
    neg_out = neg_out.contiguous()
    flat = neg_out.view(-1)
    n_u = flat[mk.flat]
    flat[mk.flat] = 0
    neg = mk.pull_back(which, neg_out, mk.a * n_u, W, H)
    X = W if which == "W" else H
    if pos_out is None:  # beta = 1: fixed positive weights
        if mk.pos_fixed is None:
            other = H if which == "W" else W
            return neg, other.sum(0).expand_as(X).clone()
        if mk.keep is None:
            mk.keep = torch.ones(mk.shape, dtype=V.dtype, device=V.device)
            mk.keep.view(-1)[mk.flat] = 0
        return neg, mk.pull_back(which, mk.keep, mk.pos_fixed, W, H)
    pos_out = pos_out.contiguous()
    pflat = pos_out.view(-1)
    p_u = pflat[mk.flat]
    pflat[mk.flat] = 0
    return neg, mk.pull_back(which, pos_out, mk.a * p_u + lam_c * mk.e, W, H)


def _fit(V: Tensor, W: Tensor, H: Tensor, A: Tensor, groups, *, beta: float, penalty: float, n_iter: int,
         tol: float, callback: Optional[Callback]) -> int:
    """Multiplicative updates of ``W`` and ``H`` in place (V (F, T), W (F, R), H (T, R)); returns iterations.

    The objective never increases: each step is the majorisation-minimisation
    update of :func:`nmfcore.divergence.multiplicative_step` for a model linear
    in the updated factor, with the linear penalty in the positive part.
    """
    spans = _spans(groups)
    marked = [bool((A[s] < 1).any()) for s in range(len(spans))]
    lam_c = penalty * _penalty_scale(V, beta)
    share = float((A != 1).any(0).to(torch.float32).mean()) if any(marked) else 0.0
    mk = _Marked(A, spans, lam_c) if share <= SPARSE_SHARE else None
    fixed = _pos_weights(A, marked, lam_c) if beta == 1 and mk is None else None

    def terms(which):
        if mk is not None:
            return _terms_marked(which, V, W, H, mk, beta, lam_c)
        return _terms(which, V, W, H, A, spans, marked, beta, lam_c, fixed)

    def step():
        for which, X in (("W", W), ("H", H)):
            neg, pos = terms(which)
            _div.multiplicative_step(X, neg, pos, beta)

    def loss():
        if mk is not None:
            value = float(_div.beta_divergence(V, mk.reconstruct(W, H), beta))
            value += lam_c * mk.penalty(W, H) if lam_c else 0.0
        else:
            Y = _reconstruct(W, H, A, spans, marked)
            value = float(_div.beta_divergence(V, Y, beta)) + _penalty_value(W, H, A, spans, marked, lam_c)
        return value

    return run_iterations(step, loss, max_iter=n_iter, tol=tol, callback=callback)


# ----------------------------------------------------------------- the result
@dataclass(eq=False)
class GuidedSeparation(Separation):
    """The result of :func:`separate_guided`: a :class:`~nmfcore.audio.Separation` whose groups are known.

    :meth:`sources` needs no grouping (the block of each source is used), and
    the masks include the marks' weights: component ``r`` of source ``s`` has
    the model spectrogram :math:`A_s \\odot (w_r h_r^T)`, so the sources
    still sum to the mixture.

    Attributes
    ----------
    marks : list of Mark
        The checked marks (``f1`` filled in).
    n_sources : int
    groups : list of list of int
        The components of each source.
    weights : torch.Tensor [shape=(n_sources, freq, frames)]
        The weights :math:`A_s` of :func:`mark_weights` (on the fit's device).
    penalty : float
        The penalty strength :math:`\\lambda` used.
    unmarked : list of int
        Sources with no mark of their own ("only ``s``" or "``s`` absent"):
        no component was forced for them.
    objective : float
        The final objective (divergence plus penalty) in the units of the data.
    """

    marks: list = field(default_factory=list)
    n_sources: int = 0
    groups: list = field(default_factory=list)
    weights: Optional[Tensor] = field(repr=False, default=None)
    penalty: float = DEFAULT_PENALTY
    unmarked: list = field(default_factory=list)
    objective: float = float("nan")

    def _source_of(self, r: int) -> int:
        for s, g in enumerate(self.groups):
            if r in g:
                return s
        raise ParameterError(f"component {r} is in no source block")

    def _component_tensor(self, r: int) -> Tensor:
        return super()._component_tensor(r) * self.weights[self._source_of(r)]

    def _component_frames(self, r: int, a: int, b: int) -> Tensor:
        return super()._component_frames(r, a, b) * self.weights[self._source_of(r), :, a:b]

    @property
    def reconstruction(self) -> np.ndarray:
        if "reconstruction" not in self._cache:
            W, H = self.factors
            spans = _spans(self.groups)
            marked = [bool((self.weights[s] < 1).any()) for s in range(self.n_sources)]
            self._cache["reconstruction"] = _reconstruct(W, H, self.weights, spans, marked).cpu().numpy()
        return self._cache["reconstruction"]

    def sources(self, groups=None) -> Tensor:
        """Waveforms (n_sources, channels, samples), one per source; ``groups`` defaults to :attr:`groups`."""
        return super().sources(self.groups if groups is None else groups)

    def source_blocks(self, groups=None, *, components: bool = False):
        """:meth:`Separation.source_blocks` with the sources' own groups by default."""
        return super().source_blocks(self.groups if groups is None else groups, components=components)

    def residual(self, groups=None) -> Tensor:
        return super().residual(self.groups if groups is None else groups)

    def __getstate__(self):
        state = super().__getstate__()
        state["weights"] = self.weights.cpu()
        return state


# ------------------------------------------------------------- the functions
def _check_penalty(penalty) -> float:
    if isinstance(penalty, bool) or not isinstance(penalty, numbers.Real) or not 0 <= penalty < float("inf"):
        raise ParameterError(f"penalty={penalty!r} must be a finite number >= 0")
    return float(penalty)


def _check_settings(settings) -> SeparationSettings:
    settings = SeparationSettings() if settings is None else settings
    if not isinstance(settings, SeparationSettings):
        raise ParameterError(f"settings must be a SeparationSettings, got {type(settings).__name__}")
    if settings.model != "NMF":
        raise ParameterError(f"guided separation works with model='NMF', not model={settings.model!r}")
    if settings.sparsity_H is not None or settings.alpha > 0 or settings.continuity > 0:
        raise ParameterError("guided separation takes no sparsity_H, alpha or continuity (got "
                             f"sparsity_H={settings.sparsity_H!r}, alpha={settings.alpha!r}, "
                             f"continuity={settings.continuity!r})")
    if settings.minibatch:
        raise ParameterError(f"guided separation fits the whole spectrogram: solver={settings.solver!r} must be "
                             "'full'")
    return settings


def _n_sources(marks, n_sources) -> int:
    if n_sources is None:
        parsed = parse_marks(marks)
        if not parsed:
            raise ParameterError("n_sources is None and there are no marks: give n_sources")
        return 1 + max(m.source for m in parsed)
    if isinstance(n_sources, bool) or not isinstance(n_sources, numbers.Integral) or n_sources < 1:
        raise ParameterError(f"n_sources={n_sources!r} must be a positive integer")
    return int(n_sources)


def _run(V: Tensor, W: Tensor, H: Tensor, settings, sr, marks, n_sources, groups, penalty, n_iter, callback,
         device) -> tuple:
    """Weights, scaled fit, rescaling: returns (A, H, n_iter, losses, objective)."""
    A = mark_weights(marks, n_sources, sr=sr, n_frames=V.shape[1], n_fft=settings.n_fft,
                     hop_length=settings.hop_length).to(device)
    losses: list = []
    peak = float(V.max())
    if peak == 0:
        return A, H.zero_(), 0, [(0, 0.0)], 0.0
    scale = 2.0 ** math.floor(math.log2(peak))  # exact: fit V / scale, carry the scale in H
    Vs = V / scale
    H /= scale
    record = _recorder(losses, callback)
    unit = scale ** settings.beta
    with warnings.catch_warnings():  # as in separate(): stopping at n_iter is the caller's choice
        warnings.simplefilter("ignore", ConvergenceWarning)
        n = _fit(Vs, W, H, A, groups, beta=settings.beta, penalty=penalty, n_iter=n_iter, tol=settings.tol,
                 callback=lambda i, loss: record(i, loss * unit))
    objective = guided_objective(Vs, W, H, A, groups, settings.beta, penalty) * unit
    H *= scale
    return A, H, int(n), losses, objective


def _result(settings, sr, y, V, W, H, A, n_iter, losses, objective, timings, keep_components, t_start, marks,
            n_sources, groups, penalty) -> GuidedSeparation:
    marked = {m.source for m in marks}
    sep = GuidedSeparation(settings=settings, sr=sr, mixture=y, W=W.cpu().numpy(), H=H.t().cpu().numpy(),
                           spectrogram=V.cpu().numpy(), losses=losses, n_iter=n_iter, timings=timings,
                           factors=(W, H), marks=marks, n_sources=n_sources, groups=groups, weights=A,
                           penalty=penalty, unmarked=[s for s in range(n_sources) if s not in marked],
                           objective=objective)
    if keep_components:
        sep.components  # noqa: B018 (computes and caches the waveforms)
    timings["total"] = perf_counter() - t_start
    return sep


def separate_guided(y, sr: int, marks, settings: Optional[SeparationSettings] = None,
                    n_sources: Optional[int] = None, *, penalty: float = DEFAULT_PENALTY,
                    callback: Optional[Callback] = None, keep_components: bool = True) -> GuidedSeparation:
    r"""Separate a recording into sources that follow the user's marks.

    Fits the weighted model of the module's description (a block of
    components per source; the marks' weights :math:`A_s` decide which
    block may explain which bins) by multiplicative updates from a seeded
    random start, then masks the mixture's STFT with
    :math:`A_s \odot (W_s H_s^T)` per component.

    Parameters
    ----------
    y : torch.Tensor or numpy.ndarray [shape=(channels, samples) or (samples,)]
        The mixture.
    sr : int
        Its sample rate.
    marks : list of Mark, tuple or dict
        The annotations, in seconds and Hz of the input (see :class:`Mark`
        and :func:`parse_marks`); may be empty.
    settings : SeparationSettings, optional
        ``model`` must be 'NMF'; ``rank`` is the total number of components,
        shared among the sources (:func:`source_blocks`); ``beta``,
        ``n_iter``, ``tol``, ``seed``, the STFT and ``mask_power`` apply as
        in :func:`~nmfcore.audio.separate`.
    n_sources : int, optional
        Number of sources (default: one more than the largest marked index).
        Sources without marks get no forced components.
    penalty : float, default 1.0, keyword-only
        :math:`\lambda`: how much a source's energy costs where a mark of
        weight 1 excludes it (1: Bryan and Mysore's posterior regularisation
        for KL; 0: the weighted model alone).
    callback, keep_components
        As for :func:`~nmfcore.audio.separate`.

    Returns
    -------
    GuidedSeparation
        ``sources()`` gives one waveform per source; ``unmarked`` lists the
        sources with no marks.

    Raises
    ------
    ParameterError
        A bad mark (:func:`check_marks`), more sources than components, a
        model other than NMF.
    AudioError
        Bad audio (as for :func:`~nmfcore.audio.separate`).

    Shape
    -----
    - y: :math:`(C, N)` or :math:`(N,)`; sources(): :math:`(S, C, N)`
    - factors: W :math:`(F, R)`, H :math:`(T, R)`; weights :math:`(S, F, T)`

    Examples
    --------
    A low tone during the first second, a high one during the second; one
    mark each is enough:

    >>> sr = 8000
    >>> t = torch.arange(2 * sr) / sr
    >>> low, high = torch.sin(2 * torch.pi * 300 * t) * (t < 1), torch.sin(2 * torch.pi * 2000 * t) * (t > 0.7)
    >>> s = SeparationSettings(rank=2, n_fft=512, hop_length=128)
    >>> sep = separate_guided(low + high, sr, [(0, 0.1, 0.6), (1, 1.2, 1.9)], s)
    >>> est = sep.sources()
    >>> est.shape, sep.groups, sep.unmarked
    (torch.Size([2, 1, 16000]), [[0], [1]], [])
    >>> bool(torch.corrcoef(torch.stack([est[0, 0], low]))[0, 1] > 0.99)
    True
    """
    t_start = perf_counter()
    settings = _check_settings(settings)
    penalty = _check_penalty(penalty)
    n_sources = _n_sources(marks, n_sources)
    groups = source_blocks(settings.rank, n_sources)
    timings: dict = {}
    y, sr = _prepare(y, sr, settings, timings)  # resampled if settings.sr asks: marks are checked against it
    marks = check_marks(marks, n_sources=n_sources, duration=y.shape[-1] / sr, sr=sr)
    device = check_device(settings.device)
    Vm, _, _ = _model_data(y, settings, device, timings)
    V = Vm.t()  # (freq, frames) view
    t = perf_counter()
    gen = torch.Generator().manual_seed(settings.seed)
    W, Ht = random_like_data(V.cpu(), (V.shape[0], settings.rank), (V.shape[1], settings.rank), settings.rank, gen)
    W, H = W.to(device), Ht.to(device)
    A, H, n_iter, losses, objective = _run(V, W, H, settings, sr, marks, n_sources, groups, penalty,
                                           settings.n_iter, callback, device)
    timings["fit"] = perf_counter() - t
    return _result(settings, sr, y, V, W, H, A, n_iter, losses, objective, timings, keep_components, t_start,
                   marks, n_sources, groups, penalty)


def refine(previous: GuidedSeparation, marks, *, n_iter: Optional[int] = None, penalty: Optional[float] = None,
           callback: Optional[Callback] = None, keep_components: bool = True) -> GuidedSeparation:
    """Fit again with new marks, starting from a previous result's factors (the interactive loop).

    The mixture, its spectrogram, the settings and the sources are those of
    ``previous``; only the marks change (give the whole list: old and new).
    With the same marks the fit continues where it stopped, so the objective
    is no higher than ``previous.objective``.

    Parameters
    ----------
    previous : GuidedSeparation
    marks : list of Mark, tuple or dict
    n_iter : int, optional, keyword-only
        Iterations (default ``min(settings.n_iter, REFINE_ITER)``).
    penalty : float, optional, keyword-only
        Default: the previous one.
    callback, keep_components
        As for :func:`separate_guided`.

    Examples
    --------
    >>> sr = 8000
    >>> t = torch.arange(2 * sr) / sr
    >>> y = torch.sin(2 * torch.pi * 300 * t) * (t < 1) + torch.sin(2 * torch.pi * 2000 * t) * (t > 0.7)
    >>> first = separate_guided(y, sr, [(0, 0.1, 0.6)], SeparationSettings(rank=2, n_fft=512, hop_length=128),
    ...                         n_sources=2)
    >>> first.unmarked
    [1]
    >>> again = refine(first, first.marks + [Mark(1, 1.2, 1.9)])
    >>> again.unmarked, again.sources().shape
    ([], torch.Size([2, 1, 16000]))
    """
    if not isinstance(previous, GuidedSeparation):
        raise ParameterError(f"previous must be a GuidedSeparation (from separate_guided), got "
                             f"{type(previous).__name__}")
    t_start = perf_counter()
    settings = previous.settings
    penalty = previous.penalty if penalty is None else _check_penalty(penalty)
    if n_iter is None:
        n_iter = min(settings.n_iter, REFINE_ITER)
    elif isinstance(n_iter, bool) or not isinstance(n_iter, numbers.Integral) or n_iter < 1:
        raise ParameterError(f"n_iter={n_iter!r} must be a positive integer")
    sr, y = previous.sr, previous.mixture
    marks = check_marks(marks, n_sources=previous.n_sources, duration=y.shape[-1] / sr, sr=sr)
    W0, H0 = previous.factors
    device = W0.device
    V = torch.as_tensor(previous.spectrogram, device=device)
    W, H = W0.clone(), H0.clone()
    timings: dict = {}
    t = perf_counter()
    A, H, n, losses, objective = _run(V, W, H, settings, sr, marks, previous.n_sources,
                                      previous.groups, penalty, int(n_iter), callback, device)
    timings["fit"] = perf_counter() - t
    return _result(settings, sr, y, V, W, H, A, n, losses, objective, timings, keep_components, t_start, marks,
                   previous.n_sources, previous.groups, penalty)


# ------------------------------------------------------------ marks files
def load_marks(path) -> list[Mark]:
    """Marks from a JSON file (the format of ``nmfcore separate --marks``).

    The file holds a list of marks, or an object ``{"marks": [...]}``; each
    mark is an object with the keys of :class:`Mark` (times in seconds,
    frequencies in Hz, source indices from 0)::

        {"marks": [
          {"source": 0, "t0": 0.5, "t1": 2.0},
          {"source": 1, "t0": 3.0, "t1": 3.5, "f0": 200, "f1": 800, "weight": 0.8},
          {"source": 0, "t0": 4.0, "t1": 6.0, "absent": true},
          {"source": 1, "polygon": [[6.0, 300], [7.5, 400], [7.0, 2000]], "weight": 0.9}
        ]}

    ``f0`` defaults to 0, ``f1`` to ``null`` (half the sample rate: the
    whole band), ``weight`` to 1 (certain), ``absent`` to false ("only this
    source here"). A ``polygon`` (vertices ``[seconds, Hz]``, at least
    three) marks the region it encloses instead of a box (see
    :func:`mark_weights`); ``t0 .. f1`` are then left out (or must be its
    bounding box). The values are checked against each recording when it is
    separated (:func:`check_marks`).

    Raises
    ------
    ParameterError
        The file cannot be read, is not JSON, or a mark is malformed; the
        message names the file and the mark.

    Examples
    --------
    >>> import json, tempfile, os
    >>> with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
    ...     json.dump({"marks": [{"source": 1, "t0": 0, "t1": 1.5}]}, fh)
    >>> load_marks(fh.name)
    [Mark(source=1, t0=0.0, t1=1.5, f0=0.0, f1=None, weight=1.0, absent=False)]
    >>> os.remove(fh.name)
    """
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except OSError as exc:
        raise ParameterError(f"marks file '{path}' cannot be read: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ParameterError(f"marks file '{path}' is not valid JSON: {exc}") from None
    if isinstance(data, Mapping):
        unknown = sorted(set(data) - {"marks"})
        if "marks" not in data or unknown:
            raise ParameterError(f"marks file '{path}' must hold a list of marks or {{\"marks\": [...]}}, "
                                 f"got the keys {sorted(data)}")
        data = data["marks"]
    if not isinstance(data, list):
        raise ParameterError(f"marks file '{path}' must hold a list of marks, got {type(data).__name__}")
    try:
        return parse_marks(data)
    except ParameterError as exc:
        raise ParameterError(f"marks file '{path}': {exc}") from None


def separate_marked(y, sr: int, marks_file, settings: SeparationSettings, n_sources: int, *, groups=None,
                    callback: Optional[Callback] = None) -> GuidedSeparation:
    """:func:`separate_guided` with the marks of a JSON file (:func:`load_marks`), for the command line.

    The components are not rendered yet (``keep_components=False``); the
    sources are the result's :attr:`~GuidedSeparation.groups`, so explicit
    ``groups`` are refused.
    """
    if groups is not None:
        raise ParameterError("--marks and --groups both say which components form a source: give one of them")
    marks = load_marks(marks_file)
    try:
        return separate_guided(y, sr, marks, settings, n_sources, callback=callback, keep_components=False)
    except ParameterError as exc:
        raise ParameterError(f"marks file '{marks_file}': {exc}") from None
