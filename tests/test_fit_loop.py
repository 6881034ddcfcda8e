"""Tests for nmfcore._fit (the one iteration loop) and nmfcore._validation's reductions.

Oracles: counting calls (the objective is evaluated exactly when something
reads it); the tolerance rule of the reference; whole-tensor reductions are
the same on any view of the data.
"""

import pytest
import torch

from nmfcore._fit import run_iterations
from nmfcore._validation import memory_order, value_range
from nmfcore.exceptions import ConvergenceWarning, ParameterError


class Counter:
    def __init__(self, losses=None):
        self.steps = 0
        self.losses = 0
        self.values = losses

    def step(self):
        self.steps += 1

    def loss(self):
        self.losses += 1
        return self.values[self.steps] if self.values else 1.0


def test_loss_not_evaluated_when_nothing_reads_it():
    """Oracle (call count): tol=0, no callback, no progress bar: max_iter steps, no loss."""
    c = Counter()
    assert run_iterations(c.step, c.loss, max_iter=7, tol=0) == 7
    assert (c.steps, c.losses) == (7, 0)


def test_loss_evaluated_at_start_every_check_and_at_the_end():
    """Oracle (call count): iteration 0, every check_every-th and the last iteration."""
    c = Counter()
    seen = []
    run_iterations(c.step, c.loss, max_iter=7, tol=0, check_every=3, callback=lambda i, v: seen.append(i))
    assert seen == [0, 3, 6, 7]
    assert c.losses == 4


def test_tolerance_rule_stops_when_relative_improvement_is_small():
    """Oracle: the reference's rule (e_prev - e) / e_0 < tol with e = sqrt(2 loss)."""
    losses = [50.0, 32.0, 31.9] + [31.9] * 10  # e: 10, 8, 7.99 -> 0.001 < tol at iteration 2
    c = Counter(losses)
    n = run_iterations(c.step, c.loss, max_iter=10, tol=0.01, check_every=1)
    assert n == 2


def test_patient_rule_waits_for_a_new_best():
    """Oracle: the documented patient rule on a hand-computed sequence. e = sqrt(2 loss): 10, 12 (a rise),
    8, 7.9987, 7.9975, ...; tol * e_0 = 0.1: the reference rule stops at the rise (iteration 1); patience 2
    waits (1: no new best; 2: a new best; 3, 4: none) and stops at 4."""
    losses = [50.0, 72.0, 32.0, 31.99, 31.98] + [31.97] * 10
    c = Counter(losses)
    assert run_iterations(c.step, c.loss, max_iter=10, tol=0.01, check_every=1) == 1
    c = Counter(losses)
    assert run_iterations(c.step, c.loss, max_iter=10, tol=0.01, check_every=1, patience=2) == 4
    c = Counter(losses)
    assert run_iterations(c.step, c.loss, max_iter=10, tol=0, check_every=1, patience=2,
                          callback=lambda i, v: None) == 10


def test_patience_one_is_the_reference_rule_on_a_monotone_objective():
    """Oracle: path equivalence: on a non-increasing sequence the best is the previous value."""
    losses = [50.0 * 0.9 ** k for k in range(40)]
    n = []
    for kw in ({}, {"patience": 1}):
        c = Counter(losses)
        n.append(run_iterations(c.step, c.loss, max_iter=60, tol=0.02, check_every=1, **kw))
    assert n[0] == n[1]
    assert 1 < n[0] < 30


def test_max_iter_reached_warns_with_tol():
    c = Counter([float(100 - i) for i in range(20)])
    with pytest.warns(ConvergenceWarning, match="max_iter=5"):
        run_iterations(c.step, c.loss, max_iter=5, tol=1e-12, check_every=1)


class SlowCounter(Counter):
    """Each step takes ``dt`` seconds of a fake clock."""

    def __init__(self, clock, dt, losses=None):
        super().__init__(losses)
        self.clock, self.dt = clock, dt

    def step(self):
        super().step()
        self.clock[0] += self.dt


def test_slow_fits_report_between_checks_without_changing_the_stopping_rule(monkeypatch):
    """Oracle (call count on a fake clock): steps of 0.4 s with reports every 1 s give a
    report every third step between the checks at 0 and 10; the tolerance rule compares the
    checks only (the same losses stop at the same iteration as without timed reports)."""
    import nmfcore._fit as fit_loop

    clock = [0.0]
    monkeypatch.setattr(fit_loop.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(fit_loop, "REPORT_SECONDS", 1.0)
    c = SlowCounter(clock, 0.4)
    seen = []
    run_iterations(c.step, c.loss, max_iter=10, tol=0, check_every=10, callback=lambda i, v: seen.append(i))
    assert seen == [0, 3, 6, 9, 10]

    losses = [100.0 - i * 1e-3 for i in range(40)]  # tiny improvements: stops at the first check
    for seconds in (None, 1.0):
        monkeypatch.setattr(fit_loop, "REPORT_SECONDS", seconds)
        clock[0] = 0.0
        c = SlowCounter(clock, 0.4, losses)
        seen = []
        assert run_iterations(c.step, c.loss, max_iter=30, tol=1e-3, check_every=10,
                              callback=lambda i, v: seen.append(i)) == 10
        assert seen == ([0, 10] if seconds is None else [0, 3, 6, 9, 10])


def test_fast_fits_report_at_the_checks_only(monkeypatch):
    """Oracle (call count): steps that take no time never trigger a timed report."""
    import nmfcore._fit as fit_loop

    monkeypatch.setattr(fit_loop.time, "monotonic", lambda: 0.0)
    monkeypatch.setattr(fit_loop, "REPORT_SECONDS", 1.0)
    c = Counter()
    seen = []
    run_iterations(c.step, c.loss, max_iter=25, tol=0, check_every=10, callback=lambda i, v: seen.append(i))
    assert seen == [0, 10, 20, 25]


@pytest.mark.parametrize("perm", [(0, 1, 2), (2, 1, 0), (1, 0, 2), (2, 0, 1)])
def test_memory_order_is_a_contiguous_view_with_the_same_values(gen, perm):
    """Oracle: the permuted view is contiguous, shares storage, and holds the same multiset."""
    V = torch.rand(3, 4, 5, generator=gen)
    X = V.permute(perm)
    M = memory_order(X)
    assert M.is_contiguous() and M.data_ptr() == V.data_ptr()
    assert torch.equal(M.sum(), X.sum())


def test_value_range_on_transposed_and_sliced_views(gen):
    """Oracle: (min, max) of the values, whatever the view's layout."""
    V = torch.rand(40, 30, generator=gen, dtype=torch.float64) + 0.5
    V[3, 7] = 0.25
    V[20, 2] = 9.0
    for X in (V, V.t(), V[:, ::2], V.t()[::3]):
        assert value_range(X) == (float(X.min()), float(X.max()))
    bad = V.clone()
    bad[5, 5] = -1
    with pytest.raises(ParameterError, match="V must be non-negative"):
        value_range(bad.t())
