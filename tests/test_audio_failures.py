"""Ill-formed and extreme inputs: each one works or raises AudioError/ParameterError with a clear message.

Covers unreadable, empty, zero-length, all-silent, NaN-containing, very
short, very long, 8 kHz to 192 kHz, mono to 8 channels, odd dtypes and
shapes, extreme levels. Silence must give silent stems, never NaN.
"""

import io

import numpy as np
import pytest
import soundfile as sf
import torch
from _audio_signals import SR, two_sources

from nmfcore.audio import (AudioError, SeparationSettings, auto_group, component_order, learn_dictionary,
                           load_audio, separate, separate_supervised, write_audio)
from nmfcore.exceptions import NMFCoreError, ParameterError

SMALL = dict(n_fft=256, hop_length=64, n_iter=30)


def wav_bytes(data: np.ndarray, sr: int = SR, subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, data, sr, format="WAV", subtype=subtype)
    return buf.getvalue()


def test_audio_error_is_a_parameter_error():
    assert issubclass(AudioError, ParameterError) and issubclass(AudioError, NMFCoreError)
    assert issubclass(AudioError, ValueError)


# ----------------------------------------------------------------- unreadable
@pytest.mark.parametrize("content", [b"not audio at all" * 10, b"RIFF\x00\x00\x00\x00WAVEfmt ", bytes(1000)])
def test_unreadable_bytes_and_files(tmp_path, content):
    with pytest.raises(AudioError, match="cannot read audio from the given bytes"):
        load_audio(content)
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(AudioError, match="cannot read audio from '.*bad.wav'"):
        load_audio(path)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(AudioError, match="no such file"):
        load_audio(tmp_path / "missing.wav")
    with pytest.raises(AudioError, match="not a file"):
        load_audio(tmp_path)


def test_wrong_source_type():
    with pytest.raises(AudioError, match="source must be a path, bytes or a binary file object, got int"):
        load_audio(42)


