"""Fitting a hypersolver's ``g``: residual fitting (eq. 6), trajectory fitting, their
weighted combination, several step sizes at once, and adversarial fitting (Sec. 6).

Notation (Poli et al. 2020): the solution mesh ``s_0 < s_1 < ... < s_K`` of ``K``
uniform steps ``eps`` over ``t_span``; ``z(s_k)`` the reference ("exact") solution,
computed by an adaptive solver (dopri5) at tolerance ``rtol``/``atol``; ``psi`` the
base method's increment (``z + eps*psi`` is one base step); ``p`` its order.

Residual (eq. 6), ``k = 0..K-1``::

    R_k = (z(s_{k+1}) - z(s_k) - eps * psi(s_k, z(s_k))) / eps**(p+1)

Residual loss (the paper's ``l = 1/K sum_k ||R_k - g_k||_2``), with ``g_k =
g(eps, s_k, z(s_k), f(s_k, z(s_k)))`` evaluated *at the reference points*::

    residual_loss = mean over samples b and steps k of || R_k[b] - g_k[b] ||_2

where ``||.||_2`` is the 2-norm of one sample's whole state (all non-batch dimensions,
tuple members concatenated). With several meshes (``num_steps=(5, 10, 20)``: one ``g``
for several ``K``) the loss is the plain mean of the per-mesh losses. (The paper's
notebooks instead take a Frobenius norm over ``H x W`` per channel, average, and
multiply by ``eps**2``. The ``eps**2`` factor only rescales the objective at a fixed
``K``, but the per-channel grouping is a different loss: a mean of per-channel norms (a
group norm) rather than one norm of the whole state, so the gradient of each channel's
error is scaled by that channel's own error norm, and the two losses have different
minimisers whenever ``g`` cannot fit the residuals exactly.)

Trajectory loss (the paper's ``L = sum_{k=1..K} ||z(s_k) - z_k||_2``), with ``z_k``
the hypersolver's own solution from ``z(s_0)`` (unrolled, differentiated through)::

    trajectory_loss = mean over samples b of sum_{k=1..K} || z(s_k)[b] - z_k[b] ||_2

Fitting loss: ``residual_weight * residual_loss + trajectory_weight * trajectory_loss``.

Reference trajectories (and everything the residual loss needs but ``g``: ``z(s_k)``,
``f(s_k, z(s_k))``, ``R_k``) are computed once per batch, when the batch is drawn,
and cached in a ``FitBatch``; an iteration of pure residual fitting evaluates only
``g``. Trajectory fitting integrates with the hypersolver every iteration.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, cast

import torch
from torch import Tensor, nn
from tqdm import tqdm

from ..checks import check_finite, check_positive_int, check_t_span
from ..odeint import HALF_DTYPES, solve
from ..solvers.config import method_kind
from ..solvers.problem import State, StateLayout, VectorField
from ..solvers.step import rk_step
from ..solvers.tableau import ButcherTableau
from .nets import HyperNet, per_sample
from .solver import HyperSolver, resolve_base

CLASSIFIER_TOL = 1e-4
"""Reference tolerance for image-classifier Neural ODEs (paper: dopri5 at 1e-4)."""
CNF_TOL = 1e-5
"""Reference tolerance for CNFs (paper: 1e-5; the notebook used 1e-8)."""


# ---------------------------------------------------------------------- meshes, references


def uniform_mesh(t_span: Sequence[float], num_steps: int) -> list[float]:
    """``K + 1`` times ``s_k = s0 + (s1 - s0) * k / K`` (the same floats as
    ``solve(..., options=dict(num_steps=K))`` steps on)."""
    s0, s1 = check_t_span("uniform_mesh", t_span)
    k_steps = _check_num_steps("uniform_mesh", num_steps)[0]
    return [s0 + (s1 - s0) * k / k_steps for k in range(k_steps)] + [s1]


def reference_trajectory(field_fn: Callable, z0: State, mesh: Sequence[float], *,
                         rtol: float = CLASSIFIER_TOL, atol: float = CLASSIFIER_TOL,
                         method: str = "dopri5") -> State:
    """``z(s_k)`` at every mesh time by an adaptive solve without a graph:
    ``[len(mesh), *z0.shape]`` (a tuple for a tuple state)."""
    check_reference_method("reference_trajectory", "method", method)
    with torch.no_grad():
        return solve(field_fn, _detach(z0), torch.tensor(list(mesh), dtype=torch.float64),
                     rtol=rtol, atol=atol, method=method).ys


def residuals(base: str | ButcherTableau | HyperSolver, field_fn: Callable,
              trajectory: State, mesh: Sequence[float]) -> State:
    """The residuals ``R_k`` of eq. (6) along a trajectory, ``k = 0..K-1``.

    Args:
        base: the base method (a name, a tableau, or a hypersolver: its base is used).
        field_fn: ``f(t, z)``.
        trajectory: ``z(s_k)`` at every mesh time, ``[K+1, *state]`` (tuple for a tuple
            state), e.g. from ``reference_trajectory``.
        mesh: the ``K + 1`` times (any spacing; ``eps_k = s_{k+1} - s_k``).

    Returns ``[K, *state]`` (a tuple for a tuple state), without a graph. Costs
    ``K * s`` evaluations of ``f`` (the base's stages at each reference point).
    """
    tableau = base.base if isinstance(base, HyperSolver) else resolve_base(base, "residuals")
    mesh = [float(s) for s in mesh]
    zs = [_index(trajectory, k) for k in range(len(mesh))]
    layout = StateLayout(zs[0])
    f = VectorField(field_fn, layout)
    out = []
    with torch.no_grad():
        for k in range(len(mesh) - 1):
            r, _ = _residual(f, tableau, mesh[k], mesh[k + 1], zs[k], zs[k + 1])
            out.append(r)
    flat = torch.stack(out)
    return layout.unflatten(flat)


def _residual(f: VectorField, tableau: ButcherTableau, s: float, s_next: float, z: State,
              z_next: State) -> tuple[Tensor, Tensor]:
    """``(R_k, dz_k)`` on the flat state: ``R = (z(s_{k+1}) - base_step(z(s_k))) / eps**(p+1)``
    (the base step is ``z + eps*psi``, so this is eq. (6) exactly)."""
    layout = f.layout
    eps = s_next - s
    zk = layout.flatten(z)
    dz = f(s, zk)
    stepped = rk_step(f, tableau, s, zk, eps, dz).y1
    r = (layout.flatten(z_next) - stepped) / eps ** (tableau.order + 1)
    return r, dz


# ---------------------------------------------------------------------- cached batches


@dataclass
class MeshTargets:
    """What one batch contributes on one mesh; independent of ``g``, so cached.

    Attributes:
        mesh: ``s_0..s_K`` (``K + 1`` floats).
        z: ``z(s_k)`` for ``k = 0..K`` (state structure, no graph).
        dz: ``f(s_k, z(s_k))`` for ``k = 0..K-1``.
        target: ``R_k`` per sample, ``[K, B, n]`` (``n`` features per sample).
    """

    mesh: list[float]
    z: list[State]
    dz: list[State]
    target: Tensor

    @property
    def num_steps(self) -> int:
        return len(self.mesh) - 1


@dataclass
class FitBatch:
    """One batch of initial states with its cached targets on every mesh.

    ``nfe``: evaluations of ``f`` spent building it (reference solve plus the base's
    stages at the reference points).
    """

    z0: State
    meshes: list[MeshTargets]
    nfe: int


def prepare_batch(base: str | ButcherTableau | HyperSolver, field_fn: Callable, z0: State, *,
                  t_span: Sequence[float] = (0.0, 1.0), num_steps: int | Sequence[int] = 10,
                  rtol: float = CLASSIFIER_TOL, atol: float = CLASSIFIER_TOL,
                  method: str = "dopri5") -> FitBatch:
    """Reference trajectory (one adaptive solve through the union of all meshes' times)
    and the residual targets for ``z0`` on every mesh ``uniform_mesh(t_span, K)``."""
    tableau = base.base if isinstance(base, HyperSolver) else resolve_base(base,
                                                                          "prepare_batch")
    ks = _check_num_steps("prepare_batch", num_steps)
    check_reference_method("prepare_batch", "method", method)
    meshes = [uniform_mesh(t_span, k) for k in ks]
    union, index = _union(meshes)
    z0 = _detach(z0)
    layout = StateLayout(z0)
    with torch.no_grad():
        ref = solve(field_fn, z0, torch.tensor(union, dtype=torch.float64), rtol=rtol,
                    atol=atol, method=method)
        f = VectorField(field_fn, layout)
        out = []
        for mesh, idx in zip(meshes, index):
            zs = [_index(ref.ys, u) for u in idx]
            zs[0] = z0
            targets, dzs = [], []
            for k in range(len(mesh) - 1):
                r, dz = _residual(f, tableau, mesh[k], mesh[k + 1], zs[k], zs[k + 1])
                targets.append(per_sample(layout.unflatten(r)))
                dzs.append(layout.unflatten(dz))
            out.append(MeshTargets(mesh, zs, dzs, torch.stack(targets)))
    return FitBatch(z0, out, ref.stats.nfe + f.nfe)


# ---------------------------------------------------------------------- losses


def residual_loss(hyper: HyperSolver, batch: FitBatch) -> Tensor:
    """``mean_{mesh} mean_{k, b} ||R_k[b] - g_k[b]||_2`` (module docstring); evaluates
    ``g`` ``K`` times per mesh and ``f`` never."""
    _check_hyper("residual_loss", hyper)
    losses = []
    with _conditioning(hyper, batch.z0):
        for m in batch.meshes:
            per_k = []
            for k in range(m.num_steps):
                eps = m.mesh[k + 1] - m.mesh[k]
                g_k = per_sample(hyper.correction(eps, m.mesh[k], m.z[k], m.dz[k]))
                per_k.append(torch.linalg.vector_norm(m.target[k] - g_k, dim=1).mean())
            losses.append(torch.stack(per_k).mean())
    return torch.stack(losses).mean()


def trajectory_loss(hyper: HyperSolver, field_fn: Callable, batch: FitBatch) -> Tensor:
    """``mean_{mesh} mean_b sum_{k=1..K} ||z(s_k)[b] - z_k[b]||_2``, ``z_k`` by the
    hypersolver unrolled from ``z(s_0)`` (differentiable in ``g``; and in ``f``)."""
    _check_hyper("trajectory_loss", hyper)
    losses = []
    with _conditioning(hyper, batch.z0):
        for m in batch.meshes:
            losses.append(_trajectory_error(hyper, field_fn, batch.z0, m.mesh, m.z))
    return torch.stack(losses).mean()


def _trajectory_error(hyper: HyperSolver, field_fn: Callable, z0: State, mesh: list[float],
                      reference: Sequence[State]) -> Tensor:
    ys = solve(field_fn, z0, torch.tensor(mesh, dtype=torch.float64), method=hyper,
               options=dict(grid_points=mesh)).ys
    errs = [torch.linalg.vector_norm(per_sample(_index(ys, k)) - per_sample(reference[k]),
                                     dim=1) for k in range(1, len(mesh))]
    return torch.stack(errs).sum(dim=0).mean()


def validation_loss(hyper: HyperSolver, batches: Sequence[FitBatch]) -> float:
    """Mean residual loss over prepared validation batches (no graph)."""
    with torch.no_grad():
        return float(torch.stack([residual_loss(hyper, b) for b in batches]).mean())


# ---------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class Adversarial:
    """Adversarial fitting (Sec. 6): ``min_g max_theta sum_k ||z_k - zbar_k||_2``.

    Before the ``g`` update of every ``every``-th iteration, ``field_steps`` gradient
    *ascent* steps (Adam, ``maximize=True``, learning rate ``field_lr``, gradient norm
    clipped at ``grad_clip``) move the vector field's parameters ``theta`` to increase
    the hypersolver's trajectory error ``mean_b sum_k ||z_k - zbar_k||`` (``zbar`` by the
    reference solver, differentiated through as well). ``radius`` (if not ``None``)
    projects every parameter tensor back to ``||theta - theta_0|| <= radius *
    ||theta_0||`` after each step: unconstrained, the ascent learns stiff dynamics
    (the paper's observation) and can blow up. The batch's cached targets are rebuilt
    after ``theta`` moves, so each adversarial iteration costs a reference solve with
    gradients and one without.

    The field's parameters are modified in place: pass a copy
    (``copy.deepcopy(field)``) to keep the original.
    """

    field_lr: float = 1e-3
    field_steps: int = 1
    every: int = 1
    grad_clip: float | None = 1.0
    radius: float | None = None

    def __post_init__(self) -> None:
        check_finite("Adversarial", "field_lr", self.field_lr)
        check_positive_int("Adversarial", "field_steps", self.field_steps)
        check_positive_int("Adversarial", "every", self.every)
        if self.grad_clip is not None:
            check_finite("Adversarial", "grad_clip", self.grad_clip)
        if self.radius is not None:
            check_finite("Adversarial", "radius", self.radius)


@dataclass(frozen=True)
class FitConfig:
    """Settings of ``fit`` (defaults: the paper's notebooks, except where noted).

    Args:
        iterations: optimiser steps.
        t_span: ``(s0, s1)`` of the Neural ODE.
        num_steps: ``K`` (int >= 1), or several (a tuple) for multi-step-size fitting.
        residual_weight, trajectory_weight: weights of the two losses (>= 0, not both 0);
            the default is pure residual fitting.
        lr, weight_decay: AdamW (notebook: 1e-3, 1e-8; the paper states lr 1e-2).
        eta_min: floor of the cosine annealing over ``iterations``; ``None`` = ``lr / 2``
            (the notebook's 5e-4 for 1e-3).
        grad_clip: gradient-norm clip (``None``: off; notebook 1).
        first_batch_iterations: iterations ``[0, N1)`` all use the first batch.
        new_batch_every: afterwards a new batch is drawn every ``N2`` iterations
            (at ``i = N1, N1 + N2, ...``).
        rtol, atol, reference_method: the reference solver (``CLASSIFIER_TOL`` = 1e-4;
            use ``CNF_TOL`` or tighter for CNFs).
        validate_every: iterations between validation losses (when validation data is
            given; also recorded before the first and after the last iteration).
        adversarial: an ``Adversarial`` to run adversarial fitting, or ``None``.
    """

    iterations: int = 1000
    t_span: tuple[float, float] = (0.0, 1.0)
    num_steps: int | tuple[int, ...] = 10
    residual_weight: float = 1.0
    trajectory_weight: float = 0.0
    lr: float = 1e-3
    weight_decay: float = 1e-8
    eta_min: float | None = None
    grad_clip: float | None = 1.0
    first_batch_iterations: int = 10
    new_batch_every: int = 10
    rtol: float = CLASSIFIER_TOL
    atol: float = CLASSIFIER_TOL
    reference_method: str = "dopri5"
    validate_every: int = 100
    adversarial: Adversarial | None = None

    def __post_init__(self) -> None:
        owner = "FitConfig"
        check_positive_int(owner, "iterations", self.iterations)
        object.__setattr__(self, "t_span", check_t_span(owner, self.t_span))
        ks = _check_num_steps(owner, self.num_steps)
        object.__setattr__(self, "num_steps", ks[0] if isinstance(self.num_steps, int)
                           else tuple(ks))
        for name in ("residual_weight", "trajectory_weight"):
            check_finite(owner, name, getattr(self, name), allow_zero=True)
        if self.residual_weight == 0 and self.trajectory_weight == 0:
            raise ValueError(f"{owner}: residual_weight and trajectory_weight are both 0; "
                             f"nothing to fit")
        check_finite(owner, "lr", self.lr)
        check_finite(owner, "weight_decay", self.weight_decay, allow_zero=True)
        if self.eta_min is not None:
            check_finite(owner, "eta_min", self.eta_min, allow_zero=True)
            if self.eta_min > self.lr:
                raise ValueError(f"{owner}: eta_min={self.eta_min!r} exceeds lr={self.lr!r}")
        if self.grad_clip is not None:
            check_finite(owner, "grad_clip", self.grad_clip)
        check_positive_int(owner, "first_batch_iterations", self.first_batch_iterations)
        check_positive_int(owner, "new_batch_every", self.new_batch_every)
        check_finite(owner, "rtol", self.rtol, allow_zero=True)
        check_finite(owner, "atol", self.atol, allow_zero=True)
        if self.rtol == 0 and self.atol == 0:
            raise ValueError(f"{owner}: rtol and atol are both 0")
        check_positive_int(owner, "validate_every", self.validate_every)
        check_reference_method(owner, "reference_method", self.reference_method)
        if self.adversarial is not None and not isinstance(self.adversarial, Adversarial):
            raise ValueError(f"{owner}: adversarial must be an Adversarial or None, got "
                             f"{self.adversarial!r}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FitHistory:
    """What ``fit`` did.

    Attributes:
        loss: the fitting loss of every iteration (before its update).
        val_loss: ``(iteration, validation residual loss)`` pairs; iteration 0 is before
            any update, iteration ``i`` after ``i`` updates.
        adversarial_loss: the trajectory error after each adversarial ascent phase.
        batches: batches drawn (each with one reference solve).
        reference_nfe: evaluations of ``f`` spent on references and targets.
        seconds: wall-clock time of the fit.
    """

    config: FitConfig
    loss: list[float] = field(default_factory=list)
    val_loss: list[tuple[int, float]] = field(default_factory=list)
    adversarial_loss: list[float] = field(default_factory=list)
    batches: int = 0
    reference_nfe: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "config"}
        out["val_loss"] = [list(p) for p in self.val_loss]
        out["config"] = self.config.as_dict()
        return out


# ---------------------------------------------------------------------- fit


def fit(hyper: HyperSolver, field_fn: Callable, initial_states: Any,
        config: FitConfig | None = None, *, validation: Any = None, progress: bool = True,
        callback: Callable[[int, float, HyperSolver], None] | None = None,
        **overrides: Any) -> FitHistory:
    """Fit ``hyper.g`` to ``field_fn`` (``f(t, z)``, e.g. ``model.node.vector_field``).

    Args:
        hyper: the hypersolver (enabled); only ``hyper.g``'s parameters change
            (gradients by ``torch.autograd.grad``: ``f``'s ``.grad`` stays untouched).
        field_fn: the vector field; with ``config.adversarial`` an ``nn.Module`` whose
            parameters are changed in place.
        initial_states: where batches of ``z0`` come from: an iterable yielding them
            (a list, a re-iterable loader-like object — re-iterated when exhausted — or an
            endless generator, e.g. fresh prior samples), or one batch (a tensor, or a
            tuple of tensors = one tuple state). In the papers: the model's input map on
            the *training* set, e.g. ``[model.input_map(x) for x, _ in train_batches]``.
        config: a ``FitConfig``; keyword ``overrides`` replace its fields
            (``fit(hyper, f, z0s, iterations=200, num_steps=(5, 10))``).
        validation: one batch or a list of batches of ``z0`` (held-out); their targets
            are prepared once and their residual loss recorded in ``val_loss``.
        progress: show a tqdm progress bar.
        callback: ``callback(iteration, loss, hyper)`` after every update.

    Schedule (paper): AdamW with cosine annealing; iterations ``[0, N1)`` use the first
    batch, then a new batch every ``N2`` iterations; each batch's reference (dopri5 at
    ``rtol``/``atol``) and residual targets are computed once, when drawn.

    Adversarial fitting, a tiny example (``Adversarial``; about a second on a CPU)::

        field = Autonomous(nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 2)))
        hyper = HyperEuler(MLPHyperNet(2, (32, 32)))
        adv = copy.deepcopy(field)                     # theta is trained to hurt g
        history = fit(hyper, adv, [torch.randn(64, 2)], iterations=20, num_steps=4,
                      residual_weight=0.0, trajectory_weight=1.0,
                      adversarial=Adversarial(field_lr=1e-2, radius=0.5), progress=False)
        history.adversarial_loss   # the error theta reaches; g fights back each iteration

    Returns a ``FitHistory``.
    """
    cfg = _resolve_config(config, overrides)
    params, adv_params = _fit_parameters(hyper, field_fn, cfg, callback, progress)
    batches = _BatchSource(initial_states, hyper)
    prep: dict[str, Any] = dict(t_span=cfg.t_span, num_steps=cfg.num_steps, rtol=cfg.rtol,
                                atol=cfg.atol, method=cfg.reference_method)
    history = FitHistory(config=cfg)
    start = time.perf_counter()

    val_batches = [prepare_batch(hyper, field_fn, z0, **prep)
                   for z0 in _as_batch_list(validation, hyper)]
    history.reference_nfe += sum(b.nfe for b in val_batches)
    if val_batches:
        history.val_loss.append((0, validation_loss(hyper, val_batches)))

    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    eta_min = cfg.lr / 2 if cfg.eta_min is None else cfg.eta_min
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.iterations,
                                                       eta_min=eta_min)
    adversary = _Adversary(cfg.adversarial, adv_params) if cfg.adversarial else None

    batch: FitBatch | None = None
    batch_id = -1
    bar = tqdm(range(cfg.iterations), desc=f"fit {hyper.name}", disable=not progress,
               leave=False)
    for i in bar:
        wanted = _batch_number(i, cfg)
        if wanted != batch_id:
            batch = prepare_batch(hyper, field_fn, batches.next(), **prep)
            history.batches += 1
            history.reference_nfe += batch.nfe
            batch_id = wanted
        assert batch is not None  # drawn at iteration 0
        if adversary is not None and i % adversary.cfg.every == 0:
            history.adversarial_loss.append(adversary.ascend(hyper, field_fn, batch, cfg))
            batch = prepare_batch(hyper, field_fn, batch.z0, **prep)  # theta moved
            history.reference_nfe += batch.nfe

        value = _update(params, opt, sched, _fit_loss(hyper, field_fn, batch, cfg), cfg, i)
        history.loss.append(value)
        if callback is not None:
            callback(i, value, hyper)
        if val_batches and ((i + 1) % cfg.validate_every == 0 or i + 1 == cfg.iterations):
            history.val_loss.append((i + 1, validation_loss(hyper, val_batches)))
        if i % 10 == 0 or i + 1 == cfg.iterations:
            bar.set_postfix(loss=f"{value:.3g}")
    for p in params:
        p.grad = None
    history.seconds = time.perf_counter() - start
    return history


def _fit_parameters(hyper: HyperSolver, field_fn: Callable, cfg: FitConfig,
                   callback: Any, progress: Any) -> tuple[list[Tensor], list[Tensor]]:
    """Check ``fit``'s arguments; ``(g's trainable parameters, the adversary's)``."""
    _check_hyper("fit", hyper)
    if not callable(field_fn):
        raise ValueError(f"fit: field_fn must be callable as f(t, z), got "
                         f"{type(field_fn).__name__}: {field_fn!r}")
    if callback is not None and not callable(callback):
        raise ValueError(f"fit: callback must be None or callable as callback(iteration, "
                         f"loss, hyper), got {type(callback).__name__}: {callback!r}")
    if not isinstance(progress, bool):
        raise ValueError(f"fit: progress must be True or False, got {progress!r}")
    params: list[Tensor] = [p for p in hyper.g.parameters() if p.requires_grad]
    if not params:
        raise ValueError("fit: hyper.g has no trainable parameters")
    adv_params: list[Tensor] = []
    if cfg.adversarial is not None:
        if not isinstance(field_fn, nn.Module):
            raise ValueError("fit: adversarial fitting needs the vector field as an nn.Module "
                             "(its parameters are the adversary)")
        adv_params: list[Tensor] = [p for p in field_fn.parameters() if p.requires_grad]
        if not adv_params:
            raise ValueError("fit: adversarial fitting needs a vector field with trainable "
                             "parameters")
    return params, adv_params


def _batch_number(i: int, cfg: FitConfig) -> int:
    """Which batch iteration ``i`` fits on: 0 for ``[0, N1)``, then a new one every N2."""
    if i < cfg.first_batch_iterations:
        return 0
    return 1 + (i - cfg.first_batch_iterations) // cfg.new_batch_every


def _update(params: list[Tensor], opt: torch.optim.Optimizer, sched: Any, loss: Tensor,
            cfg: FitConfig, i: int) -> float:
    """One optimiser step of g on ``loss`` (gradients of g only, optionally clipped);
    returns the loss (``FloatingPointError`` if it is not finite)."""
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    for p, gr in zip(params, grads):
        p.grad = gr
    if cfg.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
    opt.step()
    sched.step()
    value = float(loss.detach())
    if not math.isfinite(value):
        raise FloatingPointError(f"fit: the loss became {value} at iteration {i}; lower "
                                 f"lr, check the reference tolerances or the vector field")
    return value


def _fit_loss(hyper: HyperSolver, field_fn: Callable, batch: FitBatch, cfg: FitConfig) -> Tensor:
    loss = None
    if cfg.residual_weight:
        loss = cfg.residual_weight * residual_loss(hyper, batch)
    if cfg.trajectory_weight:
        traj = cfg.trajectory_weight * trajectory_loss(hyper, field_fn, batch)
        loss = traj if loss is None else loss + traj
    assert loss is not None  # FitConfig refuses both weights 0
    return loss


class _Adversary:
    """The ascent half of adversarial fitting (``Adversarial``)."""

    def __init__(self, cfg: Adversarial, params: list[Tensor]):
        self.cfg = cfg
        self.params = params
        self.opt = torch.optim.Adam(params, lr=cfg.field_lr, maximize=True)
        self.origin = [p.detach().clone() for p in params]

    def ascend(self, hyper: HyperSolver, field_fn: Callable, batch: FitBatch,
               fit_cfg: FitConfig) -> float:
        value = float("nan")
        for _ in range(self.cfg.field_steps):
            errs = []
            with _conditioning(hyper, batch.z0):
                for m in batch.meshes:
                    t = torch.tensor(m.mesh, dtype=torch.float64)
                    ref = solve(field_fn, batch.z0, t, rtol=fit_cfg.rtol, atol=fit_cfg.atol,
                                method=fit_cfg.reference_method).ys
                    errs.append(_trajectory_error(hyper, field_fn, batch.z0, m.mesh,
                                                  [_index(ref, k) for k in range(len(m.mesh))]))
            objective = torch.stack(errs).mean()
            grads = torch.autograd.grad(objective, self.params, allow_unused=True)
            for p, gr in zip(self.params, grads):
                p.grad = gr
            if self.cfg.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
            self.opt.step()
            for p in self.params:
                p.grad = None
            if self.cfg.radius is not None:
                self._project(self.cfg.radius)
            value = float(objective.detach())
        return value

    def _project(self, radius: float) -> None:
        with torch.no_grad():
            for p, p0 in zip(self.params, self.origin):
                delta = p - p0
                limit = radius * float(torch.linalg.vector_norm(p0))
                norm = float(torch.linalg.vector_norm(delta))
                if norm > limit:
                    p.copy_(p0 + delta * (limit / norm))


# ---------------------------------------------------------------------- helpers


class _BatchSource:
    """Draws batches from an iterable, re-iterating it when exhausted."""

    def __init__(self, source: Any, hyper: HyperSolver):
        self.hyper = hyper
        if _is_state(source):
            source = [source]
        try:
            self.it = iter(source)
        except TypeError:
            raise ValueError(f"fit: initial_states must be an iterable of z0 batches or one "
                             f"batch (a tensor or tuple of tensors), got "
                             f"{type(source).__name__}") from None
        self.source = source

    def next(self) -> State:
        try:
            z0 = next(self.it)
        except StopIteration:
            self.it = iter(self.source)
            try:
                z0 = next(self.it)
            except StopIteration:
                raise ValueError("fit: initial_states yielded no (more) batches; pass a list, "
                                 "a re-iterable loader or an endless generator") from None
        if not _is_state(z0):
            raise ValueError(f"fit: initial_states must yield tensors (or tuples of "
                             f"tensors), got {type(z0).__name__}")
        check_batch("fit: initial_states", z0, self.hyper)
        return _detach(z0)


def _as_batch_list(value: Any, hyper: HyperSolver) -> list[State]:
    if value is None:
        return []
    if _is_state(value):
        check_batch("fit: validation", value, hyper)
        return [value]
    try:
        batches = list(value)
    except TypeError:
        raise ValueError(f"fit: validation must be a batch of z0 (a tensor or tuple of "
                         f"tensors) or a list of them, got {type(value).__name__}") from None
    for i, b in enumerate(batches):
        if not _is_state(b):
            raise ValueError(f"fit: validation must be a batch of z0 or a list of them, got "
                             f"an element of type {type(b).__name__}")
        check_batch(f"fit: validation[{i}]", b, hyper)
    return batches


def check_batch(name: str, z0: State, hyper: HyperSolver | None = None) -> None:
    """``ValueError`` naming ``name`` unless ``z0`` is a batch of initial states: a tensor
    ``[B, ...]`` (or a tuple of them, one ``B``) with ``B >= 1``, a floating dtype (not
    half precision), finite values, and the dtype and device of ``hyper.g``'s parameters.
    Metadata checks plus one finiteness check per batch (a batch is drawn every
    ``new_batch_every`` iterations, not per step)."""
    members = z0 if isinstance(z0, tuple) else (z0,)
    shapes = [tuple(m.shape) for m in members]
    for m in members:
        if m.ndim == 0 or m.shape[0] != members[0].shape[0]:
            raise ValueError(f"{name} must be batched along dim 0 ([B, ...], one B for every "
                             f"tuple member), got shapes {shapes}")
        if m.shape[0] == 0 or m.numel() == 0:
            raise ValueError(f"{name} is empty (shapes {shapes}); a batch needs at least one "
                             f"sample with at least one feature")
        if not m.is_floating_point() or m.dtype in HALF_DTYPES:
            raise ValueError(f"{name} must be float32 or float64, got {m.dtype}")
        if m.dtype != members[0].dtype or m.device != members[0].device:
            raise ValueError(f"{name}: tuple members must share dtype and device, got "
                             f"{[(x.dtype, str(x.device)) for x in members]}")
    ref = members[0]
    param = next((p for p in hyper.g.parameters() if p.is_floating_point()), None) \
        if hyper is not None else None
    if param is not None and (param.dtype != ref.dtype or param.device != ref.device):
        raise ValueError(f"{name} is {ref.dtype} on {ref.device} but hyper.g's parameters are "
                         f"{param.dtype} on {param.device}; convert one of them "
                         f"(hyper.g.to(z0.dtype) or z0.to(...))")
    for m in members:
        if not bool(torch.isfinite(m).all()):
            raise ValueError(f"{name} contains non-finite values (NaN/inf)")


def _is_state(value: Any) -> bool:
    return isinstance(value, Tensor) or (
        isinstance(value, tuple) and bool(value) and all(isinstance(m, Tensor) for m in value))


def _detach(z: State) -> State:
    return tuple(m.detach() for m in z) if isinstance(z, tuple) else z.detach()


def _index(ys: State, k: int) -> State:
    return tuple(y[k] for y in ys) if isinstance(ys, tuple) else ys[k]


def _conditioning(hyper: HyperSolver, z0: State) -> contextlib.AbstractContextManager:
    """``g.conditioned(x)`` with ``x`` the batch's initial state, for nets that read x."""
    if getattr(hyper.g, "needs_x", False):
        return cast(HyperNet, hyper.g).conditioned(per_sample(z0))
    return contextlib.nullcontext()


def _union(meshes: list[list[float]]) -> tuple[list[float], list[list[int]]]:
    """Sorted union of the meshes' times (merged within 1e-12 of the span) and each
    mesh's indices into it."""
    s0, s1 = meshes[0][0], meshes[0][-1]
    d = 1.0 if s1 > s0 else -1.0
    tol = 1e-12 * abs(s1 - s0)
    union: list[float] = []
    for x in sorted({x for m in meshes for x in m}, key=lambda v: d * v):
        if not union or abs(x - union[-1]) > tol:
            union.append(x)
    index = [[min(range(len(union)), key=lambda u, x=x: abs(union[u] - x)) for x in m]
             for m in meshes]
    return union, index


def _check_hyper(owner: str, hyper: Any) -> None:
    if not isinstance(hyper, HyperSolver):
        raise ValueError(f"{owner}: expected a HyperSolver, got {type(hyper).__name__}")
    if not hyper.enabled:
        raise ValueError(f"{owner}: the hypersolver is disabled (enabled=False); enable it "
                         f"to fit or evaluate g")


def _resolve_config(config: FitConfig | None, overrides: dict[str, Any]) -> FitConfig:
    if config is not None and not isinstance(config, FitConfig):
        raise ValueError(f"fit: config must be a FitConfig or None, got {config!r}")
    known = {f.name for f in fields(FitConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"fit: unknown setting(s) {unknown}; FitConfig fields: "
                         f"{sorted(known)}")
    return replace(config, **overrides) if config is not None else FitConfig(**overrides)


def _check_num_steps(owner: str, num_steps: Any) -> list[int]:
    values = [num_steps] if isinstance(num_steps, int) or isinstance(num_steps, bool) \
        else list(num_steps) if isinstance(num_steps, (tuple, list)) else [num_steps]
    if not values:
        raise ValueError(f"{owner}: num_steps must be an int K >= 1 or a non-empty tuple of "
                         f"them, got {num_steps!r}")
    for k in values:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"{owner}: num_steps (K, steps per mesh) must be an int >= 1 or "
                             f"a tuple of them, got {num_steps!r}")
    return values


def check_reference_method(owner: str, name: str, method: Any) -> None:
    """A reference solver must control its error (an adaptive method, or
    ``scipy_solver``): a fixed-step method would step on the mesh itself (the reference
    would be that method's own K steps) and ``rtol``/``atol`` would be ignored."""
    try:
        kind = method_kind(method)
    except ValueError as e:
        raise ValueError(f"{owner}: {name}: {e}") from None
    if kind == "fixed":
        raise ValueError(f"{owner}: {name}={method!r} has no error estimate: the reference "
                         f"would be its own steps on the mesh and rtol/atol would be ignored; "
                         f"use an adaptive method (dopri5, tsit5, dopri8, ...)")
