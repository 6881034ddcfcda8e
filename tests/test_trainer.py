"""Tests for nmfcore.trainer: BetaMu and SparsityProj.

Oracles: the reference documentation's chained-model examples run unchanged;
equivalence (BetaMu on one NMF module == NMF.fit's MU path); explicit
one-step formulas for per-group penalties; monotone objective (MU is a
majorisation-minimisation step for models linear in each parameter);
Hoyer's sparseness; errors naming the hyper-parameter.
"""

import copy

import pytest
import torch
import torch.nn as nn

from nmfcore import metrics
from nmfcore.exceptions import ParameterError
from nmfcore.nmf import NMF
from nmfcore.trainer import BetaMu, SparsityProj

F64 = torch.float64


def val(t):
    """A scalar tensor (possibly with grad) as a Python float."""
    return float(t.detach())


def rand(gen, *shape, low=0.0, dtype=F64):
    return torch.rand(*shape, generator=gen, dtype=dtype) + low


def assert_non_increasing(losses, rel, what=""):
    for i, (a, b) in enumerate(zip(losses, losses[1:])):
        assert b <= a + rel * abs(a), f"{what}: loss rose at step {i + 1}: {a!r} -> {b!r}"


# --------------------------------------------- the reference's examples
def test_reference_chain_module_example(gen):
    """Oracle: the reference's Chain example runs unchanged with BetaMu and the loss decreases."""
    V = torch.rand(64, 1024, generator=gen)

    class Chain(nn.Module):
        def __init__(self):
            super().__init__()
            self.nmf1 = NMF((1024, 10), rank=4)
            self.nmf2 = NMF(W=(24, 10))
            self.nmf3 = NMF(W=(64, 24))

        def forward(self):
            WH = self.nmf1()
            WWH = self.nmf2(H=WH)
            WWWH = self.nmf3(H=WWH)
            return WWWH

    with torch.random.fork_rng():
        torch.manual_seed(0)  # the example draws from the global RNG; keep the test reproducible
        model = Chain()
    output = model()
    assert output.shape == (1024, 64)

    trainer = BetaMu(model.parameters())
    losses = []
    epochs = 50  # the reference uses 200; the loss has flattened long before
    for e in range(epochs):
        def closure():
            trainer.zero_grad()
            return V.t(), model()
        losses.append(float(trainer.step(closure)))
    final = val(metrics.kl_div(model().detach(), V.t()))
    assert final < 0.1 * losses[0]
    # each step is an MM step for every parameter (the chain is linear in each)
    assert_non_increasing(losses + [final], rel=1e-5, what="Chain")
    for p in model.parameters():
        assert torch.isfinite(p).all() and (p >= 0).all()


def test_reference_sequential_example(gen):
    """Oracle: the reference's nn.Sequential example with model(None) runs unchanged; the loss decreases."""
    V = torch.rand(64, 1024, generator=gen)
    with torch.random.fork_rng():
        torch.manual_seed(1)
        model = nn.Sequential(
            NMF((1024, 10), rank=4),
            NMF(W=(24, 10)),
            NMF(W=(64, 24))
        )
    # In newer version of PyTorch at least one input should be given
    # We can just give it `None`
    output = model(None)
    assert output.shape == (1024, 64)

    trainer = BetaMu(model.parameters())
    losses = []
    epochs = 50  # the reference uses 200; the loss has flattened long before
    for e in range(epochs):
        def closure():
            trainer.zero_grad()
            return V.t(), model(None)
        losses.append(float(trainer.step(closure)))
    final = val(metrics.beta_div(model(None).detach(), V.t(), 1))
    assert final < 0.1 * losses[0]
    assert_non_increasing(losses + [final], rel=1e-5, what="Sequential")


def test_step_returns_divergence_before_the_step(gen):
    """Oracle: step(closure) returns beta_div(prediction, target) evaluated before the update."""
    V = rand(gen, 12, 9, low=0.1)
    m = NMF(V.shape, 3, generator=0).double()
    trainer = BetaMu(m.parameters(), beta=0.5)
    before = val(metrics.beta_div(m(), V, 0.5))
    got = trainer.step(lambda: (V, m()))
    assert float(got) == pytest.approx(before, rel=1e-12)
    assert val(metrics.beta_div(m(), V, 0.5)) < before


# ------------------------------------------------ BetaMu == NMF.fit (MU)
@pytest.fixture
def plain_mu(monkeypatch):
    """fit's MU without over-relaxation (solvers.mu.MU_RELAX = 1): the plain update BetaMu implements."""
    import nmfcore.solvers.mu

    monkeypatch.setattr(nmfcore.solvers.mu, "MU_RELAX", 1.0)


