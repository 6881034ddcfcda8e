"""The settings of a separation (:class:`SeparationSettings`) and the checks of its inputs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch

from .._validation import check_beta, check_finite_float, check_fraction, check_int, check_rank, is_int
from ..exceptions import ParameterError
from ..init import INIT_METHODS
from ..minibatch import SOLVERS as MINIBATCH_SOLVERS
from .io import check_sample_rate
from .models import MODELS, ModelSpec
from .spectral import (check_stft_params)

__all__ = ["SeparationSettings", "SOLVER_CHOICES", "check_groups", "check_device"]

#: The solvers of a separation: the model's full-batch fit, or a mini-batch solver of :mod:`nmfcore.minibatch`
SOLVER_CHOICES = ("full",) + MINIBATCH_SOLVERS


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
        (0 always runs ``n_iter`` iterations); for the stochastic mini-batch
        solvers, whose loss is not monotone, the patient rule of
        :meth:`nmfcore.minibatch.MiniBatchMU.fit` (``patience``).
    kernel_size : int or tuple, default 1
        Convolutive models only: frames ``T`` of an NMFD pattern, or
        ``(frequency bins, frames)`` of an NMF2D patch (an int ``k`` means
        ``(k, k)``). Ignored by NMF.
    init : {'nndsvda', 'nndsvd', 'nndsvdar', 'random', None}, default 'nndsvda'
        Initialisation; a method a model lacks falls back to 'random'. For
        long recordings (more than :data:`nmfcore.init.SVD_MAX_ENTRIES`
        spectrogram entries) and for the mini-batch solvers NNDSVD is
        computed block by block of frames (:func:`~nmfcore.init.nndsvd_blocks`,
        the same result in freq x freq + frames x rank memory).
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
        each activation, so that a component follows a sound that lasts;
        with it the fit's update of H is Virtanen's heuristic, not proven
        to decrease the objective at every step. Off by default, which is
        what we recommend: whether it helps depends on the recording, and no
        weight is known to improve separation in general (see
        ``bench/README.md``).
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
    solver : {'full', 'mu_batch', 'asg_mu', 'gsg_mu', 'asag_mu', 'gsag_mu'}, default 'full'
        'full' fits the whole spectrogram at every iteration (the model's
        own ``fit``); the others are the mini-batch solvers of
        :mod:`nmfcore.minibatch` (model 'NMF' with a beta-divergence and no
        penalty only), which visit the frames in batches of
        ``batch_size``: ``n_iter`` then counts epochs (passes over the
        frames). ``mu_batch`` is full-batch MU computed batch by batch,
        the stochastic ones update the templates after every batch
        (``asg_mu``, ``asag_mu``) or once per epoch from one random batch.
    batch_size : int, default 1024
        Frames per batch of the mini-batch solvers (ignored by 'full').
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
    solver: str = "full"
    batch_size: int = 1024

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
        self._check_solver()

    def _check_solver(self):
        if self.solver not in SOLVER_CHOICES:
            raise ParameterError(f"solver={self.solver!r} must be one of {SOLVER_CHOICES}")
        object.__setattr__(self, "batch_size", check_int(self.batch_size, "batch_size", low=1))
        if self.solver == "full":
            return
        clash = [f"{name}={value!r}" for name, value, off in (
            ("model", self.model, "NMF"), ("sparsity_H", self.sparsity_H, None), ("alpha", self.alpha, 0.0),
            ("continuity", self.continuity, 0.0)) if value != off]
        if clash:
            raise ParameterError(f"solver={self.solver!r} (mini-batch) fits model 'NMF' without sparsity_H, "
                                 f"alpha or continuity: got {', '.join(clash)} (use solver='full')")

    @property
    def minibatch(self) -> bool:
        """Whether :attr:`solver` is a mini-batch solver (not 'full')."""
        return self.solver != "full"

    @staticmethod
    def _check_kernel(k):
        if isinstance(k, (list, tuple)):
            k = tuple(k)
            if not k or not all(is_int(v) and v >= 1 for v in k):
                raise ParameterError(f"kernel_size={k!r} must be a positive integer or a tuple of them")
            return tuple(int(v) for v in k)
        return check_int(k, "kernel_size", low=1)

    @property
    def spec(self) -> ModelSpec:
        """The :class:`~nmfcore.audio.ModelSpec` of :attr:`model`."""
        return MODELS[self.model]

    @property
    def layout(self):
        """The model's :class:`~nmfcore.audio.models.Layout` for this STFT (``n_fft // 2 + 1`` bins)."""
        return self.spec.layout.for_stft(self.n_fft // 2 + 1)

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


def check_device(name: str) -> torch.device:
    """The torch device ``name``, or a ParameterError if this machine does not have it."""
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ParameterError(f"device={name!r} is not available: torch sees no CUDA device (use 'cpu')")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ParameterError(f"device={name!r} is not available on this machine (use 'cpu')")
    return device
