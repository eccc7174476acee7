"""The one place that turns ``method`` + ``options`` (+ tolerances) into a validated plan.

``odeint``/``solve``, ``odeint_adjoint`` (forward and backward), ``hyperode.nn.
SolverConfig`` and the command line all call ``resolve``; nothing else decides
whether a solve is fixed-grid or adaptive, or which options apply.

The rules (torchdiffeq's, except where the README's "Switching from torchdiffeq"
table says otherwise):

- ``method=None`` is dopri5.
- A method without an error estimate runs on a fixed grid: ``step_size``,
  ``num_steps``, ``grid_points`` or ``grid_constructor(func, y0, t)``; with none of
  them it steps on the output times ``t`` themselves (torchdiffeq's rule).
- A method with an error estimate runs adaptively, unless a grid option is given,
  in which case it runs on that grid.
- A method that integrates by itself (``scipy_solver``) takes its own options.
- Unknown options and options that do not apply to this kind of solve raise
  ``ValueError`` (torchdiffeq only warns): a misspelt ``rtol``-like option silently
  ignored is a wrong result the user never sees.
- Callbacks set on ``func`` that the chosen kind of solve cannot call give a
  warning, as in torchdiffeq.
"""

from __future__ import annotations

import itertools
import math
import numbers
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import Tensor

from .adaptive import AdaptiveConfig
from .controllers import CONTROLLERS, IController, PIController
from .fixed import Grid
from .methods import get_method
from .norms import mixed_norm
from .per_sample import PER_SAMPLE_OPTIONS, check_options
from .problem import CALLBACK_NAMES, StateLayout

DEFAULT_METHOD = "dopri5"
DEFAULT_CONTROLLER = "i"
DEFAULT_MAX_NUM_STEPS = 100_000
DEFAULT_RTOL, DEFAULT_ATOL = 1e-7, 1e-9  # odeint's (and torchdiffeq's) defaults
INTERPOLATIONS = ("linear", "cubic")

GRID_OPTIONS = frozenset({"step_size", "num_steps", "grid_points", "grid_constructor"})
FIXED_OPTIONS = GRID_OPTIONS | {"perturb", "interp"}
ADAPTIVE_OPTIONS = frozenset({"norm", "controller", "safety", "ifactor", "dfactor",
                              "first_step", "min_step", "max_step", "step_t", "jump_t",
                              *PER_SAMPLE_OPTIONS})
COMMON_OPTIONS = frozenset({"max_num_steps", "record_steps", "dtype"})
KNOWN_OPTIONS = FIXED_OPTIONS | ADAPTIVE_OPTIONS | COMMON_OPTIONS


@dataclass(frozen=True)
class SolvePlan:
    """A validated solve configuration (``resolve``'s result).

    Attributes:
        method: the step method (configured with its own options), or an
            integrator of its own for ``kind == "external"``.
        kind: ``"fixed"``, ``"adaptive"`` or ``"external"``.
        options: the validated options (``step_size`` a float, times as float lists,
            ...); the method's own options are already folded into ``method``.
        rtol, atol: validated tolerances (floats or flat tensors over the state).
        adaptive: the adaptive loop's configuration (``kind == "adaptive"``).
        max_num_steps, record_steps: as given (defaults filled in).
        callbacks: torchdiffeq callback names this kind of solve calls.
    """

    method: Any
    kind: str
    options: Mapping[str, Any]
    rtol: float | Tensor
    atol: float | Tensor
    adaptive: AdaptiveConfig | None = None
    max_num_steps: int = DEFAULT_MAX_NUM_STEPS
    record_steps: bool = False
    callbacks: frozenset[str] = field(default_factory=frozenset)

    @property
    def interp(self) -> str | None:
        return self.options.get("interp")

    @property
    def perturb(self) -> bool:
        return bool(self.options.get("perturb", False))

    @property
    def per_sample_steps(self) -> bool:
        """Each sample its own steps (``solvers.per_sample``)."""
        return bool(self.options.get("per_sample_steps", False))

    def grid(self, t_list: list[float], func: Callable | None = None,
             y0: Any = None) -> Grid:
        """The fixed grid for output times ``t_list`` (``grid_constructor`` is called
        here, with ``func``, ``y0`` and ``t`` as a float64 tensor, torchdiffeq's way)."""
        opts = self.options
        t0, t_end = t_list[0], t_list[-1]
        if "step_size" in opts:
            d = 1.0 if t_end >= t0 else -1.0
            return Grid(t0, t_end, step_size=opts["step_size"], direction=d)
        if "num_steps" in opts:
            return Grid(t0, t_end, num_steps=opts["num_steps"])
        if "grid_points" in opts:
            points = opts["grid_points"]
        elif "grid_constructor" in opts:
            t_tensor = torch.tensor(t_list, dtype=torch.float64)
            out = opts["grid_constructor"](func, y0, t_tensor)
            points = check_times("grid_constructor(func, y0, t)", out)
        else:
            points = list(t_list)
        points = _orient(points, t0, t_end)
        _check_grid_covers(points, t_list, self.interp is not None)
        return Grid(t0, t_end, points=tuple(points))


