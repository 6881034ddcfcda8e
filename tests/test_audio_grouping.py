"""nmfcore.audio.grouping: component order and automatic grouping.

Oracles: spectral centroids computed independently from the component
spectrograms; a synthetic mixture whose components have known templates
(two harmonic tones an octave-and-more apart), where the automatic grouping
must equal the best (reference-based) grouping; clustering of well
separated point clouds.
"""

import numpy as np
import pytest
import torch
from _audio_signals import SR, two_sources

from nmfcore.audio import (SeparationSettings, auto_group, best_grouping, component_centroids, component_features,
                           component_order, evaluate, kmeans, separate, spectral_clustering)
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
