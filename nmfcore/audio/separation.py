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

import warnings
from time import perf_counter
from typing import Callable, Optional

import torch
from torch import Tensor

from ..exceptions import ConvergenceWarning, ParameterError
from ..init import nndsvd_blocks
from .io import AudioError, as_waveform, check_sample_rate, resample
from .spectral import spectrogram
from .result import Separation
from .settings import SeparationSettings, check_device, check_groups

__all__ = ["SeparationSettings", "Separation", "separate", "learn_dictionary", "separate_supervised",
           "check_groups", "check_device"]

Callback = Callable[[int, float], Optional[bool]]


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

    Zeros are floored at :func:`zero_floor`.
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
    V = s.layout.to_model(S)
    del S
    peak = float(V.max())
    floor = zero_floor(s, peak)
    if floor > 0:
        V.clamp_min_(floor)
    timings["stft"] = perf_counter() - t
    return V, kernel, peak


def zero_floor(settings: SeparationSettings, peak: float) -> float:
    """The floor of the spectrogram's values before the fit: 1e-7 of its ``peak`` for ``beta <= 0`` (the
    divergence is infinite at zero), else 0 (no floor). The mini-batch solvers need none: a batch of digital
    silence carries no information about the templates and leaves them unchanged
    (:func:`~nmfcore.divergence.multiplicative_step`)."""
    return peak * 1e-7 if settings.beta <= 0 and peak > 0 else 0.0


def _check_kernel_fits(settings: SeparationSettings, S: Tensor) -> tuple:
    kernel = settings.kernel()
    if len(kernel) == 1 and kernel[0] > S.shape[1]:
        raise ParameterError(f"kernel_size={kernel[0]} frames is longer than the recording's {S.shape[1]} "
                             "STFT frames: use a smaller kernel_size")
    n_bins = settings.spec.layout.n_bins(S.shape[0])  # log-frequency models count log bins
    if len(kernel) == 2 and (kernel[0] > n_bins or kernel[1] > S.shape[1]):
        raise ParameterError(f"kernel_size={kernel} does not fit in the spectrogram of {n_bins} frequency bins "
                             f"x {S.shape[1]} frames")
    return kernel


def _recorder(losses: list, callback: Optional[Callback]) -> Callback:
    """A fit callback that appends ``(iteration, loss)`` to ``losses`` and forwards to ``callback``."""
    def record(i, loss):
        losses.append((int(i), float(loss)))
        return bool(callback(i, loss)) if callback is not None else False

    return record


def factorise_minibatch(V, n_frames: int, peak: float, settings: SeparationSettings,
                        callback: Optional[Callback]) -> tuple[Tensor, Tensor, int, list]:
    """NMF of the frames ``V`` by the mini-batch solver ``settings.solver``; returns ``(W, H, epochs, losses)``.

    ``V`` is the ``(frames, freq)`` tensor (batches of ``settings.batch_size``
    frames, shuffled) or a re-iterable of chunks, each one batch (e.g.
    :class:`~nmfcore.audio.longfile.SpectrogramBlocks`, read block by block).
    An NNDSVD ``init`` starts from :func:`~nmfcore.init.nndsvd_blocks` (two
    passes over the data), 'random' or ``None`` from :class:`~nmfcore.minibatch.MiniBatchMU`'s
    own random start, drawn from a generator seeded with ``settings.seed``.
    ``callback(epoch, loss)`` as the full fit's, once per epoch. ``mu_batch``
    stops by the full fit's rule (its loss decreases at every epoch), the
    stochastic solvers by :meth:`~nmfcore.minibatch.MiniBatchMU.fit`'s patient
    rule (:data:`~nmfcore.minibatch.PATIENCE` epochs without a new best by ``tol``).
    """
    from ..minibatch import MiniBatchMU

    rank = settings.rank
    chunks = torch.split(V, settings.batch_size) if isinstance(V, Tensor) else V
    if peak == 0:  # silence: nothing to factorise, every component is silent
        n_bins, device = settings.n_fft // 2 + 1, V.device if isinstance(V, Tensor) else None
        return torch.zeros(n_bins, rank, device=device), torch.zeros(n_frames, rank, device=device), 0, [(0, 0.0)]
    W0 = H0 = None
    if settings.init is not None and settings.init.startswith("nndsvd"):
        W0, H0 = nndsvd_blocks(chunks, rank, settings.init, settings.seed)
    model = MiniBatchMU(rank, solver=settings.solver, beta=settings.beta, batch_size=settings.batch_size,
                        generator=torch.Generator().manual_seed(settings.seed))
    losses: list = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(V, W=W0, H=H0, max_epochs=settings.n_iter, tol=settings.tol, callback=_recorder(losses, callback))
    return model.W, model.H, int(model.epoch), losses


def _factorise(V: Tensor, kernel: tuple, peak: float, settings: SeparationSettings,
               callback: Optional[Callback]) -> tuple[Tensor, Tensor, int, list]:
    """Fit the model to ``V`` (model layout); returns (W, H, n_iter, losses)."""
    if settings.minibatch:
        return factorise_minibatch(V, V.shape[0], peak, settings, callback)
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
    layout = settings.layout
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


# supervised and semi-supervised separation live in their own module; re-exported here
from .supervised import learn_dictionary, separate_supervised  # noqa: E402
