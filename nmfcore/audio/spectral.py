r"""Short-time Fourier transform, spectrograms and soft masks, in torch.

The STFT is centred (frames padded with zeros by ``n_fft // 2`` at both
ends), so :func:`istft` of :func:`stft` returns the signal, and a signal of
``n`` samples has ``1 + n // hop_length`` frames.

Soft masks follow the alpha-Wiener rule of Liutkus and Badeau [1]_: with
``Y_r`` the model's spectrogram of component ``r`` and ``alpha`` the mask
power,

.. math::
    M_r = \frac{Y_r^\alpha}{\sum_k Y_k^\alpha},

computed as in ``librosa.util.softmask`` [2]_ after dividing by the
per-bin maximum, so no power overflows; bins where every component is zero
get ``1/R``. The masks sum to one in every bin, hence the masked mixture
STFTs, and their inverse transforms, sum to the mixture.

References
----------
.. [1] A. Liutkus and R. Badeau, "Generalized Wiener filtering with
   fractional power spectrograms", ICASSP 2015.
.. [2] B. McFee et al., "librosa: Audio and music signal analysis in
   python", SciPy 2015 (``librosa.util.softmask``).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor

from .._validation import check_finite_float, check_positive_int
from ..exceptions import ParameterError

__all__ = ["WINDOWS", "get_window", "check_stft_params", "stft", "istft", "spectrogram", "n_frames",
           "frame_blocks", "stft_frames", "OverlapAdd", "MaskBank", "soft_masks", "log_frequency_matrices"]

#: STFT frames processed at once by the blockwise functions (bounds memory for long recordings; at
#: n_fft=2048 one float32 block is 4 MiB, which also keeps the passes over it in cache, faster and
#: with less peak memory than larger blocks)
BLOCK_FRAMES = 1024

WINDOWS = ("hann", "hamming", "blackman", "bartlett", "rect")


def get_window(window: str, n_fft: int, *, device=None, dtype=torch.float32) -> Tensor:
    """The periodic analysis window ``window`` of length ``n_fft``.

    Examples
    --------
    >>> get_window("hann", 4)
    tensor([0.0000, 0.5000, 1.0000, 0.5000])
    """
    makers = {"hann": torch.hann_window, "hamming": torch.hamming_window,
              "blackman": torch.blackman_window, "bartlett": torch.bartlett_window}
    if window == "rect":
        return torch.ones(n_fft, device=device, dtype=dtype)
    if window not in makers:
        raise ParameterError(f"window={window!r} must be one of {WINDOWS}")
    return makers[window](n_fft, periodic=True, device=device, dtype=dtype)


def check_stft_params(n_fft, hop_length, window) -> tuple[int, int, str]:
    """Validate the STFT parameters; the window must overlap-add (NOLA) at this hop.

    Examples
    --------
    >>> check_stft_params(2048, 512, "hann")
    (2048, 512, 'hann')
    >>> check_stft_params(1024, 1024, "hann")
    Traceback (most recent call last):
    ...
    nmfcore.exceptions.ParameterError: window='hann' with n_fft=1024 and hop_length=1024 cannot be inverted (its squared overlap-add has zeros): use hop_length <= n_fft // 2
    """
    for name, value in (("n_fft", n_fft), ("hop_length", hop_length)):
        check_positive_int(value, name)
    if n_fft < 16:
        raise ParameterError(f"n_fft={n_fft} must be at least 16")
    if hop_length > n_fft:
        raise ParameterError(f"hop_length={hop_length} must not exceed n_fft={n_fft}")
    w2 = get_window(window, n_fft, dtype=torch.float64).square()
    ola = torch.zeros(hop_length, dtype=torch.float64)
    for start in range(0, n_fft, hop_length):
        seg = w2[start:start + hop_length]
        ola[: seg.numel()] += seg
    if float(ola.min()) < 1e-6 * float(ola.max()):
        raise ParameterError(f"window={window!r} with n_fft={n_fft} and hop_length={hop_length} cannot be "
                             "inverted (its squared overlap-add has zeros): use hop_length <= n_fft // 2")
    return int(n_fft), int(hop_length), window


def n_frames(n_samples: int, hop_length: int) -> int:
    """Number of frames of the centred STFT of ``n_samples`` samples.

    Examples
    --------
    >>> n_frames(22050, 512)
    44
    """
    return 1 + n_samples // hop_length


def stft(y: Tensor, *, n_fft: int = 2048, hop_length: int = 512, window: str = "hann") -> Tensor:
    """Complex centred STFT of ``y`` (zero padding at the ends).

    Shape
    -----
    - y: :math:`(..., n)`
    - output: :math:`(..., n_{fft}/2 + 1, 1 + n / hop)`, complex

    Examples
    --------
    >>> X = stft(torch.zeros(2, 4096), n_fft=1024, hop_length=256)
    >>> X.shape, X.dtype
    (torch.Size([2, 513, 17]), torch.complex64)
    """
    win = get_window(window, n_fft, device=y.device, dtype=y.dtype)
    shape = y.shape
    X = torch.stft(y.reshape(-1, shape[-1]), n_fft, hop_length, window=win, center=True, pad_mode="constant",
                   return_complex=True)
    return X.reshape(shape[:-1] + X.shape[-2:])


def istft(X: Tensor, *, n_fft: int = 2048, hop_length: int = 512, window: str = "hann", length: int) -> Tensor:
    """Inverse of :func:`stft`: least-squares overlap-add, cut to ``length`` samples.

    Shape
    -----
    - X: :math:`(..., n_{fft}/2 + 1, frames)`, complex
    - output: :math:`(..., length)`

    Examples
    --------
    >>> y = torch.randn(3000, generator=torch.Generator().manual_seed(0))
    >>> z = istft(stft(y, n_fft=512, hop_length=128), n_fft=512, hop_length=128, length=3000)
    >>> bool((z - y).abs().max() < 1e-5)
    True
    """
    real_dtype = X.real.dtype
    win = get_window(window, n_fft, device=X.device, dtype=real_dtype)
    shape = X.shape
    y = torch.istft(X.reshape((-1,) + shape[-2:]), n_fft, hop_length, window=win, center=True, length=length)
    return y.reshape(shape[:-2] + (length,))


def frame_blocks(n_frames: int, block: int | None = None):
    """``(a, b)`` ranges covering ``range(n_frames)`` in blocks of at most ``block`` frames
    (default :data:`BLOCK_FRAMES`).

    Examples
    --------
    >>> list(frame_blocks(10, 4))
    [(0, 4), (4, 8), (8, 10)]
    """
    block = block or BLOCK_FRAMES
    return [(a, min(n_frames, a + block)) for a in range(0, n_frames, block)]


def stft_frames(y: Tensor, a: int, b: int, *, n_fft: int, hop_length: int, window: Tensor) -> Tensor:
    """Frames ``a:b`` of :func:`stft` of the 1-D signal ``y``, without transforming the rest.

    Frame ``t`` covers samples ``t * hop - n_fft // 2`` up to ``n_fft`` later
    (zeros outside the signal), as in the centred STFT.

    Examples
    --------
    >>> y = torch.randn(5000, generator=torch.Generator().manual_seed(0))
    >>> w = get_window("hann", 256)
    >>> X = stft(y, n_fft=256, hop_length=64)
    >>> bool(torch.allclose(stft_frames(y, 10, 20, n_fft=256, hop_length=64, window=w), X[:, 10:20], atol=1e-4))
    True
    """
    pad = n_fft // 2
    start, stop = a * hop_length - pad, (b - 1) * hop_length - pad + n_fft
    seg = y[max(0, start):max(0, min(y.shape[-1], stop))]
    seg = torch.nn.functional.pad(seg, (max(0, -start), stop - start - seg.shape[-1] - max(0, -start)))
    return torch.stft(seg, n_fft, hop_length, window=window, center=False, return_complex=True)


class OverlapAdd:
    """Inverse STFT assembled block by block of frames (weighted overlap-add, as :func:`torch.istft`).

    Blocks of consecutive frames are added in order: :meth:`block` starts the
    block of frames ``a:b`` and returns its accumulation buffer
    (``shape + (samples,)``, already holding what earlier frames overlap
    into it), :meth:`add` adds the windowed inverse FFT of frames into one
    row of it, and :meth:`finish_block` returns the samples no later frame
    reaches, divided by the summed squared window, with the centring padding
    removed. Only one block and the ``n_fft - hop_length`` samples carried
    to the next are held, so long signals can be written out as they come.
    With ``assemble=True`` the blocks are instead views of one buffer of
    the whole signal, normalised in place, which :meth:`assembled` returns
    (no carrying and no copies, for when the whole signal is wanted).

    Parameters
    ----------
    n_samples : int
        Length of the signal.
    n_fft, hop_length : int, keyword-only
    window : torch.Tensor, keyword-only
        The analysis window (its device and dtype are those of the buffers).
    shape : tuple of int, default (), keyword-only
        Leading shape of the buffers, e.g. ``(groups, channels)``.
    assemble : bool, default False, keyword-only
        Assemble the whole signal in one CPU buffer (see :meth:`assembled`).

    Examples
    --------
    >>> y = torch.randn(2, 3000, generator=torch.Generator().manual_seed(0))
    >>> w = get_window("hann", 256)
    >>> ola, parts = OverlapAdd(3000, n_fft=256, hop_length=64, window=w, shape=(2,)), []
    >>> for a, b in frame_blocks(n_frames(3000, 64), 10):
    ...     buf = ola.block(a, b)
    ...     for c in range(2):
    ...         ola.add(buf[c], stft_frames(y[c], a, b, n_fft=256, hop_length=64, window=w))
    ...     parts.append(ola.finish_block()[1])
    >>> bool((torch.cat(parts, -1) - y).abs().max() < 1e-5)
    True
    """

    def __init__(self, n_samples: int, *, n_fft: int, hop_length: int, window: Tensor, shape: tuple = (),
                 assemble: bool = False):
        self.n, self.n_fft, self.hop, self.window = n_samples, n_fft, hop_length, window
        self.pad = n_fft // 2
        self.n_frames = n_frames(n_samples, hop_length)
        self.padded_length = (self.n_frames - 1) * hop_length + n_fft
        overlap = n_fft - hop_length
        # the whole (padded) signal, long enough for the output where frames end before it (hop > n_fft / 2)
        self._out = torch.zeros(tuple(shape) + (max(self.padded_length, self.pad + n_samples),),
                                dtype=window.dtype) if assemble else None
        self._carry = torch.zeros(tuple(shape) + (overlap,), dtype=window.dtype, device=window.device)
        self._env_carry = torch.zeros(overlap, dtype=window.dtype, device=window.device)
        self._range, self._buf = None, None  # frames (a, b) of the current block and its buffer
        self._next = 0  # first frame of the next block

    def _fold(self, frames: Tensor) -> Tensor:
        # frames (B, n_fft) -> their overlap-add, ((B - 1) * hop + n_fft,). Each frame is cut into
        # k = ceil(n_fft / hop) pieces of hop samples (zero-padded); piece j of frame t lands in row t + j
        # of the output seen as (rows, hop): k contiguous additions, an order of magnitude faster than
        # torch's fold (col2im) (tests pin the result to fold)
        B, n = frames.shape
        hop = self.hop
        k = -(-n // hop)
        if k * hop != n:
            frames = torch.nn.functional.pad(frames, (0, k * hop - n))
        pieces = frames.reshape(B, k, hop)
        out = frames.new_zeros(B + k - 1, hop)
        for j in range(k):
            out[j:j + B] += pieces[:, j]
        return out.reshape(-1)[:(B - 1) * hop + n]

    def block(self, a: int, b: int) -> Tensor:
        """Start the block of frames ``a:b`` (``a`` where the previous block ended); returns its buffer."""
        if a != self._next or not a < b <= self.n_frames:
            raise ValueError(f"frames {a}:{b} do not continue frames 0:{self._next} of {self.n_frames}")
        self._range = (a, b)
        length = (b - a - 1) * self.hop + self.n_fft
        if self._out is not None:  # holds the sums of the earlier frames already
            self._buf = self._out[..., a * self.hop:a * self.hop + length]
        else:
            self._buf = torch.zeros(self._carry.shape[:-1] + (length,), dtype=self._carry.dtype,
                                    device=self._carry.device)
            self._buf[..., :self._carry.shape[-1]] = self._carry
        return self._buf

    def add(self, out: Tensor, X: Tensor):
        """Add the windowed inverse FFT of the block's frames ``X`` (freq, b - a) into ``out`` (a buffer row)."""
        frames = torch.fft.irfft(X.t(), n=self.n_fft, dim=-1).mul_(self.window)  # (b - a, n_fft)
        out += self._fold(frames).to(out.device)

    def finish_block(self) -> tuple[int, Tensor]:
        """End the current block: ``(start, samples)``, the finished samples from ``start`` on.

        The blocks' samples follow each other and together cover the ``n_samples``
        of the signal (zeros where no frame reaches, as :func:`torch.istft`).
        They are a view of the block's buffer, valid until the next block.
        """
        (a, b), buf = self._range, self._buf
        self._range, self._buf, self._next = None, None, b
        w2 = self.window.square().expand(b - a, -1)
        env = self._fold(w2)
        env[:self._env_carry.shape[-1]] += self._env_carry
        last = b == self.n_frames
        done = buf.shape[-1] if last else (b - a) * self.hop  # no later frame reaches these samples
        if not last:
            if self._out is None:
                self._carry = buf[..., done:].clone()
            self._env_carry = env[done:].clone()
        # the samples a * hop + [lo, hi) of the padded signal lie in the output, at start + [0, hi - lo)
        lo = max(0, self.pad - a * self.hop)
        hi = min(done, self.pad + self.n - a * self.hop)
        start = a * self.hop + lo - self.pad
        out = buf[..., lo:hi].div_(env[lo:hi].to(buf.device))  # in place: the carried samples lie after hi
        if last and start + out.shape[-1] < self.n:  # frames end before the signal (hop_length > n_fft / 2)
            out = torch.nn.functional.pad(out, (0, self.n - start - out.shape[-1]))
        return start, out

    def assembled(self) -> Tensor:
        """With ``assemble=True``, after the last block: the whole signal, ``shape + (n_samples,)`` on the CPU."""
        if self._out is None or self._next != self.n_frames:
            raise ValueError("assembled() needs assemble=True and every block finished")
        return self._out[..., self.pad:self.pad + self.n]