def resolve(method: Any, options: Mapping[str, Any] | None, rtol: Any, atol: Any,
            layout: StateLayout, *, func: Any = None) -> SolvePlan:
    """Validate ``method``, ``options``, ``rtol`` and ``atol`` for a state laid out as
    ``layout``; return the ``SolvePlan``. Raises ``ValueError`` naming the argument,
    its value and what was expected. ``func`` (optional) is read for callbacks."""
    step_method = get_method(DEFAULT_METHOD if method is None else method)
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise ValueError(f"options must be a dict or None, got {type(options).__name__}")
    opts = dict(options)
    rtol_v, atol_v = tolerances(rtol, atol, layout)
    if getattr(step_method, "tolerance_free", False):
        _refuse_tolerances(step_method, rtol, atol)

    own_names = getattr(step_method, "option_names", frozenset())
    own = {k: opts.pop(k) for k in list(opts) if k in own_names}
    for key in opts:
        if key not in KNOWN_OPTIONS:
            raise ValueError(f"unknown option {key!r} for method {step_method.name!r}; known "
                             f"options: {', '.join(sorted(KNOWN_OPTIONS | own_names))}")
    if own_names:
        step_method = step_method.configure(own, rtol_v, atol_v)

    _check_common(opts)
    if getattr(step_method, "implicit", False) and "min_step" in opts and own_names:
        # an implicit step that fails at min_step raises (the loop would accept it unmoved)
        step_method.min_step = float(opts["min_step"])
    if getattr(step_method, "external", False):
        stray = sorted(set(opts) - COMMON_OPTIONS)
        if stray:
            raise ValueError(f"options {stray} do not apply to method {step_method.name!r}, "
                             f"which integrates by itself; its options are "
                             f"{', '.join(sorted(own_names | COMMON_OPTIONS))}")
        plan = SolvePlan(step_method, "external", opts, rtol_v, atol_v,
                         max_num_steps=opts.get("max_num_steps", DEFAULT_MAX_NUM_STEPS))
        return _with_callbacks(plan, func, frozenset())

    grid_keys = sorted(k for k in GRID_OPTIONS if k in opts)
    if len(grid_keys) > 1:
        raise ValueError(f"give only one of step_size, num_steps, grid_points, "
                         f"grid_constructor; got {grid_keys}")
    fixed = not step_method.adaptive or bool(grid_keys)
    if fixed:
        stray = sorted(k for k in ADAPTIVE_OPTIONS if k in opts)
        if stray:
            why = (f"{grid_keys[0]} makes this a fixed-grid solve" if grid_keys else
                   f"method {step_method.name!r} has no error estimate and runs on a fixed "
                   f"grid (t itself, or step_size/num_steps/grid_points/grid_constructor)")
            raise ValueError(f"options {stray} apply only to adaptive solves, but {why}")
        _check_fixed(opts)
        plan = SolvePlan(step_method, "fixed", opts, rtol_v, atol_v,
                         max_num_steps=opts.get("max_num_steps", DEFAULT_MAX_NUM_STEPS),
                         record_steps=bool(opts.get("record_steps", False)))
        return _with_callbacks(plan, func, frozenset({"callback_step"}))

    stray = sorted(k for k in ("perturb", "interp") if k in opts)
    if stray:
        raise ValueError(f"options {stray} apply only to fixed-grid solves; method "
                         f"{step_method.name!r} runs adaptively here (adaptive outputs come "
                         f"from its dense output, and discontinuities go in options['jump_t'])")
    cfg = _adaptive_config(opts, rtol_v, atol_v, layout,
                           getattr(step_method, "default_controller", DEFAULT_CONTROLLER))
    check_options(step_method, opts, layout, cfg.controller)
    plan = SolvePlan(step_method, "adaptive", opts, rtol_v, atol_v, adaptive=cfg,
                     max_num_steps=cfg.max_num_steps, record_steps=cfg.record_steps)
    # torchdiffeq's callbacks take one t0 and dt: a per-sample solve has none to give
    return _with_callbacks(plan, func, frozenset() if plan.per_sample_steps
                           else frozenset(CALLBACK_NAMES))


