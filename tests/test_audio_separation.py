"""nmfcore.audio.separation: the pipeline from a recording to components and sources.

Oracles: the invariant that component waveforms sum to the mixture (masks
sum to one, the ISTFT is linear and inverts the STFT); a synthetic
two-source mixture with known templates (harmonic tones) separated above a
stated SI-SDR; equivalences (sources of groups == sums of components,
lazy == eager, pickled == original); determinism for a seed.
"""

import pickle

import pytest
import torch
from _audio_signals import SR, clicks, harmonic_tone, two_sources

from nmfcore.audio import (MODELS, Separation, SeparationSettings, best_grouping, evaluate,
                           learn_dictionary, separate, separate_supervised, si_sdr)
from nmfcore.exceptions import ParameterError

SMALL = dict(n_fft=256, hop_length=64, n_iter=60)


def rel_err(a, b):
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("model,kernel", [("NMF", 1), ("NMFD", 4), ("NMF2D", (4, 2))])
@pytest.mark.parametrize("beta", [2.0, 1.0, 0.5, 0.0])
def test_components_sum_to_mixture(model, kernel, beta):
    mix, _ = two_sources(seconds=1.0)
    sep = separate(mix, SR, SeparationSettings(model=model, kernel_size=kernel, rank=3, beta=beta, **SMALL))
    assert sep.components.shape == (3, 1, mix.shape[-1])
    assert rel_err(sep.components.sum(0), sep.mixture) < 1e-4
    assert bool(torch.isfinite(sep.components).all())


@pytest.mark.parametrize("power,mask_power,window", [(2.0, 1.0, "hann"), (1.0, 0.5, "hamming"),
                                                     (1.0, 6.0, "blackman"), (0.5, 4.0, "rect")])
def test_sum_invariant_for_any_spectrogram_and_mask(power, mask_power, window):
    mix, _ = two_sources(seconds=1.0)
    s = SeparationSettings(rank=4, power=power, mask_power=mask_power, window=window,
                           hop_length=256 if window == "rect" else 64, n_fft=256, n_iter=30)
    sep = separate(mix, SR, s)
    assert rel_err(sep.components.sum(0), sep.mixture) < 1e-4


