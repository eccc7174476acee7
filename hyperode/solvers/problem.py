"""The user's vector field as the integrators see it.

Integrators work on one tensor: the state itself, or for a tuple state the
concatenation of its flattened members. ``VectorField`` hides that, turns the
integrators' float times into tensors, counts evaluations, and checks the first
output's shape and dtype so that a mismatch fails loudly instead of broadcasting.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

State = Tensor | tuple[Tensor, ...]


class StateLayout:
    """How a tensor or tuple-of-tensors state maps onto one flat solver tensor."""

    def __init__(self, y0: State):
        self.is_tuple = isinstance(y0, tuple)
        members = y0 if self.is_tuple else (y0,)
        self.shapes = tuple(m.shape for m in members)
        self.numels = tuple(math.prod(s) for s in self.shapes)
        self.dtype = members[0].dtype
        self.device = members[0].device

    def flatten(self, y: State) -> Tensor:
        if not self.is_tuple:
            return y
        return torch.cat([m.reshape(-1) for m in y])

    def unflatten(self, flat: Tensor) -> State:
        """Views into ``flat`` (leading dims of ``flat`` beyond the state are kept)."""
        if not self.is_tuple:
            return flat
        lead = flat.shape[:-1]
        parts = flat.split(self.numels, dim=-1)
        return tuple(p.reshape(lead + s) for p, s in zip(parts, self.shapes))


class VectorField:
    """``f(t, y)`` on the flat state with ``t`` a Python float.

    ``t`` reaches the user's function as a 0-dim tensor in the state's dtype and
    device (as torchdiffeq does). ``nfe`` counts calls.
    """

    def __init__(self, func: Callable[[Tensor, State], State], layout: StateLayout):
        self.func = func
        self.layout = layout
        self.nfe = 0
        self._checked = False

    def __call__(self, t: float, y: Tensor) -> Tensor:
        self.nfe += 1
        layout = self.layout
        t_tensor = torch.full((), t, dtype=layout.dtype, device=layout.device)
        out = self.func(t_tensor, layout.unflatten(y))
        if not self._checked:
            self._check(out, t)
        return layout.flatten(out)

    def _check(self, out: object, t: float) -> None:
        layout = self.layout
        if layout.is_tuple:
            if not isinstance(out, (tuple, list)) or len(out) != len(layout.shapes):
                raise ValueError(
                    f"func must return a tuple of {len(layout.shapes)} tensors like y0, "
                    f"got {type(out).__name__} at t={t!r}"
                )
            members = tuple(out)
        else:
            if not isinstance(out, Tensor):
                raise ValueError(f"func must return a tensor like y0, got {type(out).__name__} "
                                 f"at t={t!r}")
            members = (out,)
        for i, (m, shape) in enumerate(zip(members, layout.shapes)):
            where = f"func's output[{i}]" if layout.is_tuple else "func's output"
            if not isinstance(m, Tensor):
                raise ValueError(f"{where} must be a tensor, got {type(m).__name__}")
            if m.shape != shape:
                raise ValueError(f"{where} has shape {tuple(m.shape)} but the state has shape "
                                 f"{tuple(shape)}; f(t, y) must return dy/dt of y's shape")
            if m.dtype != layout.dtype:
                raise ValueError(f"{where} has dtype {m.dtype} but the state has dtype "
                                 f"{layout.dtype}; cast y0 or the vector field so they agree")
            if m.device != layout.device:
                raise ValueError(f"{where} is on {m.device} but the state is on {layout.device}")
        self._checked = True
