"""Solvers on one seam: a :class:`Problem` yields each factor's parts, an optional hook sees them, the solver applies them.

- :class:`MultiplicativeUpdates` (any model, any beta),
- :class:`HALS` (NMF, beta = 2),
- :class:`ProjectedGradient` (Hoyer's sparseness constraints, ``sparse_fit``).

The one fit loop, :func:`nmfcore._fit.run_iterations`, drives ``solver.step``
and ``problem.objective``. See ``docs/design.md``.
"""

from .base import Hook, Solver
from .hals import HALS
from .mu import MU_RELAX, MultiplicativeUpdates
from .problem import Problem
from .projected import ProjectedGradient, search_step

__all__ = ["Problem", "Solver", "Hook", "MultiplicativeUpdates", "HALS", "ProjectedGradient", "search_step",
           "MU_RELAX"]