@pytest.mark.parametrize("beta", [1.0, 2.0, 0.5, 3.0])
@pytest.mark.parametrize("scale", [1.0, 1e6])
def test_betamu_equals_fit_mu_path(gen, beta, scale, plain_mu):
    """Oracle (equivalence): BetaMu on one NMF module == NMF.fit(solver='mu'), same init and iterations.

    fit updates W then H (BetaMu follows parameter order, W then H) and
    rescales large data internally; MU is scale-equivariant, so both agree.
    fit's optional over-relaxation is switched off (see ``plain_mu``).
    """
    V = (rand(gen, 25, 18) @ rand(gen, 18, 18) + 0.01) * scale
    a = NMF(V.shape, 4, generator=0).double()
    with torch.no_grad():
        a.H.mul_(scale ** 0.5)
        a.W.mul_(scale ** 0.5)
    b = copy.deepcopy(a)
    n_iter = 25
    assert a.fit(V, beta=beta, tol=0, max_iter=n_iter, solver="mu") == n_iter
    trainer = BetaMu(b.parameters(), beta=beta)
    assert [p is q for p, q in zip(trainer.param_groups[0]["params"], (b.W, b.H))] == [True, True]
    for _ in range(n_iter):
        def closure():
            trainer.zero_grad()
            return V, b()
        trainer.step(closure)
    torch.testing.assert_close(b.W, a.W, rtol=1e-5, atol=0)
    torch.testing.assert_close(b.H, a.H, rtol=1e-5, atol=0)


def test_betamu_with_penalty_equals_fit(gen, plain_mu):
    """Oracle (equivalence): BetaMu(l1_reg, l2_reg) == fit(alpha, l1_ratio) with l1 = alpha l1_ratio."""
    V = rand(gen, 20, 15, low=0.05)
    a = NMF(V.shape, 3, generator=0).double()
    b = copy.deepcopy(a)
    alpha, l1_ratio = 0.4, 0.25
    a.fit(V, beta=1, tol=0, max_iter=15, solver="mu", alpha=alpha, l1_ratio=l1_ratio)
    trainer = BetaMu(b.parameters(), beta=1, l1_reg=alpha * l1_ratio, l2_reg=alpha * (1 - l1_ratio))
    for _ in range(15):
        trainer.step(lambda: (V, b()))
    torch.testing.assert_close(b.W, a.W, rtol=1e-7, atol=0)
    torch.testing.assert_close(b.H, a.H, rtol=1e-7, atol=0)


