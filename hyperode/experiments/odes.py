"""The helpers for the Neural ODEs inside a model, kept at their old import path: they
live in the library, ``hyperode.nn.odes``."""

from ..nn.odes import (
    current_solver,
    neural_odes,
    nfe_counts,
    set_solver,
    solver_from_dict,
    solver_to_dict,
    solvers_in_use,
    using_solver,
)

__all__ = ["current_solver", "neural_odes", "nfe_counts", "set_solver", "solver_from_dict",
           "solver_to_dict", "solvers_in_use", "using_solver"]
