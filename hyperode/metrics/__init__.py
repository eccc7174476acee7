"""Evaluation of solvers and hypersolvers: accuracy against a reference (terminal
MAPE, per-mesh-point error, accuracy loss), sample quality of generative models (MMD,
sliced Wasserstein, Fréchet distance, precision/recall), cost (NFE of f and g, MACs per sample by
layer hooks), wall-clock timing and Pareto fronts."""

from .cost import COUNTED_LAYERS, MacCounter, SolveCost, layer_macs, macs_per_call, solve_cost
from .generative import (
    frechet_distance,
    mmd,
    precision_recall,
    sliced_wasserstein,
)
from .pareto import pareto_front, pareto_indices
from .solution import (
    MAPE_REDUCTIONS,
    accuracy,
    accuracy_loss,
    mape,
    mesh_abs_error,
    reference_solution,
)
from .timing import Timing, time_call

__all__ = [
    "COUNTED_LAYERS",
    "MAPE_REDUCTIONS",
    "MacCounter",
    "SolveCost",
    "Timing",
    "accuracy",
    "accuracy_loss",
    "frechet_distance",
    "layer_macs",
    "macs_per_call",
    "mape",
    "mesh_abs_error",
    "mmd",
    "pareto_front",
    "pareto_indices",
    "precision_recall",
    "reference_solution",
    "sliced_wasserstein",
    "solve_cost",
    "time_call",
]
