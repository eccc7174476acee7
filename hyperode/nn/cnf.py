"""Continuous normalizing flows (Chen et al. 2018; FFJORD, Grathwohl et al. 2019).

A CNF moves samples with ``dz/dt = f(t, z)``; the log-density along a trajectory
obeys the instantaneous change of variables

    d log p(z(t)) / dt = -tr(df/dz(t, z(t))).

``CNF`` is that augmented vector field over the tuple state ``(z, logp)``; the
trace is exact (``D`` autograd calls, for small ``D``) or Hutchinson's estimate
``E_v[v^T (df/dz) v]`` with one vector-Jacobian product per evaluation.
``CNFModel`` places the base density ``N(0, I)`` at ``t_span[0]`` and the data at
``t_span[1]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor, nn

from ..solvers.problem import State
from .node import NeuralODE, check_sensitivity, check_t_span, last
from .solver_config import SolverConfig

TRACES = ("exact", "hutchinson")
NOISES = ("gaussian", "rademacher")


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """``log N(z; 0, I)`` summed over features: ``[B, D] -> [B]``."""
    return -0.5 * (z.pow(2).sum(dim=1) + z.shape[1] * math.log(2 * math.pi))


class CNF(nn.Module):
    """The FFJORD vector field on ``(z, logp)``: ``(f(t, z), -tr(df/dz))``.

    Args:
        net: the flow, called as ``net(t, z)`` with ``z`` ``[B, D]`` -> ``[B, D]``
            (``TimeConcat(mlp)`` makes an MLP of ``D + 1`` inputs time-dependent;
            ``Autonomous(mlp)`` ignores time).
        trace: ``"exact"`` — ``D`` reverse-mode calls per evaluation; ``"hutchinson"``
            — the unbiased estimate ``v^T (df/dz) v`` from one vector-Jacobian
            product, with ``v`` drawn once per solve by ``resample_noise``.
        noise: the distribution of ``v``: ``"gaussian"`` or ``"rademacher"`` (+-1).

    Shapes: ``forward(t, (z [B, D], logp [B, 1])) -> (dz [B, D], dlogp [B, 1])``.
    The trace is built with ``create_graph`` whenever gradients are being recorded,
    so losses on ``logp`` backpropagate into ``net`` (through the solver or the
    adjoint).
    """

    def __init__(self, net: nn.Module, trace: str = "exact", noise: str = "gaussian"):
        super().__init__()
        if not isinstance(net, nn.Module):
            raise ValueError(f"CNF: net must be a torch.nn.Module called as net(t, z), "
                             f"got {type(net).__name__}")
        if trace not in TRACES:
            raise ValueError(f"CNF: trace must be one of {TRACES}, got {trace!r}")
        if noise not in NOISES:
            raise ValueError(f"CNF: noise must be one of {NOISES}, got {noise!r}")
        self.net = net
        self.trace = trace
        self.noise = noise
        self._noise: Tensor | None = None

    def resample_noise(self, z: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Draw the Hutchinson probe ``v`` (``z``'s shape) used until the next call.

        Call it once before each solve (``CNFModel`` does): one ``v`` per solve keeps
        the integrand a fixed smooth function of ``t``, which adaptive solvers need.
        """
        if self.noise == "gaussian":
            v = torch.randn(z.shape, dtype=z.dtype, device=z.device, generator=generator)
        else:
            v = torch.randint(0, 2, z.shape, device=z.device, generator=generator)
            v = v.to(z.dtype) * 2 - 1
        self._noise = v
        return v

    def forward(self, t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        if not isinstance(state, tuple) or len(state) != 2:
            raise ValueError("CNF: the state must be the tuple (z [B, D], logp [B, 1])")
        z, _ = state
        if z.ndim != 2:
            raise ValueError(f"CNF: z must have shape [B, D], got {tuple(z.shape)}")
        record = torch.is_grad_enabled()
        with torch.enable_grad():
            if not record or not z.requires_grad:  # a fresh leaf unless a graph is wanted
                z = z.detach().requires_grad_(True)
            dz = self.net(t, z)
            if self.trace == "exact":
                div = self._exact_trace(dz, z, create_graph=record)
            else:
                div = self._hutchinson_trace(dz, z, create_graph=record)
        if not record:
            dz, div = dz.detach(), div.detach()
        return dz, -div.unsqueeze(1)

    @staticmethod
    def _exact_trace(dz: Tensor, z: Tensor, create_graph: bool) -> Tensor:
        """``sum_i d dz_i / d z_i`` per sample, ``[B]``."""
        div = torch.zeros(z.shape[0], dtype=z.dtype, device=z.device)
        for i in range(z.shape[1]):
            (row,) = torch.autograd.grad(dz[:, i].sum(), z, create_graph=create_graph,
                                         retain_graph=True)
            div = div + row[:, i]
        return div

    def _hutchinson_trace(self, dz: Tensor, z: Tensor, create_graph: bool) -> Tensor:
        """``v^T (d dz / d z) v`` per sample, ``[B]``."""
        v = self._noise
        if v is None:
            raise ValueError("CNF: trace='hutchinson' needs a probe; call "
                             "cnf.resample_noise(z) before the solve")
        if v.shape != z.shape:
            raise ValueError(f"CNF: the Hutchinson probe has shape {tuple(v.shape)} but z has "
                             f"{tuple(z.shape)}; call cnf.resample_noise(z) for this batch")
        (vjp,) = torch.autograd.grad(dz, z, v, create_graph=create_graph)
        return (vjp * v).sum(dim=1)

    def extra_repr(self) -> str:
        return f"trace={self.trace!r}, noise={self.noise!r}"


class CNFModel(nn.Module):
    """A CNF density model: base ``N(0, I)`` at ``t_span[0]``, data at ``t_span[1]``.

    Sign convention: ``log_prob`` integrates ``(x, 0)`` from ``t1`` back to ``t0`` and
    reads ``(z0, delta_logp)``, ``delta_logp = int_{t0}^{t1} tr(df/dz) dt``; then

        log p(x) = log N(z0; 0, I) - delta_logp.

    (For ``f(z) = A z`` over ``T = t1 - t0``: ``delta_logp = tr(A) T``.)

    Args:
        cnf: the ``CNF`` vector field.
        t_span, solver, sensitivity, seminorm: as for ``NeuralODE`` (``self.node``
            holds them; swap the solver with ``model.solver = ...`` or
            ``model.node.using(...)``).
        dim: the data dimension ``D``, needed by ``sample``; when ``None`` it is taken
            from the first data ``log_prob`` sees.

    Shapes: ``x`` ``[B, D]``; ``log_prob(x)`` ``[B]``; ``sample(n)`` ``[n, D]``.
    """

    def __init__(
        self,
        cnf: CNF,
        t_span: Sequence[float] = (0.0, 1.0),
        solver: SolverConfig = SolverConfig(),  # noqa: B008 (frozen, immutable value)
        sensitivity: str = "autograd",
        seminorm: bool = False,
        *,
        dim: int | None = None,
    ):
        super().__init__()
        if not isinstance(cnf, CNF):
            raise ValueError(f"CNFModel: cnf must be a CNF, got {type(cnf).__name__}")
        check_t_span("CNFModel", t_span)
        check_sensitivity("CNFModel", sensitivity)
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim < 1):
            raise ValueError(f"CNFModel: dim must be an int >= 1 or None, got {dim!r}")
        self.dim = dim
        self.node = NeuralODE(cnf, t_span, solver, sensitivity, seminorm)

    @property
    def cnf(self) -> CNF:
        return cast(CNF, self.node.vector_field)

    @property
    def solver(self) -> SolverConfig:
        return self.node.solver

    @solver.setter
    def solver(self, value: SolverConfig) -> None:
        self.node.solver = value

    def _times(self, like: Tensor, direction: int) -> Tensor:
        s0, s1 = self.node.t_span
        span = (s1, s0) if direction < 0 else (s0, s1)
        return torch.tensor(span, dtype=torch.float64, device=like.device)

    def _flow(self, z: Tensor, direction: int, generator: torch.Generator | None) -> State:
        if not isinstance(z, Tensor) or z.ndim != 2:
            shape = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
            raise ValueError(f"CNFModel: x must be a [B, D] tensor, got {shape}")
        if self.dim is None:
            self.dim = z.shape[1]
        elif z.shape[1] != self.dim:
            raise ValueError(f"CNFModel: x has {z.shape[1]} features but the model's dim is "
                             f"{self.dim}")
        if self.cnf.trace == "hutchinson":
            self.cnf.resample_noise(z, generator)
        logp0 = z.new_zeros(z.shape[0], 1)
        return last(self.node.integrate((z, logp0), self._times(z, direction)))

    def base_and_delta(self, x: Tensor, generator: torch.Generator | None = None
                       ) -> tuple[Tensor, Tensor]:
        """Map data to the base: ``(z0 [B, D], delta_logp [B])`` (see the class docstring)."""
        z0, delta = self._flow(x, -1, generator)
        return z0, delta.squeeze(1)

    def log_prob(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``log p(x)``, ``[B]`` (``generator`` seeds the Hutchinson probe, if any)."""
        z0, delta = self.base_and_delta(x, generator)
        return standard_normal_log_prob(z0) - delta

    def sample_with_log_prob(self, n: int, generator: torch.Generator | None = None
                             ) -> tuple[Tensor, Tensor]:
        """``n`` samples ``x`` ``[n, D]`` and their model log-density ``[n]``, integrating
        ``(z0, log N(z0))`` from ``t0`` to ``t1``."""
        z0 = self._base_sample(n, generator)
        x, logp = self._flow(z0, +1, generator)
        return x, standard_normal_log_prob(z0) + logp.squeeze(1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` samples ``[n, D]``: ``z0 ~ N(0, I)`` pushed from ``t0`` to ``t1`` through
        ``net`` alone (no trace is computed)."""
        z0 = self._base_sample(n, generator)
        return cast(Tensor, last(self.node.integrate(z0, self._times(z0, +1), field=self.cnf.net)))

    def nll_bits_per_dim(self, x: Tensor, n_bins: int | None = None,
                         generator: torch.Generator | None = None) -> Tensor:
        """Mean negative log-likelihood in bits per dimension (a scalar).

        ``-log p(x) / (D ln 2)`` for continuous data; with ``n_bins`` (e.g. 256 for
        8-bit images scaled to [0, 1] and dequantized) the density is converted to
        the discrete scale: ``(-log p(x) / D + ln n_bins) / ln 2``.
        """
        d = x.shape[1]
        nll = -self.log_prob(x, generator) / d
        if n_bins is not None:
            if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
                raise ValueError(f"nll_bits_per_dim: n_bins must be an int >= 1, "
                                 f"got {n_bins!r}")
            nll = nll + math.log(n_bins)
        return nll.mean() / math.log(2)

    def _base_sample(self, n: int, generator: torch.Generator | None) -> Tensor:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"CNFModel: n must be an int >= 1, got {n!r}")
        ref = next(self.cnf.parameters(), None)
        dtype = ref.dtype if ref is not None else torch.get_default_dtype()
        device = ref.device if ref is not None else None
        d = self._dim()
        return torch.randn(n, d, dtype=dtype, device=device, generator=generator)

    def _dim(self) -> int:
        if self.dim is None:
            raise ValueError("CNFModel: the data dimension is unknown; give CNFModel(..., "
                             "dim=D) or call log_prob on data first")
        return self.dim
