"""Argument checks shared by ``hyperode.flow`` (one message style: which argument,
which value, what was expected)."""

from __future__ import annotations

import math
from numbers import Real

import torch
from torch import Tensor


def real(owner: str, name: str, value: object, *, low: float = -math.inf,
         high: float = math.inf, low_open: bool = False, high_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise ValueError(f"{owner}: {name} must be a finite real number, got {value!r}")
    v = float(value)
    if (v <= low if low_open else v < low) or (v >= high if high_open else v > high):
        lo = "(" if low_open else "["
        hi = ")" if high_open or math.isinf(high) else "]"
        raise ValueError(f"{owner}: {name} must be in {lo}{low:g}, {high:g}{hi}, got {value!r}")
    return v


def batch(owner: str, name: str, x: object, *, min_dim: int = 2) -> Tensor:
    """A floating tensor ``[B, ...]`` with ``B >= 1`` and at least ``min_dim`` dims."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{owner}: {name} must be a torch.Tensor [B, ...], got "
                         f"{type(x).__name__}")
    if x.ndim < min_dim or x.shape[0] == 0:
        raise ValueError(f"{owner}: {name} must have shape [B, ...] with B >= 1 and at least "
                         f"{min_dim} dimensions, got {tuple(x.shape)}")
    if not x.is_floating_point() or x.dtype in (torch.float16, torch.bfloat16):
        raise ValueError(f"{owner}: {name} must be float32 or float64, got {x.dtype}")
    return x


def same_shape(owner: str, a_name: str, a: Tensor, b_name: str, b: Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{owner}: {a_name} has shape {tuple(a.shape)} but {b_name} has "
                         f"{tuple(b.shape)}; they must match")
    if a.dtype != b.dtype or a.device != b.device:
        raise ValueError(f"{owner}: {a_name} is {a.dtype} on {a.device} but {b_name} is "
                         f"{b.dtype} on {b.device}; convert one of them")
