"""torchdyn's solver names, mapped onto hyperode's methods.

torchdyn looks a ``solver=`` string up in ``SOLVER_DICT``
(``torchdyn/numerics/solvers/ode.py``); the names below are its keys, each pointed at
the hyperode method that takes the same steps. A name torchdyn lacks but hyperode has
(``"bosh3"``, ``"dopri8"``, ...), a ``hyperode.ButcherTableau`` and a step method object
(``hyperode.hyper.HyperSolver``) are accepted too.
"""

from __future__ import annotations

from typing import Any

from ..solvers import METHODS, get_method

# torchdyn's SOLVER_DICT keys -> hyperode method names (same coefficients).
TORCHDYN_SOLVERS: dict[str, str] = {
    "euler": "euler",
    "midpoint": "midpoint",
    "rk4": "rk4",               # torchdyn's construct_rk4 is the classic method, as hyperode's
    "rk-4": "rk4",
    "RungeKutta4": "rk4",
    "dopri5": "dopri5",
    "DormandPrince45": "dopri5",
    "DormandPrince5": "dopri5",
    "tsit5": "tsit5",
    "Tsitouras45": "tsit5",
    "Tsitouras5": "tsit5",
    "ieuler": "implicit_euler",  # torchdyn minimises the residual with LBFGS; hyperode: Newton
    "implicit_euler": "implicit_euler",
}

# torchdyn solvers without a hyperode counterpart, with the reason.
UNSUPPORTED_SOLVERS: dict[str, str] = {
    "alf": "the asynchronous leapfrog (a state [x, v] of doubled width) has no hyperode "
           "counterpart",
    "AsynchronousLeapfrog": "the asynchronous leapfrog (a state [x, v] of doubled width) has "
                            "no hyperode counterpart",
}


def supported_names() -> list[str]:
    """Every solver string accepted: torchdyn's spellings, then hyperode's own names."""
    return [*TORCHDYN_SOLVERS, *sorted(n for n in METHODS if n not in TORCHDYN_SOLVERS)]


def resolve_solver(solver: Any, argument: str = "solver", owner: str = "NeuralODE") -> Any:
    """The hyperode method object for a torchdyn ``solver=`` value.

    ``solver`` is a torchdyn name (``TORCHDYN_SOLVERS``), a hyperode method name, a
    ``hyperode.ButcherTableau`` or a step method object (``HyperSolver``). ``ValueError``
    names ``owner``, ``argument``, the value and the names that are accepted otherwise.
    """
    if isinstance(solver, str):
        if solver in UNSUPPORTED_SOLVERS:
            raise ValueError(
                f"{owner}: {argument}={solver!r} is a torchdyn solver that "
                f"hyperode.compat.torchdyn does not provide: {UNSUPPORTED_SOLVERS[solver]}; "
                f"use one of {supported_names()}")
        name = TORCHDYN_SOLVERS.get(solver, solver)
        try:
            return get_method(name)
        except ValueError:
            raise ValueError(
                f"{owner}: {argument}={solver!r} is not a solver name torchdyn or hyperode "
                f"knows; use one of {supported_names()}, a hyperode.ButcherTableau or a "
                f"step method object such as a hyperode.hyper.HyperSolver") from None
    if solver is None or isinstance(solver, (bool, int, float)):
        raise ValueError(f"{owner}: {argument} must be a solver name, a "
                         f"hyperode.ButcherTableau or a step method object, got {solver!r}")
    try:
        method = get_method(solver)
    except (ValueError, AttributeError):
        raise ValueError(
            f"{owner}: {argument}={solver!r} ({type(solver).__name__}) is not a solver "
            f"hyperode can run: give a name ({supported_names()}), a hyperode.ButcherTableau "
            f"or a step method object such as a hyperode.hyper.HyperSolver (torchdyn's own "
            f"solver modules are not accepted)") from None
    return method


def is_fixed_step(method: Any) -> bool:
    """Whether ``method`` has no error estimate (it steps on ``t_span`` itself)."""
    return not getattr(method, "external", False) and not method.adaptive
