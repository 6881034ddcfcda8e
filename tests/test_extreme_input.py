"""Extreme and malformed input to the library (issue 14, sections 1 and 2).

Oracle: every call either returns finite non-negative factors or raises a
:class:`~nmfcore.exceptions.ParameterError` naming the argument; never an
IndexError, OverflowError or RuntimeError from inside, never NaN.
"""

import pytest
import torch

from nmfcore import divergence
from nmfcore.exceptions import ParameterError
from nmfcore.nmf import NMF, NMF2D, NMF3D, NMFD
from nmfcore.trainer import BetaMu


def _positive(shape, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g, dtype=torch.float64) + 0.05).to(dtype)


def _assert_finite_factors(m, what):
    for name in ("W", "H"):
        X = getattr(m, name).detach()
        assert torch.isfinite(X).all(), f"{what}: {name} has NaN/inf"
        assert (X >= 0).all(), f"{what}: {name} is negative"


@pytest.mark.parametrize("beta", [20.0, 50.0, -30.0, 1e6, -1e6])
@pytest.mark.parametrize("solver", ["mu", "auto"])
def test_extreme_beta_fits_without_index_error(beta, solver):
    """Oracle: the over-relaxation table lookup of a NaN/inf ratio (overflowing terms) raised
    IndexError; now such a coordinate keeps its value and the factors stay finite."""
    V = _positive((12, 9))
    m = NMF(V.shape, 3, generator=0)
    m.fit(V, beta=beta, tol=0, max_iter=15, solver=solver)
    _assert_finite_factors(m, f"beta={beta}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_multiplicative_step_leaves_nan_and_inf_ratios_unchanged(dtype):
    """Oracle: a coordinate whose ratio neg/pos is NaN (inf/inf) or inf keeps its value (no step
    can be certified there); finite ratios still move; no IndexError in any dtype."""
    param = torch.ones(6, dtype=dtype)
    neg = torch.tensor([float("inf"), float("inf"), 1.0, 2.0, 0.5, float("nan")], dtype=dtype)
    pos = torch.tensor([float("inf"), 1.0, 1.0, 1.0, 1.0, 1.0], dtype=dtype)
    divergence.multiplicative_step(param, neg.clone(), pos, 1.0, relax=(1.9, 1.3))  # neg is overwritten
    assert param[0] == 1 and param[1] == 1 and param[5] == 1
    assert param[2] == 1 and param[3] > 1 and param[4] < 1
    # the plain step (no table) treats them alike
    param = torch.ones(6, dtype=dtype)
    divergence.multiplicative_step(param, neg.clone(), pos, 0.0)
    assert torch.isfinite(param).all() and param[0] == 1 and param[1] == 1 and param[5] == 1


def test_relax_table_cell_in_float16_stays_in_range():
    """Oracle: in float16 the last cell index 4095 rounded to 4096 (IndexError); huge ratios now
    take the last cell (the plain exponent)."""
    param = torch.ones(4, dtype=torch.float16)
    neg = torch.tensor([60000.0, 1e4, 1.0, 1e-7], dtype=torch.float16)
    pos = torch.full((4,), 1e-7, dtype=torch.float16)
    divergence.multiplicative_step(param, neg, pos, 1.0, relax=(1.9, 1.3))
    assert not torch.isnan(param).any()


def test_nmf2d_float16_fits():
    """Oracle: NMF2D in float16 raised IndexError in the table lookup; it now fits to finite factors."""
    V = _positive((1, 1, 20, 30), dtype=torch.float16)
    m = NMF2D(V.shape, 3, kernel_size=(3, 3), generator=0).to(torch.float16)
    m.fit(V, beta=1, tol=0, max_iter=20)
    _assert_finite_factors(m, "NMF2D float16")


@pytest.mark.parametrize("c", [1e38, 1e-38, 1e-45])
def test_nmf2d_at_float32_extremes(c):
    """Oracle: NMF2D with V at 1e38, 1e-38 and 1e-45 (subnormal) raised IndexError; now finite."""
    V = _positive((1, 1, 12, 14))
    V = (V / V.max() * c).to(torch.float32)
    assert bool((V > 0).any())
    m = NMF2D(V.shape, 2, kernel_size=(2, 3), generator=0)
    m.fit(V, beta=1 if c < 1 else 0.5, tol=0, max_iter=15)
    _assert_finite_factors(m, f"NMF2D c={c:g}")


def test_nndsvda_beta_half_at_1e38():
    """Oracle: beta 0.5 with nndsvda at 1e38 raised IndexError (the SVD of the unscaled data overflowed)."""
    V = _positive((15, 12))
    V = V / V.max() * 1e38
    m = NMF(V.shape, 4, generator=0)
    m.fit(V, beta=0.5, init="nndsvda", tol=0, max_iter=15)
    _assert_finite_factors(m, "nndsvda 1e38")


@pytest.mark.parametrize("cls,kw,bad", [
    (NMF2D, "kernel_size", (3,)), (NMF2D, "kernel_size", (3, 3, 3)), (NMF2D, "kernel_size", (0, 2)),
    (NMFD, "T", (3, 4)), (NMFD, "T", "3"), (NMF3D, "kernel_size", (3, 3)), (NMF3D, "kernel_size", (2, 2, 2, 2)),
])
def test_kernel_of_wrong_length_is_parameter_error(cls, kw, bad):
    """Oracle: a kernel tuple of the wrong length gave IndexError/ValueError; it is a ParameterError naming it."""
    shape = {NMF2D: (1, 2, 10, 12), NMFD: (1, 10, 12), NMF3D: (1, 2, 6, 7, 8)}[cls]
    with pytest.raises(ParameterError, match=kw):
        cls(shape, 2, **{kw: bad})


def test_kernel_tuples_of_right_length_still_work():
    """Oracle: the documented forms (an int, a tuple of the model's length) keep working."""
    assert NMF2D((1, 1, 10, 12), 2, kernel_size=(3, 4)).W.shape == (1, 2, 3, 4)
    assert NMF2D((1, 1, 10, 12), 2, kernel_size=3).W.shape == (1, 2, 3, 3)
    assert NMFD((1, 10, 12), 2, T=(3,)).W.shape == (10, 2, 3)
    assert NMF3D((1, 1, 6, 7, 8), 2, kernel_size=(2, 3, 4)).W.shape == (1, 2, 2, 3, 4)


def test_w_and_h_of_different_dtypes_refused():
    """Oracle: W float64 with H float32 was accepted and failed in forward; now a ParameterError."""
    with pytest.raises(ParameterError, match="W is torch.float64"):
        NMF(W=torch.rand(10, 3, dtype=torch.float64), H=torch.rand(8, 3))


@pytest.mark.parametrize("layout", ["csr", "csc"])
def test_sparse_compressed_target_refused(layout):
    """Oracle: a CSR target gave a RuntimeError from inside _validation; now a ParameterError naming V."""
    V = _positive((10, 8))
    Vs = V.to_sparse_csr() if layout == "csr" else V.to_sparse_csc()
    m = NMF(V.shape, 2)
    with pytest.raises(ParameterError, match="V has layout"):
        m.fit(Vs, max_iter=2)
    with pytest.raises(ParameterError, match="V has layout"):
        m.sparse_fit(Vs, max_iter=2, sH=0.5)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1.0])
def test_betamu_refuses_a_bad_target(bad):
    """Oracle: BetaMu accepted a NaN target and returned NaN; it now checks the target like fit checks V."""
    V = _positive((10, 8))
    V[2, 3] = bad
    m = NMF(V.shape, 2, generator=0)
    opt = BetaMu(m.parameters(), beta=1)
    with pytest.raises(ParameterError, match="target"):
        opt.step(lambda: (V, m()))
    assert torch.isfinite(m.W).all() and torch.isfinite(m.H).all()
