"""Depth-variant (Galerkin) layers: parameters that are functions of depth ``s``.

Massaroli et al., "Dissecting Neural ODEs" (2020), Sec. 3: a depth-variant
Neural ODE ``z' = f(s, z, theta(s))`` with ``theta(s)`` in a finite basis,

    theta(s) = sum_{n < n_terms} coeff_n * phi_n(s),

the coefficients ``coeff_n`` being the learned parameters. Bases:

- ``"fourier"``: ``phi = (1, cos(w s), sin(w s), cos(2 w s), sin(2 w s), ...)``,
  ``w = 2 pi / period``, truncated to ``n_terms`` functions;
- ``"polynomial"``: ``phi_n(s) = s**n``.

``phi_0 = 1`` in both, so ``coeff_0`` is the depth-invariant part. It is
initialised like the corresponding ``nn.Linear`` / ``nn.Conv2d`` and the other
coefficients at zero: at initialisation the layer is an ordinary layer and the
depth variation is learned. (All-zero coefficients, as in torchdyn, would make a
stack of Galerkin layers output 0 with no gradient reaching its first layers.)

The layers are called as ``layer(t, x)``; ``DepthVariantSequential`` chains them
with ordinary modules into a vector field ``f(t, z)``.
"""

from __future__ import annotations

import math
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

BASES = ("fourier", "polynomial")


