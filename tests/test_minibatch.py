"""Mini-batch multiplicative updates (nmfcore.minibatch) and data-parallel fits (nmfcore.distributed).

Each test names its oracle: autograd, a slow float64 loop, full-batch MU, a
direct sum, an uninterrupted run, the in-memory fit, a one-process fit.
"""

import io
import time

import numpy as np
import pytest
import torch

import _minibatch_worker as mw
from nmfcore import divergence as div
from nmfcore.exceptions import ParameterError
from nmfcore.minibatch import (SOLVERS, MiniBatchMU, asag_mu, batch_terms, gradient_h, gradient_h_mu, gradient_w,
                               gradient_w_mu, mu_batch, mu_update, mu_update_h, update_grad_w)

BETAS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)


def low_rank(gen, n=60, c=12, r=3, dtype=torch.float64, floor=0.01):
    """Synthetic low-rank frames (n, c), strictly positive."""
    return (torch.rand(n, r, generator=gen, dtype=dtype) @ torch.rand(r, c, generator=gen, dtype=dtype)) + floor


def factors(gen, n, c, r, dtype=torch.float64):
    return torch.rand(c, r, generator=gen, dtype=dtype) + 0.1, torch.rand(n, r, generator=gen, dtype=dtype) + 0.1


# ----------------------------------------------------------- the seed's functions
@pytest.mark.parametrize("beta", BETAS)
def test_seed_gradients_equal_minus_autograd(gen, beta):
    """Oracle: autograd. The seed's gradient_h / gradient_w are minus the gradient of beta_div;
    the parts' difference pos - neg is the gradient."""
    X = low_rank(gen, 7, 5, 2)
    W, H = factors(gen, 7, 5, 2)
    Wg, Hg = W.clone().requires_grad_(), H.clone().requires_grad_()
    div.beta_divergence(X, Hg @ Wg.t(), beta).backward()
    torch.testing.assert_close(gradient_h(X, W, H, beta), -Hg.grad)
    torch.testing.assert_close(gradient_w(X, W, H, beta), -Wg.grad)
    pos, neg = gradient_h_mu(X, W, H, beta)
    torch.testing.assert_close(pos - neg, Hg.grad)
    pos, neg = gradient_w_mu(X, W, H, beta)
    torch.testing.assert_close(pos - neg, Wg.grad)


@pytest.mark.parametrize("beta", BETAS)
def test_seed_parts_equal_float64_loop(gen, beta):
    """Oracle: a slow float64 loop over every entry of the formulas of the seed."""
    X = low_rank(gen, 4, 3, 2)
    W, H = factors(gen, 4, 3, 2)
    n, c, r = X.shape[0], X.shape[1], W.shape[1]
    h_pos, h_neg, w_pos, w_neg = (np.zeros((n, r)), np.zeros((n, r)), np.zeros((c, r)), np.zeros((c, r)))
    for i in range(n):
        for j in range(c):
            y = sum(float(H[i, k]) * float(W[j, k]) for k in range(r))
            for k in range(r):
                h_pos[i, k] += y ** (beta - 1) * float(W[j, k])
                h_neg[i, k] += float(X[i, j]) * y ** (beta - 2) * float(W[j, k])
                w_pos[j, k] += y ** (beta - 1) * float(H[i, k])
                w_neg[j, k] += float(X[i, j]) * y ** (beta - 2) * float(H[i, k])
    ph, pw = gradient_h_mu(X, W, H, beta), gradient_w_mu(X, W, H, beta)
    for got, want in ((ph[0], h_pos), (ph[1], h_neg), (pw[0], w_pos), (pw[1], w_neg)):
        torch.testing.assert_close(got, torch.from_numpy(want))


@pytest.mark.parametrize("beta", (0.5, 1.0, 3.0))
def test_seed_mu_updates_equal_formula(gen, beta):
    """Oracle: the ratio of the float64 parts (to the exponent 1 in [0, 2], 1/(beta-1) above)."""
    X = low_rank(gen, 6, 5, 2)
    W, H = factors(gen, 6, 5, 2)
    pos, neg = gradient_h_mu(X, W, H, beta)
    gamma = 1.0 if beta <= 2 else 1.0 / (beta - 1)
    want = H * (neg / pos) ** gamma
    H2, parts = mu_update_h(X, W, H.clone(), beta)
    torch.testing.assert_close(H2, want)
    torch.testing.assert_close(parts, torch.stack([pos, neg]))
    neg_copy = neg.clone()
    got = mu_update(H.clone(), pos, neg, beta=beta)
    torch.testing.assert_close(got, want)
    assert torch.equal(neg, neg_copy)  # the parts are left alone


def test_update_grad_w_is_grad_minus_old_plus_new():
    """Oracle: the seed's arithmetic."""
    g, o, n = torch.tensor([5.0, 1.0]), torch.tensor([2.0, 0.5]), torch.tensor([3.0, 4.0])
    assert torch.equal(update_grad_w(g, o, n), torch.tensor([6.0, 4.5]))


# ------------------------------------------------------------------ the solvers
def slow_full_mu(X, W, H, beta, epochs):
    """Plain full-batch MU in float64, H then W, written out from the formulas (no nmfcore code)."""
    W, H = W.clone(), H.clone()
    gamma = 1.0 if 0 <= beta <= 2 else (1 / (2 - beta) if beta < 0 else 1 / (beta - 1))
    for _ in range(epochs):
        Y = H @ W.t()
        H *= ((X * Y ** (beta - 2)) @ W / (Y ** (beta - 1) @ W)) ** gamma
        Y = H @ W.t()
        W *= ((X * Y ** (beta - 2)).t() @ H / ((Y ** (beta - 1)).t() @ H)) ** gamma
    return W, H


