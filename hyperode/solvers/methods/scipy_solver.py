"""``scipy_solver``: integration by ``scipy.integrate.solve_ivp``, under torchdiffeq's name.

``odeint(func, y0, t, method="scipy_solver", options=dict(solver="LSODA"))`` hands the
whole solve to scipy: ``solve_ivp`` runs from ``t[0]`` to ``t[-1]`` (either direction)
with ``t_eval = t``, and the states it reports at the output times are the result. The
vector field is evaluated through ``VectorField`` (so ``nfe`` counts every call, a tuple
state is seen through the solver's flat state and ``func``'s output is checked), always
under ``torch.no_grad()``: scipy sees a 1-D float64 (or complex128) numpy array, ``func``
sees the state in its own dtype, shape and device.

Options (``options=dict(...)``):

- ``solver``: one of ``SOLVERS`` (scipy's names, case-sensitive); default ``"LSODA"``,
  as in torchdiffeq. Anything else raises ``ValueError`` listing the valid names.
- ``max_step`` (``> 0``, may be ``inf``, the default), ``first_step`` (``> 0``; capped at
  the span ``|t[-1] - t[0]|``; default: scipy's own choice) — every solver.
- ``min_step`` (``>= 0``, default 0): LSODA only (the one scipy solver that has it); a
  positive ``min_step`` with another solver raises ``ValueError`` (0 is accepted with
  any, torchdiffeq passes it always). scipy 1.17's LSODA ignores it (scipy issue
  gh-25827; torchdiffeq's own ``TestMinMaxStep`` fails there too): a positive
  ``min_step`` then gives a ``RuntimeWarning`` (``lsoda_honours_min_step`` probes it).
- ``max_num_steps`` (default 100000) bounds the accepted steps (scipy's rejected steps are
  not visible); more raise ``MaxStepsExceededError``. ``record_steps=True`` fills
  ``stats.accepted_ts`` with the accepted steps' end times (``rejected_ts`` stays empty).

Semantics, as torchdiffeq's ``scipy_solver`` except where noted:

- **Forward only.** The result is built from scipy's numpy arrays: it is detached, no
  gradient flows back through it to ``y0``, ``t`` or ``func``'s parameters. When one of
  them would need one (``y0`` or an ``nn.Module`` ``func``'s parameters require grad, or
  ``t`` does, with grad mode on), the solve runs as torchdiffeq's does but warns once per
  call site that no gradient flows (``hyperode.odeint.solve`` warns; the whole solution,
  ``ys[0]`` included, has no graph, so a ``backward()`` through it fails loudly instead
  of giving partial gradients). ``odeint_adjoint(..., method="scipy_solver")`` does give gradients:
  its forward solve and its backward adjoint solve (which uses ``scipy_solver`` too, with
  the same options, unless ``adjoint_method`` says otherwise) need no graph through the
  solver, only vector-Jacobian products of ``func`` at single points. The backward state
  holds the parameter adjoints, so ``adjoint_rtol``/``adjoint_atol`` must be floats.
- **Complex states** work with the solvers scipy supports them for: ``RK45``, ``RK23``,
  ``DOP853`` and ``BDF`` (``COMPLEX_SOLVERS``); ``Radau`` and ``LSODA`` raise
  ``ValueError`` naming the solver. (torchdiffeq's own scipy test skips Radau and LSODA
  for complex states the same way.)
- **Tolerances** may be per element (tensors over the state, converted to numpy arrays).
  scipy's ``Radau`` and ``BDF`` take a scalar ``rtol`` only (``atol`` may be per
  element): an ``rtol`` tensor that is not constant raises ``ValueError`` for them. scipy
  raises ``rtol`` below ``100 * eps`` to that value with a warning.
- **dtype.** scipy integrates in float64 (complex128); a float32 (complex64) state is cast
  for each evaluation of ``func`` and the result cast back: the accuracy is then bounded
  by ``func``'s float32 round-off, so ask for ``rtol`` of about ``1e-6`` or looser.
- **Failure.** When scipy does not reach ``t[-1]`` (``sol.success`` false) a
  ``SolverError`` carries scipy's message, the last time reached (the end of the last
  accepted step) and the solver's name; when ``func`` returned a non-finite value on the
  way it is a ``NonFiniteStateError`` (a ``SolverError``). torchdiffeq returns a
  mis-shaped or partial result instead. An exception raised by ``func`` propagates
  unchanged.
- **Statistics.** ``nfe`` counts every evaluation (the Jacobian's finite differences of
  Radau, BDF and LSODA included); ``accepted`` is the number of accepted steps (counted by
  wrapping scipy's solver class; ``rejected`` stays 0: scipy retries rejected steps
  inside a step); ``n_jacobian`` and ``n_lu`` are scipy's ``njev`` and ``nlu``.
- ``t`` of length 1 returns ``y0`` without calling ``func``; events
  (``event_fn``) and step callbacks are not supported (``solve`` refuses events, step
  callbacks set on ``func`` are ignored with a warning).
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor

from ...errors import MaxStepsExceededError, NonFiniteStateError, SolverError, user_stacklevel
from ..stats import SolverStats

SOLVERS = ("RK45", "RK23", "DOP853", "Radau", "BDF", "LSODA")
COMPLEX_SOLVERS = frozenset({"RK45", "RK23", "DOP853", "BDF"})
SCALAR_RTOL_SOLVERS = frozenset({"Radau", "BDF"})
DEFAULT_SOLVER = "LSODA"
_DEFAULT_MAX_NUM_STEPS = 100_000  # as hyperode.solvers.config.DEFAULT_MAX_NUM_STEPS


def _number(name: str, value: Any, *, allow_zero: bool = False,
            allow_inf: bool = False) -> float:
    if isinstance(value, Tensor) and value.numel() == 1 and not value.is_complex():
        value = float(value.detach())
    ok = isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool)
    if ok:
        value = float(value)
        ok = not math.isnan(value) and (value >= 0 if allow_zero else value > 0) \
            and (allow_inf or math.isfinite(value))
    if not ok:
        need = (">= 0" if allow_zero else "> 0") + (" (or inf)" if allow_inf else "")
        kind = "a number" if allow_inf else "a finite number"
        raise ValueError(f"options[{name!r}] must be {kind} {need}, got {value!r}")
    return cast(float, value)  # float(value) above


class ScipySolver:
    """``scipy_solver``: the whole solve by ``scipy.integrate.solve_ivp`` (see the module
    docstring). ``ScipySolver(solver=..., min_step=..., ...)`` validates like
    ``options`` does; ``odeint`` builds one per solve through ``configure``."""

    name = "scipy_solver"
    external = True  # integrates by itself: resolve() hands it the solve (kind "external")
    option_names = frozenset({"solver", "min_step", "max_step", "first_step", "max_num_steps",
                              "record_steps"})

    def __init__(self, solver: str = DEFAULT_SOLVER, *, min_step: Any = 0.0,
                 max_step: Any = math.inf, first_step: Any = None,
                 max_num_steps: Any = _DEFAULT_MAX_NUM_STEPS, record_steps: Any = False):
        if not isinstance(solver, str) or solver not in SOLVERS:
            raise ValueError(f"options['solver'] = {solver!r} is not a scipy solver; use one of "
                             f"{', '.join(SOLVERS)} (default {DEFAULT_SOLVER})")
        self.solver = solver
        self.min_step = _number("min_step", min_step, allow_zero=True)
        self.max_step = _number("max_step", max_step, allow_inf=True)
        self.first_step = None if first_step is None else _number("first_step", first_step)
        if self.min_step > 0 and solver != "LSODA":
            raise ValueError(f"options['min_step'] = {self.min_step!r} applies only to "
                             f"options['solver'] = 'LSODA' (scipy's {solver} has no minimum "
                             f"step); drop it or use LSODA")
        if self.min_step > self.max_step:
            raise ValueError(f"options['min_step'] = {self.min_step!r} exceeds "
                             f"options['max_step'] = {self.max_step!r}")
        n = max_num_steps
        if isinstance(n, Tensor) and n.numel() == 1 and not n.is_floating_point():
            n = int(n)
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"options['max_num_steps'] must be an int >= 1, got {n!r}")
        self.max_num_steps = int(n)
        if not isinstance(record_steps, bool):
            raise ValueError(f"options['record_steps'] must be True or False, "
                             f"got {record_steps!r}")
        self.record_steps = record_steps

    def configure(self, options: dict[str, Any], rtol: float | Tensor,
                  atol: float | Tensor) -> ScipySolver:
        """A new instance with ``options`` (names already checked against
        ``option_names``); ``ValueError`` naming the option on a bad value, or when
        ``rtol`` varies over the state for a solver that takes a scalar one."""
        out = ScipySolver(
            options.get("solver", self.solver), min_step=options.get("min_step", self.min_step),
            max_step=options.get("max_step", self.max_step),
            first_step=options.get("first_step", self.first_step),
            max_num_steps=options.get("max_num_steps", self.max_num_steps),
            record_steps=options.get("record_steps", self.record_steps))
        if out.solver in SCALAR_RTOL_SOLVERS and isinstance(rtol, Tensor) and rtol.numel() > 1:
            flat = rtol.reshape(-1)
            if not bool((flat == flat[0]).all()):
                raise ValueError(f"rtol varies over the state, but scipy's {out.solver} "
                                 f"(options['solver']) takes one scalar rtol (atol may vary); "
                                 f"use RK45, RK23, DOP853 or LSODA, or a float rtol")
        return out

    def integrate(self, f: Any, y0: Tensor, t_list: list[float], rtol: float | Tensor,
                  atol: float | Tensor, stats: SolverStats) -> list[Tensor]:
        """The state at each of ``t_list`` (detached; ``[0]`` is ``y0``'s value), by
        ``solve_ivp``. ``f(t: float, y) -> dy/dt`` on states shaped like ``y0``."""
        dtype, device, shape = y0.dtype, y0.device, y0.shape
        if dtype.is_complex and self.solver not in COMPLEX_SOLVERS:
            raise ValueError(f"y0 is complex ({dtype}) but scipy's {self.solver} "
                             f"(options['solver']) integrates real states only; use one of "
                             f"{', '.join(s for s in SOLVERS if s in COMPLEX_SOLVERS)}, or "
                             f"split y0 into real and imaginary parts")
        if self.record_steps:
            stats.accepted_ts, stats.rejected_ts = [], []
        if len(t_list) == 1:
            return [y0.detach().clone()]

        from scipy.integrate import solve_ivp

        np_dtype = np.complex128 if dtype.is_complex else np.float64
        t0, t_end = t_list[0], t_list[-1]
        bad_f: list[float] = []  # the first time at which f returned a non-finite value
        in_f = [False]  # an exception raised while this is set is func's: it propagates

        def fun(t: float, y: np.ndarray) -> np.ndarray:
            y_t = torch.tensor(y, dtype=dtype, device=device).reshape(shape)
            in_f[0] = True
            with torch.no_grad():
                out = f(float(t), y_t)
            in_f[0] = False
            arr = np.array(out.detach().reshape(-1).cpu().numpy(), dtype=np_dtype)
            if not bad_f and not np.isfinite(arr).all():
                bad_f.append(float(t))
            return arr

        progress = _Progress(self.max_num_steps, stats.accepted_ts)
        options: dict[str, Any] = {"max_step": self.max_step}
        if self.solver == "LSODA":
            options["min_step"] = self.min_step
            if self.min_step > 0 and not lsoda_honours_min_step():
                import scipy

                warnings.warn(f"options['min_step'] = {self.min_step!r} has no effect: scipy "
                              f"{scipy.__version__}'s LSODA ignores min_step (scipy issue "
                              f"gh-25827)", RuntimeWarning, stacklevel=user_stacklevel())
        if self.first_step is not None:
            options["first_step"] = min(self.first_step, abs(t_end - t0))
        y0_np = np.array(y0.detach().reshape(-1).cpu().numpy(), dtype=np_dtype)
        what = f"scipy_solver ({self.solver})"

        def where() -> str:
            return (f"from t={t0!r} towards t={t_end!r}; the last accepted step ended at "
                    f"t={progress.t!r} after {progress.steps} steps, {f.nfe} evaluations")

        def non_finite(cause: str, *, reached: bool = True) -> NonFiniteStateError:
            span = where() if reached else f"solving from t={t0!r} to t={t_end!r}"
            return NonFiniteStateError(
                f"{what} {cause} ({span}); func returned a non-finite value (NaN/inf) at "
                f"t={bad_f[0]!r}: the vector field may blow up there")

        try:
            # solve_ivp takes an OdeSolver subclass as method (scipy's docs); its stub says str
            sol = solve_ivp(fun, (t0, t_end), y0_np,
                            method=_counting(self.solver, progress),  # pyright: ignore[reportArgumentType]
                            t_eval=np.array(t_list, dtype=np.float64), rtol=_tol(rtol),
                            atol=_tol(atol), **options)
        except (ValueError, ArithmeticError, np.linalg.LinAlgError) as e:
            # scipy's own failure on non-finite values (e.g. BDF's LU: "array must not
            # contain infs or NaNs"); func's exceptions and bad arguments pass unchanged
            if in_f[0] or not bad_f:
                raise
            raise non_finite(f"failed: {type(e).__name__}: {e}") from e
        finally:
            stats.accepted += progress.steps
        stats.n_jacobian += int(sol.njev)
        stats.n_lu += int(sol.nlu)
        if not sol.success or sol.y.shape[1] != len(t_list):
            if bad_f:
                raise non_finite(f"failed: {sol.message}")
            hint = "the solution may blow up there" if self.solver in ("Radau", "BDF") else \
                "the solution may blow up there, or the problem be stiff (try Radau or BDF)"
            raise SolverError(f"{what} failed: {sol.message} ({where()}); {hint}")
        if bad_f and not np.isfinite(sol.y).all():
            raise non_finite("returned a non-finite state", reached=False)
        ys = torch.from_numpy(np.ascontiguousarray(sol.y.T)).to(device=device, dtype=dtype)
        return list(ys.reshape(len(t_list), *shape).unbind(0))

    def __repr__(self) -> str:
        return (f"ScipySolver(solver={self.solver!r}, min_step={self.min_step!r}, "
                f"max_step={self.max_step!r}, first_step={self.first_step!r})")


@functools.cache
def lsoda_honours_min_step() -> bool:
    """Whether the installed scipy's LSODA applies ``min_step`` (scipy 1.17's C port of
    LSODA drops it, scipy issue gh-25827): one tiny probe solve (~5 ms), done once."""
    from scipy.integrate import solve_ivp

    def nfev(min_step: float) -> int:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sol = solve_ivp(lambda t, y: np.cos(40.0 * t) * np.ones_like(y), (0.0, 1.0),
                            np.zeros(1), method="LSODA", min_step=min_step, rtol=1e-10,
                            atol=1e-12)
        return int(sol.nfev)

    return nfev(0.25) < nfev(0.0) // 2


def _tol(value: float | Tensor) -> float | np.ndarray:
    """A tolerance for scipy: a float, or a float64 array over the flat state (a constant
    tensor becomes its float, which every solver accepts)."""
    if not isinstance(value, Tensor):
        return float(value)
    arr = value.detach().reshape(-1).to("cpu", torch.float64).numpy().copy()
    return float(arr[0]) if arr.size and (arr == arr[0]).all() else arr


class _Progress:
    """Accepted steps of one solve, seen by the solver class ``_counting`` makes."""

    def __init__(self, max_num_steps: int, accepted_ts: list[float] | None):
        self.max_num_steps = max_num_steps
        self.accepted_ts = accepted_ts
        self.steps = 0
        self.t: float | None = None


def _counting(solver: str, progress: _Progress) -> type:
    """scipy's ``solver`` class with ``step`` counting accepted steps into ``progress``
    (``solve_ivp`` takes an ``OdeSolver`` subclass as ``method``)."""
    from scipy.integrate import (
        BDF,
        DOP853,
        LSODA,
        RK23,
        RK45,
        Radau,
    )

    base = {"RK45": RK45, "RK23": RK23, "DOP853": DOP853, "Radau": Radau, "BDF": BDF,
            "LSODA": LSODA}[solver]

    def step(self: Any) -> str | None:
        if progress.t is None:
            progress.t = float(self.t)
        if progress.steps >= progress.max_num_steps:
            raise MaxStepsExceededError(
                f"scipy_solver ({solver}) reached max_num_steps = {progress.max_num_steps} "
                f"accepted steps at t={float(self.t)!r} before t={float(self.t_bound)!r}; "
                f"raise options['max_num_steps'], loosen rtol/atol, or try a stiff solver")
        message = base.step(self)
        if self.status != "failed":
            progress.steps += 1
            progress.t = float(self.t)
            if progress.accepted_ts is not None:
                progress.accepted_ts.append(progress.t)
        return message

    return type(f"Counting{solver}", (base,), {"step": step})


scipy_solver = ScipySolver()
"""The registered method (``METHODS["scipy_solver"]``)."""
