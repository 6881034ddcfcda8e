"""Tests for the seams of the core: the workspace, the operators' pull-backs, the solver hook,
frozen template columns and the one step search.

Oracles: the elementwise divergence (a workspace never returns a value of another V); the
autograd pull-back (operators); the plain fit (a hook that changes nothing meaningful leaves
the iterates as they are; a hook that zeroes the negative part drives the factor to zero);
invariants (frozen columns never change, the objective never increases).
"""

from __future__ import annotations

import pytest
import torch

from nmfcore import divergence as div
from nmfcore._workspace import Workspace
from nmfcore.exceptions import ParameterError
from nmfcore.nmf import NMF, NMF2D, NMFD
from nmfcore.operators import MatrixProduct, general_terms, vjp
from nmfcore.solvers import HALS, MultiplicativeUpdates, Problem, ProjectedGradient, search_step


def rand(gen, *shape, low=0.0):
    return torch.rand(*shape, generator=gen, dtype=torch.float64) + low


# ------------------------------------------------------------------ workspace
@pytest.mark.parametrize("beta", [2.0, 1.0, 0.0, 0.5])
def test_workspace_reused_with_another_v_gives_its_loss(gen, beta):
    """Oracle: the elementwise divergence. One workspace used for V, then 3 V (a new tensor),
    then V changed in place: every loss is that of the data given (the old dict of bare keys
    kept V's squared norm and gave a beta=2 loss of 0.0 for 3 V instead of the true value)."""
    V = rand(gen, 12, 9, low=0.1)
    W, H = rand(gen, 9, 3, low=0.1), rand(gen, 12, 3, low=0.1)
    op, ws = MatrixProduct(), Workspace()
    for data in (V, 3 * V, V):
        expected = div.beta_divergence(data, op.reconstruct(H, W), beta)
        torch.testing.assert_close(op.loss(data, W, H, beta, ws), expected, rtol=1e-10, atol=1e-12)
    V.mul_(2)  # in place: the cached values of V are stale
    expected = div.beta_divergence(V, op.reconstruct(H, W), beta)
    torch.testing.assert_close(op.loss(V, W, H, beta, ws), expected, rtol=1e-10, atol=1e-12)


def test_workspace_binds_values_to_one_v():
    V = torch.ones(3, 2)
    ws = Workspace()
    assert ws.cached(V, "k", lambda: 1) == 1
    assert ws.cached(V, "k", lambda: 2) == 1  # same V: cached
    assert ws.bound_to(V) and ws.peek(V, "k") == 1
    other = V.clone()
    assert ws.peek(other, "k") is None and not ws.bound_to(other)
    assert ws.cached(other, "k", lambda: 3) == 3  # another V: recomputed
    assert ws.peek(V, "k") is None  # and the values of the first one forgotten


def test_fit_with_shared_model_on_two_data_sets_reports_each_loss(gen):
    """Oracle: the elementwise divergence of the final factors, for fits of one model on V then 3 V."""
    V = rand(gen, 15, 10, low=0.1)
    m = NMF(V.shape, 3, generator=0).double()
    for data in (V, 3 * V):
        seen = []
        m.fit(data, beta=2, max_iter=5, tol=0, solver="mu", callback=lambda i, loss: seen.append(loss))
        expected = float(div.beta_divergence(data, m().detach(), 2))
        assert seen[-1] == pytest.approx(expected, rel=1e-9)


# ------------------------------------------------------------------ operators
@pytest.mark.parametrize("which", ["W", "H"])
def test_operator_pull_equals_autograd_vjp(gen, which):
    """Oracle: autograd's vector-Jacobian product, for a stack of two data-sized tensors."""
    cases = [(NMF(W=rand(gen, 6, 3), H=rand(gen, 8, 3)), (8, 6)),
             (NMFD(W=rand(gen, 6, 3, 4), H=rand(gen, 2, 3, 9)), (2, 6, 12)),
             (NMF2D(W=rand(gen, 2, 3, 2, 3), H=rand(gen, 1, 3, 5, 6)), (1, 2, 6, 8))]
    for model, shape in cases:
        W, H = model.W.detach(), model.H.detach()
        G = rand(gen, 2, *shape)
        _, pull = vjp(model.reconstruct, which, W, H)
        expected = torch.stack([pull(g) for g in G])
        got = model.operator.pull(which, G, W, H, Workspace())
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------ solver seam
def _problem(gen, beta=1.0, **kw):
    V = rand(gen, 14, 10, low=0.1)
    W = rand(gen, 10, 3, low=0.1).requires_grad_()
    H = rand(gen, 14, 3, low=0.1).requires_grad_()
    return Problem(MatrixProduct(), W, H, V, beta, **kw)


@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0])
def test_hook_sees_the_parts_and_doubling_both_leaves_mu_unchanged(gen, beta):
    """Oracle (equivalence): MU's ratio neg/pos is the same for (2 neg, 2 pos), so the iterates equal
    those without a hook (exactly: doubling is exact in floating point); the hook sees both factors'
    parts, equal to the problem's terms."""
    plain, hooked = _problem(gen.manual_seed(1), beta), _problem(gen.manual_seed(1), beta)
    seen = []

    def double(which, neg, pos):
        expected = hooked.operator.terms(which, hooked.V.clone(), hooked.W.clone(), hooked.H.clone(), beta,
                                         Workspace())
        for got, want in zip((neg, pos), expected):
            torch.testing.assert_close(torch.broadcast_to(got, want.shape), torch.broadcast_to(want, got.shape))
        seen.append(which)
        return 2 * neg, 2 * pos

    a, b = MultiplicativeUpdates(plain), MultiplicativeUpdates(hooked, hook=double)
    for _ in range(5):
        a.step()
        b.step()
    assert seen == ["W", "H"] * 5
    assert torch.equal(plain.W, hooked.W) and torch.equal(plain.H, hooked.H)


