"""Tests for nmfcore.plca: PLCA, SIPLCA, SIPLCA2, SIPLCA3 and their EM fit.

Oracles, named in each test: the reference documentation's examples; a slow
float64 loop implementation of one EM step of each model (joint: one E-step
for W, H and Z; alternating: (W, Z) then (H, Z)); the log-posterior never
decreases (Dirichlet priors >= 1) in either order; the marginals sum to one
after every iteration; SIPLCA with a kernel of 1 equals PLCA; PLCA without
priors, alternating, equals plain KL multiplicative updates and, joint, the
closed form of the joint step in NMF's terms (factors rescaled); a masked fit equals a slow
fit on the observed entries only; frozen parameters never change; bad input
raises ParameterError; hypothesis properties (finite, non-negative factors).
"""

import copy
import itertools

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nmfcore.exceptions import ParameterError
from nmfcore.plca import PLCA, SIPLCA, SIPLCA2, SIPLCA3, BaseComponent, log_posterior

F64 = torch.float64


def rand(gen, *shape, dtype=F64, low=0.0):
    return torch.rand(*shape, generator=gen, dtype=dtype) + low


# small instances of every model: (class, Vshape, extra constructor arguments)
MODELS = [
    (PLCA, (7, 6), {}),
    (SIPLCA, (2, 5, 9), {"T": 3}),
    (SIPLCA2, (1, 2, 6, 7), {"kernel_size": (2, 3)}),
    (SIPLCA3, (1, 2, 4, 5, 5), {"kernel_size": (2, 2, 3)}),
]
IDS = [m[0].__name__ for m in MODELS]


def make(cls, Vshape, kw, rank=3, seed=0, dtype=F64):
    """A model drawn from a seed, in ``dtype``, renormalised there (the draw is in float32)."""
    m = cls(Vshape, rank, generator=seed, **kw).to(dtype)
    return cls(W=m.W.detach(), H=m.H.detach(), Z=m.Z.detach())


def marginal_sums(m):
    out = {}
    for name in ("W", "H"):
        X = getattr(m, name).detach()
        out[name] = X.sum([d for d in range(X.ndim) if d != 1])
    out["Z"] = m.Z.detach().sum()
    return out


def assert_marginals(m, atol):
    for name, s in marginal_sums(m).items():
        torch.testing.assert_close(s, torch.ones_like(s), atol=atol, rtol=0, msg=f"{name} sums {s}")


# ------------------------------------------------- the reference doc's examples
def test_plca_reference_example():
    """Oracle: the reference's PLCA docstring, run as written."""
    V = torch.rand(20, 30)
    m = PLCA(V.shape, 5)
    assert m.W.size() == torch.Size([30, 5])
    assert m.H.size() == torch.Size([20, 5])
    assert m.Z.size() == torch.Size([5])
    HZWt = m()
    assert HZWt.size() == torch.Size([20, 30])


def test_siplca_reference_example():
    """Oracle: the reference's SIPLCA docstring, run as written."""
    V = torch.rand(33, 50).unsqueeze(0)
    m = SIPLCA(V.shape, 16, 3)
    assert m.W.size() == torch.Size([33, 16, 3])
    assert m.H.size() == torch.Size([1, 16, 48])
    assert m.Z.size() == torch.Size([16])
    HZWt = m()
    assert HZWt.size() == torch.Size([1, 33, 50])


def test_siplca2_reference_example():
    """Oracle: the reference's SIPLCA2 docstring, run as written."""
    V = torch.rand(33, 50).unsqueeze(0).unsqueeze(0)
    m = SIPLCA2(V.shape, 16, 3)
    assert m.W.size() == torch.Size([1, 16, 3, 3])
    assert m.H.size() == torch.Size([1, 16, 31, 48])
    assert m.Z.size() == torch.Size([16])
    HZWt = m()
    assert HZWt.size() == torch.Size([1, 1, 33, 50])


def test_siplca3_reference_example():
    """Oracle: the reference's SIPLCA3 docstring, run as written."""
    V = torch.rand(3, 64, 64, 100).unsqueeze(0)
    m = SIPLCA3(V.shape, 8, (5, 5, 20))
    assert m.W.size() == torch.Size([3, 8, 5, 5, 20])
    assert m.H.size() == torch.Size([1, 8, 60, 60, 81])
    assert m.Z.size() == torch.Size([8])
    HZWt = m()
    assert HZWt.size() == torch.Size([1, 3, 64, 64, 100])


def test_constructor_normalises_and_infers_rank(gen):
    """Invariant: given or drawn factors are distributions per component; Z uniform from a rank."""
    W = rand(gen, 6, 3)
    m = PLCA(W=W, H=(5, 3))
    assert m.rank == 3 and m.W.dtype == F64
    assert_marginals(m, 1e-12)
    torch.testing.assert_close(m.Z.detach(), torch.full((3,), 1 / 3, dtype=F64))
    m2 = PLCA(rank=4)
    assert m2.W is None and m2.H is None and m2.Z.shape == (4,)
    z = torch.tensor([1.0, 3.0])
    m3 = SIPLCA(Z=z, W=(4, 2, 2), H=(1, 2, 5), trainable_Z=False)
    torch.testing.assert_close(m3.Z.detach(), torch.tensor([0.25, 0.75]))
    assert not m3.Z.requires_grad
    assert set(m.state_dict()) == {"W", "H", "Z"}