@pytest.mark.parametrize("beta", (0.5, 1.0, 2.0, 3.0))
@pytest.mark.parametrize("batch_size,order", [(60, "cyclic"), (16, "cyclic"), (16, "shuffle")])
def test_mu_batch_equals_full_mu(gen, beta, batch_size, order):
    """Oracle: plain full-batch MU (H then W) as a slow float64 loop, with relax=False. NMF.fit is not the
    oracle: its MU updates W before H and over-relaxes the step (divergence.multiplicative_step's relax)."""
    X = low_rank(gen)
    W, H = factors(gen, 60, 12, 3)
    m = MiniBatchMU(3, solver="mu_batch", beta=beta, batch_size=batch_size, order=order, relax=False, generator=0)
    m.fit(X, W=W, H=H, max_epochs=5, tol=0)
    Wr, Hr = slow_full_mu(X, W, H, beta, 5)
    torch.testing.assert_close(m.W, Wr)
    torch.testing.assert_close(m.H, Hr)


def test_relaxed_mu_batch_equals_relaxed_full_mu(gen):
    """Oracle: full-batch MU with the same over-relaxed steps (divergence.multiplicative_step with
    solvers.MU_RELAX, H then W), written as a loop over the whole data."""
    from nmfcore.solvers import MU_RELAX

    X = low_rank(gen)
    W, H = factors(gen, 60, 12, 3)
    m = MiniBatchMU(3, solver="mu_batch", beta=1.5, batch_size=16, generator=0).fit(X, W=W, H=H, max_epochs=4, tol=0)
    Wr, Hr = W.clone(), H.clone()
    for _ in range(4):
        div.multiplicative_step(Hr, *batch_terms("H", X, Wr, Hr, 1.5), 1.5, relax=MU_RELAX)
        div.multiplicative_step(Wr, *batch_terms("W", X, Wr, Hr, 1.5), 1.5, relax=MU_RELAX)
    torch.testing.assert_close(m.W, Wr)
    torch.testing.assert_close(m.H, Hr)
    assert not torch.allclose(Wr, slow_full_mu(X, W, H, 1.5, 4)[0])  # the relaxed steps differ from plain ones


@pytest.mark.parametrize("solver", ("asg_mu", "asag_mu"))
def test_one_batch_is_full_mu(gen, solver):
    """Oracle: with one batch per epoch, W after every batch is W once per epoch: full MU."""
    X = low_rank(gen)
    W, H = factors(gen, 60, 12, 3)
    m = MiniBatchMU(3, solver=solver, beta=1, batch_size=1000, relax=False, generator=0)
    m.fit(X, W=W, H=H, max_epochs=4, tol=0)
    Wr, Hr = slow_full_mu(X, W, H, 1.0, 4)
    torch.testing.assert_close(m.W, Wr)
    torch.testing.assert_close(m.H, Hr)


@pytest.mark.parametrize("beta", (1.0, 2.0, 3.0))
def test_h_steps_equal_slow_loop(gen, beta):
    """Oracle: asg_mu written out from the formulas in float64 (batches in order; per batch h_steps plain H
    updates, then one W update from the batch's parts). At beta = 2 the steps after the first reuse X W and
    W^T W (the Gram form): the same numbers."""
    X = low_rank(gen)
    W, H = factors(gen, 60, 12, 3)
    m = MiniBatchMU(3, solver="asg_mu", beta=beta, batch_size=16, order="cyclic", h_steps=3, generator=0)
    m.fit(X, W=W, H=H, max_epochs=2, tol=0)
    gamma = 1.0 if beta <= 2 else 1 / (beta - 1)
    Wr, Hr = W.clone(), H.clone()
    for _ in range(2):
        for i in range(0, 60, 16):
            Xb, Hb = X[i:i + 16], Hr[i:i + 16]
            for _ in range(3):
                Y = Hb @ Wr.t()
                Hb *= ((Xb * Y ** (beta - 2)) @ Wr / (Y ** (beta - 1) @ Wr)) ** gamma
            Y = Hb @ Wr.t()
            Wr *= ((Xb * Y ** (beta - 2)).t() @ Hb / ((Y ** (beta - 1)).t() @ Hb)) ** gamma
    torch.testing.assert_close(m.W, Wr)
    torch.testing.assert_close(m.H, Hr)
    with pytest.raises(ParameterError, match="h_steps=0"):
        MiniBatchMU(3, h_steps=0)


@pytest.mark.parametrize("T", (None, 4))
@pytest.mark.parametrize("forget", (1.0, 0.7))
@pytest.mark.parametrize("solver", ("asag_mu", "gsag_mu"))
def test_sag_sums_equal_direct_sum(gen, solver, forget, T):
    """Oracle: the direct (forgetting-weighted) sum of every batch's stored parts (NMF, and NMFD with W of
    shape (C, R, T))."""
    X = low_rank(gen) if T is None else convolutive(gen, 60, 12, 3, T)
    m = MiniBatchMU(3, solver=solver, beta=1.5, batch_size=16, forget=forget, generator=1, T=T)
    m.fit(X, max_epochs=3, tol=0)
    s = m.state_dict()
    assert s["t"] >= 3 and s["sum"][0].shape == m.W.shape
    for i in range(2):
        direct = sum(forget ** (s["t"] - at) * parts[i] for parts, at in zip(s["stored"], s["stored_at"])
                     if parts is not None)
        torch.testing.assert_close(s["sum"][i], direct)


