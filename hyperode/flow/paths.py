"""Gaussian conditional probability paths between noise ``x0`` and data ``x1``.

Convention (as torchcfm and Lipman et al. 2023 after its time flip): ``t = 0`` is the
prior (noise, ``x0 ~ N(0, I)``) and ``t = 1`` the data (``x1 ~ q``). Every path here is
an affine interpolant

    x_t = alpha_t * x1 + sigma_t * x0                                    (1)

so that, conditioned on the pair ``(x0, x1)``, the path is a straight function of time
and its velocity, the *conditional target field* of flow matching, is

    u_t(x_t | x0, x1) = d/dt x_t = alpha'_t * x1 + sigma'_t * x0.         (2)

(Lipman et al. 2023, eq. 15, write the same field in terms of ``x`` and ``x1`` only:
``u_t(x | x1) = sigma'_t / sigma_t (x - mu_t(x1)) + mu'_t(x1)``; substituting (1) for
``x`` gives (2).) Conditioning on ``x1`` alone, ``x_t ~ N(alpha_t x1, sigma_t^2 I)``.

Paths:

``LinearPath(sigma_min)``
    Lipman et al.'s optimal-transport (conditional OT) path, eq. 20: ``alpha_t = t``,
    ``sigma_t = 1 - (1 - sigma_min) t``; ``u_t = x1 - (1 - sigma_min) x0`` (eq. 21 in
    pair form). ``sigma_min = 0`` is rectified flow (Liu et al. 2023).
``CosinePath()``
    The trigonometric, variance-preserving interpolant (Albergo & Vanden-Eijnden 2023;
    torchcfm's ``VariancePreservingConditionalFlowMatcher``): ``alpha_t = sin(pi t/2)``,
    ``sigma_t = cos(pi t/2)``, so ``alpha_t^2 + sigma_t^2 = 1``.
``VPDiffusionPath(beta_min, beta_max)``
    The variance-preserving diffusion path of Song et al. in Lipman et al.'s form
    (eq. 19): ``alpha_t = a(1 - t)``, ``sigma_t = sqrt(1 - a(1 - t)^2)`` with
    ``a(s) = exp(-T(s)/2)``, ``T(s) = beta_min s + (beta_max - beta_min) s^2 / 2``.
    At ``t = 0`` it is only approximately the prior (``alpha_0 = exp(-T(1)/2)``,
    6.4e-3 for the default 0.1, 20) and ``sigma'_t`` diverges like ``(1 - t)^{-1/2}``
    as ``t -> 1``: training draws ``t`` from ``[0, t_max]`` with ``t_max = 1 - 1e-3``
    (``time_range``).

All coefficient functions take a tensor ``t`` (any shape) and return tensors of its
shape; ``sample``/``target`` broadcast a per-sample ``t`` of shape ``[B]`` over the
remaining dimensions of ``x0``/``x1`` (``[B, ...]``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._checks import real, same_shape


def _expand(coef: Tensor, like: Tensor) -> Tensor:
    """``coef`` (``[B]`` or 0-dim) shaped to broadcast over ``like`` ``[B, ...]``."""
    if coef.ndim == 0:
        return coef.to(like.dtype)
    return coef.to(like.dtype).reshape(coef.shape[0], *([1] * (like.ndim - 1)))


class ProbabilityPath:
    """An affine Gaussian path ``x_t = alpha_t x1 + sigma_t x0`` (module docstring).

    Subclasses implement ``alpha``, ``sigma`` and their time derivatives ``d_alpha``,
    ``d_sigma``. ``time_range`` is the interval training draws ``t`` from.
    """

    name = "path"
    time_range: tuple[float, float] = (0.0, 1.0)

    def alpha(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def sigma(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def d_alpha(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def d_sigma(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def _check(self, owner: str, x0: Tensor, x1: Tensor, t: Tensor) -> Tensor:
        same_shape(f"{type(self).__name__}.{owner}", "x0", x0, "x1", x1)
        if not isinstance(t, Tensor):
            t = torch.as_tensor(t, dtype=x0.dtype, device=x0.device)
        if t.ndim > 1 or (t.ndim == 1 and t.shape[0] != x0.shape[0]):
            raise ValueError(f"{type(self).__name__}.{owner}: t must be 0-dim or [B] with "
                             f"B = {x0.shape[0]} (x0's batch), got shape {tuple(t.shape)}")
        return t

    def sample(self, x0: Tensor, x1: Tensor, t: Tensor) -> Tensor:
        """``x_t`` of eq. (1): ``[B, ...]`` like ``x0``/``x1``; ``t`` 0-dim or ``[B]``."""
        t = self._check("sample", x0, x1, t)
        return _expand(self.alpha(t), x1) * x1 + _expand(self.sigma(t), x0) * x0

    def target(self, x0: Tensor, x1: Tensor, t: Tensor) -> Tensor:
        """The conditional target field ``u_t(x_t | x0, x1)`` of eq. (2), ``[B, ...]``."""
        t = self._check("target", x0, x1, t)
        return _expand(self.d_alpha(t), x1) * x1 + _expand(self.d_sigma(t), x0) * x0

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class LinearPath(ProbabilityPath):
    """Lipman et al.'s conditional OT path (eq. 20): ``alpha_t = t``,
    ``sigma_t = 1 - (1 - sigma_min) t``; target ``x1 - (1 - sigma_min) x0``.

    Args:
        sigma_min: the path's standard deviation at ``t = 1`` (``>= 0``, ``< 1``);
            ``0`` is rectified flow.
    """

    name = "linear"

    def __init__(self, sigma_min: float = 0.0):
        self.sigma_min = real("LinearPath", "sigma_min", sigma_min, low=0.0, high=1.0,
                              high_open=True)

    def alpha(self, t: Tensor) -> Tensor:
        return t

    def sigma(self, t: Tensor) -> Tensor:
        return 1.0 - (1.0 - self.sigma_min) * t

    def d_alpha(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)

    def d_sigma(self, t: Tensor) -> Tensor:
        return torch.full_like(t, -(1.0 - self.sigma_min))

    def __repr__(self) -> str:
        return f"LinearPath(sigma_min={self.sigma_min!r})"


class CosinePath(ProbabilityPath):
    """``alpha_t = sin(pi t / 2)``, ``sigma_t = cos(pi t / 2)`` (variance preserving:
    ``alpha^2 + sigma^2 = 1``); target ``pi/2 (cos(pi t/2) x1 - sin(pi t/2) x0)``."""

    name = "cosine"

    def alpha(self, t: Tensor) -> Tensor:
        return torch.sin(0.5 * math.pi * t)

    def sigma(self, t: Tensor) -> Tensor:
        return torch.cos(0.5 * math.pi * t)

    def d_alpha(self, t: Tensor) -> Tensor:
        return 0.5 * math.pi * torch.cos(0.5 * math.pi * t)

    def d_sigma(self, t: Tensor) -> Tensor:
        return -0.5 * math.pi * torch.sin(0.5 * math.pi * t)


class VPDiffusionPath(ProbabilityPath):
    """The VP diffusion path in flow-matching form (Lipman et al. 2023, eq. 19).

    ``alpha_t = a(1-t)``, ``sigma_t = sqrt(1 - a(1-t)^2)``, ``a(s) = exp(-T(s)/2)``,
    ``T(s) = beta_min s + (beta_max - beta_min) s^2/2``, ``T'(s) = beta(s) = beta_min +
    s (beta_max - beta_min)``; so ``alpha'_t = alpha_t beta(1-t) / 2`` and
    ``sigma'_t = -alpha_t alpha'_t / sigma_t``.

    Args:
        beta_min, beta_max: the noise schedule (Song et al.: 0.1 and 20), ``0 <
            beta_min <= beta_max``.
        t_max: the upper end of ``time_range`` (``sigma'_t`` diverges at ``t = 1``).
    """

    name = "vp"

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, t_max: float = 1 - 1e-3):
        owner = "VPDiffusionPath"
        self.beta_min = real(owner, "beta_min", beta_min, low=0.0, low_open=True)
        self.beta_max = real(owner, "beta_max", beta_max, low=self.beta_min)
        self.t_max = real(owner, "t_max", t_max, low=0.0, high=1.0, low_open=True,
                          high_open=True)
        self.time_range = (0.0, self.t_max)

    def _big_t(self, s: Tensor) -> Tensor:
        return self.beta_min * s + 0.5 * (self.beta_max - self.beta_min) * s * s

    def _beta(self, s: Tensor) -> Tensor:
        return self.beta_min + s * (self.beta_max - self.beta_min)

    def alpha(self, t: Tensor) -> Tensor:
        return torch.exp(-0.5 * self._big_t(1.0 - t))

    def sigma(self, t: Tensor) -> Tensor:
        a = self.alpha(t)
        return torch.sqrt(1.0 - a * a)

    def d_alpha(self, t: Tensor) -> Tensor:
        return 0.5 * self.alpha(t) * self._beta(1.0 - t)

    def d_sigma(self, t: Tensor) -> Tensor:
        return -self.alpha(t) * self.d_alpha(t) / self.sigma(t)

    def __repr__(self) -> str:
        return (f"VPDiffusionPath(beta_min={self.beta_min!r}, beta_max={self.beta_max!r}, "
                f"t_max={self.t_max!r})")


PATHS = {"linear": LinearPath, "cosine": CosinePath, "vp": VPDiffusionPath}


def get_path(path: str | ProbabilityPath, **kwargs: float) -> ProbabilityPath:
    """A path object from its name (``"linear"``, ``"cosine"``, ``"vp"``; keyword
    arguments go to its constructor) or the object itself."""
    if isinstance(path, ProbabilityPath):
        if kwargs:
            raise ValueError(f"get_path: keyword arguments {sorted(kwargs)} apply to a path "
                             f"name, not to the object {path!r}")
        return path
    if not isinstance(path, str) or path not in PATHS:
        raise ValueError(f"path must be one of {sorted(PATHS)} or a ProbabilityPath, "
                         f"got {path!r}")
    return PATHS[path](**kwargs)
