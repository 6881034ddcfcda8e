"""Property tests (hypothesis) for robustness of fits and divergences.

Oracle: invariants that must hold for every valid input. A fit never returns
NaN, infinite or negative factors, whatever the data: all-zero rows and
columns, an all-zero V (beta > 0), and magnitudes from 1e-30 to 1e30 in
float32 and float64. The beta-divergence is finite and non-negative for
any beta in [-2, 4] with zeros on either side.
"""

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nmfcore import divergence, metrics
from nmfcore.nmf import NMF, NMFD

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])

dtypes = st.sampled_from([torch.float32, torch.float64])


def _assert_valid(model, what):
    for name in ("W", "H"):
        X = getattr(model, name).detach()
        assert torch.isfinite(X).all(), f"{what}: {name} has NaN/inf"
        assert (X >= 0).all(), f"{what}: {name} has negative entries"
    Y = model().detach()
    assert torch.isfinite(Y).all(), f"{what}: reconstruction has NaN/inf"


def _data(seed, n, c, dtype, log10_lo, log10_hi, zero_rows, zero_cols, positive=False):
    """V with entries of magnitude 10**U(log10_lo, log10_hi), some zero rows/columns and zeros."""
    g = torch.Generator().manual_seed(seed)
    exponent = log10_lo + (log10_hi - log10_lo) * torch.rand(n, c, generator=g, dtype=torch.float64)
    V = torch.pow(10.0, exponent) * (0.5 + torch.rand(n, c, generator=g, dtype=torch.float64))
    if not positive:
        V[torch.rand(n, c, generator=g) < 0.2] = 0
        V[:zero_rows] = 0
        V[:, :zero_cols] = 0
    return V.to(dtype)


@SETTINGS
@given(seed=st.integers(0, 2 ** 16), n=st.integers(2, 14), c=st.integers(2, 14), rank=st.integers(1, 4),
       beta=st.sampled_from([0.5, 1.0, 2.0]), solver=st.sampled_from(["auto", "mu"]), dtype=dtypes,
       center=st.integers(-30, 30), spread=st.integers(0, 60), zero_rows=st.integers(0, 2),
       zero_cols=st.integers(0, 2), sparse=st.booleans())
