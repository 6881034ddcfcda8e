"""Guided separation (nmfcore.audio.guided): the weighted model, its fit, marks and their errors.

Oracles: autograd's vector-Jacobian product of the reconstruction (the
general path of every model) and of the objective (gradient consistency); a
slow float64 loop for the objective; the monotone objective; masks that sum
to one; SI-SDR with and without marks on a synthetic mixture.
"""

import pickle

import pytest
import torch

from nmfcore import divergence as div
from nmfcore.audio import (GuidedSeparation, Mark, SeparationSettings, check_marks, mark_weights, parse_marks,
                           refine, separate_guided, si_sdr, source_blocks)
from nmfcore.audio import guided as guided_module
from nmfcore.audio.guided import _fit, _Marked, _penalty_scale, _spans, _terms, _terms_marked, guided_objective
from nmfcore.exceptions import ParameterError

from _audio_signals import SR, clicks, harmonic_tone, two_sources

SETTINGS = SeparationSettings(rank=4, n_fft=256, hop_length=64, n_iter=60, tol=0.0)


def _problem(seed=0, F=9, T=11, groups=((0, 1), (2,), (3, 4)), boxes=False):
    g = torch.Generator().manual_seed(seed)
    R, S = sum(len(b) for b in groups), len(groups)
    V = torch.rand(F, T, generator=g, dtype=torch.float64) + 0.05
    W = torch.rand(F, R, generator=g, dtype=torch.float64) + 0.1
    H = torch.rand(T, R, generator=g, dtype=torch.float64) + 0.1
    A = torch.rand(S, F, T, generator=g, dtype=torch.float64)
    A[A < 0.3] = 0.0  # bins taken by certain marks: where the penalty acts
    A[1] = 1.0  # one unmarked source: the fast path skips its weights
    A[2, :4] = 1.0
    if boxes:  # marks as the app makes them: weights below 1 in a few boxes only
        inside = torch.zeros(F, T, dtype=torch.bool)
        inside[1:4, 2:5] = inside[5:8, 6:9] = True
        A[:, ~inside] = 1.0
    return V, W, H, A, [list(b) for b in groups]


def _both_paths(which, V, W, H, A, groups, beta, lam_c):
    """(neg, pos) of the dense per-source path and of the marked-bins path (:class:`_Marked`)."""
    spans = _spans(groups)
    marked = [bool((A[s] < 1).any()) for s in range(len(groups))]
    dense = _terms(which, V, W, H, A, spans, marked, beta, lam_c)
    return dense, _terms_marked(which, V, W, H, _Marked(A, spans, lam_c), beta, lam_c)


def _weighted(W, H, A, groups):
    """The model written directly: sum_s A_s * (W_s H_s^T)."""
    return sum(A[s] * (W[:, g] @ H[:, g].t()) for s, g in enumerate(groups))


def _objective_autograd(V, W, H, A, groups, beta, lam):
    c = _penalty_scale(V, beta)
    pen = sum(((A[s] == 0) * (W[:, g] @ H[:, g].t())).sum() for s, g in enumerate(groups))
    return div.beta_divergence(V, _weighted(W, H, A, groups), beta) + lam * c * pen


# ------------------------------------------------------------- the model
@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0, 1.5, 2.0])
@pytest.mark.parametrize("penalty", [0.0, 1.0, 0.3])
@pytest.mark.parametrize("which", ["W", "H"])
@pytest.mark.parametrize("path, boxes", [("dense", False), ("marked", False), ("marked", True), ("dense", True)])
def test_terms_equal_general_vjp_path(beta, penalty, which, path, boxes):
    # oracle: the general path, autograd's vector-Jacobian product of the reconstruction with the
    # output-space terms of divergence.mu_terms, plus the penalty's gradient in the positive part;
    # for the dense per-source path and the marked-bins path, with weights everywhere or in boxes
    V, W, H, A, groups = _problem(boxes=boxes)
    lam_c = penalty * _penalty_scale(V, beta)
    dense, marked_bins = _both_paths(which, V, W, H, A, groups, beta, lam_c)
    neg, pos = dense if path == "dense" else marked_bins

    x = (W if which == "W" else H).clone().requires_grad_(True)
    Y = _weighted(x, H, A, groups) if which == "W" else _weighted(W, x, A, groups)
    neg_out, pos_out = div.mu_terms(V, Y.detach(), beta)
    pos_out = torch.ones_like(Y) if pos_out is None else pos_out
    ref_neg, = torch.autograd.grad(Y, x, neg_out, retain_graph=True)
    ref_pos, = torch.autograd.grad(Y, x, pos_out, retain_graph=True)
    Wp, Hp = (x, H) if which == "W" else (W, x)
    pen = sum(((A[s] == 0) * (Wp[:, g] @ Hp[:, g].t())).sum() for s, g in enumerate(groups))
    ref_pos = ref_pos + lam_c * torch.autograd.grad(pen, x)[0]
    torch.testing.assert_close(neg, ref_neg)
    torch.testing.assert_close(pos, ref_pos)

    # gradient consistency: pos - neg is the gradient of the whole objective
    x2 = x.detach().clone().requires_grad_(True)
    args = (x2, H) if which == "W" else (W, x2)
    grad, = torch.autograd.grad(_objective_autograd(V, *args, A, groups, beta, penalty), x2)
    torch.testing.assert_close(pos - neg, grad)


