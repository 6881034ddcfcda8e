r"""Separation of recordings too long to hold as one spectrogram: read, fit and render block by block.

:func:`separate_file` is :func:`~nmfcore.audio.separate` for a file on disk
whose spectrogram is never in memory as a whole:

1. :class:`SpectrogramBlocks` reads the file block by block with soundfile
   (each block of frames with the ``n_fft - hop_length`` samples its frames
   share with the next, zeros beyond both ends as the centred STFT pads),
   and gives the magnitude STFT frames of the mono mix of each block, equal
   to those of the whole file in memory; it is a re-iterable chunk source
   for :meth:`nmfcore.minibatch.MiniBatchMU.fit`;
2. the NMF is fitted by a mini-batch solver, one block per batch
   (:func:`~nmfcore.audio.separation.factorise_minibatch`); only the
   templates ``W`` (freq x rank) and the activations ``H`` (frames x rank)
   stay in memory;
3. :meth:`LongSeparation.source_blocks` renders the sources block by block:
   each block's complex STFT again, the soft masks from ``W`` and that
   block's rows of ``H``, the inverse STFT overlap-added across the blocks'
   borders (:class:`~nmfcore.audio.spectral.OverlapAdd`), so that the stems
   can be written as they come (:class:`~nmfcore.audio.io.AudioWriter`).

Memory is bounded by the block size (frames per batch) and the rank, not by
the length of the recording. Resampling (``settings.sr`` other than the
file's rate) is refused: resample the file first.
"""

from __future__ import annotations

import os
from pathlib import Path
from time import perf_counter
from typing import Callable, Iterator, Optional

import numpy as np
import torch
from torch import Tensor

from ..exceptions import ParameterError
from .io import AudioError, _quiet_stderr, check_sample_rate
from .result import masked_overlap_add, rendered_blocks
from .separation import zero_floor
from .settings import SeparationSettings, check_device, check_groups
from .spectral import OverlapAdd, frame_blocks, get_window, n_frames

__all__ = ["SpectrogramBlocks", "LongSeparation", "separate_file", "audio_duration"]

Callback = Callable[[int, float], Optional[bool]]


def audio_duration(path) -> Optional[float]:
    """Seconds of audio in the file at ``path`` from its header, or ``None`` where soundfile cannot tell.

    Examples
    --------
    >>> import tempfile, pathlib, numpy as np, soundfile as sf
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "one_second.wav"
    >>> sf.write(path, np.zeros(8000), 8000)
    >>> audio_duration(path)
    1.0
    """
    import soundfile as sf

    try:
        with _quiet_stderr():  # the decoders' own notes go to file descriptor 2
            info = sf.info(os.fspath(path))
    except Exception:  # noqa: BLE001 (not a file libsndfile reads: the caller decodes it another way)
        return None
    if info.frames <= 0 or info.samplerate <= 0:
        return None
    return info.frames / info.samplerate


