"""A library-level flow-matching training loop (no run folders, no CLI).

    field = TimeMLP(2)
    history = train_flow(field, data, FlowTrainConfig(iterations=3000))
    x = odeint(field, torch.randn(1000, 2), torch.tensor([0., 1.]))[-1]

Each iteration draws ``batch_size`` rows of ``data`` (with replacement), pairs them
with fresh ``N(0, I)`` noise through the coupling, draws ``t ~ U(time_range)`` and
takes one AdamW step on the loss of eq. (9) (``hyperode.flow.losses``). The learning
rate follows a cosine schedule to ``lr * final_lr_fraction``; an exponential moving
average of the weights (``ema`` > 0) is copied into the field at the end when asked,
as flow-matching practice does (torchcfm's examples).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn

from ..checks import check_positive_int
from ._checks import batch, real
from .couplings import COUPLINGS
from .losses import FlowMatcher
from .paths import PATHS, get_path


@dataclass(frozen=True)
class FlowTrainConfig:
    """Settings of ``train_flow``.

    Args:
        iterations: optimiser steps.
        batch_size: samples per step.
        lr, weight_decay: AdamW.
        final_lr_fraction: the cosine schedule ends at ``lr * final_lr_fraction``.
        grad_clip: gradient-norm clip (``None``: off).
        path: ``"linear"``, ``"cosine"`` or ``"vp"``.
        sigma_min: ``LinearPath``'s ``sigma_min`` (ignored by the other paths).
        coupling: ``"independent"`` or ``"ot"`` (minibatch OT).
        ema: weight-EMA decay in ``[0, 1)``; 0 is off. With ``ema > 0`` the averaged
            weights replace the field's at the end.
        seed: seeds the batch indices, noise and times (``torch.Generator``).
        log_every: iterations between entries of ``FlowHistory.loss``.
    """

    iterations: int = 3000
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    final_lr_fraction: float = 0.1
    grad_clip: float | None = 1.0
    path: str = "linear"
    sigma_min: float = 0.0
    coupling: str = "independent"
    ema: float = 0.0
    seed: int = 0
    log_every: int = 50

    def __post_init__(self) -> None:
        owner = "FlowTrainConfig"
        check_positive_int(owner, "iterations", self.iterations)
        check_positive_int(owner, "batch_size", self.batch_size)
        real(owner, "lr", self.lr, low=0.0, low_open=True)
        real(owner, "weight_decay", self.weight_decay, low=0.0)
        real(owner, "final_lr_fraction", self.final_lr_fraction, low=0.0, high=1.0)
        if self.grad_clip is not None:
            real(owner, "grad_clip", self.grad_clip, low=0.0, low_open=True)
        if self.path not in PATHS:
            raise ValueError(f"{owner}: path must be one of {sorted(PATHS)}, got {self.path!r}")
        real(owner, "sigma_min", self.sigma_min, low=0.0, high=1.0, high_open=True)
        if self.coupling not in COUPLINGS:
            raise ValueError(f"{owner}: coupling must be one of {sorted(COUPLINGS)}, got "
                             f"{self.coupling!r}")
        real(owner, "ema", self.ema, low=0.0, high=1.0, high_open=True)
        check_positive_int(owner, "seed", self.seed, minimum=0)
        check_positive_int(owner, "log_every", self.log_every)

    def matcher(self) -> FlowMatcher:
        """The ``FlowMatcher`` these settings describe."""
        kwargs = {"sigma_min": self.sigma_min} if self.path == "linear" else {}
        return FlowMatcher(get_path(self.path, **kwargs), self.coupling)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class FlowHistory:
    """What ``train_flow`` did: ``(iteration, mean loss since the last entry)`` pairs,
    wall-clock seconds and the settings."""

    config: FlowTrainConfig
    loss: list[tuple[int, float]] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {"config": self.config.as_dict(), "loss": [list(p) for p in self.loss],
                "seconds": self.seconds}


def train_flow(vector_field: nn.Module, data: Tensor, config: FlowTrainConfig | None = None,
               *, callback: Callable[[int, float, nn.Module], None] | None = None,
               **overrides) -> FlowHistory:
    """Train ``vector_field`` (``v(t, x)``, ``t`` ``[B]``) by conditional flow matching
    so that its flow carries ``N(0, I)`` at ``t = 0`` to ``data``'s distribution at
    ``t = 1``.

    Args:
        vector_field: the field (its parameters are updated in place).
        data: the training samples, ``[N, ...]`` float (on the field's device/dtype).
        config: a ``FlowTrainConfig``; keyword ``overrides`` replace its fields.
        callback: ``callback(iteration, loss, field)`` after every step.

    Returns a ``FlowHistory``; raises ``FloatingPointError`` if the loss becomes
    non-finite (naming the iteration).
    """
    if config is None:
        config = FlowTrainConfig(**overrides)
    elif overrides:
        config = FlowTrainConfig(**{**config.as_dict(), **overrides})
    if not isinstance(config, FlowTrainConfig):
        raise ValueError(f"train_flow: config must be a FlowTrainConfig, got {config!r}")
    if not isinstance(vector_field, nn.Module):
        raise ValueError(f"train_flow: vector_field must be an nn.Module called as "
                         f"field(t, x), got {type(vector_field).__name__}")
    data = batch("train_flow", "data", data)
    params = [p for p in vector_field.parameters() if p.requires_grad]
    if not params:
        raise ValueError("train_flow: the vector field has no trainable parameters")
    if params[0].dtype != data.dtype or params[0].device != data.device:
        raise ValueError(f"train_flow: data is {data.dtype} on {data.device} but the field's "
                         f"parameters are {params[0].dtype} on {params[0].device}")
    matcher = config.matcher()
    gen = torch.Generator(device=data.device).manual_seed(config.seed)
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(
        opt, T_max=config.iterations, eta_min=config.lr * config.final_lr_fraction)
    averaged = copy.deepcopy(vector_field).requires_grad_(False) if config.ema else None
    history = FlowHistory(config)
    start = time.perf_counter()
    running, count = 0.0, 0
    vector_field.train()
    for i in range(config.iterations):
        idx = torch.randint(0, data.shape[0], (config.batch_size,), generator=gen,
                            device=data.device)
        loss = matcher.loss(vector_field, data[idx], generator=gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        opt.step()
        sched.step()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"train_flow: the loss became {value} at iteration {i}; "
                                     f"lower lr or check the data's scale")
        if averaged is not None:
            with torch.no_grad():
                for pa, p in zip(averaged.parameters(), vector_field.parameters()):
                    pa.lerp_(p, 1.0 - config.ema)
        running += value
        count += 1
        if (i + 1) % config.log_every == 0 or i + 1 == config.iterations:
            history.loss.append((i + 1, running / count))
            running, count = 0.0, 0
        if callback is not None:
            callback(i, value, vector_field)
    if averaged is not None:
        with torch.no_grad():
            for p, pa in zip(vector_field.parameters(), averaged.parameters()):
                p.copy_(pa)
    vector_field.eval()
    history.seconds = time.perf_counter() - start
    return history
