"""Cost of a solve: NFE of ``f`` and of a hypersolver's ``g``, and multiply-accumulate
operations (MACs) per sample counted by forward hooks on convolution and linear layers.

Counting convention (as thop/ptflops): a layer's MACs are its multiplications of a
weight by an input, bias additions and activations excluded:

- ``nn.Linear``: ``output.numel() * in_features``;
- ``nn.Conv1d/2d/3d``: ``output.numel() * (in_channels / groups) * prod(kernel_size)``;
- ``nn.ConvTranspose1d/2d/3d``: ``input.numel() * (out_channels / groups) *
  prod(kernel_size)``;
- ``GalerkinLinear`` / ``GalerkinConv2d`` (depth-varying weights): as ``nn.Linear`` /
  ``nn.Conv2d`` with the expanded weight, plus the expansion ``sum_n phi_n(s) W_n``
  itself, ``n_terms * (weight.numel() + bias.numel())`` once per call (whatever the
  batch size).

Hooks see every call of a layer inside the counted modules, so any user architecture
built from these layers is counted, however it is wired. Not counted: layers of other
types, functional calls (``F.conv2d``) and backward passes (e.g. the autograd calls of
a CNF's exact trace).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..nn.galerkin import DepthVariant, GalerkinConv2d, GalerkinLinear
from ..odeint import solve
from ..solvers.problem import State

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_T = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
COUNTED_LAYERS = (nn.Linear, *_CONV, *_CONV_T, GalerkinLinear, GalerkinConv2d)


def layer_macs(module: nn.Module, inputs: tuple[Any, ...], output: Tensor) -> int:
    """MACs of one call of a counted layer (module docstring); 0 for other modules."""
    if isinstance(module, DepthVariant):
        bias_coeffs = module.bias_coeffs
        expansion = module.weight_coeffs.numel() + (
            0 if bias_coeffs is None else bias_coeffs.numel())
        if isinstance(module, GalerkinLinear):
            return output.numel() * module.in_features + expansion
        if isinstance(module, GalerkinConv2d):
            return output.numel() * module.in_channels * math.prod(module.kernel_size) + \
                expansion
        return 0
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    if isinstance(module, _CONV_T):
        return inputs[0].numel() * (module.out_channels // module.groups) * \
            math.prod(module.kernel_size)
    if isinstance(module, _CONV):
        return output.numel() * (module.in_channels // module.groups) * \
            math.prod(module.kernel_size)
    return 0


class MacCounter:
    """Counts MACs of the Conv/Linear layers inside ``modules`` while the block runs::

        with MacCounter(field) as cf, MacCounter(hyper.g) as cg:
            solve(field, z0, t, method=hyper, options=dict(num_steps=10))
        cf.macs / batch, cg.macs / batch          # per sample, whole solve

    Attributes: ``macs`` (total), ``calls`` (counted layer calls).
    """

    def __init__(self, *modules: nn.Module):
        for m in modules:
            if not isinstance(m, nn.Module):
                raise ValueError(f"MacCounter: expected nn.Modules, got {type(m).__name__}")
        layers: dict[int, nn.Module] = {}
        for m in modules:
            for sub in m.modules():
                if isinstance(sub, COUNTED_LAYERS):
                    layers[id(sub)] = sub
        self.layers = list(layers.values())
        self.macs = 0
        self.calls = 0
        self._handles: list[Any] = []

    def _hook(self, module: nn.Module, inputs: tuple[Any, ...], output: Tensor) -> None:
        self.macs += layer_macs(module, inputs, output)
        self.calls += 1

    def __enter__(self) -> MacCounter:
        self._handles = [layer.register_forward_hook(self._hook) for layer in self.layers]
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def per_sample(self, batch_size: int) -> float:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"MacCounter.per_sample: batch_size must be an int >= 1, "
                             f"got {batch_size!r}")
        return self.macs / batch_size


def _batch_size(x: Any) -> int:
    ref = x[0] if isinstance(x, (tuple, list)) else x
    if not isinstance(ref, Tensor) or ref.ndim == 0:
        raise ValueError("the first input must be a batched tensor [B, ...] (or a tuple of "
                         "them); pass batch_size=")
    return ref.shape[0]


def macs_per_call(module: nn.Module, *args: Any, batch_size: int | None = None) -> float:
    """MACs per sample of one call ``module(*args)`` (run without a graph). The batch
    size is the first tensor argument's dim 0 unless given (e.g. ``f(t, z)``: pass
    ``batch_size`` or rely on ``z``: the first *batched* argument is used)."""
    if batch_size is None:
        batched = [a for a in args if isinstance(a, (Tensor, tuple)) and
                   not (isinstance(a, Tensor) and a.ndim == 0)]
        if not batched:
            raise ValueError("macs_per_call: no batched tensor argument; pass batch_size=")
        batch_size = _batch_size(batched[0])
    with MacCounter(module) as counter, torch.no_grad():
        module(*args)
    return counter.per_sample(batch_size)


@dataclass
class SolveCost:
    """Cost of one solve per sample.

    Attributes:
        nfe: evaluations of ``f``; nfe_correction: evaluations of ``g``.
        macs_f, macs_g: MACs per sample in ``f`` and in ``g`` over the whole solve.
    """

    nfe: int
    nfe_correction: int
    macs_f: float
    macs_g: float

    @property
    def macs(self) -> float:
        return self.macs_f + self.macs_g

    def as_dict(self) -> dict[str, float]:
        return {"nfe": self.nfe, "nfe_correction": self.nfe_correction,
                "macs_f": self.macs_f, "macs_g": self.macs_g, "macs": self.macs}


def solve_cost(field: Callable, z0: State, t: Tensor | Sequence[float], *,
               method: Any = "dopri5", options: dict[str, Any] | None = None,
               rtol: float = 1e-7, atol: float = 1e-9) -> SolveCost:
    """Run ``solve`` once (no graph) and return its NFE and per-sample MACs.

    ``f``'s layers are those of ``field`` (an ``nn.Module``; a plain function counts 0
    MACs); ``g``'s those of ``method`` when it is a module (a ``HyperSolver``)."""
    counter_f = MacCounter(field) if isinstance(field, nn.Module) else MacCounter()
    counter_g = MacCounter(method) if isinstance(method, nn.Module) else MacCounter()
    with counter_f, counter_g, torch.no_grad():
        sol = solve(field, z0, t, method=method, options=options, rtol=rtol, atol=atol)
    b = _batch_size(z0)
    return SolveCost(nfe=sol.stats.nfe, nfe_correction=sol.stats.nfe_correction,
                     macs_f=counter_f.per_sample(b), macs_g=counter_g.per_sample(b))
