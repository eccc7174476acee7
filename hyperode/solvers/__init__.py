"""Numerical core: tableaux, one RK step, fixed-grid and adaptive integration."""

from .controllers import IController, PIController
from .methods import METHODS, get_method
from .norms import max_norm, member_norm, mixed_norm, rms_norm
from .stats import SolverStats
from .step import FixedStepMethod, StepResult
from .tableau import ButcherTableau, alpha

__all__ = [
    "METHODS",
    "ButcherTableau",
    "FixedStepMethod",
    "IController",
    "PIController",
    "SolverStats",
    "StepResult",
    "alpha",
    "get_method",
    "max_norm",
    "member_norm",
    "mixed_norm",
    "rms_norm",
]
