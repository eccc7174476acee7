"""The vector field of a torchdyn-style ``NeuralODE``: call-pattern detection, higher
order, integral losses and torchdyn's ``nfe`` counter.

torchdyn inspects the field's signature (``torchdyn/core/utils.py``,
``standardize_vf_call_signature``) and wraps it (``torchdyn/core/defunc.py``,
``DEFuncBase`` and ``DEFunc``). The rule mirrored here: a field whose ``forward`` (for an
``nn.Module``) or whose own signature (for any other callable) has a parameter named
``t`` is called as ``f(t, x)``, and ``f(t, x, args=args)`` when it also takes ``args``
(or ``**kwargs``); any other field is called as ``f(x)``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn


def call_pattern(field: Any) -> tuple[bool, bool]:
    """``(takes_time, takes_args)`` of ``field`` by torchdyn's rule (see the module).

    ``ValueError`` for a field that is not callable, or whose signature needs two or more
    positional arguments without one being named ``t`` (torchdyn would call it as
    ``f(x)`` and fail inside the solve).
    """
    if not callable(field):
        raise ValueError(f"NeuralODE: vector_field must be an nn.Module or a callable, got "
                         f"{type(field).__name__}")
    target = field.forward if isinstance(field, nn.Module) else field
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):  # a builtin without a signature: treat as f(x)
        return False, False
    takes_time = "t" in params
    takes_args = "args" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())
    if not takes_time:
        required = [p for p in params.values()
                    if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                    and p.default is p.empty]
        if len(required) >= 2:
            raise ValueError(
                f"NeuralODE: vector_field {type(field).__name__} needs the positional "
                f"arguments {[p.name for p in required]} but none is named 't'; torchdyn "
                f"(and this module) call a field as f(t, x) only when a parameter is named "
                f"'t', else as f(x). Rename the time argument to 't'")
    return takes_time, takes_args


def _reads_time(module: nn.Module) -> bool:
    """A submodule with a plain attribute ``t`` (not a parameter, buffer or method)."""
    if "t" in module._parameters or "t" in module._buffers or not hasattr(module, "t"):
        return False
    return not callable(module.t)


class TorchdynField(nn.Module):
    """``dx/dt`` as the solvers call it, ``forward(t, x)``, from a torchdyn-style field.

    Args:
        vector_field: the user's field (``nn.Module`` or callable) taking ``(x)``,
            ``(t, x)`` or ``(t, x, args)`` (``call_pattern``).
        order: order of the ODE. For ``order=k > 1`` the state is ``[B, k*d, ...]``
            holding ``x, x', ..., x^(k-1)`` along dim 1, the field receives the whole
            state and returns ``x^(k)`` (``[B, d, ...]``); ``forward`` returns
            ``[x', ..., x^(k-1), field(t, x)]`` (``DEFunc.higher_order_forward``).

    Attributes:
        vf: the user's field, unchanged.
        nfe: evaluations since construction (a float, as torchdyn's ``DEFunc.nfe``);
            every call counts (starting-step estimate and backward solves included);
            never reset by a solve: set ``node.vf.nfe = 0`` yourself.
        integral_loss: ``g(t, x)`` (``[B]`` or ``[B, 1]``) or ``None``. When set and
            ``sensitivity == "autograd"``, ``x[:, 0]`` is the running integral of ``g``
            and the dynamics act on ``x[:, 1:]`` (``DEFunc.forward``).
        args: the dict handed to fields that take ``args`` (set per solve).

    Before each evaluation, every submodule of ``vf`` with an attribute ``t`` gets the
    current time (torchdyn's depth-concatenation modules read it there).
    """

    def __init__(self, vector_field: Callable, order: int = 1):
        super().__init__()
        self.takes_time, self.takes_args = call_pattern(vector_field)
        if isinstance(order, bool) or not isinstance(order, int) or order < 1:
            raise ValueError(f"NeuralODE: order must be an int >= 1, got {order!r}")
        self.vf = vector_field
        self.order = order
        self.nfe = 0.0
        self.integral_loss: Callable | None = None
        self.sensitivity: str | None = None
        self.args: dict = {}
        self._timed = [m for _, m in vector_field.named_modules() if _reads_time(m)] \
            if isinstance(vector_field, nn.Module) else []

    def call_field(self, t: Tensor, x: Tensor) -> Tensor:
        """The user's field on ``x`` (no order or integral-loss handling)."""
        if not self.takes_time:
            return self.vf(x)
        if self.takes_args:
            return self.vf(t, x, args=self.args)
        if self.args:
            raise ValueError(f"NeuralODE: args={self.args!r} were given but the vector field "
                             f"{type(self.vf).__name__} takes no 'args' parameter")
        return self.vf(t, x)

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        self.nfe += 1
        for module in self._timed:
            module.t = t
        if self.integral_loss is not None and self.sensitivity == "autograd":
            x_dyn = x[:, 1:]
            dl = self.integral_loss(t, x_dyn)
            if dl.ndim == 1:
                dl = dl[:, None]
            return torch.cat([dl, self._dynamics(t, x_dyn)], 1).to(x_dyn)
        return self._dynamics(t, x)

    def _dynamics(self, t: Tensor, x: Tensor) -> Tensor:
        if self.order == 1:
            return self.call_field(t, x)
        if x.ndim < 2 or x.shape[1] % self.order:
            raise ValueError(f"NeuralODE: order={self.order} needs a state [B, {self.order}*d, "
                             f"...] (dim 1 divisible by the order), got {tuple(x.shape)}")
        size = x.shape[1] // self.order
        return torch.cat([x[:, size:], self.call_field(t, x)], 1).to(x)

    def extra_repr(self) -> str:
        style = "f(t, x, args)" if self.takes_args and self.takes_time else \
            "f(t, x)" if self.takes_time else "f(x)"
        return f"called as {style}, order={self.order}, nfe={self.nfe:g}"
