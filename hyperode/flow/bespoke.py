"""A bespoke-style learned solver: a base Runge–Kutta method on a learned scale-time
transformation of the ODE (after Shaul et al., "Bespoke Solvers for Generative Flow
Models", ICLR 2024).

Idea. For a flow ``dx/dt = u(t, x)`` on ``[t0, t1]`` and any smooth, increasing time
reparametrisation ``t = t(r)`` (``r`` in ``[0, 1]``, ``t(0) = t0``, ``t(1) = t1``) and
positive scale ``s(r)``, the transformed path ``xbar(r) = s(r) x(t(r))`` solves

    dxbar/dr = ubar(r, xbar) = (s'(r) / s(r)) xbar + t'(r) s(r) u(t(r), xbar / s(r)),   (1)

and ``x(t1) = xbar(1) / s(1)`` *exactly*: the transformation changes the path the
solver walks along, never the end point it aims at. A base RK method of order ``p``
with ``n`` uniform steps ``h = 1/n`` in ``r`` on (1) is therefore a consistent solver
of order ``p`` for the original ODE for every smooth transformation (the RK order
conditions hold for (1), a smooth ODE); the transformation only moves the error
constant, and that is what is learned, for one field and one ``n``.

Parametrisation (one value per *node*, a time ``r`` at which some stage of some step
evaluates (1); for midpoint with ``n = 2`` the nodes are ``r = 0, 1/4, 1/2, 3/4, 1``):

- ``t`` at the nodes: ``t0`` plus the cumulative sum of a softmax of ``M - 1`` logits,
  times ``t1 - t0``, so ``t`` is strictly increasing from ``t0`` to ``t1`` by
  construction;
- ``t' = exp(.)`` at every node (positive), ``s = exp(.)`` at every node but the first
  (``s(0) = 1``: the solver starts from the given state), ``s'`` free at every node.

``4 M - 2`` parameters: 18 for Euler with 4 steps or midpoint with 2, 10 for RK4 with
one step. The values at different nodes are free (as in Shaul et al.): at a fixed ``n``
this is a small family of solvers containing the base one (``identity``
initialisation: ``t = r``, ``t' = t1 - t0``, ``s = 1``, ``s' = 0``, which reproduces
the base method on the uniform grid). Step ``i`` from ``x_i`` at ``t_i = t(r_i)``::

    xbar = s_i x_i;   kbar_j = (s'_j / s_j) xbar_j + t'_j s_j u(t_j, xbar_j / s_j),
    xbar_j = xbar + h sum_l a_jl kbar_l,   x_{i+1} = (xbar + h sum_j b_j kbar_j) / s_{i+1}

with ``(t_j, t'_j, s_j, s'_j)`` the values at the node of stage ``j``. It costs the base's
``S`` evaluations of ``u`` per step, and the first is ``u(t_i, x_i)``, which is why the
solver steps on its own grid ``t_0 < t_1 < ... < t_n`` in the original time.

As a step method (``hyperode.solvers.step.StepMethod``) it runs in the one fixed-grid
loop::

    bespoke = BespokeSolver("midpoint", num_steps=2)
    fit_bespoke(bespoke, field, x0, x_dopri5)                 # end points by dopri5
    x1 = odeint(field, x0, torch.tensor([0., 1.]), method=bespoke,
                options=dict(grid_points=bespoke.grid()))[-1]  # or bespoke.sample(field, x0)
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import cast

import torch
from torch import Tensor, nn

from ..checks import check_positive_int
from ..odeint import solve
from ..solvers.methods import get_method
from ..solvers.stats import SolverStats
from ..solvers.step import HermiteDense, StepResult, no_accept
from ..solvers.tableau import ButcherTableau
from ._checks import batch, real, same_shape

_GRID_TOL = 1e-9


def _base_tableau(base: str | ButcherTableau) -> ButcherTableau:
    if not isinstance(base, (str, ButcherTableau)):
        raise ValueError(f"BespokeSolver: base must be a method name or an explicit "
                         f"ButcherTableau, got {type(base).__name__}: {base!r}")
    try:
        tableau = get_method(base)
    except ValueError as e:
        raise ValueError(f"BespokeSolver: base {e}") from None
    if not isinstance(tableau, ButcherTableau):
        raise ValueError(f"BespokeSolver: base {base!r} is not an explicit Butcher tableau")
    return tableau


def transformed_step(u: Callable[[Tensor, Tensor], Tensor], tableau: ButcherTableau,
                     h: float, stage_nodes: Sequence[tuple[Tensor, Tensor, Tensor, Tensor]],
                     s_end: Tensor, x: Tensor, k1: Tensor) -> Tensor:
    """One step of ``tableau`` on the transformed ODE (1) (module docstring).

    Args:
        u: the field, called as ``u(t, x)`` with ``t`` a 0-dim tensor.
        h: the step in ``r`` (``1/n``).
        stage_nodes: ``(t, t', s, s')`` (0-dim tensors) at each stage's node.
        s_end: ``s`` at the step's end node.
        x: the state at the step's start (original coordinates), any shape.
        k1: ``u(t_0, x)`` (the first stage's node time).

    Returns the state at the step's end in original coordinates.
    """
    _, td0, s0, sd0 = stage_nodes[0]
    xbar = s0 * x
    kbars = [sd0 * x + (td0 * s0) * k1]  # (s'/s) xbar + t' s u, with xbar / s = x
    for j in range(1, len(tableau.c)):
        xj = xbar
        for kb, a in zip(kbars, tableau.a[j]):
            if a != 0.0:
                xj = xj + (h * a) * kb
        tj, tdj, sj, sdj = stage_nodes[j]
        xj_orig = xj / sj
        kbars.append(sdj * xj_orig + (tdj * sj) * u(tj, xj_orig))
    out = xbar
    for kb, b in zip(kbars, tableau.b):
        if b != 0.0:
            out = out + (h * b) * kb
    return out / s_end


class BespokeSolver(nn.Module):
    """A learned scale-time transformation of a base RK method (module docstring).

    Args:
        base: an explicit method (``"euler"``, ``"midpoint"``, ``"rk4"``, ... or a
            ``ButcherTableau``).
        num_steps: steps ``n``; evaluations of the field: ``n * stages``.
        t_span: ``(t0, t1)`` with ``t0 < t1`` (flows: ``(0, 1)``).

    Attributes as a step method: ``name``, ``order`` (the base's), ``adaptive`` (False),
    ``corrections_per_step`` (0: nothing but the field is evaluated), ``stages``.
    ``grid()`` gives the times it steps on (``options=dict(grid_points=...)``).
    """

    adaptive = False
    tolerance_free = True
    corrections_per_step = 0
    implicit = False

    def __init__(self, base: str | ButcherTableau = "midpoint", num_steps: int = 2,
                 t_span: tuple[float, float] = (0.0, 1.0)):
        super().__init__()
        self.base = _base_tableau(base)
        self.num_steps = check_positive_int("BespokeSolver", "num_steps", num_steps)
        try:
            t0, t1 = (float(v) for v in t_span)
        except (TypeError, ValueError):
            raise ValueError(f"BespokeSolver: t_span must be a pair (t0, t1), got "
                             f"{t_span!r}") from None
        if not (math.isfinite(t0) and math.isfinite(t1) and t1 > t0):
            raise ValueError(f"BespokeSolver: t_span must be finite with t0 < t1, got "
                             f"{t_span!r}")
        self.t_span = (t0, t1)
        nodes, stage_index, end_index = _nodes(self.base.c, self.num_steps)
        self.node_r = nodes
        self.stage_index = stage_index   # [step][stage] -> node
        self.end_index = end_index       # [step] -> node of the step's end
        m = len(nodes)
        dr = torch.tensor([b - a for a, b in itertools.pairwise(nodes)], dtype=torch.float64)
        self.time_logits = nn.Parameter(torch.log(dr))
        self.log_time_rate = nn.Parameter(torch.zeros(m, dtype=torch.float64))
        self.log_scale = nn.Parameter(torch.zeros(m - 1, dtype=torch.float64))
        self.scale_rate = nn.Parameter(torch.zeros(m, dtype=torch.float64))

    # ------------------------------------------------------------------ parameters

    @property
    def num_nodes(self) -> int:
        return len(self.node_r)

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def node_values(self, dtype: torch.dtype | None = None,
                    device: torch.device | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(t, t', s, s')`` at every node, ``[M]`` each (with a graph to the
        parameters), in the original time: ``t`` from ``t0`` to ``t1`` (ends exact),
        ``t' = dt/dr``."""
        t0, t1 = self.t_span
        inc = torch.softmax(self.time_logits, dim=0)
        frac = torch.cat([inc.new_zeros(1), torch.cumsum(inc, dim=0)[:-1], inc.new_ones(1)])
        t = t0 + (t1 - t0) * frac
        td = (t1 - t0) * torch.exp(self.log_time_rate)
        s = torch.cat([self.log_scale.new_ones(1), torch.exp(self.log_scale)])
        sd = self.scale_rate
        out = (t, td, s, sd)
        if dtype is not None or device is not None:
            out = tuple(v.to(dtype=dtype, device=device) for v in out)
        return cast("tuple[Tensor, Tensor, Tensor, Tensor]", out)

    def grid(self) -> list[float]:
        """The ``n + 1`` times it steps on (Python floats, ``t0`` and ``t1`` included)."""
        with torch.no_grad():
            t = self.node_values()[0]
        starts = [self.stage_index[i][0] for i in range(self.num_steps)]
        return [float(t[k]) for k in starts] + [self.t_span[1]]

    # ------------------------------------------------------------------ method protocol

    @property
    def name(self) -> str:
        return f"bespoke({self.base.name}, n={self.num_steps})"

    @property
    def order(self) -> int:
        return self.base.order

    @property
    def stages(self) -> int:
        return self.base.stages

    @property
    def nfe(self) -> int:
        """Evaluations of the field per solve: ``num_steps * stages``."""
        return self.num_steps * self.base.stages

    def stepper(self, f: Callable, stats: SolverStats) -> _BespokeStepper:
        """This solver on one solve (``hyperode.solvers.step.StepMethod``)."""
        return _BespokeStepper(self, f)

    def _step_nodes(self, values: tuple[Tensor, ...], i: int):
        t, td, s, sd = values
        nodes = [(t[k], td[k], s[k], sd[k]) for k in self.stage_index[i]]
        return nodes, s[self.end_index[i]]

    # ------------------------------------------------------------------ solving

    def integrate(self, vector_field: Callable[[Tensor, Tensor], Tensor], x0: Tensor) -> Tensor:
        """The end state from ``x0`` at ``t0``, differentiable in the solver's parameters
        (the fitting path; the same step as the odeint path, times kept as tensors)."""
        values = self.node_values(x0.dtype, x0.device)
        h = 1.0 / self.num_steps
        x = x0
        for i in range(self.num_steps):
            nodes, s_end = self._step_nodes(values, i)
            k1 = vector_field(nodes[0][0], x)
            x = transformed_step(vector_field, self.base, h, nodes, s_end, x, k1)
        return x

    def sample(self, vector_field: Callable, x0: Tensor) -> Tensor:
        """``x(t1)`` through ``hyperode.solve`` on this solver's grid (no graph)."""
        t = torch.tensor(self.t_span, dtype=torch.float64)
        with torch.no_grad():
            ys = solve(vector_field, x0, t, method=self,
                       options=dict(grid_points=self.grid())).ys
        return ys[-1]

    def extra_repr(self) -> str:
        return (f"base={self.base.name!r}, num_steps={self.num_steps}, "
                f"nodes={self.num_nodes}, parameters={self.num_parameters}")


class _BespokeStepper:
    """A ``BespokeSolver`` bound to one solve: counts its steps and checks that the
    integrator steps on ``solver.grid()``."""

    def __init__(self, solver: BespokeSolver, f: Callable):
        self.solver = solver
        self.f = f
        self.i = 0
        self.values: tuple[Tensor, ...] | None = None
        self.grid = solver.grid()
        self.span = solver.t_span[1] - solver.t_span[0]
        self.accept = no_accept
        self.dense = HermiteDense(f)
        at = getattr(f, "at", None)
        self.u = at if at is not None else (lambda t, y: f(float(t), y))

    def step(self, t: float, y: Tensor, h: float, k1: Tensor,
             with_error: bool = False) -> StepResult:
        solver, i = self.solver, self.i
        grid = self.grid
        tol = _GRID_TOL * self.span
        if i >= solver.num_steps or abs(t - grid[i]) > tol or abs(t + h - grid[i + 1]) > tol:
            raise ValueError(
                f"{solver.name} steps on its own grid {[round(g, 6) for g in grid]} from "
                f"t0={solver.t_span[0]} to t1={solver.t_span[1]}; got a step from t={t!r} by "
                f"h={h!r} (step {i}). Pass t=[t0, t1] and options=dict(grid_points="
                f"solver.grid()), or use solver.sample(field, x0)")
        if self.values is None:
            self.values = solver.node_values(y.dtype, y.device)
        nodes, s_end = solver._step_nodes(self.values, i)
        y1 = transformed_step(self.u, solver.base, 1.0 / solver.num_steps, nodes, s_end, y, k1)
        self.i += 1
        return StepResult(y1, None, [k1])


def _nodes(c: Sequence[float], n: int) -> tuple[list[float], list[list[int]], list[int]]:
    """The node times ``r`` (sorted, merged within 1e-12) of ``n`` uniform steps with
    stage offsets ``c``, each step's stage -> node index and each step's end node."""
    raw = sorted({(i + cj) / n for i in range(n) for cj in c} | {(i + 1) / n for i in range(n)}
                 | {0.0})
    nodes: list[float] = []
    for r in raw:
        if not nodes or r - nodes[-1] > 1e-12:
            nodes.append(r)

    def index(r: float) -> int:
        return min(range(len(nodes)), key=lambda k: abs(nodes[k] - r))

    stages = [[index((i + cj) / n) for cj in c] for i in range(n)]
    ends = [index((i + 1) / n) for i in range(n)]
    return nodes, stages, ends


# ---------------------------------------------------------------------- fitting


@dataclass
class BespokeHistory:
    """What ``fit_bespoke`` did: the loss of every iteration (mean end-point distance on
    the batch), the held-out distance before and after (when validation data is
    given) and wall-clock seconds."""

    loss: list[float] = field(default_factory=list)
    val_before: float | None = None
    val_after: float | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {"loss": self.loss, "val_before": self.val_before, "val_after": self.val_after,
                "seconds": self.seconds}


def endpoint_distance(solver: BespokeSolver, vector_field: Callable, x0: Tensor,
                      x_ref: Tensor) -> Tensor:
    """``mean_b ||x_solver(t1)[b] - x_ref[b]||_2`` (samples flattened)."""
    x1 = solver.integrate(vector_field, x0)
    return torch.linalg.vector_norm((x1 - x_ref).reshape(x0.shape[0], -1), dim=1).mean()


def fit_bespoke(solver: BespokeSolver, vector_field: Callable, x0: Tensor, x_ref: Tensor, *,
                iterations: int = 300, batch_size: int = 512, lr: float = 1e-2,
                validation: tuple[Tensor, Tensor] | None = None, seed: int = 0) -> BespokeHistory:
    """Fit ``solver``'s parameters to minimise the distance of its end points to
    reference end points (e.g. dopri5 at a tight tolerance from the same ``x0``).

    Args:
        solver: the ``BespokeSolver`` (its parameters change in place).
        vector_field: ``u(t, x)`` (a trained flow; its parameters are not touched and
            get no ``.grad``).
        x0, x_ref: ``[N, ...]`` noise samples and their reference end points.
        iterations, batch_size, lr: Adam with a cosine schedule to ``lr / 10``; each
            iteration uses ``batch_size`` random pairs.
        validation: held-out ``(x0, x_ref)``; its distance is recorded before and after.
        seed: seeds the batch indices.
    """
    if not isinstance(solver, BespokeSolver):
        raise ValueError(f"fit_bespoke: solver must be a BespokeSolver, got "
                         f"{type(solver).__name__}")
    x0 = batch("fit_bespoke", "x0", x0, min_dim=2)
    same_shape("fit_bespoke", "x0", x0, "x_ref", x_ref)
    check_positive_int("fit_bespoke", "iterations", iterations)
    check_positive_int("fit_bespoke", "batch_size", batch_size)
    real("fit_bespoke", "lr", lr, low=0.0, low_open=True)
    params = list(solver.parameters())
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=iterations, eta_min=lr / 10)
    gen = torch.Generator().manual_seed(seed)
    history = BespokeHistory()
    start = time.perf_counter()
    if validation is not None:
        with torch.no_grad():
            history.val_before = float(endpoint_distance(solver, vector_field, *validation))
    n = x0.shape[0]
    for _ in range(iterations):
        idx = torch.randint(0, n, (min(batch_size, n),), generator=gen).to(x0.device)
        loss = endpoint_distance(solver, vector_field, x0[idx], x_ref[idx])
        grads = torch.autograd.grad(loss, params)
        for p, g in zip(params, grads):
            p.grad = g
        opt.step()
        sched.step()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"fit_bespoke: the loss became {value}; lower lr")
        history.loss.append(value)
    for p in params:
        p.grad = None
    if validation is not None:
        with torch.no_grad():
            history.val_after = float(endpoint_distance(solver, vector_field, *validation))
    history.seconds = time.perf_counter() - start
    return history
