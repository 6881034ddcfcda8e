"""Exceptions and warnings raised by nmfcore.

Every error caused by user input is a :class:`ParameterError`, a subclass of
:class:`ValueError`, whose message names the offending argument and its value.
"""

__all__ = ["NMFCoreError", "ParameterError", "ConvergenceWarning"]


class NMFCoreError(Exception):
    """Root of all exceptions raised by nmfcore."""


class ParameterError(NMFCoreError, ValueError):
    """An argument has an invalid value; the message names it and the value."""


class ConvergenceWarning(UserWarning):
    """A fit stopped at ``max_iter`` before reaching the tolerance."""
