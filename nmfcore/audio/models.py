"""The registry of models that factorise a spectrogram, and how each one lays it out.

A spectrogram ``S`` is ``(freq F, frames T)``. Each nmfcore model wants it
in its own layout and keeps its factors with the rank on axis 1:

=========  ==================  =====================  ===========================
model      V                   W                      H
=========  ==================  =====================  ===========================
NMF        ``S.T`` (T, F)      (F, R)                 (T, R)
NMFD       ``S[None]``         (F, R, k)              (1, R, T - k + 1)
NMF2D      ``S[None, None]``   (1, R, kf, kt)         (1, R, F - kf + 1, T - kt + 1)
PLCA       ``S.T`` (T, F)      (F, R)                 (T, R), times Z and norm
SIPLCA     ``S[None]``         (F, R, k)              (1, R, T - k + 1), times Z and norm
=========  ==================  =====================  ===========================

Because every reconstruction is linear in each factor, component ``r``'s
own spectrogram is the model's reconstruction from ``W[:, r:r+1]`` and
``H[:, r:r+1]``; for convolutive models that is the component's whole
time (and frequency) shifted pattern.

Examples
--------
>>> [name for name in ("NMF", "NMFD", "NMF2D") if name in MODELS]
['NMF', 'NMFD', 'NMF2D']
>>> MODELS["NMFD"].convolutive
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch
from torch import Tensor

from .. import nmf as _nmf
from .. import plca as _plca
from ..exceptions import ParameterError
from ..init import INIT_METHODS
from ..operators import Deconvolution, TapPlanes
from .spectral import log_frequency_matrices

__all__ = ["ModelSpec", "MODELS", "register_model", "fit_solver", "Layout", "MATRIX", "CONV1D", "CONV2D", "LOGFREQ2D"]


class Layout:
    """How a spectrogram and a model's factors map onto each other (one per operator)."""

    name = "base"
    kernel_ndim = 0

    def to_model(self, S: Tensor) -> Tensor:
        raise NotImplementedError

    def from_model(self, Y: Tensor) -> Tensor:
        raise NotImplementedError

    def reconstruct(self, H: Tensor, W: Tensor) -> Tensor:
        """Spectrogram (F, T) of the whole model (arguments in the order of the models' ``reconstruct(H, W)``)."""
        raise NotImplementedError

    def component(self, H: Tensor, W: Tensor, r: int) -> Tensor:
        """Spectrogram (F, T) of component ``r`` alone."""
        return self.reconstruct(H[:, r:r + 1], W[:, r:r + 1])

    def component_frames(self, H: Tensor, W: Tensor, r: int, a: int, b: int) -> Tensor:
        """Frames ``a:b`` of :meth:`component` (F, b - a), computed from the activations they need only.

        For convolutive models frame ``t`` depends on activations ``t - k + 1 .. t``
        (``k`` the kernel's time length, the last axis of ``W`` and ``H``).
        """
        k, L = W.shape[-1], H.shape[-1]
        j0, j1 = max(0, a - k + 1), min(L, b)
        part = self.reconstruct(H[:, r:r + 1, ..., j0:j1], W[:, r:r + 1])
        return part[:, a - j0:b - j0]

    def export(self, W: Tensor, H: Tensor) -> tuple[np.ndarray, np.ndarray]:
        """The factors as numpy arrays, ``W`` (freq, R, ...) and ``H`` (R, ...)."""
        raise NotImplementedError

    def n_bins(self, n_freq: int) -> int:
        """Frequency bins of the model's spectrogram for an STFT of ``n_freq`` bins (what a 2-D kernel's
        first entry and its shifts count)."""
        return int(n_freq)

    def for_stft(self, n_freq: int) -> "Layout":
        """This layout for an STFT of ``n_freq`` bins (itself unless the mapping depends on it)."""
        return self

    def kernel(self, kernel_size) -> tuple:
        """``kernel_size`` as a tuple of :attr:`kernel_ndim` ints."""
        if self.kernel_ndim == 0:
            return ()
        k = tuple(kernel_size) if isinstance(kernel_size, (tuple, list)) else (kernel_size,) * self.kernel_ndim
        if len(k) != self.kernel_ndim:
            raise ParameterError(f"kernel_size={kernel_size!r} must have {self.kernel_ndim} entries for a "
                                 f"{self.name} model")
        return k


