"""nmfcore: non-negative matrix factorisation for audio, in PyTorch.

Submodules
----------
nmf         NMF, NMFD, NMF2D, NMF3D (the PyTorch NMF reference API)
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

from . import distributed, divergence, init, metrics, minibatch, nmf, trainer
from .exceptions import ConvergenceWarning, NMFCoreError, ParameterError
from .nmf import NMF, NMF2D, NMF3D, NMFD, BaseComponent

__version__ = "0.1.0"

__all__ = [
    "nmf", "metrics", "trainer", "divergence", "init", "minibatch", "distributed",
    "BaseComponent", "NMF", "NMFD", "NMF2D", "NMF3D",
    "NMFCoreError", "ParameterError", "ConvergenceWarning", "__version__",
]
