"""The one adaptive-step loop, for any step method with an error estimate.

Per attempted step: one ``stepper.step`` (for a tableau ``s - 1`` new evaluations,
the first stage being reused or carried over), the error ratio
``norm(err / (atol + rtol * max(|y0|, |y1|)))`` with one host synchronisation to
read it, and the controller's accept/reject decision. Output at requested times
comes from the method's dense output inside accepted steps (no extra steps). Steps
are cut to land exactly on the final time and on ``step_t``/``jump_t``; after a
``jump_t`` the vector field is re-evaluated from the far side of the discontinuity
instead of reusing the FSAL stage, and the stages of the step that lands on it see
its near side.

``min_step``/``max_step`` follow torchdiffeq (``rk_common.py``): proposed steps are
clamped to ``[min_step, max_step]`` and a step no longer than ``min_step`` is
accepted whatever its error. With ``min_step = 0`` a step size that stops making
progress raises ``StepSizeUnderflowError``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import Tensor

from ..errors import MaxStepsExceededError, NonFiniteStateError, StepSizeUnderflowError
from . import stiffness
from .controllers import IController, PIController
from .norms import mixed_norm, rms_norm
from .problem import Callbacks, NudgedField, VectorField, nudge
from .stats import SolverStats
from .step import StepMethod, Stepper, StepResult, bind, no_accept, own
from .tableau import ButcherTableau

Norm = Callable[[Tensor], Tensor]
# Called after every accepted step with (t, y, t1, y1, stepper, result); True stops.
Watch = Callable[[float, Tensor, float, Tensor, Stepper, StepResult], bool]


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


def two_estimate_ratio(n1: float, n2: float) -> float:
    """DOP853's combination of its 5th- and 3rd-order estimates (Hairer's dop853.f):
    ``n1**2 / sqrt(n1**2 + 0.01 * n2**2)``, from their scaled norms."""
    denominator = n1 * n1 + 0.01 * n2 * n2
    if denominator == 0.0:
        return 0.0
    if denominator == math.inf:  # an overflowing estimate: reject (not inf/inf = NaN)
        return math.inf
    return n1 * n1 / math.sqrt(denominator)


def _error_ratio(result: StepResult, abs_y0: Tensor, abs_y1: Tensor,
                 cfg: AdaptiveConfig, rms: bool = False) -> float:
    """``norm(error / (atol + rtol * max(|y0|, |y1|)))`` as a float (the step's one host
    sync). Call without a graph; ``result.error`` is consumed (divided in place).

    ``rms``: the norm is the default RMS over a real state (``fast_rms``), computed as
    ``sqrt(dot(w, w) / n)`` on the scaled error ``w``: one reduction kernel instead of
    ``vector_norm``'s and a division, equal up to rounding of the sum."""
    scale = torch.maximum(abs_y0, abs_y1)
    if isinstance(cfg.rtol, Tensor) or isinstance(cfg.atol, Tensor):
        scale = cfg.atol + cfg.rtol * scale
    else:
        scale.mul_(cfg.rtol).add_(cfg.atol)
    error, error2 = cast(Tensor, result.error), result.error2  # an adaptive step's
    if rms and error2 is None:
        w = error.div_(scale).reshape(-1)
        return math.sqrt(float(torch.dot(w, w)) / max(w.numel(), 1))
    if cfg.atol_may_vanish:
        n1 = float(cfg.norm(_divide(error, scale, cfg)))
        if error2 is None:
            return n1
        return two_estimate_ratio(n1, float(cfg.norm(_divide(error2, scale, cfg))))
    if error2 is None:
        return float(cfg.norm(error.div_(scale)))
    return two_estimate_ratio(float(cfg.norm(error.div_(scale))),
                              float(cfg.norm(error2.div_(scale))))


def fast_rms(cfg: AdaptiveConfig, y: Tensor) -> bool:
    """Whether ``_error_ratio`` may compute the norm itself: the default norm (RMS of a
    tensor state) on a real floating state whose ``atol`` cannot vanish."""
    return (cfg.norm in (mixed_norm, rms_norm) and y.is_floating_point()
            and not cfg.atol_may_vanish)