def _refuse_tolerances(step_method: Any, rtol: Any, atol: Any) -> None:
    """A method that declares ``tolerance_free = True`` (a hypersolver: fixed grid, no
    error control, no iteration judged by a tolerance) gets ``rtol``/``atol`` other than
    ``odeint``'s defaults only by mistake: they would be silently ignored. (torchdiffeq's
    fixed-grid methods accept and ignore them; hyperode does the same for them, so that
    torchdiffeq code keeps running.)"""
    for name, value, default in (("rtol", rtol, DEFAULT_RTOL), ("atol", atol, DEFAULT_ATOL)):
        if isinstance(value, Tensor) or value != default:
            raise ValueError(
                f"{name}={value!r} does not apply to method {step_method.name!r}: it runs on "
                f"a fixed grid without error control and would ignore it; drop {name} (the "
                f"default {default!r} is accepted) and choose the grid with "
                f"options['step_size'] or options['num_steps']")


def method_kind(method: Any) -> str:
    """How ``method`` runs without grid options: ``"fixed"`` (no error estimate: on a
    grid, or on ``t`` itself), ``"adaptive"`` or ``"external"`` (integrates by itself).
    ``ValueError`` for an unknown method."""
    m = get_method(DEFAULT_METHOD if method is None else method)
    if getattr(m, "external", False):
        return "external"
    return "adaptive" if m.adaptive else "fixed"


def _with_callbacks(plan: SolvePlan, func: Any, valid: frozenset[str]) -> SolvePlan:
    if func is None:
        return plan
    present = {n for n in CALLBACK_NAMES if callable(getattr(func, n, None))}
    invalid = sorted(present - valid)
    if invalid:
        warnings.warn(f"method {plan.method.name!r} ({plan.kind} solve) does not call the "
                      f"callbacks {invalid} set on func; they are ignored", stacklevel=4)
    return SolvePlan(plan.method, plan.kind, plan.options, plan.rtol, plan.atol,
                     plan.adaptive, plan.max_num_steps, plan.record_steps,
                     frozenset(present & valid))


# --------------------------------------------------------------------------- checks


def positive_number(name: str, value: Any, *, allow_zero: bool = False,
                    allow_inf: bool = False) -> float:
    """``value`` as a float, or ``ValueError`` naming ``options['<name>']``."""
    if isinstance(value, Tensor) and value.numel() == 1 and not value.is_complex():
        value = float(value.detach())
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok:
        value = float(value)
        ok = (value >= 0 if allow_zero else value > 0) and (allow_inf or math.isfinite(value))
        ok = ok and not math.isnan(value)
    if not ok:
        need = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"options['{name}'] must be a finite number {need}, got {value!r}")
    return float(value)


def _int_option(opts: dict[str, Any], name: str) -> None:
    if name in opts:
        n = opts[name]
        if isinstance(n, Tensor) and n.numel() == 1 and not n.is_floating_point():
            n = opts[name] = int(n)
        elif isinstance(n, numbers.Integral) and not isinstance(n, bool):  # numpy integers
            n = opts[name] = int(n)
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"options['{name}'] must be an int >= 1, got {n!r}")


def _bool_option(opts: dict[str, Any], name: str) -> None:
    if name in opts and not isinstance(opts[name], bool):
        raise ValueError(f"options['{name}'] must be True or False, got {opts[name]!r}")