def test_betamu_param_groups_with_different_l1(gen):
    """Oracle: one step with per-group l1_reg equals the explicit KL MU formulas with those penalties."""
    V = rand(gen, 14, 10, low=0.1)
    W0, H0 = rand(gen, 10, 3, low=0.1), rand(gen, 14, 3, low=0.1)
    m = NMF(W=W0, H=H0)
    trainer = BetaMu([{"params": [m.W], "l1_reg": 0.5}, {"params": [m.H], "l2_reg": 0.3}], beta=1)
    assert trainer.param_groups[0]["l1_reg"] == 0.5 and trainer.param_groups[0]["l2_reg"] == 0
    assert trainer.param_groups[1]["l1_reg"] == 0 and trainer.param_groups[1]["l2_reg"] == 0.3
    trainer.step(lambda: (V, m()))
    # W <- W * ((V / WH)^T H) / (sum_n H + l1); then H <- H * ((V / WH) W) / (sum_c W + l2 H)
    W1 = W0 * ((V / (H0 @ W0.t())).t() @ H0) / (H0.sum(0) + 0.5)
    H1 = H0 * ((V / (H0 @ W1.t())) @ W1) / (W1.sum(0) + 0.3 * H0)
    torch.testing.assert_close(m.W.detach(), W1, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(m.H.detach(), H1, rtol=1e-10, atol=1e-12)


def test_betamu_orthogonal_penalty_formula(gen):
    """Oracle: orthogonal adds o * (sum_j p[:, j] - p[:, i]) to the denominator (documented penalty)."""
    V = rand(gen, 14, 10, low=0.1)
    W0, H0 = rand(gen, 10, 3, low=0.1), rand(gen, 14, 3, low=0.1)
    m = NMF(W=W0, H=H0, trainable_H=False)
    BetaMu([m.W], beta=2, orthogonal=0.7).step(lambda: (V, m()))
    pos = W0 @ (H0.t() @ H0) + 0.7 * (W0.sum(1, keepdim=True) - W0)
    torch.testing.assert_close(m.W.detach(), W0 * (V.t() @ H0) / pos, rtol=1e-10, atol=1e-12)


def test_betamu_skips_frozen_parameters(gen):
    """Invariant: a parameter with requires_grad=False is left bit-identical and keeps its flag."""
    V = rand(gen, 14, 10, low=0.1)
    W0 = rand(gen, 10, 3, low=0.1)
    m = NMF(W=W0, H=rand(gen, 14, 3, low=0.1), trainable_W=False)
    trainer = BetaMu(m.parameters())
    for _ in range(3):
        trainer.step(lambda: (V, m()))
    assert torch.equal(m.W, W0) and not m.W.requires_grad and m.H.requires_grad


@pytest.mark.parametrize("beta", [-0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0])
def test_betamu_monotone_on_chain(gen, beta):
    """Oracle (monotone objective): BetaMu never increases d_beta for a two-layer chain, any beta."""
    V = rand(gen, 30, 12, low=0.1)
    model = nn.Sequential(NMF((30, 6), rank=3, generator=0), NMF(W=(12, 6), generator=1)).double()
    trainer = BetaMu(model.parameters(), beta=beta)
    losses = [float(trainer.step(lambda: (V, model(None)))) for _ in range(30)]
    assert losses[-1] < losses[0]
    assert_non_increasing(losses, rel=1e-9, what=f"chain beta={beta}")


# ---------------------------------------------------------- SparsityProj
def test_sparsityproj_reaches_target_and_never_increases_loss(gen):
    """Oracle: Hoyer's algorithm (MU on W, projected gradient on H) keeps every H[:, r] at the target
    sparseness and never increases the Euclidean loss."""
    from nmfcore._hoyer import project_columns

    V = rand(gen, 40, 8) @ rand(gen, 8, 30) + 0.01
    model = NMF(V.shape, 4, generator=0).double()
    target = 0.7
    with torch.no_grad():
        project_columns(model.H, target)  # Hoyer starts from a feasible H
    H0 = model.H.detach().clone()
    proj = SparsityProj([model.H], sparsity=target, dim=1)
    mu = BetaMu([model.W], beta=2)

    def loss_closure():
        proj.zero_grad()
        return metrics.euclidean(model(), V)

    losses = [val(metrics.euclidean(model(), V))]
    for _ in range(25):
        proj.step(loss_closure)
        losses.append(val(metrics.euclidean(model(), V)))
        mu.step(lambda: (V, model()))
        losses.append(val(metrics.euclidean(model(), V)))
    assert not torch.equal(model.H, H0)
    assert losses[-1] < 0.5 * losses[0]
    assert_non_increasing(losses, rel=1e-12, what="SparsityProj + BetaMu")
    for r in range(4):
        assert val(metrics.sparseness(model.H[:, r])) == pytest.approx(target, abs=1e-3)
    assert (model.H >= 0).all()


def test_sparsityproj_step_returns_loss_not_above_initial(gen):
    """Oracle: step returns the loss after the step, never above the loss before it."""
    from nmfcore._hoyer import project_columns

    V = rand(gen, 20, 15)
    model = NMF(V.shape, 3, generator=0).double()
    with torch.no_grad():
        project_columns(model.W, 0.5)
    proj = SparsityProj([model.W], sparsity=0.5)

    def closure():
        proj.zero_grad()
        return metrics.euclidean(model(), V)

    for _ in range(5):
        before = val(metrics.euclidean(model(), V))
        after = float(proj.step(closure))
        assert after <= before
        assert after == pytest.approx(val(metrics.euclidean(model(), V)), rel=1e-12)


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize("kw, match", [
    (dict(beta=float("nan")), "beta=nan"),
    (dict(beta=float("inf")), "beta=inf"),
    (dict(l1_reg=-1.0), r"l1_reg=-1\.0"),
    (dict(l2_reg=-0.5), r"l2_reg=-0\.5"),
    (dict(orthogonal=-2), "orthogonal=-2"),
    (dict(l1_reg=float("nan")), "l1_reg=nan"),
])
def test_betamu_invalid_hyperparameters(kw, match):
    """Errors: ParameterError naming the hyper-parameter and its value."""
    with pytest.raises(ParameterError, match=match):
        BetaMu(NMF((4, 3), 2).parameters(), **kw)


@pytest.mark.parametrize("kw, match", [
    (dict(sparsity=0), "sparsity=0"),
    (dict(sparsity=1), "sparsity=1"),
    (dict(sparsity=-0.1), r"sparsity=-0\.1"),
    (dict(sparsity=1.5), r"sparsity=1\.5"),
    (dict(sparsity=0.5, max_iter=0), "max_iter=0"),
])
def test_sparsityproj_invalid_hyperparameters(kw, match):
    """Errors: ParameterError naming the hyper-parameter and its value."""
    with pytest.raises(ParameterError, match=match):
        SparsityProj(NMF((4, 3), 2).parameters(), **kw)