def spectrogram(y: Tensor, *, n_fft: int = 2048, hop_length: int = 512, window: str = "hann",
                power: float = 1.0) -> Tensor:
    """``|STFT(y)| ** power``: magnitude (``power=1``) or power (``power=2``) spectrogram.

    Examples
    --------
    >>> sr = 8000
    >>> y = torch.sin(2 * torch.pi * 1000 * torch.arange(sr) / sr)
    >>> S = spectrogram(y, n_fft=256, hop_length=64)
    >>> int(S.mean(-1).argmax()) * sr // 256   # the bin of 1 kHz
    1000
    """
    if y.ndim != 1:
        S = stft(y, n_fft=n_fft, hop_length=hop_length, window=window).abs()
        return S if power == 1 else S.pow_(power)
    # one block of frames at a time: never the whole complex STFT in memory
    win = get_window(window, n_fft, device=y.device, dtype=y.dtype)
    T = n_frames(y.shape[-1], hop_length)
    S = torch.empty((n_fft // 2 + 1, T), device=y.device, dtype=y.dtype)
    for a, b in frame_blocks(T):
        block = stft_frames(y, a, b, n_fft=n_fft, hop_length=hop_length, window=win).abs()
        S[:, a:b] = block if power == 1 else block.pow_(power)
    return S


class MaskBank:
    r"""Alpha-Wiener soft masks of ``n`` components, computed one at a time.

    Holds only two arrays of one component's size (the per-bin maximum and
    the normaliser), so masks for many components of a long recording fit
    in memory; ``component(r)`` is called again for every mask requested.

    Parameters
    ----------
    component : callable
        ``component(r)`` returns the non-negative model spectrogram of
        component ``r`` (any shape, the same for every ``r``).
    n : int
        Number of components.
    power : float, default 2
        The mask exponent :math:`\alpha > 0`.

    Examples
    --------
    >>> Y = torch.tensor([[1.0, 0.0], [3.0, 0.0]])
    >>> bank = MaskBank(lambda r: Y[r], 2, power=1)
    >>> bank.mask(0), bank.mask(1)
    (tensor([0.2500, 0.5000]), tensor([0.7500, 0.5000]))
    """

    def __init__(self, component: Callable[[int], Tensor], n: int, power: float = 2.0):
        power = check_finite_float(power, "mask_power")
        if n < 1:
            raise ParameterError(f"soft masks need at least one component, got {n}")
        self.component, self.n, self.power = component, n, float(power)
        peak = None
        for r in range(n):
            Y = component(r)
            peak = Y.clone() if peak is None else torch.maximum(peak, Y, out=peak)
        self.empty = peak <= 0  # no component has energy here: every mask is 1/n
        self.peak = peak.masked_fill_(self.empty, 1.0)
        norm = torch.zeros_like(peak)
        for r in range(n):
            norm += self._ratio(r)
        self.norm = norm  # >= 1 everywhere: the loudest component contributes 1

    def _ratio(self, r: int) -> Tensor:
        # (Y_r / max_k Y_k) ** alpha, in [0, 1]; 1 in empty bins
        ratio = (self.component(r) / self.peak).masked_fill_(self.empty, 1.0)
        return ratio if self.power == 1 else ratio.pow_(self.power)

    def mask(self, r: int) -> Tensor:
        """The mask of component ``r``."""
        return self._ratio(r).div_(self.norm)

    def group_mask(self, members: Sequence[int]) -> Tensor:
        """Sum of the masks of ``members`` (zeros for an empty group)."""
        total = torch.zeros_like(self.norm)
        for r in members:
            total += self._ratio(r)
        return total.div_(self.norm)


def soft_masks(Y: Tensor, power: float = 2.0) -> Tensor:
    r"""Alpha-Wiener soft masks of a stack of component spectrograms; they sum to one.

    Parameters
    ----------
    Y : torch.Tensor [shape=(R, ...)]
        Non-negative spectrograms of ``R`` components.
    power : float, default 2

    Returns
    -------
    torch.Tensor [shape=(R, ...)]
        :math:`Y_r^\alpha / \sum_k Y_k^\alpha`, and ``1/R`` where all are zero.

    Examples
    --------
    >>> M = soft_masks(torch.tensor([[1.0, 0.0, 2.0], [1.0, 0.0, 0.0]]))
    >>> M
    tensor([[0.5000, 0.5000, 1.0000],
            [0.5000, 0.5000, 0.0000]])
    >>> M.sum(0)
    tensor([1., 1., 1.])
    """
    if not isinstance(Y, Tensor) or Y.ndim < 1:
        raise ParameterError("Y must be a tensor with the components on axis 0")
    bank = MaskBank(lambda r: Y[r], Y.shape[0], power)
    return torch.stack([bank.mask(r) for r in range(Y.shape[0])])


def log_frequency_matrices(n_freq: int, *, bins_per_octave: int = 24, fmin_bin: float = 3.0,
                           dtype=torch.float32, device=None) -> tuple[Tensor, Tensor]:
    r"""A log-frequency axis for a linear STFT axis of ``n_freq`` bins: ``(F, D)``.

    Log bins ``b = 0 .. B-1`` are centred at STFT bin :math:`k_b = k_0\, 2^{b / o}`
    (``k_0 = fmin_bin``, ``o = bins_per_octave``) up to the last STFT bin
    (32 Hz to Nyquist at 22050 Hz with n_fft = 2048).

    ``F`` (B, n_freq) is a bank of triangular filters, each spanning its
    neighbours' centres (at least one STFT bin either side, where the log
    spacing is finer than the STFT's) and summing to one: ``F @ S`` is the
    log-frequency spectrogram of ``S`` (n_freq, frames). ``D`` (n_freq, B)
    interpolates linearly along log-frequency back to the STFT bins (bins
    below ``k_0`` take the lowest log bin): its rows sum to one, so ``D``
    keeps masks that sum to one summing to one.

    Examples
    --------
    >>> F, D = log_frequency_matrices(1025)
    >>> F.shape, D.shape
    (torch.Size([202, 1025]), torch.Size([1025, 202]))
    >>> bool(torch.allclose(F.sum(1), torch.ones(202))), bool(torch.allclose(D.sum(1), torch.ones(1025)))
    (True, True)
    """
    n_freq = check_positive_int(n_freq, "n_freq")
    bins_per_octave = check_positive_int(bins_per_octave, "bins_per_octave")
    fmin_bin = check_finite_float(fmin_bin, "fmin_bin")
    if not 0 < fmin_bin < n_freq - 1:
        raise ParameterError(f"fmin_bin={fmin_bin} must lie between 0 and the last STFT bin {n_freq - 1}")
    B = int(math.floor(bins_per_octave * math.log2((n_freq - 1) / fmin_bin))) + 1
    if B < 2:
        raise ParameterError(f"n_freq={n_freq} gives fewer than 2 log-frequency bins from bin {fmin_bin}")
    k = torch.arange(n_freq, dtype=torch.float64)
    centres = fmin_bin * 2.0 ** (torch.arange(B, dtype=torch.float64) / bins_per_octave)
    ratio = 2.0 ** (1.0 / bins_per_octave)
    lo = torch.minimum(centres / ratio, centres - 1)
    hi = torch.maximum(centres * ratio, centres + 1)
    up = (k[None] - lo[:, None]) / (centres - lo)[:, None]
    down = (hi[:, None] - k[None]) / (hi - centres)[:, None]
    F = torch.minimum(up, down).clamp_min(0.0)
    F = F / F.sum(1, keepdim=True)
    pos = (torch.log2(k.clamp_min(1e-9) / fmin_bin) * bins_per_octave).clamp(0, B - 1)
    i0 = pos.floor().long().clamp(max=B - 2)
    w1 = pos - i0
    D = torch.zeros(n_freq, B, dtype=torch.float64)
    rows = torch.arange(n_freq)
    D[rows, i0] = 1 - w1
    D[rows, i0 + 1] += w1
    return F.to(dtype=dtype, device=device), D.to(dtype=dtype, device=device)

