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
from typing import Any

import torch
from torch import Tensor, nn

from .odeint import (
    Solution,
    _check_options,
    _check_t,
    _check_y0,
    _tolerances,
    solve,
)
from .solvers.methods import get_method
from .solvers.norms import mixed_norm, rms_norm
from .solvers.problem import State, StateLayout
from .solvers.stats import SolverStats
from .solvers.tableau import ButcherTableau

ADJOINT_NORMS = ("default", "seminorm", "state_seminorm")


@dataclass
class AdjointSolution(Solution):
    """A ``Solution`` whose ``backward_stats`` (NFE, accepted and rejected steps of the
    adjoint solve, summed over output intervals) fill in when ``.backward()`` runs."""

    backward_stats: SolverStats = field(default_factory=SolverStats)


def odeint_adjoint(
    func: Callable[[Tensor, State], State],
    y0: State,
    t: Tensor | Sequence[float],
    *,
    rtol: float | Tensor = 1e-7,
    atol: float | Tensor = 1e-9,
    method: str | ButcherTableau = "dopri5",
    options: dict[str, Any] | None = None,
    adjoint_rtol: float | Tensor | None = None,
    adjoint_atol: float | Tensor | None = None,
    adjoint_method: str | ButcherTableau | None = None,
    adjoint_options: dict[str, Any] | None = None,
    adjoint_params: Sequence[Tensor] | None = None,
) -> State:
    """``odeint`` with gradients by the adjoint method; torchdiffeq's signature.

    Returns ``[len(t), *y0.shape]`` (a tuple for a tuple ``y0``). See
    ``solve_adjoint`` for the arguments.
    """
    return solve_adjoint(
        func, y0, t, rtol=rtol, atol=atol, method=method, options=options,
        adjoint_rtol=adjoint_rtol, adjoint_atol=adjoint_atol, adjoint_method=adjoint_method,
        adjoint_options=adjoint_options, adjoint_params=adjoint_params,
    ).ys


def solve_adjoint(
    func: Callable[[Tensor, State], State],
    y0: State,
    t: Tensor | Sequence[float],
    *,
    rtol: float | Tensor = 1e-7,
    atol: float | Tensor = 1e-9,
    method: str | ButcherTableau = "dopri5",
    options: dict[str, Any] | None = None,
    adjoint_rtol: float | Tensor | None = None,
    adjoint_atol: float | Tensor | None = None,
    adjoint_method: str | ButcherTableau | None = None,
    adjoint_options: dict[str, Any] | None = None,
    adjoint_params: Sequence[Tensor] | None = None,
) -> AdjointSolution:
    """Solve forward without a graph; gradients come from the backward adjoint solve.

    Args:
        func, y0, t, rtol, atol, method, options: as for ``hyperode.solve``.
        adjoint_rtol, adjoint_atol, adjoint_method: for the backward solve; default to
            the forward ones.
        adjoint_options: options of the backward solve; default to the forward
            options (without ``norm``) when the method is the same, else none. Its
            ``norm`` is one of ``ADJOINT_NORMS`` or a callable (module docstring).
        adjoint_params: the tensors to compute gradients for; default
            ``func.parameters()`` (then ``func`` must be an ``nn.Module``).
    """
    params = _adjoint_params(func, adjoint_params)
    _check_y0(y0)
    layout = StateLayout(y0)
    t_tensor, _ = _check_t(t)
    tableau = get_method(method)
    for name, m in (("method", tableau), ("adjoint_method", adjoint_method)):
        if m is not None and not isinstance(get_method(m), ButcherTableau):
            raise ValueError(
                f"{name}={get_method(m).name!r} is not a Butcher tableau: the adjoint method "
                f"differentiates the exact ODE solution, not a learned solver's steps (a "
                f"hypersolver's g would get no gradient and would be handed the adjoint "
                f"state); backpropagate through the solver instead (hyperode.solve, "
                f"NeuralODE(..., sensitivity='autograd'))"
            )
    _check_options(options, tableau)
    _tolerances(rtol, atol, layout)
    for p in params:
        if p.dtype != layout.dtype or p.device != layout.device:
            raise ValueError(f"adjoint_params must share y0's dtype and device "
                             f"({layout.dtype} on {layout.device}); got a parameter of "
                             f"{p.dtype} on {p.device}")
    backward = _BackwardConfig.build(
        layout=layout, method=method, options=options, rtol=rtol, atol=atol,
        adjoint_rtol=adjoint_rtol, adjoint_atol=adjoint_atol,
        adjoint_method=adjoint_method, adjoint_options=adjoint_options,
        t_grad=t_tensor.requires_grad,
    )
    forward_kwargs = dict(rtol=rtol, atol=atol, method=method, options=options)
    result = _Forward()
    ys_flat = _AdjointFunction.apply(func, layout, forward_kwargs, backward, result,
                                     t_tensor, layout.flatten(y0), *params)
    return AdjointSolution(ts=t if isinstance(t, Tensor) else t_tensor,
                           ys=layout.unflatten(ys_flat), stats=result.stats,
                           backward_stats=backward.stats)


