r"""Mini-batch multiplicative updates for NMF with the beta-divergence.

The model and its layout are those of :class:`nmfcore.nmf.NMF`: the data
``V`` holds one frame per row, :math:`V \approx H W^T`; with ``T`` those of
:class:`nmfcore.nmf.NMFD` (frame ``j`` is :math:`\sum_t W[:, :, t] H[j - t]`),
a batch reading the ``T - 1`` frames and activations around it. A fit visits the
frames in mini-batches (consecutive blocks of rows): each batch updates its
own rows of ``H`` with ``W`` fixed, and gives the negative and positive parts
of the gradient of its divergence with respect to ``W``. The solvers differ
in what they do with W's parts ([1]_):

=============  ===========================================================
``mu_batch``   sum them over the epoch, update ``W`` once per epoch
               (equal to full-batch multiplicative updates, H then W)
``asg_mu``     update ``W`` after every batch from that batch's parts
``gsg_mu``     update ``W`` once per epoch from one random batch's parts
``asag_mu``    stochastic average gradient: keep every batch's last parts
               (the negative part times the ``W`` it was computed at),
               update the running sums, update ``W`` after every batch
``gsag_mu``    the same running sums, updated from one random batch, ``W``
               once per epoch
=============  ===========================================================

Each update of a factor is the same three stages as nmfcore's full-batch
solvers: the parts (:func:`batch_terms`, the pull-backs of
:func:`nmfcore.divergence.mu_terms` through the matrix product, or through
:class:`nmfcore.operators.Deconvolution` for NMFD), a hook on
W's parts (accumulation, the running sums of the average gradient, the
all-reduce of :mod:`nmfcore.distributed`), and
:func:`nmfcore.divergence.multiplicative_step`. Every beta case comes from
:mod:`nmfcore.divergence`.

The module also gives the update functions of the reference implementation
of [1]_ (:func:`gradient_h`, :func:`gradient_h_mu`, :func:`gradient_w`,
:func:`gradient_w_mu`, :func:`mu_update_h`, :func:`mu_update`,
:func:`update_grad_w`) with their meaning. Their docstrings there call
beta = 1 Itakura-Saito; in nmfcore (and here) **beta = 0 is Itakura-Saito,
beta = 1 generalised Kullback-Leibler, beta = 2 half the squared Euclidean
distance**.

References
----------
.. [1] R. Serizel, S. Essid and G. Richard, "Mini-batch stochastic approaches
   for accelerated multiplicative updates in nonnegative matrix factorisation
   with beta-divergence", IEEE MLSP 2016.
.. [2] C. Févotte and J. Idier, "Algorithms for nonnegative matrix
   factorization with the beta-divergence", Neural Computation 23(9), 2011.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Iterator, Optional

import numpy as np
import torch
from torch import Tensor

from . import divergence as div
from ._fit import run_iterations
from ._validation import (check_beta, check_beta_for_data, check_fraction, check_nonnegative_float,
                          check_positive_int, check_rank, make_generator, value_range)
from ._workspace import Workspace
from .exceptions import ParameterError
from .operators import Deconvolution, MatrixProduct
# the over-relaxation factors of full-batch MU (certified per coordinate by divergence.multiplicative_step)
from .solvers.mu import MU_RELAX as _RELAX

_OPERATOR = MatrixProduct()  # NMF's operator: batch_terms and the NMF layout reach the data through it

__all__ = [
    "SOLVERS",
    "PATIENCE",
    "batch_terms",
    "gradient_h",
    "gradient_h_mu",
    "gradient_w",
    "gradient_w_mu",
    "mu_update_h",
    "mu_update",
    "update_grad_w",
    "MiniBatchMU",
    "mu_batch",
    "asg_mu",
    "gsg_mu",
    "asag_mu",
    "gsag_mu",
]

SOLVERS = ("mu_batch", "asg_mu", "gsg_mu", "asag_mu", "gsag_mu")
#: the stochastic solvers' default ``patience`` in :meth:`MiniBatchMU.fit`: checks of the loss in a row
#: without a new best by ``tol`` before the fit stops
PATIENCE = 5
_EVERY_BATCH = ("asg_mu", "asag_mu")  # W after every batch
_GREEDY = ("gsg_mu", "gsag_mu")  # W once per epoch from one random batch
_AVERAGE = ("asag_mu", "gsag_mu")  # running sums of every batch's last parts


# ------------------------------------------------------------------ the parts
def batch_terms(which: str, X: Tensor, W: Tensor, H: Tensor, beta: float, *,
                workspace: Optional[Workspace] = None):
    r"""``(neg, pos)``: the parts of the gradient of :math:`d_\beta(X | H W^T)` with respect to ``which``.

    The output-space terms of :func:`nmfcore.divergence.mu_terms` pulled back
    through the matrix product (:class:`nmfcore.operators.MatrixProduct`'s
    ``terms``, with its closed forms), ``grad = pos - neg``:

    - ``which='H'``: ``neg = (X * Y**(beta-2)) @ W``, ``pos = Y**(beta-1) @ W``
    - ``which='W'``: ``neg = (X * Y**(beta-2)).T @ H``, ``pos = Y**(beta-1).T @ H``

    with ``Y = H @ W.T`` (floored at the dtype's epsilon where a power is
    negative). For beta = 1 ``pos`` is the column sum of the other factor, of
    shape ``(R,)``, which broadcasts. :class:`MiniBatchMU` (without ``T``)
    takes its batches' parts from the same operator.

    Parameters
    ----------
    which : {'W', 'H'}
    X : torch.Tensor [shape=(N, C)]
        A batch of frames.
    W : torch.Tensor [shape=(C, R)]
    H : torch.Tensor [shape=(N, R)]
        The batch's activations.
    beta : float
    workspace : nmfcore._workspace.Workspace, optional, keyword-only
        Scratch buffers reused across calls (a new one if omitted).

    Returns
    -------
    neg, pos : torch.Tensor
        Of ``which``'s shape (``pos`` may be ``(R,)``); new tensors.

    Examples
    --------
    >>> import torch
    >>> X, W, H = torch.full((4, 3), 2.0), torch.ones(3, 2), torch.ones(4, 2)
    >>> neg, pos = batch_terms("W", X, W, H, 2)
    >>> neg[0], pos[0]
    (tensor([8., 8.]), tensor([8., 8.]))
    """
    return _OPERATOR.terms(which, X, W, H, beta, Workspace() if workspace is None else workspace)


# ------------------------------------------------------- the seed's functions
def gradient_h_mu(X: Tensor, W: Tensor, H: Tensor, beta: float) -> Tensor:
    r"""Positive and negative parts of the gradient of :math:`d_\beta(X | H W^T)` with respect to ``H``.

    As in [1]_'s ``gradient_h_mu``: a stack ``[pos, neg]`` with
    ``grad = pos - neg``, ``pos = (H W^T)^{beta-1} W`` and
    ``neg = (X * (H W^T)^{beta-2}) W`` (beta = 0 Itakura-Saito, 1 Kullback-Leibler,
    2 Euclidean in nmfcore's convention).

    Shape
    -----
    - X: :math:`(N, C)`; W: :math:`(C, R)`; H: :math:`(N, R)`
    - returns :math:`(2, N, R)`

    Examples
    --------
    >>> import torch
    >>> X, W, H = torch.ones(4, 3), torch.ones(3, 2), torch.ones(4, 2)
    >>> gradient_h_mu(X, W, H, 1)[:, 0]
    tensor([[3.0000, 3.0000],
            [1.5000, 1.5000]])
    """
    neg, pos = batch_terms("H", X, W, H, beta)
    return torch.stack([pos.expand_as(neg), neg])


def gradient_h(X: Tensor, W: Tensor, H: Tensor, beta: float) -> Tensor:
    r"""The seed's ``gradient_h``: ``neg - pos``, minus the gradient of :math:`d_\beta(X | H W^T)` in ``H``.

    [1]_'s reference code returns the descent direction (for beta = 2,
    ``X W - H W^T W``); this function keeps that sign.

    Shape
    -----
    X: :math:`(N, C)`; W: :math:`(C, R)`; H and the result: :math:`(N, R)`

    Examples
    --------
    >>> import torch
    >>> X, W, H = torch.full((4, 3), 2.0), torch.ones(3, 2), torch.ones(4, 2)
    >>> gradient_h(X, W, H, 2)[0]
    tensor([0., 0.])
    """
    pos, neg = gradient_h_mu(X, W, H, beta)
    return neg - pos


def gradient_w_mu(X: Tensor, W: Tensor, H: Tensor, beta: float) -> Tensor:
    r"""Positive and negative parts of the gradient of :math:`d_\beta(X | H W^T)` with respect to ``W``.

    A stack ``[pos, neg]``, ``pos = ((H W^T)^{beta-1})^T H``,
    ``neg = (X * (H W^T)^{beta-2})^T H`` ([1]_'s ``gradient_w_mu``).

    Shape
    -----
    - X: :math:`(N, C)`; W: :math:`(C, R)`; H: :math:`(N, R)`
    - returns :math:`(2, C, R)`

    Examples
    --------
    >>> import torch
    >>> X, W, H = torch.ones(4, 3), torch.ones(3, 2), torch.ones(4, 2)
    >>> gradient_w_mu(X, W, H, 2)[:, 0]
    tensor([[8., 8.],
            [4., 4.]])
    """
    neg, pos = batch_terms("W", X, W, H, beta)
    return torch.stack([pos.expand_as(neg), neg])


def gradient_w(X: Tensor, W: Tensor, H: Tensor, beta: float) -> Tensor:
    r"""The seed's ``gradient_w``: ``neg - pos``, minus the gradient of :math:`d_\beta(X | H W^T)` in ``W``.

    Shape
    -----
    X: :math:`(N, C)`; H: :math:`(N, R)`; W and the result: :math:`(C, R)`

    Examples
    --------
    >>> import torch
    >>> X, W, H = torch.full((4, 3), 2.0), torch.ones(3, 2), torch.ones(4, 2)
    >>> gradient_w(X, W, H, 1)[0]
    tensor([0., 0.])
    """
    pos, neg = gradient_w_mu(X, W, H, beta)
    return neg - pos


def mu_update(factor: Tensor, gradient_pos: Tensor, gradient_neg: Tensor, *, beta: float = 1.0) -> Tensor:
    r"""Multiplicative update of ``factor`` from its gradient parts, in place; returns ``factor``.

    ``factor *= (gradient_neg / gradient_pos) ** gamma`` with
    ``gamma = mu_exponent(beta)`` (:func:`nmfcore.divergence.multiplicative_step`;
    no step where the ratio is 0 / 0 or x / 0). For beta in [0, 2]
    (the default beta = 1 included) ``gamma = 1``: [1]_'s ``mu_update``
    exactly; outside, the exponent of [2]_ keeps the objective from
    increasing. ``gradient_neg`` is not modified.

    Examples
    --------
    >>> import torch
    >>> mu_update(torch.ones(2), torch.tensor([2.0, 4.0]), torch.tensor([1.0, 1.0]))
    tensor([0.5000, 0.2500])
    """
    return div.multiplicative_step(factor, gradient_neg.clone(), gradient_pos, beta)


def mu_update_h(X: Tensor, W: Tensor, H: Tensor, beta: float):
    r"""Update ``H`` in place by the multiplicative rule; returns ``(H, gradient_h_mu(X, W, H_old, beta))``.

    [1]_'s ``mu_update_h``, with the exponent of :func:`mu_update` (1 for beta in [0, 2]).

    Examples
    --------
    >>> import torch
    >>> X, W, H = torch.full((4, 3), 2.0), torch.ones(3, 2), torch.ones(4, 2)
    >>> H, parts = mu_update_h(X, W, H, 2)
    >>> H[0], parts.shape
    (tensor([1., 1.]), torch.Size([2, 4, 2]))
    """
    parts = gradient_h_mu(X, W, H, beta)
    mu_update(H, parts[0], parts[1], beta=beta)
    return H, parts


def update_grad_w(grad: Tensor, grad_old: Tensor, grad_new: Tensor) -> Tensor:
    r"""The running gradient of the stochastic average gradient: ``grad - grad_old + grad_new``.

    ``grad`` is the sum of every batch's last gradient (or gradient part),
    ``grad_old`` the one a batch stored before, ``grad_new`` its new one
    ([1]_'s ``update_grad_w``). Returns a new tensor.

    Examples
    --------
    >>> import torch
    >>> update_grad_w(torch.tensor([5.0]), torch.tensor([2.0]), torch.tensor([3.0]))
    tensor([6.])
    """
    return grad - grad_old + grad_new


# ------------------------------------------------------------------ the data
def _as_matrix(x, name: str, like: Optional[Tensor]) -> Tensor:
    """A chunk as a 2-D floating tensor (numpy arrays, memory maps and DataLoader items included)."""
    if isinstance(x, (tuple, list)) and len(x) == 1:  # a DataLoader over a TensorDataset yields [batch]
        x = x[0]
    if isinstance(x, np.ndarray):
        # a read-only memory map is copied (one batch): torch warns on read-only arrays
        x = torch.from_numpy(np.array(x) if not x.flags.writeable else np.ascontiguousarray(x))
    if not isinstance(x, Tensor):
        raise ParameterError(f"{name} must be a torch.Tensor or a numpy array, got {type(x).__name__}")
    if x.ndim != 2:
        raise ParameterError(f"{name} must be a matrix (frames, features), got shape {tuple(x.shape)}")
    if like is not None:
        x = x.to(device=like.device, dtype=like.dtype)
    return x


class _Frames:
    """The frames of V as batches: a tensor or array cut into ``batch_size`` rows, or an iterable of chunks.

    Each batch is checked when it is read (finite, non-negative, the same
    number of features, beta <= 0 needs positive data), with a message naming
    the batch or chunk; a tensor already in memory is checked once.
    """

    def __init__(self, data, batch_size: int, beta: float, like: Optional[Tensor]):
        self.beta = beta
        self.like = like
        self.features: Optional[int] = None
        self.sizes: Optional[list] = None
        if callable(data) and not isinstance(data, (Tensor, np.ndarray)):
            self.factory = data
            self.array = None
        elif isinstance(data, (Tensor, np.ndarray)):
            if data.ndim != 2:
                raise ParameterError(f"V must be a matrix (frames, features), got shape {tuple(data.shape)}")
            if data.shape[0] == 0:
                raise ParameterError("V has no frames (shape (0, ...)): nothing to fit")
            self.array = data
            self.factory = None
            n = data.shape[0]
            self.sizes = [min(batch_size, n - i) for i in range(0, n, batch_size)]
            self.features = data.shape[1]
            if isinstance(data, Tensor):
                vmin, _ = value_range(data, "V")
                check_beta_for_data(beta, vmin)
                self.checked = True
            else:
                self.checked = False
        elif isinstance(data, Iterable):
            self.array = None
            if iter(data) is data:
                raise ParameterError("V is a one-shot iterator (a generator?) but a fit reads the data several "
                                     "times: pass a list, a DataLoader or a function returning a fresh iterator")
            self.factory = lambda: data
        else:
            raise ParameterError(f"V must be a tensor, an array, an iterable of chunks or a function returning "
                                 f"one, got {type(data).__name__}")
        self.batch_size = batch_size

    @property
    def random_access(self) -> bool:
        return self.array is not None

    def start(self, b: int) -> int:
        """The first frame of batch ``b`` (arrays)."""
        return b * self.batch_size

    def rows(self, i: int, j: int) -> Tensor:
        """Frames ``[i, j)`` of an array, converted (and checked unless the whole array was)."""
        X = self.array[i:j]
        if self.checked:
            return X.to(device=self.like.device, dtype=self.like.dtype) if self.like is not None else X
        return self._check(X, f"V[{i}:{j}]")

    def batches(self, order=None) -> Iterator[tuple[int, Tensor]]:
        """``(index, batch)`` in ``order`` (arrays) or in the iterable's order."""
        if self.array is not None:
            for b in (range(len(self.sizes)) if order is None else order):
                b = int(b)
                i = self.start(b)
                j = i + self.sizes[b]
                if self.checked:
                    yield b, self.rows(i, j)
                else:
                    yield b, self._check(self.array[i:j], f"V[{i}:{j}] (batch {b})")
            return
        sizes = []
        for k, chunk in enumerate(self.factory()):
            X = self._check(chunk, f"chunk {k}")
            if self.sizes is not None and (k >= len(self.sizes) or X.shape[0] != self.sizes[k]):
                raise ParameterError(f"chunk {k} has {X.shape[0]} frames, but in the first epoch it had "
                                     f"{self.sizes[k] if k < len(self.sizes) else 'none'}: the iterable must "
                                     "yield the same chunks in the same order every epoch")
            sizes.append(X.shape[0])
            yield k, X
        if not sizes:
            raise ParameterError("V is an empty iterable: no chunk to fit")
        if self.sizes is None:
            self.sizes = sizes
        elif len(sizes) != len(self.sizes):
            raise ParameterError(f"the iterable yielded {len(sizes)} chunks, but {len(self.sizes)} in the first "
                                 "epoch: it must yield the same chunks every epoch")

    def _check(self, chunk, name: str) -> Tensor:
        X = _as_matrix(chunk, name, self.like)
        if X.shape[0] == 0:
            raise ParameterError(f"{name} has no frames (shape {tuple(X.shape)})")
        if self.features is None:
            self.features = X.shape[1]
        elif X.shape[1] != self.features:
            raise ParameterError(f"{name} has {X.shape[1]} features (columns) but the data before it has "
                                 f"{self.features}: every chunk must have the same number of features")
        vmin, _ = value_range(X, name)
        try:
            check_beta_for_data(self.beta, vmin)
        except ParameterError as e:
            raise ParameterError(f"{name}: {e}") from None
        if self.like is None:
            self.like = X
        return X


# ------------------------------------------------------------------ the layouts
class _Batch:
    """One batch as a solver sees it: its frames ``X`` (n, C), its own rows ``H`` of the activations (a
    stored tensor, updated in place) and, for NMFD, its context: ``back``, the ``T - 1`` frames before it,
    and ``before`` / ``after``, the ``T - 1`` rows of the neighbouring batches' activations around its own
    (``before_h``: ``before`` as H's update reads it, which may be the rows before their own update)."""

    __slots__ = ("index", "X", "H", "back", "before", "before_h", "after", "last")

    def __init__(self, index: int, X: Tensor, H: Tensor, back=None, before=None, after=None, last=True,
                 before_h=None):
        self.index, self.X, self.H, self.last = index, X, H, last
        self.back, self.before, self.after = back, before, after
        self.before_h = before if before_h is None else before_h


class _Layout:
    """How a batch's parts are formed (the layouts below); ``h_terms`` yields H's parts for ``steps``
    updates in a row, each after the caller applied the previous one."""

    def terms(self, which: str, batch: _Batch, W: Tensor, beta: float, workspace: Workspace):
        raise NotImplementedError

    def h_terms(self, batch: _Batch, W: Tensor, beta: float, workspace: Workspace, steps: int):
        for _ in range(steps):
            yield self.terms("H", batch, W, beta, workspace)


class _Rows(_Layout):
    r"""NMF's layout, :math:`V \approx H W^T`: a batch owns the rows of ``H`` of its own frames, and its
    parts and loss are :class:`~nmfcore.operators.MatrixProduct`'s on its frames (closed forms included)."""

    T = None
    context = 0
    operator = _OPERATOR

    def template_shape(self, features: int, rank: int) -> tuple:
        return (features, rank)

    def own_rows(self, k: int, n: int) -> int:
        return n

    def terms(self, which: str, batch: _Batch, W: Tensor, beta: float, workspace: Workspace):
        return self.operator.terms(which, batch.X, W, batch.H, beta, workspace)

    def h_terms(self, batch: _Batch, W: Tensor, beta: float, workspace: Workspace, steps: int):
        if beta != 2 or steps == 1:
            yield from super().h_terms(batch, W, beta, workspace, steps)
            return
        # beta = 2: neg = X W and the Gram matrix W^T W stay while W is fixed, so every further step costs
        # one product with the R x R Gram matrix, not a pass over the batch's frames
        neg, gram = self.operator.gram_terms("H", batch.X, W, batch.H, workspace)
        for k in range(steps):
            yield (neg.clone() if k < steps - 1 else neg), batch.H @ gram

    def loss(self, batch: _Batch, W: Tensor, beta: float, workspace: Workspace) -> Tensor:
        return self.operator.loss(batch.X, W, batch.H, beta, workspace)


class _Segments(_Layout):
    r"""NMFD's layout: frame ``j`` is :math:`\sum_t W[:, :, t]\, H[j - t]` (:class:`nmfcore.nmf.NMFD`'s
    model, frames in rows: ``V (N, C)``, ``W (C, R, T)``, ``H (N - T + 1, R)``).

    A batch owns the rows of ``H`` that *start* at its frames: for the batch of frames ``[a, b)``, the
    rows ``[a - T + 1, b - T + 1)`` (the first batch: ``[0, b - T + 1)``), so that every batch but the
    first owns as many rows as it has frames and the last ``T - 1`` frames of the data need no row of
    their own. Those rows reach the frames ``[a - T + 1, b)``: the batch's ``T - 1`` frames before it
    (``back``) and its own. Then

    - ``H``'s parts: the divergence of those frames, reconstructed from the batch's rows and the
      ``T - 1`` rows before and after them (``before``, ``after``), pulled back to its own rows: exactly
      their part of the gradient of the full divergence;
    - ``W``'s parts and the loss: the divergence of the frames ``[a - T + 1, b - T + 1)`` (the last
      batch: up to the end), reconstructed from ``before`` and its own rows. These frame sets partition
      the data, so W's parts summed over the batches are those of the whole data.

    Both reconstruct a window with :class:`~nmfcore.operators.Deconvolution` and pull back its terms
    zeroed outside those frames (the frames at the window's edges lack some of their rows).
    """

    operator = Deconvolution()

    def __init__(self, T: int):
        self.T = T
        self.context = T - 1

    def template_shape(self, features: int, rank: int) -> tuple:
        return (features, rank, self.T)

    def own_rows(self, k: int, n: int) -> int:
        return n - self.context if k == 0 else n

    def _window(self, which: str, batch: _Batch):
        """The window's rows as NMFD's ``(1, R, L)``, its frames from the first own row on (``back`` and
        ``X``), where those frames start in the window's reconstruction, and how many of them count."""
        m = batch.H.shape[0]
        if which == "H":  # every frame the own rows reach
            rows, count = (batch.before_h, batch.H, batch.after), m + self.context
        else:  # the frames the own rows start at (and the tail after the last row)
            rows, count = (batch.before, batch.H), m + (self.context if batch.last else 0)
        Hw = torch.cat(rows).t().unsqueeze(0)
        frames = torch.cat([batch.back, batch.X]) if batch.back.shape[0] else batch.X
        return Hw, frames[:count].t().unsqueeze(0), batch.before.shape[0]

    def terms(self, which: str, batch: _Batch, W: Tensor, beta: float, workspace: Workspace):
        Hw, Vs, p = self._window(which, batch)
        Y = self.operator.reconstruct(Hw, W)
        k = Vs.shape[2]
        neg_s, pos_s = div.mu_terms(Vs, Y[:, :, p:p + k], beta)
        # here G = [V Y**(beta-2), Y**(beta-1)] on the counted frames, 0 elsewhere; pulled back through
        # the convolution (operators.Deconvolution.pull: one product for both)
        G = Y.new_zeros((2,) + tuple(Y.shape))
        G[0, :, :, p:p + k] = neg_s
        G[1, :, :, p:p + k] = 1.0 if pos_s is None else pos_s
        neg, pos = self.operator.pull(which, G, W, Hw, workspace)
        if which == "W":
            return neg, pos
        m = batch.H.shape[0]
        return neg[0, :, p:p + m].t(), pos[0, :, p:p + m].t()

    def loss(self, batch: _Batch, W: Tensor, beta: float, workspace: Workspace) -> Tensor:
        Hw, Vs, p = self._window("W", batch)
        Y = self.operator.reconstruct(Hw, W)
        return div.beta_divergence(Vs, Y[:, :, p:p + Vs.shape[2]], beta)


# ------------------------------------------------------------------ the solver
class MiniBatchMU:
    r"""NMF by mini-batch multiplicative updates ([1]_): :math:`V \approx H W^T`, frames in rows.

    Minimises :math:`\sum_b d_\beta(V_b \,|\, H_b W^T)` over the batches ``b`` of
    frames (the full divergence) with one of the solvers of :data:`SOLVERS`
    (see the module). ``H_b`` takes one multiplicative update per visit of
    its batch, with the exponent of :func:`nmfcore.divergence.mu_exponent`.
    ``mu_batch`` with ``relax=True`` over-relaxes its steps as
    :meth:`nmfcore.nmf.NMF.fit` does (certified not to increase the
    objective with the other factor fixed: its parts are those of the whole
    data). The stochastic solvers take plain steps: with over-relaxed steps
    for ``H_b`` alone (each certified for its batch), ``asg_mu`` diverged
    (the loss rose 6x in 30 epochs on rank-3 data, beta = 1). With
    ``relax=False`` every step is plain and
    ``mu_batch`` equals plain full-batch MU with H updated before W.

    The data may be a tensor, a numpy array (a ``np.memmap`` is read one batch
    at a time), an iterable of chunks (a list, a ``torch.utils.data.DataLoader``
    without shuffling) or a function returning a fresh iterator of chunks
    (e.g. the STFT of a long file computed block by block): then each chunk is
    one batch, visited in the iterable's order every epoch, and only ``H``
    (frames x rank) and ``W`` stay in memory.

    **NMFD** (``T`` given): ``W`` is ``(C, R, T)`` and ``H`` ``(N - T + 1, R)``,
    :class:`nmfcore.nmf.NMFD`'s model with frames in rows (its ``V[0].T``,
    ``H[0].T``). A batch owns the rows of ``H`` that start at its frames and
    reads the ``T - 1`` frames before it and the ``T - 1`` rows on either side
    (the neighbours' rows before it as they were before their update in this
    epoch), so that its H update is exactly its rows' part of the full
    gradient and W's parts summed over the batches are the full ones: visited
    in order (``order='cyclic'`` or an iterable), ``mu_batch`` equals
    full-batch NMFD MU; shuffled, a batch's W parts may see a neighbour's rows
    before their update (its W step is then not over-relaxed). Every batch
    but the last needs at least ``T`` frames (``batch_size >= T``; an
    iterable's chunks likewise). Not with ``parallel``.

    Parameters
    ----------
    rank : int
    solver : {'mu_batch', 'asg_mu', 'gsg_mu', 'asag_mu', 'gsag_mu'}, default 'asag_mu'
    beta : float, default 1
        0 Itakura-Saito, 1 Kullback-Leibler, 2 Euclidean (nmfcore's convention;
        the reference code of [1]_ calls beta = 1 Itakura-Saito).
    batch_size : int, default 1024
        Frames per batch for a tensor or array (an iterable's chunks are its batches).
    order : {None, 'shuffle', 'cyclic'}
        Order of the batches in an epoch; ``None`` shuffles a tensor or array
        and keeps an iterable's order (the only one it has).
    forget : float in (0, 1], default 1
        Forgetting factor of the average-gradient solvers: a batch's stored
        parts are weighted by ``forget ** age``, age counting the updates of
        the running sums since they were stored; 1 is the plain average
        gradient ([1]_), and :meth:`partial_fit` uses it on a stream.
    generator : torch.Generator or int, optional
        Source of all randomness (initial values, shuffling, the greedy
        solvers' batch); its state is part of :meth:`state_dict`.
    relax : bool, default True
        Over-relax ``mu_batch``'s steps (see above), as
        :meth:`nmfcore.nmf.NMF.fit` does (about half the iterations).
    parallel : nmfcore.distributed.DataParallel, optional
        Fit on several processes (each with its shard of frames): W's parts
        and the loss are all-reduced, ``W`` starts from process 0's.
    T : int, optional
        Kernel length: fit NMFD instead of NMF (see above); None: NMF.
    h_steps : int, default 1
        Multiplicative updates of a batch's activations per visit (``W``
        fixed). At beta = 2 (NMF) the steps after the first reuse ``X W`` and
        ``W^T W``: each costs a product with an R x R matrix.

    Attributes
    ----------
    W : torch.Tensor [shape=(C, R) or (C, R, T)]
    H : torch.Tensor [shape=(N, R) or (N - T + 1, R)]
        The activations of the frames fitted (concatenated over the batches).
    epoch : int
        Epochs run so far.
    losses : list of (int, float)
        ``(epoch, loss)`` at every loss evaluation of :meth:`fit`: with a
        ``callback``, ``tol > 0`` or ``verbose`` (as :meth:`nmfcore.nmf.NMF.fit`,
        the loss is not evaluated when nothing reads it).

    Shape
    -----
    - V: :math:`(N, C)` (frames, features); a spectrogram ``S`` (freq, frames) is ``S.T``
    - W: :math:`(C, R)`; H: :math:`(N, R)`
    - with ``T``: W :math:`(C, R, T)`; H :math:`(N - T + 1, R)`

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> V = torch.rand(200, 30, generator=g)
    >>> m = MiniBatchMU(4, solver="asag_mu", beta=1, batch_size=50, generator=0)
    >>> m = m.fit(V, max_epochs=5, tol=1e-9)
    >>> m.W.shape, m.H.shape, m.epoch
    (torch.Size([30, 4]), torch.Size([200, 4]), 5)
    >>> m.losses[-1][1] < m.losses[0][1]
    True

    NMFD, batches of 40 frames with a 5-frame kernel:

    >>> d = MiniBatchMU(4, T=5, solver="asg_mu", batch_size=40, generator=0).fit(V, max_epochs=5, tol=1e-9)
    >>> d.W.shape, d.H.shape
    (torch.Size([30, 4, 5]), torch.Size([196, 4]))
    >>> d.losses[-1][1] < d.losses[0][1]
    True
    """

    def __init__(self, rank: int, *, solver: str = "asag_mu", beta: float = 1.0, batch_size: int = 1024,
                 order: Optional[str] = None, forget: float = 1.0, relax: bool = True, generator=None,
                 parallel=None, T: Optional[int] = None, h_steps: int = 1):
        self.rank = check_rank(rank)
        if solver not in SOLVERS:
            raise ParameterError(f"solver={solver!r} must be one of {SOLVERS}")
        self.solver = solver
        self.beta = check_beta(beta)
        self.batch_size = check_positive_int(batch_size, "batch_size")
        if T is not None:
            T = check_positive_int(T, "T")
            if self.batch_size < T:
                raise ParameterError(f"batch_size={batch_size} must be at least T={T}: a batch reads the T - 1 "
                                     "frames and activations around it from its neighbours")
            if parallel is not None:
                raise ParameterError("parallel needs T=None: NMFD's shards would need the activations at "
                                     "the other processes' boundaries")
        self.T = T
        self.layout = _Rows() if T is None else _Segments(T)
        self.h_steps = check_positive_int(h_steps, "h_steps")
        if order not in (None, "shuffle", "cyclic"):
            raise ParameterError(f"order={order!r} must be None, 'shuffle' or 'cyclic'")
        self.order = order
        self.forget = check_fraction(forget, "forget", low_inclusive=False, high_inclusive=True)
        if not isinstance(relax, bool):
            raise ParameterError(f"relax={relax!r} must be True or False")
        self.relax = relax
        generator = make_generator(generator)
        if generator is None:
            generator = torch.Generator()
            generator.seed()
        self.generator = generator
        self.parallel = parallel
        self._ws = Workspace()  # scratch buffers of the operator (not part of the state)
        self._reset()

    def _reset(self):
        self.W: Optional[Tensor] = None
        self._H: list = []
        self.epoch = 0
        self.losses: list = []
        self.train_W = self.train_H = True
        # running sums of the average gradient, every batch's last parts, when they were stored
        self._sum: Optional[list] = None
        self._stored: list = []
        self._stored_at: list = []
        self._t = 0  # updates of the running sums so far
        self._old_tail = None  # NMFD: (batch, its last T - 1 rows before its update in this pass)

    # ------------------------------------------------------------ the state
    @property
    def H(self) -> Optional[Tensor]:
        return torch.cat(self._H) if self._H else None

    def state_dict(self) -> dict:
        """Everything a fit needs to go on exactly where it stopped (tensors cloned).

        ``W``, the activations of every batch, the epoch, the running sums and
        per-batch parts of the average gradient, the loss history, the
        generator's state and the settings. Save it with ``torch.save`` (e.g.
        from a ``callback``) and continue with :meth:`load_state_dict` and
        ``fit(V, resume=True)``.
        """
        clone = lambda x: None if x is None else x.clone()  # noqa: E731
        return {
            "settings": {"rank": self.rank, "solver": self.solver, "beta": self.beta, "batch_size": self.batch_size,
                         "order": self.order, "forget": self.forget, "relax": self.relax, "T": self.T,
                         "h_steps": self.h_steps},
            "W": clone(self.W),
            "H": [h.clone() for h in self._H],
            "epoch": self.epoch,
            "losses": list(self.losses),
            "trainable": (self.train_W, self.train_H),
            "sum": None if self._sum is None else [clone(x) for x in self._sum],
            "stored": [None if s is None else [clone(x) for x in s] for s in self._stored],
            "stored_at": list(self._stored_at),
            "t": self._t,
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict) -> "MiniBatchMU":
        """Restore a :meth:`state_dict` (settings included); returns ``self``."""
        try:
            s = state["settings"]
            self.rank, self.solver, self.beta = s["rank"], s["solver"], s["beta"]
            self.batch_size, self.order, self.forget = s["batch_size"], s["order"], s["forget"]
            self.relax = s["relax"]
            self.T = s.get("T")
            self.h_steps = s.get("h_steps", 1)
            self.layout = _Rows() if self.T is None else _Segments(self.T)
            self.W = state["W"]
            self._H = list(state["H"])
            self.epoch = state["epoch"]
            self.losses = list(state["losses"])
            self.train_W, self.train_H = state["trainable"]
            # copies: the fit updates the running sums and stored parts in place
            self._sum = None if state["sum"] is None else [x.clone() for x in state["sum"]]
            self._stored = [None if p is None else [x.clone() for x in p] for p in state["stored"]]
            self._stored_at = list(state["stored_at"])
            self._t = state["t"]
            self.generator.set_state(state["generator"])
        except (KeyError, TypeError) as e:
            raise ParameterError(f"state is not a MiniBatchMU.state_dict(): missing or bad entry {e}") from None
        return self

    # ------------------------------------------------------------ the pieces
    def _reduce(self, neg: Tensor, pos: Tensor):
        """The hook between computing W's parts and using them: the all-reduce over processes (if any)."""
        if self.parallel is None:
            return neg, pos
        return self.parallel.sum_parts(neg, pos)

    def _average(self, b: int, neg: Tensor, pos: Tensor, keep: bool = True):
        """The stochastic average gradient's hook: running sums after batch ``b`` gave new parts of W.

        A batch stores its parts ``(W_b * neg_b, pos_b)``, the negative part times the ``W_b`` it was
        computed at (as scikit-learn's ``MiniBatchNMF`` keeps its numerator), and the running sums
        follow :func:`update_grad_w` on the forgotten terms,
        ``S <- forget * S - forget**(age + 1) * stored_b + new``, so that ``S`` is always
        ``sum_b forget**age_b * stored_b``. The step reads ``(S_neg / W, S_pos)``: for one batch that is
        ``(neg, pos)``; for several, every batch's ratio is taken from the ``W`` it was computed at.
        Multiplying the current ``W`` by the ratio of the raw stale sums re-applied the other batches'
        ratios at every step and compounded them: ``W`` reached 1e27 within 10 epochs on rank-3 data
        (tests/test_minibatch.py's decreasing-loss test).

        Returns new tensors (the step may overwrite them), clamped at 0: the sums are of non-negative
        parts, but the subtraction can leave rounding below zero (-1e-14 in float64 turned a template
        negative).
        """
        lam = self.forget
        W = self.W
        neg = neg * W
        if self._sum is None:
            self._sum = [torch.zeros_like(neg), torch.zeros_like(pos)]
        while keep and len(self._stored) <= b:
            self._stored.append(None)
            self._stored_at.append(0)
        old = self._stored[b] if keep else None
        age = self._t - self._stored_at[b] if old is not None else 0
        new_sum = self._sum
        for i, (S, x) in enumerate(zip(self._sum, (neg, pos))):
            # update_grad_w in place: the sums and stored parts live as long as the fit, and reallocating
            # them at every batch among the batch's large temporaries fragmented the C heap
            if lam != 1:
                S.mul_(lam)
            if old is not None:
                S.sub_(old[i] * lam ** (age + 1) if lam != 1 else old[i])
            S.add_(x)
        self._t += 1
        if keep:
            if old is None:
                self._stored[b] = [neg, pos.clone()]
            else:
                old[0].copy_(neg)
                old[1].copy_(pos)
            self._stored_at[b] = self._t
        tiny = torch.finfo(W.dtype).tiny
        return new_sum[0].clamp_min(0).div_(W.clamp_min(tiny)), new_sum[1].clamp_min(0)

    def _apply(self, which: str, X: Tensor, neg: Tensor, pos: Tensor, certified: bool = True):
        """The multiplicative step, over-relaxed where ``certified`` (the parts are a divergence's gradient
        parts at the current factors) and ``relax`` is on."""
        relax = _RELAX if certified and self.relax and self.solver == "mu_batch" else 1.0
        div.multiplicative_step(X, neg, pos, self.beta, relax=relax)

    def _h_step(self, batch: _Batch, steps: Optional[int] = None, keep_old: bool = False) -> None:
        """``steps`` (default ``h_steps``) multiplicative updates of a batch's own activations, ``W`` fixed.
        ``keep_old`` keeps a copy of its last ``T - 1`` rows as they were, for the next batch's context (NMFD)."""
        if batch.H.shape[0] == 0:
            return
        if keep_old and self.layout.context:
            self._old_tail = (batch.index, batch.H[-self.layout.context:].clone())
        steps = self.h_steps if steps is None else steps
        for neg, pos in self.layout.h_terms(batch, self.W, self.beta, self._ws, steps):
            self._apply("H", batch.H, neg, pos)

    def _w_terms(self, batch: _Batch):
        """W's parts from a batch (its frames, the current factors)."""
        return self.layout.terms("W", batch, self.W, self.beta, self._ws)

    def _w_step(self, b: int, neg: Tensor, pos: Tensor, keep: bool = True) -> None:
        """W's update from one batch's parts: the all-reduce, the average gradient's running sums (``asag_mu``,
        ``gsag_mu``), the plain multiplicative step."""
        neg, pos = self._reduce(neg, pos)
        if self.solver in _AVERAGE:
            neg, pos = self._average(b, neg, pos, keep=keep)
        self._apply("W", self.W, neg, pos, certified=False)

    def _init_rows(self, Vb: Tensor, rows: int) -> Tensor:
        """Random activations for a batch, scaled as ``init.random_like_data`` to the batch's mean."""
        scale = math.sqrt(max(float(Vb.mean()), 0.0) / (self.rank * (self.T or 1))) or 1.0
        x = torch.randn((rows, self.rank), generator=self.generator, dtype=Vb.dtype, device=self.generator.device)
        return x.abs_().mul_(scale).to(Vb.device)

    def _rows(self, b: int, Vb: Tensor) -> Tensor:
        """The activations of batch ``b``."""
        Hb = self._H[b]
        if Hb.shape[0] != self.layout.own_rows(b, Vb.shape[0]):
            raise ParameterError(f"batch {b} has {Vb.shape[0]} frames but its activations have "
                                 f"{Hb.shape[0]} rows: the data changed since the state was made")
        return Hb

    def _views(self, frames: _Frames, order=None, H: Optional[list] = None, rows=None) -> Iterator[_Batch]:
        """The one pass over the batches: each as a :class:`_Batch` with its own activations (``rows(b, Vb)``
        from the list ``H``, by default the fit's) and, for NMFD, its context. The rows before a batch are those of the batch
        visited just before as they were before its update (``_h_step(keep_old=True)``), else as they are:
        visited in order, every batch's parts are taken at the factors of the epoch's start."""
        H = self._H if H is None else H
        rows = self._rows if rows is None else rows
        context = self.layout.context
        self._old_tail = None
        back = None
        for b, Vb in frames.batches(order):
            Hb = rows(b, Vb)
            if not context:
                yield _Batch(b, Vb, Hb)
                continue
            if b == 0:
                back = Vb[:0]
            elif frames.random_access:
                a = frames.start(b)
                back = frames.rows(a - context, a)
            before = H[b - 1][-context:] if b > 0 else Hb[:0]
            old = self._old_tail[1] if self._old_tail is not None and self._old_tail[0] == b - 1 else None
            after = H[b + 1][:context] if b + 1 < len(H) else Hb[:0]
            last = frames.sizes is not None and b == len(frames.sizes) - 1
            yield _Batch(b, Vb, Hb, back, before, after, last, before_h=old)
            back = Vb[-context:]

    def _setup(self, frames: _Frames, W, H, trainable_W: bool, trainable_H: bool):
        """Initial ``W`` (from the argument or random, scaled to the first batch) and every batch's ``H``
        (split from the argument or random, drawn in data order): one pass over the data."""
        self._reset()
        self.train_W, self.train_H = bool(trainable_W), bool(trainable_H)
        if not self.train_W and W is None:
            raise ParameterError("trainable_W=False needs the fixed templates W")
        if not self.train_H and H is None:
            raise ParameterError("trainable_H=False needs the fixed activations H")
        if W is None:
            _, first = next(iter(frames.batches([0] if frames.random_access else None)))
            self.W = self._init_templates(first)
        else:
            self.W = self._check_factor(W, "W", frames.features).detach().clone()
        frames.like = self.W
        if self.parallel is not None:
            self.parallel.broadcast(self.W)
        if H is not None:
            H = self._check_factor(H, "H", None)
            if frames.sizes is None:
                list(frames.batches())
            self._check_sizes(frames.sizes)
            rows = [self.layout.own_rows(k, n) for k, n in enumerate(frames.sizes)]
            if sum(rows) != H.shape[0]:
                extra = f" - T + 1 = {sum(rows)}" if self.T is not None else ""
                raise ParameterError(f"H has {H.shape[0]} rows but V has {sum(frames.sizes)} frames{extra}")
            self._H = [h.clone() for h in torch.split(H.detach().to(self.W), rows)]
        else:
            self._H = []
            for k, Vb in frames.batches():
                self._check_sizes([Vb.shape[0]] if k == 0 else None)
                self._H.append(self._init_rows(Vb, self.layout.own_rows(k, Vb.shape[0])))
            self._check_sizes(frames.sizes)
        if frames.features != self.W.shape[0]:
            raise ParameterError(f"V has {frames.features} features but W has {self.W.shape[0]} rows")

    def _init_templates(self, first: Tensor) -> Tensor:
        """Random templates, scaled as ``init.random_like_data`` to the mean of the first batch."""
        scale = math.sqrt(max(float(first.mean()), 0.0) / (self.rank * (self.T or 1))) or 1.0
        shape = self.layout.template_shape(first.shape[1], self.rank)
        x = torch.randn(shape, generator=self.generator, dtype=first.dtype, device=self.generator.device)
        return x.abs_().mul_(scale).to(first.device)

    def _check_sizes(self, sizes: Optional[list]) -> None:
        """NMFD: every batch (chunk) but the last has at least ``T`` frames, and the data at least ``T``."""
        if self.T is None or not sizes:
            return
        for k, n in enumerate(sizes):
            if n < self.T and (k < len(sizes) - 1 or k == 0):
                raise ParameterError(f"batch {k} has {n} frames, fewer than T={self.T}: with T, every batch "
                                     "(chunk) but the last needs at least T frames (its neighbours read T - 1 "
                                     "of them)")

    def _check_factor(self, X, name: str, features: Optional[int]) -> Tensor:
        if not isinstance(X, Tensor):
            raise ParameterError(f"{name} must be a torch.Tensor, got {type(X).__name__}")
        value_range(X, name)
        if features is not None:  # the templates
            want = self.layout.template_shape(features, self.rank)
            ok = tuple(X.shape) == want
        else:
            want = ("frames" if self.T is None else "frames - T + 1", self.rank)
            ok = X.ndim == 2 and X.shape[1] == self.rank
        if not ok:
            raise ParameterError(f"{name} has shape {tuple(X.shape)}, expected ({want[0]}, {', '.join(map(str, want[1:]))})")
        return X

    # ------------------------------------------------------------ one epoch
    def _epoch(self, frames: _Frames) -> None:
        """One pass: every batch updates its activations, then W's parts go to the solver's rule."""
        in_order = not (frames.random_access and self.order != "cyclic")
        order = None if in_order else \
            torch.randperm(len(frames.sizes), generator=self.generator, device=self.generator.device).tolist()
        acc = pick = None
        for k, batch in enumerate(self._views(frames, order)):
            if self.train_H:
                self._h_step(batch, keep_old=True)
            if not self.train_W:
                continue
            if self.solver in _GREEDY:
                # one batch, uniformly at random over the epoch, chosen as the batches stream by (reservoir
                # sampling); NMF: W does not change within the epoch, so its parts equal those at the end
                u = torch.rand((), generator=self.generator, device=self.generator.device)
                if float(u) * (k + 1) < 1:
                    pick = (batch.index, self._w_terms(batch))
            elif self.solver == "mu_batch":
                neg, pos = self._w_terms(batch)
                acc = [neg, pos] if acc is None else [acc[0].add_(neg), acc[1].add_(pos)]
            else:
                self._w_step(batch.index, *self._w_terms(batch))
        if self.train_W and self.solver == "mu_batch":
            # NMFD in a shuffled order: a batch's W parts saw its neighbours' rows before or after their update,
            # so the sum is not the gradient at one point and the step is not over-relaxed
            self._apply("W", self.W, *self._reduce(*acc), certified=in_order or self.T is None)
        elif self.train_W and self.solver in _GREEDY:
            b, (neg, pos) = pick
            self._w_step(b, neg, pos)
        self.epoch += 1

    def _loss(self, frames: _Frames) -> float:
        """The full divergence, summed over the batches (and processes)."""
        total = 0.0
        for batch in self._views(frames):
            total += float(self.layout.loss(batch, self.W, self.beta, self._ws))
        if self.parallel is not None:
            total = self.parallel.sum_float(total)
        return total

    # ------------------------------------------------------------ public API
    def fit(self, V, *, W: Optional[Tensor] = None, H: Optional[Tensor] = None, trainable_W: bool = True,
            trainable_H: bool = True, max_epochs: int = 100, tol: float = 1e-4, check_every: int = 1,
            callback: Optional[Callable[[int, float], Optional[bool]]] = None, verbose: bool = False,
            resume: bool = False, patience: Optional[int] = None) -> "MiniBatchMU":
        r"""Fit ``W`` and ``H`` to the frames of ``V``; returns ``self``.

        Parameters
        ----------
        V : torch.Tensor, numpy.ndarray, iterable of chunks, or callable
            Non-negative frames ``(N, C)``: in memory, a (memory-mapped)
            array, an iterable of ``(n_i, C)`` chunks yielding the same
            chunks each epoch, or a function returning a fresh iterator.
        W : torch.Tensor [shape=(C, R)], optional, keyword-only
            Initial (or, with ``trainable_W=False``, fixed) templates; random
            (scaled to the first batch's mean) if omitted.
        H : torch.Tensor [shape=(N, R)], optional, keyword-only
            Initial (or fixed) activations; random per batch at its first
            visit if omitted.
        trainable_W, trainable_H : bool, default True, keyword-only
            ``False`` keeps the factor fixed (supervised NMF: fixed ``W``).
        max_epochs : int, default 100, keyword-only
            Number of epochs in all (with ``resume``, those already run count).
        tol : float, default 1e-4, keyword-only
            Stop when ``(e_prev - e) / e_0 < tol`` with ``e = sqrt(2 loss)``
            (as :meth:`nmfcore.nmf.NMF.fit`), or by the patient rule (see
            ``patience``); 0 runs ``max_epochs``.
        check_every : int, default 1, keyword-only
            Epochs between evaluations of the loss (one more pass over the data).
        callback : callable, keyword-only
            ``callback(epoch, loss)`` at the start and at every check;
            returning ``True`` stops. A place to save :meth:`state_dict`.
        verbose : bool, default False, keyword-only
            A progress bar over the epochs.
        resume : bool, default False, keyword-only
            Go on from the current state (after :meth:`load_state_dict` or a
            previous fit) instead of starting afresh.
        patience : int, optional, keyword-only
            The stopping rule for a loss that is not monotone: stop once
            ``patience`` checks in a row have not lowered the best ``e`` so
            far by ``tol * e_0`` (:func:`nmfcore._fit.run_iterations`). The
            stochastic solvers' loss can rise for an epoch (a batch's step
            raises the other batches' divergence) and then fall below its
            best, and the rule above stopped them at their first rise. None:
            :data:`PATIENCE` (5) for the stochastic solvers, the rule above for
            ``mu_batch`` (its loss never increases, and there ``patience=1``
            is the same rule). The factors are those of the last epoch run,
            not of the best one.

        Raises
        ------
        ParameterError
            Bad settings; a batch or chunk that is not finite and
            non-negative, has a different number of features or has zeros
            with ``beta <= 0`` (the message names the chunk's index); an
            empty iterable; factors of the wrong shape.
        """
        max_epochs = check_positive_int(max_epochs, "max_epochs")
        tol = check_nonnegative_float(tol, "tol")
        check_every = check_positive_int(check_every, "check_every")
        if patience is not None:
            patience = check_positive_int(patience, "patience")
        elif self.solver != "mu_batch":
            patience = PATIENCE
        if callback is not None and not callable(callback):
            raise ParameterError(f"callback={callback!r} must be callable")
        like = self.W if resume else None
        frames = _Frames(V, self.batch_size, self.beta, like)
        if self.order == "shuffle" and not frames.random_access:
            raise ParameterError("order='shuffle' needs a tensor or an array: an iterable of chunks is visited "
                                 "in its own order")
        if resume:
            if self.W is None:
                raise ParameterError("resume=True needs a state: fit first or load_state_dict()")
            # every batch's frames: its rows, and for NMFD the first batch's T - 1 more
            sizes = [h.shape[0] + (self.layout.context if k == 0 else 0) for k, h in enumerate(self._H)]
            if frames.sizes is None:
                frames.sizes = sizes  # an iterable's chunks must match the state's batches
            elif frames.sizes != sizes:
                raise ParameterError(f"V has batches of {frames.sizes[:3]}... frames but the state has "
                                     f"{sizes[:3]}...: resume with the same data and batch_size")
        else:
            self._setup(frames, W, H, trainable_W, trainable_H)
        if self.parallel is not None:
            self.parallel.check_schedule(self.solver, frames, self.order)
        offset = self.epoch

        def report(n: int, loss: float):
            if not (self.losses and self.losses[-1][0] == offset + n):  # a resumed fit's start is recorded
                self.losses.append((offset + n, loss))
            return callback(offset + n, loss) if callback is not None else None

        # as NMF.fit: the loss (a pass over the data) is evaluated only where something reads it
        track = callback is not None or tol > 0 or verbose
        with torch.no_grad():
            run_iterations(lambda: self._epoch(frames), lambda: self._loss(frames),
                           max_iter=max(max_epochs - offset, 0), tol=tol, check_every=check_every,
                           callback=report if track else None, verbose=verbose, desc=self.solver,
                           patience=patience)
        return self

    def partial_fit(self, chunk, *, h_iter: int = 10) -> "MiniBatchMU":
        """One step on a new chunk of a stream; returns ``self``.

        The chunk's activations start random and take ``h_iter`` updates with
        ``W`` fixed (NMFD: the chunk is a sequence of its own, ``n - T + 1``
        rows), then ``W`` takes one update from the chunk's parts
        (``asag_mu`` / ``gsag_mu``: from the running sums, where the earlier
        chunks' parts decay by ``forget`` per chunk). The chunk's activations
        are not kept (:meth:`transform` gives them).

        Parameters
        ----------
        chunk : torch.Tensor or numpy.ndarray [shape=(n, C)]
        h_iter : int, default 10, keyword-only
        """
        h_iter = check_positive_int(h_iter, "h_iter")
        frames = _Frames([chunk], self.batch_size, self.beta, self.W)
        with torch.no_grad():
            (_, X), = list(frames.batches())
            self._check_sizes([X.shape[0]])
            if self.W is None:
                self._reset()
                self.W = self._init_templates(X)
                if self.parallel is not None:
                    self.parallel.broadcast(self.W)
            elif X.shape[1] != self.W.shape[0]:
                raise ParameterError(f"chunk has {X.shape[1]} features but W has {self.W.shape[0]}")
            empty = X.new_zeros((0, self.rank))
            batch = _Batch(0, X, self._init_rows(X, self.layout.own_rows(0, X.shape[0])), X[:0], empty, empty)
            self._h_step(batch, h_iter)
            if self.train_W:
                self._w_step(0, *self._w_terms(batch), keep=False)
        return self

    def transform(self, V, *, max_iter: int = 100) -> Tensor:
        """Activations of new frames with ``W`` fixed: ``max_iter`` updates per batch, one pass over ``V``.

        ``V`` is anything :meth:`fit` takes; returns ``H`` ``(N, R)``. NMFD:
        ``max_iter`` passes of one update per batch (a batch's last rows
        also reach the next batch's frames), ``(N - T + 1, R)``.
        """
        if self.W is None:
            raise ParameterError("transform needs W: fit first or load_state_dict()")
        max_iter = check_positive_int(max_iter, "max_iter")
        frames = _Frames(V, self.batch_size, self.beta, self.W)
        out: list = []

        def rows(b: int, X: Tensor) -> Tensor:
            if X.shape[1] != self.W.shape[0]:
                raise ParameterError(f"V has {X.shape[1]} features but W has {self.W.shape[0]}")
            if b == 0:
                self._check_sizes([X.shape[0]])
            out.append(self._init_rows(X, self.layout.own_rows(b, X.shape[0])))
            return out[-1]

        # NMF: the batches' rows are independent, one pass with max_iter updates each; NMFD: max_iter passes
        # of one update, so that the rows at a batch's end see the next batch's
        passes, steps = (1, max_iter) if not self.layout.context else (max_iter, 1)
        with torch.no_grad():
            for k in range(passes):
                for batch in self._views(frames, H=out, rows=rows if k == 0 else lambda b, X: out[b]):
                    self._h_step(batch, steps)
                self._check_sizes(frames.sizes)
        return torch.cat(out)


def _solver_function(name: str):
    def fit(V, rank: int, **options) -> MiniBatchMU:
        init = {k: options.pop(k) for k in ("beta", "batch_size", "order", "forget", "generator", "parallel", "T",
                                                  "h_steps")
                if k in options}
        return MiniBatchMU(rank, solver=name, **init).fit(V, **options)

    fit.__name__ = fit.__qualname__ = name
    fit.__doc__ = f"""``MiniBatchMU(rank, solver={name!r}, ...).fit(V, ...)``; returns the fitted :class:`MiniBatchMU`.

    ``beta``, ``batch_size``, ``order``, ``forget``, ``generator``,
    ``parallel``, ``T`` and ``h_steps`` go to the constructor, every other keyword to
    :meth:`MiniBatchMU.fit`.

    Examples
    --------
    >>> import torch
    >>> V = torch.rand(100, 20, generator=torch.Generator().manual_seed(0))
    >>> m = {name}(V, 3, batch_size=25, max_epochs=3, tol=0, generator=0)
    >>> m.W.shape, m.epoch
    (torch.Size([20, 3]), 3)
    """
    return fit


mu_batch = _solver_function("mu_batch")
asg_mu = _solver_function("asg_mu")
gsg_mu = _solver_function("gsg_mu")
asag_mu = _solver_function("asag_mu")
gsag_mu = _solver_function("gsag_mu")
