r"""The forward operators of the models and their pull-backs.

Every model reconstructs the data as a map that is linear in each factor,
``Y = A(H, W)``: a matrix product (:class:`MatrixProduct`, NMF), a 1-D
convolution over time (:class:`Deconvolution`, NMFD) or a convolution with a
2- or 3-D kernel (:class:`TapPlanes`, NMF2D / NMF3D). An operator knows

- ``reconstruct(H, W)`` (and :meth:`Operator.reconstruct_into`, the same
  written into a workspace buffer);
- ``pull(which, G, W, H, workspace)``: the adjoint of ``A`` with respect to
  one factor (:math:`J^T G`, the vector-Jacobian product), for a stack of
  data-sized tensors ``G`` of shape ``(k, *V.shape)`` at once;
- ``ones_pullback(which, W, H)``: the pull-back of an all-ones tensor, a sum
  over the other factor (beta = 1 needs nothing else);
- ``terms(which, V, W, H, beta, workspace)``: the negative and positive parts
  of the gradient of :math:`d_\beta(V | A(H, W))` with respect to ``which``,
  i.e. the output-space terms of :func:`nmfcore.divergence.mu_terms` pulled
  back, through the closed forms where they pay (for beta = 2 the positive
  part is the factor times a Gram matrix or an autocorrelation, and the
  reconstruction is never formed);
- ``loss(V, W, H, beta, workspace)``: the divergence, reusing the cached
  values of ``V``.

The generic path, :func:`general_terms` through :func:`vjp` (autograd),
works for any reconstruction and is the oracle every closed form is tested
against (``tests/test_nmf.py``). The multiplicative updates, HALS, the
projected gradient and the trainers all reach the data through these
operators; an EM solver (PLCA: the KL update with prior counts and a
renormalisation) and a mini-batch solver (the pull-backs of one batch) reuse
them as they are.
"""

from __future__ import annotations

import itertools
import math
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from . import divergence as div
from ._validation import memory_order
from ._workspace import Workspace

__all__ = ["Operator", "AutogradOperator", "MatrixProduct", "Deconvolution", "TapPlanes",
           "vjp", "pull_back", "general_terms"]


# ------------------------------------------------------------------ autograd
def pull_back(Y: Tensor, x: Tensor, grads: Sequence[Tensor], *, retain_graph: bool = False,
              allow_unused: bool = False) -> list:
    r"""Vector-Jacobian products :math:`J^T G` of ``Y`` (computed from ``x`` with autograd) for each ``G``.

    The one autograd pull-back of nmfcore: :func:`vjp` and the trainers use it.

    Parameters
    ----------
    Y : torch.Tensor
        Output of a differentiable computation of ``x``.
    x : torch.Tensor
        Input that requires grad.
    grads : sequence of torch.Tensor
        Output-space tensors, each of ``Y``'s shape.
    retain_graph : bool, default False, keyword-only
        Keep the graph after the last product (for later calls).
    allow_unused : bool, default False, keyword-only
        Return None instead of raising where ``Y`` does not depend on ``x``.

    Returns
    -------
    list of torch.Tensor or None
        One pull-back of ``x``'s shape per ``G``.

    Examples
    --------
    >>> import torch
    >>> x = torch.tensor([1.0, 2.0], requires_grad=True)
    >>> Y = 3 * x
    >>> pull_back(Y, x, [torch.ones(2), torch.tensor([1.0, 0.0])])
    [tensor([3., 3.]), tensor([3., 0.])]
    """
    out = []
    with torch.enable_grad():
        for i, G in enumerate(grads):
            keep = retain_graph or i < len(grads) - 1
            out.append(torch.autograd.grad(Y, x, G, retain_graph=keep, allow_unused=allow_unused)[0])
    return out