class SpectrogramBlocks:
    """The spectrogram frames of an audio file, computed block by block as the file is read.

    Iterating gives the frames of the magnitude (``settings.power``) STFT of
    the file's mono mix (mean of its channels), ``block_frames`` frames at a
    time in the model layout of NMF, ``(frames, freq)``: exactly the rows of
    the spectrogram :func:`~nmfcore.audio.separate` factorises (floored at
    :func:`~nmfcore.audio.separation.zero_floor` after :meth:`scan`). Each
    iteration reads the file afresh, so the object can be given to
    :meth:`nmfcore.minibatch.MiniBatchMU.fit`, which reads it once per
    epoch. Frame ``t`` covers samples ``t * hop - n_fft // 2`` to
    ``n_fft`` later; a block of frames ``a:b`` reads the samples its frames
    cover (``(b - a - 1) * hop + n_fft``), zeros outside the file.

    Parameters
    ----------
    path : str or os.PathLike
        A file libsndfile reads and can seek in (WAV, FLAC, OGG, MP3, ...).
    settings : SeparationSettings
        Its STFT settings (``n_fft``, ``hop_length``, ``window``, ``power``),
        ``beta`` and ``device`` are used; ``settings.sr`` must be ``None`` or
        the file's rate.
    block_frames : int, optional, keyword-only
        Frames per block (default ``settings.batch_size``).

    Attributes
    ----------
    sr, channels, n_samples, n_frames, n_bins : int
    input_peak, peak : float
        After :meth:`scan`: the largest absolute sample and the largest
        spectrogram value.

    Raises
    ------
    AudioError
        The file is missing, unreadable or not seekable, shorter than one
        FFT frame, or ``settings.sr`` asks for resampling; NaN or infinite
        samples (when read).

    Examples
    --------
    >>> import tempfile, pathlib, numpy as np, soundfile as sf
    >>> from nmfcore.audio import spectrogram
    >>> y = np.random.default_rng(0).uniform(-0.5, 0.5, 5000).astype(np.float32)
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "noise.wav"
    >>> sf.write(path, y, 8000, subtype="FLOAT")
    >>> blocks = SpectrogramBlocks(path, SeparationSettings(n_fft=256, hop_length=64), block_frames=20)
    >>> [tuple(V.shape) for V in blocks][:2], blocks.n_frames
    ([(20, 129), (20, 129)], 79)
    >>> S = spectrogram(torch.from_numpy(y), n_fft=256, hop_length=64)
    >>> bool(torch.allclose(torch.cat(list(blocks)), S.t(), atol=1e-5))
    True
    """

    def __init__(self, path, settings: SeparationSettings, *, block_frames: Optional[int] = None):
        import soundfile as sf

        if not isinstance(settings, SeparationSettings):
            raise ParameterError(f"settings must be a SeparationSettings, got {type(settings).__name__}")
        self.path = Path(path)
        self.settings = settings
        name = f"'{self.path}'"
        if not self.path.is_file():
            raise AudioError(f"cannot read audio from {name}: no such file")
        try:
            with sf.SoundFile(os.fspath(self.path)) as snd:
                self.sr, self.channels, self.n_samples = int(snd.samplerate), int(snd.channels), int(snd.frames)
                seekable = snd.seekable()
        except Exception as exc:  # noqa: BLE001 (libsndfile's own text is unhelpful here)
            raise AudioError(f"cannot read audio from {name} block by block: not a file libsndfile decodes") \
                from exc
        if not seekable or self.n_samples <= 0:
            raise AudioError(f"cannot read {name} block by block: its length is unknown or it cannot be sought "
                             "(convert it to WAV or FLAC)")
        try:
            self.sr = check_sample_rate(self.sr, "the file's sample rate")
        except AudioError as err:
            raise AudioError(f"{name}: {err}") from None
        if settings.sr is not None and settings.sr != self.sr:
            raise AudioError(f"{name} is at {self.sr} Hz: resampling to sr={settings.sr} is not done block by "
                             "block; resample the file first or keep its rate (no --sr)")
        s = settings
        if self.n_samples < s.n_fft:
            raise AudioError(f"{name} is {self.n_samples / self.sr:.3f} s long ({self.n_samples} samples), shorter "
                             f"than one FFT frame (n_fft={s.n_fft})")
        self.block_frames = s.batch_size if block_frames is None else int(block_frames)
        if self.block_frames < 1:
            raise ParameterError(f"block_frames={block_frames!r} must be a positive integer")
        self.n_frames = n_frames(self.n_samples, s.hop_length)
        self.n_bins = s.n_fft // 2 + 1
        self.device = check_device(s.device)
        self.window = get_window(s.window, s.n_fft, device=self.device)
        self.floor = 0.0  # set by scan() for beta <= 0
        self.input_peak = self.peak = None
        self.max_read = 0  # the most samples (per channel) one read has held: bounded by the block size

    # ------------------------------------------------------------ reading
    def blocks(self, block: Optional[int] = None) -> list[tuple[int, int]]:
        """The ``(a, b)`` frame ranges of the blocks (of ``block`` frames, default :attr:`block_frames`)."""
        return frame_blocks(self.n_frames, block or self.block_frames)

    def open(self):
        """The file, opened for reading (a context manager) for :meth:`read`."""
        import soundfile as sf

        return sf.SoundFile(os.fspath(self.path))

    def read(self, snd, start: int, stop: int) -> Tensor:
        """Samples ``start:stop`` (channels, stop - start), float32 on the CPU, zeros outside the file.

        ``snd`` is an open :meth:`open`; non-finite samples are an AudioError naming the first.
        """
        out = torch.zeros((self.channels, stop - start), dtype=torch.float32)
        lo, hi = max(0, start), min(self.n_samples, stop)
        if hi > lo:
            snd.seek(lo)
            data = snd.read(hi - lo, dtype="float32", always_2d=True)
            if data.shape[0] != hi - lo:
                raise AudioError(f"'{self.path}' ended at sample {lo + data.shape[0]}, before the "
                                 f"{self.n_samples} samples its header announces")
            block = torch.from_numpy(data.T)
            finite = torch.isfinite(block)
            if not bool(finite.all()):
                ch, i = (int(v) for v in (~finite).nonzero()[0])
                raise AudioError(f"'{self.path}' contains NaN or infinite samples (first: {float(block[ch, i])} at "
                                 f"channel {ch}, sample {lo + i})")
            out[:, lo - start:hi - start] = block
        self.max_read = max(self.max_read, stop - start)
        return out

    def segment(self, snd, a: int, b: int) -> Tensor:
        """The samples frames ``a:b`` cover, ``(channels, (b - a - 1) * hop + n_fft)``, on :attr:`device`."""
        s = self.settings
        start = a * s.hop_length - s.n_fft // 2
        return self.read(snd, start, start + (b - a - 1) * s.hop_length + s.n_fft).to(self.device)

    def stft(self, seg: Tensor) -> Tensor:
        """Complex STFT frames ``(..., freq, frames)`` of a :meth:`segment` (no padding: it holds it)."""
        s = self.settings
        return torch.stft(seg, s.n_fft, s.hop_length, window=self.window, center=False, return_complex=True)

    def _magnitude(self, seg: Tensor) -> Tensor:
        mono = seg.mean(0) if self.channels > 1 else seg[0]
        S = self.stft(mono).abs()
        if self.settings.power != 1:
            S = S.pow_(self.settings.power)
        if self.floor > 0:
            S.clamp_min_(self.floor)
        return S.t()  # (frames, freq), as NMF's V = S.t()

    def __iter__(self) -> Iterator[Tensor]:
        with self.open() as snd:
            for a, b in self.blocks():
                yield self._magnitude(self.segment(snd, a, b))

    def __len__(self) -> int:
        return len(self.blocks())

    def scan(self) -> "SpectrogramBlocks":
        """One pass over the file before the fit: checks every sample, finds :attr:`input_peak` and
        :attr:`peak`, and sets the floor of the frames for ``beta <= 0``; returns ``self``."""
        self.floor = 0.0  # the peak of the frames as they are
        peak, input_peak = 0.0, 0.0
        with self.open() as snd:
            for a, b in self.blocks():  # the blocks' samples cover the file
                seg = self.segment(snd, a, b)
                input_peak = max(input_peak, float(seg.abs().max()))
                peak = max(peak, float(self._magnitude(seg).max()))
        self.peak, self.input_peak = peak, input_peak
        self.floor = zero_floor(self.settings, peak)
        return self


