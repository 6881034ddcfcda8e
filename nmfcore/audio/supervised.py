r"""Supervised and semi-supervised separation with templates learnt from examples ([1]_).

:func:`learn_dictionary` learns the templates of one source from recordings
of it; :func:`separate_supervised` separates a mixture with those templates
fixed, plus optional free templates for what no dictionary covers (their
columns are frozen in the fit: ``fit(frozen_W_columns=...)``).

References
----------
.. [1] P. Smaragdis, B. Raj and M. Shashanka, "Supervised and
   semi-supervised separation of sounds from single-channel mixtures",
   ICA 2007.
"""

from __future__ import annotations

import warnings
from time import perf_counter
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from .._validation import check_int
from ..exceptions import ConvergenceWarning, ParameterError
from .io import AudioError, as_waveform
from .result import Separation
from .separation import _factorise, _finish, _model_data, _penalty, _prepare, _recorder
from .settings import SeparationSettings, check_device

__all__ = ["learn_dictionary", "separate_supervised"]

Callback = Callable[[int, float], Optional[bool]]


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
    if settings.minibatch:
        raise ParameterError(f"supervised separation fits the whole spectrogram: solver={settings.solver!r} must "
                             "be 'full'")
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
