"""The starting step of Hairer, Nørsett & Wanner (Solving ODEs I, 2nd ed., §II.4, p. 169).

Ott et al. (ICLR 2021, Algorithm 2) start step adaptation from this step, computed on
the first training batch. The algorithm, for a method of order ``p``, with the RMS
norm weighted by ``sc = atol + rtol*|y0|``:

1. ``d0 = ||y0||``, ``d1 = ||f(t0, y0)||``;
2. ``h0 = 1e-6`` if ``d0 < 1e-5`` or ``d1 < 1e-5``, else ``h0 = 0.01 * d0/d1``;
3. one explicit Euler step ``y1 = y0 + h0*f0``; ``d2 = ||f(t0 + h0, y1) - f0|| / h0``;
4. ``h1 = max(1e-6, 1e-3*h0)`` if ``max(d1, d2) <= 1e-15``, else
   ``h1 = (0.01 / max(d1, d2))^(1/(p+1))``;
5. ``h = min(100*h0, h1)`` (here also capped at ``max_step``).

The arithmetic is ``hyperode.solvers.adaptive.initial_step`` (the one the adaptive
solvers use); this wrapper sets it up for a plain callable and a fixed-step method.
A fixed-step solver has no tolerance, so the default weights are ``atol=1, rtol=0``:
the unweighted RMS norm (the reference code uses unweighted per-sample L2 norms,
averaged, which differs by a constant factor of ``sqrt(dim)``). ``p`` is the training
method's order, as in Hairer (torchdiffeq passes ``p - 1``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import cast

import torch
from torch import Tensor, nn

from ..nn.node import NeuralODE
from ..nn.odes import neural_odes
from ..solvers.adaptive import AdaptiveConfig, initial_step
from ..solvers.controllers import IController
from ..solvers.norms import rms_norm
from ..solvers.problem import VectorField


def starting_step(f: Callable[[Tensor, Tensor], Tensor], t0: float, y0: Tensor, order: int, *,
                  rtol: float = 0.0, atol: float = 1.0, max_step: float = math.inf,
                  direction: float = 1.0) -> float:
    """Hairer–Nørsett–Wanner's starting step for ``dy/dt = f(t, y)`` at ``(t0, y0)``.

    Args:
        f: the vector field ``f(t, y)`` (``t`` is passed as a 0-d tensor of ``y``'s dtype).
        t0, y0: the initial time and state (any shape; the norm runs over all entries).
        order: the order ``p`` of the method that will use the step (>= 1).
        rtol, atol: weights of the norm (see the module docstring).
        max_step: upper bound of the result (e.g. the integration span).
        direction: +1 or -1, the direction of integration.

    Returns:
        The step, a positive float. Costs two evaluations of ``f``.
    """
    if not isinstance(order, int) or order < 1:
        raise ValueError(f"starting_step: order must be an int >= 1, got {order!r}")
    if direction not in (1.0, -1.0):
        raise ValueError(f"starting_step: direction must be +1 or -1, got {direction!r}")
    if not (max_step > 0):
        raise ValueError(f"starting_step: max_step must be > 0, got {max_step!r}")

    def field(t: float, y: Tensor) -> Tensor:
        return f(torch.tensor(t, dtype=y.dtype, device=y.device), y)

    cfg = AdaptiveConfig(rtol=rtol, atol=atol, norm=rms_norm, controller=IController(),
                         max_step=max_step)
    with torch.no_grad():
        f0 = field(t0, y0)
        # initial_step only calls f(t, y); a VectorField's counting is not needed here
        return float(initial_step(cast(VectorField, field), t0, y0, f0, direction,
                                  1.0 / (order + 1), cfg))


class _Captured(Exception):
    """Raised by the capture hook to stop the forward pass once the input is known."""


def neural_ode_input(model: nn.Module, x: Tensor) -> tuple[NeuralODE, Tensor]:
    """The first ``NeuralODE`` of ``model`` and the state it receives when the model runs
    on ``x`` (the forward pass stops at the Neural ODE, nothing is integrated)."""
    nodes = neural_odes(model)
    if not nodes:
        raise ValueError(f"the model ({type(model).__name__}) contains no NeuralODE")
    node = nodes[0]
    captured: dict[str, Tensor] = {}

    def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        if kwargs.get("control") is not None:
            raise ValueError("starting step: data-controlled Neural ODEs are not supported; "
                             "give the initial step explicitly")
        z0 = args[0] if args else kwargs.get("z0")
        if not isinstance(z0, Tensor):
            raise ValueError("starting step: the Neural ODE's state is not a single tensor; "
                             "give the initial step explicitly")
        captured["z0"] = z0.detach()
        raise _Captured

    handle = node.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            model(x)
    except _Captured:
        pass
    finally:
        handle.remove()
    if "z0" not in captured:
        raise ValueError("starting step: the model's forward pass did not call its NeuralODE")
    return node, captured["z0"]


def model_starting_step(model: nn.Module, x: Tensor, order: int, *, rtol: float = 0.0,
                        atol: float = 1.0) -> float:
    """``starting_step`` for the first Neural ODE of ``model`` on the batch ``x``, capped
    at the length of its integration span."""
    node, z0 = neural_ode_input(model, x)
    s0, s1 = node.t_span
    with torch.no_grad():
        return starting_step(node.vector_field, s0, z0, order, rtol=rtol, atol=atol,
                             max_step=abs(s1 - s0), direction=1.0 if s1 > s0 else -1.0)
