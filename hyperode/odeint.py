"""Public entry points: ``odeint`` (torchdiffeq-compatible) and ``solve`` (-> ``Solution``).

Switching from torchdiffeq is changing the import::

    from hyperode import odeint
    ys = odeint(func, y0, t, rtol=1e-7, atol=1e-9, method="dopri5")   # [len(t), *y0.shape]

This module validates every argument (a bad one raises ``ValueError`` naming it),
turns the state into the solvers' flat tensor, dispatches to the fixed-grid or
adaptive integrator, and attaches gradients with respect to ``t``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .errors import NonFiniteStateError
from .solvers.adaptive import AdaptiveConfig, integrate_adaptive
from .solvers.controllers import CONTROLLERS, IController, PIController
from .solvers.fixed import build_grid, first_nonfinite_step, integrate_fixed
from .solvers.methods import get_method
from .solvers.norms import mixed_norm
from .solvers.problem import State, StateLayout, VectorField
from .solvers.stats import SolverStats
from .solvers.step import FixedStepMethod
from .solvers.tableau import ButcherTableau

DEFAULT_CONTROLLER = "i"
DEFAULT_MAX_NUM_STEPS = 100_000

_FIXED_OPTIONS = {"step_size", "num_steps", "grid_points"}
_ADAPTIVE_OPTIONS = {"norm", "controller", "safety", "ifactor", "dfactor", "first_step",
                     "min_step", "max_step", "step_t", "jump_t"}
_COMMON_OPTIONS = {"max_num_steps", "record_steps"}


@dataclass
class Solution:
    """Result of ``solve``.

    Attributes:
        ts: the requested times, as given (shape ``[T]``).
        ys: states at ``ts``: ``[T, *y0.shape]``, or a tuple of such for a tuple state.
        stats: ``SolverStats`` (nfe, steps, accepted, rejected, optional step times).
    """

    ts: Tensor
    ys: State
    stats: SolverStats


def odeint(
    func: Callable[[Tensor, State], State],
    y0: State,
    t: Tensor | Sequence[float],
    *,
    rtol: float | Tensor | Sequence[float | Tensor] = 1e-7,
    atol: float | Tensor | Sequence[float | Tensor] = 1e-9,
    method: str | ButcherTableau | FixedStepMethod = "dopri5",
    options: dict[str, Any] | None = None,
) -> State:
    """Solve ``dy/dt = func(t, y)``, ``y(t[0]) = y0``; return ``y`` at every ``t``.

    Same signature, semantics and return type as ``torchdiffeq.odeint``; see
    ``solve`` for the arguments and options. Returns ``[len(t), *y0.shape]`` (or a
    tuple of such for a tuple ``y0``).
    """
    return solve(func, y0, t, rtol=rtol, atol=atol, method=method, options=options).ys


def solve(
    func: Callable[[Tensor, State], State],
    y0: State,
    t: Tensor | Sequence[float],
    *,
    rtol: float | Tensor | Sequence[float | Tensor] = 1e-7,
    atol: float | Tensor | Sequence[float | Tensor] = 1e-9,
    method: str | ButcherTableau | FixedStepMethod = "dopri5",
    options: dict[str, Any] | None = None,
) -> Solution:
    """Solve an initial value problem and return a ``Solution`` with statistics.

    Args:
        func: ``f(t, y)`` returning ``dy/dt`` with ``y``'s structure, shape and dtype;
            ``t`` arrives as a 0-dim tensor in the state's dtype.
        y0: initial state, a floating tensor of any shape or a tuple of them (same
            dtype and device).
        t: output times, 1-D and strictly increasing or strictly decreasing;
            ``t[0]`` is the initial time. Time is handled in float64.
        rtol, atol: tolerances of adaptive methods, floats >= 0 or tensors
            broadcastable to the state (for a tuple state, one per member).
        method: a name (``hyperode.METHODS``), a ``ButcherTableau``, or any other
            fixed-step method object (``hyperode.solvers.step.FixedStepMethod``), e.g. a
            ``hyperode.hyper.HyperSolver``: such a method needs a grid option and
            counts its corrections in ``stats.nfe_correction``.
        options: fixed-grid — ``step_size``, ``num_steps`` (equal steps over the
            span) or ``grid_points``; a method without an error estimate needs one of
            them, and an adaptive method given one runs on that grid. Adaptive —
            ``norm`` (callable on the scaled error in the state's structure),
            ``controller`` (``"pi"``, ``"i"`` or a controller object), ``safety``,
            ``ifactor``, ``dfactor``, ``first_step``, ``min_step``, ``max_step``,
            ``step_t`` (times to step onto), ``jump_t`` (discontinuities: stepped onto
            and ``f`` re-evaluated on their far side). Both — ``max_num_steps``
            (default 100000 attempted steps) and ``record_steps`` (keep accepted and
            rejected step times in ``stats``).

    Gradients flow to ``y0``, the parameters of ``func`` (backpropagation through the
    solver) and, when ``t`` requires grad, to ``t`` through the exact relations
    ``dy(t_i)/dt_i = f(t_i, y(t_i))`` and ``dy(t_i)/dt_0 = -(dy(t_i)/dy_0) f(t_0, y_0)``
    (this costs one extra evaluation of ``f`` per output time).
    """
    tableau = get_method(method)
    _check_y0(y0)
    layout = StateLayout(y0)
    t_tensor, t_list = _check_t(t)
    opts = _check_options(options, tableau)
    f = VectorField(func, layout)
    stats = SolverStats()
    if opts.get("record_steps"):
        stats.accepted_ts, stats.rejected_ts = [], []
    max_num_steps = opts.get("max_num_steps", DEFAULT_MAX_NUM_STEPS)
    y0_flat = layout.flatten(y0)

    t_grad = t_tensor.requires_grad and torch.is_grad_enabled()
    y_start = y0_flat
    if t_grad:  # y(t_i) moves by -(dy_i/dy_0) f0 dt_0: route that through y0
        with torch.no_grad():
            f0 = f(t_list[0], y0_flat)
        y_start = y0_flat - _tangent(t_tensor[0], layout.dtype) * f0

    rtol_v, atol_v = _tolerances(rtol, atol, layout)  # validated even where a grid ignores them
    fixed = not tableau.adaptive or any(k in opts for k in _FIXED_OPTIONS)
    if fixed:
        if "grid_points" in opts:
            _check_grid_covers(opts["grid_points"], t_list)
        grid, out_index = build_grid(
            t_list, step_size=opts.get("step_size"), num_steps=opts.get("num_steps"),
            grid_points=opts.get("grid_points"),
        )
        ys = integrate_fixed(f, tableau, y_start, grid, out_index, stats,
                             max_num_steps=max_num_steps,
                             record_steps=bool(opts.get("record_steps")))
    else:
        cfg = _adaptive_config(opts, rtol_v, atol_v, layout, max_num_steps)
        ys = integrate_adaptive(f, tableau, y_start, t_list, cfg, stats)
    ys[0] = y0_flat

    if t_grad:  # dy(t_i)/dt_i = f(t_i, y_i)
        with torch.no_grad():
            slopes = [f(t_list[i], ys[i]) for i in range(1, len(ys))]
        for i, slope in enumerate(slopes, start=1):
            ys[i] = ys[i] + _tangent(t_tensor[i], layout.dtype) * slope

    out = torch.stack(ys)
    _check_finite(out, t_list, f, tableau, grid if fixed else None, ys)
    stats.nfe = f.nfe
    return Solution(ts=t if isinstance(t, Tensor) else t_tensor, ys=layout.unflatten(out),
                    stats=stats)


def _tangent(t_i: Tensor, dtype: torch.dtype) -> Tensor:
    """``t_i - stop_grad(t_i)``: zero in value, identity in gradient."""
    return (t_i - t_i.detach()).to(dtype)


# --------------------------------------------------------------------------- checks


def _check_y0(y0: Any) -> None:
    members = y0 if isinstance(y0, tuple) else (y0,)
    if isinstance(y0, tuple) and not y0:
        raise ValueError("y0 is an empty tuple; give a tensor or a tuple of tensors")
    for i, m in enumerate(members):
        name = f"y0[{i}]" if isinstance(y0, tuple) else "y0"
        if not isinstance(m, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor (or y0 a tuple of them), "
                             f"got {type(m).__name__}")
        if not m.is_floating_point():
            raise ValueError(f"{name} must have a floating dtype, got {m.dtype}")
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


def _check_t(t: Any) -> tuple[Tensor, list[float]]:
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


def _positive_number(name: str, value: Any, *, allow_zero: bool = False,
                     allow_inf: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        value = float(value)
        ok = (value >= 0 if allow_zero else value > 0) and (allow_inf or math.isfinite(value))
        ok = ok and not math.isnan(value)
    if not ok:
        need = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"options['{name}'] must be a finite number {need}, got {value!r}")
    return float(value)


def _check_options(options: Any, tableau: ButcherTableau | FixedStepMethod) -> dict[str, Any]:
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise ValueError(f"options must be a dict or None, got {type(options).__name__}")
    known = _FIXED_OPTIONS | _ADAPTIVE_OPTIONS | _COMMON_OPTIONS
    for key in options:
        if key not in known:
            hint = (" (fixed grids land on every output time and adaptive solves use the "
                    "method's dense output, so no interpolation option is needed)"
                    if key in {"interp", "perturb"} else "")
            raise ValueError(f"unknown option {key!r}{hint}; known options: "
                             f"{', '.join(sorted(known))}")
    opts = dict(options)
    fixed_keys = [k for k in _FIXED_OPTIONS if k in opts]
    if len(fixed_keys) > 1:
        raise ValueError(f"give only one of step_size, num_steps, grid_points; got {fixed_keys}")
    if not tableau.adaptive and not fixed_keys:
        kind = ("is fixed-step (no error estimate)" if isinstance(tableau, ButcherTableau)
                else "runs on a fixed grid only (no error estimate, no step-size control)")
        stray = sorted(k for k in _ADAPTIVE_OPTIONS if k in opts)
        extra = f"; adaptive options {stray} do not apply to it" if stray else ""
        raise ValueError(
            f"method {tableau.name!r} {kind}: pass options=dict(step_size=h), "
            f"dict(num_steps=n) or dict(grid_points=...){extra}"
        )
    if fixed_keys:
        stray = sorted(k for k in _ADAPTIVE_OPTIONS if k in opts)
        if stray:
            raise ValueError(f"options {stray} apply only to adaptive solves, but "
                             f"{fixed_keys[0]} makes this a fixed-grid solve")
    if "step_size" in opts:
        opts["step_size"] = _positive_number("step_size", opts["step_size"])
    if "num_steps" in opts:
        n = opts["num_steps"]
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"options['num_steps'] must be an int >= 1, got {n!r}")
    if "grid_points" in opts:
        opts["grid_points"] = _check_times("grid_points", opts["grid_points"])
    if "max_num_steps" in opts:
        n = opts["max_num_steps"]
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"options['max_num_steps'] must be an int >= 1, got {n!r}")
    for key in ("step_t", "jump_t"):
        if key in opts:
            opts[key] = _check_times(key, opts[key], monotonic=False)
    return opts


def _check_times(name: str, value: Any, *, monotonic: bool = True) -> list[float]:
    try:
        values = torch.as_tensor(value, dtype=torch.float64).detach().cpu()
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"options['{name}'] must be a 1-D sequence of times, got {value!r}") \
            from e
    if values.ndim != 1:
        raise ValueError(f"options['{name}'] must be 1-D, got shape {tuple(values.shape)}")
    values = values.tolist()
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"options['{name}'] must be finite, got {values}")
    if monotonic:
        if len(values) < 2:
            raise ValueError(f"options['{name}'] needs at least two times, got {values}")
        d = 1.0 if values[1] > values[0] else -1.0
        if any(d * (b - a) <= 0 for a, b in itertools.pairwise(values)):
            raise ValueError(f"options['{name}'] must be strictly monotonic, got {values}")
    return values


def _check_grid_covers(grid: list[float], t_list: list[float]) -> None:
    d = 1.0 if t_list[-1] >= t_list[0] else -1.0
    gd = 1.0 if grid[-1] > grid[0] else -1.0
    if len(t_list) > 1 and gd != d:
        raise ValueError("options['grid_points'] must run in the same direction as t")
    if d * (grid[0] - t_list[0]) > 0 or d * (grid[-1] - t_list[-1]) < 0:
        raise ValueError(f"options['grid_points'] must cover [t[0], t[-1]] = "
                         f"[{t_list[0]!r}, {t_list[-1]!r}], got [{grid[0]!r}, {grid[-1]!r}]")


def _tolerance(name: str, value: Any, layout: StateLayout) -> float | Tensor:
    """A float, or a flat tensor matching the solver's flat state."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        return float(value)
    if layout.is_tuple and isinstance(value, (tuple, list)):
        if len(value) != len(layout.shapes):
            raise ValueError(f"{name} has {len(value)} entries but y0 has "
                             f"{len(layout.shapes)} members")
        parts = [_tolerance_tensor(f"{name}[{i}]", v, s, layout)
                 for i, (v, s) in enumerate(zip(value, layout.shapes))]
        return torch.cat([p.reshape(-1) for p in parts])
    if isinstance(value, Tensor):
        if layout.is_tuple:
            raise ValueError(f"{name}: for a tuple state give a float or a tuple with one "
                             f"float/tensor per member, got a tensor of shape "
                             f"{tuple(value.shape)}")
        return _tolerance_tensor(name, value, layout.shapes[0], layout)
    raise ValueError(f"{name} must be a float >= 0 or a tensor of them, got {value!r}")


def _tolerance_tensor(name: str, value: Any, shape: torch.Size, layout: StateLayout) -> Tensor:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = torch.tensor(float(value))
    if not isinstance(value, Tensor):
        raise ValueError(f"{name} must be a float or a tensor, got {type(value).__name__}")
    value = value.detach().to(layout.device, layout.dtype)
    if not bool(torch.isfinite(value).all()) or bool((value < 0).any()):
        raise ValueError(f"{name} must be finite and >= 0 everywhere")
    try:
        return torch.broadcast_to(value, shape).contiguous()
    except RuntimeError as e:
        raise ValueError(f"{name} has shape {tuple(value.shape)}, which does not broadcast to "
                         f"the state's shape {tuple(shape)}") from e


def _tolerances(rtol: Any, atol: Any, layout: StateLayout) -> tuple[float | Tensor,
                                                                     float | Tensor]:
    rtol_v, atol_v = _tolerance("rtol", rtol, layout), _tolerance("atol", atol, layout)
    both_zero = (torch.as_tensor(rtol_v) + torch.as_tensor(atol_v)) == 0
    if bool(both_zero.any()):
        where = "" if both_zero.ndim == 0 else \
            f" at flat state index {int(both_zero.reshape(-1).nonzero()[0])}"
        raise ValueError(f"rtol and atol are both 0{where}; the error there could never be "
                         f"judged: at least one of them must be > 0 for every element")
    return rtol_v, atol_v


def _adaptive_config(opts: dict[str, Any], rtol_v: float | Tensor, atol_v: float | Tensor,
                     layout: StateLayout, max_num_steps: int) -> AdaptiveConfig:

    norm = opts.get("norm", mixed_norm)
    if not callable(norm):
        raise ValueError(f"options['norm'] must be callable, got {norm!r}")
    flat_norm = (lambda e: norm(layout.unflatten(e))) if layout.is_tuple else norm

    controller = opts.get("controller", DEFAULT_CONTROLLER)
    factors = {k: opts[k] for k in ("safety", "ifactor", "dfactor") if k in opts}
    if isinstance(controller, str):
        if controller not in CONTROLLERS:
            raise ValueError(f"options['controller'] = {controller!r} is unknown; use one of "
                             f"{sorted(CONTROLLERS)} or a controller object")
        controller = CONTROLLERS[controller](**factors)
    elif isinstance(controller, (IController, PIController)):
        if factors:
            raise ValueError(f"options {sorted(factors)} conflict with the controller object "
                             f"given; set them on the controller instead")
    else:
        raise ValueError(f"options['controller'] must be 'pi', 'i' or a controller object, "
                         f"got {controller!r}")

    first_step = opts.get("first_step")
    if first_step is not None:
        first_step = _positive_number("first_step", first_step)
    min_step = _positive_number("min_step", opts.get("min_step", 0.0), allow_zero=True)
    max_step = _positive_number("max_step", opts.get("max_step", math.inf), allow_inf=True)
    if min_step > max_step:
        raise ValueError(f"options['min_step'] = {min_step!r} exceeds max_step = {max_step!r}")
    return AdaptiveConfig(
        rtol=rtol_v, atol=atol_v, norm=flat_norm, controller=controller,
        first_step=first_step, min_step=min_step, max_step=max_step,
        max_num_steps=max_num_steps, step_t=opts.get("step_t", ()),
        jump_t=opts.get("jump_t", ()), record_steps=bool(opts.get("record_steps")),
    )


def _check_finite(out: Tensor, t_list: list[float], f: VectorField,
                  tableau: ButcherTableau | FixedStepMethod, grid: list[float] | None,
                  ys: list[Tensor]) -> None:
    """One host sync for the whole solve; on failure, name the first bad time."""
    if bool(torch.isfinite(out.detach()).all()):
        return
    per_output = torch.isfinite(out.detach().reshape(len(t_list), -1)).all(dim=1).tolist()
    i = per_output.index(False)
    where = f"between t={t_list[i - 1]!r} and t={t_list[i]!r}"
    if grid is not None:
        lo, hi = grid.index(t_list[i - 1]), grid.index(t_list[i])
        t_bad = first_nonfinite_step(f, tableau, ys[i - 1].detach(), grid[lo:hi + 1])
        if t_bad is not None:
            where = f"at t={t_bad!r} (first grid point with a non-finite state)"
    raise NonFiniteStateError(
        f"the state became non-finite (NaN/inf) {where}. The vector field may blow up there; "
        f"try a smaller step size, an adaptive method, or check the model for instability"
    )