class LongSeparation:
    """The result of :func:`separate_file`: the factors, and the waveforms rendered block by block on demand.

    It has what the grouping functions of :mod:`nmfcore.audio.grouping`
    read (:attr:`factors`, :attr:`freqs`, :attr:`times`, :meth:`cached`), so
    :func:`~nmfcore.audio.auto_group` and :func:`~nmfcore.audio.grouping.describe_sources`
    work on it, and :meth:`source_blocks` as :meth:`Separation.source_blocks
    <nmfcore.audio.Separation.source_blocks>`; it holds no waveform and no
    spectrogram.

    Attributes
    ----------
    settings : SeparationSettings
    source : SpectrogramBlocks
    sr, n_channels, n_samples : int
    W : numpy.ndarray [shape=(freq, R)]
    H : numpy.ndarray [shape=(R, frames)]
    factors : tuple of torch.Tensor
        ``(W (freq, R), H (frames, R))`` in NMF's layout.
    losses : list of (int, float)
        ``(epoch, loss)`` of the fit.
    n_iter : int
        Epochs run.
    timings : dict of str to float
    input_peak : float
        The largest absolute sample of the file.
    """

    def __init__(self, settings, source: SpectrogramBlocks, W: Tensor, H: Tensor, losses: list, n_iter: int,
                 timings: dict):
        self.settings, self.source = settings, source
        self.sr, self.n_channels, self.n_samples = source.sr, source.channels, source.n_samples
        self.factors = (W, H)
        self.W, self.H = W.detach().cpu().numpy(), H.detach().t().cpu().numpy()
        self.losses, self.n_iter, self.timings = losses, n_iter, timings
        self.input_peak = source.input_peak
        self._cache: dict = {}

    @property
    def rank(self) -> int:
        return int(self.factors[0].shape[1])

    @property
    def freqs(self) -> np.ndarray:
        """Centre frequency in Hz of every spectrogram row."""
        return np.fft.rfftfreq(self.settings.n_fft, 1.0 / self.sr)

    @property
    def times(self) -> np.ndarray:
        """Time in seconds of every spectrogram frame."""
        return np.arange(self.source.n_frames) * self.settings.hop_length / self.sr

    def cached(self, key, compute: Callable[[], object]):
        """``compute()``, computed once and kept under ``key`` (as :meth:`Separation.cached`)."""
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def _component_frames(self, r: int, a: int, b: int) -> Tensor:
        W, H = self.factors
        return torch.outer(W[:, r], H[a:b, r])

    def render_blocks(self, groups, *, block: Optional[int] = None) -> Iterator[tuple[int, Tensor]]:
        """Waveforms of groups of components, block by block: ``(start, chunk (G, channels, samples))``.

        Each block of ``block`` frames (default the source's block) is read
        again, transformed, masked and overlap-added; the chunks follow each
        other and cover the recording, and only one block is in memory.
        """
        groups = check_groups(groups, self.rank)
        src, s = self.source, self.settings
        ola = OverlapAdd(self.n_samples, n_fft=s.n_fft, hop_length=s.hop_length, window=src.window,
                         shape=(len(groups), self.n_channels))
        with src.open() as snd:
            def channel_frames(a, b):
                seg = src.segment(snd, a, b)
                for c in range(self.n_channels):
                    yield src.stft(seg[c])

            for start, chunk in masked_overlap_add(groups, ola, self._component_frames, self.rank, s.mask_power,
                                                   channel_frames, block=block or src.block_frames):
                yield start, chunk.cpu()

    def source_blocks(self, groups, *, components: bool = False
                      ) -> Iterator[tuple[int, Tensor, Optional[Tensor]]]:
        """As :meth:`Separation.source_blocks <nmfcore.audio.Separation.source_blocks>`: ``(start, sources,
        components or None)`` chunks of the recording."""
        yield from rendered_blocks(self.render_blocks, self.rank, check_groups(groups, self.rank), components)

    def mixture_samples(self, start: int, stop: int) -> Tensor:
        """Samples ``start:stop`` of the recording (channels, stop - start), read from the file."""
        with self.source.open() as snd:
            return self.source.read(snd, start, stop)