@pytest.mark.parametrize("beta", [1.0, 0.5])
def test_marked_bins_path_fits_as_the_dense_path(beta, monkeypatch):
    # oracle: path equivalence, 30 iterations of either path from the same start (float64)
    V, W, H, A, groups = _problem(seed=4, F=20, T=24, boxes=True)
    A[0, 2:6, 3:9] = 0.4  # a weight below 1 (no penalty there, positive weights other than 1)
    fits = []
    for share in (1.0, -1.0):
        monkeypatch.setattr(guided_module, "SPARSE_SHARE", share)
        W1, H1, losses = W.clone(), H.clone(), []
        _fit(V, W1, H1, A, groups, beta=beta, penalty=1.0, n_iter=30, tol=1e-12,
             callback=lambda i, loss: losses.append(loss))
        fits.append((W1, H1, losses))
    torch.testing.assert_close(fits[0][0], fits[1][0], rtol=1e-9, atol=0)
    torch.testing.assert_close(fits[0][1], fits[1][1], rtol=1e-9, atol=0)
    assert fits[0][2] == pytest.approx(fits[1][2], rel=1e-12)


def test_objective_equals_slow_float64_loop():
    # oracle: the objective as an explicit loop over bins, sources and components
    V, W, H, A, groups = _problem(seed=3, F=5, T=6)
    beta, lam = 1.5, 0.7
    c = float((V ** beta).sum() / V.sum())
    total = 0.0
    for f in range(V.shape[0]):
        for t in range(V.shape[1]):
            y = pen = 0.0
            for s, g in enumerate(groups):
                p = sum(float(W[f, r] * H[t, r]) for r in g)
                y += float(A[s, f, t]) * p
                pen += p if float(A[s, f, t]) == 0 else 0.0
            v = float(V[f, t])
            total += (v ** beta + (beta - 1) * y ** beta - beta * v * y ** (beta - 1)) / (beta * (beta - 1))
            total += lam * c * pen
    assert guided_objective(V, W, H, A, groups, beta, lam) == pytest.approx(total, rel=1e-10)


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0, 1.5, 2.0])
@pytest.mark.parametrize("penalty", [0.0, 1.0])
@pytest.mark.parametrize("share", [0.3, 1.0, -1.0])  # the default choice, always / never the marked-bins path
def test_objective_never_increases(beta, penalty, share, monkeypatch):
    # oracle: the multiplicative updates are majorisation-minimisation steps
    monkeypatch.setattr(guided_module, "SPARSE_SHARE", share)
    V, W, H, A, groups = _problem(seed=1, F=12, T=14, boxes=share == 0.3)
    values = [guided_objective(V, W, H, A, groups, beta, penalty)]
    for _ in range(40):
        _fit(V, W, H, A, groups, beta=beta, penalty=penalty, n_iter=1, tol=0.0, callback=None)
        values.append(guided_objective(V, W, H, A, groups, beta, penalty))
    steps = torch.tensor(values[1:]) - torch.tensor(values[:-1])
    assert float(steps.max()) <= 1e-9 * values[0], steps.max()
    assert values[-1] < values[0]


