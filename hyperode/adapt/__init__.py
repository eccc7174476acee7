"""Is it still an ODE? Solver-independence checks and solver adaptation during training
(Ott et al., "ResNet After All? Neural ODEs and Their Numerical Solution", ICLR 2021).

- ``test_solver``: the test solver of a training solver (factor-50 error rule).
- ``StepAdaptation`` / ``ToleranceAdaptation``: training callbacks (Algorithms 2, 3)
  around the pure decisions ``StepRule`` / ``ToleranceRule``.
- ``starting_step``: Hairer–Nørsett–Wanner's starting step (the initial ``h``).
- ``solver_independence_report``: evaluate a trained model with more accurate solvers.
- ``run_grid``: train over a grid of step counts or tolerances and seeds, report the
  critical step count / tolerance (``critical_steps``, ``critical_tolerance``).
- ``find_crossings``: do trajectories cross in phase space (a sign of a ResNet)?
- ``CrossingField``: appendix A's field (eq. 6), Euler crosses at h = 1/2 only.
"""

from .crossing import CrossingField, CrossingResult, find_crossings, plot_crossings, project_2d
from .grid import GridResult, critical_steps, critical_tolerance, plot_grid, run_grid
from .report import OdenessReport, candidate_solvers, plot_odeness, solver_independence_report
from .starting_step import model_starting_step, starting_step
from .step_adaptation import StepAdaptation, StepDecision, StepRule
from .test_solver import test_solver, test_step_size
from .tolerance_adaptation import ToleranceAdaptation, ToleranceDecision, ToleranceRule

__all__ = [
    "CrossingField",
    "CrossingResult",
    "GridResult",
    "OdenessReport",
    "StepAdaptation",
    "StepDecision",
    "StepRule",
    "ToleranceAdaptation",
    "ToleranceDecision",
    "ToleranceRule",
    "candidate_solvers",
    "critical_steps",
    "critical_tolerance",
    "find_crossings",
    "model_starting_step",
    "plot_crossings",
    "plot_grid",
    "plot_odeness",
    "project_2d",
    "run_grid",
    "solver_independence_report",
    "starting_step",
    "test_solver",
    "test_step_size",
]
