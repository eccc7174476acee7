"""Public entry points: ``odeint`` (torchdiffeq-compatible) and ``solve`` (-> ``Solution``).

Switching from torchdiffeq is changing the import::

    from hyperode import odeint
    ys = odeint(func, y0, t, rtol=1e-7, atol=1e-9, method="dopri5")   # [len(t), *y0.shape]

This module validates every argument (a bad one raises ``ValueError`` naming it),
turns the state into the solvers' flat tensor, dispatches to the fixed-grid or
adaptive integrator, and attaches gradients with respect to ``t``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

import torch
from torch import Tensor

from .errors import NonFiniteStateError, user_stacklevel
from .solvers.adaptive import AdaptiveConfig, integrate_adaptive
from .solvers.config import SolvePlan, resolve
from .solvers.events import EventWatch
from .solvers.fixed import Grid, first_nonfinite_time, integrate_fixed, merged_times
from .solvers.per_sample import PerSampleField, PerSampleStats, integrate_per_sample
from .solvers.problem import Callbacks, State, StateLayout, VectorField
from .solvers.stats import SolverStats

#: The state's type in a solve, as given: one tensor, a tuple of tensors, or (for a
#: caller that holds either) ``State``; ``Solution.ys`` has the same type.
S = TypeVar("S", Tensor, tuple[Tensor, ...], State)


@dataclass
class Solution(Generic[S]):
    """Result of ``solve``.

    Attributes:
        ts: the requested times, as given (shape ``[T]``); for an event solve
            ``[t0, event_t]``.
        ys: states at ``ts``: ``[T, *y0.shape]``, or a tuple of such for a tuple state.
        stats: ``SolverStats`` (nfe, steps, accepted, rejected, optional step times).
        event_t: for a solve with ``event_fn``, the event time (0-dim tensor; per
            sample ``[B]``); else ``None``.
    """

    ts: Tensor
    ys: S
    stats: SolverStats
    event_t: Tensor | None = None


def odeint(
    func: Callable[[Tensor, S], S],
    y0: S,
    t: Tensor | Sequence[float],
    *,
    rtol: float | Tensor | Sequence[float | Tensor] = 1e-7,
    atol: float | Tensor | Sequence[float | Tensor] = 1e-9,
    method: Any = None,
    options: dict[str, Any] | None = None,
    event_fn: Callable[[Tensor, S], Tensor] | None = None,
    event_per_sample: bool = False,
) -> S | tuple[Tensor, S]:
    """Solve ``dy/dt = func(t, y)``, ``y(t[0]) = y0``; return ``y`` at every ``t``.

    Same signature, semantics and return type as ``torchdiffeq.odeint``; see
    ``solve`` for the arguments and options. Returns ``[len(t), *y0.shape]`` (or a
    tuple of such for a tuple ``y0``). With ``event_fn`` returns
    ``(event_t, solution)`` as torchdiffeq does: the solve runs from ``t[0]`` in the
    direction of ``t[1]`` (``t[1]`` itself is ignored) until ``event_fn(t, y)`` crosses
    zero, and ``solution`` is ``[2, *y0.shape]``: ``y0`` and the state at the event.
    Gradients of the event time need ``hyperode.odeint_event``.
    """
    sol = solve(func, y0, t, rtol=rtol, atol=atol, method=method, options=options,
                event_fn=event_fn, event_per_sample=event_per_sample)
    if event_fn is None:
        return sol.ys
    return cast(Tensor, sol.event_t), sol.ys  # an event solve sets event_t


def solve(
    func: Callable[[Tensor, S], S],
    y0: S,
    t: Tensor | Sequence[float],
    *,
    rtol: float | Tensor | Sequence[float | Tensor] = 1e-7,
    atol: float | Tensor | Sequence[float | Tensor] = 1e-9,
    method: Any = None,
    options: dict[str, Any] | None = None,
    event_fn: Callable[[Tensor, S], Tensor] | None = None,
    event_per_sample: bool = False,
    plan: SolvePlan | None = None,
    callback_suffix: str = "",
) -> Solution[S]:
    """Solve an initial value problem and return a ``Solution`` with statistics.

    Args:
        func: ``f(t, y)`` returning ``dy/dt`` with ``y``'s structure, shape and dtype;
            ``t`` arrives as a 0-dim tensor in the state's (real) dtype. Step callbacks
            set on it as attributes (``callback_step``, ``callback_accept_step``,
            ``callback_reject_step``) are called as torchdiffeq calls them.
        y0: initial state, a floating or complex tensor of any shape or a tuple of them
            (same dtype and device); float32/float64 (complex64/complex128): half
            precision is refused (README, "Errors and guarantees").
        t: output times, 1-D and strictly increasing or strictly decreasing;
            ``t[0]`` is the initial time. Time is handled in float64.
        rtol, atol: tolerances of adaptive methods, floats >= 0 or tensors
            broadcastable to the state (for a tuple state, one per member). Explicit
            fixed-grid methods accept and ignore them (torchdiffeq's rule; the implicit
            methods and ``implicit_adams`` use them for their iterations); a hypersolver
            refuses any but the defaults (``ValueError``: they would be ignored).
        method: a name (``hyperode.METHODS``; ``None`` is dopri5), a
            ``ButcherTableau``, or any step method object
            (``hyperode.solvers.step.StepMethod``), e.g. a ``hyperode.hyper.HyperSolver``.
        options: fixed-grid — ``step_size``, ``num_steps`` (equal steps over the
            span), ``grid_points`` or ``grid_constructor(func, y0, t)``; with none of
            them a method without an error estimate steps on ``t`` itself, and an
            adaptive method given one runs on that grid. ``interp`` (``"linear"`` or
            ``"cubic"``: interpolate outputs inside steps as torchdiffeq does, instead
            of landing on them) and ``perturb`` (evaluate ``f`` just inside each step).
            Adaptive — ``norm`` (callable on the scaled error in the state's
            structure), ``controller`` (``"pi"``, ``"i"`` or a controller object),
            ``safety``, ``ifactor``, ``dfactor``, ``first_step``, ``min_step`` and
            ``max_step`` (steps are clamped to them; a step at ``min_step`` is accepted
            whatever its error), ``step_t`` (times to step onto), ``jump_t``
            (discontinuities: stepped onto and ``f`` re-evaluated on their far side).
            Both — ``max_num_steps`` (default 100000 attempted steps), ``record_steps``
            (keep accepted and rejected step times in ``stats``) and ``dtype`` (of
            times; accepted for torchdiffeq code, time is float64 here). Methods with
            options of their own take them here too (``scipy_solver``: ``solver``,
            ``min_step``, ``max_step``; the Adams methods: ``max_order``, ``max_iters``).
            Any other key raises ``ValueError``.
        event_fn: stop at the first zero crossing of ``event_fn(t, y)`` (see ``odeint``).
        event_per_sample: with ``event_fn`` returning ``[B]``, each sample's own
            event time (``solution[-1][b]`` is sample ``b`` at ``event_t[b]``).
        plan: an already resolved configuration (``hyperode.solvers.config.resolve``);
            then ``method``, ``options``, ``rtol`` and ``atol`` are not read.
        callback_suffix: read ``callback_*<suffix>`` from ``func`` instead (the
            adjoint's backward solve uses ``"_adjoint"``).

    Gradients flow to ``y0``, the parameters of ``func`` (backpropagation through the
    solver) and, when ``t`` requires grad, to ``t`` through the exact relations
    ``dy(t_i)/dt_i = f(t_i, y(t_i))`` and ``dy(t_i)/dt_0 = -(dy(t_i)/dy_0) f(t_0, y_0)``
    (this costs one extra evaluation of ``f`` per output time).
    """
    check_func(func)
    check_y0(y0)
    layout = StateLayout(y0)
    t_tensor, t_list = check_t(t)
    if plan is None:
        plan = resolve(method, options, rtol, atol, layout, func=func)
    _check_complex(plan, layout)
    check_bool("event_per_sample", event_per_sample)
    if event_fn is not None:
        if not callable(event_fn):
            raise ValueError(f"event_fn must be callable as event_fn(t, y), got {event_fn!r}")
        if len(t_list) != 2:
            raise ValueError(f"with event_fn, t must hold 2 times (t0 and one more giving the "
                             f"direction), got {len(t_list)}")
        if plan.kind == "external":
            raise ValueError(f"method {plan.method.name!r} cannot locate events; use an "
                             f"adaptive or fixed-step method")
    elif event_per_sample:
        raise ValueError("event_per_sample=True needs an event_fn")
    if event_fn is not None and plan.per_sample_steps:
        raise ValueError("event_fn cannot be combined with options['per_sample_steps']; for "
                         "an event time per sample use event_per_sample=True with shared steps")
    if plan.per_sample_steps:
        f, stats = PerSampleField(func, layout), PerSampleStats()
    else:
        f, stats = VectorField(cast("Callable[[Tensor, State], State]", func), layout), \
            SolverStats()
    if plan.record_steps:
        stats.accepted_ts, stats.rejected_ts = [], []
    y0_flat = layout.flatten(y0)

    # An external integrator (scipy) returns values without a graph: so does the solve,
    # and backward() through it fails loudly instead of giving partial gradients.
    t_grad = t_tensor.requires_grad and torch.is_grad_enabled() and plan.kind != "external"
    y_start = y0_flat
    if t_grad:  # y(t_i) moves by -(dy_i/dy_0) f0 dt_0: route that through y0
        with torch.no_grad():
            f0 = f(t_list[0], y0_flat)
        y_start = y0_flat - _tangent(t_tensor[0], layout.dtype) * f0

    callbacks = Callbacks(func, layout, callback_suffix) if plan.callbacks or callback_suffix \
        else None
    watch = None
    if event_fn is not None:
        watch = EventWatch(event_fn, layout, t_list[0], y0_flat, per_sample=event_per_sample,
                           interp=plan.interp, f=f)
    grid_times: list[float] | None = None
    if plan.kind == "external":
        _warn_if_gradient_expected(plan, y0_flat, t_tensor, func)
        ys = plan.method.integrate(f, y_start, t_list, plan.rtol, plan.atol, stats)
    elif plan.kind == "fixed":
        if watch is not None:
            if "step_size" not in plan.options:
                raise ValueError("event handling with a fixed-grid method needs "
                                 "options['step_size'] (the grid has no end)")
            grid = Grid(t_list[0], None, step_size=plan.options["step_size"],
                        direction=1.0 if t_list[1] > t_list[0] else -1.0)
        else:
            grid = plan.grid(t_list, _flat_func(func, layout), y0_flat)
        ys = integrate_fixed(f, plan.method, y_start, t_list, grid, stats, interp=plan.interp,
                             perturb=plan.perturb, max_num_steps=plan.max_num_steps,
                             record_steps=plan.record_steps, callbacks=callbacks, watch=watch)
        if watch is None and plan.interp is None:
            grid_times = list(merged_times(grid, t_list))
    elif plan.per_sample_steps:
        ys = integrate_per_sample(cast(PerSampleField, f), plan.method, y_start, t_list,
                                  cast(AdaptiveConfig, plan.adaptive), cast(PerSampleStats, stats),
                                  norm=plan.options.get("norm"),
                                  compact=bool(plan.options.get("compact_finished", False)))
    else:
        if watch is not None:
            ys = integrate_adaptive(f, plan.method, y_start, t_list[:1],
                                    cast(AdaptiveConfig, plan.adaptive), stats,
                                    callbacks=callbacks, watch=watch,
                                    direction=1.0 if t_list[1] > t_list[0] else -1.0)
        else:
            ys = integrate_adaptive(f, plan.method, y_start, t_list,
                                    cast(AdaptiveConfig, plan.adaptive), stats,
                                    callbacks=callbacks)
    ys[0] = y0_flat if plan.kind != "external" else y0_flat.detach()

    event_t = None
    if watch is not None:
        ys.append(cast(Tensor, watch.y_event))  # the event fired (else an error above)
        times = watch.event_t
        event_t = torch.tensor(times, dtype=t_tensor.dtype if t_tensor.is_floating_point()
                               else torch.float64, device=t_tensor.device)
        t_out = [t_list[0], times if isinstance(times, float)
                 else max(cast("list[float]", times), key=abs)]
    else:
        t_out = t_list
        if t_grad:  # dy(t_i)/dt_i = f(t_i, y_i)
            with torch.no_grad():
                slopes = [f(t_list[i], ys[i]) for i in range(1, len(ys))]
            for i, slope in enumerate(slopes, start=1):
                ys[i] = ys[i] + _tangent(t_tensor[i], layout.dtype) * slope

    out = torch.stack(ys)
    _check_finite(out, t_out, f, plan, grid_times)
    stats.nfe = f.nfe
    ts = t if isinstance(t, Tensor) else t_tensor
    if event_t is not None:
        ts = torch.stack([t_tensor[0].detach(), event_t.reshape(-1)[0]]) \
            if event_t.ndim == 0 else t_tensor.detach()
    return Solution(ts=ts, ys=cast(S, layout.unflatten(out)), stats=stats, event_t=event_t)


def _tangent(t_i: Tensor, dtype: torch.dtype) -> Tensor:
    """``t_i - stop_grad(t_i)``: zero in value, identity in gradient."""
    return (t_i - t_i.detach()).to(dtype)


# --------------------------------------------------------------------------- checks


HALF_DTYPES = (torch.float16, torch.bfloat16, torch.complex32)
"""State dtypes refused by every entry point (README, "Errors and guarantees")."""


def check_func(func: Any, name: str = "func") -> None:
    """``ValueError`` unless ``func`` is callable as ``func(t, y)``."""
    if not callable(func):
        raise ValueError(f"{name} must be callable as {name}(t, y) returning dy/dt, got "
                         f"{type(func).__name__}: {func!r}")


def check_bool(name: str, value: Any) -> bool:
    """``ValueError`` unless ``value`` is ``True`` or ``False`` (a string such as ``"no"``
    would otherwise count as true)."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def check_y0(y0: Any) -> None:
    """``ValueError`` naming ``y0`` (or ``y0[i]``) unless it is a tensor or a non-empty
    tuple of tensors, floating or complex, not half precision, finite, sharing dtype and
    device."""
    members = y0 if isinstance(y0, tuple) else (y0,)
    if isinstance(y0, tuple) and not y0:
        raise ValueError("y0 is an empty tuple; give a tensor or a tuple of tensors")
    for i, m in enumerate(members):
        name = f"y0[{i}]" if isinstance(y0, tuple) else "y0"
        if not isinstance(m, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor (or y0 a tuple of them), "
                             f"got {type(m).__name__}")
        if not (m.is_floating_point() or m.is_complex()):
            raise ValueError(f"{name} must have a floating (or complex) dtype, got {m.dtype}")
        if m.dtype in HALF_DTYPES:
            raise ValueError(
                f"{name} has dtype {m.dtype}: half-precision states are not supported "
                f"(float16 keeps 11 significant bits and bfloat16 8, so the increments of "
                f"small steps are rounded away and the error norm of adaptive steps "
                f"underflows; torch's CPU kernels are slow or missing in half precision). "
                f"Integrate in float32 ({name}.float()) and, for speed, run the network in "
                f"half precision inside func (torch.autocast), returning dy/dt in float32"
            )
        if m.dtype != members[0].dtype or m.device != members[0].device:
            raise ValueError(
                f"the members of the tuple y0 must share dtype and device: y0[0] is "
                f"{members[0].dtype} on {members[0].device}, {name} is {m.dtype} on {m.device}"
            )
        bad = ~torch.isfinite(m.detach())
        if bool(bad.any()):
            index = tuple(int(x) for x in bad.nonzero()[0])
            raise ValueError(f"{name} contains non-finite values (first at index {index}: "
                             f"{m.detach()[index].item()})")


def real_state_layout(y0: Any, what: str, remedy: str) -> StateLayout:
    """``check_y0``, then the layout of a real ``y0``; a complex one is refused with
    ``"y0 is complex (<dtype>); <what>: <remedy>"`` (entry points that differentiate
    through real-only machinery)."""
    check_y0(y0)
    layout = StateLayout(y0)
    if layout.dtype.is_complex:
        raise ValueError(f"y0 is complex ({layout.dtype}); {what}: {remedy}")
    return layout


def check_t(t: Any) -> tuple[Tensor, list[float]]:
    """``t`` as a tensor and as a list of floats; ``ValueError`` unless 1-D, non-empty,
    real, finite and strictly monotonic."""
    if not isinstance(t, Tensor):
        try:
            t = torch.as_tensor(t, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError) as e:
            raise ValueError(f"t must be a 1-D tensor or sequence of times, got {t!r}") from e
    if t.ndim != 1:
        raise ValueError(f"t must be 1-D, got shape {tuple(t.shape)}")
    if t.numel() == 0:
        raise ValueError("t is empty; give at least the initial time")
    if t.is_complex():
        raise ValueError(f"t must be real, got dtype {t.dtype}")
    t_tensor = t if t.is_floating_point() else t.to(torch.float64)
    values = t_tensor.detach().to("cpu", torch.float64).tolist()
    for i, v in enumerate(values):
        if not math.isfinite(v):
            raise ValueError(f"t must be finite, t[{i}] = {v}")
    if len(values) > 1:
        d = 1.0 if values[1] > values[0] else -1.0
        for i in range(1, len(values)):
            if d * (values[i] - values[i - 1]) <= 0:
                what = ("repeats a value" if values[i] == values[i - 1]
                        else "is not strictly monotonic")
                raise ValueError(
                    f"t {what}: t[{i - 1}] = {values[i - 1]!r}, t[{i}] = {values[i]!r}; "
                    f"t must be strictly increasing or strictly decreasing"
                )
    return t_tensor, values


def _warn_if_gradient_expected(plan: SolvePlan, y0: Tensor, t: Tensor, func: Any) -> None:
    if not torch.is_grad_enabled():
        return
    if y0.requires_grad or t.requires_grad or (
            isinstance(func, torch.nn.Module) and any(p.requires_grad for p in func.parameters())):
        warnings.warn(
            f"method={plan.method.name!r} integrates outside autograd: its result is detached, "
            f"so no gradient flows through the solve to y0, t or func's parameters. Use "
            f"hyperode.odeint_adjoint(..., method={plan.method.name!r}) for gradients, or a "
            f"torch method (e.g. dopri5)", UserWarning, stacklevel=user_stacklevel())


def _flat_func(func: Callable, layout: StateLayout) -> Callable:
    """``func`` on the flat state, as torchdiffeq hands it to ``grid_constructor``."""
    if not layout.is_tuple:
        return func
    return lambda t, y: layout.flatten(func(t, layout.unflatten(y)))


def _check_complex(plan: SolvePlan, layout: StateLayout) -> None:
    if sum(layout.numels) == 0 and getattr(plan.method, "implicit", False):
        shapes = [tuple(s) for s in layout.shapes]
        raise ValueError(f"y0 is empty (shape {shapes[0] if not layout.is_tuple else shapes}); "
                         f"method {plan.method.name!r} solves equations for the state's "
                         f"elements and needs at least one")
    if layout.dtype.is_complex and not getattr(plan.method, "complex_states", True):
        raise ValueError(f"y0 is complex ({layout.dtype}) but method {plan.method.name!r} "
                         f"cannot take complex states; use an explicit method (e.g. dopri5, "
                         f"rk4) or split y0 into real and imaginary parts")


def _check_finite(out: Tensor, t_list: list[float], f: VectorField, plan: SolvePlan,
                  grid_times: list[float] | None) -> None:
    """One host sync for the whole solve; on failure, name the first bad time."""
    if bool(torch.isfinite(out.detach()).all()):
        return
    per_output = torch.isfinite(out.detach().reshape(len(t_list), -1)).all(dim=1).tolist()
    i = per_output.index(False)
    where = f"between t={t_list[i - 1]!r} and t={t_list[i]!r}"
    if grid_times is not None and i > 0:
        lo, hi = grid_times.index(t_list[i - 1]), grid_times.index(t_list[i])
        t_bad = first_nonfinite_time(f, plan.method, out[i - 1].detach(),
                                     grid_times[lo:hi + 1])
        if t_bad is not None:
            where = f"at t={t_bad!r} (first grid point with a non-finite state)"
    raise NonFiniteStateError(
        f"the state became non-finite (NaN/inf) {where}. The vector field may blow up there; "
        f"try a smaller step size, an adaptive method, or check the model for instability"
    )
