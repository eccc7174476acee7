"""Exceptions raised when a solve cannot produce a trustworthy result.

Bad arguments raise ``ValueError`` naming the argument; these are for solves that
started correctly and then failed. All derive from ``SolverError`` (a
``RuntimeError``) so callers can catch them together.
"""


class SolverError(RuntimeError):
    """A solve failed; the message says where (t) and what to try."""


class NonFiniteStateError(SolverError):
    """The state or the vector field became NaN or infinite."""


class StepSizeUnderflowError(SolverError):
    """The adaptive step size became too small to make progress."""


class MaxStepsExceededError(SolverError):
    """The solve took more than ``max_num_steps`` steps."""
