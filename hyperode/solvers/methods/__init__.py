"""The named methods, spelled as torchdiffeq spells them where it has them."""

from __future__ import annotations

from typing import Any

from ..step import StepMethod
from ..tableau import ButcherTableau
from . import adams, explicit, implicit, low_order_pairs
from .dopri5 import dopri5
from .dopri8 import dopri8
from .scipy_solver import scipy_solver
from .tsit5 import tsit5

METHODS: dict[str, Any] = {
    m.name: m for m in (*explicit.METHODS, *low_order_pairs.METHODS, dopri5, dopri8, tsit5,
                        *adams.METHODS, *implicit.METHODS, *implicit.ADAPTIVE_METHODS,
                        scipy_solver)
}
ALIASES: dict[str, str] = {"heun": "heun2", **adams.ALIASES, **implicit.ALIASES}


def get_method(method: Any) -> Any:
    """Resolve ``method`` to what the integrators run.

    A name resolves to its method object; a ``ButcherTableau`` is returned as is; so is
    any other step method (``hyperode.solvers.step.StepMethod``, e.g. a
    ``hyperode.hyper.HyperSolver``) after checking that it is well formed.
    """
    if isinstance(method, ButcherTableau):
        return method
    if isinstance(method, str):
        key = ALIASES.get(method, method)
        if key in METHODS:
            return METHODS[key]
    elif isinstance(method, StepMethod) or getattr(method, "external", False):
        _check_step_method(method)
        return method
    known = ", ".join(sorted([*METHODS, *ALIASES]))
    raise ValueError(
        f"method={method!r} is not a known method; use one of: {known}, "
        f"hyperode.alpha(a), your own hyperode.ButcherTableau or a step method object "
        f"such as a hyperode.hyper.HyperSolver"
    )


def _check_step_method(method: Any) -> None:
    what = f"method {type(method).__name__}"
    if not isinstance(method.name, str) or not method.name:
        raise ValueError(f"{what}: name must be a non-empty string, got {method.name!r}")
    if getattr(method, "external", False):
        return
    if not isinstance(method.adaptive, bool):
        raise ValueError(f"{what} ({method.name!r}): adaptive must be a bool, "
                         f"got {method.adaptive!r}")
    if method.adaptive:
        e = getattr(method, "error_exponent", None)
        if isinstance(e, bool) or not isinstance(e, (int, float)) or not 0 < e <= 1:
            raise ValueError(f"{what} ({method.name!r}) is adaptive, so error_exponent must be "
                             f"a number in (0, 1] (1/(q+1)), got {e!r}")
    for attr in ("order", "corrections_per_step"):
        value = getattr(method, attr)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{what} ({method.name!r}): {attr} must be an int >= 0, "
                             f"got {value!r}")
    if not callable(method.stepper):
        raise ValueError(f"{what} ({method.name!r}): stepper must be callable")


__all__ = ["ALIASES", "METHODS", "StepMethod", "get_method"]
