"""The training objective as a module: one forward gives the loss and the counts to log.

Classification: cross-entropy of ``model(x)`` against ``y``; counts are
``[sum of per-sample losses, correct, samples]``. Density estimation: the negative
log-likelihood ``-model.log_prob(x)`` in nats; counts are ``[sum of NLL, 0, samples]``.
Bits per dimension are ``nll / (D ln 2)`` with ``D`` the number of features (the data
are continuous, so no dequantisation term).

Wrapping the objective (not the bare model) in ``DistributedDataParallel`` makes DDP's
gradient synchronisation cover ``log_prob``, which is not ``forward``.
"""

from __future__ import annotations

import math
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

KINDS = ("classification", "density")


class Objective(nn.Module):
    """``forward(x, y) -> (mean loss, counts [3])``; see the module docstring."""

    def __init__(self, model: nn.Module, kind: str) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if kind == "density" and not callable(getattr(model, "log_prob", None)):
            raise ValueError(f"kind='density' needs a model with log_prob(x); "
                             f"{type(model).__name__} has none")
        self.model = model
        self.kind = kind

    def forward(self, x: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor]:
        if self.kind == "classification":
            if y is None:
                raise ValueError("classification needs labels y, got None")
            logits = self.model(x)
            losses = F.cross_entropy(logits, y, reduction="none")
            correct = (logits.detach().argmax(dim=1) == y).sum()
        else:
            losses = -cast(Any, self.model).log_prob(x)  # checked callable in __init__
            correct = torch.zeros((), device=losses.device)
        counts = torch.stack([losses.detach().sum().double(), correct.double(),
                              torch.tensor(float(len(losses)), dtype=torch.float64,
                                           device=losses.device)])
        return losses.mean(), counts


def summarise(kind: str, counts: Tensor, features: int) -> dict[str, float]:
    """Metrics from (possibly all-reduced) ``counts = [loss_sum, correct, samples]``."""
    loss_sum, correct, n = (float(v) for v in counts[:3])
    n = max(n, 1.0)
    if kind == "classification":
        return {"loss": loss_sum / n, "accuracy": correct / n}
    nll = loss_sum / n
    return {"loss": nll, "nll": nll, "bits_per_dim": nll / (features * math.log(2))}
