"""Tests for nmfcore.penalties and the ``continuity`` option of fit.

Oracles: autograd (the gradient terms), the formula on hand-made series,
the observed monotone objective of the fit, the invariant that the penalty
lowers the frame-to-frame jumps, and the error messages.
"""

import pytest
import torch

from nmfcore.exceptions import ParameterError
from nmfcore.nmf import NMF, NMF2D, NMFD
from nmfcore.penalties import temporal_continuity, temporal_continuity_terms

F64 = torch.float64


@pytest.mark.parametrize("shape, axis", [((9, 4), 0), ((2, 3, 11), 2), ((5, 1), 0), ((4, 3), 1)])
def test_terms_are_the_gradient(gen, shape, axis):
    """Oracle (autograd): pos - neg == d c(H) / dH, both parts non-negative."""
    H = torch.rand(*shape, generator=gen, dtype=F64).requires_grad_(True)
    (grad,) = torch.autograd.grad(temporal_continuity(H, axis), H)
    neg, pos = temporal_continuity_terms(H.detach(), axis)
    torch.testing.assert_close(pos - neg, grad, rtol=1e-10, atol=1e-12)
    assert (neg >= 0).all() and (pos >= 0).all()


def test_value_by_hand():
    """Oracle (formula): L * sum of squared jumps / sum of squares, per series; 0 for constant or zero series."""
    H = torch.tensor([[1.0, 3.0, 2.0], [0.0, 0.0, 0.0], [2.0, 2.0, 2.0]], dtype=F64)
    expected = 3 * (4 + 1) / (1 + 9 + 4)
    assert float(temporal_continuity(H, 1)) == pytest.approx(expected)
    neg, pos = temporal_continuity_terms(H, 1)
    assert torch.equal(neg[1], torch.zeros(3, dtype=F64)) and torch.equal(pos[1], torch.zeros(3, dtype=F64))


def _jumpy_problem(gen):
    # sustained notes plus noise, frames on the rows (NMF layout)
    H = torch.zeros(60, 3, dtype=F64)
    H[5:25, 0], H[20:50, 1], H[40:58, 2] = 1.0, 0.7, 1.3
    W = torch.rand(30, 3, generator=gen, dtype=F64)
    return H @ W.t() + 0.3 * torch.rand(60, 30, generator=gen, dtype=F64)


@pytest.mark.parametrize("cls, beta", [(NMF, 1.0), (NMF, 2.0), (NMF, 0.5), (NMFD, 1.0)])
def test_fit_with_continuity_decreases_objective_and_jumps(gen, cls, beta):
    """Oracle (observed monotone objective, including the penalty); invariant: the penalty
    lowers the activations' continuity cost against the same fit without it."""
    V = _jumpy_problem(gen)
    if cls is NMFD:
        V = V.t().unsqueeze(0)  # (1, freq, frames)
    axis = cls.time_axis
    results = {}
    for lam in (0.0, 2.0):
        m = cls(V.shape, 3, **({"T": 3} if cls is NMFD else {}), generator=1).double()
        losses = []
        m.fit(V, beta=beta, tol=0, max_iter=150, check_every=1, continuity=lam, init="random", generator=1,
              callback=lambda i, loss: losses.append(loss))
        assert all(b <= a * (1 + 1e-9) for a, b in zip(losses, losses[1:])), lam
        assert (m.W >= 0).all() and (m.H >= 0).all()
        results[lam] = float(temporal_continuity(m.H.detach(), axis))
    assert results[2.0] < results[0.0]


def test_continuity_value_enters_the_reported_loss(gen):
    """Oracle (formula): the loss passed to the callback is divergence + continuity * c(H)."""
    V = _jumpy_problem(gen)
    m = NMF(V.shape, 3, generator=0).double()
    seen = []
    m.fit(V, beta=1, tol=0, max_iter=5, continuity=0.5, callback=lambda i, loss: seen.append(loss))
    from nmfcore.metrics import kl_div
    expected = float(kl_div(m().detach(), V)) + 0.5 * float(temporal_continuity(m.H.detach(), 0))
    assert seen[-1] == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("call, message", [
    (lambda V: NMF(V.shape, 2).double().fit(V, continuity=-1.0), "continuity=-1.0"),
    (lambda V: NMF(V.shape, 2).double().fit(V, beta=2, continuity=1.0, solver="hals"),
     "continuity=1.0 needs solver='mu' or 'auto'"),
    (lambda V: NMF2D(V[None, None].shape, 2, 2).double().fit(V[None, None], continuity=1.0),
     "continuity=1.0 is available for NMF and NMFD only, not NMF2D"),
])
def test_continuity_errors(gen, call, message):
    """Errors name the argument and its value."""
    V = torch.rand(10, 8, generator=gen, dtype=F64) + 0.1
    with pytest.raises(ParameterError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call(V)


@pytest.mark.cuda
@pytest.mark.parametrize("cls", [NMF, NMFD])
def test_cuda_fit_with_continuity_matches_cpu(gen, cls):
    """Oracle (equivalence): CPU == CUDA (replayed from a CUDA graph) with the continuity penalty."""
    import copy

    V = _jumpy_problem(gen)
    if cls is NMFD:
        V = V.t().unsqueeze(0)
    cpu = cls(V.shape, 3, **({"T": 3} if cls is NMFD else {}), generator=1).double()
    gpu = copy.deepcopy(cpu).cuda()
    cpu.fit(V, beta=1, tol=0, max_iter=40, continuity=2.0)
    gpu.fit(V.cuda(), beta=1, tol=0, max_iter=40, continuity=2.0)
    torch.testing.assert_close(gpu.H.detach().cpu(), cpu.H.detach(), rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(gpu.W.detach().cpu(), cpu.W.detach(), rtol=1e-6, atol=1e-9)
