"""Tests for nmfcore.nmf: NMF, NMFD, NMF2D, NMF3D and their fits.

Oracles, named in each test: the reference's shapes; slow float64 explicit
sums of each model's formula; equivalence (fast path == general VJP path,
sparse V == dense V, CPU == CUDA, same seed == same factors); gradient
consistency (pos - neg == autograd); monotone objective; invariants.
"""

import copy
import itertools

import pytest
import torch

from nmfcore import metrics
from nmfcore.exceptions import ParameterError
from nmfcore._workspace import Workspace
from nmfcore.nmf import NMF, NMF2D, NMF3D, NMFD, BaseComponent
from nmfcore.operators import general_terms

F64 = torch.float64


def val(t):
    """A scalar tensor (possibly with grad) as a Python float."""
    return float(t.detach())


def rand(gen, *shape, low=0.0, dtype=F64):
    return torch.rand(*shape, generator=gen, dtype=dtype) + low


def lowrank(gen, n, c, r, noise=0.05, low=0.0):
    """A non-negative (n, c) matrix of rank r plus non-negative noise."""
    return rand(gen, n, r) @ rand(gen, c, r).t() + noise * rand(gen, n, c) + low


def nmf_model(V, rank, seed=0, cls=NMF, **kw):
    return cls(V.shape, rank, generator=seed, **kw).to(V.dtype)


def record_losses(model, V, **fit_kw):
    losses = []
    n = model.fit(V, tol=0, check_every=1, callback=lambda i, loss: losses.append(loss), **fit_kw)
    return n, losses


def assert_non_increasing(losses, rel=1e-9, what=""):
    for i, (a, b) in enumerate(zip(losses, losses[1:])):
        assert b <= a + rel * abs(a), f"{what}: loss rose at iteration {i + 1}: {a!r} -> {b!r}"


# ------------------------------------------------------------------ shapes
def test_nmf_reference_shapes():
    """Oracle: the reference docstring (V (N, C) -> W (C, R), H (N, R), model() (N, C))."""
    m = NMF((20, 30), 5)
    assert m.W.shape == (30, 5) and m.H.shape == (20, 5)
    assert m().shape == (20, 30)
    assert m.rank == 5
    assert isinstance(m.W, torch.nn.Parameter) and m.W.requires_grad


def test_nmfd_nmf2d_nmf3d_reference_shapes():
    """Oracle: the reference docstrings' shapes (H is V minus the kernel plus one)."""
    m = NMFD((1, 33, 50), 16, 3)
    assert m.W.shape == (33, 16, 3) and m.H.shape == (1, 16, 48) and m().shape == (1, 33, 50)
    m = NMF2D((1, 1, 33, 50), 16, 3)
    assert m.W.shape == (1, 16, 3, 3) and m.H.shape == (1, 16, 31, 48) and m().shape == (1, 1, 33, 50)
    m = NMF2D((2, 3, 10, 12), 4, (2, 5))
    assert m.W.shape == (3, 4, 2, 5) and m.H.shape == (2, 4, 9, 8) and m().shape == (2, 3, 10, 12)
    m = NMF3D((1, 3, 16, 16, 20), 8, (5, 5, 4))
    assert m.W.shape == (3, 8, 5, 5, 4) and m.H.shape == (1, 8, 12, 12, 17)
    assert m().shape == (1, 3, 16, 16, 20)


def test_rank_inferred_from_shape_tuples():
    """Oracle: reference Chain example, NMF(W=(24, 10)) has rank 10 and no H."""
    m = NMF(W=(24, 10))
    assert m.rank == 10 and m.W.shape == (24, 10) and m.H is None
    m = NMF(H=(7, 3))
    assert m.rank == 3 and m.W is None
    m = NMF(W=(5, 2), H=(4, 2))
    assert m.rank == 2 and m().shape == (4, 5)
    m = BaseComponent(rank=4)
    assert m.rank == 4 and m.W is None and m.H is None


def test_rank_inferred_from_tensors(gen):
    """Oracle: given tensors are copied (same values, dtype kept), rank from axis 1."""
    W = rand(gen, 6, 3)
    H = rand(gen, 5, 3)
    m = NMF(W=W, H=H)
    assert m.rank == 3
    assert torch.equal(m.W, W) and torch.equal(m.H, H)
    assert m.W.dtype == F64
    assert m.W.data_ptr() != W.data_ptr()  # a copy, the caller's tensor is not fitted in place
    torch.testing.assert_close(m(), H @ W.t())


def test_trainable_flags(gen):
    """Oracle: trainable_W/H=False gives parameters that do not require grad."""
    m = NMF(W=rand(gen, 6, 3), H=rand(gen, 5, 3), trainable_W=False)
    assert not m.W.requires_grad and m.H.requires_grad
    m = NMF(W=rand(gen, 6, 3), H=rand(gen, 5, 3), trainable_H=False)
    assert m.W.requires_grad and not m.H.requires_grad


def test_rank_mismatch_raises(gen):
    """Errors: W and H of different rank, or a rank that contradicts them."""
    with pytest.raises(ParameterError, match="rank mismatch"):
        NMF(W=rand(gen, 5, 3), H=rand(gen, 4, 2))
    with pytest.raises(ParameterError, match="rank mismatch"):
        NMF(W=(5, 3), H=(4, 2))
    with pytest.raises(ParameterError, match="rank=4"):
        NMF(W=rand(gen, 5, 3), rank=4)


def test_forward_uses_given_factors(gen):
    """Oracle: forward(H=..., W=...) replaces the module's own factors."""
    m = NMF((4, 5), 2, generator=0).double()
    H = rand(gen, 4, 2)
    W = rand(gen, 5, 2)
    torch.testing.assert_close(m(H=H), H @ m.W.t())
    torch.testing.assert_close(m(W=W), m.H @ W.t())
    torch.testing.assert_close(m(H, W), H @ W.t())
    with pytest.raises(ParameterError, match="H is None"):
        NMF(W=(5, 2))()


def test_generator_makes_construction_reproducible():
    """Oracle (determinism): the same generator seed gives the same initial factors."""
    a, b, c = NMF((8, 6), 3, generator=5), NMF((8, 6), 3, generator=5), NMF((8, 6), 3, generator=6)
    assert torch.equal(a.W, b.W) and torch.equal(a.H, b.H)
    assert not torch.equal(a.W, c.W)
    assert (a.W >= 0).all() and (a.H >= 0).all()


