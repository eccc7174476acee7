"""The one fixed-grid loop, and the lazy grids it runs on.

A grid is described, not built (``Grid``): a uniform ``step_size``, ``num_steps``
equal steps, the user's points (``grid_points``, or what torchdiffeq's
``grid_constructor(func, y0, t)`` returns), or the output times themselves (a
method with no grid option steps on ``t``, as torchdiffeq does). Its size is known
before any time is generated, so ``max_num_steps`` is checked first and a tiny step
never materialises a list of a billion floats.

Output times are handled in one of two ways (``interp``):

- ``None`` (hyperode's default): every output time is merged into the grid and hit
  exactly, steps being cut to land on it; nothing is interpolated.
- ``"linear"`` / ``"cubic"`` (torchdiffeq's ``fixed_grid.py``): the grid is left as it
  is and outputs inside a step are interpolated, linearly or by the cubic Hermite
  interpolant through both ends (one extra ``f(t1, y1)`` per such step).

One step per grid interval, by whatever step method (``step.bind``): an FSAL method
carries its last stage over; anything else gets ``k1 = f(t, y)`` evaluated here.
``perturb=True`` evaluates ``f`` just inside each interval's ends (torchdiffeq's
``Perturb``), so a discontinuity on a grid point is seen from the right side.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import Tensor

from ..errors import MaxStepsExceededError
from .problem import Callbacks, NudgedField, VectorField
from .stats import SolverStats
from .step import StepMethod, Stepper, StepResult, bind, hermite, linear, no_accept, own
from .tableau import ButcherTableau

_MERGE_TOL = 1e-10  # grid points this close (relative to the span) to an output time merge

# A hook called after every step with (t, y, t1, y1, stepper, result); True stops the loop.
Watch = Callable[[float, Tensor, float, Tensor, Stepper, StepResult], bool]


@dataclass(frozen=True)
class Grid:
    """A fixed grid from ``t0`` towards ``t_end``, generated lazily.

    Exactly one of ``step_size`` (uniform steps; the last one cut at ``t_end``),
    ``num_steps`` (equal steps over the span) or ``points`` (given times, the first
    being ``t0``) is set. ``t_end = None`` (event solves) means an unbounded uniform
    grid in direction ``direction``.
    """

    t0: float
    t_end: float | None
    step_size: float | None = None
    num_steps: int | None = None
    points: tuple[float, ...] | None = None
    direction: float = 1.0

    def count(self) -> int | None:
        """Number of steps (``None`` for an unbounded grid)."""
        if self.points is not None:
            return len(self.points) - 1
        if self.num_steps is not None:
            return self.num_steps
        if self.t_end is None:
            return None
        span = abs(self.t_end - self.t0)
        h = cast(float, self.step_size)  # neither points nor num_steps: a step_size grid
        return max(1, math.ceil(span / h * (1 - 1e-10))) if span > 0 else 0

    def times(self) -> Iterator[float]:
        """The grid times from ``t0`` on (``t_end`` included when bounded)."""
        t0, t_end = self.t0, self.t_end
        if self.points is not None:
            yield from self.points
            return
        if self.num_steps is not None:
            n, t_last = self.num_steps, cast(float, t_end)  # a num_steps grid is bounded
            for k in range(n):
                yield t0 + (t_last - t0) * k / n
            yield t_last
            return
        h, d = cast(float, self.step_size), self.direction
        if t_end is None:
            for k in itertools.count():
                yield t0 + d * h * k
        n = cast(int, self.count())  # bounded: a count
        for k in range(n):
            yield t0 + d * h * k
        if n:
            yield cast(float, t_end)


def merged_times(grid: Grid, t_out: Sequence[float]) -> Iterator[float]:
    """The grid's times inside ``(t_out[0], t_out[-1])`` with every output time merged in
    (a grid point within a tiny relative distance of an output time gives way to it);
    strictly monotonic, from ``t_out[0]`` to ``t_out[-1]``."""
    t0, t_end = t_out[0], t_out[-1]
    d = 1.0 if t_end >= t0 else -1.0
    tol = _MERGE_TOL * max(abs(t_end - t0), 1e-300)
    j, last = 0, t0  # next output time not yet yielded; last time yielded
    for x in grid.times():
        if d * (x - t0) <= tol:
            continue
        if d * (x - t_end) >= -tol:
            break
        while d * (t_out[j] - x) <= tol:  # t_end > x stops this before the end
            yield t_out[j]
            last = t_out[j]
            j += 1
        if d * (x - last) > tol:
            yield x
            last = x
    yield from t_out[j:]


def integrate_fixed(
    f: VectorField, method: ButcherTableau | StepMethod, y0: Tensor, t_out: Sequence[float],
    grid: Grid, stats: SolverStats, *, interp: str | None = None, perturb: bool = False,
    max_num_steps: int | None = None, record_steps: bool = False,
    callbacks: Callbacks | None = None, watch: Watch | None = None,
) -> list[Tensor]:
    """Take one step per grid interval; return the states at every ``t_out``.

    Args:
        f: the vector field on the flat state.
        method: any step method.
        y0: flat initial state at ``t_out[0]``.
        t_out: output times (strictly monotonic, validated by the caller); ignored
            for an event solve (``watch`` given and ``grid.t_end`` None).
        grid: the grid (covering ``[t_out[0], t_out[-1]]``).
        interp: ``None`` (land on outputs), ``"linear"`` or ``"cubic"`` (module doc).
        perturb: evaluate ``f`` just inside each interval (torchdiffeq's ``perturb``).
        max_num_steps: refuse a grid with more steps (checked before stepping).
        record_steps: append each step's end time to ``stats.accepted_ts``.
        callbacks: ``callback_step`` is called before each step.
        watch: called after each step; returning True stops the loop (events).

    ``stats.accepted`` grows by the number of steps and ``stats.nfe_correction`` by
    that times ``method.corrections_per_step`` (``f`` counts its own evaluations).
    """
    n_steps = grid.count()
    if max_num_steps is not None and n_steps is not None and n_steps > max_num_steps:
        raise MaxStepsExceededError(
            f"the fixed grid has {n_steps} steps, more than max_num_steps={max_num_steps}; "
            f"use a larger step_size or raise options['max_num_steps']"
        )
    field = NudgedField(f, start=True, end=True) if perturb else f
    stepper = bind(method, field, stats)
    step = stepper.step
    accept = None if stepper.accept is no_accept else stepper.accept
    on_step = callbacks.step if callbacks is not None else None
    limit = max_num_steps if n_steps is None else None  # a bounded grid was checked above
    hooks = perturb or on_step is not None or limit is not None or record_steps
    landing = interp is None and watch is None
    times = merged_times(grid, t_out) if landing else grid.times()
    ys = [y0]
    out_i, n_out = 1, len(t_out)
    next_out = t_out[1] if n_out > 1 else None
    y, k1 = y0, None
    t = next(times)
    taken = 0
    for t1 in times:
        h = t1 - t
        if hooks:
            if limit is not None and taken >= limit:
                if hasattr(watch, "never_fired"):
                    raise MaxStepsExceededError(cast(Any, watch).never_fired(limit, t))
                raise MaxStepsExceededError(
                    f"max_num_steps={limit} reached at t={t!r}; raise "
                    f"options['max_num_steps'] or use a larger step_size")
            if perturb:
                cast(NudgedField, field).interval(t, t1)
            if on_step is not None:
                on_step(t, y, h)
            if record_steps:  # the list is made when steps are recorded
                cast("list[float]", stats.accepted_ts).append(t1)
        if k1 is None:
            k1 = field(t, y)
        result = step(t, y, h, k1)
        if accept is not None:
            accept(t, y, h, result)
        taken += 1
        y1 = result.y1
        if landing:
            if t1 == next_out:
                ys.append(own(y1))
                out_i += 1
                next_out = t_out[out_i] if out_i < n_out else None
        elif watch is not None:
            if watch(t, y, t1, y1, stepper, result):
                break
        else:
            d = 1.0 if h > 0 else -1.0
            f1 = None
            while out_i < n_out and d * (t_out[out_i] - t1) <= 0:
                theta = (t_out[out_i] - t) / h
                if interp == "linear":
                    ys.append(linear(y, y1, theta))
                else:
                    if f1 is None:
                        f1 = result.f1 if result.f1 is not None else field(t1, y1)
                    ys.append(hermite(y, y1, k1, f1, h, theta))
                out_i += 1
        k1 = result.f1
        t, y = t1, y1
    stats.accepted += taken
    stats.nfe_correction += taken * method.corrections_per_step
    return ys


def first_nonfinite_time(f: VectorField, method: ButcherTableau | StepMethod, y: Tensor,
                         times: Sequence[float]) -> float | None:
    """Replay the steps through ``times`` from ``y`` (no graph) and return the first
    time at which the state is non-finite, or ``None``. Only to name the time in an
    error message."""
    if not bool(torch.isfinite(y).all()):
        return times[0]
    stepper = bind(method, f, SolverStats())
    with torch.no_grad():
        for t, t1 in itertools.pairwise(times):
            result = stepper.step(t, y, t1 - t, f(t, y))
            stepper.accept(t, y, t1 - t, result)
            y = result.y1
            if not bool(torch.isfinite(y).all()):
                return t1
    return None
