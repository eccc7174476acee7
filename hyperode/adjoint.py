"""Adjoint sensitivities with a choice of norm for the backward solve.

``odeint_adjoint`` has torchdiffeq's signature and semantics: the forward solve
keeps no graph (memory independent of the number of steps), and the backward
pass integrates the adjoint system (Chen et al., 2018)::

    y' = f(t, y),   a_y' = -a_y^T df/dy,   a_t' = -a_y^T df/dt,   a_theta' = -a_y^T df/dtheta

from ``t[-1]`` back to ``t[0]``, one output interval at a time: at each output time
``y`` is reset to the stored forward value and that output's incoming gradient is
added to ``a_y``. The ``a_t`` channel is carried only when ``t`` requires grad.

Norms for the backward step-size control (``adjoint_options=dict(norm=...)``):

- ``"default"``: ``max(N(y), N(a_y), |a_t|, max_i RMS(a_theta_i))`` with ``N`` the
  forward norm (``options["norm"]``, default the mixed RMS norm);
- ``"seminorm"``: torchdiffeq's seminorm, ``max(|a_t|, N(y), N(a_y))``: the parameter
  adjoints are plain integrals that never feed back into the dynamics, so their
  error need not limit the step (Kidger, Chen & Lyons, "Hey, that's not an ODE");
- ``"state_seminorm"``: the paper's stricter seminorm (its App. A),
  ``max(N(y), N(a_y))``, which also drops the time adjoint ``a_t`` (another pure
  integral). The two seminorms coincide when ``t`` does not require grad;
- a callable, given the backward state as the tuple
  ``(y, a_y, [a_t,] *a_theta)`` with ``y`` and ``a_y`` flattened to 1-D.

A forward norm that ignores pure-integral members of a tuple state (e.g.
``hyperode.member_norm([0])`` for a CNF's ``(z, logp)``) is used for ``y`` and
``a_y`` in the backward solve too, so it removes ``logp`` and ``a_logp`` from both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import Tensor, nn

from .errors import MaxStepsExceededError, StepSizeUnderflowError
from .odeint import S, Solution, check_bool, check_func, check_t, real_state_layout, solve
from .solvers.config import GRID_OPTIONS, SolvePlan, method_kind, resolve
from .solvers.norms import mixed_norm, rms_norm
from .solvers.problem import CALLBACK_NAMES, State, StateLayout, VectorField
from .solvers.stats import SolverStats
from .solvers.step import is_learned

ADJOINT_NORMS = ("default", "seminorm", "state_seminorm")
BACKWARD_MODES = ("backsolve", "checkpoint")


@dataclass
class AdjointSolution(Solution[S]):
    """A ``Solution`` whose ``backward_stats`` (NFE, accepted and rejected steps of the
    adjoint solve, summed over output intervals) fill in when ``.backward()`` runs."""

    backward_stats: SolverStats = field(default_factory=SolverStats)


def odeint_adjoint(
    func: Callable[[Tensor, S], S],
    y0: S,
    t: Tensor | Sequence[float],
    *,
    rtol: float | Tensor = 1e-7,
    atol: float | Tensor = 1e-9,
    method: Any = None,
    options: dict[str, Any] | None = None,
    event_fn: Callable[[Tensor, S], Tensor] | None = None,
    adjoint_rtol: float | Tensor | None = None,
    adjoint_atol: float | Tensor | None = None,
    adjoint_method: Any = None,
    adjoint_options: dict[str, Any] | None = None,
    adjoint_params: Sequence[Tensor] | None = None,
    event_per_sample: bool = False,
) -> S | tuple[Tensor, S]:
    """``odeint`` with gradients by the adjoint method; torchdiffeq's signature.

    Returns ``[len(t), *y0.shape]`` (a tuple for a tuple ``y0``); with ``event_fn``
    ``(event_t, solution)`` as ``odeint`` does. See ``solve_adjoint`` for the arguments.
    """
    sol = solve_adjoint(
        func, y0, t, rtol=rtol, atol=atol, method=method, options=options, event_fn=event_fn,
        adjoint_rtol=adjoint_rtol, adjoint_atol=adjoint_atol, adjoint_method=adjoint_method,
        adjoint_options=adjoint_options, adjoint_params=adjoint_params,
        event_per_sample=event_per_sample,
    )
    if event_fn is None:
        return sol.ys
    return cast(Tensor, sol.event_t), sol.ys  # an event solve sets event_t


def solve_adjoint(
    func: Callable[[Tensor, S], S],
    y0: S,
    t: Tensor | Sequence[float],
    *,
    rtol: float | Tensor = 1e-7,
    atol: float | Tensor = 1e-9,
    method: Any = None,
    options: dict[str, Any] | None = None,
    event_fn: Callable[[Tensor, S], Tensor] | None = None,
    adjoint_rtol: float | Tensor | None = None,
    adjoint_atol: float | Tensor | None = None,
    adjoint_method: Any = None,
    adjoint_options: dict[str, Any] | None = None,
    adjoint_params: Sequence[Tensor] | None = None,
    event_per_sample: bool = False,
) -> AdjointSolution[S]:
    """Solve forward without a graph; gradients come from the backward adjoint solve.

    Args:
        func, y0, t, rtol, atol, method, options, event_fn, event_per_sample: as for
            ``hyperode.solve``. With ``event_fn`` the forward solve finds the event and
            the backward solve runs from the event time.
        adjoint_rtol, adjoint_atol, adjoint_method: for the backward solve; default to
            the forward ones.
        adjoint_options: options of the backward solve; default to the forward
            options (without ``norm``) when the method is the same, else none. Its
            ``norm`` is one of ``ADJOINT_NORMS`` or a callable, which receives
            torchdiffeq's tuple ``(a_t, *y, *a_y, *a_theta)``: the time adjoint (0-dim,
            zero when ``t`` needs no gradient), the state's and its adjoint's members in
            the user's shapes, and one adjoint per parameter. Its ``backward`` chooses
            how gradients are computed: ``"backsolve"`` (default, torchdiffeq's: solve
            ``y`` and the adjoints backwards together) or ``"checkpoint"`` (re-run the
            forward solve on each output interval from the stored output and
            backpropagate through it: no backward solve of ``y``, so it stays stable on
            stiff, dissipative problems where backsolving blows up; memory of one
            interval's steps; the gradient of the discretised solve. ``adjoint_method``,
            ``adjoint_rtol``/``adjoint_atol`` and other adjoint options do not apply).
        adjoint_params: a sequence of the tensors to compute gradients for; default
            ``func.parameters()`` (then ``func`` must be an ``nn.Module``). Those not
            requiring grad are left out.

    Step callbacks ``callback_step_adjoint``, ``callback_accept_step_adjoint`` and
    ``callback_reject_step_adjoint`` set on ``func`` are called by the backward solve.
    """
    check_func(func)
    if check_bool("event_per_sample", event_per_sample):
        raise ValueError("odeint_adjoint does not support per-sample events "
                         "(event_per_sample=True); use hyperode.odeint (backpropagation "
                         "through the solver)")
    params = _adjoint_params(func, adjoint_params)
    layout = real_state_layout(y0, "odeint_adjoint integrates real states only",
                               "use hyperode.odeint (backpropagation through the solver) or "
                               "split y0 into real and imaginary parts")
    t_tensor, _ = check_t(t)
    plan = resolve(method, options, rtol, atol, layout, func=func)
    _check_differentiable("method", plan)
    for p in params:
        if p.dtype != layout.dtype or p.device != layout.device:
            raise ValueError(f"adjoint_params must share y0's dtype and device "
                             f"({layout.dtype} on {layout.device}); got a parameter of "
                             f"{p.dtype} on {p.device}")
    backward = _BackwardConfig.build(
        func=func, layout=layout, params=params, method=method, options=options,
        rtol=rtol, atol=atol, adjoint_rtol=adjoint_rtol, adjoint_atol=adjoint_atol,
        adjoint_method=adjoint_method, adjoint_options=adjoint_options,
        t_grad=t_tensor.requires_grad, forward_plan=plan,
    )
    forward = _Forward(plan=plan, event_fn=event_fn, event_per_sample=event_per_sample)
    ys_flat, event_t = _AdjointFunction.apply(func, layout, forward, backward, t_tensor,
                                              layout.flatten(y0), *params)
    # As in torchdiffeq, the event time is an output of the adjoint function (so that
    # backward() through it runs) whose own gradient is zero: hyperode.odeint_event
    # attaches the implicit-function gradient.
    return AdjointSolution(ts=cast(Tensor, forward.ts) if event_fn is not None else
                           (t if isinstance(t, Tensor) else t_tensor),
                           ys=cast(S, layout.unflatten(ys_flat)), stats=forward.stats,
                           event_t=event_t if event_fn is not None else None,
                           backward_stats=backward.stats)


def _check_differentiable(name: str, plan: SolvePlan) -> None:
    method = plan.method
    if is_learned(method):
        raise ValueError(
            f"{name}={method.name!r} is a learned solver: the adjoint method differentiates "
            f"the exact ODE solution, not a learned solver's steps (a hypersolver's g would "
            f"get no gradient and would be handed the adjoint state); backpropagate through "
            f"the solver instead (hyperode.solve, NeuralODE(..., sensitivity='autograd'))"
        )


def _adjoint_params(func: Any, adjoint_params: Any) -> tuple[Tensor, ...]:
    if adjoint_params is None:
        if not isinstance(func, nn.Module):
            raise ValueError(
                f"func is a {type(func).__name__}, not an nn.Module, so its parameters are "
                f"unknown: pass adjoint_params=(...) with the tensors to differentiate "
                f"(or adjoint_params=() for none)"
            )
        adjoint_params = tuple(func.parameters())
    if isinstance(adjoint_params, Tensor):
        raise ValueError(
            f"adjoint_params must be a sequence of tensors, got one tensor of shape "
            f"{tuple(adjoint_params.shape)} (iterating it would give its rows, whose "
            f"gradients never reach it): pass adjoint_params=(tensor,)")
    try:
        params = tuple(adjoint_params)
    except TypeError:
        raise ValueError(f"adjoint_params must be a sequence of tensors (e.g. "
                         f"tuple(model.parameters()) or ()), got "
                         f"{type(adjoint_params).__name__}") from None
    for i, p in enumerate(params):
        if not isinstance(p, Tensor):
            raise ValueError(f"adjoint_params[{i}] must be a tensor, got {type(p).__name__}")
    return tuple(p for p in params if p.requires_grad)


@dataclass
class _Forward:
    plan: SolvePlan
    event_fn: Callable | None = None
    event_per_sample: bool = False
    stats: SolverStats = field(default_factory=SolverStats)
    ts: Tensor | None = None
    event_t: Tensor | None = None


@dataclass
class _BackwardConfig:
    """Validated settings of the backward solve (built at forward time, so that a bad
    adjoint option fails before any work is done)."""

    rtol: Any
    atol: Any
    method: Any
    options: dict[str, Any]
    norm_kind: str | Callable
    forward_norm: Callable
    t_grad: bool
    stats: SolverStats
    callbacks: dict[str, Callable]
    mode: str = "backsolve"

    @classmethod
    def build(cls, *, func: Any, layout: StateLayout, params: tuple[Tensor, ...], method: Any,
              options: dict | None, rtol: Any, atol: Any, adjoint_rtol: Any, adjoint_atol: Any,
              adjoint_method: Any, adjoint_options: dict | None, t_grad: bool,
              forward_plan: SolvePlan) -> _BackwardConfig:
        same_method = adjoint_method is None or adjoint_method == method
        adjoint_method = method if adjoint_method is None else adjoint_method
        if adjoint_options is None:
            adjoint_options = {k: v for k, v in (options or {}).items() if k != "norm"} \
                if same_method else {}
        elif not isinstance(adjoint_options, dict):
            raise ValueError(f"adjoint_options must be a dict or None, got "
                             f"{type(adjoint_options).__name__}")
        opts = dict(adjoint_options)
        mode = opts.pop("backward", "backsolve")
        if mode not in BACKWARD_MODES:
            raise ValueError(f"adjoint_options['backward'] = {mode!r} is unknown; use one of "
                             f"{', '.join(map(repr, BACKWARD_MODES))}")
        if mode == "checkpoint":
            unused = [name for name, value in (
                ("adjoint_method", adjoint_method if not same_method else None),
                ("adjoint_rtol", adjoint_rtol), ("adjoint_atol", adjoint_atol))
                if value is not None] + [f"adjoint_options[{k!r}]" for k in opts]
            if unused:
                raise ValueError(
                    f"{', '.join(unused)} has no effect with adjoint_options['backward'] = "
                    f"'checkpoint': the backward pass re-runs the forward solve (method, "
                    f"rtol, atol, options) on each output interval and backpropagates "
                    f"through it; drop it")
            stats = SolverStats()
            return cls(rtol=rtol, atol=atol, method=method, options={}, norm_kind="default",
                       forward_norm=mixed_norm, t_grad=t_grad, stats=stats, callbacks={},
                       mode=mode)
        if opts.get("per_sample_steps"):
            raise ValueError(
                "adjoint_options['per_sample_steps'] = True: the backward solve of "
                "odeint_adjoint holds the parameter adjoints, which have no batch dimension, "
                "so it cannot step per sample; give adjoint_options without it (the forward "
                "solve may still use options=dict(per_sample_steps=True))")
        norm_kind = opts.pop("norm", "default")
        if isinstance(norm_kind, str) and norm_kind not in ADJOINT_NORMS:
            raise ValueError(f"adjoint_options['norm'] = {norm_kind!r} is unknown; use one of "
                             f"{', '.join(ADJOINT_NORMS)} or a callable")
        if not isinstance(norm_kind, str) and not callable(norm_kind):
            raise ValueError(f"adjoint_options['norm'] must be a name or a callable, "
                             f"got {norm_kind!r}")
        adjoint_rtol = rtol if adjoint_rtol is None else adjoint_rtol
        adjoint_atol = atol if adjoint_atol is None else adjoint_atol
        for name, value in (("adjoint_rtol", adjoint_rtol), ("adjoint_atol", adjoint_atol)):
            if isinstance(value, Tensor) and value.numel() == 1:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(
                    f"{name} must be a float for the backward solve (whose state also holds "
                    f"the parameter adjoints), got {type(value).__name__}; pass adjoint_rtol="
                    f"/adjoint_atol= explicitly when rtol/atol are tensors")
        # Validate against the backward state's layout: (y, a_y, [a_t,] *a_theta).
        probe = torch.zeros(sum(layout.numels), dtype=layout.dtype, device=layout.device)
        scalar = torch.zeros((), dtype=layout.dtype, device=layout.device)
        back_layout = StateLayout((probe, probe, *([scalar] if t_grad else []), *params))
        back_plan = _resolve_named("adjoint", adjoint_method, opts, adjoint_rtol, adjoint_atol,
                                   back_layout)
        _check_differentiable("adjoint_method", back_plan)
        if back_plan.kind != "adaptive" and norm_kind != "default":
            raise ValueError(f"adjoint_options['norm'] = {norm_kind!r} has no effect on a "
                             f"backward solve without error control ({back_plan.method.name}, "
                             f"{back_plan.kind}); "
                             f"drop it")
        record = bool(opts.get("record_steps"))
        stats = SolverStats(accepted_ts=[] if record else None,
                            rejected_ts=[] if record else None)
        forward_norm = (options or {}).get("norm", mixed_norm)
        callbacks = {name: getattr(func, name + "_adjoint") for name in CALLBACK_NAMES
                     if callable(getattr(func, name + "_adjoint", None))}
        return cls(rtol=adjoint_rtol, atol=adjoint_atol, method=adjoint_method, options=opts,
                   norm_kind=norm_kind, forward_norm=forward_norm, t_grad=t_grad, stats=stats,
                   callbacks=callbacks)

    def norm(self, layout: StateLayout) -> Callable:
        """The error norm of the backward state ``(y, a_y, [a_t,] *a_theta)``."""
        kind, forward_norm, t_grad = self.norm_kind, self.forward_norm, self.t_grad
        if callable(kind):  # torchdiffeq's layout: (a_t, *y, *a_y, *a_theta)
            def user_norm(x: tuple[Tensor, ...]) -> Tensor:
                a_t = x[2] if t_grad else torch.zeros((), dtype=x[0].dtype, device=x[0].device)
                rest = x[3:] if t_grad else x[2:]
                y, a_y = layout.unflatten(x[0]), layout.unflatten(x[1])
                if not layout.is_tuple:
                    y, a_y = (y,), (a_y,)
                return kind((a_t, *y, *a_y, *rest))

            return user_norm

        def norm(x: tuple[Tensor, ...]) -> Tensor:
            parts = [forward_norm(layout.unflatten(x[0])), forward_norm(layout.unflatten(x[1]))]
            rest = x[2:]
            if t_grad:
                if kind != "state_seminorm":
                    parts.append(rest[0].abs())
                rest = rest[1:]
            if kind == "default":
                parts.extend(rms_norm(p) for p in rest)
            return torch.stack([torch.as_tensor(p, dtype=x[0].dtype, device=x[0].device)
                                for p in parts]).max()

        return norm

    def solve_options(self, layout: StateLayout) -> dict[str, Any]:
        opts = dict(self.options)
        adaptive = not any(k in opts for k in GRID_OPTIONS) and _is_adaptive(self.method)
        if adaptive:
            opts["norm"] = self.norm(layout)
        return opts


def _is_adaptive(method: Any) -> bool:
    return method_kind(method) == "adaptive"


def _resolve_named(prefix: str, method: Any, opts: dict, rtol: Any, atol: Any,
                   layout: StateLayout) -> SolvePlan:
    """``resolve`` with the messages naming ``adjoint_options``/``adjoint_method``."""
    try:
        return resolve(method, opts, rtol, atol, layout)
    except ValueError as e:
        message = str(e).replace("options[", f"{prefix}_options[").replace(
            "method=", f"{prefix}_method=")
        if message.startswith(("options", "method", "rtol", "atol")):
            message = f"{prefix}_{message}"
        elif not message.startswith(prefix):  # e.g. "unknown option 'foo' for method ..."
            message = f"{prefix}_options: {message}"
        raise ValueError(message) from None


class _AdjointFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, func, layout, forward, backward, t, y0_flat, *params):
        with torch.no_grad():
            sol = solve(func, layout.unflatten(y0_flat), t, plan=forward.plan,
                        event_fn=forward.event_fn, event_per_sample=forward.event_per_sample)
        forward.stats = sol.stats
        ys_flat = _flatten_leading(sol.ys, layout)
        if forward.event_fn is not None:
            forward.ts, forward.event_t = sol.ts, sol.event_t
            if forward.event_per_sample:
                raise ValueError("odeint_adjoint does not support per-sample events; use "
                                 "hyperode.odeint (backpropagation through the solver)")
            times = sol.ts
        else:
            times = t
        ctx.func, ctx.layout, ctx.backward_cfg, ctx.forward_plan = func, layout, backward, \
            forward.plan
        ctx.save_for_backward(times.detach(), ys_flat, *params)
        event_t = forward.event_t if forward.event_t is not None else ys_flat.new_zeros(())
        return ys_flat, event_t

    @staticmethod
    def backward(ctx, grad_ys, _grad_event_t):
        t, ys, *params = ctx.saved_tensors
        func, layout, cfg = ctx.func, ctx.layout, ctx.backward_cfg
        t_grad = ctx.needs_input_grad[4]
        times = t.detach().to("cpu", torch.float64).tolist()
        params = tuple(params)
        n_param_inputs = len(params)
        if cfg.mode == "checkpoint":
            grad_t, grad_y0, grad_params = _checkpoint_backward(
                func, layout, ctx.forward_plan, cfg.stats, times, ys, grad_ys, params, t_grad)
            return (None, None, None, None, None if grad_t is None else grad_t.to(t.dtype),
                    grad_y0, *grad_params)

        # Every call of func is checked here too (shape, dtype, device: metadata only).
        flat_f = VectorField(func, layout, context=" in the backward (adjoint) pass").at

        def dynamics(tt: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
            y, a = state[0], state[1]
            with torch.enable_grad():
                y = y.detach().requires_grad_(True)
                tt = tt.detach().requires_grad_(t_grad)
                fy = flat_f(tt, y)
                inputs = (y, tt, *params) if t_grad else (y, *params)
                if fy.requires_grad:
                    grads = torch.autograd.grad(fy, inputs, -a, allow_unused=True)
                else:  # f depends on neither y, t nor the parameters
                    grads = (None,) * len(inputs)
            grads = [torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs)]
            return (fy.detach(), *grads)

        for name, callback in cfg.callbacks.items():  # torchdiffeq: *_adjoint on func
            setattr(dynamics, name, _torchdiffeq_state(callback, t_grad))
        # a_t and a_theta are pure integrals (nothing depends on them): an implicit method's
        # finite-difference Jacobian skips their columns (zero) instead of perturbing each
        dynamics.integral_tail = int(t_grad) + sum(p.numel() for p in params)

        a_t = torch.zeros((), dtype=ys.dtype, device=ys.device)
        state = [ys[-1], grad_ys[-1], *([a_t] if t_grad else []),
                 *(torch.zeros_like(p) for p in params)]
        back_layout = StateLayout(tuple(state))
        time_vjps = torch.zeros(len(times), dtype=ys.dtype, device=ys.device) if t_grad else None
        stats = cfg.stats
        options = cfg.solve_options(layout)
        for i in range(len(times) - 1, 0, -1):
            if t_grad:  # dL/dt_i through the output at t_i
                with torch.no_grad():
                    tt = torch.full((), times[i], dtype=ys.dtype, device=ys.device)
                    d = torch.dot(flat_f(tt, ys[i].detach()).reshape(-1), grad_ys[i].reshape(-1))
                stats.nfe += 1
                cast(Tensor, time_vjps)[i] = d
                state[2] = state[2] - d
            plan = resolve(cfg.method, options, cfg.rtol, cfg.atol, back_layout, func=dynamics)
            try:
                sol = solve(dynamics, tuple(state), [times[i], times[i - 1]], plan=plan)
            except ValueError as e:  # the user's adjoint norm, by its own name
                if callable(cfg.norm_kind) and str(e).startswith("options['norm']"):
                    raise ValueError(f"adjoint_{e}") from None
                raise
            except (StepSizeUnderflowError, MaxStepsExceededError) as e:
                raise type(e)(f"in the backward (adjoint) pass on [{times[i - 1]!r}, "
                              f"{times[i]!r}]: {e}{BACKSOLVE_HINT}") from e
            stats.add(sol.stats)
            state = [m[-1] for m in sol.ys]
            state[0] = ys[i - 1]
            state[1] = state[1] + grad_ys[i - 1]
        if t_grad:
            cast(Tensor, time_vjps)[0] = state[2]
        grad_params = state[3:] if t_grad else state[2:]
        assert len(grad_params) == n_param_inputs
        grad_t = cast(Tensor, time_vjps).to(t.dtype) if t_grad else None
        return (None, None, None, None, grad_t, state[1], *grad_params)


BACKSOLVE_HINT = (
    " The adjoint pass re-solves y backwards in time from each output, which is unstable on "
    "a dissipative (stiff) problem: a mode that decays like exp(-k t) forwards grows like "
    "exp(k |dt|) backwards over an output interval dt. Use adjoint_options=dict(backward="
    "'checkpoint') (re-runs the forward solve per output interval and backpropagates "
    "through it: stable, memory of one interval's steps), add output times, or use "
    "hyperode.odeint (backpropagation through the solver).")


def _checkpoint_backward(func: Callable, layout: StateLayout, plan: SolvePlan,
                         stats: SolverStats, times: list[float], ys: Tensor, grad_ys: Tensor,
                         params: tuple[Tensor, ...], t_grad: bool,
                         ) -> tuple[Tensor | None, Tensor, list[Tensor]]:
    """Gradients by re-running the forward solve on each output interval, last first, from
    the stored output ``ys[i-1]`` (the forward plan: same method, tolerances and
    options), and
    backpropagating through it (discretise-then-optimise; no backward solve of ``y``).

    ``ys``/``grad_ys`` are ``[T, n]`` (flattened states). With ``A_i = dL/dy_i`` (the
    incoming gradient plus what flows back from later outputs), the time gradients are
    those of the exact flow: ``dL/dt_i = grad_ys[i] . f(t_i, y_i)`` for ``i >= 1`` and
    ``dL/dt_0 = -(A_0 - grad_ys[0]) . f(t_0, y_0)``.
    Returns ``(grad_t or None, grad_y0 [n], grads of params)``.
    """
    flat_f = VectorField(func, layout, context=" in the backward (checkpoint) pass").at
    a = grad_ys[-1]
    grad_params = [torch.zeros_like(p) for p in params]
    time_vjps = torch.zeros(len(times), dtype=ys.dtype, device=ys.device) if t_grad else None

    def f_dot(i: int, v: Tensor) -> Tensor:
        with torch.no_grad():
            tt = torch.full((), times[i], dtype=ys.dtype, device=ys.device)
            stats.nfe += 1
            return torch.dot(flat_f(tt, ys[i].detach()).reshape(-1), v.reshape(-1))

    for i in range(len(times) - 1, 0, -1):
        if t_grad:
            cast(Tensor, time_vjps)[i] = f_dot(i, grad_ys[i])
        with torch.enable_grad():
            start = ys[i - 1].detach().requires_grad_(True)
            y_start: Any = layout.unflatten(start)  # the state's own type (tensor or tuple)
            sol = solve(func, y_start, [times[i - 1], times[i]], plan=plan)
            end = _flatten_leading(sol.ys, layout)[-1]
            if end.requires_grad:
                grads = torch.autograd.grad(end, (start, *params), a, allow_unused=True)
            else:  # the solution depends on neither y nor the parameters
                grads = (None,) * (1 + len(params))
        stats.add(sol.stats)
        a = (torch.zeros_like(a) if grads[0] is None else grads[0]) + grad_ys[i - 1]
        for k, g in enumerate(grads[1:]):
            if g is not None:
                grad_params[k] = grad_params[k] + g
    if t_grad:
        cast(Tensor, time_vjps)[0] = -f_dot(0, a - grad_ys[0])
    return time_vjps, a, grad_params


def _torchdiffeq_state(callback: Callable, t_grad: bool) -> Callable:
    """An adjoint callback handed torchdiffeq's backward state ``(a_t, y, a_y, *a_params)``
    (``a_t`` zero when ``t`` needs no gradient) instead of hyperode's internal order."""
    def call(t0: Tensor, state: tuple[Tensor, ...], dt: Tensor) -> Any:
        y, a_y, *rest = state
        if t_grad:
            a_t, *rest = rest
        else:
            a_t = torch.zeros((), dtype=y.dtype, device=y.device)
        return callback(t0, (a_t, y, a_y, *rest), dt)

    call.__name__ = getattr(callback, "__name__", "callback")
    return call


def _flatten_leading(ys: State, layout: StateLayout) -> Tensor:
    """``[T, *shape]`` (or a tuple of them) -> ``[T, n]`` for a tuple, unchanged otherwise."""
    if not layout.is_tuple:
        return cast(Tensor, ys)
    return torch.cat([m.reshape(m.shape[0], -1) for m in ys], dim=1)