# ------------------------------------------------------ slow float64 oracles
def test_nmf_reconstruct_matches_explicit_sum(gen):
    """Oracle: V[n, c] = sum_r H[n, r] W[c, r], explicit loops in float64."""
    H, W = rand(gen, 4, 3), rand(gen, 5, 3)
    Y = NMF.reconstruct(H, W)
    for n, c in itertools.product(range(4), range(5)):
        assert float(Y[n, c]) == pytest.approx(sum(float(H[n, r] * W[c, r]) for r in range(3)), rel=1e-12)


def test_nmfd_reconstruct_matches_papers_sum_over_tau(gen):
    """Oracle: Smaragdis' NMFD, V[b, i, j] = sum_t sum_r W[i, r, t] H[b, r, j - t]."""
    B, C, R, T, L = 2, 3, 2, 3, 5
    W, H = rand(gen, C, R, T), rand(gen, B, R, L)
    Y = NMFD.reconstruct(H, W)
    assert Y.shape == (B, C, L + T - 1)
    for b, i, j in itertools.product(range(B), range(C), range(L + T - 1)):
        expected = sum(float(W[i, r, t] * H[b, r, j - t])
                       for t in range(T) for r in range(R) if 0 <= j - t < L)
        assert float(Y[b, i, j]) == pytest.approx(expected, rel=1e-12, abs=1e-14)


def test_nmf2d_reconstruct_matches_explicit_sum(gen):
    """Oracle: Schmidt & Morup, V[b, i, j, k] = sum_{l, m, r} W[i, r, l, m] H[b, r, j - l, k - m]."""
    B, C, R, K1, K2, L1, L2 = 1, 2, 2, 2, 3, 3, 4
    W, H = rand(gen, C, R, K1, K2), rand(gen, B, R, L1, L2)
    Y = NMF2D.reconstruct(H, W)
    assert Y.shape == (B, C, L1 + K1 - 1, L2 + K2 - 1)
    for b, i, j, k in itertools.product(range(B), range(C), range(L1 + K1 - 1), range(L2 + K2 - 1)):
        expected = sum(float(W[i, r, l, m] * H[b, r, j - l, k - m])
                       for l in range(K1) for m in range(K2) for r in range(R)
                       if 0 <= j - l < L1 and 0 <= k - m < L2)
        assert float(Y[b, i, j, k]) == pytest.approx(expected, rel=1e-12, abs=1e-14)


def test_nmf3d_reconstruct_matches_explicit_sum(gen):
    """Oracle: V[b, i, j, k, l] = sum_{m, n, u, r} W[i, r, m, n, u] H[b, r, j - m, k - n, l - u]."""
    B, C, R = 1, 2, 2
    K = (2, 2, 2)
    L = (2, 3, 2)
    W, H = rand(gen, C, R, *K), rand(gen, B, R, *L)
    Y = NMF3D.reconstruct(H, W)
    out = tuple(a + k - 1 for a, k in zip(L, K))
    assert Y.shape == (B, C) + out
    for b, i, j, k, l in itertools.product(range(B), range(C), *(range(o) for o in out)):
        expected = 0.0
        for m, n, u, r in itertools.product(range(K[0]), range(K[1]), range(K[2]), range(R)):
            if 0 <= j - m < L[0] and 0 <= k - n < L[1] and 0 <= l - u < L[2]:
                expected += float(W[i, r, m, n, u] * H[b, r, j - m, k - n, l - u])
        assert float(Y[b, i, j, k, l]) == pytest.approx(expected, rel=1e-12, abs=1e-14)


# ------------------------------------------------- fast path == general path
TERM_BETAS = [0.0, 0.5, 1.0, 2.0, 3.0]


def _models(gen):
    """(model, V) pairs for every model class, float64, strictly positive V."""
    out = []
    m = NMF(W=rand(gen, 9, 3, low=0.1), H=rand(gen, 11, 3, low=0.1))
    out.append((m, rand(gen, 11, 9, low=0.1)))
    m = NMFD(W=rand(gen, 6, 3, 4, low=0.1), H=rand(gen, 2, 3, 10, low=0.1))
    out.append((m, rand(gen, 2, 6, 13, low=0.1)))
    m = NMF2D(W=rand(gen, 2, 3, 2, 3, low=0.1), H=rand(gen, 1, 3, 5, 6, low=0.1))
    out.append((m, rand(gen, 1, 2, 6, 8, low=0.1)))
    m = NMF3D(W=rand(gen, 2, 2, 2, 2, 2, low=0.1), H=rand(gen, 1, 2, 3, 3, 2, low=0.1))
    out.append((m, rand(gen, 1, 2, 4, 4, 3, low=0.1)))
    return out