def separate_file(path, settings: Optional[SeparationSettings] = None, *,
                  callback: Optional[Callback] = None) -> LongSeparation:
    """Separate a long recording on disk without holding its spectrogram or waveforms in memory.

    NMF by the mini-batch solver ``settings.solver`` (``'full'`` means
    ``'mu_batch'``, full-batch multiplicative updates computed block by
    block), one batch per block of ``settings.batch_size`` frames read from
    the file in order (see the module). ``settings.n_iter`` counts epochs.

    Parameters
    ----------
    path : str or os.PathLike
    settings : SeparationSettings, optional
        Model 'NMF' with a beta-divergence, no penalty; ``sr`` None or the file's.
    callback : callable, optional, keyword-only
        ``callback(epoch, loss)`` once per epoch; returning ``True`` stops.
    Returns
    -------
    LongSeparation

    Raises
    ------
    AudioError, ParameterError
        As :class:`SpectrogramBlocks`; a model or option the mini-batch
        solvers do not have.

    Examples
    --------
    >>> import tempfile, pathlib, soundfile as sf
    >>> sr = 8000
    >>> t = torch.arange(2 * sr) / sr
    >>> y = torch.sin(2 * torch.pi * 300 * t) * (t < 1) + 0.5 * torch.sin(2 * torch.pi * 2000 * t) * (t > 0.7)
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "two_tones.wav"
    >>> sf.write(path, y.numpy(), sr, subtype="FLOAT")
    >>> s = SeparationSettings(rank=2, n_fft=512, hop_length=128, batch_size=40, n_iter=30)
    >>> sep = separate_file(path, s)
    >>> sep.W.shape, sep.H.shape, sep.settings.solver
    ((257, 2), (2, 126), 'mu_batch')
    >>> stems = torch.cat([chunk for _, chunk, _ in sep.source_blocks([[0], [1]])], -1)
    >>> stems.shape, bool((stems.sum(0) - y).abs().max() < 1e-4)
    (torch.Size([2, 1, 16000]), True)
    """
    from .separation import factorise_minibatch

    t_start = perf_counter()
    settings = SeparationSettings() if settings is None else settings
    if not isinstance(settings, SeparationSettings):
        raise ParameterError(f"settings must be a SeparationSettings, got {type(settings).__name__}")
    if settings.solver == "full":
        settings = settings.replace(solver="mu_batch")
    source = SpectrogramBlocks(path, settings)
    if settings.rank > min(source.n_bins, source.n_frames):
        raise ParameterError(f"rank={settings.rank} is more than the spectrogram supports: at most "
                             f"{min(source.n_bins, source.n_frames)} (min of frequency bins and frames)")
    timings: dict = {}
    t = perf_counter()
    source.scan()
    timings["scan"] = perf_counter() - t
    t = perf_counter()
    W, H, n_iter, losses = factorise_minibatch(source, source.n_frames, source.peak, settings, callback)
    timings["fit"] = perf_counter() - t
    sep = LongSeparation(settings, source, W, H, losses, n_iter, timings)
    timings["total"] = perf_counter() - t_start
    return sep
