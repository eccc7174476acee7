"""hyperode: Neural ODEs that are fast at inference, fast to train and still ODEs."""

from .adjoint import ADJOINT_NORMS, AdjointSolution, odeint_adjoint, solve_adjoint
from .errors import MaxStepsExceededError, NonFiniteStateError, SolverError, StepSizeUnderflowError
from .events import odeint_event
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
    member_norm,
    mixed_norm,
    rms_norm,
)

__version__ = "0.1.0"

__all__ = [
    "ADJOINT_NORMS",
    "METHODS",
    "AdjointSolution",
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
    "member_norm",
    "mixed_norm",
    "odeint",
    "odeint_adjoint",
    "odeint_event",
    "rms_norm",
    "solve",
    "solve_adjoint",
]