def basis_functions(basis: str, n_terms: int, s: Tensor | float, period: float = 1.0,
                    *, dtype: torch.dtype | None = None,
                    device: torch.device | None = None) -> Tensor:
    """``[phi_0(s), ..., phi_{n_terms-1}(s)]``, shape ``[n_terms]``."""
    s = torch.as_tensor(s, dtype=dtype, device=device).reshape(())
    if basis == "polynomial":
        return s ** torch.arange(n_terms, dtype=s.dtype, device=s.device)
    if basis == "fourier":
        n = torch.arange(n_terms, device=s.device)
        k = ((n + 1) // 2).to(s.dtype)                # 0, 1, 1, 2, 2, ...
        angle = (2 * math.pi / period) * k * s
        return torch.where(n % 2 == 1, torch.cos(angle), torch.sin(angle)).where(
            n > 0, torch.ones_like(angle))
    raise ValueError(f"basis must be one of {BASES}, got {basis!r}")


class DepthVariant(nn.Module):
    """Base of layers whose parameters depend on depth: called as ``layer(t, x)``."""

    # Set by each subclass: [n_terms, *weight shape] and [n_terms, out] (or None).
    weight_coeffs: nn.Parameter
    bias_coeffs: nn.Parameter | None

    def __init__(self, owner: str, basis: str, n_terms: int, period: float):
        super().__init__()
        if basis not in BASES:
            raise ValueError(f"{owner}: basis must be one of {BASES}, got {basis!r}")
        if isinstance(n_terms, bool) or not isinstance(n_terms, int) or n_terms < 1:
            raise ValueError(f"{owner}: n_terms must be an int >= 1, got {n_terms!r}")
        if (isinstance(period, bool) or not isinstance(period, (int, float))
                or not math.isfinite(period) or period <= 0):
            raise ValueError(f"{owner}: period must be a finite number > 0, got {period!r}")
        self.basis = basis
        self.n_terms = n_terms
        self.period = float(period)

    def phi(self, s: Tensor | float, like: Tensor) -> Tensor:
        """Basis values at depth ``s`` in ``like``'s dtype and device, shape ``[n_terms]``."""
        return basis_functions(self.basis, self.n_terms, s, self.period,
                               dtype=like.dtype, device=like.device)

    @staticmethod
    def _expand(phi: Tensor, coeffs: Tensor | None) -> Tensor | None:
        """``sum_n phi_n * coeffs[n]``."""
        return None if coeffs is None else torch.tensordot(phi, coeffs, dims=1)

    def _weight_at(self, phi: Tensor) -> Tensor:
        """``sum_n phi_n * weight_coeffs[n]``."""
        return torch.tensordot(phi, self.weight_coeffs, dims=1)

    def weight(self, s: Tensor | float) -> Tensor:
        """The weight (kernel) at depth ``s``: ``weight_coeffs`` without its leading
        ``n_terms`` axis."""
        return self._weight_at(self.phi(s, self.weight_coeffs))

    def bias(self, s: Tensor | float) -> Tensor | None:
        """The bias at depth ``s``, ``[out]`` (``None`` without bias)."""
        return self._expand(self.phi(s, self.weight_coeffs), self.bias_coeffs)

    def _init_coeffs(self, reference: nn.Module, weight: Tensor, bias: Tensor | None) -> None:
        """coeff_0 = the reference layer's default initialisation, the rest zero."""
        with torch.no_grad():
            weight.zero_()
            weight[0].copy_(cast(Tensor, reference.weight))
            if bias is not None:
                bias.zero_()
                bias[0].copy_(cast(Tensor, reference.bias))


class GalerkinLinear(DepthVariant):
    """``y = x W(s)^T + b(s)``, ``W(s) = sum_n W_n phi_n(s)``, ``b(s) = sum_n b_n phi_n(s)``.

    Shapes: ``x`` ``[B, in_features]`` -> ``[B, out_features]``; coefficients
    ``weight_coeffs`` ``[n_terms, out, in]``, ``bias_coeffs`` ``[n_terms, out]``.
    """

    def __init__(self, in_features: int, out_features: int, basis: str = "fourier",
                 n_terms: int = 5, bias: bool = True, period: float = 1.0):
        super().__init__("GalerkinLinear", basis, n_terms, period)
        reference = nn.Linear(in_features, out_features, bias=bias)  # validates the sizes
        self.in_features, self.out_features = in_features, out_features
        self.weight_coeffs = nn.Parameter(torch.empty(n_terms, out_features, in_features))
        self.bias_coeffs = nn.Parameter(torch.empty(n_terms, out_features)) if bias else None
        self._init_coeffs(reference, self.weight_coeffs, self.bias_coeffs)

    def forward(self, t: Tensor | float, x: Tensor) -> Tensor:
        phi = self.phi(t, self.weight_coeffs)
        return F.linear(x, self._weight_at(phi),
                        self._expand(phi, self.bias_coeffs))

    def extra_repr(self) -> str:
        return (f"{self.in_features}, {self.out_features}, basis={self.basis!r}, "
                f"n_terms={self.n_terms}, bias={self.bias_coeffs is not None}")


class GalerkinConv2d(DepthVariant):
    """A 2-D convolution whose kernel and bias are ``sum_n coeff_n phi_n(s)``.

    Shapes: ``x`` ``[B, in_channels, H, W]`` -> ``[B, out_channels, H', W']`` (``H' = H``
    for ``kernel_size = 2 * padding + 1``); ``weight_coeffs`` ``[n_terms, out, in, k, k]``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int,
                 padding: int = 0, basis: str = "fourier", n_terms: int = 5,
                 bias: bool = True, period: float = 1.0):
        super().__init__("GalerkinConv2d", basis, n_terms, period)
        reference = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding,
                              bias=bias)  # validates sizes and padding
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.padding = reference.kernel_size, reference.padding
        self.weight_coeffs = nn.Parameter(torch.empty(n_terms, *reference.weight.shape))
        self.bias_coeffs = nn.Parameter(torch.empty(n_terms, out_channels)) if bias else None
        self._init_coeffs(reference, self.weight_coeffs, self.bias_coeffs)

    def forward(self, t: Tensor | float, x: Tensor) -> Tensor:
        phi = self.phi(t, self.weight_coeffs)
        return F.conv2d(x, self._weight_at(phi), self._expand(phi, self.bias_coeffs),
                        padding=cast(Any, self.padding))  # an int tuple or a string

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"padding={self.padding}, basis={self.basis!r}, n_terms={self.n_terms}")


class DepthVariantSequential(nn.Sequential):
    """A vector field ``f(t, z)`` chaining depth-variant layers (called ``layer(t, z)``)
    and ordinary modules (called ``module(z)``), e.g.
    ``DepthVariantSequential(GalerkinLinear(2, 32), nn.Tanh(), GalerkinLinear(32, 2))``."""

    def forward(self, t: Tensor, z: Tensor) -> Tensor:  # type: ignore[override]
        for layer in self:
            z = layer(t, z) if isinstance(layer, DepthVariant) else layer(z)
        return z
