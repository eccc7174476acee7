"""``NeuralODE``: a module that integrates ``z' = f(s, z)`` over a depth span.

    z(s0) = z0,   dz/ds = f(s, z),   forward(z0) = z(s1)         (Chen et al. 2018)

The solver is a ``SolverConfig`` value held next to the weights, never inside them:
reassign ``node.solver`` or use ``with node.using(cfg): ...`` to evaluate the same
weights with another solver. Gradients come from backpropagation through the
solver's operations (``sensitivity="autograd"``) or from the adjoint method
(``sensitivity="adjoint"``, ``hyperode.adjoint``), optionally with the seminorm of
Kidger et al. for the backward solve's error control.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from ..adjoint import solve_adjoint
from ..checks import check_t_span
from ..odeint import solve
from ..solvers.problem import State
from ..solvers.stats import SolverStats
from .fields import DataControlled
from .solver_config import SolverConfig

SENSITIVITIES = ("autograd", "adjoint")


def check_sensitivity(owner: str, sensitivity: Any) -> str:
    if sensitivity not in SENSITIVITIES:
        raise ValueError(f"{owner}: sensitivity must be one of {SENSITIVITIES}, "
                         f"got {sensitivity!r}")
    return sensitivity


def last(ys: State) -> State:
    """The final time slice of a trajectory (tensor or tuple of tensors)."""
    return tuple(y[-1] for y in ys) if isinstance(ys, tuple) else ys[-1]


class NeuralODE(nn.Module):
    """Integrate ``dz/ds = vector_field(s, z)`` from ``t_span[0]`` to ``t_span[1]``.

    Args:
        vector_field: an ``nn.Module`` called as ``vector_field(t, z)`` with ``t`` a
            0-dim tensor; returns ``dz/ds`` with ``z``'s structure and shape. Wrap a
            plain network with ``Autonomous`` or ``TimeConcat``.
        t_span: ``(s0, s1)``, the integration interval (may decrease).
        solver: the ``SolverConfig``; a plain attribute, reassign it at any time.
        sensitivity: ``"autograd"`` (backpropagate through the solver) or
            ``"adjoint"`` (``hyperode.adjoint.solve_adjoint``: O(1) memory in depth).
        seminorm: with the adjoint, measure the backward solve's error only on the
            state and its adjoint (``adjoint_options=dict(norm="seminorm")``).

    Shapes: ``z0`` is any floating tensor (``[B, D]``, ``[B, C, H, W]``, ...) or a
    tuple of them; ``forward(z0)`` returns ``z(s1)`` of the same shape, and
    ``forward(z0, t_eval)`` the trajectory ``[len(t_eval), *z0.shape]``.

    After each forward: ``last_stats`` (``SolverStats`` of the forward solve),
    ``nfe_forward``; ``nfe_backward`` is 0 with ``"autograd"`` (the backward pass of
    backpropagation evaluates no ``f``) and, with the adjoint, is read from the
    backward solve's statistics (``last_backward_stats``) once ``.backward()`` ran.
    """

    def __init__(
        self,
        vector_field: nn.Module,
        t_span: Sequence[float] = (0.0, 1.0),
        solver: SolverConfig = SolverConfig(),  # noqa: B008 (frozen, immutable value)
        sensitivity: str = "autograd",
        seminorm: bool = False,
    ):
        super().__init__()
        if not isinstance(vector_field, nn.Module):
            raise ValueError(f"NeuralODE: vector_field must be a torch.nn.Module called as "
                             f"f(t, z), got {type(vector_field).__name__}")
        self.vector_field = vector_field
        self.t_span = check_t_span("NeuralODE", t_span)
        self.solver = solver
        self.sensitivity = check_sensitivity("NeuralODE", sensitivity)
        if not isinstance(seminorm, bool):
            raise ValueError(f"NeuralODE: seminorm must be a bool, got {seminorm!r}")
        if seminorm and sensitivity != "adjoint":
            raise ValueError("NeuralODE: seminorm=True only applies to sensitivity='adjoint' "
                             f"(got sensitivity={sensitivity!r})")
        self.seminorm = seminorm
        self.last_stats: SolverStats | None = None
        self.last_backward_stats: SolverStats | None = None

    # ------------------------------------------------------------------ solver

    @property
    def solver(self) -> SolverConfig:
        return self._solver

    @solver.setter
    def solver(self, value: SolverConfig) -> None:
        if not isinstance(value, SolverConfig):
            raise ValueError(f"NeuralODE: solver must be a SolverConfig, "
                             f"got {type(value).__name__}")
        self._solver = value

    @contextmanager
    def using(self, solver: SolverConfig) -> Iterator[NeuralODE]:
        """Temporarily integrate with ``solver``; the previous one is restored on exit."""
        previous = self.solver
        self.solver = solver
        try:
            yield self
        finally:
            self.solver = previous

    @property
    def nfe_forward(self) -> int:
        """Vector-field evaluations of the last forward solve."""
        return 0 if self.last_stats is None else self.last_stats.nfe

    @property
    def nfe_backward(self) -> int:
        """Vector-field evaluations of the last backward pass (0 with autograd)."""
        return 0 if self.last_backward_stats is None else self.last_backward_stats.nfe

    # ------------------------------------------------------------------ integration

    def forward(self, z0: State, t_eval: Tensor | None = None, *,
                control: Tensor | None = None) -> State:
        """``z(s1)``, or the trajectory at ``t_eval`` (which must start at ``s0``).

        ``control`` is the data ``x`` of a ``DataControlled`` vector field (required
        exactly when the field is one); ``ContinuousDepthModel`` passes it.
        """
        if t_eval is None:
            ys = self.integrate(z0, self._span_tensor(z0), control=control)
            return last(ys)
        if not isinstance(t_eval, Tensor) or t_eval.ndim != 1 or t_eval.numel() == 0:
            raise ValueError(f"NeuralODE: t_eval must be a non-empty 1-D tensor, got "
                             f"{t_eval!r}")
        start = float(t_eval[0])
        if not math.isclose(start, self.t_span[0], rel_tol=1e-6, abs_tol=1e-7):
            raise ValueError(f"NeuralODE: t_eval must start at t_span[0] = {self.t_span[0]!r}, "
                             f"got t_eval[0] = {start!r}")
        return self.integrate(z0, t_eval, control=control)

    def integrate(self, y0: State, t: Tensor, *, control: Tensor | None = None,
                  field: nn.Module | None = None) -> State:
        """Solve from ``t[0]`` through every ``t`` (any direction, no span check) with the
        current solver and sensitivity; returns ``[len(t), *y0.shape]``. Updates
        ``last_stats`` and ``last_backward_stats``.

        ``field`` integrates another vector field with this node's solver and
        sensitivity (e.g. ``CNFModel.sample`` runs the flow without its trace).
        """
        field = self.vector_field if field is None else field
        func, extra = self._func(field, control)
        cfg = self.solver
        sensitivity = check_sensitivity("NeuralODE", self.sensitivity)
        self.last_backward_stats = None
        if sensitivity == "autograd":
            sol = solve(func, y0, t, **cfg.odeint_kwargs())
        else:
            params = tuple(p for p in field.parameters() if p.requires_grad)
            sol = solve_adjoint(func, y0, t, **cfg.odeint_kwargs(),
                                **cfg.adjoint_kwargs(norm=self._adjoint_norm(cfg)),
                                adjoint_params=params + extra)
            self.last_backward_stats = sol.backward_stats
        self.last_stats = sol.stats
        return sol.ys

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _func(field: nn.Module, control: Tensor | None) -> tuple[Callable, tuple[Tensor, ...]]:
        if isinstance(field, DataControlled):
            if control is None:
                raise ValueError("NeuralODE: the vector field is DataControlled; pass the data "
                                 "as forward(z0, control=x)")
            extra = (control,) if control.requires_grad else ()
            return field.bind(control), extra
        if control is not None:
            raise ValueError("NeuralODE: control was given but the vector field is not "
                             "DataControlled; wrap it with DataControlled(field)")
        return field, ()

    def _adjoint_norm(self, cfg: SolverConfig) -> str | None:
        """``seminorm=True`` means torchdiffeq's ``"seminorm"`` unless the solver already
        names a seminorm (e.g. ``"state_seminorm"``)."""
        if not self.seminorm or cfg.adjoint_norm in ("seminorm", "state_seminorm"):
            return cfg.adjoint_norm
        if cfg.adjoint_norm is not None:
            raise ValueError(f"NeuralODE: seminorm=True conflicts with the solver's "
                             f"adjoint_norm={cfg.adjoint_norm!r}")
        return "seminorm"

    def _span_tensor(self, z0: State) -> Tensor:
        ref = z0[0] if isinstance(z0, tuple) else z0
        device = ref.device if isinstance(ref, Tensor) else None
        return torch.tensor(self.t_span, dtype=torch.float64, device=device)

    def extra_repr(self) -> str:
        extra = ", seminorm=True" if self.seminorm else ""
        return (f"t_span={self.t_span}, solver={self.solver.describe()!r}, "
                f"sensitivity={self.sensitivity!r}{extra}")
