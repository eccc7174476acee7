"""The interpolated adjoint: a backward solve of the adjoint alone, reading the forward
trajectory from an interpolant of the forward solve's own steps.

torchdyn's ``sensitivity="interpolated_adjoint"`` (``torchdyn/numerics/sensitivity.py``,
``_gather_odefunc_interp_adjoint``) keeps every accepted step of the forward solve and
fits a cubic spline through them; the backward pass then integrates only the adjoint
``a`` and the parameter adjoints ``mu`` (not ``x`` backwards in time, as the backsolve
adjoint does), which avoids re-integrating an unstable backward ``x`` at the price of
memory proportional to the number of forward steps::

    da/dt  = -a^T df/dx (t, x(t)),      a(t_N) = dL/dx(t_N)
    dmu/dt = -a^T df/dtheta (t, x(t)),  mu(t_N) = 0
    dL/dx0 = a(t_0),  dL/dtheta = mu(t_0)          (Pontryagin; Chen et al. 2018, eq. 4-5)

with ``a`` jumping by ``dL/dx(t_i)`` at every output time. Here ``x(t)`` between the
forward solve's accepted steps is the cubic Hermite interpolant through the step ends
and ``f`` there (one extra evaluation of ``f`` per step, at the start of the backward
pass). Everything runs on hyperode's public entry point ``hyperode.solve`` with step
callbacks recording the accepted steps.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..odeint import solve
from ..solvers import SolverStats, member_norm


class HermiteTrajectory:
    """``x(t)`` from states ``ys[k]`` and derivatives ``fs[k]`` at times ``ts[k]``.

    Shapes: ``ts`` ``[K]`` (float64, strictly monotone, K >= 2), ``ys`` and ``fs``
    ``[K, *x.shape]``. Between two knots the cubic Hermite interpolant (4th-order
    accurate in the step for a smooth solution); outside the knots the end segment's
    cubic is extended (only roundoff in ``t`` reaches there).
    """

    def __init__(self, ts: Tensor, ys: Tensor, fs: Tensor):
        order = torch.argsort(ts)
        self.ts = ts[order]
        self.ts_list = self.ts.tolist()
        self.ys, self.fs = ys[order], fs[order]

    def __call__(self, t: float) -> Tensor:
        k = bisect.bisect_left(self.ts_list, t)  # host-side: no device sync per call
        k = min(max(k, 1), len(self.ts_list) - 1)
        t0, t1 = self.ts_list[k - 1], self.ts_list[k]
        h = t1 - t0
        s = (t - t0) / h
        h00 = (1 + 2 * s) * (1 - s) ** 2
        h10 = s * (1 - s) ** 2
        h01 = s * s * (3 - 2 * s)
        h11 = s * s * (s - 1)
        return (h00 * self.ys[k - 1] + (h10 * h) * self.fs[k - 1]
                + h01 * self.ys[k] + (h11 * h) * self.fs[k])


class _StepRecorder:
    """``func`` as the solver sees it, recording the start of every accepted step.

    An adaptive solve calls ``callback_accept_step`` (after a step is accepted, with its
    start); a fixed-grid solve calls ``callback_step`` before each step (all accepted).
    Only the one the solve calls is set, so hyperode warns about nothing.
    """

    def __init__(self, func: Callable, adaptive: bool):
        self.func = func
        self.ts: list[float] = []
        self.ys: list[Tensor] = []
        setattr(self, "callback_accept_step" if adaptive else "callback_step", self._record)

    def __call__(self, t: Tensor, x: Tensor) -> Tensor:
        return self.func(t, x)

    def _record(self, t0: Tensor, y0: Tensor, dt: Tensor) -> None:
        self.ts.append(float(t0))
        self.ys.append(y0.detach().clone())


@dataclass
class InterpolatedAdjoint:
    """One configured interpolated-adjoint solve (see the module).

    Args:
        func: ``f(t, x)`` for a tensor state ``x`` (any shape); an ``nn.Module`` or a
            callable.
        params: the tensors to differentiate (``dL/dtheta``), each requiring grad.
        forward: keyword arguments of the forward ``hyperode.solve`` (``method``,
            ``rtol``, ``atol``, ``options``); ``method`` must be hyperode-integrated
            (not ``scipy_solver``).
        backward: the same for each interval of the backward solve.
        adaptive: whether the forward method is adaptive (selects the step callback).
        seminorm: judge the backward error on ``a`` alone (the parameter adjoints are
            pure integrals), as torchdyn's backsolve seminorm does.
    """

    func: Callable
    params: tuple[Tensor, ...]
    forward: dict[str, Any]
    backward: dict[str, Any]
    adaptive: bool
    backward_adaptive: bool
    seminorm: bool = False
    stats: SolverStats = field(default_factory=SolverStats)
    backward_stats: SolverStats = field(default_factory=SolverStats)

    def __call__(self, x0: Tensor, t: Tensor) -> Tensor:
        """The trajectory ``[len(t), *x0.shape]``, differentiable in ``x0``, ``t`` and
        ``params`` through the interpolated adjoint."""
        if not isinstance(x0, Tensor) or x0.is_complex():
            what = type(x0).__name__ if not isinstance(x0, Tensor) else f"{x0.dtype} tensor"
            raise ValueError("NeuralODE: sensitivity='interpolated_adjoint' integrates one "
                             f"real tensor state, got a {what}")
        if not torch.is_grad_enabled():  # sampling: no knots to keep
            sol = solve(self.func, x0, t, **self.forward)
            self.stats, self.backward_stats = sol.stats, SolverStats()
            return sol.ys
        return _InterpolatedAdjointFunction.apply(self, t, x0, *self.params)

    # ------------------------------------------------------------------ passes

    def solve_forward(self, x0: Tensor, t: Tensor) -> tuple[Tensor, _Knots | None]:
        recorder = _StepRecorder(self.func, self.adaptive)
        sol = solve(recorder, x0, t, **self.forward)
        self.stats = sol.stats
        self.backward_stats = SolverStats()
        if len(t) < 2:
            return sol.ys, None
        ts = [*recorder.ts, float(t[-1])]
        ys = torch.stack([*recorder.ys, sol.ys[-1]])
        return sol.ys, _Knots(torch.tensor(ts, dtype=torch.float64, device=x0.device), ys)

    def solve_backward(self, knots: _Knots, ys: Tensor, t: Tensor, grad_ys: Tensor,
                       t_grad: bool) -> tuple[Tensor | None, Tensor, list[Tensor]]:
        with torch.no_grad():
            fs = torch.stack([self.func(_time(tk, ys), yk)
                              for tk, yk in zip(knots.ts.tolist(), knots.ys)])
        self.backward_stats.nfe += len(fs)
        trajectory = HermiteTrajectory(knots.ts, knots.ys, fs)
        dynamics = _AdjointDynamics(self.func, self.params, trajectory)
        kwargs = dict(self.backward)
        if self.seminorm and self.backward_adaptive:
            kwargs["options"] = {**(kwargs.get("options") or {}), "norm": member_norm([0])}
        a = grad_ys[-1].clone()
        mus = [torch.zeros_like(p) for p in self.params]
        t_list = t.detach().tolist()
        for i in range(len(t_list) - 1, 0, -1):
            span = torch.tensor([t_list[i], t_list[i - 1]], dtype=torch.float64)
            sol = solve(dynamics, (a, *mus), span, **kwargs)
            self.backward_stats.add(sol.stats)
            a, *mus = (y[-1] for y in sol.ys)
            if i > 1:
                a = a + grad_ys[i - 1]
        grad_t = None
        if t_grad:  # dL/dt_i = <dL/dy_i, f(t_i, y_i)>; dL/dt_0 = -<a(t_0), f(t_0, y_0)>
            with torch.no_grad():
                f_out = [self.func(_time(ti, ys), yi) for ti, yi in zip(t_list, ys)]
            self.backward_stats.nfe += len(f_out)
            grad_t = torch.stack([(g * fi).sum() for g, fi in zip(grad_ys, f_out)])
            grad_t[0] = -(a * f_out[0]).sum()
            grad_t = grad_t.to(t.dtype)
        a = a + grad_ys[0] if len(t_list) > 1 else grad_ys[0]
        return grad_t, a, mus


@dataclass
class _Knots:
    ts: Tensor
    ys: Tensor


def _time(t: float, like: Tensor) -> Tensor:
    dtype = like.real.dtype if like.is_complex() else like.dtype
    return torch.tensor(t, dtype=dtype, device=like.device)


class _AdjointDynamics:
    """``(a, *mu) -> (-a^T df/dx, *(-a^T df/dtheta))`` at ``x = trajectory(t)``."""

    def __init__(self, func: Callable, params: Sequence[Tensor], trajectory: HermiteTrajectory):
        self.func, self.params, self.trajectory = func, tuple(params), trajectory

    def __call__(self, t: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        a = state[0]
        x = self.trajectory(float(t)).detach().requires_grad_(True)
        with torch.enable_grad():
            fx = self.func(t.detach(), x)
            grads = torch.autograd.grad(fx, (x, *self.params), -a, allow_unused=True)
        return tuple(torch.zeros_like(ref) if g is None else g
                     for g, ref in zip(grads, (x, *self.params)))


class _InterpolatedAdjointFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, run: InterpolatedAdjoint, t: Tensor, x0: Tensor,
                *params: Tensor) -> Tensor:
        ys, knots = run.solve_forward(x0, t)
        ctx.run, ctx.knots = run, knots
        ctx.save_for_backward(t, ys)
        return ys

    @staticmethod
    def backward(ctx: Any, grad_ys: Tensor) -> tuple[Tensor | None, ...]:
        t, ys = ctx.saved_tensors
        run: InterpolatedAdjoint = ctx.run
        if ctx.knots is None:  # one output time: y = x0
            return (None, None, grad_ys[0], *(torch.zeros_like(p) for p in run.params))
        grad_t, grad_x0, mus = run.solve_backward(ctx.knots, ys, t, grad_ys,
                                                  t_grad=ctx.needs_input_grad[1])
        return (None, grad_t, grad_x0, *mus)