@pytest.mark.parametrize("solver", ("asag_mu", "gsag_mu"))
def test_sag_state_is_updated_in_place_and_not_shared(gen, solver):
    """Invariants: the running sums and every batch's stored parts keep their storage from epoch to epoch
    (reallocating them among each batch's large temporaries fragmented the C heap: a chunked fit's peak
    RSS reached 4.5x its usual value, bench/README.md); a loaded state is copied, so a resumed fit leaves
    the state it was given unchanged (oracle: the same state resumed twice gives the same W)."""
    X = low_rank(gen)
    m = MiniBatchMU(3, solver=solver, batch_size=16, generator=1)
    m.fit(X, max_epochs=2, tol=0)
    def storage():  # gsag_mu stores a batch at its first pick: compare the batches stored at both times
        return {b: [x.data_ptr() for x in p] for b, p in enumerate(m._stored) if p is not None}, \
            [x.data_ptr() for x in m._sum]

    stored, sums = storage()
    m.fit(X, max_epochs=6, tol=0, resume=True)
    stored_after, sums_after = storage()
    assert sums_after == sums and stored
    assert all(stored_after[b] == ptr for b, ptr in stored.items())
    state = m.state_dict()
    kept = [x.clone() for x in state["sum"]]
    runs = [MiniBatchMU(3, solver=solver).load_state_dict(state).fit(X, max_epochs=8, tol=0, resume=True).W
            for _ in range(2)]
    assert torch.equal(runs[0], runs[1])
    assert all(torch.equal(a, b) for a, b in zip(state["sum"], kept))


@pytest.mark.parametrize("T", (None, 4))
@pytest.mark.parametrize("beta", (1.0, 2.0))
@pytest.mark.parametrize("solver", SOLVERS)
def test_loss_decreases_over_epochs(gen, solver, beta, T):
    """Oracle: the full divergence (monotone objective, in expectation for the stochastic solvers) on
    synthetic rank-3 data (NMF, and NMFD's convolutive data with T = 4): it drops at least 5x over 30 epochs
    and the second half is below the first."""
    X = low_rank(gen, 120, 16, 3) if T is None else convolutive(gen, 120, 16, 3, T)
    m = MiniBatchMU(3, solver=solver, beta=beta, batch_size=20, generator=2, T=T)
    m.fit(X, max_epochs=30, tol=0, callback=lambda epoch, loss: None)
    losses = [v for _, v in m.losses]
    assert len(losses) == 31
    assert losses[-1] < losses[0] / 5
    assert np.mean(losses[16:]) < np.mean(losses[1:16])
    assert torch.isfinite(m.W).all() and (m.W >= 0).all() and (m.H >= 0).all()


@pytest.mark.parametrize("solver", SOLVERS)
def test_resume_equals_uninterrupted_run(gen, solver):
    """Oracle: an uninterrupted run. A checkpoint saved by the callback after epoch 3 (torch.save), loaded into
    a fresh object and resumed to epoch 7 gives bit-identical factors and losses (shuffled order, random init)."""
    X = low_rank(gen, 50, 10, 3)
    full = MiniBatchMU(3, solver=solver, beta=1, batch_size=12, forget=0.9, generator=5).fit(
        X, max_epochs=7, tol=0, callback=lambda epoch, loss: None)
    saved = {}
    first = MiniBatchMU(3, solver=solver, beta=1, batch_size=12, forget=0.9, generator=5)

    def checkpoint(epoch, loss):
        if epoch == 3:
            buf = io.BytesIO()
            torch.save(first.state_dict(), buf)
            saved["state"] = buf.getvalue()
            return True  # stop as if interrupted

    first.fit(X, max_epochs=7, tol=0, callback=checkpoint)
    assert first.epoch == 3
    resumed = MiniBatchMU(1, generator=123)
    resumed.load_state_dict(torch.load(io.BytesIO(saved["state"]), weights_only=False))
    resumed.fit(X, max_epochs=7, tol=0, resume=True, callback=lambda epoch, loss: None)
    assert resumed.epoch == 7 and resumed.solver == solver
    assert torch.equal(resumed.W, full.W)
    assert torch.equal(resumed.H, full.H)
    assert [e for e, _ in resumed.losses] == [e for e, _ in full.losses]
    assert resumed.losses[-1] == full.losses[-1]


def test_fixed_w_and_transform(gen):
    """Oracle: the fixed factor is untouched; transform's activations reconstruct data made from W."""
    W_true = torch.rand(12, 3, generator=gen, dtype=torch.float64) + 0.1
    H_true = torch.rand(40, 3, generator=gen, dtype=torch.float64) + 0.1
    X = H_true @ W_true.t()
    m = MiniBatchMU(3, solver="asg_mu", beta=1, batch_size=10, generator=0)
    m.fit(X, W=W_true, trainable_W=False, max_epochs=30, tol=1e-12)
    assert torch.equal(m.W, W_true)
    assert m.losses[-1][1] < 1e-2 * m.losses[0][1]
    H = m.transform(X, max_iter=200)
    assert H.shape == (40, 3)
    rel = float(div.beta_divergence(X, H @ W_true.t(), 1)) / float(X.sum())
    assert rel < 1e-3


@pytest.mark.parametrize("solver", ("asg_mu", "asag_mu"))
def test_partial_fit_on_a_stream_learns(gen, solver):
    """Oracle: the divergence of held-out frames under transform drops as chunks of a stream arrive."""
    def sparse(*shape):
        return torch.rand(*shape, generator=gen, dtype=torch.float64) * (torch.rand(*shape, generator=gen) > 0.5)

    W_true = sparse(12, 3)

    def chunk(n):
        return sparse(n, 3) @ W_true.t() + 0.01

    held = chunk(30)
    m = MiniBatchMU(3, solver=solver, beta=1, forget=0.9, generator=0)
    m.partial_fit(chunk(20))
    before = float(div.beta_divergence(held, m.transform(held) @ m.W.t(), 1))
    for _ in range(30):
        m.partial_fit(chunk(20))
    after = float(div.beta_divergence(held, m.transform(held) @ m.W.t(), 1))
    assert after < before / 3