def vjp(reconstruct: Callable[[Tensor, Tensor], Tensor], which: str, W: Tensor, H: Tensor):
    r"""Reconstruction and its vector-Jacobian product with respect to ``which``.

    Parameters
    ----------
    reconstruct : callable
        ``reconstruct(H, W)``, differentiable (a model's operator).
    which : {'W', 'H'}
        The factor to pull back to.
    W, H : torch.Tensor
        The factors.

    Returns
    -------
    Y : torch.Tensor
        The reconstruction (detached).
    pull : callable
        ``pull(G)`` is :math:`J^T G` for an output-space ``G`` (may be called
        more than once); the reconstruction is linear in each factor, so this
        is its adjoint.

    Examples
    --------
    >>> import torch
    >>> W, H = torch.ones(3, 2), torch.ones(4, 2)
    >>> Y, pull = vjp(MatrixProduct.reconstruct, "H", W, H)
    >>> Y.shape, pull(torch.ones(4, 3))
    (torch.Size([4, 3]), tensor([[3., 3.],
            [3., 3.],
            [3., 3.],
            [3., 3.]]))
    """
    with torch.enable_grad():
        x = (H if which == "H" else W).detach().requires_grad_(True)
        Y = reconstruct(x, W) if which == "H" else reconstruct(H, x)

    def pull(G: Tensor) -> Tensor:
        return pull_back(Y, x, [G], retain_graph=True)[0]

    return Y.detach(), pull


def general_terms(reconstruct: Callable[[Tensor, Tensor], Tensor], which: str, V: Tensor, W: Tensor, H: Tensor,
                  beta: float):
    r"""``(neg, pos)`` for ``which`` by vector-Jacobian products of any reconstruction: the test oracle.

    Parameters
    ----------
    reconstruct : callable
        ``reconstruct(H, W)``, differentiable.
    which : {'W', 'H'}
    V : torch.Tensor
        Data (a sparse tensor is densified).
    W, H : torch.Tensor
    beta : float

    Returns
    -------
    neg, pos : torch.Tensor
        The parts of the gradient of :math:`d_\beta(V | Y)` with respect to
        ``which`` (``grad = pos - neg``), of that factor's shape.

    Examples
    --------
    >>> import torch
    >>> W, H, V = torch.ones(3, 2), torch.ones(4, 2), torch.full((4, 3), 2.0)
    >>> neg, pos = general_terms(MatrixProduct.reconstruct, "W", V, W, H, 2)
    >>> neg[0], pos[0]
    (tensor([8., 8.]), tensor([8., 8.]))
    """
    V = V.to_dense() if V.is_sparse else V
    Y, pull = vjp(reconstruct, which, W, H)
    neg_out, pos_out = div.mu_terms(V, Y, beta)
    if pos_out is None:
        pos_out = torch.ones_like(Y)
    return pull(neg_out), pull(pos_out)


