"""``odeint_event``: integrate until an event, with a differentiable event time.

It sits above both ``hyperode.odeint`` and ``hyperode.odeint_adjoint`` (either can be
its ``odeint_interface``); the event detection itself is in
``hyperode.solvers.events``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import torch
from torch import Tensor

from .adjoint import odeint_adjoint
from .odeint import check_bool, check_func, odeint, real_state_layout
from .solvers.problem import State, StateLayout, VectorField


def odeint_event(
    func: Callable[[Tensor, State], State],
    y0: State,
    t0: Tensor | float,
    *,
    event_fn: Callable[[Tensor, State], Tensor],
    reverse_time: bool = False,
    odeint_interface: Callable[..., Any] = odeint,
    event_per_sample: bool = False,
    **kwargs: Any,
) -> tuple[Tensor, State]:
    """Solve from ``t0`` until ``event_fn(t, y)`` crosses zero; the event time is differentiable.

    torchdiffeq's ``odeint_event``: returns ``(event_t, solution)`` with ``solution``
    ``[2, *y0.shape]`` (a tuple of such for a tuple ``y0``): ``y0`` and the state at
    the event. The solve runs forward in time (backward with ``reverse_time=True``)
    with ``odeint_interface`` (``hyperode.odeint`` or ``hyperode.odeint_adjoint``),
    which receives ``func``, ``y0``, ``t = [t0, t0 ± 1]`` (the second time only gives
    the direction), ``event_fn`` and ``**kwargs`` (``rtol``, ``atol``, ``method``,
    ``options``, the adjoint's settings). ``t0`` is a tensor with one element (0-dim or
    ``[1]``) and may require grad.

    Event modes (see ``hyperode.solvers.events``): by default the solve stops at the
    first zero of any element of ``event_fn``'s output (a batch stops at the first event
    of any sample) and ``event_t`` is 0-dim. With ``event_per_sample=True`` the state is
    one tensor ``[B, ...]``, ``event_fn`` returns ``[B]``, ``event_t`` is ``[B]`` and
    ``solution[-1][b]`` is sample ``b`` at its own ``event_t[b]``; this works through
    ``hyperode.odeint`` only (the adjoint refuses per-sample events). An event is seen
    as a sign change of ``event_fn`` between the ends of an accepted step and located on
    the step's dense output; a trajectory that crosses and re-crosses zero within one
    step is not seen (as in torchdiffeq): bound the step with ``options['max_step']``
    (or a smaller ``step_size``) when that can happen.

    Gradients (the implicit function theorem). Let ``y(t; ξ)`` be the solution, ``ξ``
    standing for ``y0``, ``t0`` and ``func``'s parameters, and ``g(t, y; φ)`` the event
    function, ``φ`` the tensors it closes over. The event time ``t*(ξ, φ)`` is defined by

        g(t*, y(t*; ξ); φ) = 0.

    Differentiating this identity, with ``y* = y(t*; ξ)`` and ``f* = func(t*, y*)``::

        0 = (∂g/∂t + ∂g/∂y · f*) dt* + ∂g/∂y · (∂y(t*)/∂ξ) dξ + ∂g/∂φ dφ

        dt* = -(∂g/∂y · (∂y(t*)/∂ξ) dξ + ∂g/∂φ dφ) / D,    D = ∂g/∂t + ∂g/∂y · f*

    (``D`` is the rate at which ``g`` changes along the trajectory; the event time is
    differentiable where the crossing is transversal, ``D != 0``, and the gradient is
    non-finite at a tangential one). The returned state ``Y = y(t*(ξ, φ); ξ)`` moves by
    ``dY = (∂y(t*)/∂ξ) dξ + f* dt*``. For a loss ``L(t*, Y)`` with incoming gradients
    ``t̄ = ∂L/∂t*`` and ``Ȳ = ∂L/∂Y``::

        dL = t̄ dt* + Ȳ · dY = Ȳ · (∂y(t*)/∂ξ) dξ + (t̄ + Ȳ · f*) dt*
           = (Ȳ - λ ∂g/∂y) · (∂y(t*)/∂ξ) dξ - λ ∂g/∂φ dφ,      λ = (t̄ + Ȳ · f*) / D.

    So the backward pass (``_EventGradient``) hands ``Ȳ - λ ∂g/∂y`` to the solver's
    state at the fixed time ``t*``, which the solve differentiates with respect to
    ``y0``, ``func``'s parameters and ``t0`` (``∂y(t*)/∂t0 = -(∂y(t*)/∂y0) f(t0, y0)``)
    by backpropagation or by the adjoint, and ``-λ`` to the value of ``g`` evaluated with
    its closed-over tensors only, which gives them ``-λ ∂g/∂φ``. ``g`` is the element
    of ``event_fn``'s output that crossed zero; per sample, sample ``b`` uses its own
    ``g_b``, its own row of ``Y`` and its own time (``λ_b``, ``D_b`` with ``f`` at
    ``t*_b``), which assumes (as per-sample events do) that sample ``b``'s rows of
    ``func`` and ``event_fn`` depend only on sample ``b``. The backward costs one
    ``func`` and one ``event_fn`` evaluation (with its gradient) per distinct event
    time; the forward one ``event_fn`` evaluation per distinct event time when
    ``event_fn`` closes over tensors that require grad (plus one at ``t0`` when its
    output has several elements, for their initial signs).
    """
    check_func(func)
    if not callable(event_fn):
        raise ValueError(f"event_fn must be callable as event_fn(t, y), got {event_fn!r}")
    if not callable(odeint_interface):
        raise ValueError(f"odeint_interface must be callable like hyperode.odeint, got "
                         f"{odeint_interface!r}")
    check_bool("reverse_time", reverse_time)
    check_bool("event_per_sample", event_per_sample)
    layout = real_state_layout(y0, "odeint_event differentiates the event time of real "
                               "states only", "split y0 into real and imaginary parts")
    if event_per_sample:
        if odeint_interface is odeint_adjoint:
            raise ValueError("event_per_sample=True works through hyperode.odeint only: "
                             "odeint_adjoint does not support per-sample events")
        kwargs["event_per_sample"] = True
    t_start = _event_t0(t0)
    t = torch.cat([t_start, t_start.detach() + (-1.0 if reverse_time else 1.0)])
    event_t, solution = odeint_interface(func, y0, t, event_fn=event_fn, **kwargs)

    members = solution if layout.is_tuple else (solution,)
    y_event = layout.flatten(tuple(m[-1] for m in members)) if layout.is_tuple else solution[-1]
    if not torch.is_grad_enabled():
        return event_t, solution
    rule = _EventRule(func, event_fn, layout, event_t, per_sample=event_per_sample)
    rule.select(t_start.detach(), y0, y_event)
    g_direct = rule.direct(y_event)
    if not y_event.requires_grad and g_direct is None:
        return event_t, solution
    event_t_out, y_out = _EventGradient.apply(rule, event_t.detach(), y_event, g_direct)
    last = layout.unflatten(y_out)
    last = cast(tuple[Tensor, ...], last if layout.is_tuple else (last,))
    rebuilt = tuple(torch.cat([m[:-1], s[None]]) for m, s in zip(members, last))
    return event_t_out, rebuilt if layout.is_tuple else rebuilt[0]


def _event_t0(t0: Any) -> Tensor:
    """``t0`` as a 1-element, 1-D floating tensor (keeping its graph)."""
    if not isinstance(t0, Tensor):
        try:
            t0 = torch.as_tensor(t0, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError) as e:
            raise ValueError(f"t0 must be a tensor with one element (0-dim or [1]), "
                             f"got {t0!r}") from e
    if t0.numel() != 1:
        raise ValueError(f"t0 must be a tensor with one element (0-dim or [1]), got shape "
                         f"{tuple(t0.shape)}")
    if t0.is_complex():
        raise ValueError(f"t0 must be real, got dtype {t0.dtype}")
    return (t0 if t0.is_floating_point() else t0.to(torch.float64)).reshape(1)


class _EventRule:
    """What ``_EventGradient`` needs: which element of ``event_fn``'s output is the
    event's ``g``, at which time and on which rows of the flat state (one entry per
    event: one in the combined mode, one per sample otherwise)."""

    def __init__(self, func: Callable, event_fn: Callable, layout: StateLayout,
                 event_t: Tensor, *, per_sample: bool):
        self.func, self.event_fn, self.layout = func, event_fn, layout
        self.per_sample = per_sample
        times = event_t.detach().to("cpu", torch.float64).reshape(-1).tolist()
        self.times: list[float] = times
        self.elements: list[int] = list(range(len(times))) if per_sample else [0]
        # Entries sharing a time share the evaluations of func and event_fn.
        self.groups: dict[float, list[int]] = {}
        for e, tau in enumerate(times):
            self.groups.setdefault(tau, []).append(e)

    def t(self, tau: float, requires_grad: bool = False) -> Tensor:
        layout = self.layout
        return torch.tensor(tau, dtype=layout.time_dtype, device=layout.device,
                            requires_grad=requires_grad)

    def g(self, t: Tensor, y_flat: Tensor) -> Tensor:
        return self.event_fn(t, self.layout.unflatten(y_flat)).reshape(-1)

    def select(self, t0: Tensor, y0: State, y_event: Tensor) -> None:
        """Combined mode: the element whose sign-normalised value (positive at ``t0``)
        is the smallest at the event, i.e. the one that crossed zero."""
        if self.per_sample:
            return
        with torch.no_grad():
            at_event = self.g(self.t(self.times[0]), y_event.detach())
            if at_event.numel() > 1:
                signs = torch.sign(self.event_fn(t0.to(self.layout.time_dtype).reshape(()),
                                                 y0).reshape(-1))
                self.elements = [int(torch.argmin(at_event * signs))]

    def direct(self, y_event: Tensor) -> Tensor | None:
        """``g`` at the event with the state held constant: its graph reaches only the
        tensors ``event_fn`` closes over (``None`` when none requires grad)."""
        y = y_event.detach()
        values = []
        for tau, entries in self.groups.items():
            out = self.g(self.t(tau), y)
            if not out.requires_grad:
                return None
            values.extend((e, out[self.elements[e]]) for e in entries)
        values.sort(key=lambda pair: pair[0])
        out = torch.stack([v for _, v in values])
        return out if self.per_sample else out.reshape(())

    def rows(self, x: Tensor, e: int) -> Tensor:
        """The part of the flat state that entry ``e``'s event concerns."""
        return x[e] if self.per_sample else x


