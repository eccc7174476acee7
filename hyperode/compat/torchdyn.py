"""torchdyn's ``NeuralODE`` and functional ``odeint``, running on hyperode's solvers.

Code written for torchdyn keeps working with the import changed::

    from hyperode.compat.torchdyn import NeuralODE        # was: from torchdyn.core import ...
    node = NeuralODE(torch_wrapper(model), solver="dopri5", sensitivity="adjoint",
                     atol=1e-4, rtol=1e-4)
    traj = node.trajectory(x0, t_span=torch.linspace(0, 1, 100))   # [100, *x0.shape]
    t_eval, sol = node(x0, t_span)                                  # torchdyn's return

Which torchdyn behaviour each part mirrors, and what is not covered, is in
``docs/torchdyn.md``. Solves go through ``hyperode.solve`` and ``hyperode.solve_adjoint``
(the interpolated adjoint through ``hyperode.compat._interpolated_adjoint``).
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..adjoint import solve_adjoint
from ..odeint import solve
from ..solvers import SolverStats, rms_norm
from ..solvers.step import is_learned
from ._interpolated_adjoint import InterpolatedAdjoint
from ._torchdyn_field import TorchdynField
from ._torchdyn_solvers import is_fixed_step, resolve_solver

SENSITIVITIES = ("autograd", "adjoint", "interpolated_adjoint")
INTERPOLATORS = (None, "4th")  # torchdyn's INTERP_DICT (numerics/interpolators.py)
DEFAULT_TOL = 1e-3  # torchdyn's odeint and NeuralODE defaults for atol and rtol


def as_t_span(t_span: Any, x: Tensor, owner: str = "NeuralODE") -> Tensor:
    """``t_span`` as a 1-D tensor on ``x``'s device: a tensor, or a list/tuple of numbers
    or of tensors (torchdyn concatenates a list). At least 2 strictly monotone finite
    times; ``ValueError`` otherwise."""
    if isinstance(t_span, (list, tuple)):
        parts = [torch.as_tensor(v).reshape(-1) for v in t_span]
        t_span = torch.cat(parts) if parts else torch.zeros(0)
    if not isinstance(t_span, Tensor):
        raise ValueError(f"{owner}: t_span must be a 1-D tensor (or a list of times), got "
                         f"{type(t_span).__name__}")
    if t_span.ndim != 1 or t_span.numel() < 2:
        raise ValueError(f"{owner}: t_span must be 1-D with at least 2 times, got shape "
                         f"{tuple(t_span.shape)}")
    if t_span.is_complex() or not t_span.is_floating_point():
        t_span = t_span.to(torch.get_default_dtype())
    values = t_span.detach().tolist()
    steps = [b - a for a, b in itertools.pairwise(values)]
    if not all(math.isfinite(v) for v in values) or not (all(s > 0 for s in steps)
                                                          or all(s < 0 for s in steps)):
        raise ValueError(f"{owner}: t_span must hold finite, strictly increasing or strictly "
                         f"decreasing times, got {values}")
    return t_span.to(x.device) if isinstance(x, Tensor) else t_span


def _check_tolerance(owner: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not math.isfinite(value) or value < 0:
        raise ValueError(f"{owner}: {name} must be a finite number >= 0, got {value!r}")
    return float(value)


def _solve_kwargs(method: Any, atol: float, rtol: float, land_on: Tensor | None,
                  options: dict | None = None) -> dict[str, Any]:
    """``hyperode.solve`` keyword arguments for one torchdyn-style solve.

    Fixed-step methods step on the output times themselves (no grid option; torchdyn's
    ``_fixed_odeint`` takes ``dt = t_span[k+1] - t_span[k]``) and get no tolerances.
    Adaptive methods step onto every time of ``land_on`` (``step_t``), as torchdyn's
    ``_adaptive_odeint`` cuts its steps at each ``t_span`` time when no interpolator is
    set; ``land_on=None`` leaves the steps alone and outputs come from the method's
    dense output (torchdyn's ``interpolator="4th"``).
    """
    options = dict(options or {})
    if is_fixed_step(method):
        return dict(method=method, options=options or None)
    if land_on is not None and len(land_on) > 2:
        options["step_t"] = sorted({*options.get("step_t", ()),
                                    *land_on.detach().tolist()[1:-1]})
    return dict(method=method, rtol=rtol, atol=atol, options=options or None)


def _warn_fixed_tolerances(method: Any, atol: float, rtol: float) -> None:
    if is_fixed_step(method) and (atol != DEFAULT_TOL or rtol != DEFAULT_TOL):
        warnings.warn(f"atol/rtol have no effect on the fixed-step solver {method.name!r} "
                      f"(it steps on t_span)", stacklevel=3)


def _save_at_indices(save_at: Any, t_span: Tensor, owner: str) -> list[int] | None:
    """Indices of ``save_at`` in ``t_span`` (each once), or ``None`` for ``()``."""
    if save_at is None or (not isinstance(save_at, Tensor) and len(save_at) == 0):
        return None
    save = torch.as_tensor(save_at, dtype=t_span.dtype, device=t_span.device).reshape(-1)
    if save.numel() == 0:
        return None
    hits = torch.isclose(save[:, None], t_span[None, :])
    if not bool((hits.sum(1) == 1).all()):
        raise ValueError(f"{owner}: each time in save_at must be in t_span exactly once; "
                         f"got save_at={save.tolist()}, t_span={t_span.tolist()}")
    return hits.int().argmax(1).tolist()


# --------------------------------------------------------------------------- odeint


def odeint(f: Callable, x: Tensor, t_span: Tensor | Sequence, solver: Any = "tsit5",
           atol: float = DEFAULT_TOL, rtol: float = DEFAULT_TOL, t_stops: Any = None,
           verbose: bool = False, interpolator: str | None = None,
           return_all_eval: bool = False, save_at: Any = (), args: dict | None = None,
           seminorm: tuple[bool, int | None] = (False, None)) -> tuple[Tensor, Tensor]:
    """torchdyn's functional ``odeint`` (``torchdyn/numerics/odeint.py``): returns
    ``(t_eval, sol)`` with ``sol`` ``[len(t_eval), *x.shape]``.

    Args:
        f: called as ``f(t, x)`` (``t`` a 0-dim tensor), or ``f(t, x, args=args)`` when
            ``args`` is non-empty; no signature detection here (that is ``NeuralODE``'s).
        x: the initial state, a tensor of any shape (real or complex).
        t_span: output times, 1-D, strictly monotone (a decreasing span integrates
            backwards); ``t_eval`` is ``t_span`` as given (torchdyn returns ``-t_span``
            for a decreasing one).
        solver: a torchdyn solver name (``"euler"``, ``"rk4"``, ``"dopri5"``, ``"tsit5"``,
            ...), a hyperode method name or ``ButcherTableau``, or a step method object
            such as a ``HyperSolver``. Positional, as in torchdyn; defaults to
            ``"tsit5"`` (torchdyn has no default).
        atol, rtol: adaptive tolerances (torchdyn's defaults 1e-3); a fixed-step solver
            warns when they are changed and ignores them.
        t_stops: times an adaptive solve must step onto (hyperode's ``step_t``).
        interpolator: ``None`` (adaptive steps land on every ``t_span`` time) or
            ``"4th"`` (outputs from the method's dense output, steps left alone).
        save_at: fixed-step solvers only: the subset of ``t_span`` to return
            (``t_eval = save_at``); ignored with a warning by adaptive solvers.
        seminorm: ``(True, n)`` judges the adaptive error on ``x[:n]`` only (the first
            ``n`` entries along dim 0, as torchdyn slices it).
        verbose: warn when integrating on a reversed span.
        return_all_eval: not supported (``ValueError``).
    """
    owner = "odeint"
    if return_all_eval:
        raise ValueError("odeint: return_all_eval=True (every accepted step in the output) is "
                         "not supported; pass the times you need in t_span, or use "
                         "hyperode.solve(..., options=dict(record_steps=True)) for the step "
                         "times")
    if not callable(f):
        raise ValueError(f"odeint: f must be callable as f(t, x), got {type(f).__name__}")
    if not isinstance(x, Tensor):
        raise ValueError(f"odeint: x must be a tensor, got {type(x).__name__} (torchdyn's dict "
                         f"states are not supported)")
    t_span = as_t_span(t_span, x, owner)
    method = resolve_solver(solver, "solver", owner)
    atol = _check_tolerance(owner, "atol", atol)
    rtol = _check_tolerance(owner, "rtol", rtol)
    if interpolator not in INTERPOLATORS:
        raise ValueError(f"odeint: interpolator must be one of {INTERPOLATORS}, got "
                         f"{interpolator!r}")
    _warn_fixed_tolerances(method, atol, rtol)
    if verbose and float(t_span[1]) < float(t_span[0]):
        warnings.warn("odeint: integrating on a reversed time domain", stacklevel=2)
    options: dict[str, Any] = {}
    if seminorm[0]:
        if is_fixed_step(method):
            raise ValueError("odeint: seminorm applies to adaptive solvers only")
        n = seminorm[1]
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"odeint: seminorm=(True, n) needs an int n >= 1, got {n!r}")
        options["norm"] = lambda err: rms_norm(err[:n])
    if t_stops is not None:
        if is_fixed_step(method):
            raise ValueError("odeint: t_stops applies to adaptive solvers only (a fixed-step "
                             "solver steps on t_span)")
        options["step_t"] = torch.as_tensor(t_stops, dtype=torch.float64).reshape(-1).tolist()
    indices = _save_at_indices(save_at, t_span, owner)
    if indices is not None and not is_fixed_step(method):
        warnings.warn("odeint: save_at has no effect on adaptive-step solvers", stacklevel=2)
        indices = None
    func = f if not args else (lambda t, y: f(t, y, args=args))
    kwargs = _solve_kwargs(method, atol, rtol, t_span if interpolator is None else None,
                           options)
    sol = solve(func, x, t_span, **kwargs).ys
    if indices is not None:
        return t_span[indices], sol[indices]
    return t_span, sol


# --------------------------------------------------------------------------- NeuralODE


class NeuralODE(nn.Module):
    """torchdyn's ``NeuralODE`` (``torchdyn/core/neuralde.py``) on hyperode's solvers.

    Args:
        vector_field: an ``nn.Module`` or callable called as ``f(x)``, ``f(t, x)`` or
            ``f(t, x, args=...)``: ``f(t, x)`` when its signature has a parameter named
            ``t`` (torchdyn's rule, ``torchdyn/core/utils.py``), ``args=`` passed when it
            takes ``args`` or ``**kwargs``. Returns ``dx/dt`` of ``x``'s shape (with
            ``order=k``, the k-th derivative, see ``TorchdynField``).
        solver: torchdyn's names (``"euler"``, ``"midpoint"``, ``"rk4"``/``"rk-4"``,
            ``"dopri5"``, ``"tsit5"`` (default), ``"ieuler"``, ...), any hyperode method
            name or ``ButcherTableau``, or a step method object such as a
            ``hyperode.hyper.HyperSolver``. Unknown names raise ``ValueError`` listing
            the accepted ones.
        order: order of the ODE (``x`` ``[B, order*d]``: positions, velocities, ...).
        atol, rtol: tolerances of adaptive solvers (torchdyn's defaults, 1e-3).
        sensitivity: ``"autograd"`` (backpropagate through the solver), ``"adjoint"``
            (``hyperode.solve_adjoint``: solve ``x`` and the adjoints backwards) or
            ``"interpolated_adjoint"`` (backward solve of the adjoints only, ``x`` from
            an interpolant of the forward steps).
        solver_adjoint, atol_adjoint, rtol_adjoint: the backward solve's solver
            (``None``: ``solver``) and tolerances (torchdyn's defaults, 1e-4).
        interpolator: ``None`` (adaptive steps land on every output time, torchdyn's
            default) or ``"4th"`` (outputs from the solver's dense output).
        integral_loss: ``g(t, x)``; with ``"autograd"``, ``x[:, 0]`` accumulates its
            integral (``TorchdynField``). Not supported with the adjoints (``ValueError``).
        seminorm: with ``"adjoint"``/``"interpolated_adjoint"`` and an adaptive backward
            solver, judge the backward error on the state and its adjoint only (hyperode's
            ``"state_seminorm"``; the interpolated adjoint judges the adjoint alone).
        return_t_eval: ``forward`` returns ``(t_eval, sol)`` (default) or ``sol``.
        optimizable_params: extra tensors to differentiate under the adjoints (e.g.
            those a plain function closes over); ``nn.Parameter``s among them are
            registered on ``vf``.

    Attributes: ``vf`` (the ``TorchdynField`` wrapper: ``vf.nfe`` counts evaluations,
    ``vf.vf`` is the user's field), ``vector_field`` (the user's field), ``solver`` and
    ``solver_adjoint`` (hyperode method objects), ``t_span`` (used when ``forward`` gets
    none; ``None`` means ``[0, 1]``), ``last_stats`` / ``last_backward_stats``
    (``hyperode.SolverStats`` of the last solve; the backward one fills in during
    ``.backward()``).
    """

    def __init__(
        self,
        vector_field: Callable | nn.Module,
        solver: Any = "tsit5",
        order: int = 1,
        atol: float = DEFAULT_TOL,
        rtol: float = DEFAULT_TOL,
        sensitivity: str = "autograd",
        solver_adjoint: Any = None,
        atol_adjoint: float = 1e-4,
        rtol_adjoint: float = 1e-4,
        interpolator: str | None = None,
        integral_loss: Callable | None = None,
        seminorm: bool = False,
        return_t_eval: bool = True,
        optimizable_params: Iterable[Tensor] = (),
    ):
        super().__init__()
        owner = "NeuralODE"
        if sensitivity not in SENSITIVITIES:
            raise ValueError(f"NeuralODE: sensitivity must be one of {SENSITIVITIES}, got "
                             f"{sensitivity!r}")
        if interpolator not in INTERPOLATORS:
            raise ValueError(f"NeuralODE: interpolator must be one of {INTERPOLATORS} "
                             f"(torchdyn's), got {interpolator!r}")
        for name, value in (("seminorm", seminorm), ("return_t_eval", return_t_eval)):
            if not isinstance(value, bool):
                raise ValueError(f"NeuralODE: {name} must be a bool, got {value!r}")
        if integral_loss is not None:
            if not callable(integral_loss):
                raise ValueError(f"NeuralODE: integral_loss must be callable as g(t, x), got "
                                 f"{type(integral_loss).__name__}")
            if sensitivity != "autograd":
                raise ValueError(
                    f"NeuralODE: integral_loss is supported with sensitivity='autograd' only "
                    f"(x[:, 0] carries the integral); got sensitivity={sensitivity!r}. "
                    f"Add the channel yourself (dx[:, 0] = g) and use an adjoint on that")
        self.vf = TorchdynField(vector_field, order)
        self.vf.integral_loss = integral_loss
        self.vf.sensitivity = sensitivity
        self.solver = resolve_solver(solver, "solver")
        self.solver_adjoint = self.solver if solver_adjoint is None else \
            resolve_solver(solver_adjoint, "solver_adjoint")
        if sensitivity != "autograd":
            for name, m in (("solver", self.solver), ("solver_adjoint", self.solver_adjoint)):
                if is_learned(m):
                    raise ValueError(
                        f"NeuralODE: {name}={m.name!r} is a learned solver, which runs only "
                        f"with sensitivity='autograd' (the adjoint differentiates the exact "
                        f"ODE solution, not the learned steps); got {sensitivity!r}")
                if getattr(m, "external", False) and sensitivity == "interpolated_adjoint":
                    raise ValueError(f"NeuralODE: {name}={m.name!r} integrates outside "
                                     f"hyperode and cannot serve the interpolated adjoint")
        self.atol = _check_tolerance(owner, "atol", atol)
        self.rtol = _check_tolerance(owner, "rtol", rtol)
        self.atol_adjoint = _check_tolerance(owner, "atol_adjoint", atol_adjoint)
        self.rtol_adjoint = _check_tolerance(owner, "rtol_adjoint", rtol_adjoint)
        self.order = order
        self.sensitivity = sensitivity
        self.interpolator = interpolator
        self.integral_loss = integral_loss
        self.seminorm = seminorm
        self.return_t_eval = return_t_eval
        self.t_span: Tensor | None = None
        self._extra_params = self._register_optimizable(optimizable_params)
        self.last_stats: SolverStats | None = None
        self.last_backward_stats: SolverStats | None = None
        _warn_fixed_tolerances(self.solver, self.atol, self.rtol)

    @property
    def vector_field(self) -> Callable:
        """The user's field, as given."""
        return self.vf.vf

    def _register_optimizable(self, optimizable_params: Any) -> tuple[Tensor, ...]:
        if isinstance(optimizable_params, Tensor):
            raise ValueError("NeuralODE: optimizable_params must be an iterable of tensors, "
                             "got one tensor (pass (tensor,))")
        try:
            params = tuple(optimizable_params)
        except TypeError:
            raise ValueError(f"NeuralODE: optimizable_params must be an iterable of tensors, "
                             f"got {type(optimizable_params).__name__}") from None
        own = {id(p) for p in self.vf.parameters()}
        extra = []
        for k, p in enumerate(params):
            if not isinstance(p, Tensor):
                raise ValueError(f"NeuralODE: optimizable_params[{k}] must be a tensor, got "
                                 f"{type(p).__name__}")
            if id(p) in own:
                continue
            if isinstance(p, nn.Parameter):
                self.vf.register_parameter(f"optimizable_parameter_{k}", p)
            else:
                extra.append(p)
        return tuple(extra)

    def _params(self) -> tuple[Tensor, ...]:
        return tuple(p for p in (*self.vf.parameters(), *self._extra_params) if p.requires_grad)

    # ------------------------------------------------------------------ integration

    def _span(self, x: Tensor, t_span: Any) -> Tensor:
        if t_span is None:
            t_span = self.t_span if self.t_span is not None else torch.linspace(0, 1, 2)
        return as_t_span(t_span, x)

    def forward(self, x: Tensor, t_span: Tensor | None = None, save_at: Any = (),
                args: dict | None = None) -> tuple[Tensor, Tensor] | Tensor:
        """Integrate from ``t_span[0]`` through every time in ``t_span``.

        Returns ``(t_eval, sol)``, or ``sol`` when ``return_t_eval=False``: ``sol`` is
        ``[len(t_eval), *x.shape]`` and ``t_eval`` is ``t_span`` (``save_at``, a subset
        of ``t_span``, with a fixed-step solver). ``t_span=None`` integrates over
        ``self.t_span`` or ``[0, 1]``. ``args`` go to a field that takes them.
        """
        t_span = self._span(x, t_span)
        indices = _save_at_indices(save_at, t_span, "NeuralODE")
        if indices is not None and not is_fixed_step(self.solver):
            warnings.warn("NeuralODE: save_at has no effect on adaptive-step solvers",
                          stacklevel=2)
            indices = None
        sol = self._integrate(x, t_span, args, self.sensitivity)
        t_eval = t_span
        if indices is not None:
            t_eval, sol = t_span[indices], sol[indices]
        return (t_eval, sol) if self.return_t_eval else sol

    def trajectory(self, x: Tensor, t_span: Tensor) -> Tensor:
        """``sol`` ``[len(t_span), *x.shape]``, backpropagating through the solver
        whatever ``sensitivity`` is (torchdyn's ``trajectory`` calls ``odeint``
        directly); e.g. ``node.trajectory(x0, t_span=torch.linspace(0, 1, 100))``."""
        return self._integrate(x, self._span(x, t_span), None, "autograd")

    def _integrate(self, x: Tensor, t_span: Tensor, args: dict | None,
                   sensitivity: str) -> Tensor:
        if not isinstance(x, Tensor):
            raise ValueError(f"NeuralODE: x must be a tensor, got {type(x).__name__} (torchdyn's "
                             f"dict states are not supported; tuples of tensors work with "
                             f"hyperode.odeint)")
        if args is not None and not isinstance(args, dict):
            raise ValueError(f"NeuralODE: args must be a dict, got {type(args).__name__}")
        self.vf.args = dict(args or {})
        self.last_backward_stats = None
        land_on = t_span if self.interpolator is None else None
        forward = _solve_kwargs(self.solver, self.atol, self.rtol, land_on)
        if sensitivity == "autograd":
            sol = solve(self.vf, x, t_span, **forward)
            self.last_stats = sol.stats
            return sol.ys
        # The backward solves run one output interval at a time: nothing to land on.
        backward = _solve_kwargs(self.solver_adjoint, self.atol_adjoint, self.rtol_adjoint,
                                 None)
        backward_adaptive = not is_fixed_step(self.solver_adjoint)
        if sensitivity == "interpolated_adjoint":
            run = InterpolatedAdjoint(self.vf, self._params(), forward, backward,
                                      adaptive=not is_fixed_step(self.solver),
                                      backward_adaptive=backward_adaptive,
                                      seminorm=self.seminorm)
            ys = run(x, t_span)
            self.last_stats, self.last_backward_stats = run.stats, run.backward_stats
            return ys
        adjoint_options = dict(backward.get("options") or {})
        if self.seminorm and backward_adaptive:
            # torchdyn's backsolve judges x and its adjoint only (not the time adjoint)
            adjoint_options["norm"] = "state_seminorm"
        sol = solve_adjoint(
            self.vf, x, t_span, **forward,
            adjoint_method=backward["method"], adjoint_rtol=backward.get("rtol"),
            adjoint_atol=backward.get("atol"), adjoint_options=adjoint_options,
            adjoint_params=self._params())
        self.last_stats, self.last_backward_stats = sol.stats, sol.backward_stats
        return sol.ys

    def extra_repr(self) -> str:
        npar = sum(p.numel() for p in self.vf.parameters())
        return (f"order={self.order}, solver={self.solver.name!r}, "
                f"solver_adjoint={self.solver_adjoint.name!r}, rtol={self.rtol:g}, "
                f"atol={self.atol:g}, rtol_adjoint={self.rtol_adjoint:g}, "
                f"atol_adjoint={self.atol_adjoint:g}, sensitivity={self.sensitivity!r}, "
                f"num_parameters={npar}, NFE={self.vf.nfe:g}")
