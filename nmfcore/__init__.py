"""nmfcore: non-negative matrix factorisation for audio, in PyTorch.

Submodules
----------
nmf         NMF, NMFD, NMF2D, NMF3D (the PyTorch NMF reference API)
plca        PLCA, SIPLCA, SIPLCA2, SIPLCA3 (EM with Dirichlet priors)
metrics     beta-divergences and sparseness
trainer     BetaMu and SparsityProj optimisers for chained models
divergence  the beta-divergence cases and the update exponent
init        random and NNDSVD initialisation
minibatch   mini-batch multiplicative updates (MiniBatchMU), data from chunks
distributed the all-reduce of W's parts over torch.distributed (DataParallel)
audio       source separation: load, STFT, factorise, masks, ISTFT, grouping,
            evaluation (imported on demand: ``import nmfcore.audio``)
cli         the ``nmfcore`` command line
"""

import importlib

from .exceptions import ConvergenceWarning, NMFCoreError, ParameterError

__version__ = "0.1.0"

# Submodules and models load on first use (PEP 562), so that ``import nmfcore.cli`` and
# ``nmfcore --help`` / ``--version`` do not import torch (seconds on a cold start).
_SUBMODULES = ("nmf", "plca", "minibatch", "distributed", "metrics", "trainer", "divergence", "init", "operators", "solvers", "audio", "cli")
_FROM_NMF = ("BaseComponent", "NMF", "NMFD", "NMF2D", "NMF3D")
_FROM_PLCA = ("PLCA", "SIPLCA", "SIPLCA2", "SIPLCA3")


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _FROM_NMF:
        return getattr(importlib.import_module(".nmf", __name__), name)
    if name in _FROM_PLCA:
        return getattr(importlib.import_module(".plca", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_SUBMODULES) | set(_FROM_NMF) | set(_FROM_PLCA))

__all__ = [
    "nmf", "plca", "metrics", "trainer", "divergence", "init", "minibatch", "distributed",
    "BaseComponent", "NMF", "NMFD", "NMF2D", "NMF3D", "PLCA", "SIPLCA", "SIPLCA2", "SIPLCA3",
    "NMFCoreError", "ParameterError", "ConvergenceWarning", "__version__",
]
