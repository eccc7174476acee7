"""Is a failed adaptive solve stiff? A cheap estimate for the error message only.

When an adaptive solve with an explicit method runs out of steps (``max_num_steps``) or
its step size underflows, the usual cause on a well-posed problem is stiffness: a fast,
strongly damped mode holds the step near the method's stability limit long after that
mode has decayed. ``diagnose`` checks this at the state where the solve stopped and
returns a sentence for the error message (``""`` when there is nothing to say). It is
called only on those error paths (``adaptive.integrate_adaptive``), so a successful
solve pays nothing for it.

The estimate: ``POWER_STEPS`` steps of the power iteration on the Jacobian ``J = df/dy``
at ``(t, y)``, each one Jacobian-vector product by a forward difference of ``f`` (one
evaluation; any ``f`` works, also one that runs autograd itself), from a fixed
pseudo-random vector. It gives the spectral radius ``rho`` (the growth of the iterate)
and, by the Rayleigh quotient, the real part of the dominant eigenvalue. The problem
"looks stiff" when all of

- the dominant eigenvalue is real and negative (Rayleigh quotient ``<= -0.5 rho``),
- the last step size ``h`` sits in the stability range of explicit methods,
  ``0.1 <= |h| rho <= 50`` (dopri5's limit on the negative axis is about 3.3, rk4's
  2.8, Euler's 2, dop853's about 6), and
- that mode should be long gone: ``rho * |t - t0| >= 20`` (``e^-20`` of it is left), or,
  when it is not, the remaining span would need more than ``max(100, 10 n)`` further
  steps of that size (``n`` the steps taken),

hold. For an implicit method the message instead reports its Newton failures, if any.
Everything here runs without a graph, and any exception inside is swallowed (the
original error must never be masked by its explanation).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .stats import SolverStats

POWER_STEPS = 12
_SEED = 20240611
IMPLICIT_METHODS = ("kvaerno5", "radau5", "kvaerno3")


def dominant_eigenvalue(f: Callable[[float, Tensor], Tensor], t: float, y: Tensor,
                        steps: int = POWER_STEPS) -> tuple[float, float]:
    """``(rho, re)``: the spectral radius of ``df/dy`` at ``(t, y)`` estimated by
    ``steps`` power-iteration steps (``steps + 1`` evaluations of ``f``, forward
    differences) and the Rayleigh quotient of the last iterate (the real part of the
    dominant eigenvalue when it is real). ``f`` takes a Python float and the flat state.
    """
    with torch.no_grad():
        y = y.detach()
        if y.is_complex():
            raise ValueError("complex state")
        f0 = f(t, y).detach()
        gen = torch.Generator(device=y.device).manual_seed(_SEED)
        v = torch.randn(y.shape, generator=gen, dtype=y.dtype, device=y.device)
        v /= torch.linalg.vector_norm(v)
        root = math.sqrt(torch.finfo(y.dtype).eps)
        scale = 1.0 + float(torch.linalg.vector_norm(y))
        rho = re = 0.0
        for _ in range(steps):
            eps = root * scale
            w = (f(t, y + eps * v).detach() - f0) / eps
            norm = float(torch.linalg.vector_norm(w))
            if not math.isfinite(norm):
                raise ValueError("non-finite Jacobian-vector product")
            re = float(torch.dot(v.reshape(-1), w.reshape(-1)))
            rho = norm
            if norm == 0.0:
                break
            v = w / norm
    return rho, re


def diagnose(f: Callable[[float, Tensor], Tensor], method: Any, t: float, y: Tensor,
             h: float, t0: float, t_end: float | None, stats: SolverStats,
             stepper: Any = None) -> str:
    """A sentence (starting with a space) for the error message of a failed adaptive
    solve stopped at ``(t, y)`` with last step size ``h`` after ``stats.steps``
    attempted steps from ``t0`` towards ``t_end`` (``None``: an event search); ``""``
    when there is nothing useful to say. See the module docstring; ``stepper`` (the
    solve's) may say why its last Newton solve failed (``last_newton_failure``)."""
    try:
        if getattr(method, "implicit", False):
            n = stats.newton_failures
            if not n:
                return ""
            last = getattr(stepper, "last_newton_failure", None)
            why = f" (the last {last})" if last else ""
            return (f" {n} of {getattr(method, 'name', 'its')}'s Newton solves failed{why}; "
                    f"each failure halves the step: check f for a singularity or NaN/inf "
                    f"near t={t!r}, or allow more iterations (options['max_newton_iters']).")
        rho, re = dominant_eigenvalue(f, t, y)
        return _verdict(method, rho, re, t, h, t0, t_end, stats.steps)
    except Exception:
        return ""


def _verdict(method: Any, rho: float, re: float, t: float, h: float, t0: float,
             t_end: float | None, steps: int) -> str:
    if not (rho > 0.0 and math.isfinite(rho)) or re > -0.5 * rho:
        return ""
    hr = abs(h) * rho
    if not 0.1 <= hr <= 50.0:
        return ""
    left = abs(t_end - t) if t_end is not None else math.inf
    still_needed = left / abs(h) if h else math.inf
    if rho * abs(t - t0) < 20.0 and still_needed <= max(100.0, 10.0 * steps):
        return ""
    name = getattr(method, "name", str(method))
    more = (f"; reaching t={t_end!r} at that step size would take about "
            f"{still_needed:.2g} more steps" if t_end is not None else "")
    alternatives = ", ".join(repr(m) for m in IMPLICIT_METHODS[1:])
    return (
        f" The problem looks stiff: at t={t!r} the Jacobian df/dy has a dominant eigenvalue "
        f"of about {re:.3g} (estimated by power iteration), so {name}'s step is held at "
        f"|h*lambda| = {hr:.2g}, near its stability limit, long after that mode has "
        f"decayed{more}. Use an implicit method: method={IMPLICIT_METHODS[0]!r} (or "
        f"{alternatives}; each sample of a batch then gets its own small Jacobian), or "
        f"method='scipy_solver' with options=dict(solver='Radau' | 'BDF' | 'LSODA')."
    )


__all__ = ["IMPLICIT_METHODS", "POWER_STEPS", "diagnose", "dominant_eigenvalue"]
