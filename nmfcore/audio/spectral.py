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

import numbers
from typing import Callable, Sequence

import torch
from torch import Tensor

from ..exceptions import ParameterError

__all__ = ["WINDOWS", "get_window", "check_stft_params", "stft", "istft", "spectrogram", "n_frames",
           "frame_blocks", "stft_frames", "OverlapAdd", "MaskBank", "soft_masks"]

#: STFT frames processed at once by the blockwise functions (bounds memory for long recordings)
BLOCK_FRAMES = 4096

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
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ParameterError(f"{name}={value!r} must be a positive integer")
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
    """Inverse STFT assembled block by block (weighted overlap-add, as :func:`torch.istft`).

    ``add(out, X, a)`` adds the windowed inverse FFT of the frames ``X``
    (freq, frames) starting at frame ``a`` into ``out`` (a buffer of
    :attr:`padded_length` samples); :meth:`finish` divides by the summed
    squared window and removes the centring padding. The window envelope is
    accumulated by :meth:`add_envelope` once per block.
    """

    def __init__(self, n_samples: int, *, n_fft: int, hop_length: int, window: Tensor):
        self.n, self.n_fft, self.hop, self.window = n_samples, n_fft, hop_length, window
        self.pad = n_fft // 2
        self.padded_length = (n_frames(n_samples, hop_length) - 1) * hop_length + n_fft
        self.envelope = torch.zeros(self.padded_length, dtype=window.dtype)

    def _fold(self, frames: Tensor) -> Tensor:
        # frames (n_fft, B) -> their overlap-add, ((B - 1) * hop + n_fft,)
        B = frames.shape[1]
        length = (B - 1) * self.hop + self.n_fft
        return torch.nn.functional.fold(frames[None], (1, length), (1, self.n_fft), stride=(1, self.hop))[0, 0, 0]

    def add_envelope(self, a: int, b: int):
        w2 = self.window.square()[:, None].expand(-1, b - a)
        local = self._fold(w2).cpu()
        self.envelope[a * self.hop:a * self.hop + local.shape[0]] += local

    def add(self, out: Tensor, X: Tensor, a: int):
        frames = torch.fft.irfft(X, n=self.n_fft, dim=0) * self.window[:, None]
        local = self._fold(frames).to(out.device)
        out[a * self.hop:a * self.hop + local.shape[0]] += local

    def finish(self, out: Tensor) -> Tensor:
        """``out`` (..., padded_length) normalised in place; returns the (..., n_samples) view."""
        env = self.envelope[self.pad:self.pad + self.n].to(out.device)
        view = out[..., self.pad:self.pad + self.n]
        view /= env
        return view


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
        if isinstance(power, bool) or not isinstance(power, numbers.Real) or not 0 < power < float("inf"):
            raise ParameterError(f"mask_power={power!r} must be a finite positive number")
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
