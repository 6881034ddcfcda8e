r"""Non-negative matrix factorisation and its convolutional variants.

Every model is a :class:`BaseComponent` holding the parameters ``W`` and
``H`` and a static ``reconstruct(H, W)``: NMF is a matrix product, NMFD,
NMF2D and NMF3D are full-padded 1-, 2- and 3-D convolutions of ``H`` with the
flipped ``W``. One fit serves them all: the multiplicative update pulls the
two non-negative terms of the beta-divergence gradient back through the
model's reconstruction (a vector-Jacobian product, see
:mod:`nmfcore.divergence`); :class:`NMF` adds closed forms of the same terms
that avoid work (pinned by tests to equal the general path) and, for
``beta=2``, the HALS solver.

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

import itertools
import math
import numbers
import warnings
from collections.abc import Iterable
from typing import Callable, List, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import Parameter

from . import _scale
from . import divergence as div
from . import _fit
from ._fit import run_iterations
from ._checks import check_factor_pair, kernel_tuple
from ._hoyer import l1_for_sparseness, project_columns
from .penalties import temporal_continuity, temporal_continuity_terms
from ._validation import (check_beta_for_data, check_fraction, check_nonnegative_float,
                          check_nonnegative_tensor, check_positive_int, check_rank, make_generator,
                          memory_order, value_range)
from .exceptions import ParameterError
from .init import INIT_METHODS, nndsvd, random_like_data

__all__ = ["BaseComponent", "NMF", "NMFD", "NMF2D", "NMF3D"]

_size_1_t = Union[int, Tuple[int]]
_size_2_t = Union[int, Tuple[int, int]]
_size_3_t = Union[int, Tuple[int, int, int]]

SOLVERS = ("auto", "mu", "hals")
# Over-relaxation factors of the multiplicative step, each used only where certified
# monotone (divergence.multiplicative_step): about half the iterations of the plain
# update to a given loss for beta in {-0.5, 0.5, 1, 2, 3} in bench/speed.py.
MU_RELAX = (1.9, 1.3)


def _init_param(value, name: str, trainable: bool, generator) -> Optional[Parameter]:
    """A Parameter from a shape (random |N(0,1)|) or a non-negative tensor."""
    if value is None:
        return None
    if isinstance(value, Tensor):
        check_nonnegative_tensor(value, name)
        return Parameter(value.detach().clone(), requires_grad=trainable)
    if isinstance(value, Iterable):
        shape = tuple(value)
        if not shape or not all(isinstance(s, numbers.Integral) and s >= 1 for s in shape):
            raise ParameterError(f"{name}={shape!r} must be a shape of positive integers or a tensor")
        gen = make_generator(generator)
        data = torch.randn(shape, generator=gen).abs_()
        return Parameter(data, requires_grad=trainable)
    raise ParameterError(f"{name} must be a shape tuple or a tensor, got {type(value).__name__}")


class _Scaled:
    """The fitting problem rescaled so that ``max(V)`` lies in [1, 2).

    The beta-divergence is homogeneous, ``d(sV | sY) = s**beta d(V | Y)``, and
    every reconstruction is linear in ``H`` and in ``W``: fitting ``V / s``
    with the scale moved into one trainable factor follows the same path as
    fitting ``V`` while keeping every intermediate value near 1 (data from
    the smallest subnormal to the largest float fits). ``s`` is a power of
    two, so the rescaling is exact, and data already within [2**-10, 2**10]
    is not copied at all. ``initialize`` (the fit's ``init``) runs on the
    scaled data, and then the carrier is multiplied so that the starting
    product has the data's sum (:func:`nmfcore._scale.match_product`): the
    fit of ``c V`` is ``c`` times the fit of ``V`` for every ``c > 0``,
    init and solver. Penalties are rescaled to keep the objective the same,
    and losses are reported in the original units (``inf`` where they exceed
    the largest float).
    """

    def __init__(self, model: "BaseComponent", V: Tensor, beta: float, l1: float, l2: float, vmax: float,
                 continuity: float = 0.0, initialize: Optional[Callable[[Tensor], None]] = None):
        self.model = model
        self.beta = beta
        self.W = model.W.detach()
        self.H = model.H.detach()
        self.train_W = model.W.requires_grad
        self.train_H = model.H.requires_grad
        # the factor that carries the scale
        self.carrier = self.H if self.train_H else (self.W if self.train_W else None)
        e = _scale.pow2_exponent(vmax) if self.carrier is not None else 0
        self.e = e
        s = self.s = _scale.pow2(e)
        if V.is_sparse:
            V = _scale.scale_pow2(V.coalesce(), -e)
        else:
            V = _scale.scale_pow2(V, -e)  # exact; the product keeps V's memory layout
            # a strided V is copied once where the updates pass over it elementwise and the
            # model cannot write its reconstruction in V's layout (matrix products take any)
            if model._passes_over_data(beta) and not model._reconstructs_in_layout(V):
                V = V.contiguous()
        self.V = V
        # objective / s**beta: penalty on the carrier scales by s**(1-beta) (L1)
        # and s**(2-beta) (L2); on the other factor by s**(-beta) (as powers of two:
        # s**beta overflows a float for float64 data near 1e300)
        sb = _scale.pow2(-e * beta)
        times = _scale.times  # 0 * inf is 0 here: an absent penalty stays absent
        pen = {"W": (times(l1, sb), times(l2, sb)), "H": (times(l1, sb), times(l2, sb))}
        if self.carrier is not None:
            key = "H" if self.carrier is self.H else "W"
            pen[key] = (times(l1, _scale.pow2(e * (1 - beta))), times(l2, _scale.pow2(e * (2 - beta))))
        self.penalty = pen
        # the continuity penalty does not change with the scale of H
        self.continuity = times(continuity, sb)
        self.loss_scale = _scale.pow2(e * beta)  # inf where the loss in V's units is not a float
        self.ws: dict = {}  # workspace shared by the loss and the solver
        if initialize is not None:
            # on the data divided by its maximum (an exact copy of V's shape for every scale c:
            # NNDSVDa's fill with the mean is not homogeneous in V), and no overflow at 1e38;
            # the carrier then takes that maximum back (the product is near the scaled V)
            peak = math.ldexp(vmax, -e) if vmax > 0 else 1.0  # exact (2**1063 is no float)
            initialize(self.V if peak == 1.0 else _scale.divide(self.V, peak))
            if peak != 1.0 and self.carrier is not None:
                self.carrier.mul_(peak)
        # the starting product takes the data's scale (exact factor, not a power of two):
        # this makes the fit of c V equal c times the fit of V for every init and solver
        # (penalties in V's units make the objective inhomogeneous: the start is kept then)
        if not (l1 or l2):
            _scale.match_product(model, self.V, self.W, self.H, self.carrier)

    def restore(self):
        if self.carrier is not None and self.s != 1.0:
            other = self.W if self.carrier is self.H else self.H
            trainable = self.train_W if self.carrier is self.H else self.train_H
            _scale.restore_pow2_(self.carrier, other if trainable else None, self.e)
        self.carrier = None

    def objective(self) -> float:
        """Divergence plus penalties, in the units of the original data."""
        value = float(self.model._loss(self.V, self.W, self.H, self.beta, self.ws))
        for name, X in (("W", self.W), ("H", self.H)):
            l1, l2 = self.penalty[name]
            if l1:
                value += l1 * float(X.sum())
            if l2:
                value += 0.5 * l2 * float(X.square().sum())
        if self.continuity:
            value += self.continuity * float(temporal_continuity(self.H, self.model._time_axis))
        return value * self.loss_scale if value else 0.0


class BaseComponent(torch.nn.Module):
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
    """

    # Built-in models keep the rank on axis 1 of W and H, so that the pull-back
    # of an all-ones output is a sum over every other axis (the beta=1 fast path).
    _ones_pullback_is_sum = False
    # Axis of H that is time, for the temporal-continuity penalty (None: not available)
    _time_axis: Optional[int] = None

    def __init__(self, rank: int = None, W=None, H=None, trainable_W: bool = True,
                 trainable_H: bool = True, *, generator=None):
        super().__init__()
        check_factor_pair(W, H)
        generator = make_generator(generator)
        self.W = _init_param(W, "W", trainable_W, generator)
        self.H = _init_param(H, "H", trainable_H, generator)
        ranks = {n: p.shape[1] for n, p in (("W", self.W), ("H", self.H)) if p is not None and p.ndim > 1}
        for n, p in (("W", self.W), ("H", self.H)):
            if p is not None and p.ndim < 2:
                raise ParameterError(f"{n} must have at least 2 dimensions (rank on axis 1), got shape {tuple(p.shape)}")
        if len(set(ranks.values())) > 1:
            raise ParameterError(f"rank mismatch: W has rank {ranks['W']} but H has rank {ranks['H']} (axis 1)")
        if ranks:
            inferred = next(iter(ranks.values()))
            if rank is not None and rank != inferred:
                check_rank(rank)
                raise ParameterError(f"rank={rank} does not match the rank {inferred} on axis 1 of W/H")
            rank = inferred
        self.rank = check_rank(rank)
        if self.W is not None:
            self.out_channels = self.W.shape[0]
            if self.W.ndim > 2:
                self.kernel_size = tuple(self.W.shape[2:])

    def extra_repr(self) -> str:
        s = f"{self.rank}"
        if self.W is not None:
            s += f", out_channels={self.out_channels}"
            if hasattr(self, "kernel_size"):
                s += f", kernel_size={self.kernel_size}"
        return s

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

    # ------------------------------------------- update terms (one machinery)
    def _general_terms(self, which: str, V: Tensor, W: Tensor, H: Tensor, beta: float):
        """(neg, pos) for ``which`` by vector-Jacobian products of the reconstruction.

        The reference path every fast path is tested against; it works for
        any subclass that defines :meth:`reconstruct`.
        """
        V = V.to_dense() if V.is_sparse else V
        Y, pull = self._vjp(which, W, H)
        neg_out, pos_out = div.mu_terms(V, Y, beta)
        if pos_out is None:
            pos_out = torch.ones_like(Y)
        return pull(neg_out), pull(pos_out)

    def _vjp(self, which: str, W: Tensor, H: Tensor):
        """Reconstruction and its vector-Jacobian product with respect to ``which``.

        Returns ``(Y, pull)`` where ``pull(G)`` is :math:`J^T G`, the pull-back
        of an output-space tensor ``G`` to the parameter ``which``. The
        reconstruction is linear in each factor, so this is its adjoint.
        """
        with torch.enable_grad():
            x = (H if which == "H" else W).detach().requires_grad_(True)
            Y = self.reconstruct(x, W) if which == "H" else self.reconstruct(H, x)

        def pull(G: Tensor) -> Tensor:
            with torch.enable_grad():
                return torch.autograd.grad(Y, x, G, retain_graph=True)[0]

        return Y.detach(), pull

    def _ones_pullback(self, which: str, W: Tensor, H: Tensor) -> Tensor:
        """Closed form of the pull-back of an all-ones output: a sum over the other factor."""
        other, target = (W, H) if which == "H" else (H, W)
        dims = [d for d in range(other.ndim) if d != 1]
        r = other.sum(dims)
        return r.reshape((1, -1) + (1,) * (target.ndim - 2))

    def _mu_terms(self, which: str, V: Tensor, W: Tensor, H: Tensor, beta: float, ws: dict):
        """(neg, pos) for the update of ``which``; subclasses add fast paths."""
        if beta == 1 and self._ones_pullback_is_sum and not V.is_sparse:
            Y, pull = self._vjp(which, W, H)
            neg_out, _ = div.mu_terms(V, Y, beta, out=Y)
            return pull(neg_out), self._ones_pullback(which, W, H)
        return self._general_terms(which, V, W, H, beta)

    def _loss(self, V: Tensor, W: Tensor, H: Tensor, beta: float, ws: Optional[dict] = None) -> Tensor:
        """The divergence d(V | reconstruction); ``ws`` caches data-only terms."""
        V = V.to_dense() if V.is_sparse else V
        if ws is None:
            return div.beta_divergence(V, self.reconstruct(H, W), beta)
        Y = self._reconstruct_into(V, W, H, ws)
        return div.divergence_sum(V, Y, beta, ws)

    def _reconstruct_into(self, V: Tensor, W: Tensor, H: Tensor, ws: dict) -> Tensor:
        """The reconstruction of ``V``, in a workspace buffer where the model can write into one
        (then in ``V``'s memory layout if :meth:`_reconstructs_in_layout`)."""
        return self.reconstruct(H, W)

    # ---------------------------------------------------------------- fitting
    def _check_fit_input(self, V, beta):
        """Validate V against the model; returns ``(V, beta, max(V))``."""
        if self.W is None or self.H is None:
            missing = "W" if self.W is None else "H"
            raise ParameterError(f"fit needs both W and H, but {missing} is None")
        vmin, vmax = value_range(V, "V")
        with torch.no_grad():
            expected = tuple(self._output_shape())
        if tuple(V.shape) != expected:
            raise ParameterError(f"V has shape {tuple(V.shape)} but the model reconstructs shape {expected}")
        if V.dtype != self.W.dtype or V.device != self.W.device:
            raise ParameterError(f"V is {V.dtype} on {V.device} but the model is {self.W.dtype} on "
                                 f"{self.W.device}: move one with .to()")
        return V, check_beta_for_data(beta, vmin), vmax

    def _output_shape(self):
        return self.reconstruct(self.H.detach(), self.W.detach()).shape

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

    def _make_solver_step(self, prob: _Scaled, beta: float, solver: str, ws: dict) -> Callable[[], None]:
        def mu_step():
            for which, X, train in (("W", prob.W, prob.train_W), ("H", prob.H, prob.train_H)):
                if not train:
                    continue
                neg, pos = self._mu_terms(which, prob.V, prob.W, prob.H, beta, ws)
                relax = MU_RELAX
                if which == "H" and prob.continuity:
                    # Virtanen's update, plain: the over-relaxation is certified for the divergence
                    # alone, and with it the objective rose in 11 of 30 checks (bench/separation.py)
                    tc_neg, tc_pos = temporal_continuity_terms(X, self._time_axis)
                    neg = torch.add(neg, tc_neg, alpha=prob.continuity)
                    pos = torch.add(pos, tc_pos, alpha=prob.continuity)
                    relax = 1.0
                div.multiplicative_step(X, neg, pos, beta, *prob.penalty[which], relax=relax)

        return mu_step

    def fit(self, V: Tensor, beta: float = 1, tol: float = 1e-4, max_iter: int = 200, verbose: bool = False,
            alpha: float = 0, l1_ratio: float = 0, *, init: Optional[str] = None, generator=None,
            callback: Optional[Callable[[int, float], Optional[bool]]] = None, solver: str = "auto",
            check_every: int = 10, continuity: float = 0.0) -> int:
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

        Returns
        -------
        int
            Number of iterations run.

        Raises
        ------
        ParameterError
            Negative, NaN or infinite ``V``; shape, dtype or device mismatch;
            ``beta <= 0`` with zeros in ``V``; ``l1_ratio`` outside [0, 1].

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
        if V.is_sparse and not self._sparse_native(beta):
            V = V.to_dense()
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
        if continuity and self._time_axis is None:
            raise ParameterError(f"continuity={continuity!r} is available for NMF and NMFD only, "
                                 f"not {type(self).__name__}")
        if continuity and solver == "hals":
            raise ParameterError(f"continuity={continuity!r} needs solver='mu' or 'auto', not 'hals'")
        solver = "mu" if continuity else self._resolve_solver(solver, beta, V.device)
        generator = make_generator(generator, V.device)
        if init is not None and init not in INIT_METHODS:
            raise ParameterError(f"init={init!r} must be one of {INIT_METHODS} or None")
        initialize = None if init is None else (lambda Vs: self._initialize(Vs, init, generator))
        with torch.no_grad():
            prob = _Scaled(self, V, beta, alpha * l1_ratio, alpha * (1 - l1_ratio), vmax, continuity, initialize)
            try:
                step = self._make_solver_step(prob, beta, solver, prob.ws)
                if solver == "mu" and V.is_cuda and not V.is_sparse and _fit.CUDA_GRAPHS \
                        and max_iter >= _fit.GRAPH_MIN_ITER:
                    step = _fit.cuda_graphed(step, V.device)
                return run_iterations(step, prob.objective, max_iter=max_iter, tol=tol, check_every=check_every,
                                      callback=callback, verbose=verbose, desc=type(self).__name__)
            finally:
                prob.restore()

    def _sparse_native(self, beta: float) -> bool:
        """Whether the updates work on a sparse V directly (else it is densified)."""
        return False

    def _passes_over_data(self, beta: float) -> bool:
        """Whether the updates run elementwise passes over V (then a strided V is copied once)."""
        return True

    def _reconstructs_in_layout(self, V: Tensor) -> bool:
        """Whether the fast paths write the reconstruction in ``V``'s memory layout
        (:meth:`_reconstruct_into`), so that a strided ``V`` needs no contiguous copy."""
        return V.is_contiguous()

    def _resolve_solver(self, solver: str, beta: float, device: torch.device) -> str:
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
            prob = _Scaled(self, V, beta, 0.0, 0.0, vmax)
            try:
                W, H, Vs = prob.W, prob.H, prob.V
                targets = {"W": sW if prob.train_W else None, "H": sH if prob.train_H else None}
                for name, X in (("W", W), ("H", H)):
                    if targets[name] is not None:
                        project_columns(X, targets[name])
                # step sizes in units of |X| / |grad| (scale-free: the fit of c V is c times that of V)
                steps = {"W": 1.0, "H": 1.0}
                ws = prob.ws

                def step():
                    for name, X, train in (("W", W, prob.train_W), ("H", H, prob.train_H)):
                        if not train:
                            continue
                        neg, pos = self._mu_terms(name, Vs, W, H, beta, ws)
                        if targets[name] is None:
                            div.multiplicative_step(X, neg, pos, beta)
                            continue
                        grad = pos - neg  # gradient of the divergence w.r.t. X
                        unit = _scale.step_unit(X, grad)
                        loss = float(self._loss(Vs, W, H, beta, ws))
                        old = X.clone()
                        for _ in range(10):
                            X.copy_(old).sub_(grad, alpha=steps[name] * unit)
                            project_columns(X, targets[name])
                            if float(self._loss(Vs, W, H, beta, ws)) <= loss:
                                break
                            steps[name] *= 0.5
                        else:
                            X.copy_(old)  # no decrease found: keep the iterate
                        steps[name] *= 1.2
                    if (sW is not None or sH is not None) and prob.train_W and prob.train_H:
                        _renormalize(W, H)

                return run_iterations(step, prob.objective, max_iter=max_iter, tol=0.0, check_every=check_every,
                                      callback=callback, verbose=verbose, desc=type(self).__name__)
            finally:
                prob.restore()


def _renormalize(W: Tensor, H: Tensor):
    """Give every component of H unit L2 norm, moving the norm into W (WH unchanged)."""
    dims = [d for d in range(H.ndim) if d != 1]
    norms = H.square().sum(dims).sqrt_()
    norms = torch.where(norms > 0, norms, torch.ones_like(norms))
    H.div_(norms.reshape((1, -1) + (1,) * (H.ndim - 2)))
    W.mul_(norms.reshape((1, -1) + (1,) * (W.ndim - 2)))


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

    _ones_pullback_is_sum = True

    _time_axis = 0  # V (frames, features): H (frames, rank)

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
        return H @ W.t()

    def _output_shape(self):
        return (self.H.shape[0], self.W.shape[0])

    def _nndsvd_init(self, V, variant, generator):
        return nndsvd(V, self.rank, variant, generator)

    def _sparse_native(self, beta: float) -> bool:
        return beta in (1, 2)

    def _passes_over_data(self, beta: float) -> bool:
        return beta != 2  # beta=2 meets V only in matrix products

    def _resolve_solver(self, solver: str, beta: float, device: torch.device) -> str:
        if solver == "hals" and beta != 2:
            raise ParameterError(f"solver='hals' minimises beta=2 only, got beta={beta:g}")
        if solver == "auto":
            # HALS sweeps one column at a time: on a GPU they are bound by kernel launches and
            # MU replayed from a CUDA graph reaches the same loss 5x sooner (bench/speed.py)
            return "hals" if beta == 2 and device.type == "cpu" else "mu"
        return solver

    # Closed forms of the pull-backs for the matrix product; each equals
    # BaseComponent._general_terms (tests/test_nmf.py pins it).
    def _mu_terms(self, which, V, W, H, beta, ws):
        other = W if which == "H" else H
        if beta == 2:
            # neg = V W (or V^T H); pos = H (W^T W) (or W (H^T H)): no N x C product
            target = H if which == "H" else W
            neg = _mm_data(V, other, which, ws)
            return neg, target @ (other.t() @ other)
        if V.is_sparse:
            if beta != 1:
                return super()._mu_terms(which, V, W, H, beta, ws)
            # V / WH only at the stored entries
            idx = V.indices()
            y = (H[idx[0]] * W[idx[1]]).sum(1)
            ratio, _ = div.mu_terms(V.values(), y, beta)
            S = torch.sparse_coo_tensor(idx, ratio, V.shape, check_invariants=False)
            return _mm_data(S, other, which, ws={}), other.sum(0)
        Y = self._reconstruct_into(V, W, H, ws)
        # here neg = (V * Y**(beta-2)) @ W, pos = Y**(beta-1) @ W  (transposed for W)
        neg_out, pos_out = div.mu_terms(V, Y, beta, out=Y, cache=ws)
        if which == "H":
            neg = neg_out @ W
            pos = W.sum(0) if pos_out is None else pos_out @ W
        else:
            neg = neg_out.t() @ H
            pos = H.sum(0) if pos_out is None else pos_out.t() @ H
        return neg, pos

    def _reconstructs_in_layout(self, V):
        return V.is_contiguous() or V.t().is_contiguous()

    def _reconstruct_into(self, V, W, H, ws):
        if not V.is_contiguous() and V.t().is_contiguous():
            # V is a transposed view (a spectrogram (freq, frames) passed as .t()): write
            # Y^T = W H^T, so that the passes over V and Y run in memory order and the
            # products keep V's layout (with 1025 bins, 0.9 instead of 1.2 ms, bench/speed.py)
            Yt = torch.mm(W, H.t(), out=div.workspace_buffer(ws, "Yt", (W.shape[0], H.shape[0]), W))
            return Yt.t()
        return torch.mm(H, W.t(), out=div.workspace_buffer(ws, "Y", (H.shape[0], W.shape[0]), W))

    def _loss(self, V, W, H, beta, ws=None):
        if beta == 2:
            # 0.5 ||V||^2 - <V W, H> + 0.5 <W^T W, H^T H>
            ws = {} if ws is None else ws
            sq = ws.get("sqnorm")
            if sq is None:
                sq = ws["sqnorm"] = (V.coalesce().values() if V.is_sparse else memory_order(V)).square().sum()
            cached = ws.get("VW")
            VW = cached[1] if cached is not None and cached[0] == W._version else _mm_data(V, W, "H", {})
            cross = (VW * H).sum()
            gram = ((W.t() @ W) * (H.t() @ H)).sum()
            return (0.5 * sq - cross + 0.5 * gram).clamp_min(0)
        if V.is_sparse and beta == 1:
            # sum over stored entries of d(v|y) - d(0|y), plus sum of d(0|y) = y over all
            idx = V.indices()
            y = (H[idx[0]] * W[idx[1]]).sum(1)
            part = div.beta_divergence(V.values(), y, beta) - div.divergence_of_zero(y, beta).sum()
            return (part + W.sum(0) @ H.sum(0)).clamp_min(0)
        return super()._loss(V, W, H, beta, ws)

    def _make_solver_step(self, prob, beta, solver, ws):
        if solver != "hals":
            return super()._make_solver_step(prob, beta, solver, ws)
        V, W, H = prob.V, prob.W, prob.H
        floor = div.eps_for(V.dtype) * 1e-3

        def hals_step():
            if prob.train_W:
                _hals_update(W, _mm_data(V, H, "W", ws), H.t() @ H, *prob.penalty["W"], floor)
            if prob.train_H:
                VW = _mm_data(V, W, "H", ws)
                _hals_update(H, VW, W.t() @ W, *prob.penalty["H"], floor)
                # W is final for this iteration: the loss reuses V W while W is unchanged
                ws["VW"] = (W._version, VW)

        return hals_step


def _mm_data(V: Tensor, other: Tensor, which: str, ws: dict) -> Tensor:
    """``V @ W`` (which='H') or ``V^T @ H`` (which='W') for dense or sparse V."""
    if which == "H":
        return torch.sparse.mm(V, other) if V.is_sparse else V @ other
    if V.is_sparse:
        Vt = ws.get("Vt")
        if Vt is None:
            Vt = ws["Vt"] = V.t().coalesce()
        return torch.sparse.mm(Vt, other)
    return V.t() @ other


def _hals_sweep_py(Xt: Tensor, Pi: Tensor, Gs: Tensor, rows: List[int], floor: float, tmp: Tensor,
                   before: Tensor) -> float:
    """One pass over ``rows`` of ``Xt``: x_r <- max(floor, pi_r - Gs[r] X) (see :func:`_hals_update`).

    Returns the squared norm of the change (``before`` is scratch space).
    """
    before.copy_(Xt)
    XtT = Xt.t()
    for r in rows:
        torch.addmv(Pi[r], XtT, Gs[r], alpha=-1.0, out=tmp)
        torch.clamp_min(tmp, floor, out=Xt[r])
    return float(before.sub_(Xt).square().sum())


def _numpy_sweeper(Xt: Tensor, Pi: Tensor, Gs: Tensor, rows: List[int], floor: float, tmp: Tensor,
                   before: Tensor) -> Callable[[], float]:
    """The same sweep through NumPy views of CPU tensors: the loop is dispatch-bound,
    and NumPy's per-call overhead is a fraction of torch's (half the time per sweep)."""
    X, P, G, t, b = Xt.numpy(), Pi.numpy(), Gs.numpy(), tmp.numpy(), before.numpy()
    plan = [(G[r], P[r], X[r]) for r in rows]
    dot, subtract, maximum, copyto = np.dot, np.subtract, np.maximum, np.copyto

    def sweep() -> float:
        copyto(b, X)
        for g, p, x in plan:
            dot(g, X, out=t)
            subtract(p, t, out=t)
            maximum(t, floor, out=x)
        d = subtract(b, X, out=b).ravel()
        return float(dot(d, d))

    return sweep


_SWEEP = []


def _torch_sweeper(Xt: Tensor, Pi: Tensor, Gs: Tensor, rows: List[int], floor: float, tmp: Tensor,
                   before: Tensor) -> Callable[[], float]:
    """The sweep in torch for any device, compiled with TorchScript on first use (a third
    faster: the loop is dispatch-bound); plain Python where TorchScript is unavailable."""
    if not _SWEEP:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _SWEEP.append(torch.jit.script(_hals_sweep_py))
        except Exception:  # pragma: no cover - depends on the torch build
            _SWEEP.append(_hals_sweep_py)
    return lambda: _SWEEP[0](Xt, Pi, Gs, rows, floor, tmp, before)


def _hals_sweeper(Xt: Tensor, Pi: Tensor, Gs: Tensor, rows: List[int], floor: float) -> Callable[[], float]:
    """A function running one sweep in place and returning its squared change:
    NumPy for CPU float32/float64, torch otherwise."""
    tmp = torch.empty(Xt.shape[1], dtype=Xt.dtype, device=Xt.device)
    before = torch.empty_like(Xt)
    numpy_ok = Xt.device.type == "cpu" and Xt.dtype in (torch.float32, torch.float64)
    return (_numpy_sweeper if numpy_ok else _torch_sweeper)(Xt, Pi, Gs, rows, floor, tmp, before)


HALS_MAX_SWEEPS = 6
HALS_STOP = 0.05


def _hals_update(X: Tensor, P: Tensor, G: Tensor, l1: float, l2: float, floor: float,
                 max_sweeps: int = HALS_MAX_SWEEPS):
    r"""Accelerated HALS sweeps over the columns of ``X`` ([5]_).

    Minimises :math:`\tfrac12 \mathrm{tr}(X G X^T) - \mathrm{tr}(P^T X) + l_1 \|X\|_1
    + \tfrac{l_2}{2}\|X\|^2` over ``X >= floor`` one column at a time; each
    column update is exact, so the objective never increases:
    :math:`x_r \leftarrow \max(\text{floor}, (p_r - l_1 - \sum_{j \ne r} G_{jr} x_j) / G_{rr})`
    (columns with :math:`G_{rr} = 0` do not enter the objective and are kept).
    As in Gillis and Glineur's accelerated HALS the sweep is repeated
    (reusing ``P`` and ``G``, whose computation costs several sweeps) while it
    still changes ``X`` by more than ``sqrt(HALS_STOP)`` (about a fifth) of
    the first sweep's change, at most ``max_sweeps`` times (6 and 0.05: the
    fastest to a given loss in ``bench/speed.py``). ``P`` is not modified.
    """
    R = X.shape[1]
    if l2:
        G = G + l2 * torch.eye(R, dtype=G.dtype, device=G.device)
    diag = G.diagonal()
    inv = torch.where(diag > 0, 1.0 / diag, torch.zeros_like(diag))
    Gs = G * inv[:, None]  # row r: G[r] / G[r, r] without the diagonal
    Gs.fill_diagonal_(0)
    Pi = torch.empty(P.shape[::-1], dtype=P.dtype, device=P.device)  # (R, n), rows contiguous
    torch.mul(P.t(), inv[:, None], out=Pi)
    if l1:
        Pi.sub_(l1 * inv[:, None])
    rows = torch.nonzero(diag > 0)[:, 0].tolist()
    Xt = X.t().contiguous()  # components as contiguous rows
    sweep = _hals_sweeper(Xt, Pi, Gs, rows, floor)
    first = None
    for _ in range(max_sweeps):
        change = sweep()
        if first is None:
            first = change
        elif change <= HALS_STOP * first:  # ||dX|| <= sqrt(HALS_STOP) ||dX_1||
            break
    X.copy_(Xt.t())


class _Convolutive(BaseComponent):
    """Shared by NMFD, NMF2D, NMF3D: full-padded convolution of H with the flipped W.

    NMFD, NMF2D and NMF3D also compute their convolution in a *product form*: the
    reconstruction as matrix products written into a workspace buffer (that
    also holds the two MU terms computed from it, in place), and the
    pull-backs of both terms as matrix products, in one call
    (:meth:`_pull`). conv1d/conv2d allocated their output and the autograd
    pull-backs one tensor of the data's size each, and torch's conv2d with one
    output channel is slow here: per iteration NMFD at beta 0 went
    4.19 -> 3.14 ms (``bench/speed.py``), NMF2D with a 3 x 3 kernel on a
    1025 x 430 spectrogram, rank 8, 66 -> 26 ms at beta 1 and 99 -> 32 ms at
    beta 0.5. Each path equals :meth:`BaseComponent._general_terms`
    (``tests/test_nmf.py`` pins it).
    """

    _ones_pullback_is_sum = True

    def _output_shape(self):
        return (self.H.shape[0], self.W.shape[0]) + tuple(h + k - 1 for h, k in zip(self.H.shape[2:], self.W.shape[2:]))

    def _product_form(self, V: Tensor, W: Tensor) -> bool:
        """Whether the MU terms for ``V`` take the product form (else the general path)."""
        return False

    def _reconstructs_in_layout(self, V):
        return V.is_contiguous()

    def _terms_buffer(self, V: Tensor, W: Tensor, ws: dict) -> Tensor:
        """Two tensors of V's shape: the reconstruction, then divergence.py's scratch (the second MU term)."""
        terms = div.workspace_buffer(ws, "terms", (2,) + tuple(V.shape), W)
        ws["scratch"] = terms[1]
        return terms

    def _pull(self, which: str, G: Tensor, W: Tensor, H: Tensor, ws: dict) -> Tensor:
        """Pull-backs of a stack G (k, *V.shape) to ``which``, (k, *param.shape); after :meth:`_reconstruct_into`."""
        raise NotImplementedError

    def _mu_terms(self, which, V, W, H, beta, ws):
        if V.is_sparse or not V.is_contiguous() or not self._product_form(V, W):
            return super()._mu_terms(which, V, W, H, beta, ws)
        Y = self._reconstruct_into(V, W, H, ws)  # into ws["terms"][0]
        terms = ws["terms"]
        neg, pos = div.mu_terms(V, Y, beta, out=Y, cache=ws)  # in place: into terms[0] and terms[1]
        if pos is None:  # beta = 1: the pull-back of ones is a sum
            return self._pull(which, neg[None], W, H, ws)[0], self._ones_pullback(which, W, H)
        if beta == 2:  # neg is V itself
            terms[1].copy_(V)
            neg = terms[1]
        at = {terms[0].data_ptr(): 0, terms[1].data_ptr(): 1}
        if neg.data_ptr() in at and pos.data_ptr() in at and neg.data_ptr() != pos.data_ptr():
            pulled = self._pull(which, terms, W, H, ws)
            return pulled[at[neg.data_ptr()]], pulled[at[pos.data_ptr()]]
        pulled = self._pull(which, torch.stack([neg, pos]), W, H, ws)  # not where the workspace put them
        return pulled[0], pulled[1]


class NMFD(_Convolutive):
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

    _time_axis = 2  # H (batch, rank, frames)

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
        return F.conv1d(H, W.flip(2), padding=W.shape[2] - 1)


    # Product form (see _Convolutive): Y[n] = Wf @ X[n] with Wf the templates with reversed lags
    # (C, R T) and X[n] the T lagged copies of H[n] (R T, L_out), kept in the workspace.
    def _product_form(self, V, W):
        return True

    def _reconstruct_into(self, V, W, H, ws):
        return torch.matmul(_flipped(W), _lagged(H, W.shape[2], ws), out=self._terms_buffer(V, W, ws)[0])

    def _pull(self, which, G, W, H, ws):
        T = W.shape[2]
        if which == "H":
            return _pull_to_frames(G, _flipped(W), T, ws)
        return _pull_to_templates(G, ws["lags"].view(H.shape[0], -1, G.shape[-1]), T)

    def _mu_terms(self, which, V, W, H, beta, ws):
        if beta != 2 or V.is_sparse or not V.is_contiguous():
            return super()._mu_terms(which, V, W, H, beta, ws)
        # beta = 2: neg pulls V back through the convolution; pos = A^T A x is a small convolution
        # with the Gram kernels of the fixed factor: the reconstruction is never formed
        T = W.shape[2]
        if which == "H":
            neg = _pull_to_frames(V[None], _flipped(W), T, ws)[0]
            # K[r, q, d] = sum_{t - s = d} sum_c W[c, r, t] W[c, q, s], d = -(T-1) .. T-1
            K = _diagonal_sums(torch.einsum("crt,cqs->rqts", W, W))
            return neg, F.conv1d(H, K, padding=T - 1)
        neg = _pull_to_templates(V[None], _lagged(H, T, ws), T)[0]
        A = _autocorrelation(H, T)  # (R, R, 2T - 1), lag d at index d + T - 1
        # pos[c, r, t] = sum_{q, s} W[c, q, s] A[q, r, t - s]
        B = A[:, :, _lag_index(T, W.device).t()]  # (q, r, s, t)
        Bm = B.permute(0, 2, 1, 3).reshape(W.shape[1] * T, W.shape[1] * T)  # (q s, r t)
        return neg, (W.reshape(W.shape[0], -1) @ Bm).reshape(W.shape)

    def _nndsvd_init(self, V, variant, generator):
        # NNDSVD of the batch-concatenated spectrogram, the same template at every lag
        X = V.permute(0, 2, 1).reshape(-1, V.shape[1])
        W0, H0 = nndsvd(X, self.rank, variant, generator)
        T = self.W.shape[2]
        W = (W0 / T).unsqueeze(2).expand(-1, -1, T).contiguous()
        H = H0.reshape(V.shape[0], V.shape[2], self.rank).permute(0, 2, 1)[..., : self.H.shape[2]].contiguous()
        return W, H


class _TapPlanes(_Convolutive):
    """NMF2D and NMF3D: the product form of a convolution with a d-dimensional kernel.

    For every tap ``t`` of the kernel the planes ``Z[t] = W[:, :, t] @ H`` (one
    matrix product for all taps), added into Y at offset ``t``; the pull-backs
    read the data at every tap offset into one buffer and take one product
    each. The tap buffers hold (number of taps) x C times H's entries, so beyond
    :attr:`PRODUCT_MAX_ENTRIES` the fit keeps torch's conv2d / conv3d (the
    general path).
    """

    PRODUCT_MAX_ENTRIES = 2 ** 25

    def _product_form(self, V, W):
        taps, out = math.prod(W.shape[2:]), math.prod(v - k + 1 for v, k in zip(V.shape[2:], W.shape[2:]))
        return 2 * taps * V.shape[0] * V.shape[1] * out <= self.PRODUCT_MAX_ENTRIES

    def _reconstruct_into(self, V, W, H, ws):
        if not self._product_form(V, W):
            return super()._reconstruct_into(V, W, H, ws)
        N, R, spatial = H.shape[0], H.shape[1], H.shape[2:]
        C, kernel = W.shape[0], W.shape[2:]
        Y = self._terms_buffer(V, W, ws)[0]
        Z = torch.matmul(_taps(W), H.reshape(N, R, -1),
                         out=div.workspace_buffer(ws, "planes", (N, math.prod(kernel) * C, math.prod(spatial)), W))
        Z = Z.view(N, -1, C, *spatial)
        Y.zero_()
        for i, window in enumerate(_tap_windows(kernel, spatial)):
            Y[window] += Z[:, i]
        return Y

    def _pull(self, which, G, W, H, ws):
        k, N, C = G.shape[:3]
        R, spatial, kernel = H.shape[1], H.shape[2:], W.shape[2:]
        n_taps = math.prod(kernel)
        # S[m, t, c, x] = G[m, c, x + t]: the data seen by every tap
        S = div.workspace_buffer(ws, "windows", (k * N, n_taps, C) + tuple(spatial), W)
        Gm = G.reshape((k * N, C) + tuple(G.shape[3:]))
        for i, window in enumerate(_tap_windows(kernel, spatial)):
            S[:, i].copy_(Gm[window])
        S = S.view(k * N, n_taps * C, -1)
        if which == "H":
            return torch.matmul(_taps(W).t(), S).view((k, N, R) + tuple(spatial))
        P = torch.einsum("knqx,nrx->kqr", S.view(k, N, n_taps * C, -1), H.reshape(N, R, -1))
        d = len(kernel)
        return P.reshape((k,) + tuple(kernel) + (C, R)).permute(0, d + 1, d + 2, *range(1, d + 1))


class NMF2D(_TapPlanes):
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
            _check_kernel(kernel_size, (K, M))
            rank = check_rank(rank if rank is not None else K)
            kwargs["W"] = (channel, rank) + tuple(kernel_size)
            kwargs["H"] = (batch, rank, K - kernel_size[0] + 1, M - kernel_size[1] + 1)
        super().__init__(rank, **kwargs)

    @staticmethod
    def reconstruct(H: Tensor, W: Tensor) -> Tensor:
        return F.conv2d(H, W.flip((2, 3)), padding=(W.shape[2] - 1, W.shape[3] - 1))


class NMF3D(_TapPlanes):
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
            _check_kernel(kernel_size, (N, K, M))
            rank = check_rank(rank if rank is not None else K)
            kwargs["W"] = (channel, rank) + tuple(kernel_size)
            kwargs["H"] = (batch, rank, N - kernel_size[0] + 1, K - kernel_size[1] + 1, M - kernel_size[2] + 1)
        super().__init__(rank, **kwargs)

    @staticmethod
    def reconstruct(H: Tensor, W: Tensor) -> Tensor:
        return F.conv3d(H, W.flip((2, 3, 4)), padding=(W.shape[2] - 1, W.shape[3] - 1, W.shape[4] - 1))



def _autocorrelation(H: Tensor, T: int) -> Tensor:
    """``A[q, r, d + T - 1] = sum_{n, l} H[n, q, l + d] H[n, r, l]`` for lags ``|d| < T``.

    One matrix product of the 2T - 1 shifted copies of H with H: ``F.conv1d(Hb, Hb)``
    computes the same with an L-long kernel and took 14x longer (2.5 ms vs 0.17 ms
    for H of shape (1, 8, 993), T = 8, on 2 CPU cores)."""
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


def _lagged(H: Tensor, T: int, ws: dict) -> Tensor:
    """The T lagged copies of NMFD's activations: ``X[n, r T + s, j] = H[n, r, j + s - T + 1]`` (zero
    outside), shape (N, R T, L + T - 1), in the workspace, so that ``conv1d(H, W.flip(2), padding=T-1)``
    is ``_flipped(W) @ X``."""
    N, R, L = H.shape
    L_out = L + T - 1
    padded = div.workspace_buffer(ws, "padded", (N, R, L + 2 * T - 2), H)
    padded[:, :, :T - 1].zero_()
    padded[:, :, T - 1 + L:].zero_()
    padded[:, :, T - 1:T - 1 + L].copy_(H)
    lags = div.workspace_buffer(ws, "lags", (N, R, T, L_out), H)
    lags.copy_(padded.unfold(2, L_out, 1))  # window s starts at s: H[j + s - (T - 1)]
    return lags.view(N, R * T, L_out)


def _pull_to_frames(G: Tensor, Wf: Tensor, T: int, ws: dict) -> Tensor:
    """Adjoint of NMFD's convolution with respect to H, for a stack G (k, N, C, L_out) of output-space
    tensors: (k, N, R, L_out - T + 1), ``sum_{c, t} W[c, r, t] G[c, j + t]``, as one matrix product
    and one strided sum over the lags."""
    k, N, C, L_out = G.shape
    RT = Wf.shape[1]
    L = L_out - T + 1
    P = torch.matmul(Wf.t(), G.reshape(k * N, C, L_out),
                     out=div.workspace_buffer(ws, "pulled", (k * N, RT, L_out), G))
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


def _check_kernel(kernel_size, sizes):
    for k, n in zip(kernel_size, sizes):
        if not 1 <= k <= n:
            raise ParameterError(f"kernel_size={tuple(kernel_size)} must lie within the size of V {tuple(sizes)}")
