"""Reference initial value problems for the accuracy tests (not a test file).

Each ``Problem`` carries a torch vector field ``f(t, y)`` that acts on the last
dimension of ``y`` (so a batch ``[B, dim]`` of states works too), an initial state
``y0`` (float64, shape ``[dim]``), a time span ``(t0, t1)`` and, where one is known,
an analytic solution ``exact(t) -> ndarray [len(t), dim]``. ``scipy_reference``
gives a DOP853 reference at rtol = atol = 1e-12 for the problems without one (and
to cross-check those with one).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.integrate
import scipy.linalg
import torch
from torch import Tensor

DTYPE = torch.float64


@dataclass(frozen=True, eq=False)  # compared and hashed by identity (caching)
class Problem:
    name: str
    f: Callable[[Tensor, Tensor], Tensor]
    y0: Tensor
    t0: float
    t1: float
    exact: Callable[[np.ndarray], np.ndarray] | None = None

    @property
    def dim(self) -> int:
        return self.y0.shape[-1]

    def times(self, n: int) -> Tensor:
        """``n`` equally spaced times over the span (float64)."""
        return torch.linspace(self.t0, self.t1, n, dtype=DTYPE)

    def reference(self, t: np.ndarray | Tensor) -> np.ndarray:
        """The analytic solution if there is one, else the scipy DOP853 reference."""
        t = np.asarray(t.detach().cpu().numpy() if isinstance(t, Tensor) else t, dtype=float)
        if self.exact is not None:
            return self.exact(t)
        return scipy_reference(self, t)

    def __repr__(self) -> str:  # readable pytest ids
        return self.name


def _stack(*parts: Tensor) -> Tensor:
    return torch.stack(parts, dim=-1)


# --------------------------------------------------------------------------- linear 2x2

LINEAR_A = np.array([[-0.5, 2.0], [-1.0, -0.3]])


def _linear_f(t: Tensor, y: Tensor) -> Tensor:
    A = torch.as_tensor(LINEAR_A, dtype=y.dtype, device=y.device)
    return y @ A.T


def _linear_exact(t: np.ndarray) -> np.ndarray:
    y0 = np.array([1.0, -0.5])
    return np.stack([scipy.linalg.expm(LINEAR_A * ti) @ y0 for ti in np.atleast_1d(t)])


LINEAR = Problem("linear2x2", _linear_f, torch.tensor([1.0, -0.5], dtype=DTYPE), 0.0, 4.0,
                 _linear_exact)

# --------------------------------------------------------------------------- harmonic oscillator

OMEGA = 2.0


def _harmonic_f(t: Tensor, y: Tensor) -> Tensor:
    return _stack(y[..., 1], -(OMEGA**2) * y[..., 0])


def _harmonic_exact(t: np.ndarray) -> np.ndarray:
    x0, v0 = 1.0, 0.5
    t = np.atleast_1d(t)
    x = x0 * np.cos(OMEGA * t) + v0 / OMEGA * np.sin(OMEGA * t)
    v = -x0 * OMEGA * np.sin(OMEGA * t) + v0 * np.cos(OMEGA * t)
    return np.stack([x, v], axis=-1)


HARMONIC = Problem("harmonic", _harmonic_f, torch.tensor([1.0, 0.5], dtype=DTYPE), 0.0, 5.0,
                   _harmonic_exact)

# --------------------------------------------------------------------------- non-autonomous scalar


def _gauss_f(t: Tensor, y: Tensor) -> Tensor:
    return -2.0 * t * y


def _gauss_exact(t: np.ndarray) -> np.ndarray:
    return np.exp(-np.atleast_1d(t) ** 2)[:, None]


GAUSSIAN = Problem("gaussian", _gauss_f, torch.tensor([1.0], dtype=DTYPE), 0.0, 2.5, _gauss_exact)

# ------------------------------------------------------------- nonlinear, non-autonomous
# y' = y^2 sin t  ->  y(t) = 1 / (cos t + C);  y(0) = 1/3 gives C = 2.


def _riccati_f(t: Tensor, y: Tensor) -> Tensor:
    return y * y * torch.sin(t)


def _riccati_exact(t: np.ndarray) -> np.ndarray:
    return (1.0 / (np.cos(np.atleast_1d(t)) + 2.0))[:, None]


RICCATI = Problem("riccati", _riccati_f, torch.tensor([1.0 / 3.0], dtype=DTYPE), 0.0, 6.0,
                  _riccati_exact)

# --------------------------------------------------------------------------- Lotka–Volterra

LV_ALPHA, LV_BETA, LV_DELTA, LV_GAMMA = 1.5, 1.0, 1.0, 3.0


def _lv_f(t: Tensor, y: Tensor) -> Tensor:
    x, p = y[..., 0], y[..., 1]
    return _stack(LV_ALPHA * x - LV_BETA * x * p, LV_DELTA * x * p - LV_GAMMA * p)


LOTKA_VOLTERRA = Problem("lotka_volterra", _lv_f, torch.tensor([1.0, 1.0], dtype=DTYPE), 0.0,
                         10.0, None)

# --------------------------------------------------------------------------- eccentric Kepler orbit
# Unit semi-major axis and mu = 1 (period 2*pi), starting at periapsis.

KEPLER_E = 0.6


def _kepler_f(t: Tensor, y: Tensor) -> Tensor:
    q1, q2, p1, p2 = y[..., 0], y[..., 1], y[..., 2], y[..., 3]
    r3 = (q1 * q1 + q2 * q2) ** 1.5
    return _stack(p1, p2, -q1 / r3, -q2 / r3)


def kepler_state(t: np.ndarray, e: float = KEPLER_E) -> np.ndarray:
    """Exact state (q1, q2, p1, p2) at times ``t`` via Kepler's equation E - e sin E = t."""
    M = np.atleast_1d(np.asarray(t, dtype=float))
    E = M + e * np.sin(M)  # good start; Newton converges quadratically from here
    for _ in range(50):
        dE = (E - e * np.sin(E) - M) / (1.0 - e * np.cos(E))
        E = E - dE
        if np.max(np.abs(dE)) < 1e-16:
            break
    s = np.sqrt(1.0 - e * e)
    denom = 1.0 - e * np.cos(E)
    return np.stack([np.cos(E) - e, s * np.sin(E), -np.sin(E) / denom, s * np.cos(E) / denom],
                    axis=-1)


