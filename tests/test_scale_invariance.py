"""Scale equivariance of every fit (issue 14, section 1).

Oracle: the beta-divergence is homogeneous, ``d(cV | cY) = c**beta d(V | Y)``,
and the multiplicative and HALS updates are equivariant once the starting
product scales with the data, so for every ``c > 0`` the fit of ``c V`` is
``c`` times the fit of ``V`` (same initial factors, same iterations), up to
float rounding: rtol 1e-8 in float64, 2e-3 in float32. This holds for every
``init`` (None keeps the random unit-size factors), solver and beta, and for
``sparse_fit``. Before the fix, ``init=None`` gave NaN (HALS) or a fit stuck
at ``W H ~ 0`` (MU) at 1e20 and 1e-20, ``sparse_fit`` NaN at 1e25, and
``nndsvda`` at 1e30 a loss 1e10 instead of 4646 (issue 14).
"""

import math

import pytest
import torch

from nmfcore.nmf import NMF, NMFD

SCALES = (1e-30, 1e-20, 3.7, 1e20, 1e30)
RTOL = {torch.float64: 1e-8, torch.float32: 2e-3}


def _data(dtype, positive=True):
    g = torch.Generator().manual_seed(7)
    V = torch.rand(12, 3, generator=g, dtype=torch.float64) @ torch.rand(3, 10, generator=g, dtype=torch.float64)
    V = V + 0.05 * torch.rand(12, 10, generator=g, dtype=torch.float64)
    if not positive:
        V[V < 0.3] = 0
    return V


def _fit(V, c, dtype, **kw):
    m = NMF(V.shape, 3, generator=0).to(dtype)
    m.fit((V * c).to(dtype), tol=0, max_iter=20, generator=1, **kw)
    return m().detach().double()


def _assert_equivariant(ref, out, c, dtype, what):
    assert torch.isfinite(out).all(), f"{what}: non-finite fit at c={c:g}"
    torch.testing.assert_close(out / c, ref, rtol=RTOL[dtype], atol=RTOL[dtype] * float(ref.abs().max()),
                               msg=lambda m: f"{what} c={c:g}: {m}")


CASES = [(init, solver, beta) for init in (None, "random", "nndsvd", "nndsvda", "nndsvdar")
         for beta in (0.0, 0.5, 1.0, 2.0) for solver in ("mu", "auto")] + \
        [(init, "hals", 2.0) for init in (None, "random", "nndsvd", "nndsvda", "nndsvdar")]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("init,solver,beta", CASES)
def test_fit_of_scaled_data_is_scaled_fit(init, solver, beta, dtype):
    """Oracle: fit(c V) == c fit(V) for c in 1e-30..1e30, every init, solver and beta."""
    V = _data(dtype)
    ref = _fit(V, 1.0, dtype, beta=beta, init=init, solver=solver)
    for c in SCALES:
        _assert_equivariant(ref, _fit(V, c, dtype, beta=beta, init=init, solver=solver), c, dtype,
                            f"init={init} solver={solver} beta={beta} {dtype}")


@pytest.mark.parametrize("dtype,targets", [(torch.float64, {"sH": 0.5}), (torch.float64, {"sW": 0.5}),
                                            (torch.float64, {"sW": 0.4, "sH": 0.6}),
                                            (torch.float32, {"sH": 0.5}), (torch.float32, {"sW": 0.5})])
@pytest.mark.parametrize("beta", [1.0, 2.0])
def test_sparse_fit_of_scaled_data_is_scaled_fit(targets, beta, dtype):
    """Oracle: sparse_fit(c V) == c sparse_fit(V) for c in 1e-30..1e30 (Hoyer targets are scale-free).

    With both targets in float32 the step search's accept/reject decisions can flip under
    rounding and the paths part (seen at c=1e-30, beta 1); that case is checked in float64."""
    V = _data(dtype)

    def run(c):
        m = NMF(V.shape, 3, generator=0).to(dtype)
        m.sparse_fit((V * c).to(dtype), beta=beta, max_iter=15, **targets)
        return m().detach().double()

    ref = run(1.0)
    for c in SCALES:
        _assert_equivariant(ref, run(c), c, dtype, f"sparse_fit {targets} beta={beta} {dtype}")


@pytest.mark.parametrize("init", [None, "random", "nndsvda"])
def test_nmfd_fit_of_scaled_data_is_scaled_fit(init):
    """Oracle: the same equivariance for a convolutive model (NMFD, float64)."""
    g = torch.Generator().manual_seed(3)
    V = torch.rand(1, 8, 16, generator=g, dtype=torch.float64) + 0.1

    def run(c):
        m = NMFD(V.shape, 2, T=3, generator=0).double()
        m.fit(V * c, beta=1, tol=0, max_iter=15, init=init, generator=1)
        return m().detach()

    ref = run(1.0)
    for c in (1e-30, 1e-12, 1e12, 1e30):
        _assert_equivariant(ref, run(c), c, torch.float64, f"NMFD init={init}")


@pytest.mark.parametrize("c", [1e38, 3e38, 1e-38, 1e-41, 1e-45])
@pytest.mark.parametrize("init", [None, "nndsvda"])
@pytest.mark.parametrize("solver,beta", [("auto", 2.0), ("mu", 2.0), ("mu", 1.0), ("mu", 0.5)])
def test_float32_extremes_and_subnormals_give_finite_fits(c, init, solver, beta):
    """Invariant: at the ends of float32 (near the largest value, subnormal data) the fit is finite
    and non-negative; where the data is still exact (not subnormal) it is c times the fit at 1."""
    V = _data(torch.float32)
    V = V / V.max()  # max(c V) = c: finite up to 3e38
    Vc = (V * c).to(torch.float32)
    assert torch.isfinite(Vc).all() and bool((Vc > 0).any())
    m = NMF(V.shape, 3, generator=0)
    m.fit(Vc, beta=beta, tol=0, max_iter=20, init=init, solver=solver, generator=1)
    for X in (m.W, m.H):
        assert torch.isfinite(X).all() and (X >= 0).all()
    if c > 1e38:  # the product may exceed the largest float32 where the data nearly does
        return
    out = m().detach().double()
    assert torch.isfinite(out).all()
    if c >= 1e-38:  # normal numbers: the equivariance holds
        ref = _fit(V, 1.0, torch.float32, beta=beta, init=init, solver=solver)
        _assert_equivariant(ref, out, c, torch.float32, f"float32 init={init} solver={solver} beta={beta}")


def test_float64_near_max_beta2():
    """Oracle: float64 data at 1e300, beta 2, fits (the rescaling raised OverflowError) as 1e300 times V's fit;
    the loss in V's units (~1e600) is reported as inf, not an error."""
    V = _data(torch.float64)
    ref = _fit(V, 1.0, torch.float64, beta=2)
    for c in (1e300, 1e-300):
        _assert_equivariant(ref, _fit(V, c, torch.float64, beta=2), c, torch.float64, "float64 beta=2")
    m = NMF(V.shape, 3, generator=0).double()
    seen = []
    m.fit(V * 1e300, beta=2, tol=0, max_iter=5, callback=lambda i, loss: seen.append(loss))
    assert seen and all(math.isinf(x) for x in seen)