def _check_common(opts: dict[str, Any]) -> None:
    _int_option(opts, "max_num_steps")
    _bool_option(opts, "record_steps")
    if "dtype" in opts:
        dt = opts["dtype"]
        if not isinstance(dt, torch.dtype) or not dt.is_floating_point:
            raise ValueError(f"options['dtype'] (the dtype of times) must be a real floating "
                             f"torch.dtype, got {dt!r}")


def _check_fixed(opts: dict[str, Any]) -> None:
    if "step_size" in opts:
        opts["step_size"] = positive_number("step_size", opts["step_size"])
    _int_option(opts, "num_steps")
    if "grid_points" in opts:
        opts["grid_points"] = check_times("options['grid_points']", opts["grid_points"])
    if "grid_constructor" in opts and not callable(opts["grid_constructor"]):
        raise ValueError(f"options['grid_constructor'] must be callable as "
                         f"grid_constructor(func, y0, t), got {opts['grid_constructor']!r}")
    _bool_option(opts, "perturb")
    if "interp" in opts and opts["interp"] not in INTERPOLATIONS:
        raise ValueError(f"options['interp'] must be one of {INTERPOLATIONS}, "
                         f"got {opts['interp']!r}")


def check_times(name: str, value: Any, *, monotonic: bool = True) -> list[float]:
    """A 1-D sequence of finite times as floats (strictly monotonic by default)."""
    try:
        values = torch.as_tensor(value, dtype=torch.float64).detach().cpu() \
            if not isinstance(value, Tensor) else value.detach().to("cpu", torch.float64)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"{name} must be a 1-D sequence of times, got {value!r}") from e
    if values.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(values.shape)}")
    values = values.tolist()
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{name} must be finite, got {values}")
    if monotonic:
        if len(values) < 2:
            raise ValueError(f"{name} needs at least two times, got {values}")
        d = 1.0 if values[1] > values[0] else -1.0
        if any(d * (b - a) <= 0 for a, b in itertools.pairwise(values)):
            raise ValueError(f"{name} must be strictly monotonic, got {values}")
    return values


def _orient(points: list[float], t0: float, t_end: float) -> list[float]:
    """Grid points run in the direction of integration (a forward grid is reversed for
    a backward solve, e.g. the adjoint's)."""
    if len(points) > 1 and (points[-1] > points[0]) != (t_end > t0):
        return points[::-1]
    return points


def _check_grid_covers(grid: list[float], t_list: list[float], exact_ends: bool) -> None:
    t0, t_end = t_list[0], t_list[-1]
    if len(t_list) == 1:
        return
    d = 1.0 if t_end > t0 else -1.0
    if exact_ends:
        if grid[0] != t0 or grid[-1] != t_end:
            raise ValueError(f"with options['interp'] the grid must start at t[0] = {t0!r} and "
                             f"end at t[-1] = {t_end!r}, got [{grid[0]!r}, {grid[-1]!r}]")
    elif d * (grid[0] - t0) > 0 or d * (grid[-1] - t_end) < 0:
        raise ValueError(f"the grid must cover [t[0], t[-1]] = [{t0!r}, {t_end!r}], got "
                         f"[{grid[0]!r}, {grid[-1]!r}]")


def tolerance(name: str, value: Any, layout: StateLayout) -> float | Tensor:
    """A float, or a flat tensor matching the solver's flat state."""
    if isinstance(value, Tensor) and value.numel() == 1 and not layout.is_tuple:
        value = value.detach().reshape(())
        if value.is_complex() or value.dtype == torch.bool:
            raise ValueError(f"{name} must be a real number, got {value!r}")
        value = float(value)
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        if not (math.isfinite(value) and cast(float, value) >= 0):
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
            if value.numel() == 1:
                return tolerance(name, float(value.detach()), layout)
            raise ValueError(f"{name}: for a tuple state give a float or a tuple with one "
                             f"float/tensor per member, got a tensor of shape "
                             f"{tuple(value.shape)}")
        return _tolerance_tensor(name, value, layout.shapes[0], layout)
    raise ValueError(f"{name} must be a float >= 0 or a tensor of them, got {value!r}")


