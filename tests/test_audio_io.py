"""nmfcore.audio.io: decoding, resampling, writing, safe output paths.

Oracles: analytic sines (a resampled sine is the sine at the new rate);
round trips through soundfile (write then read gives the samples back to
16-bit precision); soxr (librosa's resampler) for the coprime-rate path.
"""

import math

import numpy as np
import pytest
import soundfile as sf
import torch

from nmfcore.audio import (AudioError, AudioWriter, OutputExistsError, audio_bytes, load_audio, output_path, resample,
                           safe_filename, write_audio)
from nmfcore.exceptions import ParameterError


def sine(f, sr, seconds=0.5, channels=1):
    t = torch.arange(int(sr * seconds), dtype=torch.float64) / sr
    y = 0.5 * torch.sin(2 * math.pi * f * t)
    return y.float().expand(channels, -1).clone()


@pytest.mark.parametrize("suffix,fmt", [(".wav", "WAV"), (".flac", "FLAC"), (".ogg", "OGG")])
def test_load_formats_and_sources(tmp_path, suffix, fmt):
    y = sine(440, 8000, channels=2).numpy().T
    path = tmp_path / f"a{suffix}"
    sf.write(path, y, 8000, format=fmt)
    from_path, sr = load_audio(path)
    from_bytes, _ = load_audio(path.read_bytes())
    with open(path, "rb") as fh:
        from_file, _ = load_audio(fh)
    assert sr == 8000 and from_path.shape == (2, 4000) and from_path.dtype == torch.float32
    assert torch.equal(from_path, from_bytes) and torch.equal(from_path, from_file)
    tol = 1e-4 if fmt != "OGG" else 0.05  # lossy
    assert float((from_path - torch.from_numpy(y.T)).abs().max()) < tol


def test_load_mp3_if_libsndfile_supports_it(tmp_path):
    if "MP3" not in sf.available_formats():
        pytest.skip("libsndfile without MP3")
    path = tmp_path / "a.mp3"
    sf.write(path, sine(440, 22050).numpy().T, 22050, format="MP3")
    y, sr = load_audio(path, sr=8000)
    assert sr == 8000 and y.shape[0] == 1 and abs(y.shape[1] - 4000) < 2000


def test_mono_downmix_and_resample_on_load(tmp_path):
    stereo = torch.stack([sine(440, 16000)[0], -sine(440, 16000)[0] * 0.5])
    path = write_audio(tmp_path / "s.wav", stereo, 16000)
    y, sr = load_audio(path, sr=8000, mono=True)
    assert sr == 8000 and y.shape == (1, 4000)
    expected = resample(stereo.mean(0, keepdim=True), 16000, 8000)
    assert float((y - expected).abs().max()) < 1e-3


@pytest.mark.parametrize("orig,target", [(8000, 22050), (48000, 22050), (44100, 22050), (192000, 22050),
                                         (22050, 44100)])
def test_resample_sine_matches_analytic(orig, target):
    # oracle: the same sine sampled at the target rate (away from the edges)
    y = sine(440, orig)
    z = resample(y, orig, target)
    assert z.shape == (1, math.ceil(y.shape[1] * target / orig))
    ref = sine(440, target)[:, : z.shape[1]]
    edge = target // 20
    assert float((z - ref)[:, edge:-edge].abs().max()) < 2e-3


def test_resample_coprime_rates_uses_soxr_and_matches_it():
    import soxr

    y = sine(440, 44100, seconds=0.2)
    z = resample(y, 44100, 44099)
    ref = soxr.resample(y[0].numpy(), 44100, 44099, quality="HQ")
    assert z.shape[1] == math.ceil(y.shape[1] * 44099 / 44100)
    n = min(z.shape[1], ref.size)
    assert np.abs(z[0, :n].numpy() - ref[:n]).max() < 1e-5


def test_resample_keeps_batch_shape_and_identity():
    y = torch.randn(2, 3, 1000, generator=torch.Generator().manual_seed(0))
    assert resample(y, 8000, 16000).shape == (2, 3, 2000)
    assert resample(y, 8000, 8000) is y


def test_write_read_round_trip_and_formats(tmp_path):
    y = sine(300, 8000, channels=3)
    for suffix in (".wav", ".flac", ".WAV"):
        path = write_audio(tmp_path / f"x{suffix}", y, 8000)
        back, sr = load_audio(path)
        assert sr == 8000 and float((back - y).abs().max()) < 1 / 2 ** 14
    with pytest.raises(AudioError, match="suffix '.mp3'"):
        write_audio(tmp_path / "x.mp3", y, 8000)