# ----------------------------------------------------------- the marks
def test_mark_weights_rules():
    # a box covers frames with centres in [t0, t1) and bins in [f0, f1)
    sr, n_fft, hop, T = 8000, 256, 64, 40
    F = n_fft // 2 + 1
    A = mark_weights([Mark(0, 0.08, 0.16, 500, 1000, weight=0.75)], 2, sr=sr, n_frames=T, n_fft=n_fft,
                     hop_length=hop)
    frames = slice(10, 20)  # centres t * 64 / 8000 in [0.08, 0.16)
    bins = slice(16, 32)    # k * 8000 / 256 in [500, 1000)
    assert float(A[0].min()) == 1.0
    assert torch.all(A[1, bins, frames] == 0.25)
    outside = torch.ones(F, T, dtype=torch.bool)
    outside[bins, frames] = False
    assert torch.all(A[1][outside] == 1.0)
    # absent: only that source's weight
    A = mark_weights([Mark(1, 0.0, 0.1, absent=True, weight=0.6)], 2, sr=sr, n_frames=T, n_fft=n_fft,
                     hop_length=hop)
    assert float(A[0].min()) == 1.0
    assert torch.allclose(A[1, :, :13], torch.full((F, 13), 0.4)) and float(A[1, :, 13:].min()) == 1.0


def test_overlapping_marks_higher_weight_then_later_wins():
    kw = dict(sr=8000, n_frames=20, n_fft=256, hop_length=64)
    strong, weak = Mark(0, 0.0, 0.1, weight=0.9), Mark(1, 0.0, 0.1, weight=0.5)
    for marks in ([strong, weak], [weak, strong]):  # the higher weight wins in either order
        A = mark_weights(marks, 2, **kw)
        assert float(A[0, 5, 3]) == 1.0 and float(A[1, 5, 3]) == pytest.approx(0.1)
    a, b = Mark(0, 0.0, 0.1, weight=0.8), Mark(1, 0.0, 0.1, weight=0.8)
    A = mark_weights([a, b], 2, **kw)  # equal weights: the later one
    assert float(A[1, 5, 3]) == 1.0 and float(A[0, 5, 3]) == pytest.approx(0.2)
    A = mark_weights([b, a], 2, **kw)
    assert float(A[0, 5, 3]) == 1.0 and float(A[1, 5, 3]) == pytest.approx(0.2)


def test_marks_as_plain_data_round_trip():
    marks = [Mark(0, 0.1, 0.5, 100, 900, 0.7), Mark(1, 0.2, 0.4, absent=True)]
    assert parse_marks([m.to_dict() for m in marks]) == marks
    assert parse_marks([(0, 0.1, 0.5, 100, 900, 0.7)]) == marks[:1]


def _inside_slow(polygon, t, f):
    """Ray casting written out per point and edge (float64 Python): is (t, f) inside the polygon?"""
    inside = False
    for i in range(len(polygon)):
        (t1, f1), (t2, f2) = polygon[i], polygon[(i + 1) % len(polygon)]
        if (f1 <= f < f2) or (f2 <= f < f1):
            if t < t1 + (f - f1) * (t2 - t1) / (f2 - f1):
                inside = not inside
    return inside


