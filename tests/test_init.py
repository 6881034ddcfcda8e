"""Tests for nmfcore.init: random and NNDSVD initialisation.

Oracles: shapes and non-negativity (invariants); determinism under a seeded
generator; the documented mean scale of the random init; exactness of
NNDSVD on a rank-1 matrix and on a matrix with a non-negative SVD; errors.
"""

import math

import pytest
import torch

from nmfcore.exceptions import ParameterError
from nmfcore.init import INIT_METHODS, nndsvd, random_like_data

F64 = torch.float64
VARIANTS = ["nndsvd", "nndsvda", "nndsvdar"]


def rand(gen, *shape, dtype=F64):
    return torch.rand(*shape, generator=gen, dtype=dtype)


def test_init_methods_listed():
    """Documented: the four init names."""
    assert set(INIT_METHODS) == {"random", "nndsvd", "nndsvda", "nndsvdar"}


# --------------------------------------------------------------- random
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_random_shapes_dtype_nonnegative(gen, dtype):
    """Invariant: requested shapes, V's dtype, finite and non-negative."""
    V = rand(gen, 30, 20, dtype=dtype)
    W, H = random_like_data(V, (20, 5), (30, 5), 5, generator=gen)
    assert W.shape == (20, 5) and H.shape == (30, 5)
    assert W.dtype == H.dtype == dtype
    assert torch.isfinite(W).all() and torch.isfinite(H).all()
    assert (W >= 0).all() and (H >= 0).all()


def test_random_conv_shapes(gen):
    """Invariant: any W/H shapes (NMFD-like 3-D factors) are honoured."""
    V = rand(gen, 1, 10, 20)
    W, H = random_like_data(V, (10, 3, 4), (1, 3, 17), 12, generator=0)
    assert W.shape == (10, 3, 4) and H.shape == (1, 3, 17)


def test_random_is_deterministic_under_a_seed(gen):
    """Oracle (determinism): same seed (int or Generator) -> identical factors; other seed differs."""
    V = rand(gen, 15, 10)
    a = random_like_data(V, (10, 3), (15, 3), 3, generator=7)
    b = random_like_data(V, (10, 3), (15, 3), 3, generator=7)
    c = random_like_data(V, (10, 3), (15, 3), 3, generator=torch.Generator().manual_seed(7))
    d = random_like_data(V, (10, 3), (15, 3), 3, generator=8)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert torch.equal(a[0], c[0]) and torch.equal(a[1], c[1])
    assert not torch.equal(a[0], d[0])


def test_random_does_not_touch_global_rng(gen):
    """Invariant: the global RNG is neither read nor seeded when a generator is given."""
    state = torch.random.get_rng_state()
    random_like_data(rand(gen, 5, 4), (4, 2), (5, 2), 2, generator=3)
    assert torch.equal(torch.random.get_rng_state(), state)


@pytest.mark.parametrize("level", [1e-3, 1.0, 250.0])
@pytest.mark.parametrize("n_terms", [1, 4, 12])
def test_random_mean_scale_matches_data(gen, level, n_terms):
    """Oracle: entries are |z| sqrt(mean(V) / n_terms), so a sum of n_terms products has mean
    (2 / pi) mean(V) (E|z|**2 ... E|z1 z2| = 2 / pi); checked within 25%."""
    V = rand(gen, 60, 50) * 2 * level  # mean(V) ~ level
    W, H = random_like_data(V, (50, n_terms), (60, n_terms), n_terms, generator=gen)
    Y = H @ W.t()
    ratio = float(Y.mean()) / float(V.mean())
    assert ratio == pytest.approx(2 / math.pi, rel=0.25)
    # and each entry's scale is the documented sqrt(mean / n_terms) times E|z| = sqrt(2 / pi)
    assert float(W.mean()) == pytest.approx(math.sqrt(float(V.mean()) / n_terms * 2 / math.pi), rel=0.25)


def test_random_all_zero_data_gives_unit_scale(gen):
    """Documented fallback: with mean(V) = 0 the scale is 1 (factors are not all zero)."""
    W, H = random_like_data(torch.zeros(5, 4, dtype=F64), (4, 2), (5, 2), 2, generator=gen)
    assert (W > 0).any() and (H > 0).any()


def test_random_sparse_data_mean(gen):
    """Oracle: a sparse V gives the same factors as its dense form (mean over all entries)."""
    V = rand(gen, 20, 10)
    V[V < 0.5] = 0
    a = random_like_data(V, (10, 3), (20, 3), 3, generator=1)
    b = random_like_data(V.to_sparse(), (10, 3), (20, 3), 3, generator=1)
    torch.testing.assert_close(a[0], b[0])
    torch.testing.assert_close(a[1], b[1])


# ---------------------------------------------------------------- NNDSVD
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nndsvd_shapes_dtype_nonnegative(gen, variant, dtype):
    """Invariant: W (C, R), H (N, R), V's dtype, finite and non-negative."""
    V = rand(gen, 40, 30, dtype=dtype)
    W, H = nndsvd(V, 4, variant, generator=gen)
    assert W.shape == (30, 4) and H.shape == (40, 4)
    assert W.dtype == H.dtype == dtype
    assert torch.isfinite(W).all() and torch.isfinite(H).all()
    assert (W >= 0).all() and (H >= 0).all()