class _Matrix(Layout):
    name = "matrix"

    def to_model(self, S):
        return S.t()

    def from_model(self, Y):
        return Y.t()

    def reconstruct(self, H, W):
        return W @ H.t()

    def component(self, H, W, r):
        return torch.outer(W[:, r], H[:, r])

    def component_frames(self, H, W, r, a, b):
        return torch.outer(W[:, r], H[a:b, r])

    def export(self, W, H):
        return W.detach().cpu().numpy(), H.detach().t().cpu().numpy()


class _Conv1d(Layout):
    name = "conv1d"
    kernel_ndim = 1

    def to_model(self, S):
        return S.unsqueeze(0)

    def from_model(self, Y):
        return Y[0]

    def reconstruct(self, H, W):
        return Deconvolution.reconstruct(H, W)[0]

    def export(self, W, H):
        return W.detach().cpu().numpy(), H.detach()[0].cpu().numpy()


class _Conv2d(Layout):
    name = "conv2d"
    kernel_ndim = 2

    def to_model(self, S):
        return S[None, None]

    def from_model(self, Y):
        return Y[0, 0]

    def reconstruct(self, H, W):
        return TapPlanes.reconstruct(H, W)[0, 0]

    def export(self, W, H):
        # (1, R, kf, kt) -> (kf, R, kt): frequency first, as for the other models
        return W.detach()[0].permute(1, 0, 2).cpu().numpy(), H.detach()[0].cpu().numpy()


class _LogFrequency2d(_Conv2d):
    """:class:`_Conv2d` on a log-frequency axis (:func:`~nmfcore.audio.spectral.log_frequency_matrices`).

    The model sees ``F @ S`` (24 bins per octave from STFT bin 3), so a shift
    of a template is a pitch shift (a quarter tone per bin). Everything the
    pipeline reads back is on the STFT's bins: the reconstruction and each
    component are interpolated back by ``D`` (so the masks of the components
    still sum to one), and :meth:`from_model` gives ``D @ F @ S``, the
    spectrogram the model saw. Several STFT sizes give the same number of
    log bins, so mapping back needs the STFT's: :meth:`for_stft` binds it
    (``SeparationSettings.layout`` does); the unbound registry entry maps
    spectrograms to the model only.
    """

    name = "logfreq2d"
    bins_per_octave = 24

    def __init__(self, n_freq: Optional[int] = None):
        self.n_freq = n_freq
        self._cache: dict = {}
        self._bound: dict = {}

    def for_stft(self, n_freq: int) -> "_LogFrequency2d":
        n_freq = int(n_freq)
        if self.n_freq is not None:
            if n_freq != self.n_freq:
                raise ParameterError(f"n_freq={n_freq} differs from the {self.n_freq} STFT bins of this layout")
            return self
        if n_freq not in self._bound:
            self._bound[n_freq] = _LogFrequency2d(n_freq)
        return self._bound[n_freq]

    def matrices(self, n_freq: int, like: Tensor) -> tuple[Tensor, Tensor]:
        """``(F, D)`` for ``n_freq`` STFT bins, in ``like``'s dtype and device (cached)."""
        key = (int(n_freq), like.dtype, like.device)
        if key not in self._cache:
            self._cache[key] = log_frequency_matrices(n_freq, bins_per_octave=self.bins_per_octave,
                                                      dtype=like.dtype, device=like.device)
        return self._cache[key]

    def n_bins(self, n_freq):
        return int(math.floor(self.bins_per_octave * math.log2((int(n_freq) - 1) / 3.0))) + 1

    def to_model(self, S):
        if self.n_freq is not None and S.shape[0] != self.n_freq:
            raise ParameterError(f"a spectrogram of {S.shape[0]} bins for a layout of {self.n_freq} STFT bins")
        F, _ = self.matrices(S.shape[0], S)
        return (F @ S)[None, None]

    def _to_linear(self, Y: Tensor) -> Tensor:
        if self.n_freq is None:
            raise ParameterError("the log-frequency layout needs the STFT's size to map back: use "
                                 "layout.for_stft(n_fft // 2 + 1) (SeparationSettings.layout binds it)")
        _, D = self.matrices(self.n_freq, Y)
        if Y.shape[0] != D.shape[1]:
            raise ParameterError(f"{Y.shape[0]} log-frequency bins, but an STFT of {self.n_freq} bins has "
                                 f"{D.shape[1]}")
        return D @ Y

    def from_model(self, Y):
        return self._to_linear(Y[0, 0])

    def reconstruct(self, H, W):
        return self._to_linear(TapPlanes.reconstruct(H, W)[0, 0])