def test_polygon_covers_exactly_the_cells_inside_it():
    # a non-convex polygon (an L with a notch) well inside the grid: oracle a slow loop over every cell
    sr, n_fft, hop, T = 8000, 256, 64, 60
    poly = [(0.051, 210.0), (0.33, 230.0), (0.31, 900.0), (0.2, 620.0), (0.12, 1950.0), (0.043, 1500.0)]
    A = mark_weights([Mark.from_polygon(1, poly, weight=0.7)], 2, sr=sr, n_frames=T, n_fft=n_fft, hop_length=hop)
    expected = torch.ones(n_fft // 2 + 1, T, dtype=torch.float32)
    for k in range(n_fft // 2 + 1):
        for j in range(T):
            if _inside_slow(poly, j * hop / sr, k * sr / n_fft):
                expected[k, j] = 0.3
    assert int((expected < 1).sum()) > 100  # the oracle itself sees a region
    torch.testing.assert_close(A[0], expected, rtol=0, atol=1e-6)
    assert float(A[1].min()) == 1.0
    # absent: the polygon's cells of that source only
    A = mark_weights([Mark.from_polygon(0, poly, weight=0.7, absent=True)], 2, sr=sr, n_frames=T, n_fft=n_fft,
                     hop_length=hop)
    torch.testing.assert_close(A[0], expected, rtol=0, atol=1e-6)
    assert float(A[1].min()) == 1.0


@pytest.mark.parametrize("box", [(0.08, 0.16, 500, 1000), (0.0, 0.3, 0, 4000), (0.1, 0.6, 1000, 4000),
                                 (0.2, 0.201, 700, 705)])
def test_rectangle_polygon_equals_the_box_mark(box):
    # includes a box reaching sr / 2 and the last frame (cells beyond the box) and one thinner than a cell
    t0, t1, f0, f1 = box
    kw = dict(sr=8000, n_frames=76, n_fft=256, hop_length=64)
    rect = [(t0, f0), (t1, f0), (t1, f1), (t0, f1)]
    for absent in (False, True):
        a = mark_weights([Mark.from_polygon(0, rect, 0.8, absent)], 2, **kw)
        b = mark_weights([Mark(0, t0, t1, f0, f1, 0.8, absent)], 2, **kw)
        assert torch.equal(a, b)


def test_polygon_marks_round_trip_and_take_their_bounding_box():
    m = Mark.from_polygon(1, [(0.2, 300), (0.9, 350), (0.5, 1200)], weight=0.6)
    assert (m.t0, m.t1, m.f0, m.f1) == (0.2, 0.9, 300.0, 1200.0)
    assert parse_marks([m.to_dict()]) == [m]
    assert parse_marks([{"source": 1, "polygon": [[0.2, 300], [0.9, 350], [0.5, 1200]], "weight": 0.6}]) == [m]
    assert check_marks([m], n_sources=2, duration=2.0, sr=SR) == [m]


BAD_POLYGONS = [
    ([{"source": 0, "polygon": [[0.1, 100], [0.5, 100]]}], r"marks\[0\]: polygon has 2 vertices: a polygon needs "
     r"at least 3"),
    ([{"source": 0, "polygon": "0.1 100"}], r"marks\[0\]: polygon='0.1 100' must be a list of \[seconds, Hz\]"),
    ([{"source": 0, "polygon": [[0.1, 100], [0.5], [0.3, 400]]}], r"marks\[0\]: polygon\[1\]=\[0.5\] must be a "
     r"vertex \[seconds, Hz\]"),
    ([{"source": 0, "polygon": [[0.1, 100], [0.5, float("nan")], [0.3, 400]]}],
     r"marks\[0\]: polygon\[1\] frequency=nan must be a finite number"),
    ([{"source": 0, "polygon": [[0.1, 100], [0.5, 100], [0.3, 400]], "t0": 0.0}],
     r"marks\[0\]: t0=0 is not the polygon's bounding box \(t0=0.1\)"),
    ([{"source": 0, "polygon": [[0.1, 100], [5.0, 100], [0.3, 400]]}], r"marks\[0\]: t1=5 s lies outside the "
     r"audio \[0, 2\] s"),
    ([{"source": 0, "polygon": [[0.1, 100], [0.5, 100], [0.3, 9000]]}], r"f1=9000 Hz lies outside \[0, 4000\] Hz"),
    ([{"source": 0, "polygon": [[0.1, 100], [0.5, 100], [0.3, 100]]}], r"f1=100 Hz must be greater than f0=100 Hz"),
    ([{"source": 3, "polygon": [[0.1, 100], [0.5, 100], [0.3, 400]]}], r"source=3 is not a source index"),
]


@pytest.mark.parametrize("marks, message", BAD_POLYGONS)
def test_bad_polygons(marks, message):
    with pytest.raises(ParameterError, match=message):
        check_marks(marks, n_sources=2, duration=2.0, sr=SR)


BAD_MARKS = [
    ([(2, 0.1, 0.5)], r"marks\[0\]: source=2 is not a source index in \[0, 2\)"),
    ([(0, 0.1, 0.5), (-1, 0.1, 0.5)], r"marks\[1\]: source=-1"),
    ([(0, 0.5, 0.5)], r"marks\[0\]: t1=0.5 s must be greater than t0=0.5 s"),
    ([(0, 0.6, 0.2)], r"t1=0.2 s must be greater than t0=0.6 s"),
    ([(0, 0.1, 3.0)], r"marks\[0\]: t1=3 s lies outside the audio \[0, 2\] s"),
    ([(0, -0.1, 1.0)], r"t0=-0.1 s lies outside the audio"),
    ([(0, 0.1, 1.0, 0, 5000)], r"marks\[0\]: f1=5000 Hz lies outside \[0, 4000\] Hz"),
    ([(0, 0.1, 1.0, -5, 100)], r"f0=-5 Hz lies outside"),
    ([(0, 0.1, 1.0, 300, 200)], r"f1=200 Hz must be greater than f0=300 Hz"),
    ([(0, 0.1, float("nan"))], r"marks\[0\]: t1=nan must be a finite number"),
    ([(0, 0.1, 1.0, float("nan"), 100)], r"f0=nan must be a finite number"),
    ([{"source": 0, "t0": 0.1, "t1": 1.0, "weight": float("inf")}], r"weight=inf must be a finite number"),
    ([(0, 0.1, 1.0, 0, 100, 1.5)], r"weight=1.5 must lie in \[0, 1\]"),
    ([(0.5, 0.1, 1.0)], r"source=0.5 must be an integer"),
    ([(0, "a", 1.0)], r"t0='a' must be a number"),
    ([{"source": 0, "t0": 0.1, "t1": 1.0, "colour": "red"}], r"unknown keys \['colour'\]"),
    ([{"source": 0, "t0": 0.1}], r"lacks \['t1'\]"),
    ([(0, 0.1)], r"marks\[0\]=\(0, 0.1\) must be a Mark, a dict or a tuple \(source, t0, t1\[, f0, f1\[, weight\[, absent"),
    ([{"source": 0, "t0": 0.1, "t1": 1.0, "absent": "yes"}], r"absent='yes' must be true or false"),
    ("0 0.1 1.0", r"marks must be a list of marks"),
]


@pytest.mark.parametrize("marks, message", BAD_MARKS)
def test_bad_marks(marks, message):
    with pytest.raises(ParameterError, match=message):
        check_marks(marks, n_sources=2, duration=2.0, sr=SR)


def test_bad_marks_raise_from_separate_guided():
    y, _ = two_sources()
    with pytest.raises(ParameterError, match=r"marks\[0\]: t1=5 s lies outside the audio \[0, 2\] s"):
        separate_guided(y, SR, [(0, 0.1, 5.0)], SETTINGS, n_sources=2)
    with pytest.raises(ParameterError, match=r"n_sources=5 is more than the rank=4 components"):
        separate_guided(y, SR, [(0, 0.1, 0.5)], SETTINGS, n_sources=5)
    with pytest.raises(ParameterError, match=r"model='NMFD'"):
        separate_guided(y, SR, [(0, 0.1, 0.5)], SETTINGS.replace(model="NMFD"))
    with pytest.raises(ParameterError, match="give n_sources"):
        separate_guided(y, SR, [], SETTINGS)
    with pytest.raises(ParameterError, match="penalty=-1"):
        separate_guided(y, SR, [(0, 0.1, 0.5)], SETTINGS, penalty=-1)


def test_source_blocks_share_the_rank():
    assert source_blocks(5, 2) == [[0, 1, 2], [3, 4]]
    assert source_blocks(3, 3) == [[0], [1], [2]]


# ------------------------------------------------------- the separation
def test_sources_sum_to_mixture_and_masks_to_one():
    # invariant: the weighted masks sum to one, so the sources sum to the mixture
    y, _ = two_sources()
    sep = separate_guided(y, SR, [Mark(0, 0.0, 0.4), Mark(1, 1.0, 1.5, 1000, 4000, 0.7)], SETTINGS)
    assert isinstance(sep, GuidedSeparation) and sep.groups == [[0, 1], [2, 3]] and sep.unmarked == []
    est = sep.sources()
    assert est.shape == (2, 1, y.shape[-1]) and torch.isfinite(est).all()
    torch.testing.assert_close(est.sum(0), sep.mixture, atol=1e-4, rtol=0)
    torch.testing.assert_close(torch.as_tensor(sep.masks()).sum(0), torch.ones(sep.spectrogram.shape))
    # the masks use the weights: no part of source 1 in source 0's fully marked span
    masks = sep.masks()
    assert masks[2:, :, :20].max() < 1e-6
    assert sep.weights.shape == (2,) + sep.spectrogram.shape


def _tone_and_clicks():
    n = 2 * SR
    tone = 0.3 * harmonic_tone(220.0, 2.0, SR, 4)
    noise = clicks(SR, 2.0, every=0.25)[:n]
    return tone + noise, torch.stack([tone, noise])[:, None]


def test_marks_make_the_separation_clearly_better():
    # oracle: SI-SDR against the known sources; without marks the blocks are arbitrary
    # (scored in their better order), with four marks they follow the sources
    y, refs = _tone_and_clicks()
    settings = SETTINGS.replace(rank=6, n_iter=100, seed=0)

    def score(est):
        direct = sum(si_sdr(est[j], refs[j]) for j in range(2)) / 2
        swapped = sum(si_sdr(est[1 - j], refs[j]) for j in range(2)) / 2
        return max(direct, swapped)

    blind = score(separate_guided(y, SR, [], settings, n_sources=2).sources())
    marks = [Mark(0, 0.05, 0.22, 150, 1000), Mark(0, 1.05, 1.22, 150, 1000),    # the tone between clicks
             Mark(1, 0.0, 0.04, 2000, 4000), Mark(1, 1.0, 1.04, 2000, 4000)]    # clicks above its partials
    guided = separate_guided(y, SR, marks, settings)
    marked = sum(si_sdr(guided.sources()[j], refs[j]) for j in range(2)) / 2
    assert marked > blind + 3.0, (marked, blind)
    assert marked > 8.0, marked


@pytest.mark.parametrize("penalty", [0.0, 1.0])
def test_contradicting_mark_below_one_bends_but_does_not_silence(penalty):
    # the low tone alone sounds in 1.7-2.0 s, but a mark says "only the high tone" there
    y, refs = two_sources()
    seg = slice(int(1.75 * SR), int(1.95 * SR))
    true = float(refs[0, 0, seg].square().sum())
    right = [Mark(0, 0.0, 0.4), Mark(1, 0.95, 1.25)]
    est = separate_guided(y, SR, right + [Mark(1, 1.7, 2.0, weight=0.5)], SETTINGS, penalty=penalty).sources()
    assert float(est[0, 0, seg].square().sum()) > 0.5 * true
    assert si_sdr(est[0], refs[0]) > 10.0
    # with full confidence the mark is obeyed: the low source is silenced there
    est = separate_guided(y, SR, right + [Mark(1, 1.7, 2.0, weight=1.0)], SETTINGS, penalty=penalty).sources()
    assert float(est[0, 0, seg].square().sum()) < 1e-6 * true


def test_source_without_marks_is_reported_and_finite():
    y, _ = two_sources()
    sep = separate_guided(y, SR, [Mark(0, 0.0, 0.4)], SETTINGS.replace(rank=6), n_sources=3)
    assert sep.unmarked == [1, 2]
    assert torch.isfinite(sep.sources()).all() and sep.sources().shape[0] == 3


def test_warm_start_loss_no_higher_than_previous():
    y, _ = two_sources()
    marks = [Mark(0, 0.0, 0.4), Mark(1, 1.0, 1.5, 1000, 4000)]
    first = separate_guided(y, SR, marks, SETTINGS.replace(n_iter=20))
    again = refine(first, marks, n_iter=10, keep_components=False)
    assert again.losses[0][1] == pytest.approx(first.objective, rel=1e-5)
    assert again.objective <= first.objective * (1 + 1e-6)
    # new marks: warm start from the previous factors, one more source's mark obeyed
    more = refine(first, marks + [Mark(0, 1.7, 2.0)], keep_components=False)
    assert more.n_iter == 20 and len(more.marks) == 3  # min(settings.n_iter, REFINE_ITER)
    with pytest.raises(ParameterError, match="previous must be a GuidedSeparation"):
        refine(object(), marks)
    with pytest.raises(ParameterError, match=r"marks\[0\]: source=2"):
        refine(first, [(2, 0.0, 0.1)])


def test_same_seed_same_factors_and_pickle():
    y, _ = two_sources()
    marks = [Mark(0, 0.0, 0.4)]
    a = separate_guided(y, SR, marks, SETTINGS, n_sources=2, keep_components=False)
    b = separate_guided(y, SR, marks, SETTINGS, n_sources=2, keep_components=False)
    assert torch.equal(a.factors[0], b.factors[0]) and torch.equal(a.factors[1], b.factors[1])
    c = pickle.loads(pickle.dumps(a))
    torch.testing.assert_close(c.sources(), a.sources())


# ------------------------------------------------------------ command line
def _cli(argv, capsys):
    from nmfcore.cli import main

    code = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


CLI_FAST = ["--n-fft", "256", "--hop", "64", "--iter", "30", "--rank", "4", "-q"]


def test_cli_separate_with_marks(tmp_path, capsys):
    import json

    from nmfcore.audio import load_audio, write_audio

    y, _ = two_sources()
    mix = write_audio(tmp_path / "mix.wav", y, SR)
    marks = tmp_path / "marks.json"
    marks.write_text(json.dumps({"marks": [{"source": 0, "t0": 0.0, "t1": 0.4},
                                           {"source": 1, "t0": 1.0, "t1": 1.5, "f0": 1000, "f1": None,
                                            "weight": 0.9},
                                           {"source": 1, "polygon": [[1.6, 900], [1.9, 1000], [1.7, 3000]]}]}))
    code, out, err = _cli(["separate", mix, "-o", tmp_path / "out", "--marks", marks] + CLI_FAST, capsys)
    assert code == 0, err
    summary = json.loads((tmp_path / "out" / "mix" / "summary.json").read_text())
    assert summary["grouping"] == "marks" and summary["groups"] == [[0, 1], [2, 3]]
    stems = [load_audio(p)[0] for p in summary["files"]["sources"]]
    torch.testing.assert_close(stems[0] + stems[1], load_audio(mix)[0], atol=2e-4, rtol=0)


@pytest.mark.parametrize("content, message", [
    ('[{"source": 2, "t0": 0, "t1": 1}]', r"marks\[0\]: source=2 is not a source index in \[0, 2\)"),
    ('[{"source": 0, "t0": 1, "t1": 0.5}]', r"marks\[0\]: t1=0.5 s must be greater than t0=1 s"),
    ('[{"source": 0, "t0": 0, "t1": 9}]', r"t1=9 s lies outside the audio \[0, 2\] s"),
    ('[{"source": 0, "t0": 0, "t1": 1, "f1": 9000}]', r"f1=9000 Hz lies outside \[0, 4000\] Hz"),
    ('[{"source": 0, "t0": NaN, "t1": 1}]', r"t0=nan must be a finite number"),
    ('[{"source": 0, "polygon": [[0, 100], [1, 200]]}]', r"marks\[0\]: polygon has 2 vertices: a polygon needs at "
     r"least 3"),
    ('[{"source": 0, "polygon": [[0, 100], [1, 200], [3, 300]]}]', r"marks\[0\]: t1=3 s lies outside the audio"),
    ('[{"source": 0, "polygon": [[0, 100], [1, "x"], [0.5, 300]]}]', r"polygon\[1\] frequency='x' must be a number"),
    ('{"marks": [], "extra": 1}', r"must hold a list of marks or"),
    ('[{"source": 0, "t0": 0', r"is not valid JSON"),
])
def test_cli_bad_marks_one_error_line(tmp_path, capsys, content, message):
    import re

    from nmfcore.audio import write_audio

    y, _ = two_sources()
    mix = write_audio(tmp_path / "mix.wav", y, SR)
    marks = tmp_path / "marks.json"
    marks.write_text(content)
    code, _, err = _cli(["separate", mix, "-o", tmp_path / "out", "--marks", marks] + CLI_FAST, capsys)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:"), err
    assert re.search(message, lines[0]) and "marks.json" in lines[0], lines[0]


def test_cli_marks_and_groups_conflict(tmp_path, capsys):
    from nmfcore.audio import write_audio

    y, _ = two_sources()
    mix = write_audio(tmp_path / "mix.wav", y, SR)
    marks = tmp_path / "marks.json"
    marks.write_text("[]")
    code, _, err = _cli(["separate", mix, "-o", tmp_path / "out", "--marks", marks, "--groups", "0;1"] + CLI_FAST,
                        capsys)
    assert code == 2 and "--marks and --groups" in err
    code, _, err = _cli(["separate", mix, "-o", tmp_path / "out2", "--marks", tmp_path / "none.json"] + CLI_FAST,
                        capsys)
    assert code == 2 and "cannot be read" in err