# ------------------------------------------------------------ out-of-memory data
def test_chunked_fits_equal_in_memory_fit(gen, tmp_path):
    """Oracle: the in-memory fit of the same frames (cyclic order, random init): a list, a function returning
    a generator, a DataLoader and a memory-mapped array give bit-identical factors."""
    X = low_rank(gen, 50, 10, 3, dtype=torch.float32)
    bs = 12
    ref = MiniBatchMU(3, solver="asag_mu", beta=1, batch_size=bs, order="cyclic", generator=4).fit(
        X, max_epochs=4, tol=1e-12)
    chunks = list(torch.split(X, bs))
    path = tmp_path / "frames.f32"
    mm = np.memmap(path, dtype=np.float32, mode="w+", shape=tuple(X.shape))
    mm[:] = X.numpy()
    mm.flush()
    mm = np.memmap(path, dtype=np.float32, mode="r", shape=tuple(X.shape))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X), batch_size=bs, shuffle=False)
    sources = {"list": chunks, "function": lambda: (c.numpy() for c in chunks), "DataLoader": loader,
               "memmap": mm}
    for name, source in sources.items():
        m = MiniBatchMU(3, solver="asag_mu", beta=1, batch_size=bs, order="cyclic", generator=4)
        m.fit(source, max_epochs=4, tol=1e-12)
        assert len(m.losses) == 5
        assert torch.equal(m.W, ref.W), name
        assert torch.equal(m.H, ref.H), name
        assert m.losses == ref.losses, name


def test_resume_from_chunks_equals_uninterrupted(gen):
    """Oracle: an uninterrupted fit from the same list of chunks."""
    chunks = list(torch.split(low_rank(gen, 40, 8, 2), 10))
    full = MiniBatchMU(2, solver="gsag_mu", generator=1).fit(chunks, max_epochs=4, tol=0)
    part = MiniBatchMU(2, solver="gsag_mu", generator=1).fit(chunks, max_epochs=2, tol=0)
    again = MiniBatchMU(2).load_state_dict(part.state_dict()).fit(chunks, max_epochs=4, tol=0, resume=True)
    assert torch.equal(again.W, full.W) and torch.equal(again.H, full.H)
    with pytest.raises(ParameterError, match="chunk 1 has 9 frames"):
        MiniBatchMU(2).load_state_dict(part.state_dict()).fit(
            chunks[:1] + [chunks[1][:9]] + chunks[2:], max_epochs=4, resume=True)
    with pytest.raises(ParameterError, match="resume with the same data and batch_size"):
        MiniBatchMU(2).load_state_dict(part.state_dict()).fit(torch.cat(chunks)[:35], max_epochs=4, resume=True)


def test_memmap_shuffled_equals_in_memory(gen, tmp_path):
    """Oracle: the in-memory fit; a memory-mapped array is read batch by batch in the same shuffled order."""
    X = low_rank(gen, 50, 10, 3, dtype=torch.float32)
    path = tmp_path / "frames.npy"
    np.save(path, X.numpy())
    mm = np.load(path, mmap_mode="r")
    for solver in ("gsg_mu", "gsag_mu"):
        ref = MiniBatchMU(3, solver=solver, beta=2, batch_size=8, generator=9).fit(X, max_epochs=3, tol=0)
        m = MiniBatchMU(3, solver=solver, beta=2, batch_size=8, generator=9).fit(mm, max_epochs=3, tol=0)
        assert torch.equal(m.W, ref.W) and torch.equal(m.H, ref.H)


# ------------------------------------------------------------------ bad input
def test_bad_settings_raise():
    """Oracle: ParameterError naming the argument and its value."""
    with pytest.raises(ParameterError, match="batch_size=0"):
        MiniBatchMU(3, batch_size=0)
    with pytest.raises(ParameterError, match="batch_size=-2"):
        MiniBatchMU(3, batch_size=-2)
    with pytest.raises(ParameterError, match="solver='sgd'"):
        MiniBatchMU(3, solver="sgd")
    with pytest.raises(ParameterError, match="forget=0"):
        MiniBatchMU(3, forget=0)
    with pytest.raises(ParameterError, match="order='random'"):
        MiniBatchMU(3, order="random")
    with pytest.raises(ParameterError, match="relax=1"):
        MiniBatchMU(3, relax=1)
    with pytest.raises(ParameterError, match="rank=0"):
        MiniBatchMU(0)
    with pytest.raises(ParameterError, match="max_epochs=0"):
        MiniBatchMU(3).fit(torch.rand(10, 4), max_epochs=0)
    with pytest.raises(ParameterError, match="callback"):
        MiniBatchMU(3).fit(torch.rand(10, 4), callback=5)


def test_bad_chunks_raise_naming_the_chunk(gen):
    """Oracle: ParameterError naming the chunk (index) that is bad."""
    good = [torch.rand(5, 4, generator=gen) + 0.1 for _ in range(4)]
    m = MiniBatchMU(2, order="cyclic", generator=0)
    with pytest.raises(ParameterError, match="empty iterable"):
        m.fit([])
    with pytest.raises(ParameterError, match="chunk 2 has 3 features"):
        m.fit(good[:2] + [torch.rand(5, 3)] + good[3:])
    nan = [c.clone() for c in good]
    nan[1][2, 0] = float("nan")
    with pytest.raises(ParameterError, match="chunk 1 must contain only finite values"):
        m.fit(nan)
    neg = [c.clone() for c in good]
    neg[3][0, 0] = -1.0
    with pytest.raises(ParameterError, match="chunk 3 must be non-negative"):
        m.fit(neg)
    zero = [c.clone() for c in good]
    zero[2][0, 0] = 0.0
    with pytest.raises(ParameterError, match="chunk 2: beta=0"):
        MiniBatchMU(2, beta=0, generator=0).fit(zero)
    with pytest.raises(ParameterError, match="one-shot iterator"):
        m.fit(c for c in good)
    with pytest.raises(ParameterError, match="order='shuffle'"):
        MiniBatchMU(2, order="shuffle").fit(good)
    with pytest.raises(ParameterError, match="matrix"):
        m.fit([torch.rand(4)])
    with pytest.raises(ParameterError, match="V must be non-negative"):
        m.fit(-torch.ones(6, 4))


