"""Pareto fronts of (cost, error) points, both to be minimised: error vs NFE, error vs
MACs, accuracy loss vs NFE."""

from __future__ import annotations

import math
from collections.abc import Sequence


def pareto_indices(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated points, in increasing cost.

    ``(c, e)`` is dominated when another point has ``c' <= c`` and ``e' <= e`` with at
    least one strict. Exact duplicates of a front point are all kept. Points whose cost
    or error is not finite (NaN or inf: a diverged solve) are never on the front.
    """
    pts = []
    for i, p in enumerate(points):
        try:
            c, e = (float(v) for v in p)
        except (TypeError, ValueError):
            raise ValueError(f"pareto_indices: point {i} must be a (cost, error) pair, "
                             f"got {p!r}") from None
        if math.isfinite(c) and math.isfinite(e):
            pts.append((c, e, i))
    pts.sort()
    front: list[int] = []
    best: tuple[float, float] | None = None
    for c, e, i in pts:  # earlier points cost no more; the front's last has the least error
        if best is None or e < best[1]:
            front.append(i)
            best = (c, e)
        elif (c, e) == best:
            front.append(i)
    return front


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The non-dominated ``(cost, error)`` points in increasing cost
    (``pareto_indices``)."""
    return [(points[i][0], points[i][1]) for i in pareto_indices(points)]
