"""Reference initial value problems with closed-form solutions (float64).

Used by ``hyperode demo`` to show every method's error, NFE and steps against
the exact answer. Each problem's ``f`` works on batched states ``[..., d]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class ReferenceProblem:
    name: str
    f: Callable[[Tensor, Tensor], Tensor]
    y0: tuple[float, ...]
    t_end: float
    exact: Callable[[Tensor], Tensor]  # times [T] -> states [T, d]

    def initial_state(self, dtype: torch.dtype = torch.float64) -> Tensor:
        return torch.tensor(self.y0, dtype=dtype)


def _oscillator() -> ReferenceProblem:
    return ReferenceProblem(
        name="oscillator",
        f=lambda t, y: torch.stack([y[..., 1], -y[..., 0]], dim=-1),
        y0=(1.0, 0.0),
        t_end=10.0,
        exact=lambda ts: torch.stack([torch.cos(ts), -torch.sin(ts)], dim=-1),
    )


def _damped_linear() -> ReferenceProblem:
    A = torch.tensor([[-0.1, 2.0], [-2.0, -0.1]], dtype=torch.float64)
    y0 = torch.tensor([1.0, 1.0], dtype=torch.float64)
    return ReferenceProblem(
        name="damped_linear",
        f=lambda t, y: y @ A.to(y.dtype).T,
        y0=(1.0, 1.0),
        t_end=10.0,
        exact=lambda ts: torch.stack([torch.linalg.matrix_exp(A * s) @ y0 for s in ts]),
    )


def _gaussian() -> ReferenceProblem:
    # Non-autonomous: y' = -2 t y, y(0) = 1 -> y = exp(-t^2).
    return ReferenceProblem(
        name="nonautonomous",
        f=lambda t, y: -2.0 * t * y,
        y0=(1.0,),
        t_end=3.0,
        exact=lambda ts: torch.exp(-ts**2).unsqueeze(-1),
    )


def _kepler(e: float = 0.5) -> ReferenceProblem:
    """Two-body orbit with eccentricity ``e``, period 2π, starting at pericentre."""

    def f(t: Tensor, y: Tensor) -> Tensor:
        q, p = y[..., :2], y[..., 2:]
        r3 = (q * q).sum(-1, keepdim=True) ** 1.5
        return torch.cat([p, -q / r3], dim=-1)

    def exact(ts: Tensor) -> Tensor:
        rows = []
        for m in ts.tolist():
            E = m
            for _ in range(50):  # Newton on Kepler's equation E - e sin E = M
                E -= (E - e * math.sin(E) - m) / (1 - e * math.cos(E))
            x, yq = math.cos(E) - e, math.sqrt(1 - e * e) * math.sin(E)
            rdot = 1 / (1 - e * math.cos(E))
            rows.append([x, yq, -math.sin(E) * rdot, math.sqrt(1 - e * e) * math.cos(E) * rdot])
        return torch.tensor(rows, dtype=torch.float64)

    return ReferenceProblem(
        name=f"kepler_e{e:g}", f=f, y0=(1 - e, 0.0, 0.0, math.sqrt((1 + e) / (1 - e))),
        t_end=2 * math.pi, exact=exact,
    )


def reference_problems() -> list[ReferenceProblem]:
    return [_oscillator(), _damped_linear(), _gaussian(), _kepler()]
