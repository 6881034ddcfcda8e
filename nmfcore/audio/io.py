"""Reading, resampling and writing audio, and safe output paths.

Waveforms are float32 tensors shaped ``(channels, samples)`` with values in
[-1, 1]. Files are decoded with :mod:`soundfile` (WAV, FLAC, OGG, MP3 and
every other format of libsndfile); what it cannot read is retried with
:func:`librosa.load` (audioread backends such as ffmpeg, where installed).

Every problem with the audio itself (unreadable, empty, too long, NaN) is an
:class:`AudioError`, a :class:`~nmfcore.exceptions.ParameterError` whose
message names the source and the value.

References
----------
.. [1] J. O. Smith, "Digital Audio Resampling Home Page", CCRMA,
   https://ccrma.stanford.edu/~jos/resample/ (windowed-sinc interpolation,
   as implemented by ``torchaudio.functional.resample``).
"""

from __future__ import annotations

import io
import math
import os
import re
import tempfile
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .._validation import is_int, is_real
from ..exceptions import ParameterError

__all__ = [
    "AudioError",
    "OutputExistsError",
    "load_audio",
    "write_audio",
    "AudioWriter",
    "audio_bytes",
    "resample",
    "as_waveform",
    "check_sample_rate",
    "safe_filename",
    "output_path",
    "WRITE_FORMATS",
    "MIN_SAMPLE_RATE",
    "MAX_SAMPLE_RATE",
]

AudioSource = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO]

#: Output formats by file suffix (libsndfile format names).
WRITE_FORMATS = {".wav": "WAV", ".flac": "FLAC"}
MIN_SAMPLE_RATE = 1000
MAX_SAMPLE_RATE = 768000
# largest windowed-sinc kernel (entries) built for resampling; beyond it
# (rates with a tiny common divisor, e.g. 44100 -> 44099) soxr is used instead
_MAX_SINC_KERNEL = 4_000_000
#: samples converted and written at once by :class:`AudioWriter` (bounds the copies made for writing)
WRITE_BLOCK = 1 << 18


class AudioError(ParameterError):
    """Audio that cannot be used: unreadable, empty, too short or long, non-finite.

    A :class:`~nmfcore.exceptions.ParameterError` (hence a ``ValueError``);
    the message names the file or argument and the offending value.
    """


class OutputExistsError(AudioError, FileExistsError):
    """An output file exists already and ``overwrite`` was not given."""


def check_sample_rate(sr, name: str = "sr") -> int:
    """Return ``sr`` as an int if it is a sample rate nmfcore accepts (1 kHz to 768 kHz).

    Examples
    --------
    >>> check_sample_rate(22050)
    22050
    >>> check_sample_rate(0)
    Traceback (most recent call last):
    ...
    nmfcore.audio.io.AudioError: sr=0 must be an integer sample rate in [1000, 768000] Hz
    """
    ok = is_int(sr)
    if not ok and is_real(sr) and float(sr).is_integer():
        sr, ok = int(sr), True
    if not ok or not MIN_SAMPLE_RATE <= sr <= MAX_SAMPLE_RATE:
        raise AudioError(f"{name}={sr!r} must be an integer sample rate in [{MIN_SAMPLE_RATE}, {MAX_SAMPLE_RATE}] Hz")
    return int(sr)


def as_waveform(y, name: str = "y") -> Tensor:
    """``y`` as a float32 tensor shaped ``(channels, samples)``, checked for finite values.

    Accepts a tensor or array of shape ``(samples,)`` or ``(channels, samples)``.

    Raises
    ------
    AudioError
        Wrong number of dimensions, no samples, or NaN/infinite samples.

    Examples
    --------
    >>> as_waveform(torch.zeros(5)).shape
    torch.Size([1, 5])
    """
    if isinstance(y, np.ndarray):
        y = torch.from_numpy(np.ascontiguousarray(y))
    if not isinstance(y, Tensor):
        raise AudioError(f"{name} must be a torch.Tensor or numpy array, got {type(y).__name__}")
    if not y.is_floating_point():
        raise AudioError(f"{name} must hold real floating-point samples in [-1, 1], got dtype={y.dtype}")
    if y.ndim == 1:
        y = y.unsqueeze(0)
    if y.ndim != 2:
        raise AudioError(f"{name} must have shape (samples,) or (channels, samples), got shape {tuple(y.shape)}")
    if y.shape[0] == 0 or y.shape[1] == 0:
        raise AudioError(f"{name} contains no audio samples (shape {tuple(y.shape)})")
    y = y.to(torch.float32)
    _check_finite(y, name)
    return y


