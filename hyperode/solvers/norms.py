"""Norms for the error ratio of adaptive step control.

A norm takes the scaled error ``err / (atol + rtol * max(|y0|, |y1|))`` in the
state's structure (a tensor, or a tuple of tensors for a tuple state) and returns
a 0-dim tensor; a step is accepted when it is <= 1. Any such callable can be
passed as ``options=dict(norm=...)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

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


def member_norm(members: Sequence[int], inner: Callable[[Tensor], Tensor] = rms_norm) -> Callable:
    """A seminorm for a tuple state that judges only ``members`` (max of ``inner`` over
    them) and ignores the rest.

    Safe for channels that are pure integrals: members that the vector field never
    reads, such as a CNF's log-density ``(z, logp)``: ``logp`` is accumulated but
    never fed back, so its local error does not propagate into the other members
    and leaving it out of step control loses no accuracy there (its own error is
    then only as good as the steps chosen for ``z``). Not safe for members that
    feed back into the dynamics: their error would go unchecked.
    """
    chosen = tuple(int(i) for i in members)
    if not chosen:
        raise ValueError("member_norm: members must name at least one tuple member")

    def norm(x: Tensor | tuple[Tensor, ...]) -> Tensor:
        if not isinstance(x, tuple):
            raise ValueError("member_norm applies to tuple states only")
        if max(chosen) >= len(x) or min(chosen) < -len(x):
            raise ValueError(f"member_norm: members {chosen} out of range for a state "
                             f"of {len(x)} members")
        return torch.stack([inner(x[i]) for i in chosen]).max()

    norm.members = chosen  # type: ignore[attr-defined]
    return norm