def _adjoint_params(func: Any, adjoint_params: Sequence[Tensor] | None) -> tuple[Tensor, ...]:
    if adjoint_params is None:
        if not isinstance(func, nn.Module):
            raise ValueError(
                f"func is a {type(func).__name__}, not an nn.Module, so its parameters are "
                f"unknown: pass adjoint_params=(...) with the tensors to differentiate "
                f"(or adjoint_params=() for none)"
            )
        adjoint_params = tuple(func.parameters())
    params = tuple(adjoint_params)
    for i, p in enumerate(params):
        if not isinstance(p, Tensor):
            raise ValueError(f"adjoint_params[{i}] must be a tensor, got {type(p).__name__}")
    return tuple(p for p in params if p.requires_grad)


@dataclass
class _Forward:
    stats: SolverStats = field(default_factory=SolverStats)


@dataclass
class _BackwardConfig:
    """Validated settings of the backward solve (built at forward time, so that a bad
    adjoint option fails before any work is done)."""

    rtol: Any
    atol: Any
    method: str | ButcherTableau
    options: dict[str, Any]
    norm_kind: str | Callable
    forward_norm: Callable
    t_grad: bool
    stats: SolverStats

    @classmethod
    def build(cls, *, layout: StateLayout, method: Any, options: dict | None, rtol: Any,
              atol: Any, adjoint_rtol: Any, adjoint_atol: Any, adjoint_method: Any,
              adjoint_options: dict | None, t_grad: bool) -> _BackwardConfig:
        same_method = adjoint_method is None or adjoint_method == method
        adjoint_method = method if adjoint_method is None else adjoint_method
        adjoint_tableau = get_method(adjoint_method)
        if adjoint_options is None:
            adjoint_options = {k: v for k, v in (options or {}).items() if k != "norm"} \
                if same_method else {}
        elif not isinstance(adjoint_options, dict):
            raise ValueError(f"adjoint_options must be a dict or None, got "
                             f"{type(adjoint_options).__name__}")
        opts = dict(adjoint_options)
        norm_kind = opts.pop("norm", "default")
        if isinstance(norm_kind, str) and norm_kind not in ADJOINT_NORMS:
            raise ValueError(f"adjoint_options['norm'] = {norm_kind!r} is unknown; use one of "
                             f"{', '.join(ADJOINT_NORMS)} or a callable")
        if not isinstance(norm_kind, str) and not callable(norm_kind):
            raise ValueError(f"adjoint_options['norm'] must be a name or a callable, "
                             f"got {norm_kind!r}")
        if not adjoint_tableau.adaptive and not any(
                k in opts for k in ("step_size", "num_steps", "grid_points")):
            raise ValueError(
                f"adjoint_method {adjoint_tableau.name!r} is fixed-step: give "
                f"adjoint_options=dict(step_size=...) or num_steps/grid_points"
            )
        is_fixed = not adjoint_tableau.adaptive or any(
            k in opts for k in ("step_size", "num_steps", "grid_points"))
        if is_fixed and norm_kind != "default":
            raise ValueError(f"adjoint_options['norm'] = {norm_kind!r} has no effect on a "
                             f"fixed-grid backward solve ({adjoint_tableau.name}); drop it")
        _check_options(opts, adjoint_tableau)  # raises on anything else that makes no sense
        adjoint_rtol = rtol if adjoint_rtol is None else adjoint_rtol
        adjoint_atol = atol if adjoint_atol is None else adjoint_atol
        for name, value in (("adjoint_rtol", adjoint_rtol), ("adjoint_atol", adjoint_atol)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(
                    f"{name} must be a float for the backward solve (whose state also holds "
                    f"the parameter adjoints), got {type(value).__name__}; pass adjoint_rtol="
                    f"/adjoint_atol= explicitly when rtol/atol are tensors")
        _tolerances(adjoint_rtol, adjoint_atol, layout)
        record = bool(opts.get("record_steps"))
        stats = SolverStats(accepted_ts=[] if record else None,
                            rejected_ts=[] if record else None)
        forward_norm = (options or {}).get("norm", mixed_norm)
        return cls(rtol=adjoint_rtol, atol=adjoint_atol, method=adjoint_method, options=opts,
                   norm_kind=norm_kind, forward_norm=forward_norm, t_grad=t_grad, stats=stats)

    def norm(self, layout: StateLayout) -> Callable | None:
        """The error norm of the backward state ``(y, a_y, [a_t,] *a_theta)``."""
        kind, forward_norm, t_grad = self.norm_kind, self.forward_norm, self.t_grad
        if callable(kind):
            return kind

        def norm(x: tuple[Tensor, ...]) -> Tensor:
            parts = [forward_norm(layout.unflatten(x[0])), forward_norm(layout.unflatten(x[1]))]
            rest = x[2:]
            if t_grad:
                if kind != "state_seminorm":
                    parts.append(rest[0].abs())
                rest = rest[1:]
            if kind == "default":
                parts.extend(rms_norm(p) for p in rest)
            return torch.stack(parts).max()

        return norm

    def solve_options(self, layout: StateLayout, t_from: float, t_to: float) -> dict[str, Any]:
        opts = dict(self.options)
        if "grid_points" in opts:  # the user's grid runs forward; the backward solve reverses
            grid = [float(x) for x in torch.as_tensor(opts["grid_points"]).tolist()]
            ascending = grid[-1] > grid[0]
            if ascending != (t_to > t_from):
                grid = grid[::-1]
            opts["grid_points"] = grid
        norm = self.norm(layout)
        if norm is not None and not any(k in opts for k in ("step_size", "num_steps",
                                                           "grid_points")) \
                and get_method(self.method).adaptive:
            opts["norm"] = norm
        return opts


class _AdjointFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, func, layout, forward_kwargs, backward, result, t, y0_flat, *params):
        with torch.no_grad():
            sol = solve(func, layout.unflatten(y0_flat), t, **forward_kwargs)
        result.stats = sol.stats
        ys_flat = _flatten_leading(sol.ys, layout)
        ctx.func, ctx.layout, ctx.backward_cfg = func, layout, backward
        ctx.save_for_backward(t, ys_flat, *params)
        return ys_flat

    @staticmethod
    def backward(ctx, grad_ys):
        t, ys, *params = ctx.saved_tensors
        func, layout, cfg = ctx.func, ctx.layout, ctx.backward_cfg
        t_grad = ctx.needs_input_grad[5]
        times = t.detach().to("cpu", torch.float64).tolist()
        params = tuple(params)

        def flat_f(tt: Tensor, y: Tensor) -> Tensor:
            return layout.flatten(func(tt, layout.unflatten(y)))

        def dynamics(tt: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
            y, a = state[0], state[1]
            with torch.enable_grad():
                y = y.detach().requires_grad_(True)
                tt = tt.detach().requires_grad_(t_grad)
                fy = flat_f(tt, y)
                inputs = (y, tt, *params) if t_grad else (y, *params)
                grads = torch.autograd.grad(fy, inputs, -a, allow_unused=True)
            grads = [torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs)]
            return (fy.detach(), *grads)

        a_t = torch.zeros((), dtype=ys.dtype, device=ys.device)
        state = [ys[-1], grad_ys[-1], *([a_t] if t_grad else []),
                 *(torch.zeros_like(p) for p in params)]
        time_vjps = torch.zeros(len(times), dtype=ys.dtype, device=ys.device) if t_grad else None
        stats = cfg.stats
        for i in range(len(times) - 1, 0, -1):
            if t_grad:  # dL/dt_i through the output at t_i
                with torch.no_grad():
                    tt = torch.full((), times[i], dtype=ys.dtype, device=ys.device)
                    d = torch.dot(flat_f(tt, ys[i].detach()).reshape(-1), grad_ys[i].reshape(-1))
                stats.nfe += 1
                time_vjps[i] = d
                state[2] = state[2] - d
            sol = solve(dynamics, tuple(state), [times[i], times[i - 1]], rtol=cfg.rtol,
                        atol=cfg.atol, method=cfg.method,
                        options=cfg.solve_options(layout, times[i], times[i - 1]))
            _accumulate(stats, sol.stats)
            state = [m[-1] for m in sol.ys]
            state[0] = ys[i - 1]
            state[1] = state[1] + grad_ys[i - 1]
        if t_grad:
            time_vjps[0] = state[2]
        grad_params = state[3:] if t_grad else state[2:]
        grad_t = time_vjps.to(t.dtype) if t_grad else None
        return (None, None, None, None, None, grad_t, state[1], *grad_params)


def _flatten_leading(ys: State, layout: StateLayout) -> Tensor:
    """``[T, *shape]`` (or a tuple of them) -> ``[T, n]`` for a tuple, unchanged otherwise."""
    if not layout.is_tuple:
        return ys
    return torch.cat([m.reshape(m.shape[0], -1) for m in ys], dim=1)


def _accumulate(total: SolverStats, part: SolverStats) -> None:
    total.nfe += part.nfe
    total.accepted += part.accepted
    total.rejected += part.rejected
    if total.accepted_ts is not None and part.accepted_ts is not None:
        total.accepted_ts.extend(part.accepted_ts)
        total.rejected_ts.extend(part.rejected_ts or [])