# ------------------------------------------------------------------ operators
class Operator:
    """Base of the operators: the generic (autograd) path for any :meth:`reconstruct`.

    Subclasses override :meth:`reconstruct` and add closed forms; every
    method takes the factors and a :class:`~nmfcore._workspace.Workspace`, and
    keeps no state of its own, so one operator serves every model of its kind.
    """

    #: Whether the factors keep the rank on axis 1, so that the pull-back of an all-ones output is a
    #: sum over every other axis of the other factor (the beta = 1 fast path).
    ones_pullback_is_sum = False

    @staticmethod
    def reconstruct(H: Tensor, W: Tensor) -> Tensor:
        """The reconstruction ``Y = A(H, W)``."""
        raise NotImplementedError

    def output_shape(self, W: Tensor, H: Tensor) -> tuple:
        """Shape of the reconstruction."""
        return tuple(self.reconstruct(H, W).shape)

    def reconstruct_into(self, V: Tensor, W: Tensor, H: Tensor, workspace: Workspace) -> Tensor:
        """The reconstruction of ``V``, in a workspace buffer where the operator can write into one (then
        in ``V``'s memory layout if :meth:`reconstructs_in_layout`); the buffer is overwritten by
        :meth:`terms` and :meth:`loss`."""
        return self.reconstruct(H, W)

    def pull(self, which: str, G: Tensor, W: Tensor, H: Tensor, workspace: Workspace) -> Tensor:
        r"""Pull-backs :math:`J^T G_i` of a stack of data-sized tensors to the factor ``which``.

        Parameters
        ----------
        which : {'W', 'H'}
        G : torch.Tensor [shape=(k, *V.shape)]
            Output-space tensors (e.g. the two terms of :func:`~nmfcore.divergence.mu_terms`).
        W, H : torch.Tensor
            The factors.
        workspace : Workspace
            Scratch buffers (the result may live in one until the next call).

        Returns
        -------
        torch.Tensor [shape=(k, *factor.shape)]

        Examples
        --------
        >>> import torch
        >>> from nmfcore._workspace import Workspace
        >>> W, H = torch.ones(3, 2), torch.ones(4, 2)
        >>> MatrixProduct().pull("W", torch.ones(1, 4, 3), W, H, Workspace())[0]
        tensor([[4., 4.],
                [4., 4.],
                [4., 4.]])
        """
        _, p = vjp(self.reconstruct, which, W, H)
        return torch.stack([p(g) for g in G])

    def ones_pullback(self, which: str, W: Tensor, H: Tensor) -> Tensor:
        """Pull-back of an all-ones output (needs :attr:`ones_pullback_is_sum`): a sum over the other factor,
        shaped to broadcast against ``which``."""
        other, target = (W, H) if which == "H" else (H, W)
        dims = [d for d in range(other.ndim) if d != 1]
        r = other.sum(dims)
        return r.reshape((1, -1) + (1,) * (target.ndim - 2))

    def terms(self, which: str, V: Tensor, W: Tensor, H: Tensor, beta: float, workspace: Workspace):
        r"""``(neg, pos)``: the parts of the gradient of :math:`d_\beta(V | A(H, W))` with respect to ``which``.

        Parameters
        ----------
        which : {'W', 'H'}
        V : torch.Tensor
            Data of the operator's output shape (sparse where :meth:`sparse_native`).
        W, H : torch.Tensor
        beta : float
        workspace : Workspace
            Scratch buffers and cached values of ``V``.

        Returns
        -------
        neg, pos : torch.Tensor
            Non-negative, ``grad = pos - neg``; ``pos`` may be a broadcastable
            sum (beta = 1); either may live in a workspace buffer until the
            next call.

        Examples
        --------
        >>> import torch
        >>> from nmfcore._workspace import Workspace
        >>> W, H, V = torch.ones(3, 2), torch.ones(4, 2), torch.full((4, 3), 4.0)
        >>> neg, pos = MatrixProduct().terms("H", V, W, H, 1.0, Workspace())
        >>> neg[0], pos   # V / Y pulled back; the sum of W's rows
        (tensor([6., 6.]), tensor([3., 3.]))
        """
        if beta == 1 and self.ones_pullback_is_sum and not V.is_sparse:
            Y, pull = vjp(self.reconstruct, which, W, H)
            neg_out, _ = div.mu_terms(V, Y, beta, out=Y)
            return pull(neg_out), self.ones_pullback(which, W, H)
        return general_terms(self.reconstruct, which, V, W, H, beta)

    def loss(self, V: Tensor, W: Tensor, H: Tensor, beta: float, workspace: Optional[Workspace] = None) -> Tensor:
        r""":math:`d_\beta(V | A(H, W))`, summed.

        Parameters
        ----------
        V, W, H : torch.Tensor
        beta : float
        workspace : Workspace, optional
            Caches the terms of ``V`` alone (bound to this ``V``) and holds the
            reconstruction; None: the plain :func:`~nmfcore.divergence.beta_divergence`.

        Returns
        -------
        torch.Tensor
            Zero-dimensional.

        Examples
        --------
        >>> import torch
        >>> W, H = torch.ones(3, 2), torch.ones(4, 2)
        >>> float(MatrixProduct().loss(torch.full((4, 3), 3.0), W, H, 2))   # 12 entries of (3 - 2)**2 / 2
        6.0
        """
        V = V.to_dense() if V.is_sparse else V
        if workspace is None:
            return div.beta_divergence(V, self.reconstruct(H, W), beta)
        Y = self.reconstruct_into(V, W, H, workspace)
        return div.divergence_sum(V, Y, beta, workspace)

    # properties of the data path, for the problem set-up
    def sparse_native(self, beta: float) -> bool:
        """Whether the terms work on a sparse ``V`` directly (else it is densified)."""
        return False

    def passes_over_data(self, beta: float) -> bool:
        """Whether the terms run elementwise passes over ``V`` (then a strided ``V`` is copied once)."""
        return True

    def reconstructs_in_layout(self, V: Tensor) -> bool:
        """Whether :meth:`reconstruct_into` writes in ``V``'s memory layout (no contiguous copy of ``V`` needed)."""
        return V.is_contiguous()


class AutogradOperator(Operator):
    """The generic operator of any differentiable ``reconstruct(H, W)`` (a user's model).

    Examples
    --------
    >>> import torch
    >>> op = AutogradOperator(lambda H, W: H @ W.t())
    >>> W, H, V = torch.ones(3, 2), torch.ones(4, 2), torch.ones(4, 3)
    >>> [t.shape for t in op.terms("W", V, W, H, 1.0, None)]
    [torch.Size([3, 2]), torch.Size([3, 2])]
    """

    def __init__(self, reconstruct: Callable[[Tensor, Tensor], Tensor], ones_pullback_is_sum: bool = False):
        self.reconstruct = reconstruct
        self.ones_pullback_is_sum = ones_pullback_is_sum


