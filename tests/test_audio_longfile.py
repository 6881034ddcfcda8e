"""nmfcore.audio.longfile: spectrogram frames, fit and rendering of a file block by block.

Oracles: the in-memory pipeline of nmfcore.audio.separation (its spectrogram
``_model_data``, :class:`Separation`'s rendering of the same factors), and
``MiniBatchMU.fit`` of the in-memory frames in the same (cyclic) order from
the same generator (path equivalence); the reads' sizes for the memory bound.
"""

import numpy as np
import pytest
import soundfile as sf
import torch

from _audio_signals import SR, two_sources
from nmfcore.audio import AudioError, Separation, SeparationSettings, auto_group, load_audio
from nmfcore.audio.longfile import SpectrogramBlocks, audio_duration, separate_file
from nmfcore.audio.separation import _model_data
from nmfcore.exceptions import ParameterError
from nmfcore.minibatch import MiniBatchMU


def write_float(path, y, sr=SR):
    """(channels, samples) written as 32-bit float WAV, so the file holds the samples exactly."""
    sf.write(path, np.asarray(y, dtype=np.float32).T, sr, subtype="FLOAT")
    return path


@pytest.fixture
def stereo(tmp_path):
    mix, _ = two_sources(seconds=1.5)
    y = torch.cat([mix, 0.5 * mix.flip(-1) + 0.1 * mix])  # two different channels
    return write_float(tmp_path / "stereo.wav", y), y


def in_memory_frames(path, settings):
    y, _ = load_audio(path)
    V, _, _ = _model_data(y, settings, torch.device("cpu"), {})
    return V


@pytest.mark.parametrize("block", [1, 7, 64, 10_000])
@pytest.mark.parametrize("options", [dict(), dict(power=2.0, window="hamming"), dict(beta=0.0, hop_length=100),
                                     dict(n_fft=200, hop_length=50)])
def test_frames_from_blocks_equal_the_in_memory_spectrogram(stereo, block, options):
    path, _ = stereo
    s = SeparationSettings(**{"n_fft": 256, "hop_length": 64, **options})
    blocks = SpectrogramBlocks(path, s, block_frames=block).scan()  # scan: the floor of beta <= 0
    chunks = list(blocks)
    V = in_memory_frames(path, s)
    assert [c.shape[0] for c in chunks] == [b - a for a, b in blocks.blocks()]
    got = torch.cat(chunks)
    assert got.shape == V.shape == (blocks.n_frames, blocks.n_bins)
    assert torch.allclose(got, V, rtol=1e-5, atol=1e-6 * float(V.max()))
    assert list(blocks) and torch.equal(torch.cat(list(blocks)), got)  # re-iterable, the same every time
    assert blocks.peak == pytest.approx(float(V.max()), rel=1e-5)


def test_a_minibatch_fit_of_the_blocks_equals_the_fit_of_the_frames_in_memory(stereo):
    path, _ = stereo
    s = SeparationSettings(n_fft=256, hop_length=64, batch_size=16)
    blocks = SpectrogramBlocks(path, s)
    V = in_memory_frames(path, s)
    for solver in ("mu_batch", "asag_mu", "gsg_mu"):
        fits = [MiniBatchMU(3, solver=solver, batch_size=16, order="cyclic", generator=5).fit(data, max_epochs=4,
                                                                                          tol=0)
                for data in (V, blocks)]
        assert torch.allclose(fits[0].W, fits[1].W, rtol=1e-4, atol=1e-7)
        assert torch.allclose(fits[0].H, fits[1].H, rtol=1e-4, atol=1e-7)
    # the NNDSVD start of the mini-batch solvers, from the file's blocks: the NNDSVD of the frames in memory
    from nmfcore.init import nndsvd, nndsvd_blocks

    for variant in ("nndsvd", "nndsvda"):
        W1, H1 = nndsvd_blocks(blocks, 3, variant, 0)
        W2, H2 = nndsvd(V, 3, variant, 0)
        assert H1.shape == (blocks.n_frames, 3)
        assert torch.allclose(W1, W2, rtol=1e-3, atol=1e-4 * float(W2.max()))
        assert torch.allclose(H1, H2, rtol=1e-3, atol=1e-4 * float(H2.max()))