# ---------------------------------------------------------- empty, zero-length
def test_empty_file_and_bytes(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(AudioError, match=r"the file is empty \(0 bytes\)"):
        load_audio(path)
    with pytest.raises(AudioError, match=r"0 bytes"):
        load_audio(b"")


def test_zero_length_wav():
    with pytest.raises(AudioError, match="contains no audio samples"):
        load_audio(wav_bytes(np.zeros((0, 2))))


@pytest.mark.parametrize("y", [torch.zeros(0), torch.zeros(2, 0), torch.zeros(0, 100)])
def test_zero_length_tensor(y):
    with pytest.raises(AudioError, match="no audio samples"):
        separate(y, SR, SeparationSettings(**SMALL))


# ------------------------------------------------------------------ all-silent
@pytest.mark.parametrize("model,kernel,beta", [("NMF", 1, 1.0), ("NMF", 1, 0.0), ("NMFD", 3, 1.0),
                                               ("NMF2D", (3, 2), 2.0)])
def test_silence_gives_silent_stems(model, kernel, beta):
    y = torch.zeros(2, SR)
    sep = separate(y, SR, SeparationSettings(model=model, kernel_size=kernel, beta=beta, rank=3, **SMALL))
    assert torch.equal(sep.components, torch.zeros(3, 2, SR))
    assert np.isfinite(sep.W).all() and np.isfinite(sep.H).all() and np.isfinite(sep.masks()).all()
    assert torch.equal(sep.sources(auto_group(sep, 2)), torch.zeros(2, 2, SR))
    assert component_order(sep) == [0, 1, 2]


def test_silent_file_round_trip(tmp_path):
    y, sr = load_audio(wav_bytes(np.zeros((4000, 1))))
    sep = separate(y, sr, SeparationSettings(rank=2, **SMALL))
    out = write_audio(tmp_path / "s.wav", sep.components[0], sr)
    assert torch.equal(load_audio(out)[0], torch.zeros(1, 4000))


def test_silent_mixture_in_supervised_separation():
    s = SeparationSettings(rank=2, **SMALL)
    d = learn_dictionary(two_sources(seconds=0.5)[1][0], SR, s)
    sep, groups = separate_supervised(torch.zeros(SR), SR, [d], s, n_free=1)
    assert torch.equal(sep.components, torch.zeros(3, 1, SR))
    silent_dict = learn_dictionary(torch.zeros(SR), SR, s)
    assert torch.equal(silent_dict, torch.zeros(129, 2))


def test_almost_silent_and_very_loud_inputs_stay_finite():
    mix, _ = two_sources(seconds=0.5)
    for scale in (1e-30, 1e-8, 1e6):
        sep = separate(mix * scale, SR, SeparationSettings(rank=2, **SMALL))
        assert bool(torch.isfinite(sep.components).all())
        assert float((sep.components.sum(0) - sep.mixture).abs().max()) <= 1e-4 * float(sep.mixture.abs().max())


# ---------------------------------------------------------------- NaN and inf
def test_nan_in_float_wav():
    data = np.zeros((1000, 2), dtype=np.float32)
    data[123, 1] = np.nan
    with pytest.raises(AudioError, match="NaN or infinite samples .*channel 1, sample 123"):
        load_audio(wav_bytes(data, subtype="FLOAT"))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_tensor(bad):
    y = torch.zeros(2, SR)
    y[0, 10] = bad
    with pytest.raises(AudioError, match="NaN or infinite"):
        separate(y, SR, SeparationSettings(**SMALL))
    with pytest.raises(AudioError, match="NaN or infinite"):
        write_audio("never.wav", y, SR)


# ------------------------------------------------------------ very short/long
def test_shorter_than_one_fft_frame():
    s = SeparationSettings(rank=2, **SMALL)
    with pytest.raises(AudioError, match=r"shorter than one FFT frame \(n_fft=256\)"):
        separate(torch.ones(255) * 0.1, SR, s)
    sep = separate(torch.ones(256) * 0.1, SR, s)  # exactly one frame's worth works
    assert float((sep.components.sum(0) - sep.mixture).abs().max()) < 1e-5


def test_too_long_for_max_duration(tmp_path):
    path = tmp_path / "long.wav"
    sf.write(path, np.zeros((8000 * 30, 1)), 8000)  # 30 s
    with pytest.raises(AudioError, match=r"30.0 s long, more than max_duration=10 s"):
        load_audio(path, max_duration=10)
    assert load_audio(path, max_duration=60)[0].shape == (1, 240000)
    with pytest.raises(AudioError, match="max_duration=0"):
        load_audio(path, max_duration=0)


def test_long_input_renders_sources_without_keeping_components():
    # 60 s at 8 kHz: the lazy path renders groups directly (the memory figure is in bench/)
    y = torch.randn(1, 60 * SR, generator=torch.Generator().manual_seed(0)) * 0.1
    sep = separate(y, SR, SeparationSettings(rank=2, n_fft=512, hop_length=256, n_iter=5), keep_components=False)
    S = sep.sources([[0], [1]])
    assert sep._components is None and S.shape == (2, 1, 60 * SR)
    assert float((S.sum(0) - y).abs().max()) < 1e-4


# --------------------------------------------------------------- sample rates
@pytest.mark.parametrize("sr", [8000, 11025, 16000, 44100, 48000, 96000, 192000])
def test_sample_rates_8k_to_192k(sr):
    y, rate = load_audio(wav_bytes(np.sin(np.arange(sr // 4) * 2 * np.pi * 440 / sr)[:, None] * 0.5, sr))
    assert rate == sr
    sep = separate(y, sr, SeparationSettings(rank=2, n_fft=1024, hop_length=256, n_iter=20))
    assert float((sep.components.sum(0) - y).abs().max()) < 1e-4
    z, r = load_audio(wav_bytes(y[0].numpy()[:, None], sr), sr=22050)
    assert r == 22050 and abs(z.shape[1] - 22050 // 4) <= 1


@pytest.mark.parametrize("sr", [0, 500, 10 ** 6, 22050.5, "22050"])
def test_unusable_sample_rates(sr):
    with pytest.raises(AudioError, match="sample rate"):
        separate(torch.zeros(4000), sr, SeparationSettings(**SMALL))


def test_file_with_unusable_rate():
    with pytest.raises(AudioError, match="sample rate"):
        load_audio(wav_bytes(np.zeros((100, 1)), sr=500))


# ------------------------------------------------------------------- channels
@pytest.mark.parametrize("channels", [1, 2, 3, 6, 8])
def test_mono_to_eight_channels(channels):
    g = torch.Generator().manual_seed(channels)
    mix, _ = two_sources(seconds=0.5)
    y = torch.cat([mix * (c + 1) / channels for c in range(channels)]) + 0.01 * torch.randn(channels, 4000,
                                                                                              generator=g)
    y2, sr = load_audio(wav_bytes(y.numpy().T.clip(-1, 1), subtype="FLOAT"))
    assert y2.shape == (channels, 4000)
    sep = separate(y2, sr, SeparationSettings(rank=2, **SMALL))
    assert sep.components.shape == (2, channels, 4000)
    assert float((sep.components.sum(0) - y2).abs().max()) < 1e-4 * float(y2.abs().max())


# --------------------------------------------------------- dtypes and shapes
@pytest.mark.parametrize("y,match", [(torch.zeros(2, 3, 100), "shape"), (torch.zeros(100, dtype=torch.int16), "dtype"),
                                     (torch.zeros(100, dtype=torch.complex64), "dtype"), ([0.0] * 100, "list")])
def test_bad_waveforms(y, match):
    with pytest.raises(AudioError, match=match):
        separate(y, SR, SeparationSettings(**SMALL))


def test_float64_and_numpy_inputs_work():
    mix, _ = two_sources(seconds=0.5)
    for y in (mix.double(), mix.numpy().astype(np.float64)):
        sep = separate(y, SR, SeparationSettings(rank=2, **SMALL))
        assert sep.components.dtype == torch.float32
