"""The Adams family on fixed grids: ``explicit_adams`` and ``implicit_adams`` (torchdiffeq's
names and semantics; ``fixed_adams`` is an alias of ``implicit_adams``), correct on
non-uniform grids.

For ``y' = f(t, y)`` with ``y`` the state tensor (the integrators' flat state, shape
``[n]``; any shape works, real or complex; ``f(t, y)`` has ``y``'s shape) and past
values ``f_{n-j} = f(t_{n-j}, y_{n-j})``, a step of signed size ``h`` from ``t_n``
integrates the polynomial ``P`` that interpolates ``f`` at the ``k`` most recent times::

    Adams–Bashforth (k steps):  y_{n+1} = y_n + h * sum_{j=0}^{k-1} beta_j f_{n-j}
    Adams–Moulton (corrector):  y_{n+1} = y_n + h * (beta*_{-1} f(t_{n+1}, y_{n+1})
                                                     + sum_{j=0}^{k-1} beta*_j f_{n-j})

    beta_j = (1/h) * integral_{t_n}^{t_n+h} L_j(s) ds

with ``L_j`` the Lagrange basis polynomial of node ``t_{n-j}`` (for the corrector the
nodes also include ``t_{n+1} = t_n + h``). On a uniform grid these are the classical
constant coefficients (``beta = 23/12, -16/12, 5/12`` for ``k = 3``, …), computed here
once per order as exact rationals. On a non-uniform grid torchdiffeq keeps using the
constant ones, which is wrong (its global error is then O(h^2) at best on a smoothly
graded grid, about O(h) on a jittered one, whatever ``max_order``); here the weights are
recomputed for the actual past times (numpy float64, Gauss–Legendre quadrature of the
Lagrange basis, exact for these polynomial degrees; ~15 us per set). Steps equal to
within ``1e-12`` relative, plus the round-off of the times themselves, count as uniform
and use the cached constants. The combination itself is a chain of fused
``add(..., alpha=h*beta_j)`` kernels with Python float weights: no host synchronisation
except the corrector's convergence test.

Semantics, as torchdiffeq's ``fixed_adams``/``implicit_adams`` and ``explicit_adams``:

- Variable order. The history of ``f`` values grows by one per step up to
  ``max_order - 1`` values (the current ``f_n`` included); the step uses them all,
  ``k = min(len(history), max_order - 1)``. While fewer than 3 values exist (the first
  two steps) the step is the RK4 3/8 rule (``rk4_38``, torchdiffeq's
  ``rk4_alt_step_func``). So ``max_order = 12`` (the default) runs AB3…AB11 predictors
  with AM4…AM12 correctors; ``max_order < 4`` never leaves RK4 (a warning says so, as in
  torchdiffeq); ``max_order > 12`` is an error.
- ``implicit_adams`` is PE(CE)^m: predict with Adams–Bashforth, then iterate the
  Adams–Moulton corrector by functional (fixed-point) iteration, at most ``max_iters``
  times (default 4), stopping once ``max_i |dy_new - dy_old|_i / (atol_i + rtol_i *
  max(|dy_old|_i, |dy_new|_i)) < 1`` — torchdiffeq's rule, on the increments
  ``dy = y_{n+1} - y_n``, with the solve's ``rtol``/``atol``. The next step starts with a
  fresh ``f(t_{n+1}, y_{n+1})`` (the final E), so each step costs 1 + (iterations)
  evaluations; ``explicit_adams`` costs 1.
- If the iteration does not converge, the step still returns the last corrector
  iterate, and when it is accepted the history does not grow that step (its oldest
  value is dropped as the new one is pushed, as torchdiffeq's ``prev_f.pop()`` does):
  the order is not raised for the next step. A ``RuntimeWarning`` naming the step's
  times is issued for the first such step of a solve (torchdiffeq warns every time
  with one fixed message, which Python's filter then shows once). The test scales the
  tolerance by the increments, not the state, so with small steps and the default
  ``rtol = 1e-7`` it can be strict: ``max_iters`` bounds the cost either way. For a
  complex state ``|.|`` is the modulus (torchdiffeq tests real and imaginary parts
  separately).
- Stability: the explicit methods' stability regions shrink fast with the order (on
  the negative real axis AB3 is stable for ``|h*lambda| < 0.55``, AB5 for ``0.16``,
  AB11 — ``explicit_adams``'s default ``max_order = 12`` — only for about ``0.0034``),
  so ``explicit_adams`` with the default order needs very small steps, as in
  torchdiffeq; ``max_order = 4..6`` suits moderate steps.

``order`` reports 4, as torchdiffeq does. Observed global orders (float64, smooth
problem, uniform or smoothly graded grids): ``explicit_adams`` 3 with ``max_order=4``
(AB3 throughout) and 4 with ``max_order >= 5`` (the ramp's one AB3 step caps it);
``implicit_adams`` with a converged corrector 4 with ``max_order=4`` and about 5 with
``max_order >= 6`` (capped by the RK4 start-up and the AM4 step). Dense output inside a
step is the cubic Hermite interpolant.
"""