def test_forward_arguments_and_norm(gen):
    """Oracle: forward(H, W, Z, norm) is H diag(Z) W^T times norm (the reference's formula)."""
    m = make(PLCA, (5, 4), {}, rank=2)
    H, W, Z = rand(gen, 5, 2), rand(gen, 4, 2), rand(gen, 2)
    torch.testing.assert_close(m(H, W, Z, norm=3.0), 3.0 * H @ torch.diag(Z) @ W.t())
    torch.testing.assert_close(m(), m.H @ torch.diag(m.Z) @ m.W.t())


def test_same_generator_same_factors():
    """Determinism: the same seed gives the same initial factors."""
    a, b = SIPLCA((1, 5, 9), 3, 2, generator=7), SIPLCA((1, 5, 9), 3, 2, generator=7)
    assert torch.equal(a.W, b.W) and torch.equal(a.H, b.H)


# ------------------------------------------------------ slow float64 EM step
def _loop_reconstruction(W, H, Z):
    """Y[n, c, *(p + t)] = sum_z W[c, z, *t] Z[z] H[n, z, *p], by explicit loops (numpy, float64)."""
    out_shape = (H.shape[0], W.shape[0]) + tuple(h + k - 1 for h, k in zip(H.shape[2:], W.shape[2:]))
    Y = np.zeros(out_shape)
    for c, z, *t in itertools.product(*map(range, W.shape)):
        for n, *p in itertools.product(range(H.shape[0]), *map(range, H.shape[2:])):
            Y[(n, c) + tuple(a + b for a, b in zip(p, t))] += W[(c, z, *t)] * Z[z] * H[(n, z, *p)]
    return Y


def _loop_counts(V, W, H, Z):
    """E-step by loops: the posterior-weighted counts of every W and H entry."""
    Vn = V / V.sum()
    Y = _loop_reconstruction(W, H, Z)
    cW, cH = np.zeros(W.shape), np.zeros(H.shape)
    for c, z, *t in itertools.product(*map(range, W.shape)):
        for n, *p in itertools.product(range(H.shape[0]), *map(range, H.shape[2:])):
            out = (n, c) + tuple(a + b for a, b in zip(p, t))
            q = Vn[out] * W[(c, z, *t)] * Z[z] * H[(n, z, *p)] / Y[out]
            cW[(c, z, *t)] += q
            cH[(n, z, *p)] += q
    return cW, cH


def _loop_em_step(V, W, H, Z, aW, aH, aZ, update="joint"):
    """One EM iteration as documented: joint, W, H and Z from the counts of one posterior; alternating,
    (W, Z) from fresh counts, then (H, Z) from fresh counts."""
    W, H, Z = W.copy(), H.copy(), Z.copy()

    def m_step(counts, alpha):
        x = np.maximum(counts + alpha - 1, 0)
        axes = tuple(d for d in range(x.ndim) if d != 1)
        return x / x.sum(axes, keepdims=True)

    if update == "joint":
        cW, cH = _loop_counts(V, W, H, Z)
        zc = cW.sum(tuple(d for d in range(cW.ndim) if d != 1))
        np.testing.assert_allclose(zc, cH.sum(tuple(d for d in range(cH.ndim) if d != 1)), rtol=1e-12)
        Z = np.maximum(zc + aZ - 1, 0)
        return m_step(cW, aW), m_step(cH, aH), Z / Z.sum()
    cW, _ = _loop_counts(V, W, H, Z)
    zc = cW.sum(tuple(d for d in range(cW.ndim) if d != 1))
    Z = np.maximum(zc + aZ - 1, 0)
    Z /= Z.sum()
    W = m_step(cW, aW)
    _, cH = _loop_counts(V, W, H, Z)
    zc = cH.sum(tuple(d for d in range(cH.ndim) if d != 1))
    Z = np.maximum(zc + aZ - 1, 0)
    Z /= Z.sum()
    H = m_step(cH, aH)
    return W, H, Z


@pytest.mark.parametrize("cls, Vshape, kw", MODELS, ids=IDS)
@pytest.mark.parametrize("alphas", [(1.0, 1.0, 1.0), (1.3, 1.7, 2.0)])
@pytest.mark.parametrize("update", ["joint", "alternating"])
def test_one_em_step_equals_slow_loop(gen, cls, Vshape, kw, alphas, update):
    """Oracle: slow float64 loops over every entry of W and H, one EM step with priors, in either order."""
    V = rand(gen, *Vshape, low=0.1)
    m = make(cls, Vshape, kw)
    aW, aH, aZ = alphas
    expected = _loop_em_step(V.numpy(), m.W.detach().numpy(), m.H.detach().numpy(), m.Z.detach().numpy(),
                             aW, aH, aZ, update)
    n_iter, norm = m.fit(V, max_iter=1, tol=0, W_alpha=aW, H_alpha=aH, Z_alpha=aZ,
                         update=None if update == "joint" else update)
    assert n_iter == 1
    torch.testing.assert_close(norm, V.sum())
    for name, want in zip("WHZ", expected):
        torch.testing.assert_close(getattr(m, name).detach(), torch.from_numpy(want), rtol=1e-10, atol=1e-13,
                                   msg=f"{cls.__name__}.{name}")


