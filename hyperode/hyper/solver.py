"""``HyperSolver``: an explicit Runge–Kutta base solver plus a learned correction.

A base method of order ``p`` (any explicit ``ButcherTableau``) advances the state by
``eps * psi``; the hypersolver adds ``eps**(p+1)`` times the output of a network ``g``
trained to predict the base's scaled local truncation error (Poli et al. 2020,
eq. 5)::

    z[k+1] = z[k] + eps * psi(s[k], z[k]) + eps**(p+1) * g(eps, s[k], z[k], dz[k])
    dz[k]  = f(s[k], z[k])      (the base's first stage: reused, never an extra f call)

``eps`` is the signed step (negative when integrating backwards in time), so
``eps**(p+1)`` and the residual of eq. (6) (``hyperode.hyper.fitting``) use the same
sign convention and a ``g`` fitted forwards stays consistent.

The hypersolver *wraps* its base (it calls ``rk_step`` with the base tableau and adds
the correction), so a change to the base cannot silently break it, and it plugs in
wherever a method is accepted::

    hyper = HyperEuler(MLPHyperNet(state_dim=2))       # hyperode.hyper.nets
    odeint(f, z0, t, method=hyper, options=dict(num_steps=10))
    solve(f, z0, t, method=hyper, options=dict(step_size=0.1)).stats.nfe_correction
    NeuralODE(field, solver=SolverConfig(method=hyper, num_steps=10))

It is an ``nn.Module`` whose only parameters are ``g``'s (``state_dict`` holds ``g``);
the base is plain data. ``enabled=False``, ``with hyper.disabled(): ...`` or
``hyper.base`` run the plain base solver; ``with_base(alpha(0.7))`` shares ``g`` with
another base of the same order (the paper's generalisation across the alpha family).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

import torch
from torch import Tensor, nn

from ..odeint import odeint
from ..solvers.methods import get_method
from ..solvers.problem import State
from ..solvers.stats import SolverStats
from ..solvers.step import Field, StatelessStepper, StepResult, rk_step
from ..solvers.tableau import ButcherTableau


def resolve_base(base: Any, owner: str = "HyperSolver") -> ButcherTableau:
    """The base as an explicit ``ButcherTableau``; a clear ``ValueError`` otherwise."""
    if isinstance(base, HyperSolver):
        raise ValueError(f"{owner}: the base must be a Butcher tableau, not another "
                         f"hypersolver ({base.name!r}); use its .base")
    if not isinstance(base, (str, ButcherTableau)):
        raise ValueError(
            f"{owner}: base must be a method name or an explicit hyperode.ButcherTableau "
            f"(c, strictly lower-triangular a, b), got {type(base).__name__}: {base!r}"
        )
    try:
        tableau = get_method(base)
    except ValueError as e:
        raise ValueError(f"{owner}: base {e}") from None
    if not isinstance(tableau, ButcherTableau):  # multistep and implicit methods
        raise ValueError(f"{owner}: base {base!r} is not an explicit Butcher tableau")
    return tableau


class HyperSolver(nn.Module):
    """A fixed-step hypersolver: ``base`` step plus ``eps**(p+1) * g(eps, s, z, dz)``.

    Args:
        base: an explicit method, by name (``"euler"``, ``"midpoint"``, ``"rk4"``, ...) or
            as a ``ButcherTableau`` (``hyperode.alpha(0.5)``); its ``order`` is ``p``. A
            tableau with an error estimate may be a base too; it then runs without error
            control. With an FSAL base (e.g. ``"bosh3"``) the last stage is evaluated at
            the *uncorrected* end point and cannot be reused, so a corrected step costs
            ``s`` evaluations of ``f`` (``s - 1`` + the first stage) instead of ``s - 1``.
        g: the correction network, called as ``g(eps, t, y, dy)``: ``eps`` (signed step)
            and ``t`` (the step's start time) are 0-dim tensors in the state's dtype and
            device; ``y`` and ``dy = f(t, y)`` have the user's state structure (a tensor
            ``[B, ...]`` or a tuple of them, as ``y0``). It returns a correction of
            ``y``'s structure, shape and dtype (checked on every call: a mismatch raises
            ``ValueError`` at the first step).
        enabled: ``False`` runs the plain base solver (no ``g`` evaluation, the base's
            FSAL reuse), e.g. for comparisons.

    Attributes as a step method (``hyperode.solvers.step.StepMethod``):
    ``name``, ``order`` (= the base's), ``fsal`` (the base's when disabled, else
    ``False``), ``adaptive`` (``False``: a hypersolver runs on a fixed grid only;
    adaptive options raise ``ValueError``), ``corrections_per_step`` (1, or 0 when
    disabled; counted in ``SolverStats.nfe_correction``, separate from ``nfe``).

    Calling the module solves: ``hyper(f, y0, t, num_steps=K)`` is
    ``odeint(f, y0, t, method=hyper, options=dict(num_steps=K))``.
    """

    adaptive = False
    # No error control and no iteration judged by a tolerance: resolve refuses rtol/atol
    # other than odeint's defaults instead of ignoring them (hyperode.solvers.config).
    tolerance_free = True

    def __init__(self, base: str | ButcherTableau, g: nn.Module, *, enabled: bool = True):
        super().__init__()
        owner = type(self).__name__
        self.base = resolve_base(base, owner)
        if not isinstance(g, nn.Module):
            raise ValueError(f"{owner}: g must be a torch.nn.Module called as "
                             f"g(eps, t, y, dy), got {type(g).__name__}")
        self.g = g
        self.enabled = _check_bool(owner, "enabled", enabled)

    # ------------------------------------------------------------------ method protocol

    @property
    def name(self) -> str:
        off = ", g off" if not self.enabled else ""
        return f"hyper({self.base.name}{off})"

    @property
    def order(self) -> int:
        """Order ``p`` of the base; the correction is scaled by ``eps**(p+1)``."""
        return self.base.order

    @property
    def fsal(self) -> bool:
        return self.base.fsal and not self.enabled

    @property
    def corrections_per_step(self) -> int:
        return 1 if self.enabled else 0

    @property
    def stages(self) -> int:
        """Stages of the base (evaluations of ``f`` per step, first stage included)."""
        return self.base.stages

    def step(self, f: Field, t: float, y: Tensor, h: float, k1: Tensor) -> StepResult:
        """One step from ``(t, y)`` by ``h`` on the integrator's flat state, eq. (5).

        ``k1 = f(t, y)`` comes from the integrator and is the ``dz`` handed to ``g``.
        Costs the base's ``s - 1`` evaluations of ``f`` and one of ``g`` (none when
        disabled). ``f.layout`` (a ``VectorField``'s) maps the flat state back to the
        user's structure for ``g``; without it the state is a plain tensor.
        """
        result = rk_step(f, self.base, t, y, h, k1)
        if not self.enabled:
            return result
        layout = getattr(f, "layout", None)
        if layout is not None and layout.is_tuple:
            corr = layout.flatten(self.correction(h, t, layout.unflatten(y),
                                                  layout.unflatten(k1)))
        else:
            corr = self.correction(h, t, y, k1)
        y1 = torch.add(result.y1, cast(Tensor, corr), alpha=h ** (self.order + 1))
        return StepResult(y1, None, result.ks)  # f1 unknown: f was evaluated at the base's y1

    def stepper(self, f: Field, stats: SolverStats) -> StatelessStepper:
        """This method on one solve (``hyperode.solvers.step.StepMethod``): no state."""
        return StatelessStepper(self.step, f)

    def correction(self, eps: float | Tensor, t: float | Tensor, y: State, dy: State) -> State:
        """``g(eps, t, y, dy)`` with ``eps``, ``t`` as 0-dim tensors in ``y``'s dtype and
        device; checks the output against ``y`` (structure, shape, dtype, device)."""
        ref = y[0] if isinstance(y, tuple) else y
        eps_t = _scalar(eps, ref)
        t_t = _scalar(t, ref)
        out = self.g(eps_t, t_t, y, dy)
        _check_correction(out, y, t)
        return out

    # ------------------------------------------------------------------ variants

    @contextmanager
    def disabled(self) -> Iterator[HyperSolver]:
        """Run the plain base solver inside the block (``g`` untouched)."""
        previous = self.enabled
        self.enabled = False
        try:
            yield self
        finally:
            self.enabled = previous

    def with_base(self, base: str | ButcherTableau) -> HyperSolver:
        """A hypersolver sharing this one's ``g`` (the same module: no copy, no
        change) on another base of the same order, e.g. across ``hyperode.alpha(a)``."""
        tableau = resolve_base(base, "HyperSolver.with_base")
        if tableau.order != self.order:
            raise ValueError(
                f"HyperSolver.with_base: {tableau.name!r} has order {tableau.order} but g was "
                f"fitted for order {self.order} (the correction is scaled by "
                f"eps**{self.order + 1}); choose a base of order {self.order}"
            )
        return HyperSolver(tableau, self.g, enabled=self.enabled)

    # ------------------------------------------------------------------ solving

    def forward(self, func: Any, y0: State, t: Tensor | Sequence[float], *,
                step_size: float | None = None, num_steps: int | None = None,
                grid_points: Sequence[float] | None = None, **others: Any) -> State:
        """``odeint(func, y0, t, method=self, options=...)`` with exactly one grid option;
        returns ``[len(t), *y0.shape]`` (a tuple for a tuple state).

        ``ValueError`` for no grid option or several, and for anything else: ``rtol`` and
        ``atol`` in particular are refused (a hypersolver has no error control, they would
        be ignored), as is any ``odeint`` option (pass it through ``hyperode.odeint``)."""
        owner = f"{type(self).__name__}.forward"
        if others:
            names = sorted(others)
            tol = [n for n in names if n in ("rtol", "atol")]
            why = (f"{' and '.join(tol)} {'do' if len(tol) > 1 else 'does'} not apply: a "
                   f"hypersolver steps on a fixed grid without error control" if tol else
                   "pass other options through hyperode.odeint(func, y0, t, method=hyper, "
                   "options=...)")
            raise ValueError(f"{owner}: unexpected argument(s) {names}; it takes step_size, "
                             f"num_steps or grid_points; {why}")
        options = {k: v for k, v in (("step_size", step_size), ("num_steps", num_steps),
                                     ("grid_points", grid_points)) if v is not None}
        if len(options) != 1:
            raise ValueError(f"{owner}: give exactly one of step_size, num_steps, grid_points; "
                             f"got {sorted(options) or 'none'}")
        return cast(State, odeint(func, y0, t, method=self, options=options))

    def extra_repr(self) -> str:
        return f"base={self.base.name!r}, order={self.order}, enabled={self.enabled}"


class HyperEuler(HyperSolver):
    """``HyperSolver("euler", g)``: ``z + eps*f(s, z) + eps**2 * g(eps, s, z, f(s, z))``,
    eq. (4). One ``f`` and one ``g`` evaluation per step."""

    def __init__(self, g: nn.Module, *, enabled: bool = True):
        super().__init__("euler", g, enabled=enabled)


class HyperMidpoint(HyperSolver):
    """``HyperSolver("midpoint", g)`` (``alpha(0.5)``), correction scaled by ``eps**3``.
    Two ``f`` and one ``g`` evaluation per step; ``with_base(alpha(a))`` swaps the base
    across the second-order family."""

    def __init__(self, g: nn.Module, *, enabled: bool = True):
        super().__init__("midpoint", g, enabled=enabled)


class HyperHeun(HyperSolver):
    """``HyperSolver("heun2", g)`` (``alpha(1)``), correction scaled by ``eps**3``.
    Two ``f`` and one ``g`` evaluation per step (the paper's CNF sampler: K=1, 2 NFE)."""

    def __init__(self, g: nn.Module, *, enabled: bool = True):
        super().__init__("heun2", g, enabled=enabled)


# ---------------------------------------------------------------------- helpers


def _check_bool(owner: str, name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{owner}: {name} must be a bool, got {value!r}")
    return value


def _scalar(value: float | Tensor, ref: Tensor) -> Tensor:
    if isinstance(value, Tensor):
        return value.to(dtype=ref.dtype, device=ref.device).reshape(())
    return torch.full((), value, dtype=ref.dtype, device=ref.device)


def _check_correction(out: Any, y: State, t: float | Tensor) -> None:
    """Python-level checks only (no host sync); ``t`` is formatted only on failure."""
    if isinstance(y, tuple):
        if not isinstance(out, (tuple, list)) or len(out) != len(y):
            raise ValueError(f"g must return a tuple of {len(y)} tensors like the state, got "
                             f"{type(out).__name__} at t={_fmt(t)}")
        pairs = [(f"g's output[{i}]", o, m) for i, (o, m) in enumerate(zip(out, y))]
    else:
        pairs = [("g's output", out, y)]
    for where, o, m in pairs:
        if not isinstance(o, Tensor):
            raise ValueError(f"{where} must be a tensor, got {type(o).__name__} at t={_fmt(t)}")
        if o.shape != m.shape:
            raise ValueError(f"{where} has shape {tuple(o.shape)} but the state has shape "
                             f"{tuple(m.shape)} (at t={_fmt(t)}); g(eps, t, y, dy) must "
                             f"return a correction of y's shape")
        if o.dtype != m.dtype:
            raise ValueError(f"{where} has dtype {o.dtype} but the state has dtype {m.dtype} "
                             f"(at t={_fmt(t)}); cast g (g.to(dtype)) or the state so they "
                             f"agree")
        if o.device != m.device:
            raise ValueError(f"{where} is on {o.device} but the state is on {m.device}; "
                             f"move g with g.to(device)")


def _fmt(t: float | Tensor) -> str:
    return repr(float(t))
