"""nmfcore.audio.grouping: component order and automatic grouping.

Oracles: spectral centroids computed independently from the component
spectrograms; a synthetic mixture whose components have known templates
(two harmonic tones an octave-and-more apart), where the automatic grouping
must equal the best (reference-based) grouping; clustering of well
separated point clouds. Pitch: harmonic spectra of known fundamental, a slow
float64 loop of the same harmonic sum, and noise that must stay unpitched.
"""

import math

import numpy as np
import pytest
import torch
from _audio_signals import SR, clicks, two_sources

from nmfcore.audio import (SeparationSettings, auto_group, best_grouping, component_centroids, component_features,
                           component_order, component_pitches, evaluate, harmonic_salience, kmeans, note_names,
                           separate, spectral_clustering)
from nmfcore.exceptions import ParameterError


@pytest.fixture(scope="module")
def sep4():
    mix, refs = two_sources()
    return separate(mix, SR, SeparationSettings(rank=4, n_fft=512, hop_length=128)), refs


def test_centroids_match_component_spectrograms(sep4):
    sep, _ = sep4
    C = sep.component_spectrograms.astype(np.float64)
    prof = C.sum(2)
    expected = (prof * sep.freqs).sum(1) / prof.sum(1)
    assert np.allclose(component_centroids(sep), expected, rtol=1e-5)


def test_order_sorts_by_centroid(sep4):
    sep, _ = sep4
    order = component_order(sep)
    c = component_centroids(sep)
    assert sorted(order) == list(range(4)) and list(np.diff(c[order]) >= 0) == [True] * 3


def test_silent_components_go_last():
    mix, _ = two_sources(seconds=0.5)
    sep = separate(mix * 0, SR, SeparationSettings(rank=3, n_fft=256, hop_length=64))
    assert np.isnan(component_centroids(sep)).all() and component_order(sep) == [0, 1, 2]


@pytest.mark.parametrize("method", ["spectral", "kmeans"])
@pytest.mark.parametrize("features", ["descriptors+mfcc", "mfcc", "mfcc+activation"])
def test_auto_group_finds_the_known_sources(sep4, method, features):
    sep, refs = sep4
    groups = auto_group(sep, 2, features=features, method=method)
    best = best_grouping(sep, refs)
    assert sorted(map(sorted, groups)) == sorted(map(sorted, best))
    scores = evaluate(sep.sources(groups), refs, bss=False)["si_sdr"]
    assert min(scores) > 25, scores


def test_auto_group_partitions_and_orders_low_to_high(sep4):
    sep, _ = sep4
    for n in (1, 2, 3, 4):
        groups = auto_group(sep, n)
        assert len(groups) == n and all(groups)
        assert sorted(r for g in groups for r in g) == [0, 1, 2, 3]
    c = component_centroids(sep)
    groups = auto_group(sep, 2)
    assert np.mean(c[groups[0]]) < np.mean(c[groups[1]])


def test_auto_group_is_deterministic(sep4):
    sep, _ = sep4
    assert auto_group(sep, 3, seed=1) == auto_group(sep, 3, seed=1)


@pytest.mark.parametrize("n", [0, 5, 2.0, True])
def test_bad_number_of_sources(sep4, n):
    with pytest.raises(ParameterError, match="n_sources"):
        auto_group(sep4[0], n)


def test_bad_features_and_method(sep4):
    with pytest.raises(ParameterError, match="features='pitch'"):
        component_features(sep4[0], features="pitch")
    with pytest.raises(ParameterError, match="method='dbscan'"):
        auto_group(sep4[0], 2, method="dbscan")


def test_feature_blocks_have_equal_weight(sep4):
    X = component_features(sep4[0], features="descriptors+mfcc")
    assert X.shape == (4, 16)
    assert np.isclose(float(X[:, :4].square().sum(1).mean()), 1.0)
    assert np.isclose(float(X[:, 4:].square().sum(1).mean()), 1.0)


@pytest.mark.parametrize("cluster", [kmeans, spectral_clustering])
def test_clustering_of_separated_clouds(cluster):
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    X = torch.cat([c + 0.3 * torch.randn(6, 2, generator=g) for c in centres])
    labels = cluster(X, 3, generator=torch.Generator().manual_seed(1))
    truth = torch.arange(3).repeat_interleave(6)
    # same partition up to label names
    assert len({(int(a), int(b)) for a, b in zip(labels, truth)}) == 3


# ------------------------------------------------------------------ pitch
FREQS = np.arange(2049) * 22050 / 4096  # the bins of n_fft 4096 at 22.05 kHz


def harmonic_profile(f0, n_harmonics=10, freqs=FREQS):
    """Partials of amplitude 1/h at h * f0, each shared linearly between its two nearest bins."""
    P = np.zeros(freqs.size)
    df = freqs[1]
    for h in range(1, n_harmonics + 1):
        x = h * f0 / df
        i = int(x)
        if i + 1 >= freqs.size:
            break
        P[i] += (1 - (x - i)) / h
        P[i + 1] += (x - i) / h
    return P