class MatrixProduct(Operator):
    r"""NMF's operator ``Y = H W^T`` (``V (N, C)``, ``W (C, R)``, ``H (N, R)``).

    Closed forms: ``neg = V W`` and ``pos = H (W^T W)`` for beta = 2 (no
    ``N x C`` product), ``pos = sum_n W[n]`` for beta = 1, a sparse ``V`` at
    beta 1 and 2 (the ratio only at the stored entries), and a ``V`` given as
    a transposed view (the reconstruction written as ``Y^T = W H^T`` in
    ``V``'s layout, so that the passes over both run in memory order).

    Examples
    --------
    >>> import torch
    >>> from nmfcore._workspace import Workspace
    >>> op = MatrixProduct()
    >>> W, H = torch.ones(3, 2), torch.ones(4, 2)
    >>> V = op.reconstruct(H, W)
    >>> V.shape
    torch.Size([4, 3])
    >>> neg, pos = op.terms("H", V, W, H, 2, Workspace())
    >>> bool(torch.equal(neg, pos))  # V is the reconstruction: the gradient is zero
    True
    """

    ones_pullback_is_sum = True

    @staticmethod
    def reconstruct(H: Tensor, W: Tensor) -> Tensor:
        return H @ W.t()

    def output_shape(self, W, H):
        return (H.shape[0], W.shape[0])

    def sparse_native(self, beta):
        return beta in (1, 2)

    def passes_over_data(self, beta):
        return beta != 2  # beta = 2 meets V only in matrix products

    def reconstructs_in_layout(self, V):
        return V.is_contiguous() or V.t().is_contiguous()

    def reconstruct_into(self, V, W, H, workspace):
        if not V.is_contiguous() and V.t().is_contiguous():
            # V is a transposed view (a spectrogram (freq, frames) passed as .t()): write Y^T = W H^T, so
            # that the passes over V and Y run in memory order and the products keep V's layout
            Yt = torch.mm(W, H.t(), out=workspace.buffer("Yt", (W.shape[0], H.shape[0]), W))
            return Yt.t()
        # on the CPU W^T made contiguous (R x C, a small copy): MKL's product is 1.5-1.8x faster with it than
        # with the transposed view (bench/README.md, PLCA section); cuBLAS takes the view as it is
        Wt = W.t() if W.device.type != "cpu" else W.t().contiguous()
        return torch.mm(H, Wt, out=workspace.buffer("Y", (H.shape[0], W.shape[0]), W))

    def pull(self, which, G, W, H, workspace):
        # here G W (for H) and G^T H (for W), computed as (W^T G^T)^T and (H^T G)^T: the product with the
        # rank as its short output side first runs 1.3-2x faster in MKL than G^T H, and one 2-D product
        # per stacked tensor beats the batched one (bench/README.md, PLCA section)
        if which == "H":
            return torch.stack([(W.t() @ g.t()).t() for g in G])
        return torch.stack([(H.t() @ g).t() for g in G])

    def data_product(self, V: Tensor, other: Tensor, which: str, workspace: Workspace) -> Tensor:
        """``V W`` (which='H') or ``V^T H`` (which='W') for a dense or sparse ``V`` (the transposed sparse
        ``V`` is cached in the workspace)."""
        if which == "H":
            return torch.sparse.mm(V, other) if V.is_sparse else V @ other
        if V.is_sparse:
            return torch.sparse.mm(workspace.cached(V, "Vt", lambda: V.t().coalesce()), other)
        return V.t() @ other

    def gram_terms(self, which: str, V: Tensor, W: Tensor, H: Tensor, workspace: Workspace):
        """``(V W, W^T W)`` for which='H', ``(V^T H, H^T H)`` for which='W': beta = 2's parts are
        ``neg = P`` and ``pos = X G`` (what HALS minimises over)."""
        other = W if which == "H" else H
        return self.data_product(V, other, which, workspace), other.t() @ other

    def terms(self, which, V, W, H, beta, workspace):
        other = W if which == "H" else H
        if beta == 2:
            # here neg = V W and pos = H (W^T W) (for H; V^T H and W (H^T H) for W): no N x C product
            target = H if which == "H" else W
            neg, gram = self.gram_terms(which, V, W, H, workspace)
            return neg, target @ gram
        if V.is_sparse:
            if beta != 1:
                return super().terms(which, V, W, H, beta, workspace)
            # V / WH only at the stored entries
            idx = V.indices()
            y = (H[idx[0]] * W[idx[1]]).sum(1)
            ratio, _ = div.mu_terms(V.values(), y, beta)
            S = torch.sparse_coo_tensor(idx, ratio, V.shape, check_invariants=False)
            return self.data_product(S, other, which, Workspace()), other.sum(0)
        Y = self.reconstruct_into(V, W, H, workspace)
        # here neg = (V * Y**(beta-2)) @ W, pos = Y**(beta-1) @ W  (transposed for W)
        neg_out, pos_out = div.mu_terms(V, Y, beta, out=Y, workspace=workspace)
        if which == "H":
            neg = neg_out @ W
            pos = W.sum(0) if pos_out is None else pos_out @ W
        else:
            neg = neg_out.t() @ H
            pos = H.sum(0) if pos_out is None else pos_out.t() @ H
        return neg, pos

    def loss(self, V, W, H, beta, workspace=None):
        if beta == 2:
            # 0.5 ||V||^2 - <V W, H> + 0.5 <W^T W, H^T H>
            ws = Workspace() if workspace is None else workspace
            sq = ws.cached(V, "sqnorm",
                           lambda: (V.coalesce().values() if V.is_sparse else memory_order(V)).square().sum())
            cached = ws.peek(V, "VW")  # left by HALS while W is unchanged
            VW = cached[1] if cached is not None and cached[0] is W and cached[2] == W._version \
                else self.data_product(V, W, "H", ws)
            cross = (VW * H).sum()
            gram = ((W.t() @ W) * (H.t() @ H)).sum()
            return (0.5 * sq - cross + 0.5 * gram).clamp_min(0)
        if V.is_sparse and beta == 1:
            # sum over stored entries of d(v|y) - d(0|y), plus sum of d(0|y) = y over all
            idx = V.indices()
            y = (H[idx[0]] * W[idx[1]]).sum(1)
            part = div.beta_divergence(V.values(), y, beta) - div.divergence_of_zero(y, beta).sum()
            return (part + W.sum(0) @ H.sum(0)).clamp_min(0)
        return super().loss(V, W, H, beta, workspace)


