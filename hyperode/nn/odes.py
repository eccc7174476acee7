"""The Neural ODEs inside a model: their solvers and their evaluation counts.

A model may hold any number of ``hyperode.nn.NeuralODE`` modules (a classifier one,
a multi-block network several). These helpers treat them as a group: the solver in
use, swapping it, and the forward/backward NFE of the last pass summed over them.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any, cast

from torch import nn

from ..solvers.methods import METHODS
from .node import NeuralODE
from .solver_config import SolverConfig


def neural_odes(model: nn.Module) -> list[NeuralODE]:
    """Every ``NeuralODE`` in ``model`` (``model`` itself included), in module order."""
    return [m for m in model.modules() if isinstance(m, NeuralODE)]


def current_solver(model: nn.Module) -> SolverConfig | None:
    """The solver of the model's first Neural ODE, or ``None`` if it has none."""
    nodes = neural_odes(model)
    return nodes[0].solver if nodes else None


def solvers_in_use(model: nn.Module) -> list[SolverConfig]:
    """The distinct solvers of the model's Neural ODEs, in module order."""
    out: list[SolverConfig] = []
    for node in neural_odes(model):
        if node.solver not in out:
            out.append(node.solver)
    return out


def set_solver(model: nn.Module, solver: SolverConfig) -> None:
    """Make every Neural ODE of ``model`` use ``solver``."""
    if not isinstance(solver, SolverConfig):
        raise ValueError(f"solver must be a hyperode.nn.SolverConfig, got "
                         f"{type(solver).__name__}")
    nodes = neural_odes(model)
    if not nodes:
        raise ValueError(f"the model ({type(model).__name__}) contains no NeuralODE whose "
                         f"solver could be set")
    for node in nodes:
        node.solver = solver


@contextlib.contextmanager
def using_solver(model: nn.Module, solver: SolverConfig | None) -> Iterator[None]:
    """Temporarily run every Neural ODE of ``model`` with ``solver`` (``None``: unchanged)."""
    if solver is None:
        yield
        return
    with contextlib.ExitStack() as stack:
        for node in neural_odes(model):
            stack.enter_context(node.using(solver))
        yield


def nfe_counts(model: nn.Module) -> tuple[int, int]:
    """``(forward, backward)`` NFE of the last pass, summed over the model's Neural ODEs.

    A module whose backward pass has not run (or that differentiates through the
    solver, where the backward pass evaluates no vector field) counts 0 backward.
    """
    fwd = bwd = 0
    for node in neural_odes(model):
        fwd += int(getattr(node, "nfe_forward", 0) or 0)
        bwd += int(getattr(node, "nfe_backward", 0) or 0)
    return fwd, bwd


# --------------------------------------------------------------------------- (de)serialise


def solver_to_dict(solver: SolverConfig) -> dict[str, Any]:
    """A JSON-compatible description of ``solver`` that ``solver_from_dict`` inverts.

    ``method`` is stored by name; a ``ButcherTableau`` that is not a registered method,
    or an option that is not plain data (e.g. a norm function), is stored by ``repr``
    and marks the record ``"restorable": False``.
    """
    restorable = True
    method: Any = solver.method
    if not isinstance(method, str):
        name = solver.method_name
        if name in METHODS and METHODS[name] == method:
            method = name
        else:
            method, restorable = repr(method), False
    options: dict[str, Any] = {}
    for key, value in solver.options:
        plain = _plain(value)
        if plain is None and value is not None:
            options[key], restorable = repr(value), False
        else:
            options[key] = plain
    adjoint_method: Any = solver.adjoint_method
    if adjoint_method is not None and not isinstance(adjoint_method, str):
        adjoint_method, restorable = repr(adjoint_method), False
    return {
        "method": method, "rtol": solver.rtol, "atol": solver.atol,
        "step_size": solver.step_size, "num_steps": solver.num_steps, "options": options,
        "adjoint_rtol": solver.adjoint_rtol, "adjoint_atol": solver.adjoint_atol,
        "adjoint_method": adjoint_method, "adjoint_norm": solver.adjoint_norm,
        "describe": solver.describe(), "restorable": restorable,
    }


def _plain(value: Any) -> Any:
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, (tuple, list)):
        items = [_plain(v) for v in value]
        if any(i is None and v is not None for i, v in zip(items, value)):
            return None
        return items
    return None


def solver_from_dict(record: dict[str, Any]) -> SolverConfig | None:
    """Inverse of ``solver_to_dict``; ``None`` for a record that is not restorable."""
    if not record.get("restorable", False):
        return None
    options = {k: tuple(v) if isinstance(v, list) else v
               for k, v in record.get("options", {}).items()}
    return SolverConfig(
        method=record["method"], rtol=record["rtol"], atol=record["atol"],
        step_size=record["step_size"], num_steps=record["num_steps"],
        options=cast(Any, options),  # normalised to sorted pairs by SolverConfig
        adjoint_rtol=record["adjoint_rtol"], adjoint_atol=record["adjoint_atol"],
        adjoint_method=record["adjoint_method"], adjoint_norm=record["adjoint_norm"],
    )
