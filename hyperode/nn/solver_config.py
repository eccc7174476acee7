"""``SolverConfig``: the solver of a continuous-depth model as a small, immutable value.

A Neural ODE's weights and the solver that integrates it are separate things: the
same weights can be evaluated with dopri5 at 1e-6, with Euler at 8 steps or with a
hypersolver. Keeping the solver in a frozen dataclass makes swapping it one
assignment (``node.solver = cfg.replace(method="rk4", step_size=0.1)``) and makes a
configuration hashable, comparable and printable for experiment records.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from dataclasses import replace as _dc_replace
from numbers import Real
from typing import Any

import torch

from ..adjoint import ADJOINT_NORMS
from ..solvers.config import (
    DEFAULT_ATOL,
    DEFAULT_RTOL,
    GRID_OPTIONS,
    SolvePlan,
    method_kind,
    resolve,
)
from ..solvers.methods import get_method
from ..solvers.problem import StateLayout
from ..solvers.step import StepMethod
from ..solvers.tableau import ButcherTableau

# Options that describe the grid; they are fields of SolverConfig, not free-form options.
_GRID_FIELDS = ("step_size", "num_steps")
# A one-element state: validates method, options and float tolerances for any state.
_PROBE = StateLayout(torch.zeros(1, dtype=torch.float64))


def _hashable(value: Any) -> Any:
    """Lists (e.g. ``step_t``) become tuples so that the config stays hashable."""
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    return value


_DEFAULT_TOL = 1e-4  # SolverConfig's default rtol and atol


def _tolerance_free(method: Any) -> bool:
    """Whether ``method`` is a step method without tolerances (a hypersolver)."""
    return bool(getattr(method, "tolerance_free", False))


def _check_tolerance(name: str, value: Any, *, optional: bool = False) -> None:
    if optional and value is None:
        return
    if (isinstance(value, bool) or not isinstance(value, Real)
            or not math.isfinite(value) or value < 0):
        raise ValueError(f"SolverConfig: {name} must be a finite number >= 0, got {value!r}")


@dataclass(frozen=True)
class SolverConfig:
    """How to integrate a continuous-depth model; independent of its weights.

    Args:
        method: a method name (``hyperode.METHODS``), a ``hyperode.ButcherTableau`` or a
            fixed-step method object such as a ``hyperode.hyper.HyperSolver`` (held by
            reference: the config does not own or copy its network, and a hypersolver
            runs only with ``sensitivity="autograd"``).
        rtol, atol: tolerances of adaptive solves (>= 0, not both 0). Fixed-grid solves
            with a named method accept and ignore them (torchdiffeq's rule); with a
            hypersolver (no tolerances at all) they must stay at their defaults
            (``ValueError`` otherwise), and ``replace(method=hyper)`` resets them.
        step_size: fixed step ``h`` (> 0). A method without an error estimate needs
            exactly one of ``step_size``, ``num_steps`` (or ``options['grid_points']``);
            an adaptive method given one runs on that fixed grid.
        num_steps: number of equal steps over the integration span (int >= 1).
        options: further ``hyperode.odeint`` options as ``(name, value)`` pairs (a
            dict is accepted and converted); e.g. ``(("max_num_steps", 1000),)``.
        adjoint_rtol, adjoint_atol: tolerances of the backward (adjoint) solve;
            ``None`` = the forward ones.
        adjoint_method: method of the backward solve; ``None`` = ``method``.
        adjoint_norm: norm of the backward solve's error control, passed as
            ``adjoint_options=dict(norm=adjoint_norm)``: ``"default"``, ``"seminorm"``
            (torchdiffeq's) or ``"state_seminorm"`` (``hyperode.adjoint``); ``None`` =
            the adjoint's default. Not passed when the backward solve runs on a fixed
            grid, where there is no error control.

    Only adjoint sensitivities read the ``adjoint_*`` fields.
    """

    method: str | ButcherTableau | StepMethod = "dopri5"
    rtol: float = _DEFAULT_TOL
    atol: float = _DEFAULT_TOL
    step_size: float | None = None
    num_steps: int | None = None
    options: tuple[tuple[str, Any], ...] = ()
    adjoint_rtol: float | None = None
    adjoint_atol: float | None = None
    adjoint_method: str | ButcherTableau | None = None
    adjoint_norm: str | None = None

    def __post_init__(self) -> None:
        options = self.options
        if isinstance(options, Mapping):
            options = tuple(sorted(options.items()))
        try:
            options = tuple((str(k), _hashable(v)) for k, v in options)
        except (TypeError, ValueError) as e:
            raise ValueError(f"SolverConfig: options must be a dict or a tuple of (name, value) "
                             f"pairs, got {self.options!r}") from e
        object.__setattr__(self, "options", options)
        self._validate()

    # ------------------------------------------------------------------ validation

    def _validate(self) -> None:
        _check_tolerance("rtol", self.rtol)
        _check_tolerance("atol", self.atol)
        if self.step_size is not None and (
                isinstance(self.step_size, bool) or not isinstance(self.step_size, Real)):
            raise ValueError(f"SolverConfig: step_size must be a finite number > 0, got "
                             f"{self.step_size!r}")
        if _tolerance_free(self.method):
            for name in ("rtol", "atol"):
                if getattr(self, name) != _DEFAULT_TOL:
                    raise ValueError(
                        f"SolverConfig: {name}={getattr(self, name)!r} does not apply to "
                        f"method={get_method(self.method).name!r}, which steps on a fixed grid "
                        f"without error control and would ignore it; leave {name} at its "
                        f"default")
        _check_tolerance("adjoint_rtol", self.adjoint_rtol, optional=True)
        _check_tolerance("adjoint_atol", self.adjoint_atol, optional=True)
        names = [k for k, _ in self.options]
        if len(set(names)) != len(names):
            raise ValueError(f"SolverConfig: options names repeat: {names}")
        for key in names:
            if key in _GRID_FIELDS:
                raise ValueError(f"SolverConfig: give {key} as the field {key}=..., "
                                 f"not in options")
        if self.step_size is not None and self.num_steps is not None:
            raise ValueError("SolverConfig: give only one of step_size, num_steps")
        plan = self.plan()  # the one place that validates method + options
        if plan.kind == "fixed" and not GRID_OPTIONS.intersection(plan.options):
            raise ValueError(f"SolverConfig: method={plan.method.name!r} is fixed-step (no "
                             f"error estimate) and needs step_size=h or num_steps=n (a model's "
                             f"solver names its grid; hyperode.odeint would step on t itself)")
        if self.adjoint_norm is not None and self.adjoint_norm not in ADJOINT_NORMS:
            raise ValueError(f"SolverConfig: adjoint_norm must be None or one of "
                             f"{ADJOINT_NORMS}, got {self.adjoint_norm!r}")
        if self.adjoint_method is not None:
            try:
                get_method(self.adjoint_method)
            except ValueError as e:
                raise ValueError(f"SolverConfig: adjoint_{e}") from None
            kwargs = self.adjoint_kwargs()
            options = {k: v for k, v in kwargs["adjoint_options"].items() if k != "norm"}
            back = self._resolve(kwargs["adjoint_method"], options, kwargs["adjoint_rtol"],
                                 kwargs["adjoint_atol"], "adjoint_")
            if back.kind == "fixed" and not GRID_OPTIONS.intersection(back.options):
                raise ValueError(f"SolverConfig: adjoint_method={back.method.name!r} is "
                                 f"fixed-step and needs the forward solve's step_size or "
                                 f"num_steps")

    def plan(self) -> SolvePlan:
        """The forward solve resolved and validated (``hyperode.solvers.config.resolve``)."""
        kw = self.odeint_kwargs()
        return self._resolve(self.method, kw["options"], kw.get("rtol", DEFAULT_RTOL),
                             kw.get("atol", DEFAULT_ATOL), "")

    @staticmethod
    def _resolve(method: Any, options: dict, rtol: float, atol: float,
                 prefix: str) -> SolvePlan:
        try:
            return resolve(method, options, rtol, atol, _PROBE)
        except ValueError as e:
            raise ValueError(f"SolverConfig: {prefix}{e}") from None

    # ------------------------------------------------------------------ constructors

    @classmethod
    def fixed(cls, method: str | ButcherTableau | StepMethod, step_size: float | None = None,
              num_steps: int | None = None, **kwargs: Any) -> SolverConfig:
        """A fixed-grid solver: exactly one of ``step_size``, ``num_steps``."""
        if (step_size is None) == (num_steps is None):
            raise ValueError(f"SolverConfig.fixed: give exactly one of step_size, num_steps; "
                             f"got step_size={step_size!r}, num_steps={num_steps!r}")
        return cls(method=method, step_size=step_size, num_steps=num_steps, **kwargs)

    @classmethod
    def adaptive(cls, method: str | ButcherTableau = "dopri5", rtol: float = 1e-4,
                 atol: float = 1e-4, **kwargs: Any) -> SolverConfig:
        """An error-controlled solver; ``method`` must carry an error estimate."""
        if method_kind(method) != "adaptive":
            raise ValueError(f"SolverConfig.adaptive: method={method!r} has no error estimate; "
                             f"use SolverConfig.fixed")
        return cls(method=method, rtol=rtol, atol=atol, **kwargs)

    def replace(self, **changes: Any) -> SolverConfig:
        """A copy with ``changes`` applied (and validated).

        Switching to a grid clears the other grid field, so that
        ``adaptive_cfg.replace(method="rk4", step_size=0.1)`` and
        ``fixed_cfg.replace(num_steps=8)`` do what they say.
        """
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise ValueError(f"SolverConfig.replace: unknown field(s) {sorted(unknown)}")
        if _tolerance_free(changes.get("method")):  # tolerances do not apply to it
            changes.setdefault("rtol", _DEFAULT_TOL)
            changes.setdefault("atol", _DEFAULT_TOL)
        if changes.get("step_size") is not None and "num_steps" not in changes:
            changes["num_steps"] = None
        if changes.get("num_steps") is not None and "step_size" not in changes:
            changes["step_size"] = None
        return _dc_replace(self, **changes)

    # ------------------------------------------------------------------ views

    @property
    def tableau(self) -> ButcherTableau | StepMethod:
        """The method resolved: a ``ButcherTableau``, or the fixed-step method object."""
        return get_method(self.method)

    @property
    def method_name(self) -> str:
        """The method's name (``"dopri5"``, ``"alpha(0.75)"``, ...)."""
        return self.tableau.name

    @property
    def is_fixed(self) -> bool:
        """Whether the forward solve runs on a fixed grid (no error control)."""
        return self.plan().kind == "fixed"

    def odeint_options(self) -> dict[str, Any]:
        """The ``options`` dict of ``hyperode.odeint``: ``options`` plus the grid fields."""
        opts = dict(self.options)
        if self.step_size is not None:
            opts["step_size"] = float(self.step_size)
        if self.num_steps is not None:
            opts["num_steps"] = self.num_steps
        return opts

    def odeint_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``hyperode.odeint`` / ``hyperode.solve``:
        ``rtol``, ``atol``, ``method``, ``options``."""
        if _tolerance_free(self.method):  # a hypersolver: odeint's defaults, which it accepts
            return dict(method=self.method, options=self.odeint_options())
        return dict(rtol=self.rtol, atol=self.atol, method=self.method,
                    options=self.odeint_options())

    def adjoint_kwargs(self, norm: str | None = None) -> dict[str, Any]:
        """Keyword arguments for the backward solve, fully resolved:
        ``adjoint_rtol``, ``adjoint_atol``, ``adjoint_method``, ``adjoint_options``.

        Defaults follow torchdiffeq: tolerances and method of the forward solve; with
        the same method the forward options (less a forward ``norm``) carry over, so a
        fixed grid stays the same grid; a different fixed-step method gets the forward
        grid. ``norm`` (or ``adjoint_norm``) is added only for an adaptive backward solve.
        """
        norm = norm if norm is not None else self.adjoint_norm
        method = self.method if self.adjoint_method is None else self.adjoint_method
        tableau = get_method(method)
        forward = self.odeint_options()
        if tableau == self.tableau:
            opts = {k: v for k, v in forward.items() if k != "norm"}
        else:
            opts = {k: v for k, v in forward.items() if k in ("max_num_steps",)}
            if method_kind(tableau) == "fixed":
                opts.update({k: v for k, v in forward.items() if k in GRID_OPTIONS})
        backward_fixed = method_kind(tableau) != "adaptive" or bool(GRID_OPTIONS.intersection(opts))
        if norm is not None and not backward_fixed:
            opts["norm"] = norm
        return dict(
            adjoint_rtol=self.rtol if self.adjoint_rtol is None else self.adjoint_rtol,
            adjoint_atol=self.atol if self.adjoint_atol is None else self.adjoint_atol,
            adjoint_method=method,
            adjoint_options=opts,
        )

    def describe(self) -> str:
        """A short human-readable description, e.g. ``"rk4, h=0.1"`` or
        ``"dopri5, rtol=1e-04, atol=1e-04"``."""
        parts = [self.method_name]
        if self.step_size is not None:
            parts.append(f"h={self.step_size:g}")
        elif self.num_steps is not None:
            parts.append(f"{self.num_steps} steps")
        elif self.is_fixed:
            parts.append("grid_points")
        else:
            parts.append(f"rtol={self.rtol:.0e}, atol={self.atol:.0e}")
        parts += [f"{k}={v!r}" for k, v in self.options if k != "grid_points"]
        adjoint = [f"{name}={getattr(self, 'adjoint_' + name)}"
                   for name in ("rtol", "atol", "norm") if getattr(self, "adjoint_" + name)
                   is not None]
        if self.adjoint_method is not None:
            adjoint.insert(0, f"method={get_method(self.adjoint_method).name}")
        if adjoint:
            parts.append("adjoint: " + ", ".join(adjoint))
        return ", ".join(parts)