MATRIX, CONV1D, CONV2D, LOGFREQ2D = _Matrix(), _Conv1d(), _Conv2d(), _LogFrequency2d()


def _fit_beta(model, V, *, beta, tol, max_iter, init, seed, sparsity_H, callback, alpha=0.0, l1_ratio=1.0,
              continuity=0.0) -> int:
    """Fit an nmfcore beta-divergence model (``fit``, or ``sparse_fit`` with a target sparseness of H).

    ``alpha``, ``l1_ratio`` and ``continuity`` are the penalties of :meth:`nmfcore.nmf.BaseComponent.fit`.
    """
    if sparsity_H is None:
        extra = {"continuity": continuity} if continuity else {}
        return model.fit(V, beta=beta, tol=tol, max_iter=max_iter, alpha=alpha, l1_ratio=l1_ratio, init=init,
                         generator=seed, callback=callback, **extra)
    if init is not None:
        model.fit(V, beta=beta, max_iter=0, init=init, generator=seed)  # initialise only
    return model.sparse_fit(V, beta=beta, max_iter=max_iter, sH=sparsity_H, callback=callback)


@dataclass(frozen=True)
class ModelSpec:
    """A model usable on spectrograms: what the app shows and how the pipeline builds it.

    Attributes
    ----------
    name : str
        Registry key, e.g. ``'NMFD'``.
    label : str
        Short human-readable name.
    description : str
        One or two sentences for users.
    convolutive : bool
        Whether components are patterns in time (and frequency) with a kernel.
    kernel_help : str
        What ``kernel_size`` means for this model (empty if unused).
    layout : Layout
        How spectrograms and factors map onto the model.
    init_methods : tuple of str
        The ``init`` values the model supports (others fall back to ``'random'``).
    build : callable
        ``build(V.shape, rank, kernel, generator) -> model``.
    fit : callable
        ``fit(model, V, *, beta, tol, max_iter, init, seed, sparsity_H, callback) -> n_iter``;
        beta-divergence models also take ``alpha`` and ``l1_ratio`` (passed only when ``alpha > 0``)
        and ``continuity`` (passed only when ``> 0``, for NMF and NMFD).
    factors : callable
        ``factors(model) -> (W, H)`` tensors in the layout of :attr:`layout`
        (any scale such as PLCA's ``Z`` folded into ``H``).
    beta_divergence : bool
        Whether the model minimises the beta-divergence with ``fit(beta=...)``
        and ``trainable_W`` (needed by supervised separation).
    curve : {'loss', 'log-likelihood'}
        What ``fit`` reports to the callback: a loss that never increases, or
        (EM models) a log-likelihood that never decreases.
    defaults : dict
        :class:`~nmfcore.audio.SeparationSettings` values this model should
        start from where the general defaults do not suit it (an app or
        script applies them when the model is chosen).
    """

    name: str
    label: str
    description: str
    convolutive: bool
    kernel_help: str
    layout: Layout = field(default=MATRIX, repr=False, compare=False)
    init_methods: tuple = INIT_METHODS
    build: Callable = field(default=None, repr=False, compare=False)
    fit: Callable = field(default=_fit_beta, repr=False, compare=False)
    factors: Callable = field(default=lambda m: (m.W.detach(), m.H.detach()), repr=False, compare=False)
    beta_divergence: bool = True
    curve: str = "loss"
    defaults: dict = field(default_factory=dict, repr=False, compare=False)