def test_hook_that_zeroes_neg_drives_the_factor_to_zero(gen):
    """Oracle: with neg = 0 the multiplicative ratio is 0 (floored at the dtype's tiny), so the hooked
    factor collapses to the floor; the other factor's step stays finite."""
    prob = _problem(gen)

    def zero_w(which, neg, pos):
        return (torch.zeros_like(neg), pos) if which == "W" else (neg, pos)

    MultiplicativeUpdates(prob, hook=zero_w).step()
    assert float(prob.W.max()) < 1e-300
    assert bool(torch.isfinite(prob.H).all())


def test_hals_hook_sees_data_product_and_gram(gen):
    """Oracle: HALS's parts are (V^T H, H^T H) for W and (V W, W^T W) for H."""
    prob = _problem(gen, beta=2.0)
    seen = {}

    def look(which, P, G):
        other = prob.H if which == "W" else prob.W
        data = prob.V.t() if which == "W" else prob.V
        torch.testing.assert_close(P, data @ other)
        torch.testing.assert_close(G, other.t() @ other)
        seen[which] = True
        return P, G

    before = prob.objective()
    HALS(prob, hook=look).step()
    assert seen == {"W": True, "H": True} and prob.objective() <= before


def test_hook_must_be_callable(gen):
    with pytest.raises(ParameterError, match="hook=3"):
        MultiplicativeUpdates(_problem(gen), hook=3)


@pytest.mark.parametrize("solver", ["mu", "hals"])
@pytest.mark.parametrize("init", [None, "random"])
def test_frozen_columns_never_change(gen, solver, init):
    """Invariants: the frozen templates are exactly as given (also through init and with data
    rescaled), the others are learnt, and the objective never increases."""
    V = rand(gen, 30, 12, low=0.01) * 1e6  # rescaled inside the fit
    m = NMF(V.shape, 4, generator=0).double()
    W0 = m.W.detach().clone()
    losses = []
    m.fit(V, beta=2, max_iter=30, tol=0, check_every=1, solver=solver, init=init, generator=1,
          frozen_W_columns=[0, 2], callback=lambda i, loss: losses.append(loss))
    W = m.W.detach()
    assert torch.equal(W[:, [0, 2]], W0[:, [0, 2]])
    assert not torch.equal(W[:, [1, 3]], W0[:, [1, 3]])
    assert all(b <= a * (1 + 1e-9) for a, b in zip(losses, losses[1:]))


def test_frozen_columns_nmfd_mu(gen):
    V = rand(gen, 1, 8, 20, low=0.1)
    m = NMFD(V.shape, 3, T=3, generator=0).double()
    W0 = m.W.detach().clone()
    m.fit(V, beta=1, max_iter=10, tol=0, frozen_W_columns=[1])
    assert torch.equal(m.W.detach()[:, 1], W0[:, 1]) and not torch.equal(m.W.detach()[:, 0], W0[:, 0])


@pytest.mark.parametrize("bad", [[4], [-1], ["a"], [True]])
def test_frozen_columns_must_be_component_indices(gen, bad):
    V = rand(gen, 10, 6)
    m = NMF(V.shape, 4, generator=0).double()
    with pytest.raises(ParameterError, match="frozen_W_columns="):
        m.fit(V, max_iter=2, frozen_W_columns=bad)


# ------------------------------------------------------------------ step search
def test_search_step_halves_then_grows():
    tried = []

    def trial(step):
        tried.append(step)

    value, nxt = search_step(trial, lambda: 5.0 if len(tried) < 3 else 1.0, 2.0, 1.0)
    assert tried == [1.0, 0.5, 0.25] and value == 1.0 and nxt == pytest.approx(0.3)
    tried.clear()
    value, nxt = search_step(trial, lambda: 5.0, 2.0, 1.0, max_tries=3)
    assert value is None and tried == [1.0, 0.5, 0.25] and nxt == pytest.approx(0.15)


def test_projected_gradient_solver_equals_sparse_fit(gen):
    """Oracle (equivalence): the solver driven by hand == sparse_fit, same iterations."""
    V = rand(gen, 20, 12)
    m = NMF(V.shape, 3, generator=0).double()
    W0, H0 = m.W.detach().clone(), m.H.detach().clone()
    m.sparse_fit(V, max_iter=5, sH=0.6)
    W, H = W0.clone().requires_grad_(), H0.clone().requires_grad_()
    prob = Problem(MatrixProduct(), W, H, V, 2.0)
    solver = ProjectedGradient(prob, {"W": None, "H": 0.6})
    for _ in range(5):
        solver.step()
    torch.testing.assert_close(prob.H, m.H.detach(), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(prob.W, m.W.detach(), rtol=1e-12, atol=1e-14)


def test_general_terms_is_the_oracle_for_any_reconstruction(gen):
    """The generic path works for any differentiable reconstruction (here a scaled product)."""
    W, H, V = rand(gen, 5, 2, low=0.1), rand(gen, 7, 2, low=0.1), rand(gen, 7, 5, low=0.1)
    neg, pos = general_terms(lambda h, w: 2 * (h @ w.t()), "H", V, W, H, 2)
    torch.testing.assert_close(neg, 2 * V @ W)
    torch.testing.assert_close(pos, 4 * H @ (W.t() @ W))