def test_bad_memmap_batch_names_its_frames(gen, tmp_path):
    """Oracle: ParameterError naming the batch and its frames for an array read batch by batch."""
    X = np.random.default_rng(0).random((20, 4)).astype(np.float32)
    X[13, 1] = np.nan
    path = tmp_path / "bad.npy"
    np.save(path, X)
    with pytest.raises(ParameterError, match=r"V\[10:15\] \(batch 2\) must contain only finite"):
        MiniBatchMU(2, batch_size=5, order="cyclic", generator=0).fit(np.load(path, mmap_mode="r"), max_epochs=1)


def test_bad_factors_and_resume_raise(gen):
    X = torch.rand(10, 4, generator=gen)
    with pytest.raises(ParameterError, match="W has shape"):
        MiniBatchMU(2).fit(X, W=torch.rand(3, 2))
    with pytest.raises(ParameterError, match="H has 9 rows"):
        MiniBatchMU(2).fit(X, H=torch.rand(9, 2))
    with pytest.raises(ParameterError, match="trainable_W=False needs"):
        MiniBatchMU(2).fit(X, trainable_W=False)
    with pytest.raises(ParameterError, match="resume=True needs a state"):
        MiniBatchMU(2).fit(X, resume=True)
    with pytest.raises(ParameterError, match="transform needs W"):
        MiniBatchMU(2).transform(X)
    with pytest.raises(ParameterError, match="not a MiniBatchMU.state_dict"):
        MiniBatchMU(2).load_state_dict({"W": None})


# ------------------------------------------------------------------ NMFD (T=)
def convolutive(gen, n=46, c=9, r=3, T=4, dtype=torch.float64, floor=0.01):
    """Synthetic convolutive frames (n, c): NMFD's model with random factors, strictly positive."""
    W = torch.rand(c, r, T, generator=gen, dtype=dtype)
    H = torch.rand(n - T + 1, r, generator=gen, dtype=dtype) ** 3
    return slow_deconvolution(W, H) + floor


def slow_deconvolution(W, H):
    """The paper's sum over tau, frames in rows: Y[j] = sum_t W[:, :, t] @ H[j - t] (no nmfcore code)."""
    T = W.shape[2]
    Y = torch.zeros(H.shape[0] + T - 1, W.shape[0], dtype=W.dtype)
    for j in range(Y.shape[0]):
        for t in range(T):
            if 0 <= j - t < H.shape[0]:
                Y[j] += W[:, :, t] @ H[j - t]
    return Y


def slow_deconvolution_parts(which, X, W, H, beta):
    """``(neg, pos)`` for W (C, R, T) or H (N - T + 1, R) from the sums over tau, in float64."""
    T = W.shape[2]
    Y = slow_deconvolution(W, H)
    G = (X * Y ** (beta - 2), Y ** (beta - 1))
    out = []
    for g in G:
        x = torch.zeros_like(W if which == "W" else H)
        for i in range(H.shape[0]):
            for t in range(T):
                if which == "H":
                    x[i] += W[:, :, t].t() @ g[i + t]
                else:
                    x[:, :, t] += torch.outer(g[i + t], H[i])
        out.append(x)
    return out


def slow_full_nmfd_mu(X, W, H, beta, epochs):
    """Plain full-batch NMFD MU in float64, H then W (the MM exponent of beta outside [0, 2])."""
    W, H = W.clone(), H.clone()
    gamma = 1.0 if 0 <= beta <= 2 else (1 / (2 - beta) if beta < 0 else 1 / (beta - 1))
    for _ in range(epochs):
        neg, pos = slow_deconvolution_parts("H", X, W, H, beta)
        H *= (neg / pos) ** gamma
        neg, pos = slow_deconvolution_parts("W", X, W, H, beta)
        W *= (neg / pos) ** gamma
    return W, H


def nmfd_factors(gen, n, c, r, T):
    return (torch.rand(c, r, T, generator=gen, dtype=torch.float64) + 0.1,
            torch.rand(n - T + 1, r, generator=gen, dtype=torch.float64) + 0.1)


@pytest.mark.parametrize("beta", (0.5, 1.0, 2.0, 3.0))
@pytest.mark.parametrize("batch_size", (46, 10, 7, 4))
def test_nmfd_mu_batch_equals_full_mu(gen, beta, batch_size):
    """Oracle: plain full-batch NMFD MU (H then W) from the sums over tau, float64, relax=False, batches in
    order: the batch boundaries (4 frames = T, 7 and 10 frames; 46 is one batch) change nothing."""
    X = convolutive(gen)
    W, H = nmfd_factors(gen, 46, 9, 3, 4)
    m = MiniBatchMU(3, T=4, solver="mu_batch", beta=beta, batch_size=batch_size, order="cyclic", relax=False,
                    generator=0)
    m.fit(X, W=W, H=H, max_epochs=3, tol=0)
    Wr, Hr = slow_full_nmfd_mu(X, W, H, beta, 3)
    assert m.W.shape == (9, 3, 4) and m.H.shape == (43, 3)
    torch.testing.assert_close(m.W, Wr)
    torch.testing.assert_close(m.H, Hr)


