"""Samplers for a trained flow, all through ``hyperode.solve``, and fitting the learned
ones.

A sampler maps prior noise ``x0`` at ``t = 0`` to samples at ``t = 1`` with a given
budget of field evaluations (NFE):

- ``FixedSampler("euler" | "midpoint" | "rk4" | ..., nfe)``: ``nfe / stages`` uniform
  steps (``nfe`` must be a multiple of the method's stages);
- ``AdaptiveSampler("dopri5", rtol, atol)``: the ground truth at a tight tolerance
  (its NFE is whatever the error control needs);
- ``MethodSampler(method, options)``: any step-method object on its grid, e.g. a
  fitted ``HyperEuler`` / ``HyperHeun`` (``hypersolver_sampler``) or a
  ``BespokeSolver`` (``bespoke_sampler``).

Calling a sampler returns a ``SampleRun`` (the samples, ``nfe`` of the field,
``nfe_correction`` of a hypersolver's ``g``, seconds).

Fitting: ``fit_flow_hypersolver`` fits a hypersolver to the flow by trajectory fitting
against dopri5 (``hyperode.hyper.fit``) on fresh prior noise; ``fit_flow_bespoke``
fits a ``BespokeSolver`` to dopri5 end points of prior noise
(``hyperode.flow.bespoke.fit_bespoke``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..checks import check_positive_int
from ..hyper.fitting import FitHistory, fit
from ..hyper.solver import HyperSolver
from ..odeint import solve
from ..solvers.config import method_kind
from ..solvers.methods import get_method
from ..solvers.tableau import ButcherTableau
from ._checks import real
from .bespoke import BespokeHistory, BespokeSolver, fit_bespoke

SPAN = (0.0, 1.0)


@dataclass
class SampleRun:
    """One sampling run: ``samples`` ``[B, ...]``, evaluations of the field (``nfe``)
    and of a learned correction (``nfe_correction``), wall-clock ``seconds``."""

    samples: Tensor
    nfe: int
    nfe_correction: int
    seconds: float


def _timed_solve(vector_field: Callable, x0: Tensor, **kwargs: Any) -> SampleRun:
    t = torch.tensor(SPAN, dtype=torch.float64)
    start = time.perf_counter()
    with torch.no_grad():
        sol = solve(vector_field, x0, t, **kwargs)
    seconds = time.perf_counter() - start
    return SampleRun(sol.ys[-1], sol.stats.nfe, sol.stats.nfe_correction, seconds)


def stages_of(method: str | ButcherTableau) -> int:
    """Evaluations of the field per step of an explicit method."""
    tableau = get_method(method)
    if not isinstance(tableau, ButcherTableau):
        raise ValueError(f"{method!r} is not an explicit Runge–Kutta method")
    return tableau.stages


class FixedSampler:
    """``nfe / stages`` uniform steps of an explicit method (``"euler"``, ``"midpoint"``,
    ``"rk4"``, ...)."""

    def __init__(self, method: str | ButcherTableau, nfe: int):
        self.method = method
        self.nfe = check_positive_int("FixedSampler", "nfe", nfe)
        s = stages_of(method)
        if self.nfe % s:
            raise ValueError(f"FixedSampler: nfe={nfe} is not a multiple of {method!r}'s "
                             f"{s} stages per step")
        self.num_steps = self.nfe // s
        self.name = method if isinstance(method, str) else method.name

    def __call__(self, vector_field: Callable, x0: Tensor) -> SampleRun:
        return _timed_solve(vector_field, x0, method=self.method,
                            options=dict(num_steps=self.num_steps))


class AdaptiveSampler:
    """An adaptive solve (the reference: ``"dopri5"`` at ``rtol = atol = 1e-5``)."""

    def __init__(self, method: str = "dopri5", rtol: float = 1e-5, atol: float = 1e-5):
        if method_kind(method) == "fixed":
            raise ValueError(f"AdaptiveSampler: {method!r} is a fixed-step method; use "
                             f"FixedSampler")
        self.method = method
        self.rtol = real("AdaptiveSampler", "rtol", rtol, low=0.0, low_open=True)
        self.atol = real("AdaptiveSampler", "atol", atol, low=0.0, low_open=True)
        self.name = method

    def __call__(self, vector_field: Callable, x0: Tensor) -> SampleRun:
        return _timed_solve(vector_field, x0, method=self.method, rtol=self.rtol,
                            atol=self.atol)


class MethodSampler:
    """Any step-method object with its grid options (``dict(num_steps=K)`` or
    ``dict(grid_points=...)``)."""

    def __init__(self, method: Any, options: dict, name: str | None = None):
        self.method = method
        self.options = dict(options)
        self.name = name or getattr(method, "name", type(method).__name__)

    def __call__(self, vector_field: Callable, x0: Tensor) -> SampleRun:
        return _timed_solve(vector_field, x0, method=self.method, options=self.options)


def hypersolver_sampler(hyper: HyperSolver, nfe: int, name: str | None = None) -> MethodSampler:
    """A hypersolver with ``nfe / base stages`` uniform steps (``g`` is counted apart,
    one evaluation per step)."""
    check_positive_int("hypersolver_sampler", "nfe", nfe)
    if nfe % hyper.stages:
        raise ValueError(f"hypersolver_sampler: nfe={nfe} is not a multiple of "
                         f"{hyper.name}'s {hyper.stages} stages per step")
    return MethodSampler(hyper, dict(num_steps=nfe // hyper.stages), name)


def bespoke_sampler(solver: BespokeSolver, name: str | None = None) -> MethodSampler:
    """A fitted ``BespokeSolver`` on its own grid (``solver.nfe`` evaluations)."""
    return MethodSampler(solver, dict(grid_points=solver.grid()), name)


# ---------------------------------------------------------------------- fitting


def prior_batches(shape: tuple[int, ...], seed: int, dtype: torch.dtype = torch.float32
                  ) -> Iterator[Tensor]:
    """Endless fresh ``N(0, I)`` batches of ``shape`` (``[B, ...]``)."""
    gen = torch.Generator().manual_seed(seed)
    while True:
        yield torch.randn(shape, generator=gen, dtype=dtype)


def fit_flow_hypersolver(hyper: HyperSolver, vector_field: Callable, prior_shape: tuple[int, ...],
                         nfe: int, *, iterations: int = 500, rtol: float = 1e-5,
                         atol: float = 1e-5, lr: float = 3e-3, seed: int = 0,
                         new_batch_every: int = 5, **fit_options: Any) -> FitHistory:
    """Fit ``hyper.g`` to a flow on ``t: 0 -> 1`` with ``nfe / stages`` steps by
    trajectory fitting (``hyperode.hyper.fit`` with ``residual_weight = 0``,
    ``trajectory_weight = 1``) against ``reference``-tolerance dopri5 solves of fresh
    prior batches of ``prior_shape`` (a new batch every ``new_batch_every``
    iterations). Extra keywords go to ``FitConfig``."""
    check_positive_int("fit_flow_hypersolver", "nfe", nfe)
    if nfe % hyper.stages:
        raise ValueError(f"fit_flow_hypersolver: nfe={nfe} is not a multiple of {hyper.name}'s "
                         f"{hyper.stages} stages")
    settings: dict[str, Any] = dict(
        iterations=iterations, t_span=SPAN, num_steps=nfe // hyper.stages,
        residual_weight=0.0, trajectory_weight=1.0, rtol=rtol, atol=atol, lr=lr,
        first_batch_iterations=new_batch_every, new_batch_every=new_batch_every)
    settings.update(fit_options)
    return fit(hyper, vector_field, prior_batches(prior_shape, seed), progress=False,
               **settings)


def reference_endpoints(vector_field: Callable, x0: Tensor, rtol: float = 1e-5,
                        atol: float = 1e-5, chunk: int = 4096) -> Tensor:
    """dopri5 end points ``x(1)`` of ``x0`` (no graph), in chunks of ``chunk`` samples."""
    sampler = AdaptiveSampler("dopri5", rtol, atol)
    return torch.cat([sampler(vector_field, x0[i:i + chunk]).samples
                      for i in range(0, x0.shape[0], chunk)])


def fit_flow_bespoke(solver: BespokeSolver, vector_field: Callable, prior_shape: tuple[int, ...],
                     *, pairs: int = 4096, rtol: float = 1e-5, atol: float = 1e-5,
                     seed: int = 0, **fit_options: Any) -> BespokeHistory:
    """Fit ``solver`` to ``pairs`` prior samples (``prior_shape`` without the batch, e.g.
    ``(2,)``) and their dopri5 end points; a further ``pairs // 4`` are held out for
    ``val_before``/``val_after``. Extra keywords go to ``fit_bespoke``."""
    check_positive_int("fit_flow_bespoke", "pairs", pairs, minimum=2)
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.randn((pairs + pairs // 4, *prior_shape), generator=gen)
    ref = reference_endpoints(vector_field, x0, rtol, atol)
    val = (x0[pairs:], ref[pairs:]) if pairs // 4 else None
    return fit_bespoke(solver, vector_field, x0[:pairs], ref[:pairs], validation=val, seed=seed,
                       **fit_options)
