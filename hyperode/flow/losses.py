"""The conditional flow-matching regression loss.

Lipman et al. 2023 (eq. 9) regress a time-conditioned field ``v_theta(t, x)`` onto the
conditional target field of a probability path:

    L_CFM(theta) = E_{t ~ U[t_lo, t_hi], (x0, x1) ~ pi, x_t = path(x0, x1, t)}
                   || v_theta(t, x_t) - u_t(x_t | x0, x1) ||^2                  (9)

whose gradient equals that of the intractable marginal objective
``E || v_theta(t, x) - u_t(x) ||^2`` (their Theorem 2), ``u_t(x) = E[u_t(x | x0, x1) |
x_t = x]`` being the field that pushes the prior onto the data. ``pi`` is the coupling
(``hyperode.flow.couplings``: independent, or minibatch OT as in Tong et al. 2024,
eq. 16). The estimator here averages the squared error over the batch *and* the
features (as torchcfm does), so its scale does not grow with the state's size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ._checks import batch, same_shape
from .couplings import Coupling, get_coupling
from .paths import ProbabilityPath, get_path

Field = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class FlowBatch:
    """One batch of the regression: times ``t`` ``[B]``, points ``x_t`` and targets
    ``u_t`` (``[B, ...]``), and the coupled pairs ``x0``, ``x1``."""

    t: Tensor
    xt: Tensor
    ut: Tensor
    x0: Tensor
    x1: Tensor


class FlowMatcher:
    """A probability path plus a coupling: draws regression batches and computes eq. (9).

    Args:
        path: a ``ProbabilityPath`` or its name (``"linear"``, ``"cosine"``, ``"vp"``).
        coupling: ``"independent"``, ``"ot"`` or a callable ``(x0, x1) -> (x0, x1)``.

        matcher = FlowMatcher(LinearPath(sigma_min=1e-4), "ot")
        loss = matcher.loss(field, x1)            # x0 ~ N(0, I) drawn inside
    """

    def __init__(self, path: str | ProbabilityPath = "linear",
                 coupling: str | Coupling = "independent"):
        self.path = get_path(path)
        self.coupling = get_coupling(coupling)
        self.coupling_name = coupling if isinstance(coupling, str) else \
            getattr(coupling, "__name__", type(coupling).__name__)

    def draw(self, x1: Tensor, x0: Tensor | None = None, t: Tensor | None = None, *,
             generator: torch.Generator | None = None) -> FlowBatch:
        """Couple ``x0`` (default: ``N(0, I)`` of ``x1``'s shape) with the data ``x1``,
        draw ``t ~ U(time_range)`` per sample (unless given, ``[B]``) and return
        ``x_t`` and the conditional target ``u_t``."""
        x1 = batch("FlowMatcher.draw", "x1", x1)
        if x0 is None:
            x0 = torch.randn(x1.shape, dtype=x1.dtype, device=x1.device, generator=generator)
        same_shape("FlowMatcher.draw", "x0", x0, "x1", x1)
        x0, x1 = self.coupling(x0, x1)
        if t is None:
            lo, hi = self.path.time_range
            t = lo + (hi - lo) * torch.rand(x1.shape[0], dtype=x1.dtype, device=x1.device,
                                            generator=generator)
        xt = self.path.sample(x0, x1, t)
        ut = self.path.target(x0, x1, t)
        return FlowBatch(t, xt, ut, x0, x1)

    def loss(self, field: Field, x1: Tensor, x0: Tensor | None = None,
             t: Tensor | None = None, *, generator: torch.Generator | None = None) -> Tensor:
        """Eq. (9) on one batch: ``mean((v(t, x_t) - u_t)^2)`` over samples and features.
        ``field(t, x)`` receives ``t`` as ``[B]``."""
        b = self.draw(x1, x0, t, generator=generator)
        return regression_loss(field, b)

    def __repr__(self) -> str:
        return f"FlowMatcher({self.path!r}, coupling={self.coupling_name!r})"


def regression_loss(field: Field, b: FlowBatch) -> Tensor:
    """``mean((field(t, x_t) - u_t)^2)`` for a drawn ``FlowBatch``."""
    v = field(b.t, b.xt)
    if not isinstance(v, Tensor) or v.shape != b.ut.shape:
        got = tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__
        raise ValueError(f"the field returned {got} for x_t of shape {tuple(b.xt.shape)}; "
                         f"field(t, x) must return a velocity of x's shape")
    return torch.mean((v - b.ut) ** 2)