def test_nmfd_relaxed_mu_batch_equals_relaxed_full_mu(gen):
    """Oracle: full-batch NMFD MU with the same over-relaxed steps (divergence.multiplicative_step with
    solvers.MU_RELAX, H then W) on the whole data through the Deconvolution operator (path equivalence)."""
    from nmfcore._workspace import Workspace
    from nmfcore.operators import Deconvolution
    from nmfcore.solvers import MU_RELAX

    X = convolutive(gen)
    W, H = nmfd_factors(gen, 46, 9, 3, 4)
    m = MiniBatchMU(3, T=4, solver="mu_batch", beta=1.5, batch_size=9, order="cyclic", generator=0)
    m.fit(X, W=W, H=H, max_epochs=4, tol=0)
    op, ws, V = Deconvolution(), Workspace(), X.t().unsqueeze(0).contiguous()
    Wr, Hr = W.clone(), H.t().unsqueeze(0).contiguous()
    for _ in range(4):
        div.multiplicative_step(Hr, *op.terms("H", V, Wr, Hr, 1.5, ws), 1.5, relax=MU_RELAX)
        div.multiplicative_step(Wr, *op.terms("W", V, Wr, Hr, 1.5, ws), 1.5, relax=MU_RELAX)
    torch.testing.assert_close(m.W, Wr)
    torch.testing.assert_close(m.H, Hr[0].t())
    assert not torch.allclose(Wr, slow_full_nmfd_mu(X, W, H, 1.5, 4)[0])  # the relaxed steps differ


@pytest.mark.parametrize("batch_size", (4, 7, 13))
def test_nmfd_batch_boundaries_keep_the_reconstruction(gen, batch_size):
    """Oracle: the sum over tau on the whole data. The loss summed over the batches is the full divergence,
    and one epoch of H updates (W fixed, any order) is one full-batch H update: every frame near a boundary
    sees the rows of the batches around it (shuffled order; the rows around are read as the epoch began)."""
    X = convolutive(gen)
    W, H = nmfd_factors(gen, 46, 9, 3, 4)
    full = float(div.beta_divergence(X, slow_deconvolution(W, H), 1.0))
    m = MiniBatchMU(3, T=4, solver="asg_mu", beta=1, batch_size=batch_size, order="cyclic", generator=0)
    m.fit(X, W=W, H=H, max_epochs=1, tol=0, trainable_W=False, callback=lambda epoch, loss: None)
    assert m.losses[0][1] == pytest.approx(full, rel=1e-12)
    neg, pos = slow_deconvolution_parts("H", X, W, H, 1.0)
    torch.testing.assert_close(m.H, H * neg / pos)
    assert float(m.losses[1][1]) == pytest.approx(float(div.beta_divergence(X, slow_deconvolution(W, m.H), 1.0)))


@pytest.mark.parametrize("solver", ("mu_batch", "asag_mu", "gsg_mu"))
def test_nmfd_resume_equals_uninterrupted_run(gen, solver):
    """Oracle: an uninterrupted run (shuffled order, random init), from a state_dict saved after epoch 2."""
    X = convolutive(gen, 40, 8, 2, 3)
    full = MiniBatchMU(2, T=3, solver=solver, beta=1, batch_size=9, forget=0.9, generator=5).fit(
        X, max_epochs=5, tol=0)
    part = MiniBatchMU(2, T=3, solver=solver, beta=1, batch_size=9, forget=0.9, generator=5).fit(
        X, max_epochs=2, tol=0)
    buf = io.BytesIO()
    torch.save(part.state_dict(), buf)
    resumed = MiniBatchMU(1, generator=123).load_state_dict(torch.load(io.BytesIO(buf.getvalue()), weights_only=False))
    resumed.fit(X, max_epochs=5, tol=0, resume=True)
    assert resumed.T == 3 and resumed.epoch == 5
    assert torch.equal(resumed.W, full.W) and torch.equal(resumed.H, full.H)


def test_nmfd_chunked_fits_equal_in_memory_fit(gen, tmp_path):
    """Oracle: the in-memory fit of the same frames in order: a list of chunks (whose context frames come
    from the chunk before), a function returning a generator and a memory-mapped array give identical factors."""
    X = convolutive(gen, 50, 10, 3, 4, dtype=torch.float32)
    bs = 12
    ref = MiniBatchMU(3, T=4, solver="asag_mu", beta=1, batch_size=bs, order="cyclic", generator=4).fit(
        X, max_epochs=3, tol=1e-12)
    chunks = list(torch.split(X, bs))
    path = tmp_path / "frames.npy"
    np.save(path, X.numpy())
    sources = {"list": chunks, "function": lambda: (c.numpy() for c in chunks),
               "memmap": np.load(path, mmap_mode="r")}
    for name, source in sources.items():
        m = MiniBatchMU(3, T=4, solver="asag_mu", beta=1, batch_size=bs, order="cyclic", generator=4)
        m.fit(source, max_epochs=3, tol=1e-12)
        assert torch.equal(m.W, ref.W), name
        assert torch.equal(m.H, ref.H), name
        assert m.losses == ref.losses, name


