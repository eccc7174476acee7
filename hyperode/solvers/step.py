"""One explicit Runge–Kutta step, the fixed-step method protocol, and the interpolants.

All coefficients are Python floats: the step size ``h`` and the times are plain
floats chosen by the integrators (gradients with respect to the output times are
attached exactly in ``hyperode.odeint``), so every stage combination
``y + h * sum_j a_ij k_j`` is a chain of fused ``add(…, alpha=h*a_ij)`` kernels
with zero coefficients skipped: no coefficient tensors, no host synchronisation.

``FixedStepMethod`` is what the fixed-grid integrator needs from a method: a
``ButcherTableau`` (through ``rk_step``) satisfies it, and so does anything that
wraps a tableau, e.g. ``hyperode.hyper.HyperSolver`` (base step plus a learned
correction). ``fixed_stepper`` resolves a method to its per-step function once per
solve, so a plain tableau runs ``rk_step`` with no extra call per step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import NamedTuple, Protocol, runtime_checkable

import torch
from torch import Tensor

from .tableau import ButcherTableau

# f(t, y) on the solver's flat state, with t a Python float (see problem.VectorField).
Field = Callable[[float, Tensor], Tensor]


def combine(y: Tensor | None, ks: Sequence[Tensor], weights: Sequence[float], h: float) -> Tensor:
    """``y + h * sum_j weights[j] * ks[j]`` (``y = None`` means zero), skipping zeros.

    The result is a fresh tensor except when every weight is zero and ``y`` is given,
    in which case ``y`` itself is returned; callers never modify results in place.
    """
    out = None
    for k, w in zip(ks, weights):
        if w == 0.0:
            continue
        if out is None:
            out = torch.mul(k, w * h) if y is None else torch.add(y, k, alpha=w * h)
        else:
            out.add_(k, alpha=w * h)
    if out is None:
        return torch.zeros_like(ks[0]) if y is None else y
    return out


class StepResult(NamedTuple):
    """Outcome of ``rk_step``: ``y1`` (the new state), ``error`` (``h*sum b_error_i k_i``,
    without a graph, or ``None``) and ``ks`` (the ``s`` stage derivatives; for an FSAL
    method ``ks[-1] = f(t + h, y1)``)."""

    y1: Tensor
    error: Tensor | None
    ks: list[Tensor]


def rk_step(
    f: Field, tableau: ButcherTableau, t: float, y: Tensor, h: float, k1: Tensor,
    with_error: bool = False,
) -> StepResult:
    """Advance ``y`` from ``t`` to ``t + h`` with ``tableau``.

    Args:
        f: the vector field on the flat state.
        t, h: start time and (signed) step size, Python floats.
        y: state at ``t``; any shape.
        k1: ``f(t, y)``, computed by the caller so it can be reused after a rejected
            step or carried over from the previous step (FSAL).
        with_error: also return the embedded error estimate (tableau must have one).

    Costs ``s - 1`` evaluations of ``f``.
    """
    a, c = tableau.a, tableau.c
    ks = [k1]
    yi = y
    for i in range(1, len(c)):
        yi = combine(y, ks, a[i], h)
        ks.append(f(t + c[i] * h, yi))
    y1 = yi if tableau.fsal else combine(y, ks, tableau.b, h)
    error = None
    if with_error:
        with torch.no_grad():
            error = combine(None, ks, tableau.b_error, h)
    return StepResult(y1, error, ks)


@runtime_checkable
class FixedStepMethod(Protocol):
    """A method the fixed-grid integrator can run (``hyperode.solve(..., method=m)``).

    Attributes:
        name: how the method is named in messages and descriptions.
        order: order ``p`` of the step.
        fsal: whether ``step(...).ks[-1]`` is ``f(t + h, y1)``, reused as the next
            step's first stage (read once per solve).
        adaptive: ``False`` for anything but a ``ButcherTableau`` with an error
            estimate; the adaptive integrator runs tableaux only.
        corrections_per_step: evaluations of a learned correction per step (a
            hypersolver's ``g``: 1; a tableau: 0), added to ``SolverStats.nfe_correction``.

    ``step(f, t, y, h, k1) -> StepResult`` advances the flat state ``y`` from ``t`` by
    ``h`` given ``k1 = f(t, y)`` (evaluated by the integrator, never again by the
    method); ``f`` is the integrator's ``VectorField`` (``f.layout`` maps the flat
    state back to the user's structure).
    """

    name: str
    order: int
    fsal: bool
    adaptive: bool
    corrections_per_step: int

    def step(self, f: Field, t: float, y: Tensor, h: float, k1: Tensor) -> StepResult: ...


def fixed_stepper(method: ButcherTableau | FixedStepMethod,
                  f: Field) -> Callable[[float, Tensor, float, Tensor], StepResult]:
    """``(t, y, h, k1) -> StepResult`` for ``method`` on ``f``, resolved once per solve.

    A tableau gets ``rk_step`` bound by a C-level ``functools.partial`` (no Python
    frame added per step); any other method its own ``step``.
    """
    if isinstance(method, ButcherTableau):
        return partial(rk_step, f, method)
    return partial(method.step, f)


def dense_output(
    tableau: ButcherTableau, y0: Tensor, y1: Tensor, ks: Sequence[Tensor], f1: Tensor | None,
    h: float, theta: float | Tensor,
) -> Tensor:
    """State at ``t + theta*h`` inside an accepted step, ``theta`` in [0, 1].

    Uses the tableau's continuous extension when it has one (no extra ``f`` call);
    otherwise the cubic Hermite interpolant through ``(y0, ks[0], y1, f1)``, where
    ``f1 = f(t + h, y1)`` is the next step's first stage.
    """
    theta = float(theta)
    if tableau.dense is not None:
        return combine(y0, ks, tableau.dense_weights(theta), h)
    if f1 is None:
        raise ValueError("Hermite interpolation needs f1 = f(t + h, y1)")
    t2, t3 = theta * theta, theta * theta * theta
    out = torch.mul(y0, 2 * t3 - 3 * t2 + 1)
    out.add_(y1, alpha=-2 * t3 + 3 * t2)
    out.add_(ks[0], alpha=h * (t3 - 2 * t2 + theta))
    out.add_(f1, alpha=h * (t3 - t2))
    return out
