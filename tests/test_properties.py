"""Property tests (hypothesis) for robustness of fits and divergences.

Oracle: invariants that must hold for every valid input. A fit never returns
NaN, infinite or negative factors, whatever the data: all-zero rows and
columns, an all-zero V (beta > 0), and magnitudes from 1e-30 to 1e30 in
float32 and float64. The beta-divergence is finite and non-negative for
any beta in [-2, 4] with zeros on either side.
"""

import pytest
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


# ----------------------------------------------------------- issue 14: the ends of every dtype
# Decimal exponents of the largest entry of V that each dtype holds: from subnormal data up to
# the largest finite values (float16 subnormals start at 6e-8, float32 at 1.4e-45).
PEAKS = {torch.float16: (-7.0, 4.8), torch.bfloat16: (-39.0, 38.5), torch.float32: (-45.0, 38.5),
         torch.float64: (-320.0, 308.0)}
all_dtypes = st.sampled_from([torch.float16, torch.bfloat16, torch.float32, torch.float64])
betas = st.one_of(st.sampled_from([0.0, 0.5, 1.0, 2.0]), st.floats(-1e6, 1e6, allow_nan=False))


def _peaked(seed, shape, dtype, frac, spread, positive):
    """V of the given shape, its maximum at ``frac`` of the dtype's exponent range, ``spread`` decades deep."""
    lo, hi = PEAKS[dtype]
    peak = lo + frac * (hi - lo)
    g = torch.Generator().manual_seed(seed)
    expo = peak - spread * torch.rand(shape, generator=g, dtype=torch.float64)
    V = torch.pow(10.0, expo).to(dtype)
    tiny = torch.finfo(dtype).smallest_normal * torch.finfo(dtype).eps  # the smallest subnormal, about
    if positive:
        V = V.clamp_min(tiny)
    return V


def _assert_factors(model, what):
    for name in ("W", "H"):
        X = getattr(model, name).detach()
        assert torch.isfinite(X).all(), f"{what}: {name} has NaN/inf"
        assert (X >= 0).all(), f"{what}: {name} has negative entries"


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2 ** 16), dtype=all_dtypes, frac=st.floats(0, 1), spread=st.floats(0, 6),
       beta=betas, model=st.sampled_from(["NMF", "NMFD", "NMF2D"]),
       init=st.sampled_from([None, "random", "nndsvda"]), solver=st.sampled_from(["auto", "mu"]))
def test_fit_at_the_ends_of_every_dtype(seed, dtype, frac, spread, beta, model, init, solver):
    """Invariant: from subnormal to near-maximal data, in float16/bfloat16/float32/float64 and for any
    |beta| up to 1e6, fit returns finite non-negative factors (no IndexError, OverflowError or NaN)."""
    from nmfcore.nmf import NMF2D
    shape = {"NMF": (8, 7), "NMFD": (1, 6, 9), "NMF2D": (1, 1, 7, 8)}[model]
    V = _peaked(seed, shape, dtype, frac, spread, positive=beta <= 0)
    if model == "NMF":
        m = NMF(V.shape, 2, generator=seed)
    elif model == "NMFD":
        m = NMFD(V.shape, 2, T=2, generator=seed)
        init = None if init == "nndsvda" else init
    else:
        m = NMF2D(V.shape, 2, kernel_size=(2, 2), generator=seed)
        init = None if init == "nndsvda" else init
        solver = "mu"
    m = m.to(dtype)
    m.fit(V, beta=beta, max_iter=8, tol=0, init=init, solver=solver, generator=seed)
    _assert_factors(m, f"{model} {dtype} peak frac {frac:.3f} beta={beta} init={init}")


@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2 ** 16), dtype=st.sampled_from([torch.float32, torch.float64]),
       log10_c=st.floats(-30, 30), beta=st.sampled_from([0.0, 0.5, 1.0, 2.0]),
       init=st.sampled_from([None, "random", "nndsvd", "nndsvda", "nndsvdar"]),
       solver=st.sampled_from(["auto", "mu"]), sparse_target=st.one_of(st.none(), st.floats(0.2, 0.8)))
