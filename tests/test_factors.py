"""Tests for nmfcore._factors: the factor bookkeeping that NMF and PLCA models share.

Oracles: path equivalence (both model families take the same shapes and
tensors to the same initial values, up to PLCA's normalisation, and show the
same repr); error messages naming the argument and its value.
"""

import pytest
import torch

from nmfcore import nmf, plca
from nmfcore._factors import initial_values
from nmfcore.exceptions import ParameterError


def test_both_families_draw_the_same_initial_values():
    """Equivalence: the same seed and shapes give NMF's factors and PLCA's before normalisation."""
    a = nmf.NMFD((2, 5, 9), 3, T=3, generator=7)
    b = plca.SIPLCA((2, 5, 9), 3, T=3, generator=7)
    for n in "WH":
        X = getattr(a, n).detach()
        dims = [d for d in range(X.ndim) if d != 1]
        torch.testing.assert_close(getattr(b, n).detach(), X / X.sum(dims, keepdim=True))
    assert repr(a).split("(", 1)[1] == repr(b).split("(", 1)[1]
    assert (a.out_channels, a.kernel_size) == (b.out_channels, b.kernel_size) == (5, (3,))


def test_given_tensor_is_copied_in_its_dtype():
    W = torch.rand(4, 2, dtype=torch.float64)
    X = initial_values(W, "W", None)
    assert X.dtype == torch.float64 and X.data_ptr() != W.data_ptr() and torch.equal(X, W)
    assert initial_values(None, "W", None) is None
    assert initial_values((3, 2), "H", 0, like=W).dtype == torch.float64


@pytest.mark.parametrize("cls", [nmf.NMF, plca.PLCA])
@pytest.mark.parametrize("W, match", [
    ((True, 2), r"W=\(True, 2\) must be a shape of positive integers"),
    ((3, 0), r"W=\(3, 0\) must be a shape"),
    ("abc", r"W=\('a', 'b', 'c'\) must be a shape"),
    (3.5, r"W must be a shape tuple or a tensor, got float"),
    (torch.ones(3), r"W must have at least 2 dimensions \(rank on axis 1\), got shape \(3,\)"),
    (-torch.ones(3, 2), r"W must be non-negative"),
])
def test_bad_factors_same_message_in_both_families(cls, W, match):
    with pytest.raises(ParameterError, match=match):
        cls(W=W, H=(4, 2))
