"""Compatibility with the PyTorch NMF reference (torchnmf 0.3.5).

Oracles: the reference documentation's examples run with ``nmfcore`` in
place of ``torchnmf`` (shapes as documented); nmfcore's own docstring
examples run (doctest); where torchnmf is importable, its metrics on
strictly positive data and its fit's loss from the same initial factors.
"""

import copy
import doctest
import importlib

import pytest
import torch

from nmfcore import metrics
from nmfcore.nmf import NMF, NMF2D, NMF3D, NMFD

F64 = torch.float64


def val(t):
    return float(t.detach())


# ---------------------------------------------- the reference doc's examples
def test_nmf_docstring_example():
    """Oracle: reference NMF docstring, V (20, 30), rank 5."""
    V = torch.rand(20, 30)
    m = NMF(V.shape, 5)
    assert m.W.size() == torch.Size([30, 5])
    assert m.H.size() == torch.Size([20, 5])
    HWt = m()
    assert HWt.size() == torch.Size([20, 30])


def test_nmfd_docstring_example():
    """Oracle: reference NMFD docstring (which calls NMF by mistake; NMFD is meant)."""
    V = torch.rand(33, 50).unsqueeze(0)
    m = NMFD(V.shape, 16, 3)
    assert m.W.size() == torch.Size([33, 16, 3])
    assert m.H.size() == torch.Size([1, 16, 48])
    HWt = m()
    assert HWt.size() == torch.Size([1, 33, 50])


def test_nmf2d_docstring_example():
    """Oracle: reference NMF2D docstring."""
    V = torch.rand(33, 50).unsqueeze(0).unsqueeze(0)
    m = NMF2D(V.shape, 16, 3)
    assert m.W.size() == torch.Size([1, 16, 3, 3])
    assert m.H.size() == torch.Size([1, 16, 31, 48])
    HWt = m()
    assert HWt.size() == torch.Size([1, 1, 33, 50])


def test_nmf3d_docstring_example_shapes():
    """Oracle: reference NMF3D docstring shapes (the forward pass is checked on a smaller V below)."""
    Vshape = (1, 3, 64, 64, 100)  # torch.rand(3, 64, 64, 100).unsqueeze(0).shape
    m = NMF3D(Vshape, 8, (5, 5, 20))
    assert m.W.size() == torch.Size([3, 8, 5, 5, 20])
    assert m.H.size() == torch.Size([1, 8, 60, 60, 81])


def test_nmf3d_docstring_example_small():
    """Oracle: the NMF3D docstring flow on a smaller V (same kernel rule: H = V - k + 1)."""
    V = torch.rand(3, 16, 16, 20).unsqueeze(0)
    m = NMF3D(V.shape, 8, (5, 5, 4))
    assert m.W.size() == torch.Size([3, 8, 5, 5, 4])
    assert m.H.size() == torch.Size([1, 8, 12, 12, 17])
    HWt = m()
    assert HWt.size() == torch.Size([1, 3, 16, 16, 20])


def test_introduction_by_example(gen):
    """Oracle: the reference's 'Introduction by Example' flow, V (64, 1024), rank 10, default fit."""
    V = torch.rand(64, 1024, generator=gen)
    assert V.size() == torch.Size([64, 1024])
    model = NMF(V.t().shape, rank=10)
    assert model.W.size() == torch.Size([64, 10])
    assert model.H.size() == torch.Size([1024, 10])
    start = val(metrics.kl_div(model(), V.t()))
    n_iter = model.fit(V.t())
    assert 0 < n_iter <= 200
    WH = model.W @ model.H.t()
    assert WH.shape == V.shape
    torch.testing.assert_close(model(), WH.t())
    assert val(metrics.kl_div(model(), V.t())) < 0.1 * start


@pytest.mark.cuda
def test_training_on_gpu_example(gen):
    """Oracle: the reference's 'Training on GPU' flow runs; result matches the CPU fit."""
    V = torch.rand(64, 1024, generator=gen)
    model = NMF(V.t().shape, rank=10, generator=0)
    cpu = copy.deepcopy(model)
    V_cuda = V.cuda().t()
    model = model.cuda()
    model.fit(V_cuda, tol=0, max_iter=20)
    cpu.fit(V.t(), tol=0, max_iter=20)
    assert model.W.is_cuda
    torch.testing.assert_close(model.W.cpu(), cpu.W, rtol=1e-3, atol=1e-5)


def test_module_casts_like_any_nn_module(gen):
    """Oracle: 'treat them just like any other PyTorch Module' (dtype casts; state_dict round trip)."""
    m = NMF((20, 30), 5, generator=0)
    m64 = copy.deepcopy(m).double()
    assert m64.W.dtype == F64 and m64().dtype == F64
    other = NMF((20, 30), 5, generator=1)
    other.load_state_dict(m.state_dict())
    assert torch.equal(other.W, m.W) and torch.equal(other.H, m.H)
    assert set(m.state_dict()) == {"W", "H"}


# ------------------------------------------------- nmfcore's own docstrings
@pytest.mark.parametrize("module", ["nmfcore.nmf", "nmfcore.plca", "nmfcore.metrics", "nmfcore.divergence", "nmfcore.init",
                                    "nmfcore.trainer"])