def test_fit_factors_finite_nonnegative(seed, n, c, rank, beta, solver, dtype, center, spread, zero_rows,
                                        zero_cols, sparse):
    """Invariant: NMF.fit gives finite non-negative factors for magnitudes within [1e-30, 1e30]."""
    lo, hi = max(-30, center - spread // 2), min(30, center + spread // 2)
    V = _data(seed, n, c, dtype, lo, hi, zero_rows, zero_cols)
    m = NMF(V.shape, rank, generator=seed).to(dtype)
    n_iter = m.fit(V.to_sparse() if sparse else V, beta=beta, max_iter=15, tol=0, solver=solver)
    assert n_iter == 15
    _assert_valid(m, f"beta={beta} {dtype} 1e{lo}..1e{hi}")


@SETTINGS
@given(seed=st.integers(0, 2 ** 16), beta=st.sampled_from([0.5, 1.0, 2.0]), dtype=dtypes,
       solver=st.sampled_from(["auto", "mu"]), init=st.sampled_from([None, "random", "nndsvda", "nndsvd"]))
def test_fit_all_zero_v(seed, beta, dtype, solver, init):
    """Invariant: an all-zero V (beta > 0) gives finite non-negative factors and a zero-ish reconstruction."""
    V = torch.zeros(7, 5, dtype=dtype)
    m = NMF(V.shape, 2, generator=seed).to(dtype)
    m.fit(V, beta=beta, max_iter=10, tol=0, solver=solver, init=init, generator=seed)
    _assert_valid(m, f"all-zero V beta={beta}")
    assert float(metrics.beta_div(m().detach(), V, beta)) <= float(
        metrics.beta_div(NMF(V.shape, 2, generator=seed).to(dtype)().detach(), V, beta))


@SETTINGS
@given(seed=st.integers(0, 2 ** 16), dtype=dtypes, center=st.integers(-30, 30), spread=st.integers(0, 6),
       beta=st.sampled_from([0.0, -0.5]))
def test_fit_nonpositive_beta_on_positive_v(seed, dtype, center, spread, beta):
    """Invariant: beta <= 0 on a strictly positive V gives finite non-negative factors at any scale."""
    lo, hi = max(-30, center - spread // 2), min(30, center + spread // 2)
    V = _data(seed, 9, 8, dtype, lo, hi, 0, 0, positive=True)
    m = NMF(V.shape, 3, generator=seed).to(dtype)
    m.fit(V, beta=beta, max_iter=15, tol=0)
    _assert_valid(m, f"beta={beta} {dtype} 1e{lo}..1e{hi}")


@SETTINGS
@given(seed=st.integers(0, 2 ** 16), beta=st.sampled_from([0.5, 1.0, 2.0]), dtype=dtypes,
       scale_exp=st.integers(-30, 30), sH=st.one_of(st.none(), st.floats(0.1, 0.9)))
def test_nmfd_and_sparse_fit_factors_finite_nonnegative(seed, beta, dtype, scale_exp, sH):
    """Invariant: NMFD.fit and NMF.sparse_fit keep factors finite and non-negative at any scale."""
    g = torch.Generator().manual_seed(seed)
    V = torch.rand(1, 6, 15, generator=g, dtype=torch.float64)
    V[V < 0.3] = 0
    V = (V * 10.0 ** scale_exp).to(dtype)
    m = NMFD(V.shape, 2, T=3, generator=seed).to(dtype)
    m.fit(V, beta=beta, max_iter=10, tol=0)
    _assert_valid(m, f"NMFD beta={beta} 1e{scale_exp}")
    V2 = V[0]
    m2 = NMF(V2.shape, 2, generator=seed).to(dtype)
    m2.sparse_fit(V2, beta=beta, max_iter=8, sH=sH)
    _assert_valid(m2, f"sparse_fit beta={beta} 1e{scale_exp} sH={sH}")


@SETTINGS
@given(seed=st.integers(0, 2 ** 16), beta=st.floats(-2, 4, allow_nan=False), dtype=dtypes,
       zero_frac=st.floats(0, 1), scale_exp=st.integers(-5, 5), n=st.integers(1, 40))
def test_beta_div_finite_nonnegative(seed, beta, dtype, zero_frac, scale_exp, n):
    """Invariant: beta_div is finite and >= 0 on non-negative data with zeros, any beta in [-2, 4]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, generator=g, dtype=torch.float64) * 10.0 ** scale_exp
    y = torch.rand(n, generator=g, dtype=torch.float64) * 10.0 ** scale_exp
    x[torch.rand(n, generator=g, dtype=torch.float64) < zero_frac] = 0
    y[torch.rand(n, generator=g, dtype=torch.float64) < zero_frac] = 0
    x, y = x.to(dtype), y.to(dtype)
    for d in (metrics.beta_div(x, y, beta), divergence.beta_divergence(y, x, beta)):
        assert torch.isfinite(d), (beta, d)
        assert float(d) >= 0


@SETTINGS
@given(beta=st.floats(-2, 4, allow_nan=False), dtype=dtypes)
def test_beta_div_all_zero_both_sides(beta, dtype):
    """Invariant: d(0 | 0) is finite and non-negative; for beta > 0 it is at most the documented floor
    value d(0 | eps) = eps**beta / beta per entry (the model is floored at eps where it divides)."""
    z = torch.zeros(5, dtype=dtype)
    d = metrics.beta_div(z, z, beta)
    assert torch.isfinite(d) and float(d) >= 0
    eps = torch.finfo(dtype).eps
    if beta >= eps:
        assert float(d) <= 5 * eps ** beta / beta * (1 + 1e-4)
