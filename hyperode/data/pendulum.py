"""Ideal pendulum trajectories for Hamiltonian neural networks.

Unit mass, length and gravity: ``H(q, p) = p^2 / 2 + (1 - cos q)``, so::

    dq/dt = p,        dp/dt = -sin q.

Initial conditions are drawn in polar form in the ``(q, p)`` plane (as in
Greydanus et al.'s HNN pendulum): radius ``r ~ U(r_min, r_max)`` (default
``[0.5, 1.5]``: energies 0.12 to 1.13, all oscillations below the separatrix
``H = 2``) and angle ``U(0, 2 pi)``. Each trajectory is integrated with
``scipy.integrate.solve_ivp`` (DOP853, ``rtol = 1e-10``, ``atol = 1e-10``) and
sampled at ``n_times`` evenly spaced times in ``[0, t_end]``; optional Gaussian
observation noise of standard deviation ``noise`` is added afterwards (the
initial state included, as it is also an observation).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ._checks import check_int, check_real, check_seed, train_test_rngs


@dataclass(frozen=True, eq=False)
class TrajectorySplit:
    """Trajectories on a shared time grid.

    Attributes:
        times: float32 ``[T]``, ``times[0] = 0``.
        x_train: float32 ``[N_train, T, 2]`` states ``(q, p)``.
        x_test: float32 ``[N_test, T, 2]``.
    """

    times: Tensor
    x_train: Tensor
    x_test: Tensor


def pendulum_energy(states: Tensor | np.ndarray) -> Tensor | np.ndarray:
    """``H = p^2 / 2 + 1 - cos q`` of states ``[..., 2]``."""
    q, p = states[..., 0], states[..., 1]
    cos = torch.cos(q) if isinstance(q, Tensor) else np.cos(q)
    return p * p / 2 + 1 - cos


def _field(t: float, y: np.ndarray) -> np.ndarray:
    qp = y.reshape(-1, 2)
    return np.stack([qp[:, 1], -np.sin(qp[:, 0])], axis=1).reshape(-1)


def simulate_pendulum(y0: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Exact-to-1e-10 trajectories ``[N, T, 2]`` from ``y0 [N, 2]`` at ``times [T]``."""
    from scipy.integrate import solve_ivp

    y0 = np.asarray(y0, dtype=np.float64)
    times = np.asarray(times, dtype=np.float64)
    sol = solve_ivp(_field, (float(times[0]), float(times[-1])), y0.reshape(-1), t_eval=times,
                    method="DOP853", rtol=1e-10, atol=1e-10)
    if not sol.success:  # pragma: no cover - a smooth, bounded field
        raise RuntimeError(f"pendulum: solve_ivp failed: {sol.message}")
    return sol.y.reshape(len(y0), 2, len(times)).transpose(0, 2, 1)


def _sample(n: int, times: np.ndarray, r_min: float, r_max: float, noise: float,
            g: np.random.Generator) -> np.ndarray:
    radius = g.uniform(r_min, r_max, n)
    angle = g.uniform(0.0, 2.0 * np.pi, n)
    y0 = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    x = simulate_pendulum(y0, times)
    if noise > 0:
        x = x + noise * g.standard_normal(x.shape)
    return x


def pendulum(n_train: int = 256, n_test: int = 128, seed: int = 0, *, n_times: int = 20,
             t_end: float = 3.0, r_min: float = 0.5, r_max: float = 1.5,
             noise: float = 0.0) -> TrajectorySplit:
    """Pendulum trajectories ``(q, p)`` on ``n_times`` evenly spaced times in ``[0, t_end]``.

    Deterministic given the arguments; training and test trajectories come from
    independent random streams of ``seed``. See the module docstring.
    """
    n_train = check_int("n_train", n_train, 1)
    n_test = check_int("n_test", n_test, 1)
    n_times = check_int("n_times", n_times, 2)
    t_end = check_real("t_end", t_end, low=0.0, low_open=True)
    r_min = check_real("r_min", r_min, low=0.0)
    r_max = check_real("r_max", r_max, low=r_min)
    noise = check_real("noise", noise, low=0.0)
    times = np.linspace(0.0, t_end, n_times)
    train_rng, test_rng = train_test_rngs(check_seed(seed), "pendulum")
    x_train = _sample(n_train, times, r_min, r_max, noise, train_rng)
    x_test = _sample(n_test, times, r_min, r_max, noise, test_rng)
    return TrajectorySplit(
        times=torch.from_numpy(times.astype(np.float32)),
        x_train=torch.from_numpy(x_train.astype(np.float32)),
        x_test=torch.from_numpy(x_test.astype(np.float32)),
    )