class _ProductForm(Operator):
    """NMFD, NMF2D and NMF3D: full-padded convolution of H with the flipped W, in a *product form*.

    The reconstruction is computed as matrix products written into a
    workspace buffer (that also holds the two MU terms computed from it, in
    place), and the pull-backs of both terms as matrix products, in one call
    (:meth:`pull`). conv1d / conv2d allocate their output and the autograd
    pull-backs one tensor of the data's size each, and torch's conv2d with one
    output channel is slow; the product form avoids both. Each path equals
    :func:`general_terms` (``tests/test_nmf.py`` pins it).
    """

    ones_pullback_is_sum = True

    def output_shape(self, W, H):
        return (H.shape[0], W.shape[0]) + tuple(h + k - 1 for h, k in zip(H.shape[2:], W.shape[2:]))

    def product_form(self, V: Tensor, W: Tensor) -> bool:
        """Whether the terms for ``V`` take the product form (else the generic path)."""
        return True

    def terms_buffer(self, V: Tensor, W: Tensor, workspace: Workspace) -> Tensor:
        """Two tensors of V's shape: the reconstruction, then divergence.py's scratch (the second MU term)."""
        terms = workspace.buffer("terms", (2,) + tuple(V.shape), W)
        workspace.share("scratch", terms[1])
        return terms

    def reconstruct_into(self, V, W, H, workspace):
        if not self.product_form(V, W):
            return super().reconstruct_into(V, W, H, workspace)
        return self._product_into(V, W, H, workspace)

    def _product_into(self, V, W, H, workspace):
        raise NotImplementedError

    def pull(self, which, G, W, H, workspace):
        if not self.product_form(G[0], W):
            return super().pull(which, G, W, H, workspace)
        self._prepare_pull(which, W, H, workspace)
        return self._pull(which, G, W, H, workspace)

    def _prepare_pull(self, which, W, H, workspace):
        """Fill the buffers that :meth:`_pull` reads and :meth:`reconstruct_into` leaves."""

    def _pull(self, which, G, W, H, workspace):
        """:meth:`pull` right after :meth:`reconstruct_into` with the same factors (reads its buffers)."""
        raise NotImplementedError

    def terms(self, which, V, W, H, beta, workspace):
        if V.is_sparse or not V.is_contiguous() or not self.product_form(V, W):
            return super().terms(which, V, W, H, beta, workspace)
        Y = self.reconstruct_into(V, W, H, workspace)  # into workspace["terms"][0]
        terms = workspace["terms"]
        neg, pos = div.mu_terms(V, Y, beta, out=Y, workspace=workspace)  # in place: into terms[0] and terms[1]
        if pos is None:  # beta = 1: the pull-back of ones is a sum
            return self._pull(which, neg[None], W, H, workspace)[0], self.ones_pullback(which, W, H)
        if beta == 2:  # neg is V itself
            terms[1].copy_(V)
            neg = terms[1]
        at = {terms[0].data_ptr(): 0, terms[1].data_ptr(): 1}
        if neg.data_ptr() in at and pos.data_ptr() in at and neg.data_ptr() != pos.data_ptr():
            pulled = self._pull(which, terms, W, H, workspace)
            return pulled[at[neg.data_ptr()]], pulled[at[pos.data_ptr()]]
        pulled = self._pull(which, torch.stack([neg, pos]), W, H, workspace)  # not where the workspace put them
        return pulled[0], pulled[1]


