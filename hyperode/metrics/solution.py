"""Accuracy of a solve against a reference: terminal-state MAPE, per-mesh-point
absolute error, classification accuracy and its loss relative to the reference.

Every function takes tensors (or tuples of tensors for tuple states) batched along
dim 0 of the state, so any solver's output can be scored; ``reference_solution``
computes the usual reference (dopri5 at a configurable tolerance).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import cast

import torch
from torch import Tensor

from ..odeint import solve
from ..solvers.problem import State

MAPE_REDUCTIONS = ("mean", "channel_sum")


def reference_solution(field: Callable, z0: State, t: Tensor | Sequence[float], *,
                       rtol: float = 1e-4, atol: float = 1e-4,
                       method: str = "dopri5") -> State:
    """``z`` at every ``t`` by an adaptive solve without a graph (the papers' "exact"
    solution: dopri5 at 1e-4 for classifiers, tighter for CNFs):
    ``[len(t), *z0.shape]``."""
    with torch.no_grad():
        return solve(field, z0, t, rtol=rtol, atol=atol, method=method).ys


def _members(x: State) -> tuple[Tensor, ...]:
    return x if isinstance(x, tuple) else (x,)


def _check_pair(owner: str, pred: State, ref: State) -> tuple[tuple[Tensor, ...],
                                                              tuple[Tensor, ...]]:
    p, r = _members(pred), _members(ref)
    if len(p) != len(r):
        raise ValueError(f"{owner}: prediction has {len(p)} members, reference {len(r)}")
    for a, b in zip(p, r):
        if a.shape != b.shape:
            raise ValueError(f"{owner}: prediction has shape {tuple(a.shape)} but the reference "
                             f"has {tuple(b.shape)}")
    return p, r


def mape(pred: State, ref: State, *, reduction: str = "mean") -> Tensor:
    """Mean absolute percentage error of a (terminal) state, as a fraction (not x100).

    ``|(pred - ref) / ref|`` elementwise, then:

    - ``"mean"`` (default): the mean over every element and sample (the paper's alpha-
      family notebook). Independent of the number of channels, so comparable across
      models.
    - ``"channel_sum"``: summed over dim 1 (channels), then the mean over the rest (the
      paper's MNIST/CIFAR notebooks; ``C`` times larger for ``C`` equal channels).

    A tuple state is scored over all members' elements together (``"mean"``) or by
    summing the members' ``"channel_sum"`` values. There is no division-by-zero guard:
    a zero in ``ref`` where ``pred`` differs gives ``inf`` (never a silently finite
    number). Returns a 0-dim tensor.
    """
    if reduction not in MAPE_REDUCTIONS:
        raise ValueError(f"mape: reduction must be one of {MAPE_REDUCTIONS}, got {reduction!r}")
    p, r = _check_pair("mape", pred, ref)
    ratios = [((a - b) / b).abs() for a, b in zip(p, r)]
    if reduction == "mean":
        return torch.cat([x.reshape(-1) for x in ratios]).mean()
    for x in ratios:
        if x.ndim < 2:
            raise ValueError(f"mape: reduction='channel_sum' needs states [B, C, ...], got "
                             f"shape {tuple(x.shape)}")
    return cast(Tensor, sum(x.sum(dim=1).mean() for x in ratios))


def mesh_abs_error(pred: State, ref: State) -> Tensor:
    """Mean absolute error at each mesh point: ``pred``, ``ref`` are trajectories
    ``[T, B, ...]`` (tuples for tuple states); returns ``[T]``, the mean of
    ``|pred - ref|`` over samples and state elements (all members) at each point."""
    p, r = _check_pair("mesh_abs_error", pred, ref)
    t = p[0].shape[0] if p[0].ndim else 0
    if any(a.ndim < 1 or a.shape[0] != t for a in p):
        raise ValueError("mesh_abs_error: trajectories must share the leading (time) dim")
    diffs = [(a - b).abs().reshape(t, -1) for a, b in zip(p, r)]
    return torch.cat(diffs, dim=1).mean(dim=1)


def accuracy(logits: Tensor, labels: Tensor) -> float:
    """Fraction of ``argmax(logits, dim=1) == labels``, as an exact count over the batch
    size in double precision (a float32 mean puts one image in 1000 at 0.000999987,
    which would pass for "less than 0.1%")."""
    if logits.ndim != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f"accuracy: logits must be [B, classes] and labels [B]; got "
                         f"{tuple(logits.shape)} and {tuple(labels.shape)}")
    return int((logits.argmax(dim=1) == labels).sum()) / labels.numel()


def accuracy_loss(acc: float, reference_acc: float) -> float:
    """Test-accuracy loss relative to the reference solver (dopri5):
    ``reference_acc - acc`` as a fraction (0.001 = the paper's 0.1%); negative when
    the method is more accurate than the reference."""
    return float(reference_acc) - float(acc)