def _check_finite(y: Tensor, name: str):
    finite = torch.isfinite(y)
    if not bool(finite.all()):
        ch, i = (int(v) for v in (~finite).nonzero()[0])
        raise AudioError(f"{name} contains NaN or infinite samples (first: {float(y[ch, i])} at channel {ch}, "
                         f"sample {i})")


def _describe(source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return f"'{os.fspath(source)}'"
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"the given bytes ({len(source)} bytes)"
    return f"the file object {getattr(source, 'name', type(source).__name__)!r}"


def _read_soundfile(fileobj, name: str, max_duration):
    import soundfile as sf

    with sf.SoundFile(fileobj) as snd:
        if max_duration is not None and snd.frames > 0 and snd.frames / snd.samplerate > max_duration:
            raise AudioError(f"{name} is {snd.frames / snd.samplerate:.1f} s long, more than "
                             f"max_duration={max_duration:g} s")
        if snd.frames <= 0 or not snd.seekable():
            return snd.read(dtype="float32", always_2d=True).T, int(snd.samplerate)
        # read in blocks straight into the (channels, samples) array: no second full-size copy
        data = np.empty((snd.channels, snd.frames), dtype=np.float32)
        done = 0
        for block in snd.blocks(blocksize=1 << 18, dtype="float32", always_2d=True):
            data[:, done:done + block.shape[0]] = block.T
            done += block.shape[0]
        return data[:, :done], int(snd.samplerate)


def _read_librosa(source, name: str):
    import warnings

    import librosa

    with warnings.catch_warnings():  # its own "PySoundFile failed" and deprecation notes
        warnings.simplefilter("ignore")
        return _librosa_load(librosa, source)


def _librosa_load(librosa, source):
    if isinstance(source, (str, os.PathLike)):
        y, sr = librosa.load(source, sr=None, mono=False, dtype=np.float32)
    else:
        data = bytes(source) if isinstance(source, (bytes, bytearray, memoryview)) else source.read()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "audio"
            path.write_bytes(data)
            y, sr = librosa.load(path, sr=None, mono=False, dtype=np.float32)
    return np.atleast_2d(y), int(sr)


def load_audio(source: AudioSource, *, sr: int | None = None, mono: bool = False,
               max_duration: float | None = None) -> tuple[Tensor, int]:
    """Decode an audio file to a float32 tensor ``(channels, samples)`` and its sample rate.

    Parameters
    ----------
    source : str, os.PathLike, bytes or binary file object
        WAV, FLAC, OGG, MP3 or any other format libsndfile reads; other
        formats are tried with :func:`librosa.load`.
    sr : int, optional, keyword-only
        Resample to this rate (:func:`resample`); ``None`` keeps the file's rate.
    mono : bool, default False, keyword-only
        Average the channels into one.
    max_duration : float, optional, keyword-only
        Refuse files longer than this many seconds (checked from the header
        before decoding where the format allows).

    Returns
    -------
    y : torch.Tensor [shape=(channels, samples)], float32
    sr : int

    Raises
    ------
    AudioError
        The source is missing, unreadable, has no samples, contains NaN or
        infinite samples, is longer than ``max_duration``, or ``sr`` is invalid.

    Examples
    --------
    >>> import io, numpy as np, soundfile as sf
    >>> buf = io.BytesIO()
    >>> sf.write(buf, np.zeros((800, 2)), 8000, format="WAV")
    >>> y, rate = load_audio(buf.getvalue(), sr=16000, mono=True)
    >>> tuple(y.shape), rate
    ((1, 1600), 16000)
    """
    if sr is not None:
        sr = check_sample_rate(sr)
    if max_duration is not None:
        if not is_real(max_duration) or not max_duration > 0:
            raise AudioError(f"max_duration={max_duration!r} must be a positive number of seconds")
    name = _describe(source)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise AudioError(f"cannot read audio from {name}: no such file")
        if not path.is_file():
            raise AudioError(f"cannot read audio from {name}: not a file")
        if path.stat().st_size == 0:
            raise AudioError(f"cannot read audio from {name}: the file is empty (0 bytes)")
        fileobj = os.fspath(path)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise AudioError("cannot read audio from the given bytes: there are none (0 bytes)")
        fileobj = io.BytesIO(bytes(source))
    elif hasattr(source, "read"):
        fileobj = source
    else:
        raise AudioError(f"source must be a path, bytes or a binary file object, got {type(source).__name__}")
    start = fileobj.tell() if hasattr(fileobj, "tell") else None
    try:
        data, file_sr = _read_soundfile(fileobj, name, max_duration)
    except AudioError:
        raise
    except Exception as first:  # libsndfile cannot decode it: try librosa/audioread
        try:
            if start is not None:
                fileobj.seek(start)
            data, file_sr = _read_librosa(fileobj if not isinstance(fileobj, str) else source, name)
        except Exception:
            msg = str(first).splitlines()[0] if str(first) else type(first).__name__
            raise AudioError(f"cannot read audio from {name}: {msg}") from first
        if max_duration is not None and data.shape[-1] / file_sr > max_duration:
            raise AudioError(f"{name} is {data.shape[-1] / file_sr:.1f} s long, more than "
                             f"max_duration={max_duration:g} s")
    if data.shape[-1] == 0:
        raise AudioError(f"{name} contains no audio samples (zero length)")
    try:
        file_sr = check_sample_rate(file_sr, "the file's sample rate")
    except AudioError as err:
        raise AudioError(f"{name}: {err}") from None
    y = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))
    _check_finite(y, name)
    if mono and y.shape[0] > 1:
        y = y.mean(0, keepdim=True)
    if sr is not None and sr != file_sr:
        y = resample(y, file_sr, sr)
        file_sr = sr
    return y, file_sr