from __future__ import annotations

import numbers
import warnings
from collections import deque
from collections.abc import Sequence
from fractions import Fraction
from functools import cache
from itertools import islice
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor

from ..stats import SolverStats
from ..step import Field, HermiteDense, StepResult, combine, rk_step
from .explicit import rk4_38

_MIN_ORDER = 4  # below this max_order the method is RK4 throughout
_MAX_ORDER = 12
_MIN_HISTORY = 3  # fewer f values than this: an RK4 (3/8 rule) step
_DEFAULT_MAX_ORDER = 12
_DEFAULT_MAX_ITERS = 4
_DEFAULT_RTOL = 1e-7  # odeint's defaults, for a method used without configure()
_DEFAULT_ATOL = 1e-9
# Past steps equal to h within this (relative) plus the round-off of the times count as
# uniform: the classical coefficients are then exact up to that round-off.
_UNIFORM_RTOL = 1e-12
_EPS = float(np.finfo(np.float64).eps)


# --------------------------------------------------------------------------- weights

def _exact_weights(nodes: tuple[int, ...]) -> tuple[float, ...]:
    """``integral_0^1 L_j(x) dx`` for the Lagrange basis on integer ``nodes``, as exact
    rationals rounded once to float64."""
    out = []
    for j, xj in enumerate(nodes):
        poly = [Fraction(1)]  # coefficients of prod_{m != j} (x - x_m), lowest degree first
        denom = Fraction(1)
        for m, xm in enumerate(nodes):
            if m == j:
                continue
            new = [Fraction(0)] * (len(poly) + 1)
            for i, c in enumerate(poly):
                new[i] -= c * xm
                new[i + 1] += c
            poly = new
            denom *= xj - xm
        out.append(float(sum(c / (i + 1) for i, c in enumerate(poly)) / denom))
    return tuple(out)


@cache
def classical_weights(k: int, corrector: bool) -> tuple[float, ...]:
    """The constant-step Adams weights for ``k`` past values, newest first.

    Predictor (Adams–Bashforth, ``k`` weights for ``f_n, …, f_{n-k+1}``) or corrector
    (Adams–Moulton, ``k + 1`` weights for ``f_{n+1}, f_n, …, f_{n-k+1}``): e.g.
    ``classical_weights(2, False) == (3/2, -1/2)``.
    """
    nodes = ((1,) if corrector else ()) + tuple(-j for j in range(k))
    return _exact_weights(nodes)


