"""Augmentation: give the ODE state more dimensions than the data (Dupont et al. 2019).

A Neural ODE's flow is a homeomorphism of its state space, so some maps (nested
spheres, XOR) cannot be learned in the data's own dimension. Augmenting lifts
``x`` into a larger space before integrating; it is an *input map* ``h_x`` in the
hypersolver paper's eq. (1), ``z(0) = h_x(x)``:

- ``ZeroAugment(extra)``: ``z(0) = [x, 0]`` (ANODE);
- ``LearnedAugment(module)``: ``z(0) = [x, module(x)]`` (torchdyn's ``Augmenter``
  with a conv; the hypersolver MNIST model augments 1 -> 32 channels with a
  ``Conv2d(1, 31)`` placed first);
- or a plain learned lifting, e.g. ``nn.Conv2d(3, 20, 3, padding=1)``, used directly
  as the input map (the hypersolver CIFAR model).

Both modules work on vector states ``[B, d]`` (``dim=1``) and image states
``[B, C, H, W]`` (``dim=1``, channels).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ZeroAugment(nn.Module):
    """``[B, d, ...] -> [B, d + extra, ...]``: concatenate ``extra`` zeros along ``dim``."""

    def __init__(self, extra: int, dim: int = 1):
        super().__init__()
        if isinstance(extra, bool) or not isinstance(extra, int) or extra < 1:
            raise ValueError(f"ZeroAugment: extra must be an int >= 1, got {extra!r}")
        if isinstance(dim, bool) or not isinstance(dim, int):
            raise ValueError(f"ZeroAugment: dim must be an int, got {dim!r}")
        self.extra = extra
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        shape = list(x.shape)
        shape[self.dim] = self.extra
        return torch.cat([x, x.new_zeros(shape)], dim=self.dim)

    def extra_repr(self) -> str:
        return f"extra={self.extra}, dim={self.dim}"


class LearnedAugment(nn.Module):
    """``x -> cat([x, module(x)], dim)``: keep the input and append learned features.

    Shapes: ``[B, C, H, W] -> [B, C + C', H, W]`` where ``module`` maps ``C -> C'``
    channels at the same resolution (e.g. ``Conv2d(1, 31, 3, padding=1)``), or
    ``[B, d] -> [B, d + d']`` with ``module = Linear(d, d')``.
    """

    def __init__(self, module: nn.Module, dim: int = 1):
        super().__init__()
        if not isinstance(module, nn.Module):
            raise ValueError(f"LearnedAugment: module must be a torch.nn.Module, "
                             f"got {type(module).__name__}")
        if isinstance(dim, bool) or not isinstance(dim, int):
            raise ValueError(f"LearnedAugment: dim must be an int, got {dim!r}")
        self.module = module
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([x, self.module(x)], dim=self.dim)