def _assert_terms_equal(fast, general):
    for f, g in zip(fast, general):
        # the beta=1 fast path may return the (broadcastable) column sum
        torch.testing.assert_close(torch.broadcast_to(f, g.shape), g, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("beta", TERM_BETAS)
@pytest.mark.parametrize("which", ["W", "H"])
def test_fast_terms_equal_general_terms_dense(gen, beta, which):
    """Oracle (equivalence): model.operator.terms == operators.general_terms (autograd), every model class."""
    for model, V in _models(gen):
        W, H = model.W.detach(), model.H.detach()
        fast = model.operator.terms(which, V, W, H, beta, Workspace())
        general = general_terms(model.reconstruct, which, V, W, H, beta)
        _assert_terms_equal(fast, general)


@pytest.mark.parametrize("beta", TERM_BETAS)
@pytest.mark.parametrize("which", ["W", "H"])
def test_fast_terms_equal_general_terms_sparse_nmf(gen, beta, which):
    """Oracle (equivalence): NMF's sparse-V terms == the general path on the dense V."""
    V = rand(gen, 12, 10)
    V[V < 0.6] = 0
    W, H = rand(gen, 10, 3, low=0.1), rand(gen, 12, 3, low=0.1)
    model = NMF(W=W, H=H)
    fast = model.operator.terms(which, V.to_sparse(), W, H, beta, Workspace())
    general = general_terms(model.reconstruct, which, V, W, H, beta)
    _assert_terms_equal([t.to_dense() if t.is_sparse else t for t in fast], general)


@pytest.mark.parametrize("beta", TERM_BETAS)
@pytest.mark.parametrize("which", ["W", "H"])
def test_fast_terms_on_transposed_v_equal_general_terms(gen, beta, which):
    """Oracle (equivalence): NMF's fast terms for a V given as a transposed view (Y written as
    Y^T = W H^T in V's layout) == the general path on the contiguous V."""
    V = rand(gen, 9, 11, low=0.1).t()
    W, H = rand(gen, 9, 3, low=0.1), rand(gen, 11, 3, low=0.1)
    model = NMF(W=W, H=H)
    ws = Workspace()
    for _ in range(2):  # and again with the workspace buffers reused
        fast = model.operator.terms(which, V, W, H, beta, ws)
        _assert_terms_equal(fast, general_terms(model.reconstruct, which, V.contiguous(), W, H, beta))
    if beta != 2:
        assert "Yt" in ws and "Y" not in ws  # the reconstruction was written in V's layout


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0, 1.5, 2.0])
def test_fit_on_transposed_view_equals_fit_on_copy(gen, beta):
    """Oracle (equivalence): fitting S.t() (kept as a view, no copy of V) gives the factors and
    losses of fitting its contiguous copy, for the MU paths with and without rescaling."""
    for scale in (1.0, 1e6):
        S = lowrank(gen, 12, 16, 3, low=0.01) * scale  # (C, N): a spectrogram (freq, frames)
        runs = []
        for V in (S.t(), S.t().contiguous()):
            m = nmf_model(V, 3, seed=1)
            n, losses = record_losses(m, V, beta=beta, max_iter=30, solver="mu")
            runs.append((m.W.detach(), m.H.detach(), losses))
        (W1, H1, l1), (W2, H2, l2) = runs
        torch.testing.assert_close(W1, W2, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(H1, H2, rtol=1e-9, atol=1e-12 * scale)
        assert l1 == pytest.approx(l2, rel=1e-9)


def test_fit_keeps_transposed_view_without_copy(gen, monkeypatch):
    """Invariant (memory): a V given as a transposed view reaches the updates as that view."""
    from nmfcore.operators import MatrixProduct

    seen = []
    original = MatrixProduct.terms

    def spy(self, which, V, *a):
        seen.append(V)
        return original(self, which, V, *a)

    monkeypatch.setattr(MatrixProduct, "terms", spy)
    S = lowrank(gen, 12, 16, 3, low=0.01)
    m = nmf_model(S.t(), 3)
    m.fit(S.t(), beta=1, max_iter=2, tol=0, solver="mu")
    assert seen and all(v.data_ptr() == S.data_ptr() and v.stride() == S.t().stride() for v in seen)


@pytest.mark.parametrize("cls", [NMF, NMFD])
def test_fast_terms_workspace_reuse_is_not_stale(gen, cls):
    """Oracle (equivalence): reusing one workspace across updates gives the same terms as a fresh one."""
    if cls is NMF:
        V = rand(gen, 11, 9, low=0.1)
        model = NMF(W=rand(gen, 9, 3, low=0.1), H=rand(gen, 11, 3, low=0.1))
    else:
        V = rand(gen, 1, 9, 14, low=0.1)
        model = NMFD(W=rand(gen, 9, 3, 3, low=0.1), H=rand(gen, 1, 3, 12, low=0.1))
    W, H = model.W.detach().clone(), model.H.detach().clone()
    for beta in TERM_BETAS:
        ws = Workspace()
        for _ in range(3):
            for which in ("W", "H"):
                fast = model.operator.terms(which, V, W, H, beta, ws)
                _assert_terms_equal(fast, general_terms(model.reconstruct, which, V, W, H, beta))
                (W if which == "W" else H).mul_(1.1)


@pytest.mark.parametrize("beta", TERM_BETAS)
@pytest.mark.parametrize("which", ["W", "H"])
@pytest.mark.parametrize("N, T", [(1, 1), (1, 5), (3, 2)])
def test_nmfd_product_form_equals_general_terms(gen, beta, which, N, T):
    """Oracle (equivalence): NMFD's terms through the lagged-copies product (reconstruction and
    terms in workspace buffers, matrix-product pull-backs) == the autograd path of conv1d, for a
    kernel of one lag, one and several batches; a strided V takes the general path, same terms."""
    C, R, L = 7, 3, 11
    V = rand(gen, N, C, L + T - 1, low=0.1)
    model = NMFD(W=rand(gen, C, R, T, low=0.1), H=rand(gen, N, R, L, low=0.1))
    W, H = model.W.detach(), model.H.detach()
    ws = Workspace()
    fast = model.operator.terms(which, V, W, H, beta, ws)
    general = general_terms(model.reconstruct, which, V, W, H, beta)
    _assert_terms_equal(fast, general)
    if beta != 2:
        assert ws["terms"].shape == (2,) + V.shape and "lags" in ws  # Y and its terms were written in place
    strided = V.transpose(1, 2).contiguous().transpose(1, 2)
    _assert_terms_equal(model.operator.terms(which, strided, W, H, beta, Workspace()), general)


@pytest.mark.parametrize("beta", TERM_BETAS)
@pytest.mark.parametrize("which", ["W", "H"])
@pytest.mark.parametrize("cls, N, C, kernel", [(NMF2D, 1, 1, (1, 1)), (NMF2D, 1, 1, (3, 2)), (NMF2D, 2, 3, (2, 4)),
                                               (NMF3D, 1, 1, (1, 1, 1)), (NMF3D, 2, 2, (2, 1, 3))])
def test_tap_plane_product_form_equals_general_terms(gen, beta, which, cls, N, C, kernel, monkeypatch):
    """Oracle (equivalence): NMF2D's and NMF3D's terms through the tap planes (reconstruction and
    terms in workspace buffers, one product per pull-back) == the autograd path of conv2d / conv3d,
    for a 1 x 1 (x 1) kernel, one and several batches and channels; beyond the operator's max_entries the
    fit keeps the general path, with the same terms."""
    R, spatial = 3, (7, 9, 4)[:len(kernel)]
    V = rand(gen, N, C, *(n + k - 1 for n, k in zip(spatial, kernel)), low=0.1)
    model = cls(W=rand(gen, C, R, *kernel, low=0.1), H=rand(gen, N, R, *spatial, low=0.1))
    W, H = model.W.detach(), model.H.detach()
    general = general_terms(model.reconstruct, which, V, W, H, beta)
    ws = Workspace()
    for _ in range(2):  # and with the workspace reused
        _assert_terms_equal(model.operator.terms(which, V, W, H, beta, ws), general)
    assert "planes" in ws and "windows" in ws
    monkeypatch.setattr(cls.operator, "max_entries", 1)
    ws = Workspace()
    _assert_terms_equal(model.operator.terms(which, V, W, H, beta, ws), general)
    assert "planes" not in ws and "windows" not in ws


@pytest.mark.parametrize("cls, V_shape, W_shape, H_shape", [
    (NMF2D, (1, 1, 12, 15), (1, 3, 3, 2), (1, 3, 10, 14)),
    (NMF3D, (1, 2, 6, 7, 5), (2, 3, 2, 3, 2), (1, 3, 5, 5, 4))])
def test_tap_plane_fit_is_monotone_and_matches_conv_fit(gen, monkeypatch, cls, V_shape, W_shape, H_shape):
    """Oracles: the NMF2D / NMF3D fit through the product form never increases the objective, and gives
    the factors of the fit through conv2d / conv3d (max_entries = 1) up to float64 rounding."""
    V = rand(gen, *V_shape, low=0.05)
    runs = []
    for cap in (cls.operator.max_entries, 1):
        monkeypatch.setattr(cls.operator, "max_entries", cap)
        m = cls(W=rand(gen.manual_seed(3), *W_shape, low=0.1), H=rand(gen, *H_shape, low=0.1))
        n, losses = record_losses(m, V, beta=1, max_iter=40)
        assert_non_increasing(losses, what=f"{cls.__name__} product form cap={cap}")
        runs.append((m.W.detach(), m.H.detach()))
    torch.testing.assert_close(runs[0][0], runs[1][0], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(runs[0][1], runs[1][1], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("beta", TERM_BETAS + [-0.5, 1.5])
@pytest.mark.parametrize("which", ["W", "H"])
def test_general_terms_difference_is_autograd_gradient(gen, beta, which):
    """Oracle (gradient consistency): pos - neg == d beta_div(model(H, W), V) / d which."""
    for model, V in _models(gen):
        W, H = model.W.detach().clone(), model.H.detach().clone()
        neg, pos = general_terms(model.reconstruct, which, V, W, H, beta)
        x = (W if which == "W" else H).clone().requires_grad_(True)
        Y = model.reconstruct(H, x) if which == "W" else model.reconstruct(x, W)
        (grad,) = torch.autograd.grad(metrics.beta_div(Y, V, beta), x)
        assert (neg >= 0).all() and (pos >= 0).all()
        torch.testing.assert_close(pos - neg, grad, rtol=1e-9, atol=1e-11)


# ------------------------------------------------------- monotone objective
MONO_BETAS = [-0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0]


def _nmfd_problem(gen):
    W, H = rand(gen, 10, 3, 4), rand(gen, 1, 3, 30)
    V = NMFD.reconstruct(H, W) + 0.05 * rand(gen, 1, 10, 33) + 0.01
    return V


@pytest.mark.parametrize("beta", MONO_BETAS)
@pytest.mark.parametrize("alpha", [0.0, 0.1])
def test_nmf_mu_objective_never_increases(gen, beta, alpha):
    """Oracle (monotone objective): each MU iteration never increases the (L1-penalised) loss."""
    V = lowrank(gen, 25, 20, 4, low=0.01)
    m = nmf_model(V, 4)
    n, losses = record_losses(m, V, beta=beta, max_iter=40, solver="mu", alpha=alpha, l1_ratio=1.0)
    assert n == 40 and len(losses) == 41
    assert losses[-1] < losses[0]
    assert_non_increasing(losses, what=f"NMF mu beta={beta} alpha={alpha}")


@pytest.mark.parametrize("beta", MONO_BETAS)
@pytest.mark.parametrize("alpha", [0.0, 0.1])
def test_nmfd_mu_objective_never_increases(gen, beta, alpha):
    """Oracle (monotone objective): NMFD MU through the convolution never increases the loss."""
    V = _nmfd_problem(gen)
    m = nmf_model(V, 3, cls=NMFD, T=4)
    n, losses = record_losses(m, V, beta=beta, max_iter=30, alpha=alpha, l1_ratio=1.0)
    assert losses[-1] < losses[0]
    assert_non_increasing(losses, what=f"NMFD beta={beta} alpha={alpha}")


@pytest.mark.parametrize("alpha, l1_ratio", [(0.0, 0.0), (0.2, 1.0), (0.2, 0.0), (0.2, 0.5)])
def test_nmf_hals_objective_never_increases(gen, alpha, l1_ratio):
    """Oracle (monotone objective): every HALS iteration never increases the penalised beta=2 loss."""
    V = lowrank(gen, 25, 20, 4)
    m = nmf_model(V, 4)
    n, losses = record_losses(m, V, beta=2, max_iter=40, solver="hals", alpha=alpha, l1_ratio=l1_ratio)
    assert losses[-1] < losses[0]
    assert_non_increasing(losses, what=f"HALS alpha={alpha} l1_ratio={l1_ratio}")


def test_callback_loss_is_the_penalised_objective(gen):
    """Oracle: the loss passed to the callback is d_beta(V | WH) + alpha l1 (|W|_1 + |H|_1) + L2 terms."""
    V = lowrank(gen, 15, 12, 3)
    for beta, alpha, l1_ratio in ((1.0, 0.3, 0.5), (2.0, 0.3, 0.5), (0.5, 0.0, 0.0)):
        m = nmf_model(V, 3)
        seen = []
        m.fit(V, beta=beta, max_iter=0, alpha=alpha, l1_ratio=l1_ratio, callback=lambda i, loss: seen.append(loss))
        W, H = m.W.detach(), m.H.detach()
        expected = (metrics.beta_div(H @ W.t(), V, beta) + alpha * l1_ratio * (W.sum() + H.sum())
                    + 0.5 * alpha * (1 - l1_ratio) * (W.square().sum() + H.square().sum()))
        assert seen[0] == pytest.approx(float(expected), rel=1e-10)


# ------------------------------------------------------- frozen parameters
@pytest.mark.parametrize("scale", [1.0, 2.0 ** 20])
@pytest.mark.parametrize("frozen", ["W", "H"])
def test_frozen_parameter_bit_identical_after_fit(gen, frozen, scale):
    """Invariant: a parameter with trainable_*=False is never changed, also when V is rescaled inside."""
    V = lowrank(gen, 20, 15, 3) * scale
    W0, H0 = rand(gen, 15, 3, low=0.1), rand(gen, 20, 3, low=0.1)
    for method, kw in (("fit", dict(beta=1, max_iter=15, tol=0)),
                       ("fit", dict(beta=2, max_iter=15, tol=0)),
                       ("fit", dict(beta=1, max_iter=5, tol=0, init="random", generator=0)),
                       ("fit", dict(beta=2, max_iter=5, tol=0, init="nndsvda")),
                       ("sparse_fit", dict(max_iter=10, sW=0.5, sH=0.5))):
        m = NMF(W=W0, H=H0, trainable_W=frozen != "W", trainable_H=frozen != "H")
        getattr(m, method)(V, **kw)
        fixed, free = (m.W, m.H) if frozen == "W" else (m.H, m.W)
        assert torch.equal(fixed, W0 if frozen == "W" else H0), (method, kw)
        assert not torch.equal(free, H0 if frozen == "W" else W0), (method, kw)
        assert torch.isfinite(free).all() and (free >= 0).all()


def test_frozen_nmfd_template(gen):
    """Invariant: NMFD with a fixed template (supervised NMFD) leaves W bit-identical."""
    V = _nmfd_problem(gen)
    W0 = rand(gen, 10, 3, 4, low=0.1)
    m = NMFD(W=W0, H=rand(gen, 1, 3, 30, low=0.1), trainable_W=False)
    m.fit(V, beta=1, max_iter=10, tol=0)
    assert torch.equal(m.W, W0)


def test_both_frozen_changes_nothing(gen):
    """Invariant: with both parameters frozen a fit runs and changes nothing (huge V included)."""
    V = lowrank(gen, 10, 8, 2) * 1e9
    W0, H0 = rand(gen, 8, 2), rand(gen, 10, 2)
    m = NMF(W=W0, H=H0, trainable_W=False, trainable_H=False)
    m.fit(V, beta=1, max_iter=3, tol=0)
    assert torch.equal(m.W, W0) and torch.equal(m.H, H0)


# --------------------------------------------------------- sparse == dense
@pytest.mark.parametrize("beta", [1.0, 2.0, 0.5])
@pytest.mark.parametrize("solver", ["auto", "mu"])
@pytest.mark.parametrize("scale", [1.0, 2.0 ** 15])
def test_sparse_v_gives_same_factors_as_dense(gen, beta, solver, scale):
    """Oracle (equivalence): fit on torch.sparse_coo_tensor(V) == fit on the dense V.

    The sparse V is given uncoalesced (every stored value split into two
    duplicates), and also scaled so that the fit rescales it internally.
    """
    V = lowrank(gen, 30, 20, 3, noise=0.0) * scale
    V[rand(gen, 30, 20) < 0.6] = 0
    idx = V.nonzero().t()
    vals = V[V != 0]
    Vs = torch.sparse_coo_tensor(torch.cat([idx, idx], 1), torch.cat([0.25 * vals, 0.75 * vals]), V.shape,
                                 check_invariants=True)
    assert not Vs.is_coalesced()
    a, b = nmf_model(V, 3), nmf_model(V, 3)
    na = a.fit(V, beta=beta, tol=0, max_iter=40, solver=solver)
    nb = b.fit(Vs, beta=beta, tol=0, max_iter=40, solver=solver)
    assert na == nb == 40
    torch.testing.assert_close(b.W, a.W, rtol=1e-7, atol=1e-10 * scale)
    torch.testing.assert_close(b.H, a.H, rtol=1e-7, atol=1e-10 * scale)


@pytest.mark.parametrize("beta", [1.0, 2.0])
def test_sparse_v_losses_equal_dense(gen, beta):
    """Oracle (equivalence): the callback losses on sparse V equal those on dense V."""
    V = lowrank(gen, 20, 15, 3, noise=0.0)
    V[rand(gen, 20, 15) < 0.5] = 0
    a, b = nmf_model(V, 3), nmf_model(V, 3)
    _, la = record_losses(a, V, beta=beta, max_iter=10, solver="mu")
    _, lb = record_losses(b, V.to_sparse(), beta=beta, max_iter=10, solver="mu")
    assert lb == pytest.approx(la, rel=1e-9)


def test_sparse_fit_sparse_v_same_as_dense(gen):
    """Oracle (equivalence): sparse_fit on a sparse V == sparse_fit on the dense V."""
    V = lowrank(gen, 20, 15, 3)
    V[rand(gen, 20, 15) < 0.5] = 0
    a, b = nmf_model(V, 3), nmf_model(V, 3)
    a.sparse_fit(V, max_iter=15, sH=0.5)
    b.sparse_fit(V.to_sparse(), max_iter=15, sH=0.5)
    torch.testing.assert_close(b.W, a.W, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(b.H, a.H, rtol=1e-9, atol=1e-12)


# -------------------------------------------------------------- determinism
@pytest.mark.parametrize("init", ["random", "nndsvdar", None])
def test_same_seed_same_factors(gen, init):
    """Oracle (determinism): the same generator seeds give bit-identical factors."""
    V = lowrank(gen, 20, 15, 3)
    runs = []
    for seed in (3, 3, 4):
        m = NMF(V.shape, 3, generator=seed).double()
        m.fit(V, beta=1, max_iter=10, tol=0, init=init, generator=seed + 100)
        runs.append((m.W.detach().clone(), m.H.detach().clone()))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    assert not torch.equal(runs[0][0], runs[2][0])


def test_fit_leaves_global_rng_alone(gen):
    """Invariant: a seeded fit neither reads nor seeds torch's global RNG."""
    V = lowrank(gen, 10, 8, 2)
    state = torch.random.get_rng_state()
    m = NMF(V.shape, 2, generator=1).double()
    m.fit(V, max_iter=3, init="random", generator=2)
    assert torch.equal(torch.random.get_rng_state(), state)


# ----------------------------------------------------------------- callback
def test_callback_returning_true_stops(gen):
    """Oracle: a callback returning True stops the fit, which returns that iteration."""
    V = lowrank(gen, 15, 10, 2)
    m = nmf_model(V, 2)
    calls = []

    def cb(i, loss):
        calls.append(i)
        return i == 3

    assert m.fit(V, tol=0, max_iter=50, check_every=1, callback=cb) == 3
    assert calls == [0, 1, 2, 3]


def test_callback_stop_at_zero_leaves_factors_unchanged(gen):
    """Oracle: stopping at iteration 0 returns 0 and leaves W, H bit-identical (also for huge V)."""
    for scale in (1.0, 1e12):
        V = lowrank(gen, 15, 10, 2) * scale
        m = nmf_model(V, 2)
        W0, H0 = m.W.detach().clone(), m.H.detach().clone()
        assert m.fit(V, tol=0, max_iter=50, callback=lambda i, loss: True) == 0
        assert torch.equal(m.W, W0) and torch.equal(m.H, H0)


def test_callback_called_every_check(gen):
    """Oracle: callback at iteration 0, every check_every iterations and at max_iter."""
    V = lowrank(gen, 15, 10, 2)
    calls = []
    nmf_model(V, 2).fit(V, tol=0, max_iter=25, check_every=10, callback=lambda i, loss: calls.append(i))
    assert calls == [0, 10, 20, 25]


def test_tol_stops_early(gen):
    """Oracle: the reference stopping rule ends a converged fit before max_iter."""
    V = lowrank(gen, 15, 10, 2, noise=0.0)
    m = nmf_model(V, 2)
    n = m.fit(V, beta=1, tol=1e-2, max_iter=500)
    assert 0 < n < 500


# --------------------------------------------------------------------- init
@pytest.mark.parametrize("init", ["nndsvd", "nndsvda", "nndsvdar", "random"])
@pytest.mark.parametrize("cls", [NMF, NMFD])
def test_init_methods_give_nonnegative_finite_factors(gen, init, cls):
    """Invariant: every init gives finite non-negative factors of the model's shapes."""
    if cls is NMF:
        V, kw = lowrank(gen, 20, 15, 3), {}
    else:
        V, kw = _nmfd_problem(gen), {"T": 4}
    m = nmf_model(V, 3, cls=cls, **kw)
    shapes = (m.W.shape, m.H.shape)
    assert m.fit(V, max_iter=0, init=init, generator=0) == 0
    assert (m.W.shape, m.H.shape) == shapes
    for X in (m.W, m.H):
        assert torch.isfinite(X).all() and (X >= 0).all()
    assert m().shape == V.shape
    m.fit(V, max_iter=5, tol=0)  # fits from there
    assert torch.isfinite(m.W).all() and torch.isfinite(m.H).all()


def test_nndsvd_reproduces_rank_one_matrix(gen):
    """Oracle: NNDSVD of a non-negative rank-1 matrix is exact (its first singular pair)."""
    V = torch.outer(rand(gen, 20, low=0.1), rand(gen, 15, low=0.1))
    m = nmf_model(V, 1)
    m.fit(V, max_iter=0, init="nndsvd")
    torch.testing.assert_close(m(), V, rtol=1e-10, atol=1e-12)


def test_nndsvd_init_unavailable_for_nmf2d(gen):
    """Documented: NNDSVD is available for NMF and NMFD only."""
    V = rand(gen, 1, 2, 6, 7)
    m = NMF2D(V.shape, 2, 2, generator=0).double()
    with pytest.raises(ParameterError, match="init='nndsvd'.*NMF2D"):
        m.fit(V, init="nndsvd")


# ------------------------------------------------------------ HALS sweeps
def _slow_hals_sweep(X, P, G, l1, l2, floor):
    """Slow float64 reference: exact minimisation over one column at a time, in order."""
    X = X.clone()
    G = G + l2 * torch.eye(G.shape[0], dtype=G.dtype)
    for r in range(X.shape[1]):
        if G[r, r] <= 0:
            continue
        rest = sum(G[j, r] * X[:, j] for j in range(X.shape[1]) if j != r)
        X[:, r] = torch.clamp_min((P[:, r] - l1 - rest) / G[r, r], floor)
    return X


@pytest.mark.parametrize("l1,l2", [(0.0, 0.0), (0.3, 0.0), (0.0, 0.5), (0.2, 0.4)])
def test_hals_sweep_equals_slow_coordinate_minimisation(gen, l1, l2):
    """Oracle (slow float64 reference): one sweep of the solver is the exact column-wise
    minimiser, a column whose Gram diagonal is zero (a dead component) kept as it was."""
    from nmfcore.solvers.hals import _hals_update

    A = rand(gen, 40, 6)
    A[:, 2] = 0  # dead component: G[2, 2] = 0 without l2
    G = A.t() @ A
    X, P = rand(gen, 25, 6), rand(gen, 25, 6) * 5
    expected = _slow_hals_sweep(X, P, G, l1, l2, 1e-12)
    got, P_before = X.clone(), P.clone()
    _hals_update(got, P, G, l1, l2, 1e-12, max_sweeps=1)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    assert torch.equal(P, P_before)  # P is reused by the loss: never modified


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_hals_numpy_sweep_equals_torch_sweep(gen, dtype):
    """Oracle (equivalence): the NumPy sweep used on the CPU equals the torch
    (TorchScript) sweep used on other devices, including its change."""
    from nmfcore.solvers.hals import _numpy_sweeper, _torch_sweeper

    R, n = 7, 33
    A = rand(gen, 50, R, dtype=dtype)
    G = A.t() @ A
    inv = 1 / G.diagonal()
    Gs = G * inv[:, None]
    Gs.fill_diagonal_(0)
    Pi = (rand(gen, R, n, dtype=dtype) * 4 * inv[:, None]).contiguous()
    rows = [0, 1, 2, 4, 5, 6]  # row 3 skipped, as for a dead component
    X0 = rand(gen, R, n, dtype=dtype)
    results = []
    for make in (_numpy_sweeper, _torch_sweeper):
        Xt = X0.clone()
        sweep = make(Xt, Pi, Gs, rows, 1e-9, torch.empty(n, dtype=dtype), torch.empty_like(Xt))
        changes = [sweep(), sweep()]
        results.append((Xt, changes))
    (Xn, cn), (Xt, ct) = results
    tol = 1e-12 if dtype == F64 else 1e-5
    torch.testing.assert_close(Xn, Xt, rtol=tol, atol=tol)
    assert torch.equal(Xn[3], X0[3])
    assert cn == pytest.approx(ct, rel=tol * 10)


def test_hals_loss_reuses_product_only_while_w_is_unchanged(gen):
    """Oracle: the loss reported to the callback equals 0.5 ||V - H W^T||^2 computed from
    scratch at every iteration (the solver's cached V W is used only while W is unchanged)."""
    V = lowrank(gen, 30, 20, 3)
    m = nmf_model(V, 4)
    seen = []
    m.fit(V, beta=2, tol=0, max_iter=6, check_every=1, solver="hals",
          callback=lambda i, loss: seen.append((loss, 0.5 * float(((V - m()) ** 2).sum()))))
    for got, expected in seen:
        assert got == pytest.approx(expected, rel=1e-10)


# ------------------------------------------------------------ HALS vs MU
def test_hals_reaches_lower_loss_than_mu(gen):
    """Oracle: for beta=2, HALS after k iterations is at least as good as MU after k iterations."""
    V = lowrank(gen, 60, 50, 5, noise=0.02)
    hals, mu = nmf_model(V, 5), nmf_model(V, 5)
    hals.fit(V, beta=2, tol=0, max_iter=30, solver="hals")
    mu.fit(V, beta=2, tol=0, max_iter=30, solver="mu")
    lh, lm = val(metrics.euclidean(hals(), V)), val(metrics.euclidean(mu(), V))
    assert lh <= lm, (lh, lm)
    assert (hals.W >= 0).all() and (hals.H >= 0).all()


def test_auto_solver_is_hals_for_beta2_and_mu_otherwise(gen):
    """Documented: solver='auto' is HALS for NMF with beta=2 on the CPU, else MU (bit-identical runs)."""
    V = lowrank(gen, 20, 15, 3)
    for beta, same in ((2, "hals"), (1, "mu")):
        a, b = nmf_model(V, 3), nmf_model(V, 3)
        a.fit(V, beta=beta, tol=0, max_iter=5, solver="auto")
        b.fit(V, beta=beta, tol=0, max_iter=5, solver=same)
        assert torch.equal(a.W, b.W) and torch.equal(a.H, b.H)


@pytest.mark.cuda
def test_auto_solver_is_mu_on_cuda(gen):
    """Documented: on a GPU solver='auto' is MU also for beta=2 (bit-identical runs)."""
    V = lowrank(gen, 20, 15, 3).cuda()
    a, b = nmf_model(V, 3).cuda(), nmf_model(V, 3).cuda()
    a.fit(V, beta=2, tol=0, max_iter=25, solver="auto")
    b.fit(V, beta=2, tol=0, max_iter=25, solver="mu")
    assert torch.equal(a.W, b.W) and torch.equal(a.H, b.H)


# ---------------------------------------------------------------- sparse_fit
@pytest.mark.parametrize("sW, sH", [(None, 0.6), (0.5, None), (0.4, 0.7)])
def test_sparse_fit_reaches_target_and_loss_never_increases(gen, sW, sH):
    """Oracle: Hoyer's constraint met exactly (sparseness of every component within 1e-3);
    monotone objective over the recorded losses."""
    V = lowrank(gen, 30, 25, 4)
    m = nmf_model(V, 4)
    losses = []
    n = m.sparse_fit(V, max_iter=30, sW=sW, sH=sH, check_every=1, callback=lambda i, loss: losses.append(loss))
    assert n == 30
    for target, X in ((sW, m.W), (sH, m.H)):
        if target is not None:
            for r in range(4):
                assert val(metrics.sparseness(X[:, r])) == pytest.approx(target, abs=1e-3)
    assert_non_increasing(losses, what=f"sparse_fit sW={sW} sH={sH}")
    assert losses[-1] < losses[0]
    assert (m.W >= 0).all() and (m.H >= 0).all()
    # the reported loss is the divergence of the returned factors
    assert losses[-1] == pytest.approx(val(metrics.euclidean(m(), V)), rel=1e-9)


def test_sparse_fit_nmfd(gen):
    """Oracle: NMFD components H[:, r] reach the target sparseness; loss never increases."""
    V = _nmfd_problem(gen)
    m = nmf_model(V, 3, cls=NMFD, T=4)
    losses = []
    m.sparse_fit(V, max_iter=15, sH=0.5, check_every=1, callback=lambda i, loss: losses.append(loss))
    for r in range(3):
        assert val(metrics.sparseness(m.H[:, r])) == pytest.approx(0.5, abs=1e-3)
    assert_non_increasing(losses, what="NMFD sparse_fit")


# ------------------------------------------------------------------- dtypes
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("beta, solver", [(1.0, "auto"), (2.0, "auto"), (2.0, "mu"), (0.5, "auto")])
def test_dtypes_work_and_are_kept(gen, dtype, beta, solver):
    """Invariant: float32 and float64 fits work; factors and outputs keep the dtype."""
    V = lowrank(gen, 20, 15, 3).to(dtype)
    m = NMF(V.shape, 3, generator=0).to(dtype)
    m.fit(V, beta=beta, max_iter=20, tol=0, solver=solver)
    assert m.W.dtype == m.H.dtype == m().dtype == dtype
    assert torch.isfinite(m.W).all() and torch.isfinite(m.H).all()
    assert val(metrics.beta_div(m(), V, beta)) < val(metrics.beta_div(NMF(V.shape, 3, generator=0).to(dtype)(), V, beta))


def test_nmfd_float32(gen):
    """Invariant: NMFD fit works in float32 and keeps the dtype."""
    V = _nmfd_problem(gen).float()
    m = NMFD(V.shape, 3, T=4, generator=0)
    m.fit(V, max_iter=10, tol=0)
    assert m.W.dtype == m.H.dtype == m().dtype == torch.float32


def test_nmf2d_nmf3d_fit(gen):
    """Invariant: NMF2D/NMF3D fits run, keep the factors non-negative and lower the loss."""
    for cls, V, k in ((NMF2D, rand(gen, 1, 2, 8, 9, low=0.05), (2, 3)),
                      (NMF3D, rand(gen, 1, 2, 5, 5, 4, low=0.05), (2, 2, 2))):
        m = cls(V.shape, 3, k, generator=0).double()
        start = val(metrics.kl_div(m(), V))
        _, losses = record_losses(m, V, beta=1, max_iter=10)
        assert val(metrics.kl_div(m(), V)) < start
        assert_non_increasing(losses, what=cls.__name__)
        assert (m.W >= 0).all() and (m.H >= 0).all()


def test_fit_on_module_returned_by_to(gen):
    """Invariant: fit updates the module's parameters in place (model() reflects the fit)."""
    V = lowrank(gen, 20, 15, 3)
    m = nmf_model(V, 3)
    before = val(metrics.kl_div(m(), V))
    m.fit(V, max_iter=20, tol=0)
    assert val(metrics.kl_div(m(), V)) < before


# --------------------------------------------------------------------- CUDA
@pytest.mark.cuda
@pytest.mark.parametrize("beta, solver", [(1.0, "mu"), (2.0, "hals"), (0.5, "mu")])
def test_cuda_fit_matches_cpu(gen, beta, solver):
    """Oracle (equivalence): CPU == CUDA, float64, same initial factors."""
    V = lowrank(gen, 40, 30, 4)
    cpu = nmf_model(V, 4)
    gpu = copy.deepcopy(cpu).cuda()
    cpu.fit(V, beta=beta, tol=0, max_iter=30, solver=solver)
    gpu.fit(V.cuda(), beta=beta, tol=0, max_iter=30, solver=solver)
    assert gpu.W.device.type == "cuda"
    torch.testing.assert_close(gpu.W.cpu(), cpu.W, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(gpu.H.cpu(), cpu.H, rtol=1e-6, atol=1e-9)


@pytest.mark.cuda
def test_cuda_nmfd_and_sparse_match_cpu(gen):
    """Oracle (equivalence): CPU == CUDA for NMFD and for NMF on a sparse V."""
    V = _nmfd_problem(gen)
    cpu = nmf_model(V, 3, cls=NMFD, T=4)
    gpu = copy.deepcopy(cpu).cuda()
    cpu.fit(V, tol=0, max_iter=10)
    gpu.fit(V.cuda(), tol=0, max_iter=10)
    torch.testing.assert_close(gpu.H.cpu(), cpu.H, rtol=1e-6, atol=1e-9)
    V = lowrank(gen, 20, 15, 3)
    V[V < 0.5] = 0
    cpu = nmf_model(V, 3)
    gpu = copy.deepcopy(cpu).cuda()
    cpu.fit(V.to_sparse(), beta=1, tol=0, max_iter=10)
    gpu.fit(V.to_sparse().cuda(), beta=1, tol=0, max_iter=10)
    torch.testing.assert_close(gpu.W.cpu(), cpu.W, rtol=1e-6, atol=1e-9)


@pytest.mark.cuda
def test_cuda_init_with_generator(gen):
    """Invariant: init on a CUDA model with an int seed works and is reproducible."""
    V = lowrank(gen, 20, 15, 3).cuda()
    runs = []
    for _ in range(2):
        m = NMF(V.shape, 3).double().cuda()
        m.fit(V, max_iter=3, init="nndsvdar", generator=0)
        runs.append(m.W.detach().clone())
    assert torch.equal(runs[0], runs[1])


def _graph_problems(gen):
    """(model, V) for every model class, float64 on the GPU."""
    out = [(nmf_model(lowrank(gen, 40, 30, 4), 4), lowrank(gen, 40, 30, 4))]
    V = _nmfd_problem(gen)
    out.append((nmf_model(V, 3, cls=NMFD, T=4), V))
    out.append((NMF2D(W=rand(gen, 2, 3, 2, 3, low=0.1), H=rand(gen, 1, 3, 5, 6, low=0.1)),
                rand(gen, 1, 2, 6, 8, low=0.1)))
    out.append((NMF3D(W=rand(gen, 2, 2, 2, 2, 2, low=0.1), H=rand(gen, 1, 2, 3, 3, 2, low=0.1)),
                rand(gen, 1, 2, 4, 4, 3, low=0.1)))
    return [(m.cuda(), V.cuda()) for m, V in out]


@pytest.mark.cuda
@pytest.mark.parametrize("beta, alpha", [(2.0, 0.0), (1.0, 0.0), (0.5, 0.0), (0.0, 0.0), (3.0, 0.0), (1.0, 0.1)])
def test_cuda_graph_fit_equals_eager_fit(gen, monkeypatch, beta, alpha):
    """Oracle (equivalence): the fit replayed from a CUDA graph == the eager fit, every model;
    the graph is really replayed (max_iter - warm-up times), and the losses seen by the
    callback are the same."""
    from nmfcore import _fit

    replays = []
    real_replay = torch.cuda.CUDAGraph.replay
    monkeypatch.setattr(torch.cuda.CUDAGraph, "replay", lambda self: (replays.append(1), real_replay(self))[1])
    n_iter = 30
    for model, V in _graph_problems(gen):
        runs = []
        for graphs in (False, True):
            monkeypatch.setattr(_fit, "CUDA_GRAPHS", graphs)
            m = copy.deepcopy(model)
            seen = []
            replays.clear()
            m.fit(V, beta=beta, tol=0, max_iter=n_iter, alpha=alpha, l1_ratio=0.5, solver="mu",
                  check_every=5, callback=lambda i, loss: seen.append(loss))
            runs.append((m.W.detach().clone(), m.H.detach().clone(), seen, len(replays)))
        (We, He, le, ne), (Wg, Hg, lg, ng) = runs
        assert ne == 0 and ng == n_iter - _fit.GRAPH_WARMUP, type(model).__name__
        torch.testing.assert_close(Wg, We, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(Hg, He, rtol=1e-9, atol=1e-12)
        assert lg == pytest.approx(le, rel=1e-9)


@pytest.mark.cuda
def test_cuda_graph_falls_back_to_eager_when_capture_fails():
    """Invariant: a step that synchronises with the host cannot be captured; the loop
    then runs it eagerly and loses no iteration."""
    from nmfcore import _fit

    x = torch.zeros(3, device="cuda")
    seen = []

    def step():
        x.add_(1)
        seen.append(float(x.sum()))  # a host sync: not allowed while capturing

    run = _fit.cuda_graphed(step, x.device)
    for _ in range(10):
        run()
    assert torch.equal(x.cpu(), torch.full((3,), 10.0))