class Deconvolution(_ProductForm):
    r"""NMFD's operator: ``Y[n] = sum_t W[:, :, t] H[n, :, j - t]``, ``conv1d(H, W.flip(2), padding=T-1)``.

    Shapes: ``V (N, C, L + T - 1)``, ``W (C, R, T)``, ``H (N, R, L)``. The
    product form: ``Y[n] = Wf @ X[n]`` with ``Wf`` the templates with reversed
    lags as a ``(C, R T)`` matrix and ``X[n]`` the ``T`` lagged copies of
    ``H[n]`` (``R T, L + T - 1``), kept in the workspace. For beta = 2 the
    positive part is a small convolution with the Gram kernels of ``W`` (for
    ``H``) or a product with the autocorrelation of ``H`` (for ``W``): the
    reconstruction is never formed.

    Examples
    --------
    >>> import torch
    >>> from nmfcore._workspace import Workspace
    >>> op = Deconvolution()
    >>> W, H = torch.ones(5, 2, 3), torch.ones(1, 2, 8)
    >>> Y = op.reconstruct(H, W)
    >>> Y.shape, float(Y[0, 0, 4])
    (torch.Size([1, 5, 10]), 6.0)
    >>> op.pull("H", Y[None], W, H, Workspace()).shape   # (k, N, R, L)
    torch.Size([1, 1, 2, 8])
    """

    @staticmethod
    def reconstruct(H: Tensor, W: Tensor) -> Tensor:
        return F.conv1d(H, W.flip(2), padding=W.shape[2] - 1)

    def _product_into(self, V, W, H, workspace):
        return torch.matmul(_flipped(W), _lagged(H, W.shape[2], workspace), out=self.terms_buffer(V, W, workspace)[0])

    def _prepare_pull(self, which, W, H, workspace):
        if which == "W":
            _lagged(H, W.shape[2], workspace)

    def _pull(self, which, G, W, H, workspace):
        T = W.shape[2]
        if which == "H":
            return _pull_to_frames(G, _flipped(W), T, workspace)
        return _pull_to_templates(G, workspace["lags"].view(H.shape[0], -1, G.shape[-1]), T)

    def terms(self, which, V, W, H, beta, workspace):
        if beta != 2 or V.is_sparse or not V.is_contiguous():
            return super().terms(which, V, W, H, beta, workspace)
        # beta = 2: neg pulls V back through the convolution; pos = A^T A x is a small convolution
        # with the Gram kernels of the fixed factor: the reconstruction is never formed
        T = W.shape[2]
        if which == "H":
            neg = _pull_to_frames(V[None], _flipped(W), T, workspace)[0]
            # K[r, q, d] = sum_{t - s = d} sum_c W[c, r, t] W[c, q, s], d = -(T-1) .. T-1
            K = _diagonal_sums(torch.einsum("crt,cqs->rqts", W, W))
            return neg, F.conv1d(H, K, padding=T - 1)
        neg = _pull_to_templates(V[None], _lagged(H, T, workspace), T)[0]
        A = _autocorrelation(H, T)  # (R, R, 2T - 1), lag d at index d + T - 1
        # pos[c, r, t] = sum_{q, s} W[c, q, s] A[q, r, t - s]
        B = A[:, :, _lag_index(T, W.device).t()]  # (q, r, s, t)
        Bm = B.permute(0, 2, 1, 3).reshape(W.shape[1] * T, W.shape[1] * T)  # (q s, r t)
        return neg, (W.reshape(W.shape[0], -1) @ Bm).reshape(W.shape)