def test_nndsvd_variants_fill_zeros(gen):
    """Documented: 'nndsvd' keeps zeros; 'nndsvda' fills them with mean(V); 'nndsvdar' with small randoms."""
    V = rand(gen, 40, 30)
    W, H = nndsvd(V, 6, "nndsvd")
    assert (W == 0).any() or (H == 0).any()
    Wa, Ha = nndsvd(V, 6, "nndsvda")
    zeros = W == 0
    assert torch.allclose(Wa[zeros], torch.full_like(Wa[zeros], float(V.mean())))
    assert torch.equal(Wa[~zeros], W[~zeros])
    Wr, Hr = nndsvd(V, 6, "nndsvdar", generator=0)
    assert (Wr > 0).all() and (Hr > 0).all()
    assert float(Wr[zeros].max()) <= float(V.mean()) / 100 * 6  # |z| * mean / 100, z ~ N(0, 1)
    assert torch.equal(Wr[~zeros], W[~zeros])


def test_nndsvdar_is_deterministic_under_a_seed(gen):
    """Oracle (determinism): the random fill of 'nndsvdar' follows the generator."""
    V = rand(gen, 30, 20)
    a = nndsvd(V, 5, "nndsvdar", generator=11)
    b = nndsvd(V, 5, "nndsvdar", generator=11)
    c = nndsvd(V, 5, "nndsvdar", generator=12)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nndsvd_reproduces_rank_one_matrix(gen, dtype):
    """Oracle: for a non-negative rank-1 V the first singular pair is V itself: H W^T == V."""
    V = torch.outer(rand(gen, 25) + 0.1, rand(gen, 18) + 0.1).to(dtype)
    W, H = nndsvd(V, 1)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(H @ W.t(), V, rtol=tol, atol=tol)


def test_nndsvd_exact_on_block_diagonal(gen):
    """Oracle: a V with non-overlapping non-negative blocks has a non-negative SVD, reproduced exactly."""
    a1, b1 = rand(gen, 10) + 0.1, rand(gen, 8) + 0.1
    a2, b2 = rand(gen, 12) + 0.1, rand(gen, 7) + 0.1
    V = torch.zeros(22, 15, dtype=F64)
    V[:10, :8] = torch.outer(a1, b1) * 3
    V[10:, 8:] = torch.outer(a2, b2)
    W, H = nndsvd(V, 2)
    torch.testing.assert_close(H @ W.t(), V, rtol=1e-10, atol=1e-10)


def test_nndsvd_better_start_than_random(gen):
    """Oracle: on a low-rank V the NNDSVD start is closer (Frobenius) than the random start."""
    V = rand(gen, 40, 4) @ rand(gen, 4, 30)
    W, H = nndsvd(V, 4)
    Wr, Hr = random_like_data(V, (30, 4), (40, 4), 4, generator=0)
    assert float((H @ W.t() - V).norm()) < float((Hr @ Wr.t() - V).norm())


def test_nndsvd_rank_above_min_dimension(gen):
    """Invariant: a rank larger than min(N, C) gives valid factors (extra components from the fill)."""
    V = rand(gen, 6, 4)
    for variant in VARIANTS:
        W, H = nndsvd(V, 6, variant, generator=0)
        assert W.shape == (4, 6) and H.shape == (6, 6)
        assert torch.isfinite(W).all() and (W >= 0).all() and (H >= 0).all()


def test_nndsvd_sparse_input(gen):
    """Oracle (equivalence): a sparse V gives the factors of its dense form."""
    V = rand(gen, 20, 10)
    V[V < 0.5] = 0
    a = nndsvd(V, 3)
    b = nndsvd(V.to_sparse(), 3)
    torch.testing.assert_close(a[0], b[0])
    torch.testing.assert_close(a[1], b[1])


def test_nndsvd_errors(gen):
    """Errors: unknown variant and non-matrix V name the argument."""
    with pytest.raises(ParameterError, match="variant='svd'"):
        nndsvd(rand(gen, 5, 4), 2, "svd")
    with pytest.raises(ParameterError, match=r"matrix.*\(1, 5, 4\)"):
        nndsvd(rand(gen, 1, 5, 4), 2)


# ------------------------------------------------- NNDSVD block by block (issue 16)
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nndsvd_block_by_block_equals_the_svd_of_the_whole(variant, dtype, monkeypatch):
    """Oracle: the SVD of the whole matrix (nndsvd below the threshold). Above SVD_MAX_ENTRIES nndsvd takes the
    Gram matrix block by block of rows; the result must not depend on it (nor on the blocks' sizes)."""
    import nmfcore.init as init

    gen = torch.Generator().manual_seed(4)
    V = (rand(gen, 300, 6, dtype=dtype) @ rand(gen, 6, 40, dtype=dtype)) + 0.01 * rand(gen, 300, 40, dtype=dtype)
    W0, H0 = nndsvd(V, 5, variant, generator=1)
    monkeypatch.setattr(init, "SVD_MAX_ENTRIES", 1000)
    monkeypatch.setattr(init, "_BLOCK_ENTRIES", 40 * 37)  # blocks of 37 rows
    W1, H1 = nndsvd(V, 5, variant, generator=1)
    W2, H2 = init.nndsvd_blocks([V[:1], V[1:200], V[200:]], 5, variant, generator=1)
    tol = dict(rtol=1e-3, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-8, atol=1e-10)
    for W, H in ((W1, H1), (W2, H2)):
        assert W.dtype == H.dtype == dtype and W.shape == (40, 5) and H.shape == (300, 5)
        assert torch.allclose(W, W0, **tol) and torch.allclose(H, H0, **tol)


def test_nndsvd_blocks_errors():
    with pytest.raises(ParameterError, match="no blocks"):
        from nmfcore.init import nndsvd_blocks

        nndsvd_blocks([], 2)
    with pytest.raises(ParameterError, match="variant='svd'"):
        nndsvd_blocks([torch.ones(3, 3)], 2, "svd")