def test_multichannel_keeps_channels_and_sums_per_channel(gen):
    mix, _ = two_sources(seconds=1.0)
    y = torch.cat([mix, 0.3 * mix.roll(50, -1), torch.randn(1, mix.shape[1], generator=gen) * 0.01])
    sep = separate(y, SR, SeparationSettings(rank=3, **SMALL))
    assert sep.components.shape == (3, 3, y.shape[1]) and sep.n_channels == 3
    for c in range(3):
        assert rel_err(sep.components[:, c].sum(0), y[c]) < 1e-4
    # the factorised spectrogram is the mono mix's
    assert sep.spectrogram.shape == (129, 1 + y.shape[1] // 64)


def test_known_templates_separated_unsupervised():
    # two harmonic tones with disjoint partials: rank-2 KL-NMF finds the two templates;
    # the best grouping (oracle assignment) then gives each tone back above 25 dB SI-SDR
    mix, refs = two_sources()
    sep = separate(mix, SR, SeparationSettings(rank=2, n_fft=512, hop_length=128, n_iter=200))
    groups = best_grouping(sep, refs)
    scores = evaluate(sep.sources(groups), refs, bss=False)["si_sdr"]
    assert min(scores) > 25, scores


def test_known_templates_separated_with_nmfd():
    mix, refs = two_sources()
    sep = separate(mix, SR, SeparationSettings(model="NMFD", kernel_size=4, rank=2, n_fft=512, hop_length=128))
    scores = evaluate(sep.sources(best_grouping(sep, refs)), refs, bss=False)["si_sdr"]
    assert min(scores) > 20, scores


def test_supervised_separation_with_learnt_dictionaries():
    # dictionaries learnt from separate examples of each source (other notes' timing)
    mix, refs = two_sources()
    s = SeparationSettings(rank=2, n_fft=512, hop_length=128, n_iter=100)
    d_low = learn_dictionary(harmonic_tone(220.0, 1.0, SR, 4), SR, s)
    d_high = learn_dictionary(harmonic_tone(1320.0, 1.0, SR, 2), SR, s)
    assert d_low.shape == (257, 2) and torch.allclose(d_low.sum(0), torch.ones(2))
    sep, groups = separate_supervised(mix, SR, [d_low, d_high], s)
    assert groups == [[0, 1], [2, 3]] and sep.rank == 4
    assert torch.equal(torch.from_numpy(sep.W), torch.cat([d_low, d_high], 1))  # the dictionaries stayed fixed
    scores = evaluate(sep.sources(groups), refs, bss=False)["si_sdr"]
    assert min(scores) > 25, scores


def test_semi_supervised_free_components_take_the_unknown_source():
    # only the low tone has a dictionary; clicks are unknown and go to the free components
    mix, refs = two_sources(seconds=1.0)
    low = refs[0]
    noise = clicks(seconds=1.0)[None] * 0.5
    y = low + noise
    s = SeparationSettings(rank=2, n_fft=256, hop_length=64, n_iter=150)
    d_low = learn_dictionary(harmonic_tone(220.0, 0.5, SR, 4), SR, s)
    sup, _ = separate_supervised(y, SR, [d_low], s)
    semi, groups = separate_supervised(y, SR, [d_low], s, n_free=2)
    assert semi.rank == 4 and groups == [[0, 1]]
    assert rel_err(semi.sources(groups)[0] + semi.residual(groups), semi.mixture) < 1e-4
    assert torch.equal(torch.from_numpy(semi.W[:, :2]), d_low)
    score_sup = si_sdr(sup.sources(groups)[0], low)
    score_semi = si_sdr(semi.sources(groups)[0], low)
    assert score_semi > 10 and score_semi > score_sup + 3, (score_sup, score_semi)


def test_supervised_with_nmfd_dictionaries():
    mix, refs = two_sources(seconds=1.0)
    s = SeparationSettings(model="NMFD", kernel_size=3, rank=1, n_fft=256, hop_length=64, n_iter=50)
    dicts = [learn_dictionary(refs[j], SR, s) for j in range(2)]
    assert dicts[0].shape == (129, 1, 3)
    sep, groups = separate_supervised(mix, SR, dicts, s)
    assert min(evaluate(sep.sources(groups), refs, bss=False)["si_sdr"]) > 15


def test_supervised_penalty_reaches_the_fit_or_is_refused():
    # oracle: the penalised fit of the activations with the dictionaries frozen, done by hand
    from nmfcore.audio.spectral import spectrogram
    from nmfcore.nmf import NMF

    t = torch.arange(SR) / SR
    low, high = torch.sin(2 * torch.pi * 300 * t), torch.sin(2 * torch.pi * 2100 * t)
    s = SeparationSettings(rank=1, n_fft=256, hop_length=64, n_iter=40, tol=0.0)
    dicts = [learn_dictionary(low, SR, s), learn_dictionary(high, SR, s)]
    pen = s.replace(alpha=0.5)
    sep, _ = separate_supervised(low + high, SR, dicts, pen)
    V = spectrogram(low + high, n_fft=256, hop_length=64).t().contiguous()
    ref = NMF(W=torch.cat(dicts, 1), H=(V.shape[0], 2), trainable_W=False, generator=0)
    ref.fit(V, beta=1.0, tol=0.0, max_iter=40, alpha=0.5, l1_ratio=1.0, init="random", generator=0)
    assert torch.allclose(torch.from_numpy(sep.H), ref.H.detach().t(), rtol=1e-4, atol=1e-6)
    with pytest.raises(ParameterError, match="not supported with free templates"):
        separate_supervised(low + high, SR, dicts, pen, n_free=1)


def test_supervised_rejects_mismatched_dictionaries():
    mix, _ = two_sources(seconds=0.5)
    s = SeparationSettings(rank=2, n_fft=256, hop_length=64)
    with pytest.raises(ParameterError, match=r"dictionaries\[0\] has shape \(100, 2\)"):
        separate_supervised(mix, SR, [torch.rand(100, 2)], s)
    with pytest.raises(ParameterError, match="non-empty list"):
        separate_supervised(mix, SR, [], s)
    with pytest.raises(ParameterError, match="n_free=-1"):
        separate_supervised(mix, SR, [torch.rand(129, 2)], s, n_free=-1)


def test_sources_equal_sums_of_components_and_residual():
    mix, _ = two_sources(seconds=1.0)
    sep = separate(mix, SR, SeparationSettings(rank=4, **SMALL))
    groups = [[0, 2], [1], []]
    S = sep.sources(groups)
    assert S.shape == (3, 1, mix.shape[1])
    assert torch.allclose(S[0], sep.components[0] + sep.components[2], atol=1e-6)
    assert torch.equal(S[2], torch.zeros_like(S[2]))
    assert torch.allclose(sep.residual(groups), sep.components[3], atol=1e-5)
    lazy = separate(mix, SR, SeparationSettings(rank=4, **SMALL), keep_components=False)
    assert lazy._components is None
    assert torch.allclose(lazy.sources(groups), S, atol=1e-5)  # rendered by group masks
    assert torch.allclose(lazy.component(3), sep.components[3], atol=1e-6)
    assert lazy._components is None
    assert torch.allclose(lazy.components, sep.components, atol=1e-6)


@pytest.mark.parametrize("groups,match", [([[0], [0]], "more than one group"), ([[5]], "not an index"),
                                          ([[0.5]], "not an index"), ("01", "list of lists"),
                                          ([0, 1], "each group must be a list")])
def test_bad_groups(groups, match):
    mix, _ = two_sources(seconds=0.5)
    sep = separate(mix, SR, SeparationSettings(rank=2, **SMALL))
    with pytest.raises(ParameterError, match=match):
        sep.sources(groups)


def test_separation_attributes_and_shapes():
    mix, _ = two_sources(seconds=1.0)
    n_frames = 1 + mix.shape[1] // 64
    for model, kernel, W_shape, H_shape in (("NMF", 1, (129, 3), (3, n_frames)),
                                             ("NMFD", 5, (129, 3, 5), (3, n_frames - 4)),
                                             ("NMF2D", (7, 2), (7, 3, 2), (3, 129 - 6, n_frames - 1))):
        sep = separate(mix, SR, SeparationSettings(model=model, kernel_size=kernel, rank=3, **SMALL))
        assert sep.W.shape == W_shape and sep.H.shape == H_shape
        assert sep.spectrogram.shape == (129, n_frames)
        assert sep.component_spectrograms.shape == (3, 129, n_frames)
        # each component's spectrogram is its own reconstruction; together they are the model's
        assert abs(sep.component_spectrograms.sum(0) - sep.reconstruction).max() < 1e-4 * sep.reconstruction.max()
        masks = sep.masks()
        assert abs(masks.sum(0) - 1).max() < 1e-5
        assert sep.freqs.shape == (129,) and sep.times.shape == (n_frames,)
        assert set(sep.timings) >= {"stft", "fit", "masks_istft", "total"}
        assert sep.losses[0][0] == 0 and sep.n_iter <= 60


def test_fit_reduces_loss_and_reports_through_callback():
    mix, _ = two_sources(seconds=1.0)
    seen = []
    sep = separate(mix, SR, SeparationSettings(rank=3, tol=0, **SMALL), callback=lambda i, l: seen.append((i, l)))
    assert seen == sep.losses and [i for i, _ in seen] == [0, 10, 20, 30, 40, 50, 60]
    assert seen[-1][1] < seen[0][1]


def test_callback_returning_true_stops():
    mix, _ = two_sources(seconds=1.0)
    sep = separate(mix, SR, SeparationSettings(rank=3, tol=0, **SMALL), callback=lambda i, l: i >= 20)
    assert sep.n_iter == 20
    assert rel_err(sep.components.sum(0), sep.mixture) < 1e-4


def test_sparse_activations():
    from nmfcore.metrics import sparseness

    mix, _ = two_sources(seconds=1.0)
    sep = separate(mix, SR, SeparationSettings(rank=3, sparsity_H=0.7, n_fft=256, hop_length=64, n_iter=20))
    assert sep.n_iter == 20
    for r in range(3):
        assert abs(float(sparseness(torch.from_numpy(sep.H[r]))) - 0.7) < 1e-3
    assert rel_err(sep.components.sum(0), sep.mixture) < 1e-4


def _continuity_weight(V, model):
    # the absolute weight continuity * sum(V) / (rank * frames) of settings continuity=0.2, rank 3
    frames = V.shape[0] if model == "NMF" else V.shape[-1]
    return 0.2 * float(V.sum()) / (3 * frames)


@pytest.mark.parametrize("model,kernel", [("NMF", 1), ("NMFD", 3)])
@pytest.mark.parametrize("penalty", ["alpha", "continuity"])
def test_penalty_reaches_the_fit(model, kernel, penalty):
    # oracle: the model's own fit with the same penalty (alpha and l1_ratio; or the absolute continuity
    # weight) on the same spectrogram and initialisation
    from nmfcore.audio.spectral import spectrogram

    given = dict(alpha=2.0, l1_ratio=0.8) if penalty == "alpha" else dict(continuity=0.2)
    mix, _ = two_sources(seconds=1.0)
    s = SeparationSettings(model=model, kernel_size=kernel, rank=3, tol=0.0, **given, **SMALL)
    sep = separate(mix, SR, s)
    V = s.spec.layout.to_model(spectrogram(mix[0], n_fft=256, hop_length=64)).contiguous()
    ref = s.spec.build(tuple(V.shape), 3, s.kernel(), torch.Generator().manual_seed(0))
    fit_kw = given if penalty == "alpha" else dict(continuity=_continuity_weight(V, model))
    ref.fit(V, beta=1.0, tol=0.0, max_iter=60, init="nndsvda", generator=0, **fit_kw)
    W, H = s.spec.layout.export(ref.W.detach(), ref.H.detach())
    assert torch.allclose(torch.from_numpy(sep.W), torch.from_numpy(W), rtol=1e-4, atol=1e-6)
    assert torch.allclose(torch.from_numpy(sep.H), torch.from_numpy(H), rtol=1e-4, atol=1e-6)
    plain = separate(mix, SR, s.replace(**{penalty: 0.0}))
    assert not torch.allclose(torch.from_numpy(plain.H), torch.from_numpy(sep.H))
    assert rel_err(sep.components.sum(0), sep.mixture) < 1e-4


def test_continuity_needs_nmf_or_nmfd_without_sparsity():
    for kw in (dict(model="NMF2D"), dict(sparsity_H=0.5)):
        with pytest.raises(ParameterError, match="continuity=0.1 needs model 'NMF' or 'NMFD'"):
            SeparationSettings(continuity=0.1, **kw)


def test_l1_penalty_makes_activations_sparser():
    # property of the L1 penalty: a strong alpha gives sparser (higher Hoyer sparseness) activations
    # (since the unpenalised fit starts from the product matched to the data, issue 14, its
    # activations here are 0.51 sparse instead of 0.45; alpha 100 gives 0.54)
    from nmfcore.metrics import sparseness

    mix, _ = two_sources(seconds=1.0)
    s = SeparationSettings(rank=4, l1_ratio=1.0, tol=0.0, **SMALL)
    hoyer = [float(sparseness(torch.from_numpy(separate(mix, SR, s.replace(alpha=a)).H).flatten()))
             for a in (0.0, 100.0)]
    assert hoyer[1] > hoyer[0] + 0.02


def test_same_seed_same_result_other_seed_differs():
    mix, _ = two_sources(seconds=1.0)
    s = SeparationSettings(rank=3, init="random", seed=3, **SMALL)
    a, b = separate(mix, SR, s), separate(mix, SR, s)
    c = separate(mix, SR, s.replace(seed=4))
    assert torch.equal(a.components, b.components) and (a.W == b.W).all()
    assert not (a.W == c.W).all()


def test_resampling_setting():
    mix, _ = two_sources(seconds=0.5)
    sep = separate(mix, SR, SeparationSettings(rank=2, sr=16000, **SMALL))
    assert sep.sr == 16000 and sep.mixture.shape == (1, 8000) and "resample" in sep.timings
    assert rel_err(sep.components.sum(0), sep.mixture) < 1e-4


def test_numpy_and_1d_input():
    mix, _ = two_sources(seconds=0.5)
    sep = separate(mix[0].numpy(), SR, SeparationSettings(rank=2, **SMALL))
    assert sep.mixture.shape == (1, 4000)


def test_pickle_round_trip_keeps_everything():
    mix, _ = two_sources(seconds=0.5)
    sep = separate(mix, SR, SeparationSettings(model="NMFD", kernel_size=3, rank=2, **SMALL))
    back = pickle.loads(pickle.dumps(sep))
    assert isinstance(back, Separation)
    assert torch.equal(back.components, sep.components) and (back.W == sep.W).all()
    assert torch.allclose(back.sources([[0], [1]]), sep.sources([[0], [1]]))
    assert back.settings == sep.settings


def test_settings_round_trip_and_validation():
    s = SeparationSettings(model="NMF2D", kernel_size=[8, 2], rank=5)
    assert s.kernel_size == (8, 2) and s.kernel() == (8, 2)
    d = s.to_dict()
    assert d["kernel_size"] == [8, 2] and SeparationSettings.from_dict(d) == s
    assert SeparationSettings(model="NMF2D", kernel_size=3).kernel() == (3, 3)
    assert SeparationSettings(kernel_size=7).kernel() == ()  # ignored by NMF
    with pytest.raises(ParameterError, match="unknown separation settings"):
        SeparationSettings.from_dict({"rnak": 3})
    with pytest.raises(ParameterError, match="kernel_size=.* must have 1 entries"):
        SeparationSettings(model="NMFD", kernel_size=(2, 3)).kernel()


@pytest.mark.parametrize("field,value,match", [
    ("model", "PCA", "model='PCA'"), ("rank", 0, "rank=0"), ("rank", 2.5, "rank=2.5"), ("beta", float("nan"), "beta"),
    ("n_iter", 0, "n_iter=0"), ("tol", -1, "tol=-1"), ("kernel_size", 0, "kernel_size=0"),
    ("kernel_size", (2, 0), "kernel_size"), ("init", "svd", "init='svd'"), ("seed", -1, "seed=-1"),
    ("sparsity_H", 1.0, "sparsity_H=1.0"), ("alpha", -1, "alpha=-1"), ("alpha", float("inf"), "alpha=inf"),
    ("l1_ratio", 1.5, "l1_ratio=1.5"), ("continuity", -0.5, "continuity=-0.5"), ("l1_ratio", True, "l1_ratio=True"), ("n_fft", 100, None), ("hop_length", 4096, "hop_length=4096"),
    ("window", "tukey", "window='tukey'"), ("power", 0, "power=0"), ("mask_power", -2, "mask_power=-2"),
    ("sr", 100, "sr=100"), ("device", "gpu!", "device='gpu!'")])
def test_bad_settings(field, value, match):
    with pytest.raises(ParameterError, match=match):
        SeparationSettings(**{field: value})


def test_alpha_and_target_sparseness_are_exclusive():
    with pytest.raises(ParameterError, match="give one of them"):
        SeparationSettings(alpha=0.1, sparsity_H=0.5)
    assert SeparationSettings(alpha=0.0, sparsity_H=0.5).sparsity_H == 0.5


def test_unavailable_device_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    mix, _ = two_sources(seconds=0.5)
    with pytest.raises(ParameterError, match="device='cuda' is not available"):
        separate(mix, SR, SeparationSettings(rank=2, device="cuda", **SMALL))


def test_kernel_longer_than_recording():
    mix, _ = two_sources(seconds=0.5)
    with pytest.raises(ParameterError, match="kernel_size=200 frames is longer"):
        separate(mix, SR, SeparationSettings(model="NMFD", kernel_size=200, rank=2, **SMALL))
    with pytest.raises(ParameterError, match="does not fit"):
        separate(mix, SR, SeparationSettings(model="NMF2D", kernel_size=(200, 2), rank=2, **SMALL))


def test_registry_entries_are_complete():
    for name in ("NMF", "NMFD", "NMF2D"):
        spec = MODELS[name]
        assert spec.name == name and spec.label and spec.description and spec.build is not None
        assert spec.convolutive == (name != "NMF") and bool(spec.kernel_help) == spec.convolutive


@pytest.mark.cuda
def test_cuda_matches_cpu():
    mix, _ = two_sources(seconds=1.0)
    s = SeparationSettings(rank=3, tol=0, **SMALL)
    cpu = separate(mix, SR, s)
    gpu = separate(mix, SR, s.replace(device="cuda"))
    assert gpu.components.device.type == "cpu"
    assert rel_err(gpu.components.sum(0), gpu.mixture) < 1e-4
    assert float((gpu.components - cpu.components).abs().max()) < 1e-2 * float(mix.abs().max())


def test_blockwise_rendering_equals_whole_signal_istft(monkeypatch):
    # oracle: torch.istft of the mixture STFT times each full-size mask
    import nmfcore.audio.spectral as spectral
    from nmfcore.audio import istft, stft

    mix, _ = two_sources(seconds=1.0)
    y = torch.cat([mix, 0.5 * mix.roll(100, -1)])
    for model, kernel in (("NMF", 1), ("NMFD", 5), ("NMF2D", (3, 4))):
        s = SeparationSettings(model=model, kernel_size=kernel, rank=3, **SMALL)
        sep = separate(y, SR, s, keep_components=False)
        X = stft(y, n_fft=256, hop_length=64)
        masks = torch.from_numpy(sep.masks())
        expected = torch.stack([istft(X * masks[r], n_fft=256, hop_length=64, length=y.shape[1]) for r in range(3)])
        monkeypatch.setattr(spectral, "BLOCK_FRAMES", 7)  # many blocks, last one partial
        blocked = sep.render([[0], [1], [2]])
        monkeypatch.setattr(spectral, "BLOCK_FRAMES", 1 << 20)  # one block
        assert float((blocked - expected).abs().max()) < 1e-5
        assert float((sep.render([[0], [1], [2]]) - expected).abs().max()) < 1e-5


def test_streamed_blocks_equal_whole_rendering(monkeypatch):
    # render_blocks (carried overlap, one block in memory) vs render (one assembled buffer) vs one block
    import nmfcore.audio.spectral as spectral

    mix, _ = two_sources(seconds=1.0)
    y = torch.cat([mix, 0.5 * mix.roll(100, -1)])
    groups = [[0, 2], [], [1]]
    for model, kernel in (("NMF", 1), ("NMFD", 5)):
        sep = separate(y, SR, SeparationSettings(model=model, kernel_size=kernel, rank=3, **SMALL),
                       keep_components=False)
        whole = sep.render(groups)  # one block
        monkeypatch.setattr(spectral, "BLOCK_FRAMES", 7)  # many blocks, last one partial
        chunks = list(sep.render_blocks(groups))
        starts = [start for start, _ in chunks]
        assert len(chunks) > 10 and starts[0] == 0
        assert starts[1:] == [start + chunk.shape[-1] for start, chunk in chunks[:-1]]  # consecutive
        streamed = torch.cat([chunk.clone() for _, chunk in chunks], -1)
        assert streamed.shape == whole.shape
        assert torch.equal(streamed, sep.render(groups))  # the same blocks: the same floats
        assert float((streamed - whole).abs().max()) < 1e-6  # other blocks: float rounding
        assert not streamed[1].any()  # the empty group
        # with the components: sources are their sums, as Separation.sources with kept components
        kept = separate(y, SR, SeparationSettings(model=model, kernel_size=kernel, rank=3, **SMALL))
        parts = list(sep.source_blocks(groups, components=True))
        comps = torch.cat([c for _, _, c in parts], -1)
        sources = torch.cat([src for _, src, _ in parts], -1)
        assert float((comps - kept.components).abs().max()) < 1e-6
        assert float((sources - kept.sources(groups)).abs().max()) < 1e-6
        assert [(start, src.shape, c) for start, src, c in kept.source_blocks(groups)] == \
            [(0, kept.sources(groups).shape, None)]
        monkeypatch.setattr(spectral, "BLOCK_FRAMES", 1 << 20)


@pytest.mark.filterwarnings("ignore:The length of signal:UserWarning")  # torch.istft pads the tail, as we do
def test_rendering_covers_the_signal_when_frames_end_before_it():
    # hop = n_fft (rect window): the last frame ends before the signal does; zeros there, as torch.istft
    from nmfcore.audio import istft, stft

    mix, _ = two_sources(seconds=0.5)
    y = mix[:, : 64 * 50 + 40]
    sep = separate(y, SR, SeparationSettings(rank=2, n_fft=64, hop_length=64, window="rect", n_iter=5),
                   keep_components=False)
    out = sep.render([[0], [1]])
    assert out.shape == (2, 1, y.shape[1])
    masks = torch.from_numpy(sep.masks())
    X = stft(y, n_fft=64, hop_length=64, window="rect")
    expected = torch.stack([istft(X * masks[r], n_fft=64, hop_length=64, window="rect", length=y.shape[1])
                            for r in range(2)])
    assert float((out - expected).abs().max()) < 1e-5
    streamed = torch.cat([chunk for _, chunk in sep.render_blocks([[0], [1]])], -1)
    assert torch.equal(streamed, out)


def test_blockwise_spectrogram_equals_full_stft(monkeypatch):
    import nmfcore.audio.spectral as spectral
    from nmfcore.audio import spectrogram, stft

    y = torch.randn(5001, generator=torch.Generator().manual_seed(2))
    monkeypatch.setattr(spectral, "BLOCK_FRAMES", 5)
    S = spectrogram(y, n_fft=256, hop_length=64, power=2)
    assert torch.allclose(S, stft(y, n_fft=256, hop_length=64).abs() ** 2, rtol=1e-4, atol=1e-5)


def test_nndsvd_block_by_block_for_long_recordings(monkeypatch):
    # below the threshold: the SVD of the spectrogram; above: nndsvd_blocks (the Gram matrix of the frames,
    # block by block), the same start up to rounding, for every variant (until issue 16 the pipeline used the
    # NNDSVD of frame means, a different and worse start whose SVD set the long-file path's peak memory)
    import nmfcore.init

    mix, _ = two_sources(seconds=2.0)
    for init in ("nndsvd", "nndsvda", "nndsvdar"):
        s = SeparationSettings(rank=3, tol=0, n_fft=256, hop_length=64, n_iter=1, init=init)
        plain = separate(mix, SR, s)
        monkeypatch.setattr(nmfcore.init, "SVD_MAX_ENTRIES", 129 * 50)
        monkeypatch.setattr(nmfcore.init, "_BLOCK_ENTRIES", 129 * 40)  # 251 frames in 7 blocks
        blocks = separate(mix, SR, s)
        assert blocks.losses[0][1] == pytest.approx(plain.losses[0][1], rel=1e-4)
        assert blocks.losses[1][1] == pytest.approx(plain.losses[1][1], rel=1e-3)
        monkeypatch.undo()
    longer = separate(mix, SR, s.replace(n_iter=100))
    assert longer.losses[-1][1] < 0.5 * blocks.losses[0][1]
    assert rel_err(longer.components.sum(0), longer.mixture) < 1e-4


# ------------------------------------------------------- mini-batch solvers (issue 16)
@pytest.mark.parametrize("solver", ["mu_batch", "asag_mu"])
def test_a_minibatch_separation_is_the_minibatch_fit_of_its_spectrogram(solver):
    # path equivalence: separate() with a mini-batch solver equals MiniBatchMU's fit of the same frames from
    # the block-by-block NNDSVD and the generator seeded with the settings' seed
    from nmfcore.audio.separation import _model_data
    from nmfcore.init import nndsvd_blocks
    from nmfcore.minibatch import MiniBatchMU

    mix, _ = two_sources(seconds=1.5)
    s = SeparationSettings(rank=3, n_fft=256, hop_length=64, solver=solver, batch_size=32, n_iter=12, tol=0, seed=3)
    sep = separate(mix, SR, s)
    V, _, _ = _model_data(mix, s, torch.device("cpu"), {})
    W0, H0 = nndsvd_blocks(torch.split(V, 32), 3, "nndsvda", 3)
    ref = MiniBatchMU(3, solver=solver, batch_size=32, generator=torch.Generator().manual_seed(3))
    ref.fit(V, W=W0, H=H0, max_epochs=12, tol=0)
    W, H = sep.factors
    assert torch.allclose(W, ref.W) and torch.allclose(H, ref.H)
    assert sep.n_iter == 12 and [i for i, _ in sep.losses] == list(range(13))
    assert rel_err(sep.components.sum(0), sep.mixture) < 1e-4


@pytest.mark.parametrize("solver", ["asg_mu", "gsg_mu", "asag_mu", "gsag_mu"])
def test_digital_silence_does_not_zero_the_templates_of_a_stochastic_solver(solver):
    # a batch of exact zeros made asg_mu's step set every template to zero (loss = sum of V from the first
    # epoch on); now its W parts are 0 / 0, no step, and the spectrogram is not floored (beta = 1)
    from nmfcore.audio.separation import zero_floor

    mix, _ = two_sources(seconds=1.0)
    y = torch.cat([mix, torch.zeros_like(mix)], -1)  # one second of digital silence
    s = SeparationSettings(rank=3, n_fft=256, hop_length=64, solver=solver, batch_size=16, n_iter=10, tol=0)
    assert zero_floor(s, 1.0) == 0.0
    sep = separate(y, SR, s)
    W, H = sep.factors
    assert float(W.max()) > 0 and float(H.max()) > 0
    assert min(loss for _, loss in sep.losses[1:]) < sep.losses[0][1]
    assert float(sep.components[:, :, :SR].abs().amax(-1).max()) > 0.1


def test_a_stochastic_solver_is_not_stopped_by_its_first_rise():
    # its loss is not monotone: the full fit's rule stopped asg_mu, gsg_mu and gsag_mu after one epoch
    # here; MiniBatchMU.fit's default patience waits PATIENCE epochs without a new best
    from nmfcore.minibatch import PATIENCE

    mix, _ = two_sources(seconds=2.0)
    s = SeparationSettings(rank=4, n_fft=256, hop_length=64, solver="gsg_mu", batch_size=20, n_iter=60, tol=1e-4)
    sep = separate(mix, SR, s)
    losses = [loss for _, loss in sep.losses]
    assert sep.n_iter > PATIENCE
    assert min(losses) < 0.5 * losses[0]


def test_supervised_and_guided_separation_refuse_a_minibatch_solver():
    from nmfcore.audio import Mark, separate_guided, separate_supervised

    mix, _ = two_sources(seconds=1.0)
    s = SeparationSettings(rank=2, n_fft=256, hop_length=64, solver="asg_mu")
    with pytest.raises(ParameterError, match="solver='asg_mu' must be 'full'"):
        separate_supervised(mix, SR, [torch.rand(129, 2)], s)
    with pytest.raises(ParameterError, match="solver='asg_mu' must be 'full'"):
        separate_guided(mix, SR, [Mark(source=0, t0=0.0, t1=0.5)], s, n_sources=2)