def _divide(x: Tensor, scale: Tensor, cfg: AdaptiveConfig) -> Tensor:
    """``x / scale``; where ``atol`` may be 0 the scale can be 0 too, and there an exact
    zero counts as zero error (not 0/0 = NaN) while anything else is infinitely large."""
    out = x / scale
    if cfg.atol_may_vanish:
        out = torch.where(x == 0, 0.0, out)
    return out


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
        d0 = norm_value(cfg.norm, _divide(y0, scale, cfg), t0)
        d1 = norm_value(cfg.norm, _divide(f0, scale, cfg), t0)
        if not math.isfinite(d1) and not bool(torch.isfinite(f0).all()):  # failure path only
            raise NonFiniteStateError(
                f"func(t0, y0) is not finite (NaN/inf) at t0={t0!r}: the vector field returns "
                f"NaN/inf at the initial state; check func at t0 and y0")
        h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
        if not h0 > 0.0:  # a finite slope whose scaled norm overflowed
            h0 = 1e-6
        h0 = min(h0, cfg.max_step)
        y1 = torch.add(y0, f0, alpha=direction * h0)
        f1 = f(t0 + direction * h0, y1)
        d2 = norm_value(cfg.norm, _divide(f1 - f0, scale, cfg), t0) / h0
    # f non-finite just after t0: ignore d2; steps then shrink by rejection and an
    # underflow names the non-finite field there.
    dmax = max(d1, d2) if math.isfinite(d2) else d1
    h1 = max(1e-6, h0 * 1e-3) if dmax <= 1e-15 else (0.01 / dmax) ** exponent
    return min(100 * h0, h1, cfg.max_step)


def norm_value(norm: Norm, x: Tensor, t: float) -> float:
    """``norm(x)`` as a float, checked: ``ValueError`` naming ``options['norm']`` unless it
    returns one real number (a 0-dim tensor or a Python number), ``>= 0``, and not NaN for
    a finite ``x``. Used where the solve reads a norm outside the step loop (the starting
    step, a first probe); inside the loop only the cheap ``ratio >= 0`` test runs."""
    value = norm(x)
    if isinstance(value, Tensor) and value.numel() == 1 and not value.is_complex():
        out = float(value)
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        out = float(value)
    else:
        got = (f"a {value.dtype} tensor of shape {tuple(value.shape)}"
               if isinstance(value, Tensor) else f"{type(value).__name__} {value!r}")
        raise ValueError(f"options['norm'] must return one real number (a 0-dim tensor or a "
                         f"float) >= 0, got {got} at t={t!r}")
    if not out >= 0.0:
        return odd_norm(out, (x,), t)
    return out


def odd_norm(value: float, scaled: Sequence[Tensor | None], t: float) -> float:
    """A norm value that is negative or NaN (rare: only on the failure path, so the host
    synchronisation here costs a normal solve nothing). A negative value, or NaN from a
    finite scaled error, means the norm itself is broken: ``ValueError`` naming
    ``options['norm']``. NaN from a non-finite error is the vector field's doing and is
    returned as ``inf`` (the step is rejected)."""
    if value < 0.0:
        raise ValueError(f"options['norm'] returned a negative value ({value!r}) at t={t!r}; "
                         f"an error norm must be >= 0")
    if all(x is None or bool(torch.isfinite(x).all()) for x in scaled):
        raise ValueError(f"options['norm'] returned {value!r} for a finite (scaled) error at "
                         f"t={t!r}; an error norm must be a finite number >= 0 for finite input")
    return math.inf


def _landing_points(t0: float, t_end: float | None, d: float,
                    cfg: AdaptiveConfig) -> tuple[list[float], set[float]]:
    """Times that steps must land on, in the direction of integration, and the jumps."""
    inside = {x for x in (*cfg.step_t, *cfg.jump_t)
              if d * (x - t0) > 0 and (t_end is None or d * (t_end - x) > 0)}
    stops = sorted(inside, key=lambda x: d * x)
    if t_end is not None:
        stops.append(t_end)
    return stops, set(cfg.jump_t) & inside