MODELS: dict[str, ModelSpec] = {}

_PROBE_SHAPES = {0: (2, 2), 1: (1, 2, 2), 2: (1, 1, 2, 2)}  # the smallest V of each layout


def fit_solver(model: str, beta: float, *, device: str = "cpu", sparsity_H=None, continuity: float = 0.0) -> str:
    """The solver the pipeline's fit runs for these settings.

    ``'projected_gradient'`` with a target sparseness of H (``sparse_fit``:
    projected gradient steps on H, multiplicative updates on W); ``'mu'``
    (multiplicative updates) or ``'hals'`` as the model's ``fit`` resolves
    ``solver='auto'`` (MU with temporal continuity); ``'em'`` for models that
    do not minimise a beta-divergence (PLCA and kin).

    Examples
    --------
    >>> fit_solver("NMF", 2.0), fit_solver("NMF", 1.0), fit_solver("NMF", 2.0, sparsity_H=0.5)
    ('hals', 'mu', 'projected_gradient')
    """
    spec = MODELS[model]
    if not spec.beta_divergence:
        return "em"
    if sparsity_H is not None:
        return "projected_gradient"
    if continuity:
        return "mu"
    ndim = spec.layout.kernel_ndim
    probe = spec.build(_PROBE_SHAPES[ndim], 1, (1,) * ndim, None)
    return probe.resolve_solver("auto", float(beta), torch.device(device))


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add ``spec`` to :data:`MODELS` (replacing one of the same name) and return it."""
    if not isinstance(spec, ModelSpec) or spec.build is None:
        raise ParameterError("register_model needs a ModelSpec with a build function")
    MODELS[spec.name] = spec
    return spec


register_model(ModelSpec(
    name="NMF", label="NMF",
    description="Non-negative matrix factorisation: each component is one spectral template (a column of W) "
                "switched on and off by its activation row.",
    convolutive=False, kernel_help="",
    layout=MATRIX,
    build=lambda shape, rank, kernel, gen: _nmf.NMF(shape, rank, generator=gen),
))
register_model(ModelSpec(
    name="NMFD", label="NMF deconvolution (NMFD)",
    description="Non-negative matrix factor deconvolution: each component is a spectro-temporal pattern a few "
                "frames long (a drum hit, a note with its attack), placed at the onsets in its activation.",
    convolutive=True, kernel_help="length T of each pattern in STFT frames (4-8 at hop 512 and 22 kHz, "
                                  "0.1-0.2 s)",
    layout=CONV1D,
    build=lambda shape, rank, kernel, gen: _nmf.NMFD(shape, rank, kernel[0], generator=gen),
))
register_model(ModelSpec(
    name="NMF2D", label="NMF 2-D deconvolution (NMF2D)",
    description="Non-negative matrix factor 2-D deconvolution: each component is a spectral patch of a few "
                "frames that can also move up and down the spectrum by a few frequency bins.",
    convolutive=True, kernel_help="(frequency bins, frames) of each patch; the activations have one row per "
                                  "frequency shift (bins of the spectrogram - patch bins + 1), so keep the "
                                  "patch nearly as tall as the spectrogram: a small patch lets them copy it",
    layout=CONV2D,
    init_methods=("random",),
    # 4 shifts of a 254-bin patch of a 512-point STFT: parts as meaningful as NMF's in seconds
    # (bench/nmf2d_defaults.py; bench/README.md, 2026-12-03)
    defaults={"rank": 8, "n_fft": 512, "hop_length": 256, "kernel_size": (254, 4), "n_iter": 100},
    build=lambda shape, rank, kernel, gen: _nmf.NMF2D(shape, rank, kernel, generator=gen),
))


def _fit_em(model, V, *, beta, tol, max_iter, init, seed, sparsity_H, callback) -> int:
    r"""Fit a PLCA-family model by EM (:meth:`nmfcore.plca.BaseComponent.fit`).

    ``beta`` and ``init`` do not apply; ``callback(iteration, loglik)`` gets the
    log-likelihood per unit of mass, :math:`\sum v \log \hat v` with
    :math:`v = V / \sum V` (it never decreases). The fit's ``norm`` is kept on the
    model for :func:`_em_factors`.
    """
    if sparsity_H is not None:
        raise ParameterError(f"sparsity_H={sparsity_H!r} needs a beta-divergence model, not {type(model).__name__} "
                             "(its Dirichlet priors play that role in nmfcore.plca)")
    V64 = V.double()
    mass = float(V64.sum())
    # sum v log v of the normalised data: the log-likelihood is this minus the fit's loss / mass
    entropy = float(torch.xlogy(V64, V64).sum()) / mass - math.log(mass) if mass > 0 else 0.0

    def report(i, loss):
        return callback(i, entropy - loss / mass) if callback is not None else False

    n_iter, norm = model.fit(V, tol=tol, max_iter=max_iter, generator=seed, callback=report)
    model._audio_norm = float(norm)
    return int(n_iter)


def _em_factors(model):
    """``(W, H)`` with ``Z`` and the fit's norm folded into ``H``: ``V ~ norm * H diag(Z) W^T`` (or its convolution)."""
    Z = model.Z.detach().reshape((1, -1) + (1,) * (model.H.ndim - 2))
    return model.W.detach(), model.H.detach() * Z * getattr(model, "_audio_norm", 1.0)