def test_reconstruction_equals_slow_loop(gen):
    """Oracle: the operator of every model equals the explicit sum over shifts (float64 loops)."""
    for cls, Vshape, kw in MODELS:
        m = make(cls, Vshape, kw)
        want = _loop_reconstruction(m.W.detach().numpy(), m.H.detach().numpy(), m.Z.detach().numpy())
        torch.testing.assert_close(m().detach(), torch.from_numpy(want), rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(m().detach().sum(), torch.tensor(1.0, dtype=F64))


# ------------------------------------------------------- monotone objective
@pytest.mark.parametrize("cls, Vshape, kw", MODELS, ids=IDS)
@pytest.mark.parametrize("alphas", [(1.0, 1.0, 1.0), (1.5, 1.2, 2.0), ("tensor", 1.0, 1.1)])
@pytest.mark.parametrize("update", ["joint", "alternating"])
def test_log_posterior_never_decreases(gen, cls, Vshape, kw, alphas, update):
    """Oracle: monotone objective, log-posterior (priors included, alpha >= 1) non-decreasing in either
    order; the loss handed to the callback is its mirror (non-increasing)."""
    V = rand(gen, *Vshape)
    m = make(cls, Vshape, kw)
    aW, aH, aZ = alphas
    if aW == "tensor":
        aW = 1 + rand(gen, *m.W.shape[:2], *([1] * (m.W.ndim - 2)))  # broadcast over the taps
    kw_fit = dict(W_alpha=aW, H_alpha=aH, Z_alpha=aZ)
    posts, losses = [], []

    def cb(i, loss):
        posts.append(float(log_posterior(V, m, **kw_fit)))
        losses.append(loss)

    m.fit(V, max_iter=40, tol=0, check_every=1, callback=cb, update=update, **kw_fit)
    assert len(posts) == 41
    for i, (a, b) in enumerate(zip(posts, posts[1:])):
        assert b >= a - 1e-12 * abs(a), f"log-posterior fell at iteration {i + 1}: {a!r} -> {b!r}"
    for i, (a, b) in enumerate(zip(losses, losses[1:])):
        assert b <= a + 1e-10 * abs(a), f"loss rose at iteration {i + 1}: {a!r} -> {b!r}"
    assert posts[-1] > posts[0]


def test_loss_is_kl_of_rescaled_model(gen):
    """Oracle: without priors the reported loss is KL(V | norm * model()), as the reference's progress bar."""
    V = rand(gen, 8, 6)
    m = make(PLCA, V.shape, {})
    seen = []
    _, norm = m.fit(V, max_iter=5, tol=0, callback=lambda i, loss: seen.append(loss), check_every=5)
    Y = m(norm=norm).detach()
    kl = (V * torch.log(V / Y) - V + Y).sum()
    assert seen[-1] == pytest.approx(float(kl), rel=1e-9)


# ---------------------------------------------------------------- invariants
@pytest.mark.parametrize("cls, Vshape, kw", MODELS, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_marginals_sum_to_one_after_every_iteration(gen, cls, Vshape, kw, dtype):
    """Invariant: W, H per component and Z sum to one after every iteration (callback), with priors."""
    V = rand(gen, *Vshape, dtype=dtype)
    m = make(cls, Vshape, kw, dtype=dtype)
    atol = 1e-5 if dtype == torch.float32 else 1e-12
    checked = []

    def cb(i, loss):
        assert_marginals(m, atol)
        assert all((getattr(m, n).detach() >= 0).all() for n in "WHZ")
        checked.append(i)

    m.fit(V, max_iter=15, tol=0, check_every=1, callback=cb, W_alpha=0.8, H_alpha=1.3, Z_alpha=0.9)
    assert checked == list(range(16))
    assert m.W.dtype == dtype


def test_siplca_kernel_one_equals_plca(gen):
    """Equivalence: SIPLCA with T = 1 is PLCA on the transposed matrix (same init, same iterates)."""
    V = rand(gen, 1, 6, 9)  # (N=1, C, L)
    s = make(SIPLCA, V.shape, {"T": 1})
    p = PLCA(W=s.W.detach()[:, :, 0], H=s.H.detach()[0].t(), Z=s.Z.detach())
    _, n1 = s.fit(V, max_iter=25, tol=0, H_alpha=1.2)
    _, n2 = p.fit(V[0].t(), max_iter=25, tol=0, H_alpha=1.2)
    torch.testing.assert_close(s.W.detach()[:, :, 0], p.W.detach(), rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(s.H.detach()[0].t(), p.H.detach(), rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(s.Z.detach(), p.Z.detach(), rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(n1, n2)


def _kl_mu(V, W, H, n_iter, mask=None):
    """Plain KL multiplicative updates (exponent 1, no over-relaxation), W then H, optionally weighted."""
    M = torch.ones_like(V) if mask is None else mask
    for _ in range(n_iter):
        W = W * ((M * V / (H @ W.t())).t() @ H) / (M.t() @ H)
        H = H * ((M * V / (H @ W.t())) @ W) / (M @ W)
    return W, H


def _kl_joint(V, W, H, n_iter):
    """The joint EM step in NMF's terms: both numerators from one ratio R = V / (H W^T); W takes the plain
    KL MU step and H the one whose denominator is the *updated* W's column sums (H's columns summing to
    one: a per-component rescaling moves the mass into W)."""
    for _ in range(n_iter):
        s = H.sum(0)
        H, W = H / s, W * s  # the same product, H's columns summing to one
        R = V / (H @ W.t())
        W, H = W * (R.t() @ H), H * (R @ W)
        H = H / W.sum(0)
    return W, H


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("update", ["alternating", "joint"])
def test_plca_without_priors_follows_kl_multiplicative_updates(gen, dtype, update):
    """Equivalence: PLCA's EM without priors, alternating = plain KL MU on the same data (factors rescaled);
    joint = the same multiplicative numerators from one ratio (:func:`_kl_joint`)."""
    V = rand(gen, 30, 20, dtype=dtype)
    m = make(PLCA, V.shape, {}, rank=4, dtype=dtype)
    W0 = m.W.detach() * m.Z.detach() * V.sum()  # the NMF factors with the same product
    W1, H1 = (_kl_mu if update == "alternating" else _kl_joint)(V, W0, m.H.detach().clone(), 30)
    _, norm = m.fit(V, max_iter=30, tol=0, update=update)
    tol = dict(rtol=2e-4, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(m(norm=norm).detach(), H1 @ W1.t(), **tol)
    torch.testing.assert_close(m.W.detach(), W1 / W1.sum(0), **tol)
    torch.testing.assert_close(m.H.detach(), H1 / H1.sum(0), **tol)


@pytest.mark.parametrize("frozen", ["W", "H", "Z", "WZ", "HZ", "WH"])
@pytest.mark.parametrize("alpha", [1.0, 1.5, 0.99])
@pytest.mark.parametrize("cls, Vshape, kw", MODELS[:2], ids=IDS[:2])
def test_frozen_parameters_never_change(gen, frozen, alpha, cls, Vshape, kw):
    """Invariant: trainable_*=False leaves the parameter bit for bit unchanged, with or without priors;
    the others still move and stay distributions."""
    V = rand(gen, *Vshape)
    m0 = make(cls, Vshape, kw)
    flags = {f"trainable_{n}": n not in frozen for n in "WHZ"}
    m = cls(W=m0.W.detach(), H=m0.H.detach(), Z=m0.Z.detach(), **flags)
    before = {n: getattr(m, n).detach().clone() for n in "WHZ"}
    m.fit(V, max_iter=10, tol=0, W_alpha=alpha, H_alpha=alpha, Z_alpha=alpha)
    for n in "WHZ":
        X = getattr(m, n).detach()
        if n in frozen:
            assert torch.equal(X, before[n]), f"frozen {n} changed"
        else:
            assert not torch.equal(X, before[n]), f"trainable {n} did not move"
    assert_marginals(m, 1e-12)


def test_sparse_prior_sparsifies(gen):
    """Property: H_alpha < 1 zeroes activations (sparse MAP), alpha > 1 keeps all positive."""
    V = rand(gen, 40, 30)
    sparse, smooth = make(PLCA, V.shape, {}, rank=5), make(PLCA, V.shape, {}, rank=5)
    sparse.fit(V, max_iter=50, tol=0, H_alpha=0.99)
    smooth.fit(V, max_iter=50, tol=0, H_alpha=1.01)
    assert int((sparse.H == 0).sum()) > 0
    assert bool((smooth.H > 0).all())


def test_fit_reconstructs_low_rank_data(gen):
    """Property: on exactly low-rank data, norm * model() approaches V."""
    V = rand(gen, 40, 3) @ rand(gen, 3, 30)
    m = make(PLCA, V.shape, {}, rank=3)
    n_iter, norm = m.fit(V, max_iter=500, tol=0)
    err = (m(norm=norm).detach() - V).abs().max() / V.max()
    assert err < 0.02


def test_tol_callback_and_verbose(gen):
    """The fit loop: tol stops early, a callback returning True stops, verbose shows a bar."""
    V = rand(gen, 20, 15)
    m = make(PLCA, V.shape, {})
    n_iter, _ = m.fit(V, tol=1e-2, max_iter=500)
    assert 0 < n_iter < 500
    m2 = make(PLCA, V.shape, {})
    n2, _ = m2.fit(V, tol=0, max_iter=100, callback=lambda i, loss: i >= 20)
    assert n2 == 20
    m3 = make(PLCA, V.shape, {})
    n3, _ = m3.fit(V, tol=0, max_iter=12, verbose=True)
    assert n3 == 12


def test_init_random_uses_generator(gen):
    """Determinism: init='random' with the same seed gives the same fit."""
    V = rand(gen, 12, 10)
    a, b = make(PLCA, V.shape, {}, seed=1), make(PLCA, V.shape, {}, seed=2)
    a.fit(V, max_iter=5, tol=0, init="random", generator=3)
    b.fit(V, max_iter=5, tol=0, init="random", generator=3)
    assert torch.equal(a.W, b.W) and torch.equal(a.H, b.H)


# -------------------------------------------------------------- masked fits
@pytest.mark.parametrize("cls, Vshape, kw", MODELS, ids=IDS)
def test_mask_of_ones_equals_no_mask(gen, cls, Vshape, kw):
    """Equivalence: a mask of ones (or all True) gives the unmasked fit."""
    V = rand(gen, *Vshape)
    a, b = make(cls, Vshape, kw), make(cls, Vshape, kw)
    _, na = a.fit(V, max_iter=8, tol=0, H_alpha=1.2, update="alternating")  # a masked fit's order
    _, nb = b.fit(V, max_iter=8, tol=0, H_alpha=1.2, mask=torch.ones(Vshape, dtype=torch.bool))
    for n in "WHZ":
        torch.testing.assert_close(getattr(a, n), getattr(b, n), rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(na, nb)


def test_masked_plca_equals_fit_on_observed_entries(gen):
    """Oracle: a masked PLCA fit = weighted KL MU over the observed entries only (slow float64 loop,
    the unobserved entries' values never read), factors rescaled."""
    V = rand(gen, 12, 9)
    mask = rand(gen, 12, 9) > 0.3
    Vgarbage = V.clone()
    Vgarbage[~mask] = 1e6  # values at missing entries must not matter
    m = make(PLCA, V.shape, {}, rank=3)
    W0, H0 = (m.W.detach() * m.Z.detach()).numpy(), m.H.detach().clone().numpy()
    _, norm = m.fit(Vgarbage, max_iter=10, tol=0, mask=mask)
    obs = [(n, c) for n in range(12) for c in range(9) if mask[n, c]]
    W, H = W0.copy(), H0.copy()
    Vn = V.numpy()
    for _ in range(10):
        for block in "WH":
            Y = H @ W.T
            num, den = np.zeros_like(W if block == "W" else H), np.zeros_like(W if block == "W" else H)
            for n, c in obs:
                if block == "W":
                    num[c] += Vn[n, c] / Y[n, c] * H[n]
                    den[c] += H[n]
                else:
                    num[n] += Vn[n, c] / Y[n, c] * W[c]
                    den[n] += W[c]
            if block == "W":
                W = W * num / den
            else:
                H = H * num / den
    torch.testing.assert_close(m.W.detach(), torch.from_numpy(W / W.sum(0)), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(m.H.detach(), torch.from_numpy(H / H.sum(0)), rtol=1e-9, atol=1e-12)
    # norm * model() is the KL-optimal scale on the observed entries: equal there to the MU product
    Y = torch.from_numpy(H @ W.T)
    scale = float(V[mask].sum() / Y[mask].sum())
    torch.testing.assert_close(m(norm=norm).detach()[mask], scale * Y[mask], rtol=1e-9, atol=1e-12)


def test_mask_weights_the_divergence(gen):
    """Invariant: a weight-2 mask everywhere is the unmasked fit (weights are relative)."""
    V = rand(gen, 10, 8)
    a, b = make(PLCA, V.shape, {}), make(PLCA, V.shape, {})
    a.fit(V, max_iter=6, tol=0, update="alternating")
    b.fit(V, max_iter=6, tol=0, mask=torch.full((1, 8), 2.0, dtype=F64))
    torch.testing.assert_close(a.W, b.W, rtol=1e-10, atol=1e-13)


# ---------------------------------------------------------------- bad input
def _bad_v(kind, V):
    V = V.clone()
    if kind == "neg":
        V[0, 0] = -1
    elif kind == "nan":
        V[0, 0] = float("nan")
    elif kind == "inf":
        V[0, 0] = float("inf")
    return V


@pytest.mark.parametrize("kind, match", [("neg", r"V must be non-negative.*-1"),
                                         ("nan", r"V must contain only finite values.*nan"),
                                         ("inf", r"V must contain only finite values.*inf")])
def test_bad_values_of_v(gen, kind, match):
    m = make(PLCA, (5, 4), {})
    with pytest.raises(ParameterError, match=match):
        m.fit(_bad_v(kind, rand(gen, 5, 4)))


@pytest.mark.parametrize("call, match", [
    (lambda: PLCA((5, 4), 0), r"rank=0"),
    (lambda: PLCA((5, 4), -2), r"rank=-2"),
    (lambda: PLCA((5, 4, 3), 2), r"Vshape=\(5, 4, 3\)"),
    (lambda: SIPLCA((1, 5, 4), 2, 7), r"T=\(7,\) must lie within"),
    (lambda: SIPLCA2((1, 5, 4), 2), r"Vshape=\(1, 5, 4\)"),
    (lambda: SIPLCA3((1, 1, 5, 4, 4), 2, (1, 9, 1)), r"kernel_size=\(1, 9, 1\)"),
    (lambda: PLCA(W=torch.tensor([[1.0, -1.0]])), r"W must be non-negative"),
    (lambda: PLCA(W=(3, 2), H=(4, 3)), r"rank mismatch"),
    (lambda: PLCA(W=(3, 2), Z=torch.ones(2, 1)), r"Z must be one-dimensional"),
    (lambda: PLCA(W=(3, 2), rank=3), r"rank=3"),
    (lambda: PLCA(), r"rank=None"),
    (lambda: PLCA(W=(3, 0)), r"W=\(3, 0\)"),
])
def test_bad_constructor_arguments(call, match):
    with pytest.raises(ParameterError, match=match):
        call()


@pytest.mark.parametrize("kw, match", [
    ({"W_alpha": 0}, r"W_alpha=0"),
    ({"H_alpha": -1.0}, r"H_alpha=-1.0"),
    ({"Z_alpha": float("nan")}, r"Z_alpha=nan"),
    ({"Z_alpha": float("inf")}, r"Z_alpha=inf"),
    ({"W_alpha": torch.tensor([1.0, 0.0, 1.0])}, r"W_alpha must be positive and finite.*0\.0"),
    ({"H_alpha": torch.tensor([1.0, float("nan"), 1.0])}, r"H_alpha must be positive.*nan"),
    ({"W_alpha": torch.ones(5)}, r"W_alpha has shape \(5,\)"),
    ({"mask": torch.ones(4, 5)}, r"mask has shape \(4, 5\)"),
    ({"mask": -torch.ones(5, 4)}, r"mask must be non-negative.*-1"),
    ({"mask": torch.zeros(5, 4)}, r"mask has no positive weight"),
    ({"mask": [[1.0]]}, r"mask must be a torch.Tensor"),
    ({"tol": -1.0}, r"tol=-1.0"),
    ({"max_iter": 0.5}, r"max_iter=0.5"),
    ({"init": "nndsvd"}, r"init='nndsvd'"),
    ({"update": "both"}, r"update='both'"),
    ({"update": "joint", "mask": torch.ones(5, 4)}, r"update='joint' does not take a mask"),
])
def test_bad_fit_arguments(gen, kw, match):
    m = PLCA((5, 4), 3).double()
    V = rand(gen, 5, 4)
    kw = {k: (v.double() if isinstance(v, torch.Tensor) and v.is_floating_point() else v) for k, v in kw.items()}
    with pytest.raises(ParameterError, match=match):
        m.fit(V, **kw)


def test_bad_v_shape_dtype_and_zero_sum(gen):
    m = PLCA((5, 4), 3).double()
    with pytest.raises(ParameterError, match=r"V has shape \(4, 5\)"):
        m.fit(rand(gen, 4, 5))
    with pytest.raises(ParameterError, match=r"V is torch.float32"):
        m.fit(rand(gen, 5, 4, dtype=torch.float32))
    with pytest.raises(ParameterError, match=r"V sums to 0"):
        m.fit(torch.zeros(5, 4, dtype=F64))
    with pytest.raises(ParameterError, match=r"fit needs W, H and Z, but W is None"):
        PLCA(rank=3).fit(rand(gen, 5, 4))


# --------------------------------------------------------------- properties
SETTINGS = settings(max_examples=20, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(seed=st.integers(0, 2 ** 16), n=st.integers(2, 10), c=st.integers(2, 10), rank=st.integers(1, 4),
       dtype=st.sampled_from([torch.float32, F64]), center=st.integers(-30, 30), spread=st.integers(0, 60),
       zero_rows=st.integers(0, 2), zero_cols=st.integers(0, 2), zero_init=st.booleans(),
       model=st.sampled_from(["PLCA", "SIPLCA"]), alpha=st.sampled_from([0.5, 1.0, 2.0]))
def test_fit_factors_finite_nonnegative(seed, n, c, rank, dtype, center, spread, zero_rows, zero_cols,
                                        zero_init, model, alpha):
    """Invariant: finite, non-negative factors for V within [1e-30, 1e30], zero rows/columns, zero init."""
    lo, hi = max(-30, center - spread // 2), min(30, center + spread // 2)
    g = torch.Generator().manual_seed(seed)
    exponent = lo + (hi - lo) * torch.rand(n, c, generator=g, dtype=F64)
    V = torch.pow(10.0, exponent) * (0.5 + torch.rand(n, c, generator=g, dtype=F64))
    V[torch.rand(n, c, generator=g) < 0.2] = 0
    V[:zero_rows] = 0
    V[:, :zero_cols] = 0
    if V.sum() == 0:
        V[-1, -1] = 10.0 ** lo
    V = V.to(dtype)
    m = PLCA(V.shape, rank, generator=seed) if model == "PLCA" else SIPLCA((1,) + V.shape, rank, 2, generator=seed)
    V = V if model == "PLCA" else V[None]
    m = m.to(dtype)
    if zero_init:
        with torch.no_grad():
            m.W[0] = 0
            m.H[..., 0] = 0
    n_iter, norm = m.fit(V, max_iter=10, tol=0, W_alpha=alpha, H_alpha=alpha, Z_alpha=alpha)
    assert n_iter == 10 and torch.isfinite(norm)
    for name in "WHZ":
        X = getattr(m, name).detach()
        assert torch.isfinite(X).all() and (X >= 0).all(), f"{name}: {X}"
    Y = m().detach()
    assert torch.isfinite(Y).all()


# ------------------------------------------------------------ dtype, device
@pytest.mark.cuda
@pytest.mark.parametrize("cls, Vshape, kw", MODELS, ids=IDS)
def test_cuda_equals_cpu(gen, cls, Vshape, kw):
    """Equivalence: the fit on a GPU equals the CPU fit (float64)."""
    V = rand(gen, *Vshape)
    cpu = make(cls, Vshape, kw)
    gpu = copy.deepcopy(cpu).cuda()
    cpu.fit(V, max_iter=10, tol=0, H_alpha=1.1)
    _, norm = gpu.fit(V.cuda(), max_iter=10, tol=0, H_alpha=1.1)
    assert norm.is_cuda and gpu.W.is_cuda
    for n in "WHZ":
        torch.testing.assert_close(getattr(gpu, n).detach().cpu(), getattr(cpu, n).detach(), rtol=1e-9,
                                   atol=1e-12)


@pytest.mark.cuda
def test_cuda_float32_masked_fit(gen):
    """A float32 masked SIPLCA fit on a GPU stays on the GPU and keeps the marginals."""
    V = rand(gen, 1, 6, 12, dtype=torch.float32).cuda()
    m = SIPLCA(V.shape, 3, 2, generator=0).cuda()
    m.fit(V, max_iter=10, tol=0, mask=(V > 0.2))
    assert m.W.is_cuda
    assert_marginals(m, 1e-5)


def test_base_component_needs_a_model():
    """BaseComponent alone has no shapes: a rank is enough to build it, as in the reference."""
    m = BaseComponent(rank=2)
    assert m.W is None and m.Z.shape == (2,)


# ------------------------------------------------------------- in the product
def test_audio_registry_offers_plca_and_siplca():
    """The pipeline's registry has PLCA, SIPLCA and SIPLCA2 (on log-frequency, separating at least as well
    as NMF on the development audio: bench/siplca2_logfreq.py) as EM models (no beta, no init, a
    log-likelihood curve); SIPLCA2's default kernel fits the default STFT with 13 pitch shifts."""
    from nmfcore.audio import MODELS, SeparationSettings
    from nmfcore.audio.models import LOGFREQ2D

    for name, conv in (("PLCA", False), ("SIPLCA", True), ("SIPLCA2", True)):
        spec = MODELS[name]
        assert spec.label and spec.description and spec.convolutive == conv
        assert not spec.beta_divergence and spec.init_methods == () and spec.curve == "log-likelihood"
    assert MODELS["SIPLCA2"].layout is LOGFREQ2D
    kf, kt = MODELS["SIPLCA2"].defaults["kernel_size"]
    assert LOGFREQ2D.n_bins(SeparationSettings().n_fft // 2 + 1) - kf + 1 == 13 and kt == 4
    assert MODELS["NMF"].curve == "loss"


def test_log_frequency_layout_round_trip():
    """Invariants of the log-frequency layout: the filterbank rows and the interpolation rows sum to one (masks
    that sum to one still do on the STFT bins), a spectrogram constant in frequency comes back unchanged, and
    the log axis has the advertised number of bins."""
    from nmfcore.audio.models import LOGFREQ2D
    from nmfcore.audio.spectral import log_frequency_matrices

    F, D = log_frequency_matrices(513, dtype=F64)
    torch.testing.assert_close(F.sum(1), torch.ones(F.shape[0], dtype=F64))
    torch.testing.assert_close(D.sum(1), torch.ones(513, dtype=F64))
    assert F.shape[0] == LOGFREQ2D.n_bins(513) and bool((F >= 0).all()) and bool((D >= 0).all())
    S = torch.full((513, 7), 2.5, dtype=F64)
    layout = LOGFREQ2D.for_stft(513)
    V = layout.to_model(S)
    assert V.shape == (1, 1, F.shape[0], 7)
    torch.testing.assert_close(layout.from_model(V), S)
    with pytest.raises(ParameterError, match=r"fmin_bin=600"):
        log_frequency_matrices(513, fmin_bin=600)


def test_log_frequency_layout_maps_back_to_its_own_stft():
    """n_fft 2000 and 2048 give the same number of log bins (202): each separation maps back to its own STFT
    bins whatever ran before it (the layout used to remember the last size seen, process-wide), and the
    unbound registry entry refuses to guess."""
    from nmfcore.audio import SeparationSettings
    from nmfcore.audio.models import LOGFREQ2D

    a = SeparationSettings(model="SIPLCA2", n_fft=2000).layout
    b = SeparationSettings(model="SIPLCA2", n_fft=2048).layout
    assert a.n_bins(1001) == b.n_bins(1025) == 202
    Sa, Sb = torch.rand(1001, 5, dtype=F64), torch.rand(1025, 5, dtype=F64)
    Va, Vb = a.to_model(Sa), b.to_model(Sb)
    assert b.from_model(Vb).shape == (1025, 5) and a.from_model(Va).shape == (1001, 5)
    assert a.from_model(Va).shape == (1001, 5)  # after b's to_model too
    with pytest.raises(ParameterError, match="for_stft"):
        LOGFREQ2D.from_model(Va)
    with pytest.raises(ParameterError, match="1025 bins for a layout of 1001"):
        a.to_model(Sb)


# SIPLCA2 with rank 3: a pitch-shifting template can cover both tones, and with 2 components some starts
# (seed 3 of 0-5) end in a mixed local optimum; with a spare component every one of seeds 0-5 separates
@pytest.mark.parametrize("model, kernel, rank", [("PLCA", 1, 2), ("SIPLCA", 4, 2), ("SIPLCA2", (150, 3), 3)])
def test_separate_with_plca_models(model, kernel, rank):
    """Invariants in the pipeline: components sum to the mixture; the reported log-likelihood never
    decreases; the same seed gives the same separation; two tones separate (best grouping) above 15 dB."""
    from _audio_signals import SR, two_sources

    from nmfcore.audio import SeparationSettings, best_grouping, evaluate, separate

    mix, refs = two_sources(seconds=1.0)
    s = SeparationSettings(model=model, kernel_size=kernel, rank=rank, n_fft=512, hop_length=128, n_iter=150,
                           tol=0, seed=3)
    sep = separate(mix, SR, s)
    assert float((sep.components.sum(0) - sep.mixture).abs().max() / sep.mixture.abs().max()) < 1e-4
    lls = [v for _, v in sep.losses]
    assert len(lls) > 2 and all(b >= a - 1e-6 * abs(a) for a, b in zip(lls, lls[1:])), lls
    assert all(v <= 0 for v in lls)
    again = separate(mix, SR, s)
    assert torch.equal(again.components, sep.components)
    scores = evaluate(sep.sources(best_grouping(sep, refs)), refs, bss=False)["si_sdr"]
    assert min(scores) > 15, scores


def test_plca_in_the_pipeline_refuses_beta_penalties():
    """alpha and sparsity_H belong to the beta-divergence models: a ParameterError naming them."""
    from _audio_signals import SR, two_sources

    from nmfcore.audio import SeparationSettings, separate

    with pytest.raises(ParameterError, match=r"alpha=0.1 needs a beta-divergence model"):
        SeparationSettings(model="PLCA", alpha=0.1)
    mix, _ = two_sources(seconds=0.5)
    with pytest.raises(ParameterError, match=r"sparsity_H=0.5 needs a beta-divergence model"):
        separate(mix, SR, SeparationSettings(model="PLCA", rank=2, sparsity_H=0.5, n_fft=256, hop_length=64,
                                             n_iter=5))


def test_app_teaching_and_plot_for_em_models():
    """The app's layers: EM text for PLCA models, a log-likelihood curve on a linear axis, the picker's data."""
    pytest.importorskip("plotly")
    from app import plots, services, teaching
    from nmfcore.audio import SeparationSettings

    for model, kernel in (("PLCA", 1), ("SIPLCA", 4)):
        fit = services.fit_description(SeparationSettings(model=model, kernel_size=kernel))
        assert fit.solver == "em" and fit.beta is None
        md = " ".join(teaching.how_it_works_md(fit))
        assert "expectation-maximisation" in md and "Dirichlet" in md and "P(z)" in md
    fig = plots.curve_figure([0, 10, 20], [-12.0, -10.5, -10.2], curve="log-likelihood", max_iter=50)
    assert list(fig.data[0].y) == [-10.5, -10.2] and fig.layout.yaxis.type != "log"
    assert "Log-likelihood" in fig.layout.title.text
    assert plots.curve_figure([0, 10], [3.0, 2.0]).layout.yaxis.type == "log"
    choices = {m.name: m for m in services.models()}
    assert not choices["PLCA"].uses_beta and choices["PLCA"].curve == "log-likelihood"
    assert choices["SIPLCA"].kernel_dims == 1 and choices["NMF"].curve == "loss"
    assert services.curve_of(SeparationSettings(model="SIPLCA")) == "log-likelihood"
    # SIPLCA2 counts its shifts on the log-frequency axis: 13 with its defaults, and the kernel back from them
    spec = choices["SIPLCA2"]
    k = spec.defaults["kernel_size"]
    assert spec.kernel_dims == 2 and services.nmf2d_shifts(k, 2048, "SIPLCA2") == 13
    assert services.nmf2d_kernel(13, k[1], 2048, "SIPLCA2") == tuple(k)
    assert services.freq_bins(2048, "SIPLCA2") < services.freq_bins(2048) == 1025
    fit = services.fit_description(SeparationSettings(model="SIPLCA2", kernel_size=k))
    assert fit.solver == "em" and fit.shifts == 13
    md = " ".join(teaching.how_it_works_md(fit))
    assert "log-frequency" in md and "13 pitch shifts" in md and "expectation-maximisation" in md


@pytest.mark.parametrize("build, match", [
    (lambda: SIPLCA2((1, 1, 20, 20), 3, (3,)), r"kernel_size=\(3,\) must be a positive int or a tuple of 2"),
    (lambda: SIPLCA((1, 20, 20), 3, (2, 3)), r"T=\(2, 3\) must be a positive int or a tuple of 1"),
    (lambda: SIPLCA((1, 20, 20), 3, True), r"T=True must be a positive int"),
    (lambda: SIPLCA3((1, 1, 8, 8, 8), 2, (2, 2)), r"kernel_size=\(2, 2\) must be a positive int or a tuple of 3"),
    (lambda: SIPLCA((1, 20, 20), 3, 30), r"T=\(30,\) must lie within the size of V"),
])
def test_kernel_arguments_of_the_wrong_form_are_parameter_errors(build, match):
    """Oracle (errors): kernels of the wrong length or type, or larger than V, are refused by name
    (before: IndexError / ValueError from the tuple helpers), as for NMFD, NMF2D and NMF3D."""
    with pytest.raises(ParameterError, match=match):
        build()
