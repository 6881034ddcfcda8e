"""Tests for nmfcore.divergence: the only module that knows the beta cases.

Oracles: a slow float64 per-element loop of the textbook formula; autograd's
gradient of the divergence (for the MU terms); the documented table of
exponents; invariants (finite, non-negative, zero rows stay zero).
"""

import math

import numpy as np
import pytest
import torch

from nmfcore import divergence as div
from nmfcore._workspace import Workspace

BETAS = [-1.2, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0]


def slow_beta_divergence(V, Y, beta):
    """Slow float64 reference: explicit loop over entries of d_beta(v | y)."""
    V = np.asarray(V, dtype=np.float64).ravel()
    Y = np.asarray(Y, dtype=np.float64).ravel()
    total = 0.0
    for v, y in zip(V.tolist(), Y.tolist()):
        if beta == 1:
            d = (v * math.log(v / y) if v > 0 else 0.0) - v + y
        elif beta == 0:
            d = v / y - math.log(v / y) - 1
        else:
            d = (v ** beta + (beta - 1) * y ** beta - beta * v * y ** (beta - 1)) / (beta * (beta - 1))
        total += d
    return total


def _positive(gen, *shape, low=0.1):
    return torch.rand(*shape, generator=gen, dtype=torch.float64) + low


@pytest.mark.parametrize("beta", BETAS)
def test_beta_divergence_matches_slow_loop_positive(gen, beta):
    """Oracle: slow float64 loop, strictly positive V and Y."""
    V = _positive(gen, 12, 17)
    Y = _positive(gen, 12, 17)
    got = div.beta_divergence(V, Y, beta)
    assert got.dtype == torch.float64 and got.ndim == 0
    expected = slow_beta_divergence(V, Y, beta)
    assert float(got) == pytest.approx(expected, rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("beta", [b for b in BETAS if b > 0])
def test_beta_divergence_matches_slow_loop_zeros_in_data(gen, beta):
    """Oracle: slow float64 loop; for beta > 0, d(0 | y) = y**beta / beta is finite."""
    V = _positive(gen, 10, 9)
    V[V < 0.5] = 0.0
    assert (V == 0).any()
    Y = _positive(gen, 10, 9)
    expected = slow_beta_divergence(V, Y, beta)
    assert float(div.beta_divergence(V, Y, beta)) == pytest.approx(expected, rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("beta", BETAS)
def test_beta_divergence_is_zero_at_equality(gen, beta):
    """Invariant: d(V | V) = 0."""
    V = _positive(gen, 8, 7)
    assert float(div.beta_divergence(V, V.clone(), beta)) == pytest.approx(0.0, abs=1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("beta", BETAS)
def test_beta_divergence_finite_nonnegative_with_zeros_on_either_side(gen, beta, dtype):
    """Invariant: finite and >= 0 with zeros in V, in Y and in both at once."""
    V = torch.rand(9, 11, generator=gen, dtype=dtype)
    Y = torch.rand(9, 11, generator=gen, dtype=dtype)
    V[V < 0.3] = 0
    Y[Y < 0.3] = 0
    V[0, :] = 0
    Y[0, :] = 0  # zeros on both sides at once
    for a, b in ((V, Y), (Y, V), (torch.zeros_like(V), Y), (V, torch.zeros_like(Y))):
        d = div.beta_divergence(a, b, beta)
        assert d.dtype == dtype
        assert torch.isfinite(d), (beta, d)
        assert float(d) >= 0


@pytest.mark.parametrize("beta", BETAS)
def test_mu_terms_difference_is_autograd_gradient(gen, beta):
    """Oracle (gradient consistency): pos - neg == d/dY beta_divergence(V, Y)."""
    V = _positive(gen, 7, 13)
    Y = _positive(gen, 7, 13).requires_grad_(True)
    (grad,) = torch.autograd.grad(div.beta_divergence(V, Y, beta), Y)
    neg, pos = div.mu_terms(V, Y.detach(), beta)
    if pos is None:
        pos = torch.ones_like(V)
    assert (neg >= 0).all() and (pos >= 0).all()
    torch.testing.assert_close(pos - neg, grad, rtol=1e-10, atol=1e-12)


def test_mu_terms_documented_table(gen):
    """Oracle: the table in the docstring (beta=2 returns (V, Y); beta=1 has pos None)."""
    V = _positive(gen, 4, 5)
    Y = _positive(gen, 4, 5)
    neg, pos = div.mu_terms(V, Y, 2)
    assert neg is V and pos is Y
    neg, pos = div.mu_terms(V, Y, 1)
    assert pos is None
    torch.testing.assert_close(neg, V / Y)
    neg, pos = div.mu_terms(V, Y, 0)
    torch.testing.assert_close(neg, V / Y ** 2)
    torch.testing.assert_close(pos, 1 / Y)
    neg, pos = div.mu_terms(V, Y, 0.5)
    torch.testing.assert_close(neg, V * Y ** -1.5)
    torch.testing.assert_close(pos, Y ** -0.5)


def test_mu_terms_out_buffer_beta1(gen):
    """Oracle: with ``out`` holding Y, neg = V / Y is written into the buffer."""
    V = _positive(gen, 4, 5)
    Y = _positive(gen, 4, 5)
    buf = Y.clone()
    neg, pos = div.mu_terms(V, buf, 1, out=buf)
    assert pos is None
    assert neg.data_ptr() == buf.data_ptr()
    torch.testing.assert_close(neg, V / Y)


@pytest.mark.parametrize("beta", BETAS)
def test_mu_terms_in_place_equals_out_of_place(gen, beta):
    """Oracle (equivalence): the in-place form the fit loop uses (``out=Y`` and the
    workspace's scratch buffer, nothing allocated of Y's size) gives the allocating form's terms."""
    V = _positive(gen, 6, 9)
    Y = _positive(gen, 6, 9)
    Y[0, 0] = 0  # floored either way
    neg, pos = div.mu_terms(V, Y, beta)
    buf, scratch = Y.clone(), torch.full_like(Y, float("nan"))
    cache = Workspace()
    cache.share("scratch", scratch)  # a workspace buffer from an earlier call: its contents must not matter
    neg2, pos2 = div.mu_terms(V, buf, beta, out=buf, workspace=cache)
    torch.testing.assert_close(neg2, neg, rtol=1e-13, atol=0)
    if pos is None:
        assert pos2 is None
    else:
        torch.testing.assert_close(pos2, pos, rtol=1e-13, atol=0)
    if beta not in (1.0, 2.0):
        buffers = {buf.data_ptr(), scratch.data_ptr()}
        assert {neg2.data_ptr(), pos2.data_ptr()} == buffers
    else:
        assert cache["scratch"] is scratch  # nothing else needed


def test_mu_terms_out_must_be_y(gen):
    V, Y = _positive(gen, 3, 4), _positive(gen, 3, 4)
    with pytest.raises(ValueError, match="out must be Y itself"):
        div.mu_terms(V, Y, 0.5, out=Y.clone())


@pytest.mark.parametrize("beta", BETAS)
def test_mu_terms_finite_with_zero_model(gen, beta):
    """Invariant: Y is floored where raised to a negative power (no inf/NaN)."""
    V = _positive(gen, 4, 5)
    Y = torch.zeros(4, 5, dtype=torch.float64)
    neg, pos = div.mu_terms(V, Y, beta)
    assert torch.isfinite(neg).all()
    assert pos is None or torch.isfinite(pos).all()


@pytest.mark.parametrize("beta, expected", [
    (-2.0, 0.25), (-1.2, 1 / 3.2), (-0.5, 0.4), (0.0, 1.0), (0.5, 1.0), (1.0, 1.0),
    (1.5, 1.0), (2.0, 1.0), (2.5, 1 / 1.5), (3.0, 0.5), (4.0, 1 / 3),
])
def test_mu_exponent_documented_values(beta, expected):
    """Oracle: the docstring's rule (1/(2-beta) below 0, 1 on [0, 2], 1/(beta-1) above 2)."""
    assert div.mu_exponent(beta) == pytest.approx(expected, rel=1e-15)


def test_eps_follows_dtype():
    """Oracle: tensorly's rule, epsilon is finfo(dtype), not a float32 constant."""
    assert div.eps_for(torch.float64) == torch.finfo(torch.float64).eps
    assert div.eps_for(torch.float32) == torch.finfo(torch.float32).eps


@pytest.mark.parametrize("beta", [0.5, 1.0, 1.5, 2.0, 3.0])
def test_divergence_of_zero_matches_formula(gen, beta):
    """Oracle: d(0 | y) = y**beta / beta equals the slow loop with v = 0."""
    Y = _positive(gen, 3, 4)
    expected = slow_beta_divergence(torch.zeros_like(Y), Y, beta)
    assert float(div.divergence_of_zero(Y, beta).sum()) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("beta", [-1.0, 0.5, 1.0, 2.0, 3.0])
@pytest.mark.parametrize("l1, l2", [(0.0, 0.0), (0.3, 0.0), (0.0, 0.7), (0.3, 0.7)])
def test_multiplicative_step_formula(gen, beta, l1, l2):
    """Oracle: the docstring formula param * (neg / (pos + l1 + l2 * param)) ** mu_exponent(beta)."""
    P = _positive(gen, 5, 3)
    neg = _positive(gen, 5, 3)
    pos = _positive(gen, 5, 3)
    gamma = div.mu_exponent(beta)
    expected = P * (neg / (pos + l1 + l2 * P)) ** gamma
    out = div.multiplicative_step(P.clone(), neg.clone(), pos.clone(), beta, l1, l2)
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("beta", [-1.0, 0.5, 1.0, 2.0, 3.0])
@pytest.mark.parametrize("l1, l2, relax", [(0.0, 0.0, 1.0), (0.2, 0.1, 1.0), (0.0, 0.0, 1.7)])
def test_multiplicative_step_keeps_zero_rows_zero(gen, beta, l1, l2, relax):
    """Invariant: a zero row with zero terms stays zero (0 / 0 must not give NaN)."""
    P = _positive(gen, 6, 3)
    neg = _positive(gen, 6, 3)
    pos = _positive(gen, 6, 3)
    P[2] = 0
    neg[2] = 0
    pos[2] = 0
    out = div.multiplicative_step(P, neg, pos, beta, l1, l2, relax=relax)
    assert out is P  # in place
    assert torch.isfinite(P).all()
    assert (P[2] == 0).all()
    assert (P[[0, 1, 3, 4, 5]] > 0).all()


@pytest.mark.parametrize("beta", BETAS)
@pytest.mark.parametrize("relax", [1.0, 1.7])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_multiplicative_step_without_information_leaves_the_coordinate(gen, beta, relax, dtype):
    """Invariant: both parts zero (0 / 0: the data carry nothing about a coordinate, e.g. a template whose
    activations in a mini-batch are all zero) leave a positive coordinate unchanged, not zero; a zero
    positive part with a positive negative part likewise (no step where the ratio is not a number)."""
    P = _positive(gen, 6, 3).to(dtype)
    neg = _positive(gen, 6, 3).to(dtype)
    pos = _positive(gen, 6, 3).to(dtype)
    neg[:, 1] = 0  # a column without information, as W's parts for a silent component
    pos[:, 1] = 0
    pos[4, 2] = 0  # x / 0
    before = P.clone()
    div.multiplicative_step(P, neg, pos, beta, relax=relax)
    assert torch.isfinite(P).all()
    torch.testing.assert_close(P[:, 1], before[:, 1], rtol=0, atol=0)
    assert P[4, 2] == before[4, 2]
    assert not torch.equal(P[:, 0], before[:, 0])  # the other coordinates did step
    # the beta = 1 layout: the positive part a broadcast column sum with a zero entry
    P = before.clone()
    col = torch.ones(3, dtype=dtype)
    col[1] = 0
    div.multiplicative_step(P, torch.zeros_like(P), col, beta, relax=relax)
    torch.testing.assert_close(P[:, 1], before[:, 1], rtol=0, atol=0)


def test_multiplicative_step_broadcast_pos(gen):
    """Oracle: a broadcast pos (the beta=1 column sum) acts like the full tensor."""
    P = _positive(gen, 6, 3)
    neg = _positive(gen, 6, 3)
    pos = _positive(gen, 3)
    expected = div.multiplicative_step(P.clone(), neg.clone(), pos.expand(6, 3).clone(), 1.0)
    got = div.multiplicative_step(P.clone(), neg.clone(), pos, 1.0)
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("beta", [-0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0])
def test_auxiliary_is_minimised_by_mm_ratio(gen, beta):
    """Oracle: Fevotte & Idier's MM exponent (1/(2-beta) below 1, 1 on [1, 2], 1/(beta-1) above)
    minimises the documented majoriser (checked on a grid)."""
    m = _positive(gen, 5, low=0.2) * 3
    rho = torch.linspace(0.05, 8, 4001, dtype=torch.float64).unsqueeze(1)
    aux = div.auxiliary(rho.expand(-1, 5), m.expand(4001, -1), beta)
    best = rho[aux.argmin(0), 0]
    gamma_mm = 1 / (2 - beta) if beta < 1 else (1.0 if beta <= 2 else 1 / (beta - 1))
    torch.testing.assert_close(best, m ** gamma_mm, rtol=5e-3, atol=5e-3)
    if not 0 <= beta < 1:  # where mu_exponent is the MM value
        assert div.mu_exponent(beta) == pytest.approx(gamma_mm)


@pytest.mark.parametrize("beta", [-0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0])
@pytest.mark.parametrize("relax", [1.0, 1.5, 2.0])
def test_multiplicative_step_never_increases_nmf_objective(gen, beta, relax):
    """Oracle (monotone objective): one H update, plain or over-relaxed, never increases d_beta."""
    from nmfcore.nmf import NMF

    V = _positive(gen, 20, 15)
    W = _positive(gen, 15, 3)
    H = _positive(gen, 20, 3)
    m = NMF(W=W, H=H)
    X = H.clone()
    for _ in range(5):
        before = float(div.beta_divergence(V, X @ W.t(), beta))
        neg, pos = m.operator.terms("H", V, W, X, beta, Workspace())
        div.multiplicative_step(X, neg, pos, beta, relax=relax)
        after = float(div.beta_divergence(V, X @ W.t(), beta))
        assert after <= before * (1 + 1e-12), (beta, relax, before, after)


@pytest.mark.parametrize("p", [-3.0, -2.0, -1.7, -1.5, -1.0, -0.5, 0.5, 1.0, 1.5, 2.0, 2.2, 3.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_power_equals_torch_pow(gen, p, dtype):
    """Oracle (equivalence): the fit loop's fast power equals torch.pow, with and without out."""
    Y = torch.exp(torch.empty(500, dtype=torch.float64).uniform_(-16, 7, generator=gen)).to(dtype)
    expected = torch.pow(Y.double(), p)
    rtol = 1e-13 if dtype == torch.float64 else 2e-5
    torch.testing.assert_close(div.power(Y, p).double(), expected, rtol=rtol, atol=0)
    buf = torch.empty_like(Y)
    out = div.power(Y, p, out=buf)
    assert out.data_ptr() == buf.data_ptr()
    torch.testing.assert_close(out.double(), expected, rtol=rtol, atol=0)
    exact = div.power(Y, p, approx=False).double()
    torch.testing.assert_close(exact, expected, rtol=1e-15 if dtype == torch.float64 else 2e-6, atol=0)


def _cascade_exponent(m, beta, factors):
    """Slow float64 reference: the largest factor certified at each point by evaluating the
    auxiliary function there (gamma * 1 where none is)."""
    gamma = div.mu_exponent(beta)
    level = div.auxiliary(torch.ones_like(m), m, beta)
    best = torch.ones_like(m)
    for c in sorted(factors):
        ok = div.auxiliary(m.pow(gamma * c), m, beta) <= level
        best = torch.where(ok, torch.full_like(m, c), best)
    return gamma * best


@pytest.mark.parametrize("beta", [-1.2, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_relaxed_step_is_certified_and_matches_pointwise_cascade(gen, beta, dtype):
    """Oracles: (1) every coordinate's over-relaxed ratio satisfies the auxiliary bound
    aux(ratio) <= aux(1) in float64 (the step never increases the objective); (2) the
    table picks the slow pointwise cascade's exponent except in the cells where a
    factor's certification changes (and beyond its range, at most m outside e**+-60,
    where it takes the plain step), and never a larger one."""
    factors = (1.3, 1.9)
    m = torch.exp(torch.empty(20000, dtype=torch.float64).uniform_(-70, 70, generator=gen))
    m = torch.cat([m, torch.tensor([1.0, 0.5, 2.0, 1e-30, 1e30], dtype=torch.float64)]).to(dtype)
    X = torch.ones_like(m)
    div.multiplicative_step(X, m.clone(), torch.ones_like(m), beta, relax=factors)
    m64, ratio = m.double(), X.double()
    assert bool((ratio > 0).all())  # no relaxed step underflows to an absorbing zero
    bound = div.auxiliary(torch.ones_like(m64), m64, beta)
    got = div.auxiliary(ratio, m64, beta)
    slack = 1e-12 if dtype == torch.float64 else 1e-5
    assert bool((got <= bound + slack * bound.abs().clamp_min(1)).all())
    exponent = torch.log(ratio) / torch.log(m64)
    reference = _cascade_exponent(m64, beta, factors)
    _, scale, offset = div._relax_table(beta, factors, dtype, "cpu")
    log_m = torch.log(m64).abs()
    # at m = 1 every exponent gives ratio 1; beyond the table's range, the plain step
    away = (log_m > 1e-3) & (log_m < offset / scale - 1)
    assert bool((exponent[away] <= reference[away] + 1e-4).all())
    agree = (exponent[away] - reference[away]).abs() < 1e-4
    assert float(agree.double().mean()) > 0.97, float(agree.double().mean())


def test_multiplicative_step_zero_data_row_in_nmf_update(gen):
    """Invariant, end to end: an all-zero data row and factor row stay zero through an NMF H update."""
    from nmfcore.nmf import NMF

    V = _positive(gen, 6, 5)
    V[3] = 0
    H = _positive(gen, 6, 2)
    H[3] = 0
    W = _positive(gen, 5, 2)
    m = NMF(W=W, H=H)
    for beta in (0.5, 1.0, 2.0, 3.0):
        neg, pos = m.operator.terms("H", V, W, H, beta, Workspace())
        X = H.clone()
        div.multiplicative_step(X, neg, pos, beta)
        assert torch.isfinite(X).all()
        assert (X[3] == 0).all()


@pytest.mark.parametrize("relax", [1.0, 1.7])
def test_multiplicative_step_all_zero_component_keeps_its_template(gen, relax):
    """Invariant, end to end: in a full-batch NMF W update, a component whose activations are all zero
    (0 / 0 in its column of W's parts) keeps its template (a floored denominator made it zero); the
    other templates step."""
    from nmfcore.nmf import NMF

    V = _positive(gen, 6, 5)
    H = _positive(gen, 6, 3)
    H[:, 1] = 0
    W = _positive(gen, 5, 3)
    m = NMF(W=W, H=H)
    for beta in BETAS:
        neg, pos = m.operator.terms("W", V, W, H, beta, Workspace())
        X = W.clone()
        div.multiplicative_step(X, neg, pos, beta, relax=relax)
        assert torch.equal(X[:, 1], W[:, 1])
        assert not torch.equal(X[:, 0], W[:, 0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("limit, offset", [(0.0, 1e-300), (0.0, -1e-300), (0.0, 1e-40), (0.0, 1e-9),
                                           (1.0, 1e-12), (1.0, -1e-9)])
def test_beta_divergence_at_the_dtype_resolution_of_0_and_1(gen, dtype, limit, offset):
    """Oracle: beta within sqrt(eps) of 0 or 1 (where the general formula is mostly rounding error)
    gives the IS / KL limit, finite with zeros included."""
    V = torch.rand(6, 7, generator=gen, dtype=dtype)
    Y = torch.rand(6, 7, generator=gen, dtype=dtype)
    V[0, 0] = Y[1, 1] = V[2, 2] = Y[2, 2] = 0
    d = div.beta_divergence(V, Y, limit + offset)
    assert torch.isfinite(d) and float(d) >= 0
    torch.testing.assert_close(d, div.beta_divergence(V, Y, limit))


@pytest.mark.parametrize("limit", [0.0, 1.0])
@pytest.mark.parametrize("offset", [1e-3, -1e-3, 1e-6, -1e-6])
def test_beta_divergence_is_continuous_at_0_and_1(gen, limit, offset):
    """Oracle: the divergence near beta = 0 and 1 approaches the IS and KL limits (float64),
    on both sides of the switch to the limit formula."""
    V = _positive(gen, 6, 7)
    Y = _positive(gen, 6, 7)
    near = float(div.beta_divergence(V, Y, limit + offset))
    assert near == pytest.approx(float(div.beta_divergence(V, Y, limit)), rel=10 * abs(offset))


@pytest.mark.parametrize("beta", [-1.2, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_divergence_sum_equals_beta_divergence(beta, dtype):
    """Oracle: the elementwise divergence. The fit loop's split form (cached data
    terms + in-place passes over Y) gives the same sum, with zeros on either side."""
    g = torch.Generator().manual_seed(3)
    V = torch.rand(30, 20, generator=g, dtype=dtype)
    Y = torch.rand(30, 20, generator=g, dtype=dtype)
    V[0] = 0
    Y[:, 0] = 0
    if beta <= 0:
        V = V + 1e-3
    cache = Workspace()
    expected = div.beta_divergence(V, Y, beta)
    got = div.divergence_sum(V, Y.clone(), beta, cache)
    again = div.divergence_sum(V, Y.clone(), beta, cache)  # from the cache
    cache.share("scratch", torch.full_like(Y, float("nan")))  # a workspace buffer: its contents must not matter
    with_scratch = div.divergence_sum(V, Y.clone(), beta, cache)
    rtol = 1e-12 if dtype == torch.float64 else 2e-6
    assert torch.allclose(got, expected, rtol=rtol)
    assert torch.allclose(again, expected, rtol=rtol)
    assert torch.allclose(with_scratch, expected, rtol=rtol)


@pytest.mark.parametrize("beta", [-1.2, 0.0, 0.5, 1.0, 1.5, 3.0])
def test_divergence_sum_on_transposed_views(beta):
    """Oracle: the elementwise divergence. V and Y given as transposed views (the layout NMF's
    fit keeps for a spectrogram passed as ``S.t()``) give the same sum, the scratch buffer takes
    Y's layout, and Y is written through its view (no hidden copy)."""
    g = torch.Generator().manual_seed(4)
    V = torch.rand(20, 30, generator=g, dtype=torch.float64).add_(1e-3).t()
    Y = torch.rand(20, 30, generator=g, dtype=torch.float64).add_(1e-3).t()
    expected = div.beta_divergence(V, Y, beta)
    cache = Workspace()
    Yw = Y.clone().t().contiguous().t()  # a transposed view of its own storage
    got = div.divergence_sum(V, Yw, beta, cache)
    assert torch.allclose(got, expected, rtol=1e-12)
    if beta in (0, 1):
        assert not torch.equal(Yw, Y)  # log / reciprocal in place through the view
    if "scratch" in cache:
        assert cache["scratch"].stride() == Y.stride()
    assert torch.allclose(div.divergence_sum(V, Y.clone().t().contiguous().t(), beta, cache), expected, rtol=1e-12)


@pytest.mark.parametrize("beta", [0.0, 1.0, 0.5])
def test_mu_terms_allocate_scratch_only_where_needed(gen, beta):
    """Invariant (memory): in place, beta=1 needs no second data-sized buffer; 0 and 0.5 keep one
    in the workspace and reuse it on the next call."""
    V, Y = _positive(gen, 5, 6), _positive(gen, 5, 6)
    cache = Workspace()
    div.mu_terms(V, Y.clone(), beta, out=None, workspace=cache)
    assert "scratch" not in cache  # out of place: nothing kept
    buf = Y.clone()
    div.mu_terms(V, buf, beta, out=buf, workspace=cache)
    assert ("scratch" in cache) == (beta != 1.0)
    if beta != 1.0:
        first = cache["scratch"]
        buf = Y.clone()
        div.mu_terms(V, buf, beta, out=buf, workspace=cache)
        assert cache["scratch"] is first


def test_relaxed_step_without_certified_factor_is_the_plain_step(gen):
    """Equivalence: at beta = 0 no factor is certified anywhere, so the relaxed step skips the table
    and gives exactly the plain step."""
    table, _, _ = div._relax_table(0.0, (1.3, 1.9), torch.float32, "cpu")
    assert table is None
    assert div._relax_table(1.0, (1.3, 1.9), torch.float32, "cpu")[0] is not None
    neg, pos = _positive(gen, 7, 5), _positive(gen, 7, 5)
    X1 = _positive(gen, 7, 5)
    X2 = X1.clone()
    div.multiplicative_step(X1, neg.clone(), pos, 0.0, relax=(1.3, 1.9))
    div.multiplicative_step(X2, neg.clone(), pos, 0.0)
    assert torch.equal(X1, X2)


@pytest.mark.parametrize("shape,target", [((3, 4), (3, 4)), ((1, 4), (3, 4)), ((4,), (3, 4)), ((3, 1), (3, 4)),
                                          ((), (3, 4)), ((2, 4), (3, 4)), ((3, 4), (4,)), ((1, 3, 4), (3, 4)),
                                          ((5, 1, 4), (5, 3, 4)), ((5, 2, 4), (5, 3, 4))])
def test_broadcasts_to_agrees_with_torch(shape, target):
    """Oracle: torch.broadcast_shapes -- a shape broadcasts to target iff broadcasting both gives target."""
    try:
        expected = torch.broadcast_shapes(shape, target) == torch.Size(target)
    except RuntimeError:
        expected = False
    assert div._broadcasts_to(torch.Size(shape), torch.Size(target)) == expected
