"""Fixed-grid integration.

The grid is built once (uniform ``step_size``, ``num_steps`` equal steps, or the
user's ``grid_points``) and every requested output time is merged into it, so
outputs are hit exactly: steps are cut to land on them, never interpolated
across. One step per grid interval: ``rk_step`` for a tableau (an FSAL method
carries its last stage over, costing ``s - 1`` evaluations per step after the
first), or the ``step`` of any other ``FixedStepMethod`` (e.g. a hypersolver),
always handed the first stage ``k1 = f(t, y)`` that the integrator evaluated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ..errors import MaxStepsExceededError
from .problem import VectorField
from .stats import SolverStats
from .step import FixedStepMethod, fixed_stepper
from .tableau import ButcherTableau

_MERGE_TOL = 1e-10  # grid points this close (relative to the span) to an output time merge


def build_grid(
    t_out: Sequence[float],
    *,
    step_size: float | None = None,
    num_steps: int | None = None,
    grid_points: Sequence[float] | None = None,
) -> tuple[list[float], list[int]]:
    """Return ``(grid, out_index)``: the grid times (including every ``t_out``) and,
    for each output time, its index in ``grid``. Exactly one option must be given;
    the caller has validated its value."""
    t0, t_end = float(t_out[0]), float(t_out[-1])
    span = abs(t_end - t0)
    d = 1.0 if t_end >= t0 else -1.0
    if step_size is not None:
        n = max(1, math.ceil(span / step_size * (1 - 1e-10))) if span > 0 else 0
        base = [t0 + d * step_size * k for k in range(n)]
    elif num_steps is not None:
        base = [t0 + (t_end - t0) * k / num_steps for k in range(num_steps)]
    else:
        base = [float(x) for x in grid_points]
    tol = _MERGE_TOL * max(span, 1e-300)
    outs = [float(x) for x in t_out]
    inside = [x for x in base if d * (x - t0) > 0 and d * (t_end - x) > 0
              and min(abs(x - o) for o in outs) > tol]
    grid = sorted(set(inside) | set(outs), key=lambda x: d * x)
    position = {x: i for i, x in enumerate(grid)}
    return grid, [position[o] for o in outs]


def integrate_fixed(
    f: VectorField, method: ButcherTableau | FixedStepMethod, y0: Tensor,
    grid: Sequence[float], out_index: Sequence[int], stats: SolverStats, *,
    max_num_steps: int | None = None, record_steps: bool = False,
) -> list[Tensor]:
    """Take one step per grid interval; return the states at ``grid[i] for i in out_index``.

    ``stats.accepted`` grows by the number of steps and ``stats.nfe_correction`` by
    that times ``method.corrections_per_step`` (``f``'s evaluations are counted by
    ``f`` itself)."""
    n_steps = len(grid) - 1
    if max_num_steps is not None and n_steps > max_num_steps:
        raise MaxStepsExceededError(
            f"the fixed grid has {n_steps} steps, more than max_num_steps={max_num_steps}; "
            f"use a larger step_size or raise options['max_num_steps']"
        )
    wanted = set(out_index)
    ys = [y0] if 0 in wanted else []
    y = y0
    k1 = None
    step = fixed_stepper(method, f)
    fsal = method.fsal
    for j in range(n_steps):
        t, h = grid[j], grid[j + 1] - grid[j]
        if k1 is None:
            k1 = f(t, y)
        result = step(t, y, h, k1)
        y = result.y1
        k1 = result.ks[-1] if fsal else None
        if j + 1 in wanted:
            ys.append(y)
    stats.accepted += n_steps
    stats.nfe_correction += n_steps * method.corrections_per_step
    if record_steps:
        stats.accepted_ts.extend(grid[1:])
    return ys


def first_nonfinite_step(
    f: VectorField, method: ButcherTableau | FixedStepMethod, y: Tensor, grid: Sequence[float]
) -> float | None:
    """Replay ``grid`` from ``y`` (no graph) and return the first time at which the state
    is non-finite, or ``None``. Used only to name the time in an error message."""
    if not bool(torch.isfinite(y).all()):
        return grid[0]
    step = fixed_stepper(method, f)
    with torch.no_grad():
        for j in range(len(grid) - 1):
            t, h = grid[j], grid[j + 1] - grid[j]
            y = step(t, y, h, f(t, y)).y1
            if not bool(torch.isfinite(y).all()):
                return grid[j + 1]
    return None
