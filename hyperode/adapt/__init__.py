"""Is it still an ODE? Solver-independence checks and solver adaptation during training
(Ott et al., "ResNet After All? Neural ODEs and Their Numerical Solution", ICLR 2021).

- ``checking_solver`` (the paper's ``test_solver``): the test solver of a training
  solver (factor-50 error rule).
- ``StepAdaptation`` / ``ToleranceAdaptation``: training callbacks (Algorithms 2, 3)
  around the pure decisions ``StepRule`` / ``ToleranceRule``.
- ``starting_step``: Hairer–Nørsett–Wanner's starting step (the initial ``h``).
- ``solver_independence_report``: evaluate a trained model with more accurate solvers.
- ``critical_steps``, ``critical_tolerance``, ``GridResult``, ``plot_grid``: the grid
  search's rules and results (the runner that trains is ``hyperode.experiments.run_grid``).
- ``find_crossings``: do trajectories cross in phase space (a sign of a ResNet)?
- ``CrossingField``: appendix A's field (eq. 6), Euler crosses at h = 1/2 only.
"""

from .checking import checking_solver, checking_step_size, test_solver, test_step_size
from .crossing import CrossingField, CrossingResult, find_crossings, plot_crossings, project_2d
from .grid import GridResult, critical_steps, critical_tolerance, plot_grid
from .report import OdenessReport, candidate_solvers, plot_odeness, solver_independence_report
from .starting_step import model_starting_step, starting_step
from .step_adaptation import StepAdaptation, StepDecision, StepRule
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
    "checking_solver",
    "checking_step_size",
    "critical_steps",
    "critical_tolerance",
    "find_crossings",
    "model_starting_step",
    "plot_crossings",
    "plot_grid",
    "plot_odeness",
    "project_2d",
    "solver_independence_report",
    "starting_step",
    "test_solver",
    "test_step_size",
]