def _sinc_kernel(orig: int, new: int, width_zeros: int, rolloff: float, dtype, device):
    # torchaudio's sinc_interp_hann: one kernel per output phase, cut-off at
    # rolloff * min(orig, new) / 2, Hann-windowed over width_zeros zero crossings
    base = min(orig, new) * rolloff
    width = math.ceil(width_zeros * orig / base)
    idx = torch.arange(-width, width + orig, dtype=torch.float64, device=device)[None, None] / orig
    t = torch.arange(0, -new, -1, dtype=torch.float64, device=device)[:, None, None] / new + idx
    t = (t * base).clamp_(-width_zeros, width_zeros)
    window = torch.cos(t * math.pi / width_zeros / 2) ** 2
    t = t * math.pi
    kernel = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / torch.where(t == 0, torch.ones_like(t), t))
    kernel = kernel * window * (base / orig)
    return kernel.to(dtype), width


def resample(y: Tensor, orig_sr: int, target_sr: int, *, width_zeros: int = 16, rolloff: float = 0.945) -> Tensor:
    """Band-limited resampling of a waveform by windowed-sinc interpolation ([1]_).

    Runs in torch on ``y``'s device: the rate ratio is reduced by its greatest
    common divisor and one Hann-windowed sinc kernel per output phase is
    applied with a strided convolution (the method of
    ``torchaudio.functional.resample``). Ratios that would need an
    impractically large kernel (coprime rates) fall back to soxr on the CPU.

    Parameters
    ----------
    y : torch.Tensor [shape=(..., samples)]
    orig_sr, target_sr : int
    width_zeros : int, default 16, keyword-only
        Zero crossings of the sinc on each side (sharper filter when larger).
    rolloff : float, default 0.945, keyword-only
        Cut-off as a fraction of the lower Nyquist frequency.

    Returns
    -------
    torch.Tensor [shape=(..., ceil(samples * target_sr / orig_sr))]

    Examples
    --------
    >>> t = torch.arange(8000) / 8000
    >>> y = torch.sin(2 * torch.pi * 440 * t)[None]
    >>> z = resample(y, 8000, 22050)
    >>> z.shape
    torch.Size([1, 22050])
    >>> ref = torch.sin(2 * torch.pi * 440 * torch.arange(22050) / 22050)
    >>> bool((z[0, 500:-500] - ref[500:-500]).abs().max() < 1e-3)
    True
    """
    orig_sr = check_sample_rate(orig_sr, "orig_sr")
    target_sr = check_sample_rate(target_sr, "target_sr")
    if orig_sr == target_sr:
        return y
    shape = y.shape
    n = shape[-1]
    out_len = math.ceil(target_sr * n / orig_sr)
    g = math.gcd(orig_sr, target_sr)
    orig, new = orig_sr // g, target_sr // g
    width = math.ceil(width_zeros * orig / (min(orig, new) * rolloff))
    if new * (2 * width + orig) > _MAX_SINC_KERNEL:
        import soxr

        flat = y.reshape(-1, n).detach().cpu().numpy().astype(np.float32).T
        out = soxr.resample(flat, orig_sr, target_sr, quality="HQ")
        out = torch.from_numpy(np.ascontiguousarray(out.T)).to(y.device, y.dtype)
        out = F.pad(out, (0, max(0, out_len - out.shape[-1])))[..., :out_len]
        return out.reshape(shape[:-1] + (out_len,))
    kernel, width = _sinc_kernel(orig, new, width_zeros, rolloff, y.dtype, y.device)
    x = F.pad(y.reshape(-1, 1, n), (width, width + orig))
    out = F.conv1d(x, kernel, stride=orig)  # (batch, new, n / orig)
    out = out.transpose(1, 2).reshape(x.shape[0], -1)[:, :out_len]
    return out.reshape(shape[:-1] + (out_len,))


