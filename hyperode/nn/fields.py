"""Adapters that turn ordinary modules into vector fields ``f(t, z)``.

Every vector field in hyperode is called as ``f(t, z)`` with ``t`` a 0-dim tensor
in the state's dtype (what the solver passes). These wrappers say explicitly how an
ordinary ``nn.Module`` becomes one:

- ``Autonomous(net)``: ``f(t, z) = net(z)`` (time is ignored).
- ``TimeConcat(net)``: ``f(t, z) = net([z, t])``, time appended as one more feature
  (``[B, D] -> [B, D + 1]``) or one more constant channel (``[B, C, H, W] ->
  [B, C + 1, H, W]``), the usual way to make an MLP or CNN depth-variant.
- ``DataControlled(field)``: ``f(t, z, x) = field(t, [z, x])``, the data-controlled
  field of the hypersolver paper's eq. (1), ``z' = f(s, x, z)``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn


def _check_module(name: str, value: object) -> None:
    if not isinstance(value, nn.Module):
        raise ValueError(f"{name} must be a torch.nn.Module, got {type(value).__name__}")


def _check_dim(owner: str, dim: object) -> int:
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise ValueError(f"{owner}: dim must be an int, got {dim!r}")
    return dim


class Autonomous(nn.Module):
    """``f(t, z) = net(z)``: a time-independent vector field.

    Shapes: ``z`` is whatever ``net`` takes; ``net(z)`` must have ``z``'s shape.
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        _check_module("Autonomous: net", net)
        self.net = net

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        return self.net(z)


class TimeConcat(nn.Module):
    """``f(t, z) = net(cat([z, t * 1], dim))``: time as an extra input feature/channel.

    ``t`` is a scalar, or a ``[B]`` tensor of one time per sample of a ``[B, ...]``
    state (per-sample step sizes).

    Args:
        net: maps the state with one extra slice along ``dim`` back to the state's
            shape, e.g. ``Linear(D + 1, D)`` for ``[B, D]`` states or ``Conv2d(C + 1, C,
            ...)`` for ``[B, C, H, W]`` states.
        dim: where time is appended (1: the feature/channel dim of a batched state).
    """

    def __init__(self, net: nn.Module, dim: int = 1):
        super().__init__()
        _check_module("TimeConcat: net", net)
        self.net = net
        self.dim = _check_dim("TimeConcat", dim)

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        shape = list(z.shape)
        shape[self.dim] = 1
        tt = torch.as_tensor(t, dtype=z.dtype, device=z.device)
        if tt.dim() == 1 and z.dim() > 1 and tt.shape[0] == z.shape[0]:
            # one time per sample ([B], options=dict(per_sample_steps=True)): t_b fills
            # sample b's slice
            tt = tt.reshape(-1, *([1] * (z.dim() - 1)))
        return self.net(torch.cat([z, tt.expand(shape)], dim=self.dim))


class DataControlled(nn.Module):
    """The data-controlled vector field ``f(s, x, z) = field(s, cat([z, x], dim))``.

    Shapes: ``z`` is the state, e.g. ``[B, C, H, W]`` or ``[B, D]``; the control ``x``
    must match it in every dim except ``dim`` (``[B, Cx, H, W]`` / ``[B, Dx]``);
    ``field`` maps ``[B, C + Cx, ...]`` to the state's shape ``[B, C, ...]``.

    How ``x`` reaches the field: nothing is stored on the module. ``bind(x)``
    returns the closure ``(t, z) -> self(t, z, x)`` that one solve integrates;
    ``NeuralODE.forward(z0, control=x)`` makes it. The control therefore lives
    exactly as long as that solve's graph (its backward pass and an adjoint's
    backward solve included) and can never leak into the next batch; calling the
    field without a control raises.
    """

    def __init__(self, field: nn.Module, dim: int = 1):
        super().__init__()
        _check_module("DataControlled: field", field)
        if isinstance(field, DataControlled):
            raise ValueError("DataControlled: field is already a DataControlled field")
        self.field = field
        self.dim = _check_dim("DataControlled", dim)

    def forward(self, t: Tensor, z: Tensor, control: Tensor | None = None) -> Tensor:
        if control is None:
            raise ValueError("DataControlled needs the control x: integrate it through "
                             "NeuralODE.forward(z0, control=x) or call field.bind(x)")
        zs, xs = list(z.shape), list(control.shape)
        if len(zs) != len(xs) or any(a != b for i, (a, b) in enumerate(zip(zs, xs))
                                     if i != self.dim % len(zs)):
            raise ValueError(f"DataControlled: control has shape {tuple(xs)}, which does not "
                             f"match the state's shape {tuple(zs)} outside dim {self.dim}")
        return self.field(t, torch.cat([z, control.to(z.dtype)], dim=self.dim))

    def bind(self, control: Tensor) -> Callable[[Tensor, Tensor], Tensor]:
        """The vector field ``(t, z) -> field(t, [z, control])`` for one solve."""
        if not isinstance(control, Tensor):
            raise ValueError(f"DataControlled.bind: control must be a tensor, "
                             f"got {type(control).__name__}")

        def controlled(t: Tensor, z: Tensor) -> Tensor:
            return self(t, z, control)

        return controlled