class TapPlanes(_ProductForm):
    """NMF2D's and NMF3D's operator: the convolution with a ``d``-dimensional kernel, in the product form.

    For every tap ``t`` of the kernel the planes ``Z[t] = W[:, :, t] @ H`` (one
    matrix product for all taps), added into Y at offset ``t``; the pull-backs
    read the data at every tap offset into one buffer and take one product
    each. The tap buffers hold (number of taps) x C times H's entries, so beyond
    :attr:`max_entries` the operator keeps torch's conv2d / conv3d (the
    generic path).

    Parameters
    ----------
    max_entries : int, default 2**25
        Largest product-form buffer.

    Examples
    --------
    >>> import torch
    >>> op = TapPlanes()
    >>> W, H = torch.ones(1, 2, 3, 3), torch.ones(1, 2, 6, 6)
    >>> op.reconstruct(H, W).shape
    torch.Size([1, 1, 8, 8])
    """

    def __init__(self, max_entries: int = 2 ** 25):
        self.max_entries = max_entries

    @staticmethod
    def reconstruct(H: Tensor, W: Tensor) -> Tensor:
        conv = F.conv2d if W.ndim == 4 else F.conv3d
        return conv(H, W.flip(tuple(range(2, W.ndim))), padding=tuple(k - 1 for k in W.shape[2:]))

    def product_form(self, V, W):
        taps, out = math.prod(W.shape[2:]), math.prod(v - k + 1 for v, k in zip(V.shape[2:], W.shape[2:]))
        return 2 * taps * V.shape[0] * V.shape[1] * out <= self.max_entries

    def _product_into(self, V, W, H, workspace):
        N, R, spatial = H.shape[0], H.shape[1], H.shape[2:]
        C, kernel = W.shape[0], W.shape[2:]
        Y = self.terms_buffer(V, W, workspace)[0]
        Z = torch.matmul(_taps(W), H.reshape(N, R, -1),
                         out=workspace.buffer("planes", (N, math.prod(kernel) * C, math.prod(spatial)), W))
        Z = Z.view(N, -1, C, *spatial)
        Y.zero_()
        for i, window in enumerate(_tap_windows(kernel, spatial)):
            Y[window] += Z[:, i]
        return Y

    def _pull(self, which, G, W, H, workspace):
        k, N, C = G.shape[:3]
        R, spatial, kernel = H.shape[1], H.shape[2:], W.shape[2:]
        n_taps = math.prod(kernel)
        # S[m, t, c, x] = G[m, c, x + t]: the data seen by every tap
        S = workspace.buffer("windows", (k * N, n_taps, C) + tuple(spatial), W)
        Gm = G.reshape((k * N, C) + tuple(G.shape[3:]))
        for i, window in enumerate(_tap_windows(kernel, spatial)):
            S[:, i].copy_(Gm[window])
        S = S.view(k * N, n_taps * C, -1)
        if which == "H":
            return torch.matmul(_taps(W).t(), S).view((k, N, R) + tuple(spatial))
        P = torch.einsum("knqx,nrx->kqr", S.view(k, N, n_taps * C, -1), H.reshape(N, R, -1))
        d = len(kernel)
        return P.reshape((k,) + tuple(kernel) + (C, R)).permute(0, d + 1, d + 2, *range(1, d + 1))


# ------------------------------------------------------------------ kernels
def _autocorrelation(H: Tensor, T: int) -> Tensor:
    """``A[q, r, d + T - 1] = sum_{n, l} H[n, q, l + d] H[n, r, l]`` for lags ``|d| < T``.

    One matrix product of the 2T - 1 shifted copies of H with H: ``F.conv1d(Hb, Hb)``
    computes the same with an L-long kernel and is an order of magnitude slower."""
    N, R, L = H.shape
    Hb = H.transpose(0, 1)  # (R, N, L)
    shifted = F.pad(Hb, (T - 1, T - 1)).unfold(2, L, 1)  # (R, N, 2T - 1, L): [q, n, j, l] = H[n, q, l + j - T + 1]
    X = shifted.permute(0, 2, 1, 3).reshape(R * (2 * T - 1), N * L)
    return (X @ Hb.reshape(R, N * L).t()).reshape(R, 2 * T - 1, R).permute(0, 2, 1)