def test_write_clips_instead_of_wrapping(tmp_path):
    y = torch.tensor([[0.5, 1.5, -2.0]])
    back, _ = load_audio(write_audio(tmp_path / "c.wav", y, 8000))
    assert back.max() <= 1.0 and back.min() >= -1.0 and back[0, 1] > 0.99 and back[0, 2] < -0.99


def test_write_never_overwrites_without_flag(tmp_path):
    path = write_audio(tmp_path / "a.wav", torch.zeros(1, 10), 8000)
    before = path.read_bytes()
    with pytest.raises(OutputExistsError, match="exists already"):
        write_audio(path, torch.ones(1, 20) * 0.1, 8000)
    assert path.read_bytes() == before
    assert isinstance(OutputExistsError("x"), FileExistsError) and isinstance(OutputExistsError("x"), ParameterError)
    write_audio(path, torch.ones(1, 20) * 0.1, 8000, overwrite=True)
    assert load_audio(path)[0].shape == (1, 20)


def test_write_into_missing_folder_is_an_error(tmp_path):
    with pytest.raises(AudioError, match="does not exist"):
        write_audio(tmp_path / "no" / "a.wav", torch.zeros(1, 10), 8000)


def test_writer_in_pieces_writes_the_same_file_as_write_audio(tmp_path, monkeypatch):
    import nmfcore.audio.io as audio_io

    y = 1.2 * torch.randn(2, 3001, generator=torch.Generator().manual_seed(0)).clamp(-1.5, 1.5)
    monkeypatch.setattr(audio_io, "WRITE_BLOCK", 100)  # also write_audio in many blocks
    for suffix in (".wav", ".flac"):
        whole = write_audio(tmp_path / f"whole{suffix}", y, 8000)
        with AudioWriter(tmp_path / f"pieces{suffix}", 8000, 2) as w:
            for start in range(0, 3001, 700):
                w.write(y[:, start:start + 700])
        assert (tmp_path / f"pieces{suffix}").read_bytes() == whole.read_bytes()
    monkeypatch.setattr(audio_io, "WRITE_BLOCK", 1 << 18)
    ref = tmp_path / "ref.wav"
    sf.write(ref, y.clamp(-1, 1).numpy().T, 8000, subtype="PCM_16")  # the plain soundfile result
    assert write_audio(tmp_path / "one.wav", y, 8000).read_bytes() == ref.read_bytes()


def test_writer_removes_its_file_on_errors(tmp_path):
    path = tmp_path / "partial.wav"
    with pytest.raises(AudioError, match="2 channels"):
        with AudioWriter(path, 8000, 1) as w:
            w.write(torch.zeros(1, 10))
            w.write(torch.zeros(2, 10))
    assert not path.exists()
    with pytest.raises(AudioError, match="NaN"):
        with AudioWriter(path, 8000, 1) as w:
            w.write(torch.tensor([[0.0, float("nan")]]))
    assert not path.exists()
    path.write_bytes(b"keep")
    with pytest.raises(OutputExistsError):
        AudioWriter(path, 8000, 1)
    assert path.read_bytes() == b"keep"


def test_audio_bytes_is_playable_wav_and_flac():
    y = sine(440, 8000)
    for fmt in ("wav", "flac"):
        data = audio_bytes(y, 8000, format=fmt)
        back, sr = load_audio(data)
        assert sr == 8000 and float((back - y).abs().max()) < 1 / 2 ** 14
    assert audio_bytes(y, 8000)[:4] == b"RIFF"
    with pytest.raises(AudioError, match="format='mp3'"):
        audio_bytes(y, 8000, format="mp3")


@pytest.mark.parametrize("name,expected", [("../../etc/passwd", "etc_passwd"), ("a/b\\c", "a_b_c"),
                                           ("..", "audio"), ("", "audio"), (".hidden", "hidden"),
                                           ("ok-name_1.wav", "ok-name_1.wav")])
def test_safe_filename(name, expected):
    assert safe_filename(name) == expected


def test_output_path_stays_inside_root(tmp_path):
    assert output_path(tmp_path, "song", "a.wav") == tmp_path / "song" / "a.wav"
    for bad in ("..", "../x.wav", "/etc/passwd", "a/b", "", "."):
        with pytest.raises(AudioError):
            output_path(tmp_path, bad)
    # a symbolic link that points outside is refused too
    outside = tmp_path.parent / (tmp_path.name + "_outside")
    outside.mkdir()
    (tmp_path / "link").symlink_to(outside)
    with pytest.raises(AudioError, match="leaves the output folder"):
        output_path(tmp_path, "link", "a.wav")
