"""The named methods, spelled as torchdiffeq spells them where it has them."""

from __future__ import annotations

from ..step import FixedStepMethod
from ..tableau import ButcherTableau
from . import explicit, low_order_pairs
from .dopri5 import dopri5
from .tsit5 import tsit5

METHODS: dict[str, ButcherTableau] = {
    m.name: m for m in (*explicit.METHODS, *low_order_pairs.METHODS, dopri5, tsit5)
}
ALIASES: dict[str, str] = {"heun": "heun2"}


def get_method(method: str | ButcherTableau | FixedStepMethod,
               ) -> ButcherTableau | FixedStepMethod:
    """Resolve ``method`` to what the integrators run.

    A name resolves to its tableau; a ``ButcherTableau`` is returned as is; so is any
    other ``FixedStepMethod`` (e.g. a ``hyperode.hyper.HyperSolver``), after checking
    that it is a well-formed fixed-step one (it cannot be adaptive: the adaptive
    integrator runs tableaux only).
    """
    if isinstance(method, ButcherTableau):
        return method
    if isinstance(method, str):
        key = ALIASES.get(method, method)
        if key in METHODS:
            return METHODS[key]
    elif isinstance(method, FixedStepMethod):
        _check_fixed_step_method(method)
        return method
    known = ", ".join(sorted([*METHODS, *ALIASES]))
    raise ValueError(
        f"method={method!r} is not a known method; use one of: {known}, "
        f"hyperode.alpha(a), your own hyperode.ButcherTableau or a fixed-step method object "
        f"such as a hyperode.hyper.HyperSolver"
    )


def _check_fixed_step_method(method: FixedStepMethod) -> None:
    what = f"method {type(method).__name__}"
    if not isinstance(method.name, str) or not method.name:
        raise ValueError(f"{what}: name must be a non-empty string, got {method.name!r}")
    if method.adaptive is not False:
        raise ValueError(f"{what} ({method.name!r}) says adaptive={method.adaptive!r}; only a "
                         f"ButcherTableau with an error estimate can run adaptively")
    for attr in ("order", "corrections_per_step"):
        value = getattr(method, attr)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{what} ({method.name!r}): {attr} must be an int >= 0, "
                             f"got {value!r}")
    if not isinstance(method.fsal, bool):
        raise ValueError(f"{what} ({method.name!r}): fsal must be a bool, got {method.fsal!r}")
    if not callable(method.step):
        raise ValueError(f"{what} ({method.name!r}): step must be callable")
