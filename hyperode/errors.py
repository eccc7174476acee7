"""Exceptions raised when a solve cannot produce a trustworthy result, and where warnings
point.

Bad arguments raise ``ValueError`` naming the argument (``ConfigError`` when the name
is carried as data, for a front end to map to its flag); the others are for solves that
started correctly and then failed. All derive from ``SolverError`` (a
``RuntimeError``) so callers can catch them together.
"""

import os
import sys

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


class ConfigError(ValueError):
    """A bad configuration value; ``field`` names the setting (a ``TrainConfig`` field,
    a pipeline argument), ``detail`` says what is wrong with it. A command-line front end
    maps ``field`` to its flag."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.detail = message


class SolverError(RuntimeError):
    """A solve failed; the message says where (t) and what to try."""


class NonFiniteStateError(SolverError):
    """The state or the vector field became NaN or infinite."""


class StepSizeUnderflowError(SolverError):
    """The adaptive step size became too small to make progress."""


class MaxStepsExceededError(SolverError):
    """The solve took more than ``max_num_steps`` steps."""


def user_stacklevel() -> int:
    """The ``stacklevel`` for ``warnings.warn`` that points at the first caller outside
    the hyperode package (as seen from the function that calls ``warnings.warn``)."""
    frame = sys._getframe(1)
    level = 1
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR + os.sep):
        frame = frame.f_back
        level += 1
    return level