@pytest.mark.parametrize("block", [5, 33, 1000])
def test_rendering_block_by_block_equals_the_in_memory_stems(stereo, block):
    path, y = stereo
    s = SeparationSettings(rank=4, n_fft=256, hop_length=64, batch_size=block, n_iter=5, tol=0, mask_power=2.0)
    long = separate_file(path, s)
    W, H = long.factors
    mem = Separation(settings=s, sr=SR, mixture=y, W=long.W, H=long.H, spectrogram=np.zeros((129, H.shape[0])),
                     losses=[], n_iter=0, timings={}, factors=(W, H))
    groups = [[0, 2], [1], []]
    starts, chunks, comps = [], [], []
    for start, chunk, comp in long.source_blocks(groups, components=True):
        starts.append(start)
        chunks.append(chunk)
        comps.append(comp)
    got = torch.cat(chunks, -1)
    assert starts[0] == 0 and all(a + c.shape[-1] == b for a, b, c in zip(starts, starts[1:], chunks))
    assert got.shape == (3, 2, y.shape[-1])
    assert torch.allclose(got, mem.sources(groups), atol=1e-5)
    assert torch.allclose(torch.cat(comps, -1), mem.components, atol=1e-5)
    assert torch.allclose(torch.cat([c for _, c, _ in long.source_blocks(groups)], -1), got, atol=1e-6)
    assert torch.equal(long.mixture_samples(100, 300), y[:, 100:300])
    # the grouping reads only the factors: the same groups as for the in-memory separation
    assert auto_group(long, 2) == auto_group(mem, 2)


def test_memory_is_bounded_by_the_block_not_by_the_length(tmp_path):
    # what is checked: the largest read from the file (samples per channel) and the largest chunk the
    # rendering holds are the same for a file 1x and 4x as long, and bounded by the block size; the
    # factors (W, and H: frames x rank) are the only things that grow. (Not a measurement of the process's
    # peak memory: see bench/README.md.)
    mix, _ = two_sources(seconds=1.0)
    s = SeparationSettings(rank=2, n_fft=256, hop_length=64, batch_size=20, n_iter=2, tol=0)
    seen = []
    for repeat in (1, 4):
        path = write_float(tmp_path / f"x{repeat}.wav", mix.repeat(1, repeat))
        sep = separate_file(path, s)
        biggest_chunk = max(chunk.shape[-1] for _, chunk, _ in sep.source_blocks([[0], [1]]))
        seen.append((sep.source.max_read, biggest_chunk, sep.source.n_frames))
    (read1, chunk1, frames1), (read4, chunk4, frames4) = seen
    assert frames4 > 3.5 * frames1
    assert read1 == read4 == (20 - 1) * 64 + 256  # the samples of one block of frames
    assert chunk1 == chunk4 <= 20 * 64 + 256


def test_separate_file_sums_to_the_mixture_and_lowers_the_loss(tmp_path):
    mix, _ = two_sources(seconds=2.0)
    path = write_float(tmp_path / "mono.wav", mix)
    for solver, beta in (("full", 1.0), ("asag_mu", 1.0), ("mu_batch", 0.0)):
        sep = separate_file(path, SeparationSettings(rank=3, n_fft=256, hop_length=64, batch_size=50, n_iter=20,
                                                     tol=0, solver=solver, beta=beta))
        assert sep.settings.solver == ("mu_batch" if solver == "full" else solver)
        assert sep.n_iter == 20 and sep.losses[-1][1] < sep.losses[0][1]
        stems = torch.cat([c for _, c, _ in sep.source_blocks([[0, 1, 2]])], -1)[0]
        assert float((stems - mix).abs().max()) < 1e-4
    assert audio_duration(path) == pytest.approx(2.0)
    assert audio_duration(tmp_path / "missing.wav") is None


def test_long_path_errors_name_the_problem(tmp_path, stereo):
    path, y = stereo
    s = SeparationSettings(n_fft=256, hop_length=64)
    with pytest.raises(AudioError, match="resampling to sr=16000 is not done block by block"):
        SpectrogramBlocks(path, s.replace(sr=16000))
    with pytest.raises(ParameterError, match="model 'NMF'.*model='NMFD'"):
        separate_file(path, s.replace(model="NMFD", kernel_size=3))
    with pytest.raises(AudioError, match="no such file"):
        SpectrogramBlocks(tmp_path / "missing.wav", s)
    short = write_float(tmp_path / "short.wav", y[:, :100])
    with pytest.raises(AudioError, match="shorter than one FFT frame"):
        SpectrogramBlocks(short, s)
    bad = y.clone()
    bad[1, 5000] = float("nan")
    with pytest.raises(AudioError, match="NaN or infinite samples.*channel 1, sample 5000"):
        separate_file(write_float(tmp_path / "nan.wav", bad), s)
    (tmp_path / "text.wav").write_text("not audio")
    with pytest.raises(AudioError, match="not a file libsndfile decodes"):
        SpectrogramBlocks(tmp_path / "text.wav", s)
    with pytest.raises(ParameterError, match="rank=200 is more than the spectrogram supports"):
        separate_file(path, s.replace(rank=200))
