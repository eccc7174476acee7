"""Norms for the error ratio of adaptive step control.

A norm takes the scaled error ``err / (atol + rtol * max(|y0|, |y1|))`` in the
state's structure (a tensor, or a tuple of tensors for a tuple state) and returns
a 0-dim tensor; a step is accepted when it is <= 1. Any such callable can be
passed as ``options=dict(norm=...)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def rms_norm(x: Tensor) -> Tensor:
    """Root mean square over every element of ``x``."""
    return torch.linalg.vector_norm(x) / math.sqrt(max(x.numel(), 1))


def max_norm(x: Tensor | tuple[Tensor, ...]) -> Tensor:
    """Largest absolute element (over every member of a tuple)."""
    if isinstance(x, tuple):
        return torch.stack([m.abs().max() for m in x]).max()
    return x.abs().max()


def mixed_norm(x: Tensor | tuple[Tensor, ...]) -> Tensor:
    """torchdiffeq's default: RMS of a tensor; for a tuple, the max of the members' RMS."""
    if isinstance(x, tuple):
        return torch.stack([rms_norm(m) for m in x]).max()
    return rms_norm(x)