def slow_salience(P, freqs, fmin=30.0, fmax=2000.0, n_h=12, bpo=48):
    """The harmonic sum of harmonic_salience, one candidate and one harmonic at a time."""
    F, df = len(P), freqs[1] - freqs[0]
    Q = np.sqrt(P)
    Q = Q / Q.sum()
    best = (-1.0, None, None)
    for c in range(int(math.floor(math.log2(fmax / fmin) * bpo + 1e-9)) + 1):
        f0 = fmin * 2.0 ** (c / bpo)
        score = flat = 0.0
        for h in range(1, n_h + 1):
            pos = f0 * h / df
            if pos > F - 1:
                continue
            w = (f0 + 27.0) / (h * f0 + 320.0)
            lo = int(math.floor(pos))
            score += w * max(Q[lo], Q[min(lo + 1, F - 1)])
            flat += w / F
        if score > best[0]:
            best = (score, f0, score / flat)
    return best[1], best[2]


@pytest.mark.parametrize("f0", [41.2, 82.4, 110.0, 196.0, 261.6, 440.0, 987.8, 1760.0])
def test_harmonic_salience_finds_the_fundamental(f0):
    f0_est, salience = harmonic_salience(torch.from_numpy(harmonic_profile(f0))[None], FREQS)
    assert abs(math.log2(float(f0_est[0]) / f0)) < 1 / 24  # within a quarter tone: no octave error
    assert float(salience[0]) > 5


def test_harmonic_salience_equals_slow_loop():
    rng = np.random.default_rng(0)
    P = np.stack([harmonic_profile(123.0), harmonic_profile(300.0, 4) + 0.01 * rng.random(FREQS.size),
                  rng.exponential(size=FREQS.size)])
    f0, sal = harmonic_salience(torch.from_numpy(P), FREQS)
    for r in range(3):
        f0_slow, sal_slow = slow_salience(P[r], FREQS)
        assert math.isclose(float(f0[r]), f0_slow, rel_tol=1e-12)
        assert math.isclose(float(sal[r]), sal_slow, rel_tol=1e-9)


def test_noise_and_silence_have_low_salience():
    rng = np.random.default_rng(1)
    noise = torch.from_numpy(rng.exponential(size=(20, FREQS.size)))
    _, sal = harmonic_salience(noise, FREQS)
    assert float(sal.max()) < 2.5  # component_pitches' default threshold
    f0, sal0 = harmonic_salience(torch.zeros(1, FREQS.size), FREQS)
    assert float(sal0[0]) == 0.0 and math.isfinite(float(f0[0]))


@pytest.fixture(scope="module")
def tones_and_clicks():
    mix, _ = two_sources()
    y = mix + 0.5 * clicks(seconds=2.0)[None]
    return separate(y, SR, SeparationSettings(rank=3, n_fft=1024, hop_length=256, n_iter=300))


def test_component_pitches_of_tones_and_clicks(tones_and_clicks):
    pitches = component_pitches(tones_and_clicks)
    pitched = np.sort(pitches[~np.isnan(pitches)])
    assert pitched.size == 2 and np.isnan(pitches).sum() == 1, pitches
    assert np.allclose(pitched, [220.0, 1320.0], rtol=0.03), pitched
    assert note_names(pitched) == ["A3", "E6"]
    pitches[:] = 0.0  # the estimates are cached on the separation; callers get their own copy
    again = component_pitches(tones_and_clicks)
    assert np.allclose(np.sort(again[~np.isnan(again)]), pitched, rtol=0, atol=0) and np.isnan(again).sum() == 1


def test_order_by_pitch_puts_unpitched_after_pitched(tones_and_clicks):
    sep = tones_and_clicks
    order = component_order(sep, by="pitch")
    pitches, cent = component_pitches(sep), component_centroids(sep)
    n_pitched = int((~np.isnan(pitches)).sum())
    assert sorted(order) == [0, 1, 2]
    assert np.all(np.diff(pitches[order[:n_pitched]]) >= 0) and np.isnan(pitches[order[n_pitched:]]).all()
    assert np.all(np.diff(cent[order[n_pitched:]]) >= 0)


def test_silent_components_are_unpitched_and_last():
    mix, _ = two_sources(seconds=0.5)
    sep = separate(mix * 0, SR, SeparationSettings(rank=3, n_fft=256, hop_length=64))
    assert np.isnan(component_pitches(sep)).all() and component_order(sep, by="pitch") == [0, 1, 2]


def test_note_names():
    assert note_names([27.5, 440.0, 466.16, float("nan"), 0.0]) == ["A0", "A4", "A#4", "", ""]


@pytest.mark.parametrize("kwargs, message", [
    (dict(fmin=0), "fmin=0 must be a finite positive"), (dict(fmax=float("inf")), "fmax=inf must be a finite positive"),
    (dict(fmin=500.0, fmax=100.0), "fmax=100.0 must be above fmin=500.0"),
    (dict(n_harmonics=0), "n_harmonics=0 must be a positive integer"),
    (dict(bins_per_octave=2.5), "bins_per_octave=2.5 must be a positive integer"),
])
def test_bad_pitch_arguments(kwargs, message):
    with pytest.raises(ParameterError, match=message):
        harmonic_salience(torch.ones(1, FREQS.size), FREQS, **kwargs)


def test_bad_order_and_salience_threshold(sep4):
    with pytest.raises(ParameterError, match="by='loudness' must be one of"):
        component_order(sep4[0], by="loudness")
    with pytest.raises(ParameterError, match="min_salience=-1 must be a finite positive"):
        component_pitches(sep4[0], min_salience=-1)
    with pytest.raises(ParameterError, match="profiles of shape"):
        harmonic_salience(torch.ones(2, 10), FREQS)