def _prepare_for_writing(y, sr) -> tuple[Tensor, int]:
    return as_waveform(y.detach().cpu() if isinstance(y, Tensor) else y, "y"), check_sample_rate(sr)


def _write_blocks(snd, y: Tensor):
    # clipped and transposed one block at a time: no full-size copy of y
    for start in range(0, y.shape[-1], WRITE_BLOCK):
        snd.write(y[:, start:start + WRITE_BLOCK].clamp(-1.0, 1.0).numpy().T)


def _format_for(path: Path) -> str:
    fmt = WRITE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise AudioError(f"cannot write '{path}': the suffix {path.suffix!r} is not one of "
                         f"{sorted(WRITE_FORMATS)}")
    return fmt


class AudioWriter:
    """A ``.wav`` or ``.flac`` file written piece by piece: :func:`write_audio` for signals that come in blocks.

    A context manager; :meth:`write` appends samples. The file is created
    when the writer is made (atomically, so an existing file is never
    clobbered without ``overwrite``) and removed again if the ``with``
    block raises, so no truncated file is left behind.

    Parameters
    ----------
    path : str or os.PathLike
        Destination; its folder must exist.
    sr : int
    channels : int
    overwrite : bool, default False, keyword-only
    subtype : str, default 'PCM_16', keyword-only
        As for :func:`write_audio`.

    Raises
    ------
    OutputExistsError, AudioError
        As :func:`write_audio`.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "two_parts.wav"
    >>> with AudioWriter(out, 8000, 2) as w:
    ...     w.write(torch.zeros(2, 100))
    ...     w.write(torch.full((2, 50), 0.5))
    >>> y, sr = load_audio(out)
    >>> tuple(y.shape), float(y[0, -1])
    ((2, 150), 0.5)
    """

    def __init__(self, path, sr: int, channels: int, *, overwrite: bool = False, subtype: str = "PCM_16"):
        import soundfile as sf

        self.path = path = Path(path)
        fmt = _format_for(path)
        sr = check_sample_rate(sr)
        if not path.parent.is_dir():
            raise AudioError(f"cannot write '{path}': the folder '{path.parent}' does not exist")
        if path.is_dir():
            raise AudioError(f"cannot write '{path}': it is a folder")
        try:
            # 'x' creates the file atomically, so a file appearing meanwhile is not clobbered
            self._fh = open(path, "wb" if overwrite else "xb")
        except FileExistsError:
            raise OutputExistsError(f"'{path}' exists already: pass overwrite=True to replace it") from None
        self.channels, self._what = int(channels), f"{fmt} {subtype}"
        try:
            self._snd = sf.SoundFile(self._fh, "w", sr, self.channels, subtype=subtype, format=fmt)
        except (sf.LibsndfileError, ValueError, TypeError) as err:
            self._discard()
            raise AudioError(f"cannot write '{path}' as {self._what}: {err}") from None

    def write(self, y):
        """Append ``y`` (channels, samples), clipped to [-1, 1]; non-finite samples are an AudioError."""
        self._append(as_waveform(y.detach().cpu() if isinstance(y, Tensor) else y, "y"))

    def _append(self, y: Tensor):
        # y already checked by as_waveform (a CPU tensor of finite samples)
        import soundfile as sf

        if y.shape[0] != self.channels:
            raise AudioError(f"cannot write {y.shape[0]} channels to '{self.path}', opened for {self.channels}")
        try:
            _write_blocks(self._snd, y)
        except (sf.LibsndfileError, ValueError, TypeError) as err:
            raise AudioError(f"cannot write '{self.path}' as {self._what}: {err}") from None

    def close(self):
        """Finish the file."""
        if self._snd is not None:
            self._snd.close()
            self._fh.close()
            self._snd = None

    def _discard(self):
        self._snd = None
        self._fh.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> "AudioWriter":
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
            return
        if self._snd is not None:
            try:
                self._snd.close()
            except Exception:  # noqa: BLE001 (the original error is the one to report)
                pass
        self._discard()


