"""nmfcore: non-negative matrix factorisation for audio, in PyTorch.

Submodules
----------
nmf         NMF, NMFD, NMF2D, NMF3D (the PyTorch NMF reference API)
plca        PLCA, SIPLCA, SIPLCA2, SIPLCA3 (EM with Dirichlet priors)
metrics     beta-divergences and sparseness
trainer     BetaMu and SparsityProj optimisers for chained models
divergence  the beta-divergence cases and the update exponent
init        random and NNDSVD initialisation
audio       source separation: load, STFT, factorise, masks, ISTFT, grouping,
            evaluation (imported on demand: ``import nmfcore.audio``)
cli         the ``nmfcore`` command line
"""

from . import divergence, init, metrics, nmf, plca, trainer
from .exceptions import ConvergenceWarning, NMFCoreError, ParameterError
from .nmf import NMF, NMF2D, NMF3D, NMFD, BaseComponent
from .plca import PLCA, SIPLCA, SIPLCA2, SIPLCA3

__version__ = "0.1.0"

__all__ = [
    "nmf", "plca", "metrics", "trainer", "divergence", "init",
    "BaseComponent", "NMF", "NMFD", "NMF2D", "NMF3D", "PLCA", "SIPLCA", "SIPLCA2", "SIPLCA3",
    "NMFCoreError", "ParameterError", "ConvergenceWarning", "__version__",
]