def _kepler_y0(e: float = KEPLER_E) -> Tensor:
    return torch.tensor([1.0 - e, 0.0, 0.0, np.sqrt((1.0 + e) / (1.0 - e))], dtype=DTYPE)


KEPLER = Problem("kepler", _kepler_f, _kepler_y0(), 0.0, 2.0 * np.pi, kepler_state)

# --------------------------------------------------------------------------- time-warped Kepler
# z(t) = kepler(phi(t)) with phi(t) = t + W sin t solves z' = phi'(t) f_kepler(z): a nonlinear,
# non-autonomous system with a known solution (so the stage times c_i matter).

WARP = 0.3


def _warped_kepler_f(t: Tensor, y: Tensor) -> Tensor:
    return (1.0 + WARP * torch.cos(t)) * _kepler_f(t, y)


def _warped_kepler_exact(t: np.ndarray) -> np.ndarray:
    t = np.atleast_1d(np.asarray(t, dtype=float))
    return kepler_state(t + WARP * np.sin(t))


WARPED_KEPLER = Problem("warped_kepler", _warped_kepler_f, _kepler_y0(), 0.0, 3.0,
                        _warped_kepler_exact)

# --------------------------------------------------------------------------- collections

ALL = (LINEAR, HARMONIC, GAUSSIAN, RICCATI, LOTKA_VOLTERRA, KEPLER, WARPED_KEPLER)
EASY = (LINEAR, HARMONIC, GAUSSIAN)


def numpy_field(problem: Problem) -> Callable[[float, np.ndarray], np.ndarray]:
    """The problem's vector field on numpy arrays (for scipy)."""

    def f(t: float, y: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = problem.f(torch.tensor(t, dtype=DTYPE), torch.from_numpy(np.asarray(y, float)))
        return out.numpy()

    return f


@functools.lru_cache(maxsize=64)
def _cached_reference(problem: Problem, t_key: tuple[float, ...]) -> np.ndarray:
    t_eval = np.asarray(t_key)
    sol = scipy.integrate.solve_ivp(
        numpy_field(problem), (problem.t0, float(t_eval[-1])), problem.y0.numpy(),
        method="DOP853", t_eval=t_eval, rtol=1e-12, atol=1e-12,
    )
    if not sol.success:
        raise RuntimeError(f"scipy reference for {problem.name} failed: {sol.message}")
    return sol.y.T.copy()


def scipy_reference(problem: Problem, t_eval: np.ndarray | Tensor) -> np.ndarray:
    """``solve_ivp(method="DOP853", rtol=1e-12, atol=1e-12)`` from ``problem.y0`` at
    ``problem.t0``, evaluated at ``t_eval`` (monotonic, inside the span from ``t0``, ending
    after ``t0``); returns ``[len(t_eval), dim]``. Cached per problem and times."""
    t = np.asarray(t_eval.detach().cpu().numpy() if isinstance(t_eval, Tensor) else t_eval,
                   dtype=float)
    return _cached_reference(problem, tuple(float(x) for x in t)).copy()