def test_docstring_examples_run(module):
    """Oracle: every docstring example in the package's core modules runs and prints what it shows."""
    mod = importlib.import_module(module)
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {module}"


# ------------------------------------------------------------- vs torchnmf
tnmf = pytest.importorskip("torchnmf")
from torchnmf import metrics as tmetrics  # noqa: E402
from torchnmf.nmf import NMF as TNMF  # noqa: E402


def _positive_pair(gen, *shape):
    x = torch.rand(*shape, generator=gen, dtype=F64) * 2 + 0.5  # model
    y = torch.rand(*shape, generator=gen, dtype=F64) * 2 + 0.5  # data
    return x, y


@pytest.mark.parametrize("beta", [-1.0, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0])
def test_beta_div_equals_torchnmf_on_positive_data(gen, beta):
    """Oracle (equivalence): nmfcore.metrics.beta_div == torchnmf.metrics.beta_div, same argument order.

    They differ only in eps handling at zeros (torchnmf adds float32 eps everywhere)."""
    x, y = _positive_pair(gen, 30, 20)
    torch.testing.assert_close(metrics.beta_div(x, y, beta), tmetrics.beta_div(x, y, beta), rtol=1e-5, atol=0)


@pytest.mark.parametrize("name", ["euclidean", "kl_div", "is_div"])
def test_named_metrics_equal_torchnmf(gen, name):
    """Oracle (equivalence): euclidean, kl_div, is_div equal torchnmf's on strictly positive data."""
    x, y = _positive_pair(gen, 25, 16)
    torch.testing.assert_close(getattr(metrics, name)(x, y), getattr(tmetrics, name)(x, y), rtol=1e-5, atol=0)


def test_sparseness_equals_torchnmf(gen):
    """Oracle (equivalence): sparseness equals torchnmf's on non-zero vectors."""
    for _ in range(5):
        x = torch.rand(40, generator=gen, dtype=F64)
        x[x < 0.6] = 0
        torch.testing.assert_close(metrics.sparseness(x), tmetrics.sparseness(x))


def _pair_from_same_init(V, rank, seed):
    W0 = torch.rand(V.shape[1], rank, generator=torch.Generator().manual_seed(seed), dtype=V.dtype) + 0.1
    H0 = torch.rand(V.shape[0], rank, generator=torch.Generator().manual_seed(seed + 1), dtype=V.dtype) + 0.1
    return NMF(W=W0, H=H0), TNMF(W=W0.clone(), H=H0.clone())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fit_mu_kl_no_worse_than_torchnmf(gen, dtype):
    """Oracle: from the same W, H and after the same iterations (tol=0), NMF.fit(solver='mu', beta=1)
    reaches a KL loss no worse than torchnmf's NMF.fit."""
    V = (torch.rand(60, 6, generator=gen, dtype=F64) @ torch.rand(6, 40, generator=gen, dtype=F64)
         + 0.1 * torch.rand(60, 40, generator=gen, dtype=F64)).to(dtype)
    ours, theirs = _pair_from_same_init(V, 6, 0)
    ours.fit(V, beta=1, tol=0, max_iter=100, solver="mu")
    theirs.fit(V, beta=1, tol=0, max_iter=100)
    lo = val(metrics.kl_div(ours(), V))
    lt = val(metrics.kl_div(theirs(), V))
    assert lo <= lt * (1 + 1e-5), (lo, lt)


@pytest.mark.parametrize("beta, solver", [(2.0, "mu"), (2.0, "auto"), (0.5, "mu")])
def test_fit_no_worse_than_torchnmf_other_betas(gen, beta, solver):
    """Oracle: same comparison for beta=2 (MU and HALS) and beta=0.5 (exponent 1 vs torchnmf's 1/(2-beta)).

    float32: torchnmf's general-beta loss fails on float64 tensors."""
    V = (torch.rand(50, 5, generator=gen) @ torch.rand(5, 30, generator=gen)
         + 0.1 * torch.rand(50, 30, generator=gen))
    ours, theirs = _pair_from_same_init(V, 5, 3)
    ours.fit(V, beta=beta, tol=0, max_iter=60, solver=solver)
    theirs.fit(V, beta=beta, tol=0, max_iter=60)
    lo = val(metrics.beta_div(ours(), V, beta))
    lt = val(metrics.beta_div(theirs(), V, beta))
    assert lo <= lt * (1 + 1e-5), (lo, lt)


def test_sparse_v_fit_no_worse_than_torchnmf(gen):
    """Oracle: with a sparse COO V (beta=1) nmfcore's fit reaches a loss no worse than torchnmf's
    (float32: torchnmf's sparse path mixes its float32 eps into float64 dot products and fails)."""
    V = torch.rand(40, 6, generator=gen) @ torch.rand(6, 30, generator=gen)
    V[torch.rand(40, 30, generator=gen) < 0.5] = 0
    ours, theirs = _pair_from_same_init(V, 6, 5)
    ours.fit(V.to_sparse(), beta=1, tol=0, max_iter=50, solver="mu")
    theirs.fit(V.to_sparse(), beta=1, tol=0, max_iter=50)
    lo = val(metrics.kl_div(ours(), V))
    lt = val(metrics.kl_div(theirs(), V))
    assert lo <= lt * (1 + 1e-5), (lo, lt)