def write_audio(path, y, sr: int, *, overwrite: bool = False, subtype: str = "PCM_16") -> Path:
    """Write a waveform to a ``.wav`` or ``.flac`` file (format chosen by the suffix).

    Samples are clipped to [-1, 1] and stored as 16-bit PCM by default.
    Long signals are written in blocks (:class:`AudioWriter`), without a
    full-size copy.

    Parameters
    ----------
    path : str or os.PathLike
        Destination; its folder must exist.
    y : torch.Tensor or numpy.ndarray [shape=(channels, samples) or (samples,)]
    sr : int
    overwrite : bool, default False, keyword-only
        Replace an existing file; otherwise an existing file is an error.
    subtype : str, default 'PCM_16', keyword-only
        libsndfile subtype, e.g. ``'PCM_24'`` or (WAV only) ``'FLOAT'``.

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    OutputExistsError
        The file exists and ``overwrite`` is False.
    AudioError
        Unknown suffix, missing folder, bad sample rate or non-finite samples.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "tone.wav"
    >>> write_audio(out, torch.zeros(2, 100), 8000).name
    'tone.wav'
    >>> write_audio(out, torch.zeros(2, 100), 8000)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    nmfcore.audio.io.OutputExistsError: ... exists already: pass overwrite=True to replace it
    """
    path = Path(path)
    _format_for(path)
    y, sr = _prepare_for_writing(y, sr)
    with AudioWriter(path, sr, y.shape[0], overwrite=overwrite, subtype=subtype) as writer:
        writer._append(y)  # checked above, before the file is opened
    return path


def audio_bytes(y, sr: int, *, format: str = "wav") -> bytes:
    """Encode a waveform in memory as WAV or FLAC (16-bit PCM), e.g. for a player or a download.

    Examples
    --------
    >>> data = audio_bytes(torch.zeros(1, 100), 8000)
    >>> data[:4], data[8:12]
    (b'RIFF', b'WAVE')
    """
    import soundfile as sf

    fmt = WRITE_FORMATS.get("." + str(format).lower().lstrip("."))
    if fmt is None:
        raise AudioError(f"format={format!r} must be one of {[s[1:] for s in WRITE_FORMATS]}")
    y, sr = _prepare_for_writing(y, sr)
    buf = io.BytesIO()
    with sf.SoundFile(buf, "w", sr, y.shape[0], subtype="PCM_16", format=fmt) as snd:
        _write_blocks(snd, y)
    return buf.getvalue()


_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def safe_filename(name: str, default: str = "audio") -> str:
    """A file name made of letters, digits and ``._+-`` only, never starting with a dot.

    Separators, ``..`` and other characters are replaced, so the result
    always names a file inside the folder it is joined to.

    Examples
    --------
    >>> safe_filename("../../etc/passwd")
    'etc_passwd'
    >>> safe_filename("My Song (live).wav")
    'My_Song_live_.wav'
    >>> safe_filename("...")
    'audio'
    """
    text = _UNSAFE.sub("_", str(name)).strip("._")
    text = re.sub(r"_+", "_", text).lstrip(".")
    return text[:120] or default


def output_path(root, *parts: str) -> Path:
    """``root / part / ...`` after checking that it stays inside ``root``.

    Each part must be a plain name (use :func:`safe_filename` on user text).

    Raises
    ------
    AudioError
        A part is empty, absolute, contains a separator or ``..``, or the
        resolved path (symbolic links followed) leaves ``root``.

    Examples
    --------
    >>> output_path("/tmp/out", "song", "drums.wav").as_posix()
    '/tmp/out/song/drums.wav'
    >>> output_path("/tmp/out", "..", "x.wav")
    Traceback (most recent call last):
    ...
    nmfcore.audio.io.AudioError: output name '..' must be a plain file name (no separators, no '..')
    """
    root_path = Path(root)
    for part in parts:
        part = str(part)
        if (not part or part in (".", "..") or "/" in part or "\\" in part or "\0" in part
                or os.path.isabs(part)):
            raise AudioError(f"output name {part!r} must be a plain file name (no separators, no '..')")
    path = root_path.joinpath(*parts)
    resolved_root = root_path.resolve()
    if not path.resolve().is_relative_to(resolved_root):
        raise AudioError(f"output path '{path}' leaves the output folder '{root_path}'")
    return path