def test_fit_of_c_v_is_c_times_fit_of_v(seed, dtype, log10_c, beta, init, solver, sparse_target):
    """Oracle (scale equivariance): the fit (or sparse_fit) of c V is c times the fit of V, same start
    and iterations, for c in 1e-30..1e30 (rtol 1e-8 float64, 2e-3 float32)."""
    c = 10.0 ** log10_c
    g = torch.Generator().manual_seed(seed)
    V = (torch.rand(9, 3, generator=g, dtype=torch.float64) @ torch.rand(3, 8, generator=g, dtype=torch.float64)
         + 0.05)

    def run(scale):
        m = NMF(V.shape, 3, generator=seed).to(dtype)
        X = (V * scale).to(dtype)
        if sparse_target is not None:
            m.sparse_fit(X, beta=max(beta, 1.0), max_iter=8, sH=sparse_target)
        else:
            m.fit(X, beta=beta, max_iter=12, tol=0, init=init, solver=solver, generator=seed)
        return m().detach().double()

    ref, out = run(1.0), run(c)
    assert torch.isfinite(out).all()
    rtol = 1e-8 if dtype == torch.float64 else 2e-3
    torch.testing.assert_close(out / c, ref, rtol=rtol, atol=rtol * float(ref.max()))


@SETTINGS
@given(model=st.sampled_from(["NMFD", "NMF2D", "NMF3D"]), kernel=st.one_of(
    st.integers(-2, 4), st.lists(st.integers(-1, 4), min_size=0, max_size=4).map(tuple)))
def test_kernel_arguments_build_or_raise_parameter_error(model, kernel):
    """Invariant: any int or tuple kernel either builds the model or raises ParameterError (not
    IndexError / ValueError from unpacking)."""
    from nmfcore.exceptions import ParameterError
    from nmfcore.nmf import NMF2D, NMF3D
    cls, shape, kw = {"NMFD": (NMFD, (1, 6, 9), "T"), "NMF2D": (NMF2D, (1, 1, 6, 7), "kernel_size"),
                      "NMF3D": (NMF3D, (1, 1, 5, 6, 7), "kernel_size")}[model]
    try:
        m = cls(shape, 2, **{kw: kernel})
    except ParameterError:
        return
    assert m().shape == torch.Size(shape)


@SETTINGS
@given(dtype_w=st.sampled_from([torch.float32, torch.float64, torch.float16]),
       dtype_h=st.sampled_from([torch.float32, torch.float64, torch.float16]),
       layout=st.sampled_from(["dense", "coo", "csr"]), bad=st.sampled_from([None, "nan", "inf", "neg"]))
def test_constructor_and_targets_are_checked(dtype_w, dtype_h, layout, bad):
    """Invariant: mismatched factor dtypes, sparse compressed layouts and NaN/inf/negative targets are a
    ParameterError, in fit and in BetaMu alike; everything else fits to finite factors."""
    from nmfcore.exceptions import ParameterError
    from nmfcore.trainer import BetaMu
    g = torch.Generator().manual_seed(0)
    W, H = torch.rand(6, 2, generator=g).to(dtype_w), torch.rand(5, 2, generator=g).to(dtype_h)
    if dtype_w != dtype_h:
        with pytest.raises(ParameterError):
            NMF(W=W, H=H)
        return
    V = torch.rand(5, 6, generator=g).to(dtype_w) + 0.1
    if bad is not None:
        V[1, 1] = {"nan": float("nan"), "inf": float("inf"), "neg": -1.0}[bad]
    X = V if layout == "dense" else (V.to_sparse() if layout == "coo" else V.to_sparse_csr())
    m = NMF(W=W, H=H)
    if bad is not None or layout == "csr":
        with pytest.raises(ParameterError):
            m.fit(X, max_iter=3)
        if layout == "dense":
            with pytest.raises(ParameterError):
                BetaMu(m.parameters()).step(lambda: (V, m()))
        return
    m.fit(X, max_iter=3, tol=0)
    _assert_factors(m, f"{dtype_w} {layout}")
