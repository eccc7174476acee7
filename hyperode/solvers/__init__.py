"""Numerical core: tableaux, one RK step, fixed-grid and adaptive integration."""

from .controllers import IController, PIController
from .methods import METHODS, get_method
from .norms import max_norm, member_norm, mixed_norm, rms_norm
from .stats import SolverStats
from .tableau import ButcherTableau, alpha

__all__ = [
    "METHODS",
    "ButcherTableau",
    "IController",
    "PIController",
    "SolverStats",
    "alpha",
    "get_method",
    "max_norm",
    "member_norm",
    "mixed_norm",
    "rms_norm",
]
