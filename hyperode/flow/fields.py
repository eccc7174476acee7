"""Time-conditioned vector fields ``v(t, x)`` for flow matching, and an analytic one.

Every field is called as ``field(t, x)`` with ``x`` ``[B, ...]`` and ``t`` either a
0-dim tensor (as ``hyperode.odeint`` passes it) or ``[B]`` (one time per sample, as the
flow-matching loss draws it); it returns a velocity of ``x``'s shape. So a trained
field goes straight into the solvers: ``odeint(field, x0, torch.tensor([0., 1.]))``.

``TimeMLP``
    For vector states ``[B, D]``: an MLP over ``[x, phi(t)]`` with ``phi(t)`` a small
    Fourier embedding ``(t, sin(2 pi k t), cos(2 pi k t))``, ``k = 1..time_features``.
``ConvField``
    For small images ``[B, C, H, W]`` (the 8x8 digits): 3x3 convolutions with the time
    embedding added as a per-channel bias after every hidden convolution (a learned
    linear map of ``phi(t)``), GroupNorm and SiLU; the output convolution is
    zero-initialised, so an untrained field is 0.
``GaussianLinearPathField``
    The exact *marginal* field of ``LinearPath(sigma_min)`` with independent coupling
    from ``N(0, I)`` to ``N(m, diag(s^2))``; its flow has a closed form (``endpoint``),
    which tests the samplers and the training loop.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor, nn

from ..checks import check_positive_int
from ._checks import real

ACTIVATIONS = {"silu": nn.SiLU, "tanh": nn.Tanh, "relu": nn.ReLU, "softplus": nn.Softplus,
               "elu": nn.ELU}


def _activation(owner: str, name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"{owner}: activation must be one of {sorted(ACTIVATIONS)}, got "
                         f"{name!r}")
    return ACTIVATIONS[name]()


def per_sample_time(owner: str, t: Tensor | float, x: Tensor) -> Tensor:
    """``t`` as ``[B]`` in ``x``'s dtype and device (a number or 0-dim ``t`` is
    broadcast; a ``[B]`` tensor must match ``x``'s batch)."""
    if not isinstance(t, Tensor):
        t = torch.tensor(float(t))
    t = t.to(dtype=x.dtype, device=x.device)
    if t.ndim == 0:
        return t.expand(x.shape[0])
    if t.shape != (x.shape[0],):
        raise ValueError(f"{owner}: t must be 0-dim or [B] with B = {x.shape[0]}, got shape "
                         f"{tuple(t.shape)}")
    return t


def fourier_time(t: Tensor, features: int) -> Tensor:
    """``[B, 1 + 2 * features]``: ``(t, sin(2 pi k t), cos(2 pi k t))``, ``k = 1..features``."""
    k = torch.arange(1, features + 1, dtype=t.dtype, device=t.device)
    angle = 2.0 * math.pi * t[:, None] * k
    return torch.cat([t[:, None], torch.sin(angle), torch.cos(angle)], dim=1)


class TimeMLP(nn.Module):
    """``v(t, x)`` for ``x`` ``[B, dim]``: MLP over ``[x, phi(t)]``.

    Args:
        dim: state features ``D``.
        hidden: hidden widths (default ``(128, 128, 128)``).
        activation: ``"silu"`` (default), ``"tanh"``, ``"relu"``, ``"softplus"``, ``"elu"``.
        time_features: Fourier frequencies of ``phi(t)`` (``1 + 2 * time_features``
            inputs for time).
    """

    def __init__(self, dim: int, hidden: Sequence[int] = (128, 128, 128),
                 activation: str = "silu", time_features: int = 4):
        super().__init__()
        owner = "TimeMLP"
        self.dim = check_positive_int(owner, "dim", dim)
        self.time_features = check_positive_int(owner, "time_features", time_features, minimum=0)
        widths = [self.dim + 1 + 2 * self.time_features,
                  *[check_positive_int(owner, "every hidden width", w) for w in hidden], self.dim]
        layers: list[nn.Module] = []
        for i in range(len(widths) - 1):
            if i:
                layers.append(_activation(owner, activation))
            layers.append(nn.Linear(widths[i], widths[i + 1]))
        self.net = nn.Sequential(*layers)

    def forward(self, t: Tensor | float, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or x.ndim != 2 or x.shape[1] != self.dim:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"TimeMLP expects x of shape [B, {self.dim}], got {got}")
        tb = per_sample_time("TimeMLP", t, x)
        return self.net(torch.cat([x, fourier_time(tb, self.time_features)], dim=1))


