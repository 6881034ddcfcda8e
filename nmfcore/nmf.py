r"""Non-negative matrix factorisation and its convolutional variants.

Every model is a :class:`BaseComponent` holding the parameters ``W`` and
``H`` and a static ``reconstruct(H, W)``: NMF is a matrix product, NMFD,
NMF2D and NMF3D are full-padded 1-, 2- and 3-D convolutions of ``H`` with the
flipped ``W``. One fit serves them all: the multiplicative update pulls the
two non-negative terms of the beta-divergence gradient back through the
model's operator (:mod:`nmfcore.operators`: reconstruction, pull-backs and
their closed forms); the solvers (:mod:`nmfcore.solvers`: multiplicative
updates, HALS for :class:`NMF` with ``beta=2``, the projected gradient of
``sparse_fit``) work on a :class:`~nmfcore.solvers.Problem` that owns the
rescaling of the data, and one loop (:mod:`nmfcore._fit`) drives them.

The public API matches the PyTorch NMF reference (``torchnmf.nmf``): the same
constructors, shapes, ``forward(H=None, W=None)``, ``fit`` and ``sparse_fit``.

References
----------
.. [1] D. D. Lee and H. S. Seung, "Algorithms for non-negative matrix
   factorization", NIPS 2001.
.. [2] C. Févotte and J. Idier, "Algorithms for nonnegative matrix
   factorization with the beta-divergence", Neural Computation 23(9), 2011.
.. [3] P. Smaragdis, "Non-negative matrix factor deconvolution; extraction of
   multiple sound sources from monophonic inputs", ICA 2004.
.. [4] M. N. Schmidt and M. Mørup, "Nonnegative matrix factor 2-D
   deconvolution for blind single channel source separation", ICA 2006.
.. [5] N. Gillis and F. Glineur, "Accelerated multiplicative updates and
   hierarchical ALS algorithms for nonnegative matrix factorization",
   Neural Computation 24(4), 2012.
.. [6] P. O. Hoyer, "Non-negative matrix factorization with sparseness
   constraints", JMLR 5, 2004.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Callable, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor
from torch.nn import Parameter

from . import _fit
from ._factors import FactorModule, initial_values
from ._checks import check_factor_pair, check_kernel_fits, kernel_tuple
from ._fit import run_iterations
from ._validation import (check_beta_for_data, check_fraction, check_mask, check_nonnegative_float,
                          check_positive_int, check_rank, make_generator,
                          value_range)
from .exceptions import ParameterError
from .init import INIT_METHODS, nndsvd, random_like_data
from .operators import AutogradOperator, Deconvolution, MatrixProduct, Operator, TapPlanes
from .solvers import HALS, MultiplicativeUpdates, Problem, ProjectedGradient

__all__ = ["BaseComponent", "NMF", "NMFD", "NMF2D", "NMF3D"]

_size_1_t = Union[int, Tuple[int]]
_size_2_t = Union[int, Tuple[int, int]]
_size_3_t = Union[int, Tuple[int, int, int]]

SOLVERS = ("auto", "mu", "hals")


def _init_param(value, name: str, trainable: bool, generator) -> Optional[Parameter]:
    """A Parameter from a shape (random |N(0,1)|) or a non-negative tensor."""
    data = initial_values(value, name, generator)
    return None if data is None else Parameter(data, requires_grad=trainable)


class BaseComponent(FactorModule):
    r"""Base class for all NMF modules.

    You can't use this module directly; models subclass it and define
    :meth:`reconstruct`.

    Parameters
    ----------
    rank : int, optional
        Size of the hidden dimension; inferred from ``W`` or ``H`` if given.
    W, H : tuple or Tensor, optional
        Shape (initialised with :math:`|N(0, 1)|` values) or initial values
        (non-negative) of the template tensor ``W`` and activation tensor ``H``.
        A given tensor keeps its dtype and device.
    trainable_W, trainable_H : bool, default True
        Whether the parameter is updated by :meth:`fit`; a frozen ``W`` is
        supervised NMF with a fixed dictionary.
    generator : torch.Generator or int, optional, keyword-only
        Source of the random initial values (the global RNG is never seeded).

    Attributes
    ----------
    W, H : torch.nn.Parameter or None
    rank : int
    operator : nmfcore.operators.Operator
        The forward operator (reconstruction and pull-backs) that the solvers
        use; for a subclass that only defines :meth:`reconstruct`, the generic
        autograd operator of it.
    time_axis : int or None
        Class attribute: the axis of ``H`` (and of ``V``) that is time, for
        the temporal-continuity penalty of :meth:`fit` (``continuity``) and for
        callers that need the number of frames; None where the model has no
        time axis.
    """

    #: The axis of H (and V) that is time (None: the model has none).
    time_axis: Optional[int] = None
    #: A sparse V at beta = 2 is densified up to this many entries (256 MiB in float32), so that its fit
    #: is the dense fit exactly (see :meth:`fit`); beyond, the operator's sparse products.
    SPARSE_DENSE_MAX_ENTRIES = 2 ** 26
    # A subclass keeping the rank on axis 1 of W and H may set this for the generic operator's
    # beta = 1 fast path (the pull-back of an all-ones output is a sum over the other axes).
    _ones_pullback_is_sum = False

    def __init__(self, rank: int = None, W=None, H=None, trainable_W: bool = True,
                 trainable_H: bool = True, *, generator=None):
        super().__init__()
        check_factor_pair(W, H)
        generator = make_generator(generator)
        self.W = _init_param(W, "W", trainable_W, generator)
        self.H = _init_param(H, "H", trainable_H, generator)
        self._check_rank_axes()
        ranks = {n: p.shape[1] for n, p in (("W", self.W), ("H", self.H)) if p is not None}
        if len(set(ranks.values())) > 1:
            raise ParameterError(f"rank mismatch: W has rank {ranks['W']} but H has rank {ranks['H']} (axis 1)")
        if ranks:
            inferred = next(iter(ranks.values()))
            if rank is not None and rank != inferred:
                check_rank(rank)
                raise ParameterError(f"rank={rank} does not match the rank {inferred} on axis 1 of W/H")
            rank = inferred
        self.rank = check_rank(rank)
        self._record_shapes()

    # ------------------------------------------------------------------ model
    def forward(self, H: Tensor = None, W: Tensor = None) -> Tensor:
        """Reconstruction from ``H`` and ``W`` (default: the module's own)."""
        H = self.H if H is None else H
        W = self.W if W is None else W
        if H is None or W is None:
            missing = "H" if H is None else "W"
            raise ParameterError(f"{missing} is None: give it to forward() or to the constructor")
        return self.reconstruct(H, W)

    @staticmethod
    def reconstruct(H: Tensor, W: Tensor) -> Tensor:
        """The model's operator; overridden by every subclass."""
        raise NotImplementedError

    @property
    def operator(self) -> Operator:
        """The forward operator of this model (:mod:`nmfcore.operators`): the built-in models set it as a
        class attribute; here, the generic autograd operator of :meth:`reconstruct`."""
        return AutogradOperator(self.reconstruct, self._ones_pullback_is_sum)

    # ---------------------------------------------------------------- fitting
    def _check_fit_input(self, V, beta):
        """Validate V against the model; returns ``(V, beta, max(V))``."""
        if self.W is None or self.H is None:
            missing = "W" if self.W is None else "H"
            raise ParameterError(f"fit needs both W and H, but {missing} is None")
        vmin, vmax = value_range(V, "V")
        with torch.no_grad():
            expected = tuple(self.operator.output_shape(self.W.detach(), self.H.detach()))
        if tuple(V.shape) != expected:
            raise ParameterError(f"V has shape {tuple(V.shape)} but the model reconstructs shape {expected}")
        if V.dtype != self.W.dtype or V.device != self.W.device:
            raise ParameterError(f"V is {V.dtype} on {V.device} but the model is {self.W.dtype} on "
                                 f"{self.W.device}: move one with .to()")
        return V, check_beta_for_data(beta, vmin), vmax

    def _initialize(self, V: Tensor, init: str, generator):
        if init not in INIT_METHODS:
            raise ParameterError(f"init={init!r} must be one of {INIT_METHODS} or None")
        W, H = self.W.detach(), self.H.detach()
        if init == "random":
            n_terms = self.rank * (math.prod(W.shape[2:]) if W.ndim > 2 else 1)
            W0, H0 = random_like_data(V, W.shape, H.shape, n_terms, generator)
        else:
            W0, H0 = self._nndsvd_init(V, init, generator)
        with torch.no_grad():
            if self.W.requires_grad:
                W.copy_(W0)
            if self.H.requires_grad:
                H.copy_(H0)

    def _nndsvd_init(self, V, variant, generator):
        raise ParameterError(f"init={variant!r} is available for NMF and NMFD only, not {type(self).__name__}")

    def fit(self, V: Tensor, beta: float = 1, tol: float = 1e-4, max_iter: int = 200, verbose: bool = False,
            alpha: float = 0, l1_ratio: float = 0, *, init: Optional[str] = None, generator=None,
            callback: Optional[Callable[[int, float], Optional[bool]]] = None, solver: str = "auto",
            check_every: int = 10, continuity: float = 0.0,
            frozen_W_columns: Optional[Sequence[int]] = None, mask: Optional[Tensor] = None) -> int:
        r"""Learn the factors by minimising the beta-divergence to ``V``.

        The objective is

        .. math::
            d_\beta(V \,|\, \hat V) + \alpha\, l_{1}\!\text{ratio}\,(\|W\|_1 + \|H\|_1)
            + \tfrac{\alpha (1 - l_{1}\!\text{ratio})}{2} (\|W\|_2^2 + \|H\|_2^2)
            + \lambda\, c(H)

        with :math:`c` the temporal continuity of :mod:`nmfcore.penalties`
        (``continuity`` :math:`= \lambda`, 0 by default),

        minimised by multiplicative updates with the exponent of
        :func:`nmfcore.divergence.mu_exponent` (the objective never increases),
        or, for :class:`NMF` with ``beta=2``, by hierarchical alternating least
        squares ([5]_), which reaches the same loss several times faster.
        Parameters created with ``trainable_*=False`` are never changed.

        Parameters
        ----------
        V : torch.Tensor
            Non-negative data of the model's output shape, on the model's
            device and dtype. :class:`NMF` also takes a
            ``torch.sparse_coo_tensor`` (same factors as the dense tensor).
        beta : float, default 1
            Divergence: 2 Euclidean, 1 Kullback-Leibler, 0 Itakura-Saito.
        tol : float, default 1e-4
            Stop when ``(e_prev - e) / e_0 < tol`` with ``e = sqrt(2 loss)``,
            checked every ``check_every`` iterations; 0 runs ``max_iter``.
        max_iter : int, default 200
        verbose : bool, default False
            Show a progress bar.
        alpha : float, default 0
            Regularisation strength.
        l1_ratio : float in [0, 1], default 0
            Mix of L1 (1) and L2 (0) penalties.
        init : {None, 'random', 'nndsvd', 'nndsvda', 'nndsvdar'}, keyword-only
            Re-initialise the trainable factors from ``V`` first; ``None``
            keeps the current values. In either case (without ``alpha``)
            the fit starts from ``H`` (``W`` where ``H`` is frozen)
            multiplied by ``sum(V) / sum(W H)``, so that the fit of
            ``c V`` is ``c`` times the fit of ``V`` for any ``c > 0``,
            init and solver (from subnormal data to the largest floats).
        generator : torch.Generator or int, keyword-only
            Randomness of ``init`` (reproducible runs).
        callback : callable, keyword-only
            ``callback(iteration, loss)`` at iteration 0 and at every check;
            returning ``True`` stops the fit.
        solver : {'auto', 'mu', 'hals'}, keyword-only
            ``'auto'`` is HALS for :class:`NMF` with ``beta=2`` on the CPU, else
            MU (on a GPU, MU replayed from a CUDA graph is faster than HALS's
            column sweeps).
        check_every : int, default 10, keyword-only
            Iterations between loss evaluations.
        continuity : float, default 0, keyword-only
            Weight of Virtanen's temporal-continuity penalty on ``H``
            (:mod:`nmfcore.penalties`) along its time axis: the rows of ``H``
            (``V``'s first axis) for :class:`NMF`, the last axis for
            :class:`NMFD`. It is scale-free in ``H``, so choose it relative
            to the divergence (e.g. ``0.1 * V.sum() / (rank * frames)`` for
            beta = 1). With it, ``H`` takes Virtanen's multiplicative update,
            which is not proven monotone (the divergence's updates are), and
            ``solver='auto'`` is MU.
        frozen_W_columns : sequence of int, optional, keyword-only
            Components ``r`` whose templates ``W[:, r]`` stay as they are
            (also through ``init``) while the other templates are learnt:
            semi-supervised NMF with a partly fixed dictionary.
            ``trainable_W=False`` freezes all of them.
        mask : torch.Tensor, optional, keyword-only
            Non-negative weights (or booleans) broadcastable to ``V``: the
            divergence becomes :math:`\sum m\, d_\beta(v | \hat v)`, so that
            entries with weight 0 (missing or clipped bins) do not count. The
            mask multiplies both output-space terms of the update before the
            operator's pull-back (:class:`~nmfcore.solvers.Problem`); the
            solver is MU.

        Returns
        -------
        int
            Number of iterations run.

        Raises
        ------
        ParameterError
            Negative, NaN or infinite ``V``; shape, dtype or device mismatch;
            ``beta <= 0`` with zeros in ``V``; ``l1_ratio`` outside [0, 1];
            ``frozen_W_columns`` outside ``range(rank)``; a mask of the wrong
            shape or with negative weights.

        Examples
        --------
        >>> import torch
        >>> from nmfcore.nmf import NMF
        >>> g = torch.Generator().manual_seed(0)
        >>> V = torch.rand(20, 30, generator=g)
        >>> m = NMF(V.shape, 5, generator=0)
        >>> n_iter = m.fit(V, beta=1, max_iter=50, tol=0)
        >>> n_iter, bool((m.W >= 0).all()), bool((m.H >= 0).all())
        (50, True, True)
        """
        V, beta, vmax = self._check_fit_input(V, beta)
        operator = self.operator
        M = check_mask(mask, V)
        # a sparse V at beta = 2 is densified up to SPARSE_DENSE_MAX_ENTRIES: the sparse products
        # V W and V^T H round differently from the dense BLAS ones (1e-7 relative, up to 2e-4 in
        # the factors after 5 HALS iterations), so that a sparse V gives the dense fit exactly
        if V.is_sparse and (M is not None or not operator.sparse_native(beta)
                            or (beta == 2 and math.prod(V.shape) <= self.SPARSE_DENSE_MAX_ENTRIES)):
            V = V.to_dense()
        if M is not None and solver == "hals":
            raise ParameterError("solver='hals' does not take a mask: use solver='mu' or 'auto'")
        tol = check_nonnegative_float(tol, "tol")
        max_iter = int(max_iter) if max_iter == 0 else check_positive_int(max_iter, "max_iter")
        check_every = check_positive_int(check_every, "check_every")
        alpha = check_nonnegative_float(alpha, "alpha")
        l1_ratio = check_fraction(l1_ratio, "l1_ratio", low_inclusive=True, high_inclusive=True)
        if solver not in SOLVERS:
            raise ParameterError(f"solver={solver!r} must be one of {SOLVERS}")
        if callback is not None and not callable(callback):
            raise ParameterError(f"callback={callback!r} must be callable")
        continuity = check_nonnegative_float(continuity, "continuity")
        if continuity and self.time_axis is None:
            raise ParameterError(f"continuity={continuity!r} is available for NMF and NMFD only, "
                                 f"not {type(self).__name__}")
        if continuity and solver == "hals":
            raise ParameterError(f"continuity={continuity!r} needs solver='mu' or 'auto', not 'hals'")
        frozen = self._check_frozen_columns(frozen_W_columns)
        solver = "mu" if continuity or M is not None else self.resolve_solver(solver, beta, V.device)
        generator = make_generator(generator, V.device)
        if init is not None and init not in INIT_METHODS:
            raise ParameterError(f"init={init!r} must be one of {INIT_METHODS} or None")
        # the initialisation runs inside the Problem, on the rescaled data (see Problem), masked
        initialize = None if init is None else (
            lambda Vs: self._initialize(Vs if M is None else Vs * M, init, generator))
        with torch.no_grad():
            prob = Problem(operator, self.W, self.H, V, beta, l1=alpha * l1_ratio, l2=alpha * (1 - l1_ratio),
                           continuity=continuity, time_axis=self.time_axis, vmax=vmax, frozen_W_columns=frozen,
                           initialize=initialize, mask=M)
            try:
                step = (HALS(prob) if solver == "hals" else MultiplicativeUpdates(prob)).step
                if solver == "mu" and V.is_cuda and not V.is_sparse and _fit.CUDA_GRAPHS \
                        and max_iter >= _fit.GRAPH_MIN_ITER:
                    step = _fit.cuda_graphed(step, V.device)
                return run_iterations(step, prob.objective, max_iter=max_iter, tol=tol, check_every=check_every,
                                      callback=callback, verbose=verbose, desc=type(self).__name__)
            finally:
                prob.restore()

    def _check_frozen_columns(self, columns) -> list:
        """``frozen_W_columns`` as a sorted list of distinct component indices."""
        if columns is None:
            return []
        values = [columns] if isinstance(columns, numbers.Integral) else list(columns)
        if not all(isinstance(c, numbers.Integral) and not isinstance(c, bool) and 0 <= c < self.rank
                   for c in values):
            raise ParameterError(f"frozen_W_columns={columns!r} must be component indices in [0, {self.rank})")
        return sorted(set(int(c) for c in values))

    def resolve_solver(self, solver: str, beta: float, device: torch.device) -> str:
        """The solver :meth:`fit` runs for ``solver`` (``'auto'`` resolved) at ``beta`` on ``device``.

        Raises :class:`~nmfcore.exceptions.ParameterError` where the model does not offer it.
        """
        if solver == "hals":
            raise ParameterError(f"solver='hals' is available for NMF only, not {type(self).__name__}")
        return "mu"

    def sparse_fit(self, V: Tensor, beta: float = 2, max_iter: int = 200, verbose: bool = False,
                   sW: Optional[float] = None, sH: Optional[float] = None, *,
                   callback: Optional[Callable[[int, float], Optional[bool]]] = None,
                   check_every: int = 10) -> int:
        r"""Learn the factors with Hoyer's sparseness constraints ([6]_).

        Minimises the beta-divergence subject to every component ``W[:, r]``
        (if ``sW`` is given) and ``H[:, r]`` (if ``sH`` is given) having the
        sparseness :func:`nmfcore.metrics.sparseness` equal to the target.
        A constrained factor takes projected gradient steps with a step-size
        search that never increases the loss; an unconstrained one takes
        multiplicative updates. Always runs ``max_iter`` iterations. Hoyer
        used ``beta=2``; other values work but carry no guarantee.

        Parameters
        ----------
        V : torch.Tensor
            Non-negative data (a sparse COO tensor is densified first).
        beta : float, default 2
        max_iter : int, default 200
        verbose : bool, default False
        sW, sH : float in (0, 1) or None
            Target sparseness of the components of ``W`` and ``H``.
        callback : callable, keyword-only
            As in :meth:`fit` (returning ``True`` stops).

        Returns
        -------
        int
            Number of iterations run.

        Examples
        --------
        >>> import torch
        >>> from nmfcore.nmf import NMF
        >>> from nmfcore.metrics import sparseness
        >>> V = torch.rand(30, 40, generator=torch.Generator().manual_seed(0))
        >>> m = NMF(V.shape, 4, generator=0)
        >>> m.sparse_fit(V, max_iter=20, sH=0.6)
        20
        >>> round(float(sparseness(m.H.detach()[:, 0])), 3)
        0.6
        """
        if V.is_sparse:
            V = V.to_dense()
        V, beta, vmax = self._check_fit_input(V, beta)
        max_iter = check_positive_int(max_iter, "max_iter")
        for name, s in (("sW", sW), ("sH", sH)):
            if s is not None:
                check_fraction(s, name, low_inclusive=False, high_inclusive=False)
        with torch.no_grad():
            prob = Problem(self.operator, self.W, self.H, V, beta, vmax=vmax)
            try:
                solver = ProjectedGradient(prob, {"W": sW, "H": sH})
                return run_iterations(solver.step, prob.objective, max_iter=max_iter, tol=0.0,
                                      check_every=check_every, callback=callback, verbose=verbose,
                                      desc=type(self).__name__)
            finally:
                prob.restore()


class NMF(BaseComponent):
    r"""Non-Negative Matrix Factorization (NMF).

    Find two non-negative matrices whose product approximates the non-negative
    matrix V: :math:`V \approx H W^T` ([1]_).

    Parameters
    ----------
    Vshape : tuple, optional
        Size of the target matrix V; ``W`` and ``H`` are inferred from it.
    rank : int, optional
        Size of the hidden dimension.
    **kwargs
        Passed to :class:`BaseComponent` (``W``, ``H``, ``trainable_W``,
        ``trainable_H``, ``generator``).

    Shape
    -----
    - V: :math:`(N, C)`
    - W: :math:`(C, R)`
    - H: :math:`(N, R)`

    Examples
    --------
    >>> import torch
    >>> V = torch.rand(20, 30)
    >>> m = NMF(V.shape, 5)
    >>> m.W.size()
    torch.Size([30, 5])
    >>> m.H.size()
    torch.Size([20, 5])
    >>> HWt = m()
    >>> HWt.size()
    torch.Size([20, 30])
    """

    time_axis = 0  # V (frames, features): H (frames, rank)
    operator = MatrixProduct()

    def __init__(self, Vshape: Iterable = None, rank: int = None, **kwargs):
        if Vshape is not None:
            shape = tuple(Vshape)
            if len(shape) != 2:
                raise ParameterError(f"Vshape={shape} must have 2 entries (N, C) for NMF")
            M, K = shape
            rank = check_rank(rank if rank is not None else K)
            kwargs["W"] = (K, rank)
            kwargs["H"] = (M, rank)
        super().__init__(rank, **kwargs)

    @staticmethod
    def reconstruct(H: Tensor, W: Tensor) -> Tensor:
        """``H @ W.T`` (:class:`~nmfcore.operators.MatrixProduct`)."""
        return MatrixProduct.reconstruct(H, W)

    def _nndsvd_init(self, V, variant, generator):
        return nndsvd(V, self.rank, variant, generator)

    def resolve_solver(self, solver: str, beta: float, device: torch.device) -> str:
        if solver == "hals" and beta != 2:
            raise ParameterError(f"solver='hals' minimises beta=2 only, got beta={beta:g}")
        if solver == "auto":
            # HALS sweeps one column at a time: on a GPU they are bound by kernel launches and
            # MU replayed from a CUDA graph reaches the same loss sooner
            return "hals" if beta == 2 and device.type == "cpu" else "mu"
        return solver


class NMFD(BaseComponent):
    r"""Non-negative Matrix Factor Deconvolution (NMFD, [3]_).

    Find a non-negative matrix H and 3-dimensional tensor W whose convolution
    approximates V:

    .. math::
        V_{i,j} \approx \sum_{t=0}^{T-1} \sum_{r=0}^{\text{rank}-1} W_{i,r,t} H_{r, j - t}

    An extra batch dimension is required on V, as in PyTorch.

    Parameters
    ----------
    Vshape : tuple, optional
        Size of the target V ``(N, C, L_out)``.
    rank : int, optional
    T : int, default 1
        Size of the convolving window.
    **kwargs
        Passed to :class:`BaseComponent`.

    Shape
    -----
    - V: :math:`(N, C, L_{out})`
    - W: :math:`(C, R, T)`
    - H: :math:`(N, R, L_{in})` with :math:`L_{in} = L_{out} - T + 1`

    Examples
    --------
    >>> import torch
    >>> V = torch.rand(33, 50).unsqueeze(0)
    >>> m = NMFD(V.shape, 16, 3)
    >>> m.W.size()
    torch.Size([33, 16, 3])
    >>> m.H.size()
    torch.Size([1, 16, 48])
    >>> m().size()
    torch.Size([1, 33, 50])
    """

    time_axis = 2  # H (batch, rank, frames)
    operator = Deconvolution()

    def __init__(self, Vshape: Iterable = None, rank: int = None, T: _size_1_t = 1, **kwargs):
        if Vshape is not None:
            (T,) = kernel_tuple(T, 1, "T")
            shape = tuple(Vshape)
            if len(shape) != 3:
                raise ParameterError(f"Vshape={shape} must have 3 entries (N, C, L) for NMFD")
            batch, K, M = shape
            if not 1 <= T <= M:
                raise ParameterError(f"T={T} must lie in [1, {M}] (the length of V)")
            rank = check_rank(rank if rank is not None else K)
            kwargs["W"] = (K, rank, T)
            kwargs["H"] = (batch, rank, M - T + 1)
        super().__init__(rank, **kwargs)

    @staticmethod
    def reconstruct(H: Tensor, W: Tensor) -> Tensor:
        """``conv1d(H, W.flip(2), padding=T - 1)`` (:class:`~nmfcore.operators.Deconvolution`)."""
        return Deconvolution.reconstruct(H, W)

    def _nndsvd_init(self, V, variant, generator):
        # NNDSVD of the batch-concatenated spectrogram, the same template at every lag
        X = V.permute(0, 2, 1).reshape(-1, V.shape[1])
        W0, H0 = nndsvd(X, self.rank, variant, generator)
        T = self.W.shape[2]
        W = (W0 / T).unsqueeze(2).expand(-1, -1, T).contiguous()
        H = H0.reshape(V.shape[0], V.shape[2], self.rank).permute(0, 2, 1)[..., : self.H.shape[2]].contiguous()
        return W, H


class NMF2D(BaseComponent):
    r"""Nonnegative Matrix Factor 2-D Deconvolution (NMF2D, [4]_).

    .. math::
        V_{i,j,k} \approx \sum_{l=0}^{k_1-1} \sum_{m=0}^{k_2-1} \sum_{r=0}^{\text{rank}-1}
        W_{i,r,l,m} H_{r, j-l,k-m}

    Parameters
    ----------
    Vshape : tuple, optional
        Size of the target V ``(N, C, L_out, M_out)``.
    rank : int, optional
    kernel_size : int or tuple, default 1
    **kwargs
        Passed to :class:`BaseComponent`.

    Shape
    -----
    - V: :math:`(N, C, L_{out}, M_{out})`
    - W: :math:`(C, R, k_1, k_2)`
    - H: :math:`(N, R, L_{out} - k_1 + 1, M_{out} - k_2 + 1)`

    Examples
    --------
    >>> import torch
    >>> V = torch.rand(33, 50).unsqueeze(0).unsqueeze(0)
    >>> m = NMF2D(V.shape, 16, 3)
    >>> m.W.size()
    torch.Size([1, 16, 3, 3])
    >>> m.H.size()
    torch.Size([1, 16, 31, 48])
    >>> m().size()
    torch.Size([1, 1, 33, 50])
    """

    def __init__(self, Vshape: Iterable = None, rank: int = None, kernel_size: _size_2_t = 1, **kwargs):
        if Vshape is not None:
            kernel_size = kernel_tuple(kernel_size, 2)
            shape = tuple(Vshape)
            if len(shape) != 4:
                raise ParameterError(f"Vshape={shape} must have 4 entries (N, C, L, M) for NMF2D")
            batch, channel, K, M = shape
            check_kernel_fits(kernel_size, (K, M))
            rank = check_rank(rank if rank is not None else K)
            kwargs["W"] = (channel, rank) + tuple(kernel_size)
            kwargs["H"] = (batch, rank, K - kernel_size[0] + 1, M - kernel_size[1] + 1)
        super().__init__(rank, **kwargs)

    operator = TapPlanes()

    @staticmethod
    def reconstruct(H: Tensor, W: Tensor) -> Tensor:
        """``conv2d(H, W.flip((2, 3)))`` with full padding (:class:`~nmfcore.operators.TapPlanes`)."""
        return TapPlanes.reconstruct(H, W)


class NMF3D(BaseComponent):
    r"""Nonnegative Matrix Factor 3-D Deconvolution (NMF3D).

    .. math::
        V_{i,j,k,l} \approx \sum_{m,n,u} \sum_{r=0}^{\text{rank}-1} W_{i,r,m,n,u} H_{r,j-m,k-n,l-u}

    Parameters
    ----------
    Vshape : tuple, optional
        Size of the target V ``(N, C, L_out, M_out, O_out)``.
    rank : int, optional
    kernel_size : int or tuple, default 1
    **kwargs
        Passed to :class:`BaseComponent`.

    Shape
    -----
    - V: :math:`(N, C, L_{out}, M_{out}, O_{out})`
    - W: :math:`(C, R, k_1, k_2, k_3)`
    - H: :math:`(N, R, L_{out} - k_1 + 1, M_{out} - k_2 + 1, O_{out} - k_3 + 1)`

    Examples
    --------
    >>> import torch
    >>> V = torch.rand(3, 16, 16, 20).unsqueeze(0)
    >>> m = NMF3D(V.shape, 8, (5, 5, 4))
    >>> m.W.size()
    torch.Size([3, 8, 5, 5, 4])
    >>> m.H.size()
    torch.Size([1, 8, 12, 12, 17])
    >>> m().size()
    torch.Size([1, 3, 16, 16, 20])
    """

    def __init__(self, Vshape: Iterable = None, rank: int = None, kernel_size: _size_3_t = 1, **kwargs):
        if Vshape is not None:
            kernel_size = kernel_tuple(kernel_size, 3)
            shape = tuple(Vshape)
            if len(shape) != 5:
                raise ParameterError(f"Vshape={shape} must have 5 entries (N, C, L, M, O) for NMF3D")
            batch, channel, N, K, M = shape
            check_kernel_fits(kernel_size, (N, K, M))
            rank = check_rank(rank if rank is not None else K)
            kwargs["W"] = (channel, rank) + tuple(kernel_size)
            kwargs["H"] = (batch, rank, N - kernel_size[0] + 1, K - kernel_size[1] + 1, M - kernel_size[2] + 1)
        super().__init__(rank, **kwargs)

    operator = TapPlanes()

    @staticmethod
    def reconstruct(H: Tensor, W: Tensor) -> Tensor:
        """``conv3d(H, W.flip((2, 3, 4)))`` with full padding (:class:`~nmfcore.operators.TapPlanes`)."""
        return TapPlanes.reconstruct(H, W)
