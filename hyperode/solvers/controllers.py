"""Step-size controllers: given the error ratio of an attempted step, accept or
reject it and propose the next step size.

Both follow Hairer & Wanner (Solving ODEs I, §II.4; II, §IV.2). ``exponent`` is
``1 / (q + 1)`` with ``q`` the lower order of the embedded pair. After a rejected
step the next accepted step is not allowed to grow (``factor <= 1``); the
integrator enforces that, so it holds for every controller.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def _check_factors(safety: float, ifactor: float, dfactor: float) -> None:
    for name, value in (("safety", safety), ("ifactor", ifactor), ("dfactor", dfactor)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{name} must be a number, got {value!r}")
    if not 0 < safety <= 1:
        raise ValueError(f"safety must be in (0, 1], got {safety!r}")
    if not ifactor >= 1:
        raise ValueError(f"ifactor must be >= 1, got {ifactor!r}")
    if not 0 < dfactor < 1:
        raise ValueError(f"dfactor must be in (0, 1), got {dfactor!r}")


@dataclass(frozen=True)
class IController:
    """Integral (elementary) controller: ``factor = safety * r**(-exponent)``, clamped to
    ``[dfactor, ifactor]``.

    With ``shrink_after_accept=False`` (the default, torchdiffeq's rule) an accepted
    step never makes the next one smaller: ``factor >= 1`` whenever ``r <= 1``. Set it
    to True for the textbook controller, which also shrinks after accepted steps
    whose error ratio lies in ``(safety**(1/exponent), 1]``.
    """

    safety: float = 0.9
    ifactor: float = 10.0
    dfactor: float = 0.2
    shrink_after_accept: bool = False

    def __post_init__(self) -> None:
        _check_factors(self.safety, self.ifactor, self.dfactor)

    def initial_memory(self) -> float:
        return 1.0

    def factor(self, ratio: float, memory: float, exponent: float) -> tuple[float, float]:
        """Return ``(factor, new memory)`` for an attempted step with error ``ratio``."""
        if ratio == 0.0:
            return self.ifactor, memory
        floor = self.dfactor if ratio > 1.0 or self.shrink_after_accept else 1.0
        f = self.safety * ratio ** (-exponent)
        return min(self.ifactor, max(floor, f)), memory


@dataclass(frozen=True)
class PIController:
    """Proportional–integral controller (Gustafsson; Hairer's DOPRI5):
    ``factor = safety * r_n**(-(exponent - 0.75*beta)) * r_{n-1}**beta`` on accepted
    steps, with ``r_{n-1}`` the last accepted ratio (initially 1e-4) and
    ``beta = 0.2 * exponent`` by default (0.04 for a 5(4) pair, as in DOPRI5).
    Rejected steps use the integral rule.
    """

    safety: float = 0.9
    ifactor: float = 10.0
    dfactor: float = 0.2
    beta: float | None = None

    def __post_init__(self) -> None:
        _check_factors(self.safety, self.ifactor, self.dfactor)
        if self.beta is not None and not 0 <= self.beta < 1:
            raise ValueError(f"beta must be in [0, 1), got {self.beta!r}")

    def initial_memory(self) -> float:
        return 1e-4

    def factor(self, ratio: float, memory: float, exponent: float) -> tuple[float, float]:
        if ratio > 1.0 or not math.isfinite(ratio):
            f = self.safety * ratio ** (-exponent) if math.isfinite(ratio) else self.dfactor
            return min(1.0, max(self.dfactor, f)), memory
        beta = 0.2 * exponent if self.beta is None else self.beta
        if ratio == 0.0:
            return self.ifactor, memory
        f = self.safety * ratio ** (-(exponent - 0.75 * beta)) * memory**beta
        return min(self.ifactor, max(self.dfactor, f)), max(ratio, 1e-4)


CONTROLLERS = {"i": IController, "pi": PIController}