_EM = dict(init_methods=(), fit=_fit_em, factors=_em_factors, beta_divergence=False, curve="log-likelihood")

register_model(ModelSpec(
    name="PLCA", label="Probabilistic latent component analysis (PLCA)",
    description="PLCA: the spectrogram, normalised to sum to one, is a mixture of components, each a "
                "spectrum P(f|z) times a time profile P(t|z) with weight P(z), fitted by EM.",
    convolutive=False, kernel_help="", layout=MATRIX,
    build=lambda shape, rank, kernel, gen: _plca.PLCA(shape, rank, generator=gen), **_EM,
))
register_model(ModelSpec(
    name="SIPLCA", label="Shift-invariant PLCA (SI-PLCA)",
    description="Shift-invariant PLCA: each component is a probability distribution over a spectro-temporal "
                "patch a few frames long, placed at the onsets of its time profile, fitted by EM.",
    convolutive=True, kernel_help=MODELS["NMFD"].kernel_help, layout=CONV1D,
    build=lambda shape, rank, kernel, gen: _plca.SIPLCA(shape, rank, kernel[0], generator=gen), **_EM,
))
register_model(ModelSpec(
    name="SIPLCA2", label="Shift-invariant PLCA in log-frequency (SI-PLCA 2-D)",
    description="2-D shift-invariant PLCA on a log-frequency spectrogram (24 bins per octave): each component "
                "is a distribution over a spectral patch a few frames long that can move up the spectrum, one "
                "shift being a quarter tone, so one template can play several pitches; fitted by EM.",
    convolutive=True, kernel_help="(log-frequency bins, frames) of each patch; the activations have one row "
                                  "per pitch shift (log bins of the spectrogram - patch bins + 1; 24 per octave)",
    layout=LOGFREQ2D,
    # 13 shifts (half an octave) of a 4-frame patch at n_fft 2048 (202 log bins): separated as well as NMF
    # on the development set (bench/siplca2_logfreq.py; bench/README.md, 2026-12-03)
    defaults={"kernel_size": (190, 4)},
    build=lambda shape, rank, kernel, gen: _plca.SIPLCA2(shape, rank, kernel, generator=gen), **_EM,
))

