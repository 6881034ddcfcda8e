r"""Probabilistic Latent Component Analysis (PLCA) and its shift-invariant variants.

PLCA reads the data, normalised to sum to one, as a joint distribution and
explains it by latent components ``z`` with a prior ``P(z)`` (``Z``) and
marginals along the axes of ``W`` and ``H`` ([1]_, [2]_). Its reconstruction
is the NMF family's with ``Z`` folded into the templates: PLCA is
:class:`nmfcore.nmf.NMF`'s matrix product, SIPLCA / SIPLCA2 / SIPLCA3 are the
convolutions of NMFD / NMF2D / NMF3D, of ``H`` and ``W * Z``.

The fit is expectation-maximisation with Dirichlet priors, a solver on the
seam of :mod:`nmfcore.solvers` (:class:`nmfcore.solvers.EM`) over the NMF
family's operators and the one fit loop: for one factor ``X`` the expected
counts of the E-step are the KL (beta = 1) multiplicative step's numerator,
``X * J^T (V / Y)`` (the operator's pull-back of the ratio of data to
reconstruction), the M-step adds the prior counts ``alpha - 1``, clamps at
zero and renormalises. By default an iteration is textbook EM: one E-step
(one reconstruction) gives the counts of ``W``, ``H`` and ``Z`` from the
same posterior and the M-step sets all three. ``fit(update='alternating')``
updates ``W`` (with ``Z``) and then ``H`` (with ``Z``) in turn, each from a
fresh reconstruction, as the multiplicative updates do: without priors that
fit follows the plain KL multiplicative updates of NMF exactly (the factors
rescaled into probabilities), and masked fits take this order. Either way
the log-posterior never decreases for ``alpha >= 1``.

The public API matches the PyTorch NMF reference (``torchnmf.plca``).

References
----------
.. [1] P. Smaragdis and B. Raj, "Shift-Invariant Probabilistic Latent
   Component Analysis", Technical report TR2007-009, MERL, 2007.
.. [2] P. Smaragdis, B. Raj and M. Shashanka, "Sparse and shift-invariant
   feature extraction from non-negative data", ICASSP 2008.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Callable, Optional, Union

import torch
from torch import Tensor
from torch.nn import Parameter

from . import nmf as _nmf
from ._factors import FactorModule, initial_values
from ._fit import run_iterations
from ._validation import (check_mask, check_nonnegative_float, check_positive_int, check_rank,
                          make_generator, value_range)
from ._checks import check_kernel_fits, kernel_tuple
from .exceptions import ParameterError
from .solvers.em import EM, EMProblem, normalise, per_component, prior_term

__all__ = ["BaseComponent", "PLCA", "SIPLCA", "SIPLCA2", "SIPLCA3", "log_posterior"]

Alpha = Union[float, Tensor]


def log_posterior(V: Tensor, model: "BaseComponent", W_alpha: Alpha = 1.0, H_alpha: Alpha = 1.0,
                  Z_alpha: Alpha = 1.0) -> Tensor:
    r"""The objective that :meth:`BaseComponent.fit` maximises.

    .. math::
        \mathcal{L} = \sum v \log \hat v + \sum_k (\alpha_{z,k} - 1) \log z_k
        + \sum (\alpha_w - 1) \log w + \sum (\alpha_h - 1) \log h

    with :math:`v` the entries of ``V / V.sum()`` and :math:`\hat v` of the
    model's output (which sums to one). Zeros are floored at the dtype's tiny
    in the logarithms of the priors; ``0 log 0 = 0`` in the first sum.

    Parameters
    ----------
    V : torch.Tensor
        Non-negative data of the model's output shape.
    model : BaseComponent
    W_alpha, H_alpha, Z_alpha : float or torch.Tensor, default 1
        Dirichlet parameters (as in :meth:`BaseComponent.fit`).

    Returns
    -------
    torch.Tensor
        A scalar.

    Examples
    --------
    >>> import torch
    >>> V = torch.rand(20, 30, generator=torch.Generator().manual_seed(0))
    >>> m = PLCA(V.shape, 4, generator=0)
    >>> before = float(log_posterior(V, m, H_alpha=1.5))
    >>> _ = m.fit(V, max_iter=20, tol=0, H_alpha=1.5)
    >>> float(log_posterior(V, m, H_alpha=1.5)) > before
    True
    """
    with torch.no_grad():
        W, H, Z = model.W.detach(), model.H.detach(), model.Z.detach()
        Vn = V / V.sum()
        Y = model.reconstruct(H, W, Z)
        value = torch.xlogy(Vn, Y).sum()
        return value + prior_term(W, W_alpha) + prior_term(H, H_alpha) + prior_term(Z, Z_alpha)


def _init_param(value, name: str, trainable: bool, generator, like: Optional[Tensor]) -> Optional[Parameter]:
    """A normalised Parameter from a shape (random |N(0,1)|, in ``like``'s dtype and device) or a tensor."""
    data = initial_values(value, name, generator, like)
    return None if data is None else Parameter(normalise(data), requires_grad=trainable)


def _check_alpha(alpha, name: str, X: Tensor) -> Alpha:
    """A positive finite float, or a tensor of them broadcastable to ``X`` (moved to X's dtype and device)."""
    if isinstance(alpha, Tensor):
        if not _broadcasts_to(alpha, X.shape):
            raise ParameterError(f"{name} has shape {tuple(alpha.shape)}, not broadcastable to {tuple(X.shape)}")
        a = alpha.detach().to(dtype=X.dtype, device=X.device)
        bad = ~(torch.isfinite(a) & (a > 0))
        if bool(bad.any()):
            raise ParameterError(f"{name} must be positive and finite, found {name} entry {a[bad][0].item()}")
        return a
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not math.isfinite(alpha) or alpha <= 0:
        raise ParameterError(f"{name}={alpha!r} must be a positive finite number or tensor")
    return float(alpha)


def _broadcasts_to(a: Tensor, shape) -> bool:
    """Whether ``a`` broadcasts to ``shape`` without growing it."""
    try:
        return tuple(torch.broadcast_shapes(a.shape, shape)) == tuple(shape)
    except RuntimeError:
        return False


# ------------------------------------------------------------------ models
class BaseComponent(FactorModule):
    r"""Base class for all PLCA modules.

    You can't use this module directly; models subclass it, name the
    NMF-family model whose operator they share (``_nmf_model``) and take their
    shapes from ``Vshape``.

    Parameters
    ----------
    rank : int, optional
        Size of the hidden dimension; inferred from ``W``, ``H`` or ``Z`` if given.
    W, H : tuple or Tensor, optional
        Shape (initialised with random :math:`|N(0, 1)|` values) or initial
        probabilities (non-negative) of the template tensor ``W`` and the
        activation tensor ``H``; normalised so that every component sums to
        one (over every axis but axis 1). A given tensor keeps its dtype and
        device.
    Z : Tensor, optional
        Initial probabilities of the latent vector (normalised to sum to
        one); uniform if only ``rank`` is known.
    trainable_W, trainable_H, trainable_Z : bool, default True
        Whether :meth:`fit` updates the parameter; a frozen one never changes.
    generator : torch.Generator or int, optional, keyword-only
        Source of the random initial values (the global RNG is never seeded).

    Attributes
    ----------
    W, H, Z : torch.nn.Parameter or None
    rank : int
    """

    _nmf_model = _nmf.NMF

    def __init__(self, rank: int = None, W=None, H=None, Z: Tensor = None, trainable_W: bool = True,
                 trainable_H: bool = True, trainable_Z: bool = True, *, generator=None):
        super().__init__()
        generator = make_generator(generator)
        like = next((t for t in (W, H, Z) if isinstance(t, Tensor)), None)
        if like is not None and not like.is_floating_point():
            raise ParameterError(f"initial tensors must be floating point, got dtype={like.dtype}")
        self.W = _init_param(W, "W", trainable_W, generator, like)
        self.H = _init_param(H, "H", trainable_H, generator, like)
        self._check_rank_axes()
        if Z is not None:
            if not isinstance(Z, Tensor):
                raise ParameterError(f"Z must be a tensor or None, got {type(Z).__name__}")
            if Z.ndim != 1:
                raise ParameterError(f"Z must be one-dimensional, got shape {tuple(Z.shape)}")
            self.Z = _init_param(Z, "Z", trainable_Z, generator, like)
        ranks = {n: p.shape[1] if p.ndim > 1 else p.shape[0]
                 for n, p in (("W", self.W), ("H", self.H), ("Z", getattr(self, "Z", None))) if p is not None}
        if len(set(ranks.values())) > 1:
            raise ParameterError(f"rank mismatch between the given factors: {ranks} (axis 1 of W and H, length of Z)")
        if ranks:
            inferred = next(iter(ranks.values()))
            if rank is not None and check_rank(rank) != inferred:
                raise ParameterError(f"rank={rank} does not match the rank {inferred} of the given factors")
            rank = inferred
        if rank is None:
            raise ParameterError("rank=None: give a rank when W, H and Z are not given")
        self.rank = check_rank(rank)
        if Z is None:
            kw = {} if like is None else dict(dtype=like.dtype, device=like.device)
            self.Z = Parameter(torch.full((self.rank,), 1.0 / self.rank, **kw), requires_grad=trainable_Z)
        self._record_shapes()

    # ------------------------------------------------------------------ model
    def forward(self, H: Tensor = None, W: Tensor = None, Z: Tensor = None, norm=None) -> Tensor:
        """The model's distribution from ``H``, ``W`` and ``Z`` (default: the module's own), times ``norm``."""
        H = self.H if H is None else H
        W = self.W if W is None else W
        Z = self.Z if Z is None else Z
        if H is None or W is None:
            missing = "H" if H is None else "W"
            raise ParameterError(f"{missing} is None: give it to forward() or to the constructor")
        out = self.reconstruct(H, W, Z)
        return out if norm is None else out * norm

    @classmethod
    def reconstruct(cls, H: Tensor, W: Tensor, Z: Tensor) -> Tensor:
        """The NMF-family operator of ``H`` and the templates weighted by ``Z``."""
        return cls._nmf_model.reconstruct(H, W * per_component(Z, W))

    def _output_shape(self) -> tuple:
        """The shape of the reconstruction: (N, C) or (N, C, *(h + k - 1)) for the convolutions."""
        H, W = self.H, self.W
        return (H.shape[0], W.shape[0]) + tuple(h + k - 1 for h, k in zip(H.shape[2:], W.shape[2:]))

    # ---------------------------------------------------------------- fitting
    def fit(self, V: Tensor, tol: float = 1e-4, max_iter: int = 200, verbose: bool = False,
            W_alpha: Alpha = 1.0, H_alpha: Alpha = 1.0, Z_alpha: Alpha = 1.0, *,
            mask: Optional[Tensor] = None, init: Optional[str] = None, generator=None,
            callback: Optional[Callable[[int, float], Optional[bool]]] = None, check_every: int = 10,
            update: Optional[str] = None):
        r"""Learn the model by maximising the log-posterior with EM.

        .. math::
            \mathcal{L}(\theta) = \sum_{k_1 \dots k_N} v_{k_1 \dots k_N} \log \hat v_{k_1 \dots k_N}
            + \sum_k (\alpha_{z,k} - 1) \log z_k
            + \sum_{f_1 \dots f_M} (\alpha_{w,f_1 \dots f_M} - 1) \log w_{f_1 \dots f_M}
            + \sum_{\tau_1 \dots \tau_L} (\alpha_{h,\tau_1 \dots \tau_L} - 1) \log h_{\tau_1 \dots \tau_L}

        with :math:`v` the entries of ``V / V.sum()`` and :math:`\hat v` the
        model's output (:func:`log_posterior`). The last three terms are the
        Dirichlet priors. Each iteration is one EM step (see ``update`` and
        the module's description); the objective never decreases for
        priors >= 1. Parameters created with ``trainable_*=False`` never
        change.

        Parameters
        ----------
        V : torch.Tensor
            Non-negative data of the model's output shape, on the model's
            dtype and device (a sparse tensor is densified).
        tol : float, default 1e-4
            Stop when ``(e_prev - e) / e_0 < tol`` with ``e = sqrt(2 loss)``,
            checked every ``check_every`` iterations; 0 runs ``max_iter``.
            The loss is ``V.sum()`` times the negative log-posterior less the
            data's entropy: the KL divergence of ``norm * model()`` from ``V``
            without priors, as in the reference's progress bar.
        max_iter : int, default 200
        verbose : bool, default False
            Show a progress bar.
        W_alpha, H_alpha, Z_alpha : float or torch.Tensor, default 1
            Dirichlet parameters, positive, a number or a tensor broadcastable
            to the parameter. 1 is no prior; above 1 smooths, below 1 makes the
            distribution sparse. They add ``alpha - 1`` to the expected counts
            of the E-step, which sum to one over the data.
        mask : torch.Tensor, optional, keyword-only
            Non-negative weights (or booleans) broadcastable to ``V``: the
            data term becomes :math:`\sum m\, v \log \hat v`, fitted as the
            weighted KL divergence; zero weights mark missing entries. The
            prior counts are then relative to the observed mass.
        init : {None, 'random'}, keyword-only
            ``'random'`` redraws the trainable ``W`` and ``H`` (and makes ``Z``
            uniform) first; ``None`` keeps the current values.
        generator : torch.Generator or int, keyword-only
            Randomness of ``init``.
        callback : callable, keyword-only
            ``callback(iteration, loss)`` at iteration 0 and at every check;
            returning ``True`` stops the fit.
        check_every : int, default 10, keyword-only
            Iterations between evaluations of the loss.
        update : {None, 'joint', 'alternating'}, keyword-only
            ``'joint'``: one E-step per iteration for ``W``, ``H`` and ``Z``
            (textbook EM; three operator products for PLCA). ``'alternating'``:
            ``W`` and ``Z``, then ``H`` and ``Z``, each from a fresh
            reconstruction (four products; without priors, the plain KL
            multiplicative updates). None: ``'joint'``, or ``'alternating'``
            with a mask (the only order a masked fit takes).

        Returns
        -------
        n_iter : int
            Number of iterations run.
        norm : torch.Tensor
            ``V.sum()`` (with a mask, the scale of the model on the observed
            entries): ``model(norm=norm)`` rebuilds ``V``.

        Raises
        ------
        ParameterError
            Negative, NaN or infinite ``V``; ``V`` summing to zero; shape,
            dtype or device mismatch; a prior that is not positive and
            finite; a mask of the wrong shape or with negative weights.

        Examples
        --------
        >>> import torch
        >>> from nmfcore.plca import PLCA
        >>> V = torch.rand(20, 30, generator=torch.Generator().manual_seed(0))
        >>> m = PLCA(V.shape, 5, generator=0)
        >>> n_iter, norm = m.fit(V, max_iter=50, tol=0)
        >>> n_iter, round(float(m.Z.detach().sum()), 4), round(float(m.W.detach().sum()), 4)
        (50, 1.0, 5.0)
        >>> m(norm=norm).shape
        torch.Size([20, 30])
        """
        if self.W is None or self.H is None:
            missing = "W" if self.W is None else "H"
            raise ParameterError(f"fit needs W, H and Z, but {missing} is None")
        if isinstance(V, Tensor) and V.is_sparse:
            V = V.to_dense()
        vmin, vmax = value_range(V, "V")
        expected = self._output_shape()
        if tuple(V.shape) != expected:
            raise ParameterError(f"V has shape {tuple(V.shape)} but the model reconstructs shape {expected}")
        if V.dtype != self.W.dtype or V.device != self.W.device:
            raise ParameterError(f"V is {V.dtype} on {V.device} but the model is {self.W.dtype} on "
                                 f"{self.W.device}: move one with .to()")
        tol = check_nonnegative_float(tol, "tol")
        max_iter = int(max_iter) if max_iter == 0 else check_positive_int(max_iter, "max_iter")
        check_every = check_positive_int(check_every, "check_every")
        if callback is not None and not callable(callback):
            raise ParameterError(f"callback={callback!r} must be callable")
        W, H, Z = self.W.detach(), self.H.detach(), self.Z.detach()
        alphas = {"W": _check_alpha(W_alpha, "W_alpha", W), "H": _check_alpha(H_alpha, "H_alpha", H),
                  "Z": _check_alpha(Z_alpha, "Z_alpha", Z)}
        M = check_mask(mask, V)
        if init not in (None, "random"):
            raise ParameterError(f"init={init!r} must be None or 'random'")
        if update not in (None, "joint", "alternating"):
            raise ParameterError(f"update={update!r} must be None, 'joint' or 'alternating'")
        if update == "joint" and M is not None:
            raise ParameterError("update='joint' does not take a mask: a masked fit alternates the blocks "
                                 "(update=None or 'alternating')")
        mass = float((V * M).sum(dtype=torch.float64) if M is not None else V.sum(dtype=torch.float64))
        if not mass > 0:
            raise ParameterError("V sums to 0 (where observed): PLCA fits a distribution, it needs some mass")
        if init == "random":
            self._randomise(make_generator(generator, V.device))
        with torch.no_grad():
            prob = EMProblem(self._nmf_model.operator, self.W, self.H, self.Z, V, alphas=alphas, mass=mass,
                             vmax=vmax, mask=M, joint=update != "alternating")
            n_iter = run_iterations(EM(prob).step, prob.objective, max_iter=max_iter, tol=tol,
                                    check_every=check_every, callback=callback, verbose=verbose,
                                    desc=type(self).__name__)
            return n_iter, prob.norm()

    def _randomise(self, generator):
        with torch.no_grad():
            for X in (self.W, self.H):
                if X.requires_grad:
                    X.copy_(torch.randn(X.shape, generator=generator, dtype=X.dtype, device=X.device).abs_())
                    normalise(X.data)
            if self.Z.requires_grad:
                self.Z.fill_(1.0 / self.rank)


def _vshape(Vshape, n: int, name: str) -> tuple:
    shape = tuple(Vshape)
    if len(shape) != n or not all(isinstance(s, numbers.Integral) and s >= 1 for s in shape):
        raise ParameterError(f"Vshape={shape} must have {n} positive entries for {name}")
    return shape


class PLCA(BaseComponent):
    r"""Probabilistic Latent Component Analysis (PLCA, [1]_).

    Estimates the marginals :math:`P(c|z)` (``W``) and :math:`P(n|z)` (``H``)
    and the prior :math:`P(z)` (``Z``) that approximate the observed
    distribution :math:`P(n, c)`, ``V / V.sum()``:

    .. math::
        P(n, c) \approx \sum_z P(c|z) P(z) P(n|z), \qquad V \approx H \operatorname{diag}(Z) W^T

    Parameters
    ----------
    Vshape : tuple, optional
        Size of the target ``(N, C)``; ``W``, ``H`` and ``Z`` are inferred
        from it (overriding ``W`` and ``H`` in ``kwargs``).
    rank : int, optional
        Size of the hidden dimension (default: ``C``).
    **kwargs
        Passed to :class:`BaseComponent`.

    Shape
    -----
    - V: :math:`(N, C)`
    - W: :math:`(C, R)`
    - H: :math:`(N, R)`
    - Z: :math:`(R,)`

    Examples
    --------
    >>> import torch
    >>> V = torch.rand(20, 30)
    >>> m = PLCA(V.shape, 5)
    >>> m.W.size()
    torch.Size([30, 5])
    >>> m.H.size()
    torch.Size([20, 5])
    >>> m.Z.size()
    torch.Size([5])
    >>> HZWt = m()
    >>> HZWt.size()
    torch.Size([20, 30])
    """

    _nmf_model = _nmf.NMF

    def __init__(self, Vshape: Iterable = None, rank: int = None, **kwargs):
        if Vshape is not None:
            M, K = _vshape(Vshape, 2, "PLCA")
            rank = check_rank(rank if rank is not None else K)
            kwargs["W"] = (K, rank)
            kwargs["H"] = (M, rank)
        super().__init__(rank, **kwargs)


class SIPLCA(BaseComponent):
    r"""Shift-Invariant Probabilistic Latent Component Analysis (SI-PLCA, [1]_, [2]_).

    Estimates :math:`P(c, t|z)` (``W``), :math:`P(n, l|z)` (``H``) and
    :math:`P(z)` (``Z``) that approximate the observed :math:`P(n, c, l)`,
    ``V / V.sum()``, by templates shifted along the last axis:

    .. math::
        P(n, c, l) \approx \sum_z \sum_t P(c, t|z) P(z) P(n, l - t|z)

    Parameters
    ----------
    Vshape : tuple, optional
        Size of the target ``(N, C, L_out)``.
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
    - Z: :math:`(R,)`

    Examples
    --------
    >>> import torch
    >>> V = torch.rand(33, 50).unsqueeze(0)
    >>> m = SIPLCA(V.shape, 16, 3)
    >>> m.W.size()
    torch.Size([33, 16, 3])
    >>> m.H.size()
    torch.Size([1, 16, 48])
    >>> m.Z.size()
    torch.Size([16])
    >>> HZWt = m()
    >>> HZWt.size()
    torch.Size([1, 33, 50])
    """

    _nmf_model = _nmf.NMFD

    def __init__(self, Vshape: Iterable = None, rank: int = None, T=1, **kwargs):
        if Vshape is not None:
            (T,) = kernel_tuple(T, 1, "T")
            batch, K, M = _vshape(Vshape, 3, "SIPLCA")
            check_kernel_fits((T,), (M,), "T")
            rank = check_rank(rank if rank is not None else K)
            kwargs["W"] = (K, rank, T)
            kwargs["H"] = (batch, rank, M - T + 1)
        super().__init__(rank, **kwargs)


class SIPLCA2(BaseComponent):
    r"""Shift-Invariant PLCA across 2 dimensions (SI-PLCA 2D, [1]_).

    .. math::
        P(n, c, l, m) \approx \sum_z \sum_{k_1} \sum_{k_2} P(c, k_1, k_2|z) P(z) P(n, l - k_1, m - k_2|z)

    On a log-frequency spectrogram a template shifts in pitch as well as in time.

    Parameters
    ----------
    Vshape : tuple, optional
        Size of the target ``(N, C, L_out, M_out)``.
    rank : int, optional
    kernel_size : int or tuple, default 1
    **kwargs
        Passed to :class:`BaseComponent`.

    Shape
    -----
    - V: :math:`(N, C, L_{out}, M_{out})`
    - W: :math:`(C, R, k_1, k_2)`
    - H: :math:`(N, R, L_{out} - k_1 + 1, M_{out} - k_2 + 1)`
    - Z: :math:`(R,)`

    Examples
    --------
    >>> import torch
    >>> V = torch.rand(33, 50).unsqueeze(0).unsqueeze(0)
    >>> m = SIPLCA2(V.shape, 16, 3)
    >>> m.W.size()
    torch.Size([1, 16, 3, 3])
    >>> m.H.size()
    torch.Size([1, 16, 31, 48])
    >>> m.Z.size()
    torch.Size([16])
    >>> HZWt = m()
    >>> HZWt.size()
    torch.Size([1, 1, 33, 50])
    """

    _nmf_model = _nmf.NMF2D

    def __init__(self, Vshape: Iterable = None, rank: int = None, kernel_size=1, **kwargs):
        if Vshape is not None:
            kernel_size = kernel_tuple(kernel_size, 2)
            batch, channel, K, M = _vshape(Vshape, 4, "SIPLCA2")
            check_kernel_fits(kernel_size, (K, M))
            rank = check_rank(rank if rank is not None else K)
            kwargs["W"] = (channel, rank) + kernel_size
            kwargs["H"] = (batch, rank, K - kernel_size[0] + 1, M - kernel_size[1] + 1)
        super().__init__(rank, **kwargs)


class SIPLCA3(BaseComponent):
    r"""Shift-Invariant PLCA across 3 dimensions (SI-PLCA 3D, [1]_).

    .. math::
        P(n, c, l, m, o) \approx \sum_z \sum_{k_1, k_2, k_3}
        P(c, k_1, k_2, k_3|z) P(z) P(n, l - k_1, m - k_2, o - k_3|z)

    Parameters
    ----------
    Vshape : tuple, optional
        Size of the target ``(N, C, L_out, M_out, O_out)``.
    rank : int, optional
    kernel_size : int or tuple, default 1
    **kwargs
        Passed to :class:`BaseComponent`.

    Shape
    -----
    - V: :math:`(N, C, L_{out}, M_{out}, O_{out})`
    - W: :math:`(C, R, k_1, k_2, k_3)`
    - H: :math:`(N, R, L_{out} - k_1 + 1, M_{out} - k_2 + 1, O_{out} - k_3 + 1)`
    - Z: :math:`(R,)`

    Examples
    --------
    >>> import torch
    >>> V = torch.rand(3, 64, 64, 100).unsqueeze(0)
    >>> m = SIPLCA3(V.shape, 8, (5, 5, 20))
    >>> m.W.size()
    torch.Size([3, 8, 5, 5, 20])
    >>> m.H.size()
    torch.Size([1, 8, 60, 60, 81])
    >>> m.Z.size()
    torch.Size([8])
    >>> HZWt = m()
    >>> HZWt.size()
    torch.Size([1, 3, 64, 64, 100])
    """

    _nmf_model = _nmf.NMF3D

    def __init__(self, Vshape: Iterable = None, rank: int = None, kernel_size=1, **kwargs):
        if Vshape is not None:
            kernel_size = kernel_tuple(kernel_size, 3)
            batch, channel, N, K, M = _vshape(Vshape, 5, "SIPLCA3")
            check_kernel_fits(kernel_size, (N, K, M))
            rank = check_rank(rank if rank is not None else K)
            kwargs["W"] = (channel, rank) + kernel_size
            kwargs["H"] = (batch, rank, N - kernel_size[0] + 1, K - kernel_size[1] + 1, M - kernel_size[2] + 1)
        super().__init__(rank, **kwargs)