def test_nmfd_fixed_w_transform_and_partial_fit(gen):
    """Oracle: data made from the fixed W: transform's activations (one pass, each batch continuing from the
    rows before it) reconstruct it; the fixed W is untouched by fit; partial_fit on chunks of a stream lowers
    the divergence of held-out frames."""
    W_true = torch.rand(12, 3, 3, generator=gen, dtype=torch.float64) + 0.1
    H_true = torch.rand(58, 3, generator=gen, dtype=torch.float64) + 0.1
    X = slow_deconvolution(W_true, H_true)
    m = MiniBatchMU(3, T=3, solver="asg_mu", beta=1, batch_size=15, generator=0)
    m.fit(X, W=W_true, trainable_W=False, max_epochs=3, tol=0)
    assert torch.equal(m.W, W_true)
    H = m.transform(X, max_iter=300)
    assert H.shape == (58, 3)
    assert float(div.beta_divergence(X, slow_deconvolution(W_true, H), 1)) / float(X.sum()) < 1e-3

    def chunk(n):
        H = torch.rand(n - 2, 3, generator=gen, dtype=torch.float64) * (torch.rand(n - 2, 3, generator=gen) > 0.7)
        return slow_deconvolution(W_true, H) + 0.01

    held = chunk(30)
    s = MiniBatchMU(3, T=3, solver="asg_mu", beta=1, generator=0)
    s.partial_fit(chunk(20))
    before = float(div.beta_divergence(held, slow_deconvolution(s.W, s.transform(held)), 1))
    for _ in range(60):
        s.partial_fit(chunk(20))
    after = float(div.beta_divergence(held, slow_deconvolution(s.W, s.transform(held)), 1))
    assert after < before / 2


def test_nmfd_bad_input_raises(gen):
    """Oracle: ParameterError naming the argument, the batch or the shape."""
    X = convolutive(gen, 30, 6, 2, 4)
    with pytest.raises(ParameterError, match="batch_size=3 must be at least T=4"):
        MiniBatchMU(2, T=4, batch_size=3)
    with pytest.raises(ParameterError, match="T=0"):
        MiniBatchMU(2, T=0)
    with pytest.raises(ParameterError, match="batch 0 has 3 frames, fewer than T=4"):
        MiniBatchMU(2, T=4, batch_size=8).fit(X[:3])
    chunks = [X[:10], X[10:13], X[13:]]
    with pytest.raises(ParameterError, match="batch 1 has 3 frames, fewer than T=4"):
        MiniBatchMU(2, T=4, order="cyclic").fit(chunks)
    MiniBatchMU(2, T=4, order="cyclic", generator=0).fit([X[:27], X[27:]], max_epochs=2)  # a short last chunk
    with pytest.raises(ParameterError, match=r"W has shape \(6, 2\), expected \(6, 2, 4\)"):
        MiniBatchMU(2, T=4, batch_size=8).fit(X, W=torch.rand(6, 2, dtype=torch.float64))
    with pytest.raises(ParameterError, match="H has 30 rows but V has 30 frames - T \\+ 1 = 27"):
        MiniBatchMU(2, T=4, batch_size=8).fit(X, H=torch.rand(30, 2, dtype=torch.float64))
    with pytest.raises(ParameterError, match="parallel needs T=None"):
        MiniBatchMU(2, T=4, parallel=object())


@pytest.mark.parametrize("T", (None, 4))
@pytest.mark.parametrize("beta", (0.5, 1.0, 1.5, 2.0, 3.0))
@pytest.mark.parametrize("solver", SOLVERS)
def test_silent_data_leave_the_templates_unchanged(gen, solver, beta, T):
    """Invariant: frames of digital silence whose activations are zero carry no information about any
    template (W's parts are 0 / 0): W stays exactly as it is, for every solver, beta and the running sums
    of the average gradient. NMF: every batch's activations are zero after its first step, so W never
    moves; NMFD: in the first epoch a batch still reads its neighbour's random rows from before their
    update (a lag whose activation is positive over a zero frame is information), so W is compared from
    the second epoch on."""
    silence = torch.zeros(40, 12, dtype=torch.float64)
    W0 = torch.rand((12, 3) if T is None else (12, 3, T), generator=gen, dtype=torch.float64) + 0.1
    m = MiniBatchMU(3, solver=solver, beta=beta, batch_size=10, generator=1, T=T)
    m.fit(silence, W=W0, max_epochs=1, tol=0)
    assert (m.H == 0).all()
    if T is None:
        assert torch.equal(m.W, W0)
    W1 = m.W.clone()
    m.fit(silence, max_epochs=4, tol=0, resume=True)
    assert torch.equal(m.W, W1)
    m.partial_fit(silence[:10])
    assert torch.equal(m.W, W1)


@pytest.mark.parametrize("T", (None, 4))
@pytest.mark.parametrize("beta", (1.0, 2.0))
@pytest.mark.parametrize("solver", SOLVERS)
def test_a_silent_batch_does_not_wipe_the_templates(gen, solver, beta, T):
    """Oracle: the full divergence on rank-3 data whose first batch (visited first, cyclic order) is
    digital silence: it still drops 5x over 30 epochs and no template is zero (a zero step there wiped
    every template of ``asg_mu`` at the first batch)."""
    X = low_rank(gen, 100, 16, 3) if T is None else convolutive(gen, 100, 16, 3, T)
    X = torch.cat([torch.zeros(20, 16, dtype=X.dtype), X])
    m = MiniBatchMU(3, solver=solver, beta=beta, batch_size=20, order="cyclic", generator=2, T=T)
    m.fit(X, max_epochs=30, tol=0, callback=lambda epoch, loss: None)
    losses = [v for _, v in m.losses]
    assert losses[-1] < losses[0] / 5
    W = m.W if T is None else m.W.sum(-1)
    assert (W.sum(0) > 0).all() and torch.isfinite(m.W).all()


def _patient_stop_epoch(losses, tol, patience):
    """Slow reference of the documented patient rule on a list of (epoch, loss): the epoch it stops at."""
    e = [np.sqrt(2 * v) for _, v in losses]
    best, waited = e[0], 0
    for k in range(1, len(e)):
        waited = 0 if (best - e[k]) / e[0] >= tol else waited + 1
        best = min(best, e[k])
        if waited >= patience:
            return losses[k][0]
    return None


