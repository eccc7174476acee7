"""Adaptive-step integration with an embedded error estimate.

Per attempted step: one ``rk_step`` (``s - 1`` new evaluations, the first stage
being reused or carried over), the error ratio
``norm(err / (atol + rtol * max(|y0|, |y1|)))`` with one host synchronisation to
read it, and the controller's accept/reject decision. Output at requested times
comes from the method's dense output inside accepted steps (no extra steps, no
extra evaluations, except one ``f(t1, y1)`` for a Hermite interpolant when the
step is the last one). Steps are cut to land exactly on the final time and on
``step_t``/``jump_t``; after a ``jump_t`` the vector field is re-evaluated from
the far side of the discontinuity instead of reusing the FSAL stage.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import MaxStepsExceededError, StepSizeUnderflowError
from .controllers import IController, PIController
from .problem import VectorField
from .stats import SolverStats
from .step import dense_output, rk_step
from .tableau import ButcherTableau

Norm = Callable[[Tensor], Tensor]


@dataclass
class AdaptiveConfig:
    """Validated adaptive options (see ``hyperode.solve`` for their meaning)."""

    rtol: float | Tensor
    atol: float | Tensor
    norm: Norm  # on the flat state
    controller: IController | PIController
    first_step: float | None = None
    min_step: float = 0.0
    max_step: float = math.inf
    max_num_steps: int = 100_000
    step_t: Sequence[float] = ()
    jump_t: Sequence[float] = ()
    record_steps: bool = False

    def __post_init__(self) -> None:
        atol = self.atol
        self.atol_may_vanish = bool((atol == 0).any()) if isinstance(atol, Tensor) else atol == 0


def _error_ratio(error: Tensor, abs_y0: Tensor, abs_y1: Tensor, cfg: AdaptiveConfig) -> float:
    """``norm(error / (atol + rtol * max(|y0|, |y1|)))`` as a float (the step's one host
    sync). Call without a graph; ``error`` is consumed (divided in place)."""
    scale = torch.maximum(abs_y0, abs_y1)
    if isinstance(cfg.rtol, Tensor) or isinstance(cfg.atol, Tensor):
        scale = cfg.atol + cfg.rtol * scale
    else:
        scale.mul_(cfg.rtol).add_(cfg.atol)
    if cfg.atol_may_vanish:
        return float(cfg.norm(_divide(error, scale, cfg)))
    return float(cfg.norm(error.div_(scale)))


def _divide(x: Tensor, scale: Tensor, cfg: AdaptiveConfig) -> Tensor:
    """``x / scale``; where ``atol`` may be 0 the scale can be 0 too, and there an exact
    zero counts as zero error (not 0/0 = NaN) while anything else is infinitely large."""
    out = x / scale
    if cfg.atol_may_vanish:
        out = torch.where(x == 0, 0.0, out)
    return out


def _nudge(t: float, toward: float, dtype: torch.dtype) -> float:
    """The next time after ``t`` towards ``toward`` that is distinct in ``dtype`` (the
    dtype in which ``f`` receives ``t``)."""
    a = torch.tensor(t, dtype=dtype)
    return float(torch.nextafter(a, torch.tensor(toward, dtype=dtype)))


def initial_step(
    f: VectorField, t0: float, y0: Tensor, f0: Tensor, direction: float, exponent: float,
    cfg: AdaptiveConfig,
) -> float:
    """Starting step of Hairer, Nørsett & Wanner (Solving ODEs I, §II.4, p. 169).

    Uses the configured norm with weights ``atol + rtol*|y0|``; costs one evaluation
    of ``f``. Returns a positive float (the caller applies the direction).
    """
    with torch.no_grad():
        scale = cfg.atol + cfg.rtol * y0.abs()
        d0 = float(cfg.norm(_divide(y0, scale, cfg)))
        d1 = float(cfg.norm(_divide(f0, scale, cfg)))
        h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
        h0 = min(h0, cfg.max_step)
        y1 = torch.add(y0, f0, alpha=direction * h0)
        f1 = f(t0 + direction * h0, y1)
        d2 = float(cfg.norm(_divide(f1 - f0, scale, cfg))) / h0
    dmax = max(d1, d2)
    h1 = max(1e-6, h0 * 1e-3) if dmax <= 1e-15 else (0.01 / dmax) ** exponent
    return min(100 * h0, h1, cfg.max_step)


def _landing_points(t0: float, t_end: float, cfg: AdaptiveConfig) -> tuple[list[float], set[float]]:
    """Times that steps must land on, in the direction of integration, and the jumps."""
    d = 1.0 if t_end > t0 else -1.0
    inside = {x for x in (*cfg.step_t, *cfg.jump_t) if d * (x - t0) > 0 and d * (t_end - x) > 0}
    stops = [*sorted(inside, key=lambda x: d * x), t_end]
    return stops, set(cfg.jump_t) & inside


def integrate_adaptive(
    f: VectorField, tableau: ButcherTableau, y0: Tensor, t_out: Sequence[float],
    cfg: AdaptiveConfig, stats: SolverStats,
) -> list[Tensor]:
    """Solve from ``t_out[0]`` to ``t_out[-1]``; return the states at every ``t_out``.

    ``t_out`` is strictly monotonic (validated by the caller).
    """
    t, t_end = t_out[0], t_out[-1]
    ys = [y0]
    if len(t_out) == 1:
        return ys
    d = 1.0 if t_end > t else -1.0
    exponent = tableau.error_exponent
    stops, jumps = _landing_points(t, t_end, cfg)
    stop_i, out_i = 0, 1
    y = y0
    with torch.no_grad():
        abs_y = y.abs()  # |y| of the current step start, carried over from the last step's end
    k1 = f(t, y)
    if cfg.first_step is not None:
        h = min(cfg.first_step, cfg.max_step)
    else:
        h = initial_step(f, t, y, k1, d, exponent, cfg)
    controller = cfg.controller
    memory = controller.initial_memory()
    last_rejected = False
    last_ratio = 0.0

    while out_i < len(t_out):
        if stats.steps >= cfg.max_num_steps:
            raise MaxStepsExceededError(
                f"max_num_steps={cfg.max_num_steps} reached at t={t!r} while integrating to "
                f"t={t_end!r} (last step size {d * h!r}); the problem may be stiff or the "
                f"tolerances too tight: raise options['max_num_steps'], loosen rtol/atol or use "
                f"a fixed-step method"
            )
        stop = stops[stop_i]
        # Hairer's rule (land if within 1% of a step: no sliver of a step after it), but
        # never a step longer than max_step.
        landing = d * (t + 1.01 * d * h - stop) >= 0 and abs(stop - t) <= cfg.max_step
        h_step = abs(stop - t) if landing else h
        if not h >= cfg.min_step or t + d * h_step == t:  # `not >=` also catches NaN
            _underflow(t, d * h, last_ratio, cfg)
        field = f
        if landing and stop in jumps:  # stages at the jump see its near side
            near = _nudge(stop, t, y.dtype)
            field = lambda s, z, near=near: f(near if d * (s - near) > 0 else s, z)  # noqa: E731
        result = rk_step(field, tableau, t, y, d * h_step, k1, with_error=True)
        with torch.no_grad():
            abs_y1 = result.y1.abs()
            ratio = _error_ratio(result.error, abs_y, abs_y1, cfg)
        last_ratio = ratio
        if not math.isfinite(ratio) or ratio > 1.0:
            stats.rejected += 1
            if cfg.record_steps:
                stats.rejected_ts.append(t)
            factor = controller.factor(ratio, memory, exponent)[0] if math.isfinite(ratio) \
                else controller.dfactor
            h = h_step * min(factor, 1.0)
            last_rejected = True
            continue

        stats.accepted += 1
        factor, memory = controller.factor(ratio, memory, exponent)
        t_new = stop if landing else t + d * h_step
        if cfg.record_steps:
            stats.accepted_ts.append(t_new)
        f1 = result.ks[-1] if tableau.fsal else None
        while out_i < len(t_out) and d * (t_out[out_i] - t_new) <= 0:
            t_i = t_out[out_i]
            if t_i == t_new:
                ys.append(result.y1)
            else:
                if tableau.dense is None and f1 is None:
                    f1 = f(t_new, result.y1)
                theta = (t_i - t) / (t_new - t)
                ys.append(dense_output(tableau, y, result.y1, result.ks, f1, d * h_step, theta))
            out_i += 1

        if last_rejected:
            factor = min(factor, 1.0)
        h_next = h_step * factor
        if landing and h > h_step:  # a cut step says nothing about the natural step size
            h_next = max(h_next, h)
        y, t, abs_y = result.y1, t_new, abs_y1
        h = min(h_next, cfg.max_step)
        last_rejected = False
        if landing:
            stop_i += 1
        if landing and stop in jumps:  # evaluate f from the far side of the discontinuity
            k1 = f(_nudge(t, t + d, y.dtype), y)
        elif out_i < len(t_out):
            k1 = f1 if f1 is not None else f(t, y)
    return ys


def _underflow(t: float, h: float, last_ratio: float, cfg: AdaptiveConfig) -> None:
    cause = (
        "the vector field or a trial state became non-finite (NaN/inf) near this time"
        if not math.isfinite(last_ratio) else
        f"the error ratio stayed above 1 (last {last_ratio:.3g})"
    )
    floor = f" below min_step={cfg.min_step!r}" if cfg.min_step > 0 else ""
    raise StepSizeUnderflowError(
        f"step size underflow at t={t!r}: h={h!r}{floor}; {cause}. Try looser rtol/atol, a "
        f"max_step that keeps steps out of the bad region, checking the vector field for a "
        f"singularity or stiffness near t={t!r}, or a fixed-step method"
    )
