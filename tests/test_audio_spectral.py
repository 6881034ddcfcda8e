"""nmfcore.audio.spectral: STFT/ISTFT, spectrograms and soft masks.

Oracles: librosa's STFT (same centring and zero padding) and
``librosa.util.softmask`` (the two-component alpha-Wiener mask); perfect
reconstruction ISTFT(STFT(x)) == x; masks summing to one (invariant).
"""

import librosa
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nmfcore.audio import istft, soft_masks, spectrogram, stft
from nmfcore.audio.spectral import WINDOWS, MaskBank, check_stft_params
from nmfcore.exceptions import ParameterError


def test_stft_matches_librosa(gen):
    y = torch.randn(3000, generator=gen)
    X = stft(y, n_fft=512, hop_length=128, window="hann")
    ref = librosa.stft(y.numpy(), n_fft=512, hop_length=128, window="hann", center=True, pad_mode="constant")
    assert X.shape == ref.shape
    assert np.abs(X.numpy() - ref).max() < 1e-4 * np.abs(ref).max()


@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("n_fft,hop", [(256, 64), (512, 256), (300, 100)])
def test_istft_inverts_stft(gen, window, n_fft, hop):
    y = torch.randn(2, 2501, generator=gen)
    z = istft(stft(y, n_fft=n_fft, hop_length=hop, window=window), n_fft=n_fft, hop_length=hop, window=window,
              length=2501)
    assert z.shape == y.shape
    assert float((z - y).abs().max()) < 1e-5


def test_stft_of_signal_shorter_than_frame_inverts(gen):
    y = torch.randn(100, generator=gen)
    X = stft(y, n_fft=512, hop_length=128)
    assert X.shape == (257, 1)
    assert float((istft(X, n_fft=512, hop_length=128, length=100) - y).abs().max()) < 1e-5


def test_spectrogram_power_and_peak():
    sr = 8000
    y = 0.5 * torch.sin(2 * torch.pi * 1000 * torch.arange(sr) / sr)
    S1 = spectrogram(y, n_fft=256, hop_length=64)
    S2 = spectrogram(y, n_fft=256, hop_length=64, power=2)
    assert torch.allclose(S2, S1 ** 2, rtol=1e-5)
    assert int(S1.mean(1).argmax()) == 1000 * 256 // sr


@pytest.mark.parametrize("n_fft,hop,window,match", [
    (1024, 1024, "hann", "cannot be inverted"), (1024, 2000, "hann", "must not exceed"),
    (0, 1, "hann", "n_fft=0"), (8, 2, "hann", "at least 16"), (256, 64, "kaiser", "window='kaiser'"),
    (256, 0, "hann", "hop_length=0"), (256.0, 64, "hann", "n_fft=256.0")])
def test_bad_stft_params(n_fft, hop, window, match):
    with pytest.raises(ParameterError, match=match):
        check_stft_params(n_fft, hop, window)


def test_rect_window_without_overlap_is_fine():
    assert check_stft_params(256, 256, "rect") == (256, 256, "rect")


@pytest.mark.parametrize("power", [1.0, 2.0, 0.5, 7.0])
def test_two_masks_equal_librosa_softmask(gen, power):
    a = torch.rand(30, 40, generator=gen) * 10
    b = torch.rand(30, 40, generator=gen)
    M = soft_masks(torch.stack([a, b]), power)
    ref = librosa.util.softmask(a.numpy(), b.numpy(), power=power)
    assert np.abs(M[0].numpy() - ref).max() < 1e-5


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 6), st.floats(0.25, 8.0), st.floats(-30, 30), st.integers(0, 2 ** 31 - 1))
def test_masks_sum_to_one(R, power, log_scale, seed):
    g = torch.Generator().manual_seed(seed)
    Y = torch.rand(R, 7, 9, generator=g) ** 3 * 10.0 ** log_scale
    Y[:, 0, 0] = 0  # a bin where every component is silent
    M = soft_masks(Y, power)
    assert bool(torch.isfinite(M).all()) and bool((M >= 0).all())
    assert torch.allclose(M.sum(0), torch.ones(7, 9), atol=1e-5)
    assert torch.allclose(M[:, 0, 0], torch.full((R,), 1.0 / R))


def test_large_power_does_not_overflow():
    Y = torch.tensor([[1e30, 1.0], [1e29, 0.0]])
    M = soft_masks(Y, 8.0)
    assert bool(torch.isfinite(M).all()) and torch.allclose(M.sum(0), torch.ones(2))


def test_mask_bank_group_mask_is_sum_of_masks(gen):
    Y = torch.rand(4, 5, 6, generator=gen)
    bank = MaskBank(lambda r: Y[r], 4, 2.0)
    assert torch.allclose(bank.group_mask([0, 2]), bank.mask(0) + bank.mask(2), atol=1e-6)
    assert torch.equal(bank.group_mask([]), torch.zeros(5, 6))


@pytest.mark.parametrize("power", [0, -1, float("inf"), float("nan"), True])
def test_bad_mask_power(power):
    with pytest.raises(ParameterError, match="mask_power"):
        soft_masks(torch.ones(2, 3), power)


@pytest.mark.parametrize("n_fft, hop, B", [(256, 64, 7), (256, 256, 3), (100, 30, 9), (64, 48, 5), (16, 16, 1),
                                           (2048, 512, 1)])
def test_overlap_add_fold_equals_torch_fold(gen, n_fft, hop, B):
    # oracle: torch.nn.functional.fold (col2im), which OverlapAdd used before its contiguous additions
    from nmfcore.audio.spectral import OverlapAdd, get_window

    ola = OverlapAdd(10 * n_fft, n_fft=n_fft, hop_length=hop, window=get_window("hann", n_fft))
    length = (B - 1) * hop + n_fft

    def fold(frames):  # frames (B, n_fft), one per row
        return torch.nn.functional.fold(frames.t()[None], (1, length), (1, n_fft), stride=(1, hop))[0, 0, 0]

    frames = torch.rand(B, n_fft, generator=gen)
    got = ola._fold(frames)
    assert got.shape == (length,)
    assert torch.allclose(got, fold(frames), atol=1e-6)
    # an expanded (stride-0) input, as the window envelope is
    w2 = torch.rand(n_fft, generator=gen).expand(B, -1)
    assert torch.allclose(ola._fold(w2), fold(w2.contiguous()), atol=1e-6)
