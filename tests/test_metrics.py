"""Tests for nmfcore.metrics (the reference's torchnmf.metrics).

Oracles: the explicit formulas of the reference documentation, written out
elementwise in float64; Hoyer's sparseness on vectors whose value is known
(one-hot, constant); invariants (range, scale invariance); errors.
"""

import math

import pytest
import torch

from nmfcore import metrics
from nmfcore.exceptions import ParameterError


def _pair(gen, *shape):
    x = torch.rand(*shape, generator=gen, dtype=torch.float64) + 0.1  # model
    y = torch.rand(*shape, generator=gen, dtype=torch.float64) * 3 + 0.1  # data
    return x, y


def test_euclidean_formula(gen):
    """Oracle: 0.5 * sum (x - y)**2 (reference doc)."""
    x, y = _pair(gen, 6, 7)
    expected = 0.5 * ((x - y) ** 2).sum()
    torch.testing.assert_close(metrics.euclidean(x, y), expected)
    torch.testing.assert_close(metrics.beta_div(x, y, 2), expected)
    torch.testing.assert_close(metrics.beta_div(x, y), expected)  # default beta=2


def test_kl_div_formula_and_argument_order(gen):
    """Oracle: sum y log(y/x) - y + x with input=x the model and target=y the data."""
    x, y = _pair(gen, 6, 7)
    expected = (y * torch.log(y / x) - y + x).sum()
    torch.testing.assert_close(metrics.kl_div(x, y), expected)
    torch.testing.assert_close(metrics.beta_div(x, y, 1), expected)
    swapped = (x * torch.log(x / y) - x + y).sum()
    assert not torch.isclose(metrics.kl_div(x, y), swapped)


def test_is_div_formula_and_argument_order(gen):
    """Oracle: sum y/x - log(y/x) - 1 with input=x the model and target=y the data."""
    x, y = _pair(gen, 6, 7)
    expected = (y / x - torch.log(y / x) - 1).sum()
    torch.testing.assert_close(metrics.is_div(x, y), expected)
    torch.testing.assert_close(metrics.beta_div(x, y, 0), expected)
    swapped = (x / y - torch.log(x / y) - 1).sum()
    assert not torch.isclose(metrics.is_div(x, y), swapped)


@pytest.mark.parametrize("beta", [-1.2, 0.5, 1.5, 3.0])
def test_beta_div_formula_and_argument_order(gen, beta):
    """Oracle: the reference's formula with the data (target) y in the y**beta and y x**(beta-1) terms."""
    x, y = _pair(gen, 5, 8)
    expected = ((y ** beta + (beta - 1) * x ** beta - beta * y * x ** (beta - 1)) / (beta * (beta - 1))).sum()
    torch.testing.assert_close(metrics.beta_div(x, y, beta), expected)
    swapped = ((x ** beta + (beta - 1) * y ** beta - beta * x * y ** (beta - 1)) / (beta * (beta - 1))).sum()
    assert not torch.isclose(metrics.beta_div(x, y, beta), swapped)


@pytest.mark.parametrize("beta", [-1.2, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0])
def test_beta_div_is_divergence_of_data_from_model(gen, beta):
    """Oracle: metrics.beta_div(input, target) == divergence.beta_divergence(V=target, Y=input)."""
    from nmfcore.divergence import beta_divergence

    x, y = _pair(gen, 4, 9)
    torch.testing.assert_close(metrics.beta_div(x, y, beta), beta_divergence(y, x, beta))


@pytest.mark.parametrize("beta", [-1.2, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0])
def test_beta_div_finite_nonnegative_with_zeros(gen, beta):
    """Invariant: finite and >= 0 with zeros in model or data (eps handling at zeros)."""
    x, y = _pair(gen, 6, 6)
    x[x < 0.4] = 0
    y[y < 1.0] = 0
    for a, b in ((x, y), (y, x)):
        d = metrics.beta_div(a, b, beta)
        assert torch.isfinite(d) and float(d) >= 0


@pytest.mark.parametrize("fn", [metrics.euclidean, metrics.kl_div, metrics.is_div,
                                lambda a, b: metrics.beta_div(a, b, 0.5)])
def test_shape_mismatch_raises(gen, fn):
    """Errors: input and target shapes must agree (no silent broadcasting)."""
    x = torch.rand(3, 4, generator=gen)
    y = torch.rand(4, 3, generator=gen)
    with pytest.raises(ParameterError, match=r"input has shape \(3, 4\) but target has shape \(4, 3\)"):
        fn(x, y)
    with pytest.raises(ParameterError, match="shape"):
        fn(x, torch.rand(1, 4, generator=gen))  # broadcastable, still refused


@pytest.mark.parametrize("n", [2, 5, 64])
def test_sparseness_one_hot_is_one(n):
    """Oracle: a single non-zero entry is maximally sparse (1)."""
    for pos in (0, n - 1):
        x = torch.zeros(n, dtype=torch.float64)
        x[pos] = 3.7
        assert float(metrics.sparseness(x)) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("n", [2, 5, 64])
def test_sparseness_constant_is_zero(n):
    """Oracle: a constant vector is maximally dense (0)."""
    assert float(metrics.sparseness(torch.full((n,), 0.3, dtype=torch.float64))) == pytest.approx(0.0, abs=1e-12)


def test_sparseness_matrix_is_flattened():
    """Oracle: a one-hot matrix is as sparse as a one-hot vector (any shape is flattened)."""
    x = torch.zeros(4, 5, dtype=torch.float64)
    x[2, 3] = 1.0
    assert float(metrics.sparseness(x)) == pytest.approx(1.0)


def test_sparseness_formula_range_and_scale_invariance(gen):
    """Oracle: Hoyer's formula; invariants: value in [0, 1], f(c x) = f(x) for c > 0."""
    for _ in range(20):
        n = int(torch.randint(2, 50, (1,), generator=gen))
        x = torch.rand(n, generator=gen, dtype=torch.float64)
        x[x < 0.5] = 0
        if not (x > 0).any():
            x[0] = 1.0
        s = float(metrics.sparseness(x))
        expected = (math.sqrt(n) - float(x.abs().sum()) / float(x.norm())) / (math.sqrt(n) - 1)
        assert s == pytest.approx(expected, abs=1e-12)
        assert 0.0 <= s <= 1.0
        for c in (1e-6, 0.5, 7.0, 1e6):
            assert float(metrics.sparseness(c * x)) == pytest.approx(s, abs=1e-12)


def test_sparseness_sparser_vector_scores_higher():
    """Oracle: moving mass from a dense to a peaked vector raises the sparseness."""
    dense = torch.tensor([1.0, 1.0, 1.0, 1.0])
    peaked = torch.tensor([4.0, 1.0, 0.5, 0.0])
    assert float(metrics.sparseness(peaked)) > float(metrics.sparseness(dense))


def test_sparseness_all_zero_is_one_and_keeps_dtype():
    """Documented: the all-zero vector has sparseness 1 (no NaN); the result keeps x's dtype."""
    for dtype in (torch.float32, torch.float64):
        s = metrics.sparseness(torch.zeros(5, dtype=dtype))
        assert s.dtype == dtype and float(s) == 1.0


def test_sparseness_needs_two_entries():
    """Errors: sparseness is undefined for fewer than 2 entries."""
    with pytest.raises(ParameterError, match="at least 2 entries"):
        metrics.sparseness(torch.ones(1))