@pytest.mark.parametrize("solver", ["asg_mu", "gsg_mu", "asag_mu", "gsag_mu"])
def test_stochastic_solvers_stop_by_the_patient_rule(gen, solver):
    """Oracle: a slow reference of the documented rule applied to the recorded losses: the default
    (PATIENCE) and an explicit patience stop exactly where it says; the rule is not the first rise."""
    from nmfcore.minibatch import PATIENCE

    X = low_rank(gen, 120, 16, 3)
    for patience, tol in ((None, 1e-3), (2, 1e-2)):
        m = MiniBatchMU(3, solver=solver, batch_size=20, generator=4)
        m.fit(X, max_epochs=200, tol=tol, patience=patience)
        want = _patient_stop_epoch(m.losses, tol, patience or PATIENCE)
        assert want is not None and m.epoch == want < 200
    assert m.epoch > 2


def test_mu_batch_keeps_the_monotone_rule_and_patience_is_checked(gen):
    """Oracle: path equivalence: mu_batch's default is the relative-decrease rule, which patience=1 equals
    on its non-increasing loss; patience < 1 raises naming the value."""
    X = low_rank(gen, 120, 16, 3)
    runs = [MiniBatchMU(3, solver="mu_batch", batch_size=20, generator=4).fit(X, max_epochs=300, tol=1e-3, **kw)
            for kw in ({}, {"patience": 1})]
    assert runs[0].epoch == runs[1].epoch < 300 and runs[0].losses == runs[1].losses
    with pytest.raises(ParameterError, match="patience=0"):
        MiniBatchMU(3, batch_size=20).fit(X, patience=0)


# ------------------------------------------------------------------ the wrappers
def test_solver_functions_pass_every_argument(gen):
    """Oracle: the class called with the same arguments."""
    X = low_rank(gen, 30, 8, 2)
    a = asag_mu(X, 2, beta=1.5, batch_size=7, order="cyclic", forget=0.8, generator=3, max_epochs=3, tol=0)
    b = MiniBatchMU(2, solver="asag_mu", beta=1.5, batch_size=7, order="cyclic", forget=0.8, generator=3)
    b.fit(X, max_epochs=3, tol=0)
    assert torch.equal(a.W, b.W) and a.solver == "asag_mu" and a.forget == 0.8
    assert mu_batch(X, 2, max_epochs=1, tol=0, generator=0).solver == "mu_batch"


def test_callback_counts_epochs_and_stops(gen):
    X = low_rank(gen, 30, 8, 2)
    seen = []
    m = MiniBatchMU(2, batch_size=10, generator=0)
    m.fit(X, max_epochs=10, tol=0, check_every=2, callback=lambda e, loss: seen.append(e) or e >= 4)
    assert seen == [0, 2, 4] and m.epoch == 4


def test_batch_terms_equal_autograd(gen):
    """Oracle: autograd's gradient is pos - neg (beta = 1 gives pos as a broadcast row)."""
    X = low_rank(gen, 6, 5, 2)
    W, H = factors(gen, 6, 5, 2)
    for which in ("W", "H"):
        Wg, Hg = W.clone().requires_grad_(), H.clone().requires_grad_()
        div.beta_divergence(X, Hg @ Wg.t(), 1).backward()
        neg, pos = batch_terms(which, X, W, H, 1)
        torch.testing.assert_close(pos - neg, Wg.grad if which == "W" else Hg.grad)


# ------------------------------------------------------------------ several processes
def _spawn(tmp_path, fail_rank: int, timeout: float = 120):
    ctx = torch.multiprocessing.get_context("spawn")
    out = tmp_path / "out"
    out.mkdir()
    init = tmp_path / "init"
    procs = [ctx.Process(target=mw.worker, args=(r, 2, str(init), str(out), fail_rank)) for r in range(2)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + timeout
    for p in procs:
        p.join(max(deadline - time.monotonic(), 1))
    alive = [p.pid for p in procs if p.is_alive()]
    for p in procs:
        if p.is_alive():
            p.kill()
    assert not alive, f"processes {alive} hung"
    return [torch.load(out / f"{r}.pt", weights_only=False) for r in range(2)]


def test_two_gloo_processes_equal_one_process(tmp_path):
    """Oracle: a one-process fit of the same frames in the same order: batch j of the one process holds
    batch j of both processes (shuffled order, same generator seed), every solver, 3 epochs, float64; and the
    full-batch MultiplicativeUpdates of the solver seam with DataParallel as its hook."""
    results = _spawn(tmp_path, fail_rank=-1)
    for r in results:
        assert "ok" in r, r.get("trace")
    V, W, H = mw.data(2)
    ref = mw.fit_all(V, W, H, mw.BATCH * 2, order="shuffle")
    ref["full-batch hook"] = mw.full_batch(V, W, H)
    for rank, r in enumerate(results):
        rows = mw.shard_rows(rank, 2)
        for solver in SOLVERS + ("full-batch hook",):
            Wp, Hp = r["ok"][solver]
            torch.testing.assert_close(Wp, ref[solver][0], msg=f"{solver} W on process {rank}")
            torch.testing.assert_close(Hp, ref[solver][1][rows], msg=f"{solver} H on process {rank}")


def test_failing_process_stops_the_other(tmp_path):
    """Oracle: the other process raises DistributedError (not a hang) when one fails on a NaN chunk."""
    start = time.monotonic()
    results = _spawn(tmp_path, fail_rank=1, timeout=90)
    assert results[1]["type"] == "ParameterError" and "V must contain only finite values" in results[1]["error"]
    assert results[0].get("type") == "DistributedError", results[0]
    assert "another process failed" in results[0]["error"]
    assert time.monotonic() - start < 90