class ConvField(nn.Module):
    """``v(t, x)`` for images ``[B, C, H, W]``: time-biased 3x3 convolutions.

    ``Conv(C -> w) -> [+ W_k phi(t)] -> GroupNorm -> SiLU`` repeated ``depth`` times
    (width ``w = width``), then ``Conv(w -> C)`` (zero-initialised). Padding keeps
    ``H x W``; the receptive field is ``2 depth + 3`` pixels, enough for 8x8 images with
    the default ``depth = 4``.

    Args:
        channels: image channels ``C``.
        width: hidden channels (default 64).
        depth: hidden convolutions (default 4).
        time_features: Fourier frequencies of ``phi(t)``.
        groups: GroupNorm groups (must divide ``width``).
    """

    def __init__(self, channels: int = 1, width: int = 64, depth: int = 4,
                 time_features: int = 4, groups: int = 8):
        super().__init__()
        owner = "ConvField"
        self.channels = check_positive_int(owner, "channels", channels)
        width = check_positive_int(owner, "width", width)
        depth = check_positive_int(owner, "depth", depth)
        groups = check_positive_int(owner, "groups", groups)
        if width % groups:
            raise ValueError(f"ConvField: groups={groups} must divide width={width}")
        self.time_features = check_positive_int(owner, "time_features", time_features, minimum=0)
        t_in = 1 + 2 * self.time_features
        self.convs = nn.ModuleList(
            nn.Conv2d(self.channels if i == 0 else width, width, 3, padding=1)
            for i in range(depth))
        self.time_maps = nn.ModuleList(nn.Linear(t_in, width) for _ in range(depth))
        self.norms = nn.ModuleList(nn.GroupNorm(groups, width) for _ in range(depth))
        self.act = nn.SiLU()
        self.out = nn.Conv2d(width, self.channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(cast(Tensor, self.out.bias))  # Conv2d has a bias by default

    def forward(self, t: Tensor | float, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or x.ndim != 4 or x.shape[1] != self.channels:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"ConvField expects x of shape [B, {self.channels}, H, W], "
                             f"got {got}")
        phi = fourier_time(per_sample_time("ConvField", t, x), self.time_features)
        h = x
        for conv, tmap, norm in zip(self.convs, self.time_maps, self.norms):
            h = self.act(norm(conv(h) + tmap(phi)[:, :, None, None]))
        return self.out(h)


class GaussianLinearPathField(nn.Module):
    """The marginal field of ``LinearPath(sigma_min)``, independent coupling, from
    ``x0 ~ N(0, I)`` to ``x1 ~ N(mean, diag(std^2))`` (per feature, exact).

    With ``x_t = t x1 + sigma_t x0``, ``sigma_t = 1 - (1 - sigma_min) t``, the pair
    ``(x_t, u_t)`` is jointly Gaussian per feature, so ``E[u_t | x_t = x]`` is affine:

        u_t(x) = m + c_t / V_t (x - t m),   V_t = sigma_t^2 + t^2 s^2,
        c_t = Cov(u_t, x_t) = t s^2 - (1 - sigma_min) sigma_t = V_t' / 2.

    Its flow keeps ``(x - t m) / sqrt(V_t)`` constant, so from ``x(0)``
    (``V_0 = 1``) the exact end point is ``x(1) = m + sqrt(s^2 + sigma_min^2) x(0)``
    (``endpoint``), and ``x(t) = t m + sqrt(V_t) x(0)`` (``solution``).

    Args:
        mean, std: tensors of the state's shape without the batch (``[D]`` or
            ``[C, H, W]``); ``std > 0``.
        sigma_min: as ``LinearPath``.
    """

    mean: Tensor  # buffers
    std: Tensor

    def __init__(self, mean: Tensor, std: Tensor, sigma_min: float = 0.0):
        super().__init__()
        owner = "GaussianLinearPathField"
        mean = torch.as_tensor(mean)
        std = torch.as_tensor(std, dtype=mean.dtype)
        if mean.shape != std.shape:
            raise ValueError(f"{owner}: mean {tuple(mean.shape)} and std {tuple(std.shape)} "
                             f"must have the same shape")
        if not bool((std > 0).all()):
            raise ValueError(f"{owner}: every std must be > 0")
        self.sigma_min = real(owner, "sigma_min", sigma_min, low=0.0, high=1.0,
                              high_open=True)
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def _variance(self, t: Tensor) -> tuple[Tensor, Tensor]:
        sig = 1.0 - (1.0 - self.sigma_min) * t
        s2 = self.std.to(t.dtype) ** 2
        return sig * sig + t * t * s2, t * s2 - (1.0 - self.sigma_min) * sig

    def forward(self, t: Tensor | float, x: Tensor) -> Tensor:
        tb = per_sample_time("GaussianLinearPathField", t, x)
        tb = tb.reshape(-1, *([1] * (x.ndim - 1)))
        v, c = self._variance(tb)
        m = self.mean.to(x.dtype)
        return m + c / v * (x - tb * m)

    def solution(self, x0: Tensor, t: float) -> Tensor:
        """``x(t)`` of the flow from ``x0`` at ``t = 0`` (closed form)."""
        tt = torch.tensor(float(t), dtype=x0.dtype)
        v, _ = self._variance(tt)
        return tt * self.mean.to(x0.dtype) + torch.sqrt(v) * x0

    def endpoint(self, x0: Tensor) -> Tensor:
        """``x(1) = mean + sqrt(std^2 + sigma_min^2) x0``."""
        return self.solution(x0, 1.0)
