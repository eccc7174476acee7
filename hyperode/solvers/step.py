"""The step-method protocol every kind of step satisfies, and the explicit RK stage loop.

Both integrators (``fixed.integrate_fixed``, ``adaptive.AdaptiveIntegrator``) run any
``StepMethod``: an explicit ``ButcherTableau`` (run by ``rk_step`` below), a multistep
method with its history (``methods.adams``), an implicit method with its Newton state,
a hypersolver wrapping its base (``hyperode.hyper.HyperSolver``). Adding a method never
adds a loop.

A method is bound to one solve with ``bind(method, f)``, which returns a ``Stepper``:
the per-solve object that holds the method's state (history, Jacobian and LU caches)
and exposes

- ``step(t, y, h, k1, with_error) -> StepResult``: advance the flat state ``y`` from
  ``t`` by the signed step ``h``, given ``k1 = f(t, y)`` (evaluated by the integrator:
  it is reused after a rejected step and carried over from an FSAL stage);
- ``accept(t, y, h, result)``: the integrator accepted that step (a multistep method
  pushes its history here; after a rejection ``step`` is simply called again);
- ``dense(t, y, h, result, theta, f1) -> y(t + theta*h)``: dense output inside an
  accepted step, ``theta`` in [0, 1]; ``f1`` is ``f(t + h, y1)`` when the integrator
  has it (``None`` otherwise: a stepper that needs it evaluates it).

All coefficients are Python floats: the step size ``h`` and the times are plain floats
chosen by the integrators (gradients with respect to the output times are attached
exactly in ``hyperode.odeint``), so every stage combination ``y + h * sum_j a_ij k_j``
is a chain of fused ``add(..., alpha=h*a_ij)`` kernels with zero coefficients skipped:
no coefficient tensors, no host synchronisation.

Without a graph (``torch.no_grad()``/``inference_mode``) a tableau's stage sums are
accumulated instead (``StageSums``): every stage derivative ``k_j``, once evaluated, is
added to all the sums that use it (the later stages' inputs, ``y1`` and the error
estimates) by one broadcast ``addcmul_`` over a stacked buffer, so a step costs one
kernel per stage instead of one per nonzero coefficient. The arithmetic is the same sums
in the same order up to rounding of the coefficients (a few ulps, not bit for bit).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol, cast, runtime_checkable

import torch
from torch import Tensor

from .stats import SolverStats
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
    """Outcome of one step.

    Attributes:
        y1: the new state (flat, with a graph when one is recorded).
        error: the embedded error estimate (``h*sum_i b_error_i k_i`` for a tableau),
            computed without a graph, or ``None``.
        ks: the method's dense-output data; for a tableau the ``s`` stage
            derivatives, ``ks[0] = k1``.
        f1: ``f(t + h, y1)`` when the step already evaluated it (an FSAL stage), so the
            integrator reuses it as the next ``k1``; else ``None``.
        error2: a second error estimate (DOP853's third-order one), combined with
            ``error`` by ``adaptive.two_estimate_ratio``; ``None`` for one estimate.
    """

    y1: Tensor
    error: Tensor | None
    ks: list[Tensor]
    f1: Tensor | None = None
    error2: Tensor | None = None


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
        with_error: also return the embedded error estimate(s) (tableau must have one).

    Costs ``s - 1`` evaluations of ``f``.
    """
    a, c = tableau.a, tableau.c
    ks = [k1]
    yi = y
    for i in range(1, len(c)):
        yi = combine(y, ks, a[i], h)
        ks.append(f(t + c[i] * h, yi))
    fsal = tableau.fsal
    y1 = yi if fsal else combine(y, ks, tableau.b, h)
    error = error2 = None
    if with_error:
        with torch.no_grad():
            error = combine(None, ks, cast("tuple[float, ...]", tableau.b_error), h)
            if tableau.b_error2 is not None:
                error2 = combine(None, ks, tableau.b_error2, h)
    return StepResult(y1, error, ks, ks[-1] if fsal else None, error2)


@runtime_checkable
class Stepper(Protocol):
    """A step method bound to one solve: its vector field and its per-solve state."""

    def step(self, t: float, y: Tensor, h: float, k1: Tensor,
             with_error: bool = False) -> StepResult: ...

    def accept(self, t: float, y: Tensor, h: float, result: StepResult) -> None: ...

    def dense(self, t: float, y: Tensor, h: float, result: StepResult, theta: float,
              f1: Tensor | None) -> Tensor: ...


@runtime_checkable
class StepMethod(Protocol):
    """What the integrators run (``hyperode.solve(..., method=m)``).

    Attributes:
        name: how the method is named in messages and descriptions.
        order: order ``p`` of the step.
        adaptive: whether ``step(..., with_error=True)`` returns an error estimate, so
            that the adaptive integrator can control the step size.
        error_exponent: ``1 / (q + 1)`` with ``q`` the order the error estimate
            measures (read only when ``adaptive``).
        corrections_per_step: evaluations of a learned correction per step (a
            hypersolver's ``g``: 1; otherwise 0), added to ``SolverStats.nfe_correction``.
        implicit: whether the step solves a nonlinear system (read for statistics
            and stiffness hints); optional, ``False`` when absent.

    ``stepper(f, stats) -> Stepper`` binds the method to one solve's vector field ``f``
    (the integrator's ``VectorField``; ``f.layout`` maps the flat state back to the
    user's structure) and its ``SolverStats`` (where an implicit method counts its
    Jacobians, LU factorisations and Newton iterations). A ``ButcherTableau`` needs no
    ``stepper`` of its own: ``bind`` runs it with the stage loop.

    A method with options of its own (e.g. ``max_order`` of the Adams methods) also
    has ``option_names`` (a frozenset) and ``configure(options, rtol, atol) -> method``,
    which ``hyperode.solvers.config.resolve`` calls with those options (validated
    there: a bad value raises ``ValueError`` naming ``options['<name>']``).
    """

    name: str
    order: int
    adaptive: bool
    corrections_per_step: int

    def stepper(self, f: Field, stats: SolverStats) -> Stepper: ...


# Fixed-step methods written before the step-method protocol are step methods too.
FixedStepMethod = StepMethod


# Stage sums are accumulated (``StageSums``) only for states up to this many elements:
# there a step is bound by the number of kernels launched, and one broadcast addcmul_
# per stage beats the chain of adds (dopri5 at 512 elements: 49 vs 89 us of solver work
# per step); above it the step is bound by memory traffic, where the broadcast kernel
# over every row is no faster than the chain (dopri5) or slower (rk4: 62 vs 43 us at
# 8192 elements), so the chain of fused adds of ``rk_step`` runs.
_FUSED_MAX_NUMEL = 4096


class StageSums:
    """The stage sums of ``tableau`` accumulated in one stacked buffer (no graph).

    Rows of the buffer ``[rows, *y.shape]``: the inputs of stages ``2..s``, then ``y1``
    (absent for an FSAL tableau, whose last stage input *is* ``y1``), then the error
    estimates. Rows start as ``y`` (state rows) or 0 (error rows) by one broadcast
    product (without error rows: as ``y + h a_i1 k1``, one broadcast kernel); stage
    ``j``'s derivative is added to the rows that use it by one broadcast
    ``addcmul_(column_j, k_j, value=h)``. A finished ``y1`` is never written again (an
    FSAL tableau's last stage only updates the error rows). The buffer is fresh each
    step: its rows are handed to ``f`` and returned as ``y1``.

    ``worthwhile`` says whether this takes fewer kernels than the chain of fused adds of
    ``rk_step`` (Euler's single add, for example, does not gain) on a state small enough
    for the kernel count to matter (``_FUSED_MAX_NUMEL``).
    """

    __slots__ = ("cols", "fsal", "mask", "n_err", "n_rows", "n_state", "tableau",
                 "worthwhile")

    def __init__(self, tableau: ButcherTableau, with_error: bool, y: Tensor):
        s = tableau.stages
        weights = [list(tableau.a[i]) + [0.0] * (s - i) for i in range(1, s)]
        if not tableau.fsal:
            weights.append(list(tableau.b))
        n_state = len(weights)
        if with_error:
            weights.append(list(cast("tuple[float, ...]", tableau.b_error)))
            if tableau.b_error2 is not None:
                weights.append(list(tableau.b_error2))
        self.tableau = tableau
        self.fsal = tableau.fsal
        self.n_rows = len(weights)
        self.n_state = n_state
        self.n_err = self.n_rows - n_state
        ones = (1,) * y.dim()
        kw: dict[str, Any] = dict(dtype=y.dtype, device=y.device)
        self.mask = torch.tensor([1.0] * n_state + [0.0] * self.n_err, **kw).view(-1, *ones)
        numel = y.numel()
        # Column j: (first row updated, its weights from there on), or None if all zero.
        self.cols: list[tuple[int, Tensor] | None] = []
        for j in range(s):
            column = [w[j] for w in weights]
            nonzero = [r for r, w in enumerate(column) if w != 0.0]
            if not nonzero:
                self.cols.append(None)
                continue
            # Every row is updated (rows already handed to f get + 0 * k_j, which leaves
            # finite values as they are: a slice would cost more than it saves), except
            # that an FSAL tableau's last stage must not touch the finished y1.
            first = nonzero[0] if self.fsal and j == s - 1 else 0
            self.cols.append((first, torch.tensor(column[first:], **kw).view(-1, *ones)))
        chain_kernels = sum(1 for w in weights for x in w if x != 0.0)
        col0 = self.cols[0]
        fused_kernels = sum(c is not None for c in self.cols) + (
            1 if self.n_err or col0 is None or col0[0] else 0)
        self.worthwhile = fused_kernels < chain_kernels and numel <= _FUSED_MAX_NUMEL

    def step(self, f: Field, t: float, y: Tensor, h: float, k1: Tensor) -> StepResult:
        """One step without a graph (``rk_step``'s contract: ``s - 1`` evaluations)."""
        c, cols = self.tableau.c, self.cols
        col = cols[0]
        if self.n_err or col is None or col[0]:
            acc = torch.mul(self.mask, y)
            start = 0
        else:  # every row starts as y + h a_i1 k1: one broadcast kernel
            acc = torch.addcmul(y, col[1], k1, value=h)
            start = 1
        rows = acc.unbind(0)
        ks = [k1]
        k = k1
        for i in range(start, len(c)):
            if i:
                k = f(t + c[i] * h, rows[i - 1])
                if k._base is acc:  # f returned (a view of) its input: no in-place overlap
                    k = k.clone()
                ks.append(k)
            col = cols[i]
            if col is not None:
                first, weights = col
                (acc[first:] if first else acc).addcmul_(weights, k, value=h)
        n_state, n_err = self.n_state, self.n_err
        error = rows[n_state] if n_err else None
        error2 = rows[n_state + 1] if n_err > 1 else None
        return StepResult(rows[n_state - 1], error, ks, ks[-1] if self.fsal else None, error2)


class RKStepper:
    """A ``ButcherTableau`` on one solve: the stage loop, no state.

    ``step`` records a graph through ``rk_step`` when autograd is on; without one it
    runs the accumulated stage sums (``StageSums``) where they take fewer kernels.
    """

    __slots__ = ("_sums", "accept", "euler", "f", "tableau")

    def __init__(self, tableau: ButcherTableau, f: Field):
        self.tableau = tableau
        self.f = f
        self.accept = no_accept
        self._sums: dict[tuple, StageSums] = {}
        # A one-stage tableau (Euler): its weight b_1, else 0.0
        self.euler = tableau.b[0] if tableau.stages == 1 and not tableau.fsal else 0.0

    def step(self, t: float, y: Tensor, h: float, k1: Tensor,
             with_error: bool = False) -> StepResult:
        if torch.is_grad_enabled():
            return rk_step(self.f, self.tableau, t, y, h, k1, with_error)
        if self.euler and not with_error:  # one fused add, no stage loop
            return StepResult(torch.add(y, k1, alpha=h * self.euler), None, [k1])
        key = (with_error, y.dtype, y.device, y.dim())
        sums = self._sums.get(key)
        if sums is None:
            sums = self._sums[key] = StageSums(self.tableau, with_error, y)
        if not sums.worthwhile:
            return rk_step(self.f, self.tableau, t, y, h, k1, with_error)
        return sums.step(self.f, t, y, h, k1)

    def dense(self, t: float, y: Tensor, h: float, result: StepResult, theta: float,
              f1: Tensor | None) -> Tensor:
        tableau = self.tableau
        if tableau.dense is not None:
            ks = result.ks
            if tableau.extra_c:
                ks = extra_stages(self.f, tableau, t, y, h, result)
            return combine(y, ks, tableau.dense_weights(theta), h)
        if f1 is None:
            f1 = self.f(t + h, result.y1)
        return hermite(y, result.y1, result.ks[0], f1, h, theta)


def own(y: Tensor) -> Tensor:
    """``y`` as an output the solve hands back: a row of a ``StageSums`` buffer (a view)
    is copied out, so that a kept output does not keep the whole stacked buffer alive."""
    return y.clone() if y._base is not None else y


def no_accept(t: float, y: Tensor, h: float, result: StepResult) -> None:
    """The ``accept`` of a stepper with no state (the loops skip calling it)."""
    return None


def extra_stages(f: Field, tableau: ButcherTableau, t: float, y: Tensor, h: float,
                 result: StepResult) -> list[Tensor]:
    """The stages a continuous extension needs beyond the step's own (DOP853's three),
    evaluated once per accepted step and cached in ``result.ks`` (so several outputs
    inside one step cost them once)."""
    ks = result.ks
    if len(ks) == tableau.stages:
        for c_i, a_i in zip(tableau.extra_c, tableau.extra_a):
            ks.append(f(t + c_i * h, combine(y, ks, a_i, h)))
    return ks


class HermiteDense:
    """Dense output of a step by the cubic Hermite interpolant through ``(y, ks[0])`` and
    ``(y1, f1)``: ``f1`` is the integrator's when given, else ``result.f1``, else
    ``f(t + h, y1)`` evaluated once per step (cached for the step's other outputs).
    Called as a stepper's ``dense``."""

    __slots__ = ("_cache", "f")

    def __init__(self, f: Field):
        self.f = f
        self._cache: tuple[StepResult, Tensor] | None = None

    def __call__(self, t: float, y: Tensor, h: float, result: StepResult, theta: float,
                 f1: Tensor | None) -> Tensor:
        theta = float(theta)
        if theta == 0.0:
            return y
        if theta == 1.0:
            return result.y1
        if f1 is None:
            f1 = result.f1
        if f1 is None:
            cache = self._cache
            if cache is not None and cache[0] is result:
                f1 = cache[1]
            else:
                f1 = self.f(t + h, result.y1)
                self._cache = (result, f1)
        return hermite(y, result.y1, result.ks[0], f1, h, theta)


class StatelessStepper:
    """A stepper around a plain ``step(f, t, y, h, k1) -> StepResult`` function (a
    method with no per-solve state); dense output by the cubic Hermite interpolant."""

    __slots__ = ("accept", "dense", "f", "step_fn")

    def __init__(self, step_fn: Callable[..., StepResult], f: Field):
        self.f = f
        self.step_fn = step_fn
        self.accept = no_accept
        self.dense = HermiteDense(f)

    def step(self, t: float, y: Tensor, h: float, k1: Tensor,
             with_error: bool = False) -> StepResult:
        return self.step_fn(self.f, t, y, h, k1)


def is_learned(method: object) -> bool:
    """Whether a step method carries a learned correction (a hypersolver: its network
    ``g`` is called ``corrections_per_step`` times per step)."""
    return bool(getattr(method, "corrections_per_step", 0)) \
        or getattr(method, "g", None) is not None


def bind(method: ButcherTableau | StepMethod, f: Field, stats: SolverStats) -> Stepper:
    """The ``Stepper`` of ``method`` for one solve on ``f``, counting into ``stats``."""
    if isinstance(method, ButcherTableau):
        # a Stepper: pyright binds the slot ``accept = no_accept`` as if it were a method
        return cast(Stepper, RKStepper(method, f))
    return method.stepper(f, stats)


def hermite(y0: Tensor, y1: Tensor, f0: Tensor, f1: Tensor, h: float,
            theta: float | Tensor) -> Tensor:
    """Cubic Hermite interpolant through ``(y0, f0)`` and ``(y1, f1)`` at ``t + theta*h``."""
    theta = float(theta)
    t2, t3 = theta * theta, theta * theta * theta
    out = torch.mul(y0, 2 * t3 - 3 * t2 + 1)
    out.add_(y1, alpha=-2 * t3 + 3 * t2)
    out.add_(f0, alpha=h * (t3 - 2 * t2 + theta))
    out.add_(f1, alpha=h * (t3 - t2))
    return out


def linear(y0: Tensor, y1: Tensor, theta: float) -> Tensor:
    """``y0 + theta * (y1 - y0)`` (exactly ``y0``/``y1`` at ``theta`` 0/1)."""
    if theta == 0.0:
        return y0
    if theta == 1.0:
        return y1
    return torch.lerp(y0, y1, theta)


def dense_output(
    tableau: ButcherTableau, y0: Tensor, y1: Tensor, ks: Sequence[Tensor], f1: Tensor | None,
    h: float, theta: float | Tensor,
) -> Tensor:
    """State at ``t + theta*h`` inside an accepted step of ``tableau``, ``theta`` in [0, 1]:
    its continuous extension when it has one (``ks`` must then hold every stage it
    uses), else the cubic Hermite interpolant (``f1 = f(t + h, y1)`` needed)."""
    theta = float(theta)
    if tableau.dense is not None:
        return combine(y0, ks, tableau.dense_weights(theta), h)
    if f1 is None:
        raise ValueError("Hermite interpolation needs f1 = f(t + h, y1)")
    return hermite(y0, y1, ks[0], f1, h, theta)
