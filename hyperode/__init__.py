"""hyperode: Neural ODEs that are fast at inference, fast to train and still ODEs."""

from .errors import MaxStepsExceededError, NonFiniteStateError, SolverError, StepSizeUnderflowError
from .odeint import Solution, odeint, solve
from .solvers import (
    METHODS,
    ButcherTableau,
    IController,
    PIController,
    SolverStats,
    alpha,
    get_method,
    max_norm,
    mixed_norm,
    rms_norm,
)

__version__ = "0.1.0"

__all__ = [
    "METHODS",
    "ButcherTableau",
    "IController",
    "MaxStepsExceededError",
    "NonFiniteStateError",
    "PIController",
    "Solution",
    "SolverError",
    "SolverStats",
    "StepSizeUnderflowError",
    "__version__",
    "alpha",
    "get_method",
    "max_norm",
    "mixed_norm",
    "odeint",
    "rms_norm",
    "solve",
]
