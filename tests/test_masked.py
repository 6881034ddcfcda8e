"""Masked (weighted) fits of NMF, NMFD, NMF2D and NMF3D: ``fit(V, mask=M)``.

Oracles: a masked fit equals a slow reference fit that only ever reads the
observed entries (the data is gathered at the mask, the multiplicative
updates are pulled back from there by autograd); a mask of ones equals no
mask; the weighted objective never increases; missing entries' values do
not matter; bad masks raise ParameterError. (PLCA's masked fits are in
tests/test_plca.py.)
"""

import pytest
import torch

from nmfcore import divergence
from nmfcore.exceptions import ParameterError
from nmfcore.nmf import NMF, NMF2D, NMF3D, NMFD
from nmfcore.solvers import MU_RELAX

F64 = torch.float64

MODELS = [
    (NMF, (9, 7), {}),
    (NMFD, (1, 5, 9), {"T": 3}),
    (NMF2D, (1, 2, 6, 7), {"kernel_size": (2, 3)}),
    (NMF3D, (1, 2, 4, 5, 5), {"kernel_size": (2, 2, 3)}),
]
IDS = [m[0].__name__ for m in MODELS]


def rand(gen, *shape, low=0.0):
    return torch.rand(*shape, generator=gen, dtype=F64) + low


def model(cls, Vshape, kw, seed=0):
    return cls(Vshape, 3, generator=seed, **kw).to(F64)


def _observed_only_fit(m, V, mask, beta, n_iter):
    """The slow reference: multiplicative updates of the divergence summed over the observed entries
    only. Y is gathered at the mask before any arithmetic with V, and the two parts of the gradient
    are pulled back to each factor by autograd from there. Like ``fit``, it starts from the
    product matched to the data on the observed entries (H scaled by sum(v) / sum(y))."""
    obs = mask.nonzero(as_tuple=True)
    v = V[obs]
    W, H = m.W.detach().clone(), m.H.detach().clone()
    H *= v.sum() / m.reconstruct(H, W)[obs].sum()
    for _ in range(n_iter):
        for which in "WH":
            x = (W if which == "W" else H).clone().requires_grad_(True)
            with torch.enable_grad():
                y = (m.reconstruct(x, W) if which == "H" else m.reconstruct(H, x))[obs]
                neg = torch.autograd.grad(y, x, v * y.pow(beta - 2), retain_graph=True)[0]
                pos = torch.autograd.grad(y, x, y.pow(beta - 1))[0]
            X = W if which == "W" else H
            divergence.multiplicative_step(X, neg, pos, beta, relax=MU_RELAX)
    return W, H


@pytest.mark.parametrize("cls, Vshape, kw", MODELS, ids=IDS)
@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0, 2.0, 3.0])
def test_masked_fit_equals_fit_on_observed_entries(gen, cls, Vshape, kw, beta):
    """Oracle: slow reference on the observed entries only; missing entries hold garbage (1e6)."""
    V = rand(gen, *Vshape, low=0.1)
    mask = rand(gen, *Vshape) > 0.3
    garbage = V.clone()
    garbage[~mask] = 1e6
    m = model(cls, Vshape, kw)
    W, H = _observed_only_fit(m, V, mask, beta, 8)
    m.fit(garbage, beta=beta, max_iter=8, tol=0, mask=mask)
    torch.testing.assert_close(m.W.detach(), W, rtol=1e-8, atol=1e-11)
    torch.testing.assert_close(m.H.detach(), H, rtol=1e-8, atol=1e-11)


@pytest.mark.parametrize("cls, Vshape, kw", MODELS, ids=IDS)
@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0])
def test_mask_of_ones_equals_no_mask(gen, cls, Vshape, kw, beta):
    """Equivalence: a mask of ones (broadcast, float) gives the unmasked MU fit and the same losses."""
    V = rand(gen, *Vshape, low=0.1)
    a, b = model(cls, Vshape, kw), model(cls, Vshape, kw)
    la, lb = [], []
    a.fit(V, beta=beta, max_iter=10, tol=0, solver="mu", check_every=1, callback=lambda i, x: la.append(x))
    b.fit(V, beta=beta, max_iter=10, tol=0, check_every=1, callback=lambda i, x: lb.append(x),
          mask=torch.ones(Vshape[-1], dtype=F64))
    torch.testing.assert_close(b.W, a.W, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(b.H, a.H, rtol=1e-9, atol=1e-12)
    assert lb == pytest.approx(la, rel=1e-10)


@pytest.mark.parametrize("cls, Vshape, kw", MODELS[:2], ids=IDS[:2])
@pytest.mark.parametrize("beta", [0.0, 1.0, 1.5, 3.0])
def test_weighted_objective_never_increases(gen, cls, Vshape, kw, beta):
    """Oracle: monotone objective, the weighted divergence with non-negative real weights and penalties."""
    V = rand(gen, *Vshape, low=0.1)
    weights = rand(gen, *Vshape) * (rand(gen, *Vshape) > 0.2)
    m = model(cls, Vshape, kw)
    losses = []
    m.fit(V, beta=beta, max_iter=30, tol=0, check_every=1, mask=weights, alpha=0.01, l1_ratio=0.5,
          callback=lambda i, x: losses.append(x))
    for i, (a, b) in enumerate(zip(losses, losses[1:])):
        assert b <= a + 1e-10 * abs(a), f"weighted loss rose at iteration {i + 1}: {a!r} -> {b!r}"
    Y = m().detach()
    expected = float((weights * divergence.elementwise_divergence(V, Y, beta)).sum())
    W, H = m.W.detach(), m.H.detach()
    expected += 0.01 * 0.5 * float(W.sum() + H.sum()) + 0.5 * 0.01 * 0.5 * float(W.square().sum() + H.square().sum())
    assert losses[-1] == pytest.approx(expected, rel=1e-9)


def test_masked_fit_on_sparse_v_and_with_frozen_w(gen):
    """A sparse V is densified for a masked fit; a frozen W never changes."""
    V = rand(gen, 9, 7, low=0.1)
    mask = rand(gen, 9, 7) > 0.3
    a = model(NMF, V.shape, {})
    b = NMF(W=a.W.detach(), H=a.H.detach(), trainable_W=False)
    a2 = NMF(W=a.W.detach(), H=a.H.detach(), trainable_W=False)
    b.fit(V.to_sparse(), max_iter=5, tol=0, mask=mask)
    a2.fit(V, max_iter=5, tol=0, mask=mask)
    torch.testing.assert_close(b.H, a2.H)
    assert torch.equal(b.W, a.W)


@pytest.mark.parametrize("mask, match", [
    (torch.ones(3, 9), r"mask has shape \(3, 9\)"),
    (-torch.ones(9, 7), r"mask must be non-negative.*-1"),
    (torch.zeros(9, 7), r"mask has no positive weight"),
    (torch.full((9, 7), float("nan")), r"mask must contain only finite values"),
    ("all", r"mask must be a torch.Tensor"),
])
def test_bad_masks(gen, mask, match):
    m = model(NMF, (9, 7), {})
    with pytest.raises(ParameterError, match=match):
        m.fit(rand(gen, 9, 7), mask=mask)


def test_mask_refuses_hals(gen):
    m = model(NMF, (9, 7), {})
    with pytest.raises(ParameterError, match=r"solver='hals' does not take a mask"):
        m.fit(rand(gen, 9, 7), beta=2, solver="hals", mask=torch.ones(9, 7, dtype=torch.bool))