class _EventGradient(torch.autograd.Function):
    """Identity on ``(event_t, y_event)`` in the forward pass; in the backward pass the
    implicit-function-theorem gradient derived in ``odeint_event``'s docstring."""

    @staticmethod
    def forward(ctx, rule: _EventRule, event_t: Tensor, y_event: Tensor,
                g_direct: Tensor | None) -> tuple[Tensor, Tensor]:
        ctx.rule = rule
        ctx.g_dtype = g_direct.dtype if g_direct is not None else None
        ctx.save_for_backward(y_event)
        return event_t.clone(), y_event.clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_t: Tensor, grad_y: Tensor):
        rule: _EventRule = ctx.rule
        (y,) = ctx.saved_tensors
        layout = rule.layout
        y = y.detach()
        grad_t = grad_t.detach().reshape(-1).to(y.dtype)
        grad_y = grad_y.detach()
        grad_state = grad_y.clone()
        lambdas = torch.zeros(len(rule.times), dtype=y.dtype, device=y.device)
        field = VectorField(rule.func, layout, context=" in odeint_event's backward pass")
        for tau, entries in rule.groups.items():
            with torch.no_grad():
                f = field.at(rule.t(tau), y)
            with torch.enable_grad():
                t_leaf = rule.t(tau, requires_grad=True)
                y_leaf = y.clone().requires_grad_(True)
                out = rule.g(t_leaf, y_leaf)
                picked = out[[rule.elements[e] for e in entries]]
                # Summed over the entries of a group: with per-sample rows independent,
                # row b of dg/dy is sample b's own.
                dg_dt = dg_dy = None
                if picked.requires_grad:
                    dg_dt, dg_dy = torch.autograd.grad(picked.sum(), (t_leaf, y_leaf),
                                                       retain_graph=len(entries) > 1,
                                                       allow_unused=True)
                if dg_dy is None:
                    dg_dy = torch.zeros_like(y)
                dts = [0.0] * len(entries)
                if dg_dt is not None:
                    if len(entries) == 1:
                        dts = [dg_dt]
                    else:  # the time derivative of each entry separately
                        dts = [torch.autograd.grad(picked[i], t_leaf, retain_graph=True)[0]
                               for i in range(len(entries))]
            for i, e in enumerate(entries):
                dg_dy_e, f_e = rule.rows(dg_dy, e), rule.rows(f, e)
                rate = dts[i] + torch.sum(dg_dy_e * f_e)  # D = dg/dt along the trajectory
                lam = (grad_t[e] + torch.sum(rule.rows(grad_y, e) * f_e)) / rate
                lambdas[e] = lam
                if rule.per_sample:
                    grad_state[e] -= lam * dg_dy_e
                else:
                    grad_state -= lam * dg_dy_e
        g_grad = None
        if ctx.needs_input_grad[3]:
            g_grad = (-lambdas if rule.per_sample else -lambdas.reshape(())).to(ctx.g_dtype)
        return None, None, grad_state, g_grad