@cache
def _gauss01(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss–Legendre nodes and weights on [0, 1] exact for degree < ``2n``."""
    x, w = np.polynomial.legendre.leggauss(n)
    return (x + 1.0) / 2.0, w / 2.0


def lagrange_weights(nodes: np.ndarray) -> np.ndarray:
    """``integral_0^1 L_j(x) dx`` for the Lagrange basis on distinct float ``nodes``
    (shape ``[n]``; the step's scaled times ``(t_j - t_n) / h``), shape ``[n]``.

    Gauss–Legendre quadrature with ``n // 2 + 1`` points (exact for the degree ``n - 1``
    basis), each basis polynomial evaluated as its product form: no Vandermonde system.
    """
    n = nodes.size
    xq, wq = _gauss01(n // 2 + 1)
    diff = nodes[:, None] - nodes[None, :]
    np.fill_diagonal(diff, 1.0)
    denom = diff.prod(axis=1)
    factors = np.repeat((xq[:, None] - nodes[None, :])[:, None, :], n, axis=1)  # [Q, j, m]
    idx = np.arange(n)
    factors[:, idx, idx] = 1.0
    return (wq @ factors.prod(axis=2)) / denom


def _is_uniform(times: list[float], h: float) -> bool:
    """Whether consecutive ``times`` (newest first, ``times[0] = t_n``) are spaced by
    ``-h`` within ``_UNIFORM_RTOL * |h|`` plus the round-off of the times themselves."""
    tol = _UNIFORM_RTOL * abs(h) + 8.0 * _EPS * max(abs(times[0] + h), abs(times[-1]))
    prev = times[0]
    for tj in islice(times, 1, None):
        if abs(prev - tj - h) > tol:
            return False
        prev = tj
    return True


def adams_weights(times: list[float], h: float, corrector: bool) -> tuple[float, ...]:
    """The Adams weights for a step of size ``h`` from ``times[0]`` with past ``times``
    (newest first): the classical constants when the steps are uniform, else those of
    the actual times. Predictor: one weight per time; corrector: ``t + h`` first."""
    k = len(times)
    if _is_uniform(times, h):
        return classical_weights(k, corrector)
    t = times[0]
    x = [(tj - t) / h for tj in times]
    if corrector:
        x.insert(0, 1.0)
    return tuple(lagrange_weights(np.asarray(x, dtype=np.float64)).tolist())


# --------------------------------------------------------------------------- options

def _check_int(where: str, value: Any, lo: int, hi: int | None) -> int:
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if ok:
        value = int(value)
        ok = value >= lo and (hi is None or value <= hi)
    if not ok:
        expected = f"an integer from {lo} to {hi}" if hi is not None else f"an integer >= {lo}"
        raise ValueError(f"{where}={value!r} is invalid; expected {expected}")
    return cast(int, value)  # int(value) above


# --------------------------------------------------------------------------- methods

class _Adams:
    """Shared by both Adams methods; see the module docstring for the equations.

    Args:
        max_order: 1..12 (default 12); the history holds up to ``max_order - 1``
            values of ``f``; below 4 the method is RK4 throughout (with a warning).
        max_iters: >= 1 (default 4); corrector iterations per step
            (``implicit_adams`` only; accepted and ignored by ``explicit_adams``, as in
            torchdiffeq).
        rtol, atol: the corrector's convergence tolerances: floats, or real tensors of
            the flat state's shape ``[n]``.
    """

    name: str
    order = 4
    adaptive = False
    corrections_per_step = 0
    implicit = False  # functional iteration, not a Newton solve
    corrector = False
    option_names = frozenset({"max_order", "max_iters"})

    def __init__(self, max_order: int = _DEFAULT_MAX_ORDER, max_iters: int = _DEFAULT_MAX_ITERS,
                 rtol: float | Tensor = _DEFAULT_RTOL, atol: float | Tensor = _DEFAULT_ATOL,
                 *, _where: str = "{}"):
        self.max_order = _check_int(_where.format("max_order"), max_order, 1, _MAX_ORDER)
        self.max_iters = _check_int(_where.format("max_iters"), max_iters, 1, None)
        if self.max_order < _MIN_ORDER:
            warnings.warn(f"{_where.format('max_order')}={self.max_order} is below "
                          f"{_MIN_ORDER}, so {self.name} reduces to rk4 (the 3/8 rule)",
                          UserWarning, stacklevel=3)
        self.rtol = rtol
        self.atol = atol

    def configure(self, options: dict[str, Any], rtol: float | Tensor,
                  atol: float | Tensor) -> _Adams:
        """A new instance with ``options['max_order']``/``options['max_iters']`` (others
        are ignored: the caller checks names against ``option_names``) and the solve's
        tolerances. Raises ``ValueError`` naming the option on a bad value."""
        return type(self)(options.get("max_order", self.max_order),
                          options.get("max_iters", self.max_iters), rtol, atol,
                          _where="options[{!r}]")

    def stepper(self, f: Field, stats: SolverStats) -> AdamsStepper:
        return AdamsStepper(self, f)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(max_order={self.max_order}, max_iters={self.max_iters})"


class AdamsBashforth(_Adams):
    """``explicit_adams``: variable-order Adams–Bashforth (RK4 3/8-rule start-up)."""

    name = "explicit_adams"


class AdamsBashforthMoulton(_Adams):
    """``implicit_adams`` (alias ``fixed_adams``): Adams–Bashforth predictor,
    Adams–Moulton corrector by functional iteration (RK4 3/8-rule start-up)."""

    name = "implicit_adams"
    corrector = True


class AdamsStepper:
    """One solve of an Adams method: the history of ``f`` values and their times.

    ``step`` only reads the history (a step may be retried); ``accept`` pushes the
    accepted step's ``f(t, y)``. The history lives here, so it never leaks between solves.
    """

    __slots__ = ("_fs", "_k_max", "_ts", "_unconverged", "_warned", "dense", "f", "method")

    def __init__(self, method: _Adams, f: Field):
        self.method = method
        self.f = f
        self._k_max = method.max_order - 1  # values used per step, the current one included
        # Past values kept (the current k1 comes with each step); none when RK4 throughout.
        depth = self._k_max - 1 if method.max_order >= _MIN_ORDER else 0
        self._fs: deque[Tensor] = deque(maxlen=depth)  # past f values, newest first
        self._ts: deque[float] = deque(maxlen=depth)  # their times
        self._unconverged: StepResult | None = None  # the latest step that did not converge
        self._warned = False
        self.dense = HermiteDense(f)  # y(t + theta*h) by the cubic Hermite interpolant

    def step(self, t: float, y: Tensor, h: float, k1: Tensor,
             with_error: bool = False) -> StepResult:
        """Advance ``y`` (flat, shape ``[n]``) from ``t`` by ``h`` given ``k1 = f(t, y)``.

        ``ks`` of the result starts with ``k1`` (the Hermite end slope); ``error`` and
        ``f1`` are ``None`` (no estimate; the corrector's last evaluation is at the
        previous iterate, not at ``y1``)."""
        k = min(len(self._fs) + 1, self._k_max)
        if h == 0.0:
            return StepResult(y, None, [k1])
        if k < _MIN_HISTORY:
            return rk_step(self.f, rk4_38, t, y, h, k1)
        values = [k1, *islice(self._fs, k - 1)]
        times = [t, *islice(self._ts, k - 1)]
        method = self.method
        self._unconverged = None
        dy = _weighted_sum(values, adams_weights(times, h, False), h)
        if not method.corrector:
            return StepResult(torch.add(y, dy), None, [k1])
        wm = adams_weights(times, h, True)
        delta = _weighted_sum(values, wm[1:], h)
        alpha = h * wm[0]
        t1 = t + h
        converged = False
        for _ in range(method.max_iters):
            dy_old = dy
            dy = torch.add(delta, self.f(t1, torch.add(y, dy_old)), alpha=alpha)
            converged = _converged(dy_old, dy, method.rtol, method.atol)
            if converged:
                break
        result = StepResult(torch.add(y, dy), None, [k1])
        if not converged:
            self._unconverged = result
            if not self._warned:
                self._warned = True
                warnings.warn(
                    f"{method.name}: the functional iteration of the Adams–Moulton corrector "
                    f"did not converge in max_iters={method.max_iters} iterations in the step "
                    f"from t={t!r} to t={t1!r}; the solution may be inaccurate (raise "
                    f"max_iters, loosen rtol/atol or take smaller steps; later steps of this "
                    f"solve that do not converge are not reported again)",
                    RuntimeWarning, stacklevel=2)
        return result

    def accept(self, t: float, y: Tensor, h: float, result: StepResult) -> None:
        """Push ``f(t, y) = result.ks[0]``; after a corrector that did not converge the
        history keeps its length (its oldest value goes)."""
        if h == 0.0 or self._fs.maxlen == 0:
            return
        fs, ts = self._fs, self._ts
        grows = len(fs) < cast(int, fs.maxlen)  # the deques are made with a maxlen
        fs.appendleft(result.ks[0])
        ts.appendleft(t)
        if result is self._unconverged:
            self._unconverged = None
            if grows:
                fs.pop()
                ts.pop()


@torch.no_grad()
def _converged(dy_old: Tensor, dy_new: Tensor, rtol: float | Tensor,
               atol: float | Tensor) -> bool:
    """torchdiffeq's test ``max |dy_new - dy_old| / (atol + rtol*max(|dy_old|, |dy_new|)) < 1``
    (a NaN never converges); one host synchronisation."""
    tol = torch.maximum(dy_old.abs(), dy_new.abs())
    tol.mul_(rtol).add_(atol)
    return bool(((dy_new - dy_old).abs() < tol).all())


explicit_adams = AdamsBashforth()
implicit_adams = AdamsBashforthMoulton()

METHODS = (explicit_adams, implicit_adams)
ALIASES = {"fixed_adams": "implicit_adams"}

__all__ = [
    "ALIASES", "METHODS", "AdamsBashforth", "AdamsBashforthMoulton", "AdamsStepper",
    "adams_weights", "classical_weights", "explicit_adams", "implicit_adams",
    "lagrange_weights",
]


def _weighted_sum(values: list[Tensor], weights: Sequence[float], h: float) -> Tensor:
    """``h * sum_j weights[j] * values[j]``. High-order Adams weights alternate in sign
    and grow (AB11's reach ~500), so a single-precision state is summed in double
    precision and rounded once, as torchdiffeq's float64 coefficients do."""
    v0 = values[0]
    if v0.dtype in (torch.float64, torch.complex128):
        return combine(None, values, weights, h)
    wide = torch.complex128 if v0.is_complex() else torch.float64
    return combine(None, [v.to(wide) for v in values], weights, h).to(v0.dtype)
