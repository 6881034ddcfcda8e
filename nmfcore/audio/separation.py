r"""From a recording to one waveform per component and per source.

The pipeline of :func:`separate`:

1. optional resampling of the mixture ``y`` (channels, samples) to ``settings.sr``;
2. the spectrogram :math:`S = |\mathrm{STFT}(\bar y)|^p` of the mono mix
   :math:`\bar y` (mean of the channels);
3. factorisation of ``S`` with the chosen model (:data:`~nmfcore.audio.MODELS`),
   reporting ``(iteration, loss)`` to the caller's callback;
4. per-component model spectrograms :math:`Y_r` (for convolutive models each
   component's own reconstruction) and alpha-Wiener soft masks
   :math:`M_r = Y_r^\alpha / \sum_k Y_k^\alpha`, which sum to one;
5. every channel's STFT times each mask, inverted with the mixture's phase:
   the component waveforms, which sum to the mixture up to float error
   (the ISTFT is linear and inverts the STFT).

Sources are sums of components over groups (:meth:`Separation.sources`).
:func:`learn_dictionary` and :func:`separate_supervised` give supervised
and semi-supervised separation with templates learnt from examples [3]_.

References
----------
.. [1] P. Smaragdis and J. C. Brown, "Non-negative matrix factorization for
   polyphonic music transcription", WASPAA 2003.
.. [2] C. Févotte, N. Bertin and J.-L. Durrieu, "Nonnegative matrix
   factorization with the Itakura-Saito divergence: with application to
   music analysis", Neural Computation 21(3), 2009.
.. [3] P. Smaragdis, B. Raj and M. Shashanka, "Supervised and
   semi-supervised separation of sounds from single-channel mixtures",
   ICA 2007.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import warnings
from dataclasses import dataclass, field
from time import perf_counter
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from .._validation import check_beta, check_finite_float, check_fraction, check_int, check_rank, is_int
from ..exceptions import ConvergenceWarning, ParameterError
from ..init import INIT_METHODS, nndsvd
from .io import AudioError, as_waveform, check_sample_rate, resample
from .models import MATRIX, MODELS, ModelSpec
from .spectral import (MaskBank, OverlapAdd, check_stft_params, frame_blocks, get_window, spectrogram,
                       stft_frames)

__all__ = ["SeparationSettings", "Separation", "separate", "learn_dictionary", "separate_supervised",
           "check_groups", "check_device"]

Callback = Callable[[int, float], Optional[bool]]


@dataclass(frozen=True)
class SeparationSettings:
    """Everything that decides a separation; the defaults suit music at 22-44 kHz.

    Values are checked when the settings are made, so a bad value fails
    early with a :class:`~nmfcore.exceptions.ParameterError` naming it.

    Parameters
    ----------
    model : str, default 'NMF'
        A key of :data:`~nmfcore.audio.MODELS` ('NMF', 'NMFD', 'NMF2D', ...).
    rank : int, default 8
        Number of components.
    beta : float, default 1.0
        Beta-divergence: 2 Euclidean, 1 Kullback-Leibler, 0 Itakura-Saito
        (zeros of the spectrogram are then floored at 1e-7 of its peak).
    n_iter : int, default 200
        Maximum number of iterations.
    tol : float, default 1e-4
        Relative-decrease stopping rule of :meth:`nmfcore.nmf.BaseComponent.fit`
        (0 always runs ``n_iter`` iterations).
    kernel_size : int or tuple, default 1
        Convolutive models only: frames ``T`` of an NMFD pattern, or
        ``(frequency bins, frames)`` of an NMF2D patch (an int ``k`` means
        ``(k, k)``). Ignored by NMF.
    init : {'nndsvda', 'nndsvd', 'nndsvdar', 'random', None}, default 'nndsvda'
        Initialisation; a method a model lacks falls back to 'random'. For
        NMF of long recordings (more than ``NNDSVD_MAX_ENTRIES`` spectrogram
        entries) NNDSVD is computed from means of consecutive frames, which
        keeps its memory small.
    seed : int, default 0
        Seed of the random initial values (results are reproducible).
    sparsity_H : float in (0, 1), optional
        Target Hoyer sparseness of every activation (``sparse_fit``; always
        runs ``n_iter`` iterations).
    alpha : float, default 0.0
        Strength of the penalty ``alpha * l1_ratio * (|W|_1 + |H|_1) +
        alpha * (1 - l1_ratio) / 2 * (|W|_2^2 + |H|_2^2)`` added to the
        divergence (the ``alpha`` of :meth:`nmfcore.nmf.BaseComponent.fit`,
        in the units of the spectrogram, so its effect depends on the
        recording's level). Beta-divergence models only; not with
        ``sparsity_H``.
    l1_ratio : float in [0, 1], default 1.0
        Mix of the L1 (1, sparse activations) and L2 (0) penalties.
    continuity : float, default 0.0
        Temporal continuity of the activations (Virtanen 2007; NMF and NMFD
        only): the ``continuity`` of :meth:`nmfcore.nmf.BaseComponent.fit`,
        given relative to the data, the weight being ``continuity *
        sum(V**beta) / (rank * frames)``, so that it does not depend on the
        recording's level or length. It penalises frame-to-frame jumps of
        each activation, so that a component follows a sound that lasts
        (on the separation benchmark it raised the SDR of the automatic
        grouping, at no extra time); with it the fit's update of H is
        Virtanen's heuristic, not proven to decrease the objective at every
        step.
    n_fft, hop_length : int, default 2048, 512
        STFT size and hop in samples.
    window : {'hann', 'hamming', 'blackman', 'bartlett', 'rect'}, default 'hann'
    power : float, default 1.0
        Exponent of the factorised spectrogram: 1 magnitude, 2 power.
    mask_power : float, default 1.0
        Exponent alpha of the soft masks. 1 shares each bin in proportion to
        the components' modelled magnitudes, which is what a magnitude model
        fitted with KL describes (Liutkus and Badeau, "Generalized Wiener
        filtering with fractional power spectrograms", ICASSP 2015); it beat
        the Wiener-like 2 in almost every setting of the separation
        benchmark. Larger values approach binary masks.
    sr : int, optional
        Resample the mixture to this rate first; ``None`` keeps its rate.
    device : str, default 'cpu'
        Torch device of the computation ('cuda', 'cuda:1', 'mps').

    Examples
    --------
    >>> s = SeparationSettings(model="NMFD", rank=12, kernel_size=6)
    >>> s.to_dict()["kernel_size"], s.rank
    (6, 12)
    >>> SeparationSettings(rank=0)
    Traceback (most recent call last):
    ...
    nmfcore.exceptions.ParameterError: rank=0 must be a positive integer
    """

    model: str = "NMF"
    rank: int = 8
    beta: float = 1.0
    n_iter: int = 200
    tol: float = 1e-4
    kernel_size: int | tuple = 1
    init: Optional[str] = "nndsvda"
    seed: int = 0
    sparsity_H: Optional[float] = None
    alpha: float = 0.0
    l1_ratio: float = 1.0
    continuity: float = 0.0
    n_fft: int = 2048
    hop_length: int = 512
    window: str = "hann"
    power: float = 1.0
    mask_power: float = 1.0
    sr: Optional[int] = None
    device: str = "cpu"

    def __post_init__(self):
        if self.model not in MODELS:
            raise ParameterError(f"model={self.model!r} must be one of {sorted(MODELS)}")
        check_rank(self.rank)
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen)
        set_("beta", check_beta(self.beta))
        set_("n_iter", check_int(self.n_iter, "n_iter", low=1))
        set_("tol", check_finite_float(self.tol, "tol", allow_zero=True))
        set_("kernel_size", self._check_kernel(self.kernel_size))
        if self.init is not None and self.init not in INIT_METHODS:
            raise ParameterError(f"init={self.init!r} must be one of {INIT_METHODS} or None")
        set_("seed", check_int(self.seed, "seed", low=0))
        if self.sparsity_H is not None:
            s = self.sparsity_H
            set_("sparsity_H", check_fraction(s, "sparsity_H", low_inclusive=False, high_inclusive=False))
        set_("alpha", check_finite_float(self.alpha, "alpha", allow_zero=True))
        set_("l1_ratio", check_fraction(self.l1_ratio, "l1_ratio", low_inclusive=True, high_inclusive=True))
        if self.alpha > 0 and self.sparsity_H is not None:
            raise ParameterError(f"alpha={self.alpha!r} and sparsity_H={self.sparsity_H!r} are two ways to make "
                                 "activations sparse: give one of them")
        if self.alpha > 0 and not self.spec.beta_divergence:
            raise ParameterError(f"alpha={self.alpha!r} needs a beta-divergence model, not model={self.model!r}")
        set_("continuity", check_finite_float(self.continuity, "continuity", allow_zero=True))
        if self.continuity > 0 and (self.model not in ("NMF", "NMFD") or self.sparsity_H is not None):
            raise ParameterError(f"continuity={self.continuity!r} needs model 'NMF' or 'NMFD' without sparsity_H "
                                 f"(got model={self.model!r}, sparsity_H={self.sparsity_H!r})")
        check_stft_params(self.n_fft, self.hop_length, self.window)
        set_("power", check_finite_float(self.power, "power"))
        set_("mask_power", check_finite_float(self.mask_power, "mask_power"))
        if self.sr is not None:
            set_("sr", check_sample_rate(self.sr))
        try:
            torch.device(self.device)
        except (RuntimeError, TypeError):
            raise ParameterError(f"device={self.device!r} is not a torch device name such as 'cpu' or 'cuda'") from None

    @staticmethod
    def _check_kernel(k):
        if isinstance(k, (list, tuple)):
            k = tuple(k)
            if not k or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1 for v in k):
                raise ParameterError(f"kernel_size={k!r} must be a positive integer or a tuple of them")
            return tuple(int(v) for v in k)
        return check_int(k, "kernel_size", low=1)

    @property
    def spec(self) -> ModelSpec:
        """The :class:`~nmfcore.audio.ModelSpec` of :attr:`model`."""
        return MODELS[self.model]

    def kernel(self) -> tuple:
        """``kernel_size`` as the model needs it: () for NMF, (T,) for NMFD, (kf, kt) for NMF2D."""
        return self.spec.layout.kernel(self.kernel_size)

    def to_dict(self) -> dict:
        """The settings as a JSON-able dict (tuples become lists).

        Examples
        --------
        >>> SeparationSettings.from_dict(SeparationSettings(rank=4).to_dict()) == SeparationSettings(rank=4)
        True
        """
        d = dataclasses.asdict(self)
        if isinstance(d["kernel_size"], tuple):
            d["kernel_size"] = list(d["kernel_size"])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "SeparationSettings":
        """Settings from :meth:`to_dict` output; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ParameterError(f"unknown separation settings {unknown}; known: {sorted(names)}")
        return cls(**d)

    def replace(self, **changes) -> "SeparationSettings":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


def check_groups(groups, n_components: int) -> list[list[int]]:
    """Validate a grouping of components into sources.

    Each group is a list of component indices in ``[0, n_components)``; a
    component may belong to at most one group, and groups may be empty
    (a silent source). Components in no group are the residual.

    Examples
    --------
    >>> check_groups([[0, 2], [1]], 4)
    [[0, 2], [1]]
    >>> check_groups([[0], [0]], 2)
    Traceback (most recent call last):
    ...
    nmfcore.exceptions.ParameterError: groups=[[0], [0]]: component 0 is in more than one group
    """
    if isinstance(groups, (str, bytes)) or not isinstance(groups, Sequence):
        raise ParameterError(f"groups={groups!r} must be a list of lists of component indices")
    out, seen = [], set()
    for g in groups:
        if isinstance(g, (str, bytes)) or not isinstance(g, (Sequence, np.ndarray)):
            raise ParameterError(f"groups={groups!r}: each group must be a list of component indices, got {g!r}")
        members = []
        for r in g:
            if not is_int(r) or not 0 <= r < n_components:
                raise ParameterError(f"groups={groups!r}: component {r!r} is not an index in "
                                     f"[0, {n_components})")
            if int(r) in seen:
                raise ParameterError(f"groups={groups!r}: component {int(r)} is in more than one group")
            seen.add(int(r))
            members.append(int(r))
        out.append(members)
    return out


@dataclass(eq=False)
class Separation:
    """The result of :func:`separate`: factors, spectrograms and waveforms.

    Waveforms are CPU float32 tensors; spectrograms and factors numpy arrays.

    Attributes
    ----------
    settings : SeparationSettings
    sr : int
        Sample rate of :attr:`mixture` and every waveform.
    mixture : torch.Tensor [shape=(channels, samples)]
        The input (resampled if ``settings.sr`` asked for it).
    W : numpy.ndarray [shape=(freq, R) or (freq, R, kernel...)]
        Templates (NMF2D: ``(kf, R, kt)`` patches).
    H : numpy.ndarray [shape=(R, frames) or (R, ...)]
        Activations (NMFD: ``(R, frames - T + 1)``; NMF2D:
        ``(R, freq - kf + 1, frames - kt + 1)``).
    spectrogram : numpy.ndarray [shape=(freq, frames)]
        The spectrogram of the mono mix as factorised.
    losses : list of (int, float)
        ``(iteration, loss)`` at every check of the fit.
    n_iter : int
        Iterations run.
    timings : dict of str to float
        Seconds spent in 'resample', 'stft', 'fit', 'masks_istft' and 'total'.
    components : torch.Tensor [shape=(R, channels, samples)]
        One waveform per component; they sum to :attr:`mixture`.
    reconstruction : numpy.ndarray [shape=(freq, frames)]
        The model's spectrogram.
    component_spectrograms : numpy.ndarray [shape=(R, freq, frames)]
        Each component's own model spectrogram.
    """

    settings: SeparationSettings
    sr: int
    mixture: Tensor
    W: np.ndarray
    H: np.ndarray
    spectrogram: np.ndarray
    losses: list
    n_iter: int
    timings: dict
    factors: tuple = field(repr=False, default=None)  # (W, H) tensors in the model's layout, on its device
    _components: Optional[Tensor] = field(repr=False, default=None)
    _cache: dict = field(repr=False, default_factory=dict)

    # ----------------------------------------------------------- structure
    @property
    def rank(self) -> int:
        """Number of components R."""
        return int(self.factors[0].shape[1])

    @property
    def n_channels(self) -> int:
        return int(self.mixture.shape[0])

    @property
    def freqs(self) -> np.ndarray:
        """Centre frequency in Hz of every spectrogram row."""
        return np.fft.rfftfreq(self.settings.n_fft, 1.0 / self.sr)

    @property
    def times(self) -> np.ndarray:
        """Time in seconds of every spectrogram frame (frame centres)."""
        return np.arange(self.spectrogram.shape[1]) * self.settings.hop_length / self.sr

    def __getstate__(self):  # factors move to the CPU when pickled (e.g. by a cache)
        state = dict(self.__dict__)
        state["factors"] = tuple(f.cpu() for f in self.factors)
        state["_cache"] = {}
        return state

    def cached(self, key, compute: Callable[[], object]):
        """``compute()``, computed once per separation and kept under ``key``.

        For values derived from the factors that several functions read (the
        component spectrograms, :func:`~nmfcore.audio.grouping.component_summaries`,
        the pitches); the cache is dropped when the separation is pickled.
        """
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    # -------------------------------------------------------- spectrograms
    def _component_tensor(self, r: int) -> Tensor:
        W, H = self.factors
        return self.settings.spec.layout.component(H, W, r)

    def component_spectrogram(self, r: int) -> np.ndarray:
        """Model spectrogram (freq, frames) of component ``r``."""
        check_groups([[r]], self.rank)
        return self._component_tensor(r).cpu().numpy()

    @property
    def component_spectrograms(self) -> np.ndarray:
        return self.cached("component_spectrograms", lambda: np.stack(
            [self._component_tensor(r).cpu().numpy() for r in range(self.rank)]))

    @property
    def reconstruction(self) -> np.ndarray:
        W, H = self.factors
        return self.cached("reconstruction", lambda: self.settings.spec.layout.reconstruct(H, W).cpu().numpy())

    def masks(self) -> np.ndarray:
        """Soft masks (R, freq, frames) of all components; they sum to one in every bin."""
        bank = self._mask_bank()
        return np.stack([bank.mask(r).cpu().numpy() for r in range(self.rank)])

    def _mask_bank(self) -> MaskBank:
        return MaskBank(self._component_tensor, self.rank, self.settings.mask_power)

    # ----------------------------------------------------------- waveforms
    def render(self, groups) -> Tensor:
        """Waveforms (G, channels, samples) of groups of components.

        The mask of a group is the sum of its members' masks, so a group's
        waveform equals the sum of its components' waveforms. The STFT,
        masks and overlap-add run over blocks of frames (as in
        :meth:`render_blocks`), so besides the result only one block is in
        memory.
        """
        groups = check_groups(groups, self.rank)
        ola = self._overlap_add(len(groups), assemble=True)
        for _ in self._render(groups, ola):
            pass
        return ola.assembled()

    def render_blocks(self, groups) -> Iterator[tuple[int, Tensor]]:
        """The waveforms of :meth:`render`, block by block of STFT frames, in order.

        Only one block is in memory at a time, so long recordings can be
        rendered (e.g. written to files) without holding whole waveforms.

        Yields
        ------
        start : int
            The first sample of the chunk.
        chunk : torch.Tensor [shape=(G, channels, samples)]
            The groups' waveforms from ``start`` on, on the CPU (valid until
            the next chunk is made); the chunks follow each other and cover
            the recording.

        Examples
        --------
        >>> sr = 8000
        >>> t = torch.arange(sr) / sr
        >>> sep = separate(torch.sin(2 * torch.pi * 440 * t), sr, SeparationSettings(rank=2, n_fft=512,
        ...                hop_length=128), keep_components=False)
        >>> [(start, tuple(chunk.shape)) for start, chunk in sep.render_blocks([[0], [1]])]
        [(0, (2, 1, 8000))]
        """
        groups = check_groups(groups, self.rank)
        for start, chunk in self._render(groups, self._overlap_add(len(groups))):
            yield start, chunk.cpu()

    def _overlap_add(self, n_groups: int, **options) -> OverlapAdd:
        s = self.settings
        win = get_window(s.window, s.n_fft, device=self.factors[0].device)
        return OverlapAdd(self.mixture.shape[1], n_fft=s.n_fft, hop_length=s.hop_length, window=win,
                          shape=(n_groups, self.n_channels), **options)

    def _render(self, groups: list[list[int]], ola: OverlapAdd) -> Iterator[tuple[int, Tensor]]:
        # masks of a block of frames, every channel's STFT times them, overlap-added by ola
        if not groups:
            return
        s = self.settings
        W, H = self.factors
        win, layout = ola.window, s.spec.layout
        ch = self.n_channels
        channels = [self.mixture[c].to(win.device) for c in range(ch)] if win.device.type != "cpu" else self.mixture
        for a, b in frame_blocks(ola.n_frames):
            bank = MaskBank(lambda r: layout.component_frames(H, W, r, a, b), self.rank, s.mask_power)
            masks = [bank.group_mask(g) for g in groups] if ch > 1 else None  # reused by every channel
            out = ola.block(a, b)
            for c in range(ch):
                X = stft_frames(channels[c], a, b, n_fft=s.n_fft, hop_length=s.hop_length, window=win)
                for g, members in enumerate(groups):
                    M = masks[g] if masks is not None else bank.group_mask(members)
                    ola.add(out[g, c], X * M)
            del bank, masks, out, X
            yield ola.finish_block()

    @property
    def components(self) -> Tensor:
        if self._components is None:
            t = perf_counter()
            self._components = self.render([[r] for r in range(self.rank)])
            self.timings["masks_istft"] = perf_counter() - t
        return self._components

    def component(self, r: int) -> Tensor:
        """Waveform (channels, samples) of component ``r`` alone (without computing the others)."""
        if self._components is not None:
            check_groups([[r]], self.rank)
            return self._components[r]
        return self.render([[r]])[0]

    def sources(self, groups) -> Tensor:
        """Waveforms (S, channels, samples): the sum of the components of each group.

        Examples
        --------
        >>> sr = 8000
        >>> t = torch.arange(sr) / sr
        >>> y = (torch.sin(2 * torch.pi * 440 * t) * (t < 0.5) + torch.sin(2 * torch.pi * 1500 * t) * (t >= 0.5))
        >>> sep = separate(y, sr, SeparationSettings(rank=2, n_fft=512, hop_length=128))
        >>> sep.sources([[0], [1]]).shape
        torch.Size([2, 1, 8000])
        >>> bool((sep.sources([[0, 1]])[0] - sep.mixture).abs().max() < 1e-4)
        True
        """
        groups = check_groups(groups, self.rank)
        if self._components is not None:
            return _group_sums(self._components, groups)
        return self.render(groups)

    def source_blocks(self, groups, *, components: bool = False) -> Iterator[tuple[int, Tensor, Optional[Tensor]]]:
        """:meth:`sources` block by block (see :meth:`render_blocks`), optionally with the components.

        Parameters
        ----------
        groups : list of list of int
        components : bool, default False, keyword-only
            Also yield every component's waveform; the sources are then the
            sums of their components' chunks.

        Yields
        ------
        start : int
        sources : torch.Tensor [shape=(S, channels, samples)]
            The chunk of :meth:`sources` from sample ``start`` on.
        components : torch.Tensor [shape=(R, channels, samples)] or None
            The chunk of :attr:`components` (``None`` unless asked for).

        If the components are kept already (``keep_components=True``), one
        chunk holds the whole recording.
        """
        groups = check_groups(groups, self.rank)
        if self._components is not None:
            yield 0, _group_sums(self._components, groups), self._components if components else None
        elif components:
            for start, chunk in self.render_blocks([[r] for r in range(self.rank)]):
                yield start, _group_sums(chunk, groups), chunk
        else:
            for start, chunk in self.render_blocks(groups):
                yield start, chunk, None

    def residual(self, groups) -> Tensor:
        """The mixture minus all grouped sources: the waveform of the components in no group."""
        return self.mixture - self.sources(groups).sum(0)


def _group_sums(components: Tensor, groups: list[list[int]]) -> Tensor:
    """(G, ...) sums of the components (R, ...) of each group (zeros for an empty group)."""
    if not groups:
        return components[:0]
    return torch.stack([components[g].sum(0) if g else components.new_zeros(components.shape[1:]) for g in groups])


def check_device(name: str) -> torch.device:
    """The torch device ``name``, or a ParameterError if this machine does not have it."""
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ParameterError(f"device={name!r} is not available: torch sees no CUDA device (use 'cpu')")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ParameterError(f"device={name!r} is not available on this machine (use 'cpu')")
    return device


def _prepare(y, sr, settings: SeparationSettings, timings: dict) -> tuple[Tensor, int]:
    """The checked (and resampled) mixture on the CPU, long enough for one STFT frame."""
    y = as_waveform(y.detach().cpu() if isinstance(y, Tensor) else y, "y")
    sr = check_sample_rate(sr)
    if settings.sr is not None and settings.sr != sr:
        t = perf_counter()
        y = resample(y, sr, settings.sr)
        sr = settings.sr
        timings["resample"] = perf_counter() - t
    if y.shape[-1] < settings.n_fft:
        raise AudioError(f"the audio is {y.shape[-1] / sr:.3f} s long ({y.shape[-1]} samples), shorter than one "
                         f"FFT frame (n_fft={settings.n_fft}): use a smaller n_fft or a longer recording")
    return y, sr


def _model_data(y: Tensor, settings: SeparationSettings, device, timings: dict) -> tuple[Tensor, tuple, float]:
    """The spectrogram of the mono mix in the model's layout, its kernel and its peak.

    Zeros are floored at 1e-7 of the peak for ``beta <= 0`` (infinite there).
    Only one copy of the spectrogram is kept. For NMF, V (frames, freq) is the
    transposed view of the (freq, frames) spectrogram: NMF's fit works in that
    layout (no copy, and with an odd number of bins its products are faster
    than in the contiguous one).
    """
    s = settings
    t = perf_counter()
    mono = y.mean(0) if y.shape[0] > 1 else y[0]
    S = spectrogram(mono.to(device), n_fft=s.n_fft, hop_length=s.hop_length, window=s.window, power=s.power)
    kernel = _check_kernel_fits(settings, S)
    V = s.spec.layout.to_model(S)
    del S
    peak = float(V.max())
    if s.beta <= 0 and peak > 0:
        V.clamp_min_(peak * 1e-7)
    timings["stft"] = perf_counter() - t
    return V, kernel, peak


def _check_kernel_fits(settings: SeparationSettings, S: Tensor) -> tuple:
    kernel = settings.kernel()
    if len(kernel) == 1 and kernel[0] > S.shape[1]:
        raise ParameterError(f"kernel_size={kernel[0]} frames is longer than the recording's {S.shape[1]} "
                             "STFT frames: use a smaller kernel_size")
    if len(kernel) == 2 and (kernel[0] > S.shape[0] or kernel[1] > S.shape[1]):
        raise ParameterError(f"kernel_size={kernel} does not fit in the spectrogram of {S.shape[0]} frequency bins "
                             f"x {S.shape[1]} frames")
    return kernel


def _recorder(losses: list, callback: Optional[Callback]) -> Callback:
    """A fit callback that appends ``(iteration, loss)`` to ``losses`` and forwards to ``callback``."""
    def record(i, loss):
        losses.append((int(i), float(loss)))
        return bool(callback(i, loss)) if callback is not None else False

    return record


#: Above this many spectrogram entries the NNDSVD initialisation of NMF is computed from means of
#: consecutive frames (its float64 SVD would need about 6 times the spectrogram's memory).
NNDSVD_MAX_ENTRIES = 2 ** 24


def _nndsvd_of_frame_means(model, V: Tensor, variant: str, seed: int):
    """NNDSVD of ``V`` (frames, freq) averaged over groups of ``k`` frames, activations repeated ``k`` times.

    The templates come from the spectral subspace of the averaged frames, close
    to that of all frames; the multiplicative updates refine both factors.
    """
    T = V.shape[0]
    k = math.ceil(V.numel() / NNDSVD_MAX_ENTRIES)
    full = (T // k) * k
    means = V[:full].unflatten(0, (T // k, k)).mean(1)  # a view of V in either layout: no full-size copy
    if full < T:
        means = torch.cat([means, V[full:].mean(0, keepdim=True)])
    W0, H0 = nndsvd(means, model.rank, variant, seed)
    with torch.no_grad():
        model.W.copy_(W0)
        model.H.copy_(H0.repeat_interleave(k, 0)[:T])


def _factorise(V: Tensor, kernel: tuple, peak: float, settings: SeparationSettings,
               callback: Optional[Callback]) -> tuple[Tensor, Tensor, int, list]:
    """Fit the model to ``V`` (model layout); returns (W, H, n_iter, losses)."""
    spec = settings.spec
    gen = torch.Generator().manual_seed(settings.seed)
    model = spec.build(tuple(V.shape), settings.rank, kernel, gen).to(V.device)
    if peak == 0:  # silence: nothing to factorise, every component is silent
        with torch.no_grad():
            model.W.zero_()
            model.H.zero_()
        return model.W.detach(), model.H.detach(), 0, [(0, 0.0)]
    losses: list = []
    init = settings.init
    if init is not None and init not in spec.init_methods:
        init = "random" if "random" in spec.init_methods else None
    if init is not None and init.startswith("nndsvd") and spec.layout is MATRIX and V.numel() > NNDSVD_MAX_ENTRIES:
        _nndsvd_of_frame_means(model, V, init, settings.seed)
        init = None
    penalty = _penalty(V, settings, model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        n_iter = spec.fit(model, V, beta=settings.beta, tol=settings.tol, max_iter=settings.n_iter, init=init,
                          seed=settings.seed, sparsity_H=settings.sparsity_H, callback=_recorder(losses, callback),
                          **penalty)
    W, H = spec.factors(model)
    return W, H, int(n_iter), losses


def _penalty(V: Tensor, settings: SeparationSettings, model) -> dict:
    """The penalty keywords of ``model``'s fit, only those in use (so that the fit functions of
    registered models without penalties keep working); ``continuity`` made absolute."""
    out = {"alpha": settings.alpha, "l1_ratio": settings.l1_ratio} if settings.alpha > 0 else {}
    if settings.continuity > 0:
        frames = V.shape[model.time_axis]  # V's time axis is that of H in both NMF and NMFD
        scale = float((V if settings.beta == 1 else V.pow(settings.beta)).sum(dtype=torch.float64))
        out["continuity"] = settings.continuity * scale / (settings.rank * frames)
    return out


def _finish(settings, sr, y, V, W, H, n_iter, losses, timings, keep_components, t_start) -> Separation:
    layout = settings.spec.layout
    Wn, Hn = layout.export(W, H)
    sep = Separation(settings=settings, sr=sr, mixture=y, W=Wn, H=Hn,
                     spectrogram=layout.from_model(V).cpu().numpy(), losses=losses, n_iter=n_iter,
                     timings=timings, factors=(W, H))
    if keep_components:
        sep.components  # noqa: B018 (computes and caches the waveforms)
    timings["total"] = perf_counter() - t_start
    return sep


def separate(y, sr: int, settings: Optional[SeparationSettings] = None, *, callback: Optional[Callback] = None,
             keep_components: bool = True) -> Separation:
    """Separate a recording into one waveform per component.

    Parameters
    ----------
    y : torch.Tensor or numpy.ndarray [shape=(channels, samples) or (samples,)]
        The mixture; every channel is separated with the masks of the mono mix.
    sr : int
        Its sample rate.
    settings : SeparationSettings, optional
        Model and options (defaults: ``SeparationSettings()``).
    callback : callable, optional, keyword-only
        ``callback(iteration, loss)`` at the start and every 10 iterations
        of the fit, e.g. to draw progress; returning ``True`` stops the fit.
    keep_components : bool, default True, keyword-only
        Compute all component waveforms now (as :attr:`Separation.components`);
        with ``False`` they are computed when first used, and
        :meth:`Separation.sources` renders groups directly, which needs less
        memory for long recordings.

    Returns
    -------
    Separation

    Raises
    ------
    AudioError
        Non-finite, empty or too short (less than ``n_fft`` samples) audio,
        or a bad sample rate.
    ParameterError
        A kernel larger than the spectrogram, or an unavailable device.

    Examples
    --------
    >>> sr = 8000
    >>> t = torch.arange(2 * sr) / sr
    >>> y = torch.sin(2 * torch.pi * 300 * t) * (t < 1) + 0.5 * torch.sin(2 * torch.pi * 2000 * t) * (t > 0.7)
    >>> sep = separate(y, sr, SeparationSettings(rank=2, n_fft=512, hop_length=128, seed=0))
    >>> sep.components.shape, sep.W.shape, sep.H.shape
    (torch.Size([2, 1, 16000]), (257, 2), (2, 126))
    >>> bool((sep.components.sum(0) - sep.mixture).abs().max() < 1e-4)
    True
    """
    t_start = perf_counter()
    settings = SeparationSettings() if settings is None else settings
    if not isinstance(settings, SeparationSettings):
        raise ParameterError(f"settings must be a SeparationSettings, got {type(settings).__name__}")
    timings: dict = {}
    y, sr = _prepare(y, sr, settings, timings)
    V, kernel, peak = _model_data(y, settings, check_device(settings.device), timings)
    t = perf_counter()
    W, H, n_iter, losses = _factorise(V, kernel, peak, settings, callback)
    timings["fit"] = perf_counter() - t
    return _finish(settings, sr, y, V, W, H, n_iter, losses, timings, keep_components, t_start)


# --------------------------------------------------------------- supervised
def _normalise_templates(W: Tensor) -> Tensor:
    """Every template (axis 1) scaled to unit sum; zero templates stay zero."""
    dims = [d for d in range(W.ndim) if d != 1]
    norms = W.sum(dims, keepdim=True)
    return W / torch.where(norms > 0, norms, torch.ones_like(norms))


def learn_dictionary(examples, sr: int, settings: Optional[SeparationSettings] = None, *,
                     callback: Optional[Callback] = None) -> Tensor:
    """Learn ``settings.rank`` templates of one source from example recordings of it.

    The examples are mixed to mono, concatenated and factorised with the
    model of ``settings``; the templates are returned scaled to unit sum,
    ready for :func:`separate_supervised`.

    Parameters
    ----------
    examples : waveform or list of waveforms
        Each ``(channels, samples)`` or ``(samples,)``, at rate ``sr``.
    sr : int
    settings : SeparationSettings, optional
    callback : callable, optional, keyword-only

    Returns
    -------
    torch.Tensor
        ``W`` in the model's layout on the CPU: (freq, rank) for NMF,
        (freq, rank, T) for NMFD.

    Examples
    --------
    >>> sr = 8000
    >>> t = torch.arange(sr) / sr
    >>> W = learn_dictionary(torch.sin(2 * torch.pi * 500 * t), sr, SeparationSettings(rank=1, n_fft=256,
    ...                      hop_length=64))
    >>> W.shape, int(W[:, 0].argmax()) * sr // 256   # the 500 Hz bin
    (torch.Size([129, 1]), 500)
    """
    settings = SeparationSettings() if settings is None else settings
    if isinstance(examples, (Tensor, np.ndarray)):
        examples = [examples]
    if not examples:
        raise AudioError("examples is empty: give at least one recording of the source")
    waves = [as_waveform(e.detach().cpu() if isinstance(e, Tensor) else e, f"examples[{i}]").mean(0)
             for i, e in enumerate(examples)]
    y = torch.cat(waves)[None]
    timings: dict = {}
    y, sr = _prepare(y, sr, settings, timings)
    V, kernel, peak = _model_data(y, settings, check_device(settings.device), timings)
    W, _, _, _ = _factorise(V, kernel, peak, settings, callback)
    return _normalise_templates(W).cpu()


def _fit_partly_fixed(model_cls, V: Tensor, W_fixed: Tensor, n_free: int, H_shape: tuple,
                      settings: SeparationSettings, callback) -> tuple[Tensor, Tensor, int]:
    """Semi-supervised fit: H and the free templates learnt, the columns of ``W_fixed`` frozen
    (``fit(frozen_W_columns=...)``)."""
    gen = torch.Generator().manual_seed(settings.seed)
    shape = list(W_fixed.shape)
    shape[1] = n_free
    W_free = _normalise_templates(torch.rand(shape, generator=gen) + 0.1).to(V.device, V.dtype)
    W0 = torch.cat([W_fixed.to(V.dtype), W_free], 1)
    H = (torch.rand(H_shape, generator=gen) + 0.1).to(V.device, V.dtype)
    H *= float(V.mean()) / float(model_cls.reconstruct(H, W0).mean())
    model = model_cls(W=W0, H=H)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        # the activations first, for the random free templates (fit updates W, then H)
        model.W.requires_grad_(False)
        model.fit(V, beta=settings.beta, tol=0, max_iter=1)
        model.W.requires_grad_(True)
        n_iter = model.fit(V, beta=settings.beta, tol=settings.tol, max_iter=settings.n_iter, callback=callback,
                           frozen_W_columns=range(W_fixed.shape[1]))
    return model.W.detach(), model.H.detach(), n_iter


def separate_supervised(y, sr: int, dictionaries: Sequence[Tensor], settings: Optional[SeparationSettings] = None,
                        *, n_free: int = 0, callback: Optional[Callback] = None,
                        keep_components: bool = True) -> tuple[Separation, list[list[int]]]:
    """Separate with fixed templates per source (supervised), plus optional free templates (semi-supervised).

    The dictionaries (from :func:`learn_dictionary`, one per source) are
    concatenated and frozen (``trainable_W=False``); only the activations
    are fitted to the mixture. With ``n_free > 0`` that many extra templates
    are learnt as well, to absorb sounds no dictionary covers (they end up
    in :meth:`Separation.residual`).

    Parameters
    ----------
    y, sr
        The mixture, as for :func:`separate`.
    dictionaries : list of torch.Tensor
        Templates per source in the model's layout, all with the same
        frequency size (and kernel).
    settings : SeparationSettings, optional
        Model, beta, STFT and mask options; ``rank`` is replaced by the total.
    n_free : int, default 0, keyword-only
    callback, keep_components
        As for :func:`separate`.

    Returns
    -------
    separation : Separation
    groups : list of list of int
        The components of each dictionary, in order.

    Examples
    --------
    >>> sr = 8000
    >>> t = torch.arange(sr) / sr
    >>> low, high = torch.sin(2 * torch.pi * 300 * t), torch.sin(2 * torch.pi * 2100 * t)
    >>> s = SeparationSettings(rank=1, n_fft=256, hop_length=64)
    >>> dicts = [learn_dictionary(low, sr, s), learn_dictionary(high, sr, s)]
    >>> sep, groups = separate_supervised(low + high, sr, dicts, s)
    >>> groups
    [[0], [1]]
    >>> est = sep.sources(groups)[:, 0]
    >>> bool(torch.corrcoef(torch.stack([est[0], low]))[0, 1] > 0.99)
    True
    """
    settings = SeparationSettings() if settings is None else settings
    spec = settings.spec
    if not spec.beta_divergence:
        raise ParameterError(f"supervised separation needs a beta-divergence model, not model={settings.model!r}")
    if isinstance(dictionaries, Tensor) or not isinstance(dictionaries, Sequence) or not dictionaries:
        raise ParameterError("dictionaries must be a non-empty list of template tensors, one per source")
    n_free = check_int(n_free, "n_free", low=0)
    if n_free > 0 and (settings.alpha > 0 or settings.continuity > 0):
        raise ParameterError(f"alpha={settings.alpha!r} and continuity={settings.continuity!r} are not supported "
                             f"with free templates (n_free={n_free}): use 0 or n_free=0")
    t_start = perf_counter()
    timings: dict = {}
    y, sr = _prepare(y, sr, settings, timings)
    device = check_device(settings.device)
    V, kernel, peak = _model_data(y, settings, device, timings)
    n_freq = settings.n_fft // 2 + 1
    groups, start = [], 0
    for i, D in enumerate(dictionaries):
        if not isinstance(D, Tensor) or D.ndim != 2 + len(kernel) or D.shape[0] != n_freq \
                or tuple(D.shape[2:]) != tuple(kernel[:D.ndim - 2]):
            shape = tuple(D.shape) if isinstance(D, Tensor) else type(D).__name__
            raise ParameterError(f"dictionaries[{i}] has shape {shape}, but {settings.model} with n_fft="
                                 f"{settings.n_fft} needs ({n_freq}, rank{''.join(f', {k}' for k in kernel)})")
        groups.append(list(range(start, start + D.shape[1])))
        start += D.shape[1]
    W_fixed = torch.cat([D.detach() for D in dictionaries], 1).to(device, torch.float32)
    settings = settings.replace(rank=start + n_free)
    t = perf_counter()
    losses: list = []
    record = _recorder(losses, callback)
    probe = spec.build(tuple(V.shape), settings.rank, kernel, None)  # for the class and the shape of H
    model_cls, H_shape = type(probe), tuple(probe.H.shape)
    del probe
    if peak == 0:
        free = torch.zeros((W_fixed.shape[0], n_free) + tuple(W_fixed.shape[2:]), device=device)
        W, H = torch.cat([W_fixed, free], 1), torch.zeros(H_shape, device=device)
        n_iter, losses = 0, [(0, 0.0)]
    elif n_free == 0:
        model = model_cls(W=W_fixed, H=H_shape, trainable_W=False, generator=settings.seed).to(device)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            n_iter = model.fit(V, beta=settings.beta, tol=settings.tol, max_iter=settings.n_iter, init="random",
                               generator=settings.seed, callback=record, **_penalty(V, settings, model))
        W, H = model.W.detach(), model.H.detach()
    else:
        W, H, n_iter = _fit_partly_fixed(model_cls, V, W_fixed, n_free, H_shape, settings, record)
    timings["fit"] = perf_counter() - t
    sep = _finish(settings, sr, y, V, W, H, int(n_iter), losses, timings, keep_components, t_start)
    return sep, groups
