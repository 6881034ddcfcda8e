"""The solver seam: compute a factor's parts, let a hook see them, apply them.

Every solver updates the trainable factors of a :class:`~.problem.Problem`
in turn, and each update has three stages:

1. ``terms(which)``: the parts the update needs (for MU and the projected
   gradient the negative and positive parts of the gradient, for HALS the
   data product and the Gram matrix);
2. ``hook(which, a, b) -> (a, b)``, optional: sees the parts and may
   replace them (a mini-batch solver accumulates them over batches, a
   distributed one all-reduces them);
3. ``apply(which, a, b)``: the update of the factor in place (then the
   frozen columns are put back).

:meth:`Solver.step` runs them for every trainable factor; the fit loop
(:func:`nmfcore._fit.run_iterations`) calls ``step`` and the problem's
``objective``.
"""

from __future__ import annotations

from typing import Callable, Optional

from torch import Tensor

from .problem import Problem

__all__ = ["Solver", "Hook"]

Hook = Callable[[str, Tensor, Tensor], "tuple[Tensor, Tensor]"]


class Solver:
    """Base of the solvers: ``step()`` runs terms -> hook -> apply for every trainable factor.

    Parameters
    ----------
    problem : Problem
    hook : callable, optional, keyword-only
        ``hook(which, a, b)`` returning the parts to apply (see the module).
    """

    def __init__(self, problem: Problem, *, hook: Optional[Hook] = None):
        if hook is not None and not callable(hook):
            from ..exceptions import ParameterError

            raise ParameterError(f"hook={hook!r} must be callable")
        self.problem = problem
        self.hook = hook

    def terms(self, which: str):
        """The parts of the update of ``which``."""
        raise NotImplementedError

    def apply(self, which: str, a: Tensor, b: Tensor) -> None:
        """Update ``which`` in place from its parts."""
        raise NotImplementedError

    def step(self) -> None:
        """One update of every trainable factor."""
        problem, hook = self.problem, self.hook
        for which in problem.trainable:
            a, b = self.terms(which)
            if hook is not None:
                a, b = hook(which, a, b)
            self.apply(which, a, b)
            problem.keep_frozen(which)