def _tolerance_tensor(name: str, value: Any, shape: torch.Size, layout: StateLayout) -> Tensor:
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        value = torch.tensor(float(value))
    if not isinstance(value, Tensor):
        raise ValueError(f"{name} must be a float or a tensor, got {type(value).__name__}")
    value = value.detach().to(layout.device, layout.time_dtype)
    if not bool(torch.isfinite(value).all()) or bool((value < 0).any()):
        raise ValueError(f"{name} must be finite and >= 0 everywhere")
    try:
        return torch.broadcast_to(value, shape).contiguous()
    except RuntimeError as e:
        raise ValueError(f"{name} has shape {tuple(value.shape)}, which does not broadcast to "
                         f"the state's shape {tuple(shape)}") from e


def tolerances(rtol: Any, atol: Any, layout: StateLayout) -> tuple[float | Tensor,
                                                                    float | Tensor]:
    """Validated ``(rtol, atol)``; not both 0 anywhere."""
    rtol_v, atol_v = tolerance("rtol", rtol, layout), tolerance("atol", atol, layout)
    both_zero = (torch.as_tensor(rtol_v) + torch.as_tensor(atol_v)) == 0
    if bool(both_zero.any()):
        where = "" if both_zero.ndim == 0 else \
            f" at flat state index {int(both_zero.reshape(-1).nonzero()[0])}"
        raise ValueError(f"rtol and atol are both 0{where}; the error there could never be "
                         f"judged: at least one of them must be > 0 for every element")
    return rtol_v, atol_v


def _adaptive_config(opts: dict[str, Any], rtol_v: float | Tensor, atol_v: float | Tensor,
                     layout: StateLayout, default_controller: str = DEFAULT_CONTROLLER
                     ) -> AdaptiveConfig:
    """The adaptive options validated; ``default_controller`` is the method's
    (``step_method.default_controller``, e.g. ``"pi"`` for the implicit adaptive
    methods) when ``options['controller']`` is not given."""
    norm = opts.get("norm", mixed_norm)
    if not callable(norm):
        raise ValueError(f"options['norm'] must be callable, got {norm!r}")
    state_norm = cast(Callable[[Any], Tensor], norm)  # a callable, checked above
    flat_norm: Callable[[Tensor], Tensor] = \
        (lambda e: state_norm(layout.unflatten(e))) if layout.is_tuple else state_norm

    controller = opts.get("controller", default_controller)
    factors = {k: opts[k] for k in ("safety", "ifactor", "dfactor") if k in opts}
    for k, v in factors.items():
        if isinstance(v, Tensor) and v.numel() == 1:
            factors[k] = float(v)
    if isinstance(controller, str):
        if controller not in CONTROLLERS:
            raise ValueError(f"options['controller'] = {controller!r} is unknown; use one of "
                             f"{sorted(CONTROLLERS)} or a controller object")
        try:
            controller = CONTROLLERS[controller](**factors)
        except ValueError as e:
            raise ValueError(f"options: {e}") from None
    elif isinstance(controller, (IController, PIController)):
        if factors:
            raise ValueError(f"options {sorted(factors)} conflict with the controller object "
                             f"given; set them on the controller instead")
    else:
        raise ValueError(f"options['controller'] must be 'pi', 'i' or a controller object, "
                         f"got {controller!r}")

    first_step = opts.get("first_step")
    if first_step is not None:
        first_step = positive_number("first_step", first_step)
    min_step = positive_number("min_step", opts.get("min_step", 0.0), allow_zero=True)
    max_step = positive_number("max_step", opts.get("max_step", math.inf), allow_inf=True)
    if min_step > max_step:
        raise ValueError(f"options['min_step'] = {min_step!r} exceeds max_step = {max_step!r}")
    step_t = check_times("options['step_t']", opts["step_t"], monotonic=False) \
        if "step_t" in opts else ()
    jump_t = check_times("options['jump_t']", opts["jump_t"], monotonic=False) \
        if "jump_t" in opts else ()
    return AdaptiveConfig(
        rtol=rtol_v, atol=atol_v, norm=flat_norm, controller=controller,
        first_step=first_step, min_step=min_step, max_step=max_step,
        max_num_steps=opts.get("max_num_steps", DEFAULT_MAX_NUM_STEPS), step_t=step_t,
        jump_t=jump_t, record_steps=bool(opts.get("record_steps", False)),
    )