def _diagonal_sums(G: Tensor) -> Tensor:
    """``K[r, q, d + T - 1] = sum_{t - s = d} G[r, q, t, s]`` for G of shape (R, R, T, T).

    One ``index_add_`` (a loop over the 2T - 1 diagonals launched 3 (2T - 1)
    kernels, which dominated an NMFD iteration on a GPU)."""
    R, Q, T, _ = G.shape
    return G.new_zeros(R, Q, 2 * T - 1).index_add_(2, _lag_index(T, G.device).reshape(-1), G.reshape(R, Q, T * T))


def _lag_index(T: int, device) -> Tensor:
    """``[t, s] -> t - s + T - 1``: where the lag ``t - s`` of two kernel taps sits in a (2T - 1)-long axis."""
    idx = torch.arange(T, device=device)
    return idx[:, None] - idx[None, :] + T - 1


def _taps(W: Tensor) -> Tensor:
    """NMF2D's / NMF3D's templates (C, R, *kernel) as the (taps C, R) matrix of the product form, rows (tap, c)."""
    return W.permute(*range(2, W.dim()), 0, 1).reshape(-1, W.shape[1])


def _tap_windows(kernel, spatial):
    """For every tap of the kernel, in :func:`_taps`'s order, the index (batch, channel, then one slice
    per axis) of the output region it writes H's ``spatial`` extent to."""
    for tap in itertools.product(*map(range, kernel)):
        yield (slice(None), slice(None)) + tuple(slice(t, t + n) for t, n in zip(tap, spatial))


def _flipped(W: Tensor) -> Tensor:
    """NMFD's templates (C, R, T) with the lags reversed, as the (C, R T) matrix of the product form."""
    return W.flip(2).reshape(W.shape[0], -1)


def _lagged(H: Tensor, T: int, workspace: Workspace) -> Tensor:
    """The T lagged copies of NMFD's activations: ``X[n, r T + s, j] = H[n, r, j + s - T + 1]`` (zero
    outside), shape (N, R T, L + T - 1), in the workspace, so that ``conv1d(H, W.flip(2), padding=T-1)``
    is ``_flipped(W) @ X``."""
    N, R, L = H.shape
    L_out = L + T - 1
    padded = workspace.buffer("padded", (N, R, L + 2 * T - 2), H)
    padded[:, :, :T - 1].zero_()
    padded[:, :, T - 1 + L:].zero_()
    padded[:, :, T - 1:T - 1 + L].copy_(H)
    lags = workspace.buffer("lags", (N, R, T, L_out), H)
    lags.copy_(padded.unfold(2, L_out, 1))  # window s starts at s: H[j + s - (T - 1)]
    return lags.view(N, R * T, L_out)


def _pull_to_frames(G: Tensor, Wf: Tensor, T: int, workspace: Workspace) -> Tensor:
    """Adjoint of NMFD's convolution with respect to H, for a stack G (k, N, C, L_out) of output-space
    tensors: (k, N, R, L_out - T + 1), ``sum_{c, t} W[c, r, t] G[c, j + t]``, as one matrix product
    and one strided sum over the lags."""
    k, N, C, L_out = G.shape
    RT = Wf.shape[1]
    L = L_out - T + 1
    P = torch.matmul(Wf.t(), G.reshape(k * N, C, L_out),
                     out=workspace.buffer("pulled", (k * N, RT, L_out), G))
    # [b, r, s, i] -> P[b, r T + s, i + T - 1 - s]: the lag s read at offset T - 1 - s
    lagged = P.as_strided((k * N, RT // T, T, L), (RT * L_out, T * L_out, L_out - 1, 1), P.storage_offset() + T - 1)
    return lagged.sum(2).view(k, N, RT // T, L)


def _pull_to_templates(G: Tensor, X: Tensor, T: int) -> Tensor:
    """Adjoint of NMFD's convolution with respect to W, for a stack G (k, N, C, L_out):
    (k, C, R, T), ``sum_{n, j} G[n, c, j] H[n, r, j - t]``, as one matrix product with the lags X."""
    k, N, C, L_out = G.shape
    if N == 1:
        P = G.reshape(k * C, L_out) @ X[0].t()
    else:
        P = torch.einsum("kncj,nqj->kcq", G, X)
    return P.reshape(k, C, -1, T).flip(3)
