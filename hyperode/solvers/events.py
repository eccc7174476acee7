"""Terminal events: integrate until ``event_fn(t, y)`` crosses zero.

``EventWatch`` is the ``watch`` hook both integrators call after every accepted step
(``fixed.integrate_fixed``, ``adaptive.integrate_adaptive``). It evaluates the event
function at the step's end and, on a sign change, finds the crossing inside the step
on the method's dense output (the Illinois variant of regula falsi, bracketed, to
the time resolution of the state's dtype), so locating an event costs no extra
steps and, for methods with a continuous extension, no extra evaluations of ``f``.

Two modes:

- combined (torchdiffeq's ``event_handling.py``): every element of ``event_fn``'s
  output is made positive at ``t0`` by its initial sign, and the event is the first
  time any element reaches zero (the minimum of the signed values); a batch stops at
  the first event of any sample.
- per sample (``per_sample=True``): ``event_fn`` returns one value per sample
  (``[B]`` for a state whose first dimension is the batch); each sample's event time
  is found separately and the solve runs until every sample has had its event. The
  result holds each sample's state at its own event time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import torch
from torch import Tensor

from .problem import StateLayout
from .step import Stepper, StepResult, hermite, linear

_MAX_ITERATIONS = 200


class EventWatch:
    """Watch accepted steps for ``event_fn`` crossing zero (module docstring).

    Args:
        event_fn: ``event_fn(t, y) -> Tensor`` with ``t`` a 0-dim tensor and ``y`` in the
            user's structure.
        layout: the state layout (the integrator works on the flat state).
        t0, y0: start of the solve (flat ``y0``).
        per_sample: one event per sample (``event_fn`` returns ``[B]``).
        interp: ``"linear"`` uses linear interpolation inside a step (torchdiffeq's
            fixed-grid default); otherwise the method's dense output.
        f: the vector field (for a Hermite end slope when a step lacks it).

    After the solve: ``event_t`` (float, or a list of floats per sample) and
    ``y_event`` (the flat state at the event, with the solve's graph; per sample a
    ``[B, ...]`` tensor whose row ``b`` is sample ``b`` at its own event time).
    """

    def __init__(self, event_fn: Callable, layout: StateLayout, t0: float, y0: Tensor, *,
                 per_sample: bool, interp: str | None, f: Callable):
        self.event_fn = event_fn
        self.layout = layout
        self.t0 = t0
        self.per_sample = per_sample
        self.interp = interp
        self.f = f
        with torch.no_grad():
            g0 = self._values(t0, y0)
        zero = g0 == 0
        if bool((zero | ~torch.isfinite(g0)).any()):  # one synchronisation per solve
            bad = ~torch.isfinite(g0)
            if bool(bad.any()):
                index = tuple(int(i) for i in bad.nonzero()[0])
                raise ValueError(
                    f"event_fn is not finite at t0={t0!r} (element {index} of its output is "
                    f"{g0[index].item()}): its sign, which the event is the change of, is "
                    f"undefined there")
            index = tuple(int(i) for i in zero.nonzero()[0])
            raise ValueError(
                f"event_fn is already 0 at t0={t0!r} (element {index} of its output): the "
                f"event would fire at once; start from a state where it is nonzero (e.g. "
                f"move the state off the event surface by a small amount, as torchdiffeq's "
                f"bouncing-ball example does)")
        self.signs = torch.sign(g0)
        self.event_t: float | list[float] | None = None
        self.y_event: Tensor | None = None
        if per_sample:
            batch = layout.shapes[0][0] if not layout.is_tuple else None
            if layout.is_tuple or g0.shape != (batch,):
                raise ValueError(
                    f"with per-sample events, the state must be one tensor [B, ...] and "
                    f"event_fn(t, y) must return shape [B] = ({batch},); got "
                    f"{tuple(g0.shape)}")
            n = cast(int, batch)  # a tensor state here (a tuple one raised above)
            self._times: list[float | None] = [None] * n
            self._rows: list[Tensor | None] = [None] * n

    def _values(self, t: float, y: Tensor) -> Tensor:
        layout = self.layout
        t_tensor = torch.full((), t, dtype=layout.time_dtype, device=layout.device)
        out = self.event_fn(t_tensor, layout.unflatten(y))
        if not isinstance(out, Tensor):
            raise ValueError(f"event_fn must return a tensor, got {type(out).__name__}")
        if out.is_complex():
            out = out.real
        if not out.is_floating_point():
            raise ValueError(f"event_fn must return a real floating tensor, got {out.dtype}")
        if out.numel() == 0:
            raise ValueError("event_fn returned an empty tensor; it must return at least "
                             "one value")
        out = out.detach()
        if self.per_sample:
            return out.reshape(out.shape) if out.ndim == 1 else out
        return out.reshape(-1)

    def _combined(self, t: float, y: Tensor) -> Tensor:
        """Signed values (positive before the event); per sample a ``[B]`` tensor,
        else a 0-dim tensor (the minimum over elements)."""
        values = self._values(t, y)
        if values.shape != self.signs.shape:
            raise ValueError(f"event_fn's output changed shape from {tuple(self.signs.shape)} "
                             f"to {tuple(values.shape)} at t={t!r}")
        signed = values * self.signs
        return signed if self.per_sample else signed.min()

    def __call__(self, t: float, y: Tensor, t1: float, y1: Tensor, stepper: Stepper,
                 result: StepResult) -> bool:
        with torch.no_grad():
            g1 = self._combined(t1, y1)
        h = t1 - t
        f1 = [result.f1]

        def state(theta: float) -> Tensor:
            if theta == 1.0:
                return y1
            if self.interp == "linear":
                return linear(y, y1, theta)
            if self.interp == "cubic":
                if f1[0] is None:
                    f1[0] = self.f(t1, y1)
                return hermite(y, y1, result.ks[0], f1[0], h, theta)
            if f1[0] is None and getattr(stepper, "dense_needs_f1", True):
                f1[0] = self.f(t1, y1)
            return stepper.dense(t, y, h, result, theta, f1[0])

        if not self.per_sample:
            if float(g1) > 0:
                return False
            theta = self._root(lambda th: float(self._combined(t + th * h, state(th))),
                               float(g1))
            self.event_t = t + theta * h if theta < 1.0 else t1
            self.y_event = state(theta)
            return True

        fired = (g1 <= 0).tolist()
        for b, crossed in enumerate(fired):
            if not crossed or self._times[b] is not None:
                continue

            def g_b(th: float, b: int = b) -> float:
                return float(self._combined(t + th * h, state(th))[b])

            theta = self._root(g_b, float(g1[b]))
            self._times[b] = t + theta * h if theta < 1.0 else t1
            self._rows[b] = state(theta)[b]
        if any(x is None for x in self._times):
            return False
        self.event_t = cast("list[float]", list(self._times))  # none is None (above)
        self.y_event = torch.stack(cast("list[Tensor]", self._rows))
        return True

    def never_fired(self, max_num_steps: int, t: float) -> str:
        """The message of the ``MaxStepsExceededError`` raised when the step budget runs
        out before the event (per sample: before every sample's event)."""
        what = "the event never fired"
        if self.per_sample:
            waiting = [b for b, x in enumerate(self._times) if x is None]
            shown = ", ".join(map(str, waiting[:10])) + (", ..." if len(waiting) > 10 else "")
            what = (f"the event never fired for {len(waiting)} of {len(self._times)} samples "
                    f"(samples {shown})")
        return (f"{what}: event_fn(t, y) did not cross zero between t0={self.t0!r} and "
                f"t={t!r} within max_num_steps={max_num_steps} steps. The trajectory may "
                f"never reach the event (check event_fn's sign along it and the direction "
                f"of time), or it lies further on: raise options['max_num_steps'] (or, with a "
                f"fixed-step method, use a larger step_size)")

    def _root(self, g: Callable[[float], float], g_hi: float) -> float:
        """The earliest ``theta`` in (0, 1] where ``g`` has gone from > 0 (at 0) to <= 0
        (``g_hi`` at 1): Illinois regula falsi keeping the bracket, to the dtype's
        resolution. ``g`` may jump to exactly 0 and stay there (torchdiffeq's examples
        stop at a final time that way), so a zero is a crossing, not an answer: the
        bracket keeps shrinking towards where it began."""
        eps = torch.finfo(self.layout.time_dtype).eps
        lo, hi = 0.0, 1.0
        g_lo = g(0.0)
        side = 0
        for _ in range(_MAX_ITERATIONS):
            if hi - lo <= 4 * eps:
                break
            denom = g_lo - g_hi
            x = hi - g_hi * (hi - lo) / denom if denom != 0 else 0.5 * (lo + hi)
            if not lo < x < hi or g_hi == 0.0:
                x = 0.5 * (lo + hi)
            gx = g(x)
            if gx > 0:
                lo, g_lo = x, gx
                if side == 1:
                    g_hi *= 0.5
                side = 1
            else:
                hi, g_hi = x, gx
                if side == -1:
                    g_lo *= 0.5
                side = -1
        return hi
