"""Argument checks shared by the library's constructors (``NeuralODE``, ``CNFModel``,
``FitConfig``, the architectures, the hypersolver pipelines): each raises
``ValueError`` naming the owner, the argument, what was expected and what came."""

from __future__ import annotations

import math
from numbers import Integral
from typing import Any


def check_t_span(owner: str, t_span: Any) -> tuple[float, float]:
    """A ``(s0, s1)`` pair of distinct finite numbers, as floats."""
    try:
        s0, s1 = (float(v) for v in t_span)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{owner}: t_span must be a pair (s0, s1) of numbers, "
                         f"got {t_span!r}") from e
    if not (math.isfinite(s0) and math.isfinite(s1)) or s0 == s1:
        raise ValueError(f"{owner}: t_span must hold two distinct finite numbers, "
                         f"got {t_span!r}")
    return s0, s1


def check_positive_int(owner: str, name: str, value: Any, minimum: int = 1) -> int:
    """An integer >= ``minimum`` (a Python or numpy integer, not a ``bool``), as ``int``."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ValueError(f"{owner}: {name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def check_finite(owner: str, name: str, value: Any, *, allow_zero: bool = False) -> float:
    """A finite real number > 0 (>= 0 with ``allow_zero``), not a ``bool``."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and \
        math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        raise ValueError(f"{owner}: {name} must be a finite number "
                         f"{'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return float(value)