def integrate_adaptive(
    f: VectorField, method: ButcherTableau | StepMethod, y0: Tensor, t_out: Sequence[float],
    cfg: AdaptiveConfig, stats: SolverStats, *, callbacks: Callbacks | None = None,
    watch: Watch | None = None, direction: float | None = None,
) -> list[Tensor]:
    """Solve from ``t_out[0]`` to ``t_out[-1]``; return the states at every ``t_out``.

    ``t_out`` is strictly monotonic (validated by the caller). With ``watch`` (events)
    and a single ``t_out``, the solve runs in ``direction`` with no end until ``watch``
    returns True (``max_num_steps`` bounds it); ``ys`` then holds only ``y0``.
    """
    t = t_out[0]
    t_end = t_out[-1] if len(t_out) > 1 else None
    ys = [y0]
    if t_end is None and watch is None:
        return ys
    # an event solve (no t_end) passes its direction; adaptive methods have an
    # error_exponent (StepMethod)
    d = cast(float, (1.0 if t_end > t else -1.0) if t_end is not None else direction)
    exponent: float = cast(Any, method).error_exponent
    stops, jumps = _landing_points(t, t_end, d, cfg)
    field = NudgedField(f, start=False, end=True) if jumps else f
    stepper = bind(method, field, stats)
    step = stepper.step
    accept = None if stepper.accept is no_accept else stepper.accept
    dense_needs_f1 = getattr(stepper, "dense_needs_f1", True)
    on_step, on_accept, on_reject = (
        (callbacks.step, callbacks.accept, callbacks.reject) if callbacks is not None
        else (None, None, None))
    stop_i, out_i = 0, 1
    y = y0
    with torch.no_grad():
        abs_y = y.abs()  # |y| of the current step start, carried over from the last step's end
    k1 = f(t, y)
    if cfg.first_step is not None:
        h = min(cfg.first_step, cfg.max_step)
        with torch.no_grad():  # one check of the norm's output per solve (initial_step's
            norm_value(cfg.norm, _divide(y, cfg.atol + cfg.rtol * abs_y, cfg), t)  # otherwise)
    else:
        h = initial_step(f, t, y, k1, d, exponent, cfg)
    h = max(h, cfg.min_step)
    controller = cfg.controller
    memory = controller.initial_memory()
    last_rejected = False
    last_ratio = None
    rms = fast_rms(cfg, y)

    while True:
        if stats.steps >= cfg.max_num_steps:
            if t_end is None and hasattr(watch, "never_fired"):
                raise MaxStepsExceededError(
                    cast(Any, watch).never_fired(cfg.max_num_steps, t))
            target = "the event" if t_end is None else f"t={t_end!r}"
            raise MaxStepsExceededError(
                f"max_num_steps={cfg.max_num_steps} reached at t={t!r} while integrating to "
                f"{target} (last step size {d * h!r}); the problem may be stiff or the "
                f"tolerances too tight: raise options['max_num_steps'], loosen rtol/atol or use "
                f"a fixed-step method."
                + stiffness.diagnose(f, method, t, y, d * h, t_out[0], t_end, stats, stepper)
            )
        stop = stops[stop_i] if stop_i < len(stops) else None
        # Hairer's rule (land if within 1% of a step: no sliver of a step after it), but
        # never a step longer than max_step.
        landing = stop is not None and d * (t + 1.01 * d * h - stop) >= 0 \
            and abs(stop - t) <= cfg.max_step
        h_step = abs(cast(float, stop) - t) if landing else h  # landing: stop is set
        if not h_step > 0 or t + d * h_step == t:  # `not >` also catches NaN
            _underflow(t, d * h, last_ratio, cfg, stiffness.diagnose(
                f, method, t, y, d * h, t_out[0], t_end, stats, stepper))
        if jumps:
            nudged = cast(NudgedField, field)  # jumps: the field is nudged
            if landing and stop in jumps:  # stages at the jump see its near side
                nudged.interval(t, cast(float, stop))
            else:
                nudged.clear()
        if on_step is not None:
            on_step(t, y, d * h_step)
        result = step(t, y, d * h_step, k1, True)
        if torch.is_grad_enabled():
            with torch.no_grad():
                abs_y1 = result.y1.abs()
                ratio = _error_ratio(result, abs_y, abs_y1, cfg, rms)
        else:  # no context manager to enter per step
            abs_y1 = result.y1.abs()
            ratio = _error_ratio(result, abs_y, abs_y1, cfg, rms)
        if not ratio >= 0.0:  # NaN or negative (one float comparison per step)
            ratio = odd_norm(ratio, (result.error, result.error2), t)
        last_ratio = ratio
        # torchdiffeq: a step at min_step is accepted (so is a landing stretched from it)
        forced = min(h, h_step) <= cfg.min_step
        if not forced and (not math.isfinite(ratio) or ratio > 1.0):
            stats.rejected += 1
            if cfg.record_steps:  # the lists are made when steps are recorded
                cast("list[float]", stats.rejected_ts).append(t)
            if on_reject is not None:
                on_reject(t, y, d * h_step)
            factor = controller.factor(ratio, memory, exponent)[0] if math.isfinite(ratio) \
                else controller.dfactor
            h = max(h_step * min(factor, 1.0), cfg.min_step)
            last_rejected = True
            continue

        stats.accepted += 1
        if on_accept is not None:
            on_accept(t, y, d * h_step)
        if accept is not None:
            accept(t, y, d * h_step, result)
        factor, memory = controller.factor(ratio if math.isfinite(ratio) else 0.0, memory,
                                           exponent)
        t_new = cast(float, stop) if landing else t + d * h_step
        if cfg.record_steps:
            cast("list[float]", stats.accepted_ts).append(t_new)
        y1 = result.y1
        f1 = result.f1
        done = False
        if watch is not None:
            done = watch(t, y, t_new, y1, stepper, result)
        else:
            while out_i < len(t_out) and d * (t_out[out_i] - t_new) <= 0:
                t_i = t_out[out_i]
                if t_i == t_new:
                    ys.append(own(y1))
                else:
                    if f1 is None and dense_needs_f1:
                        f1 = f(t_new, y1)
                    theta = (t_i - t) / (t_new - t)
                    ys.append(stepper.dense(t, y, d * h_step, result, theta, f1))
                out_i += 1
            done = out_i >= len(t_out)
        if done:
            return ys

        if last_rejected:
            factor = min(factor, 1.0)
        h_next = h_step * factor
        if landing and h > h_step:  # a cut step says nothing about the natural step size
            h_next = max(h_next, h)
        y, t, abs_y = y1, t_new, abs_y1
        h = min(max(h_next, cfg.min_step), cfg.max_step)
        last_rejected = False
        if landing:
            stop_i += 1
        if landing and stop in jumps:  # evaluate f from the far side of the discontinuity
            k1 = f(nudge(t, t + d, f.layout.time_dtype), y)
        else:
            k1 = f1 if f1 is not None else f(t, y)


def _underflow(t: float, h: float, last_ratio: float | None, cfg: AdaptiveConfig,
               hint: str = "") -> None:
    if last_ratio is None:
        cause = ("no step could be tried: the starting step size is not a positive number "
                 "(check the norm, rtol/atol and the state's dtype)")
    elif not math.isfinite(last_ratio):
        cause = "the vector field or a trial state became non-finite (NaN/inf) near this time"
    else:
        cause = f"the error ratio stayed above 1 (last {last_ratio:.3g})"
    raise StepSizeUnderflowError(
        f"step size underflow at t={t!r}: h={h!r}; {cause}. Try looser rtol/atol, "
        f"options['min_step'] (steps that short are then accepted, as in torchdiffeq), a "
        f"max_step that keeps steps out of the bad region, checking the vector field for a "
        f"singularity or stiffness near t={t!r}, or a fixed-step method.{hint}"
    )
