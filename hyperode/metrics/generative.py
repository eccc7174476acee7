"""Sample-quality metrics for generative models: MMD, sliced Wasserstein, the Fréchet
distance in a given feature space, and k-NN precision/recall.

Every function takes two sample sets ``x`` ``[N, ...]`` and ``y`` ``[M, ...]`` (samples
are flattened to vectors) and computes in float64.

``mmd``
    Maximum mean discrepancy with a sum of Gaussian kernels ``k(a, b) = sum_l
    exp(-||a - b||^2 / (2 l^2))`` over ``bandwidths`` (Gretton et al. 2012):
    ``MMD^2 = E k(x, x') + E k(y, y') - 2 E k(x, y)``. ``estimator="unbiased"`` drops
    the diagonals (can be slightly negative), ``"biased"`` keeps them (the V-statistic,
    never negative). Returns ``sqrt(max(MMD^2, 0))`` unless ``squared=True``.
``sliced_wasserstein``
    ``SW_p(x, y) = (E_theta W_p^p(theta . x, theta . y))^{1/p}`` over directions
    ``theta`` uniform on the unit sphere (Monte Carlo, ``projections`` of them); the
    1-D ``W_p`` between two empirical measures is computed exactly from their quantile
    functions (any ``N``, ``M``). For ``N(mu, I)`` against ``N(mu + m, I)`` in ``d``
    dimensions, ``SW_2 = ||m|| / sqrt(d)`` (``E (theta . m)^2 = ||m||^2 / d``).
``frechet_distance``
    ``||mu_x - mu_y||^2 + Tr(S_x + S_y - 2 (S_x S_y)^{1/2})`` between Gaussians fitted
    to the two sets (the formula of FID, Heusel et al. 2017). *Which* features it is
    computed in is the caller's choice: FID uses Inception-v3 pool features; this
    project's digits benchmark uses a small classifier's features (not FID).
``precision_recall``
    Kynkäänniemi et al. 2019: the manifold of a set is the union of balls around its
    points with radius the distance to the ``k``-th nearest neighbour within the set;
    precision = share of generated samples inside the real manifold, recall = share of
    real samples inside the generated manifold.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor

DEFAULT_BANDWIDTHS = (0.1, 0.2, 0.5, 1.0, 2.0)


def _flat(owner: str, name: str, x: object) -> Tensor:
    if not isinstance(x, Tensor):
        raise ValueError(f"{owner}: {name} must be a torch.Tensor [N, ...], got "
                         f"{type(x).__name__}")
    if x.ndim < 1 or x.shape[0] == 0:
        raise ValueError(f"{owner}: {name} must hold at least one sample, got shape "
                         f"{tuple(x.shape)}")
    if not (x.is_floating_point() or not x.is_complex()):
        raise ValueError(f"{owner}: {name} must be real, got {x.dtype}")
    out = x.detach().reshape(x.shape[0], -1).double()
    if not bool(torch.isfinite(out).all()):
        raise ValueError(f"{owner}: {name} contains non-finite values")
    return out


def _pair(owner: str, x: object, y: object) -> tuple[Tensor, Tensor]:
    a, b = _flat(owner, "x", x), _flat(owner, "y", y)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{owner}: x has {a.shape[1]} features per sample but y has "
                         f"{b.shape[1]}")
    return a, b.to(a.device)


def _mean_kernel(a: Tensor, b: Tensor, bandwidths: Sequence[float], drop_diagonal: bool,
                 chunk: int = 2048) -> Tensor:
    total = a.new_zeros(())
    for i in range(0, a.shape[0], chunk):
        d2 = torch.cdist(a[i:i + chunk], b).square()
        k = cast(Tensor, sum(torch.exp(-d2 / (2.0 * bw * bw)) for bw in bandwidths))
        if drop_diagonal:
            idx = torch.arange(i, min(i + chunk, a.shape[0]), device=a.device)
            k[idx - i, idx] = 0.0
        total = total + k.sum()
    n = a.shape[0] * b.shape[0] - (a.shape[0] if drop_diagonal else 0)
    return total / n


def mmd(x: Tensor, y: Tensor, bandwidths: Sequence[float] = DEFAULT_BANDWIDTHS, *,
        estimator: str = "biased", squared: bool = False) -> float:
    """MMD between ``x`` and ``y`` with a sum of Gaussian kernels (module docstring).

    ``bandwidths`` are in the units of the samples (scale them to the data, e.g. by its
    standard deviation). ``estimator``: ``"biased"`` or ``"unbiased"`` (needs >= 2
    samples per set).
    """
    a, b = _pair("mmd", x, y)
    bws = [float(v) for v in bandwidths] if isinstance(bandwidths, (list, tuple)) else None
    if not bws or any(not math.isfinite(v) or v <= 0 for v in bws):
        raise ValueError(f"mmd: bandwidths must be a non-empty list of positive numbers, got "
                         f"{bandwidths!r}")
    if estimator not in ("biased", "unbiased"):
        raise ValueError(f"mmd: estimator must be 'biased' or 'unbiased', got {estimator!r}")
    unbiased = estimator == "unbiased"
    if unbiased and (a.shape[0] < 2 or b.shape[0] < 2):
        raise ValueError("mmd: the unbiased estimator needs at least 2 samples in x and in y")
    value = float(_mean_kernel(a, a, bws, unbiased) + _mean_kernel(b, b, bws, unbiased)
                  - 2.0 * _mean_kernel(a, b, bws, False))
    return value if squared else math.sqrt(max(value, 0.0))


def wasserstein_1d(u: Tensor, v: Tensor, p: float = 2.0) -> Tensor:
    """``W_p^p`` between the empirical measures of the rows of ``u`` ``[P, N]`` and
    ``v`` ``[P, M]`` (one 1-D problem per row), exact: the integral over ``q`` in
    ``(0, 1)`` of ``|F_u^{-1}(q) - F_v^{-1}(q)|^p`` with both quantile functions
    piecewise constant between the merged breakpoints ``i/N`` and ``j/M``."""
    n, m = u.shape[1], v.shape[1]
    us, _ = torch.sort(u, dim=1)
    vs, _ = torch.sort(v, dim=1)
    if n == m:  # the breakpoints coincide: the sorted matching
        return ((us - vs).abs() ** p).mean(dim=1)
    qs = torch.cat([torch.arange(1, n + 1, dtype=u.dtype, device=u.device) / n,
                    torch.arange(1, m + 1, dtype=u.dtype, device=u.device) / m])
    qs, _ = torch.sort(qs)
    qs = torch.unique_consecutive(qs)
    lower = torch.cat([qs.new_zeros(1), qs[:-1]])
    widths = qs - lower
    mid = 0.5 * (qs + lower)
    iu = torch.clamp((mid * n).long(), max=n - 1)
    iv = torch.clamp((mid * m).long(), max=m - 1)
    diff = (us[:, iu] - vs[:, iv]).abs() ** p
    return (diff * widths).sum(dim=1)


def sliced_wasserstein(x: Tensor, y: Tensor, *, projections: int = 256, p: float = 2.0,
                       generator: torch.Generator | None = None) -> float:
    """``SW_p(x, y)`` with ``projections`` random directions (module docstring)."""
    a, b = _pair("sliced_wasserstein", x, y)
    if isinstance(projections, bool) or not isinstance(projections, int) or projections < 1:
        raise ValueError(f"sliced_wasserstein: projections must be an int >= 1, got "
                         f"{projections!r}")
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not p >= 1:
        raise ValueError(f"sliced_wasserstein: p must be a number >= 1, got {p!r}")
    theta = torch.randn(a.shape[1], projections, dtype=torch.float64, generator=generator)
    theta = (theta / torch.linalg.vector_norm(theta, dim=0, keepdim=True)).to(a.device)
    w = wasserstein_1d((a @ theta).T, (b @ theta).T, float(p))
    return float(w.mean()) ** (1.0 / p)


def gaussian_moments(features: Tensor) -> tuple[Tensor, Tensor]:
    """Mean ``[D]`` and (unbiased) covariance ``[D, D]`` of ``[N, D]`` features (float64)."""
    f = _flat("gaussian_moments", "features", features)
    if f.shape[0] < 2:
        raise ValueError("gaussian_moments: need at least 2 samples for a covariance")
    return f.mean(dim=0), torch.cov(f.T).reshape(f.shape[1], f.shape[1])


def frechet_from_moments(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> float:
    """``||mu1 - mu2||^2 + Tr(C1 + C2 - 2 (C1 C2)^{1/2})``; ``Tr (C1 C2)^{1/2}`` as the sum
    of square roots of the eigenvalues of ``C1^{1/2} C2 C1^{1/2}`` (symmetric PSD)."""
    mu1, mu2, c1, c2 = (v.double() for v in (mu1, mu2, cov1, cov2))
    w, q = torch.linalg.eigh(0.5 * (c1 + c1.T))
    root1 = (q * torch.sqrt(torch.clamp(w, min=0.0))) @ q.T
    mid = root1 @ c2 @ root1
    ev = torch.linalg.eigvalsh(0.5 * (mid + mid.T))
    tr_root = torch.sqrt(torch.clamp(ev, min=0.0)).sum()
    value = (mu1 - mu2).square().sum() + torch.trace(c1) + torch.trace(c2) - 2.0 * tr_root
    return max(float(value), 0.0)


def frechet_distance(x_features: Tensor, y_features: Tensor) -> float:
    """The Fréchet distance between Gaussians fitted to two feature sets ``[N, D]``
    (module docstring; name the feature space when reporting it)."""
    a, b = _pair("frechet_distance", x_features, y_features)
    return frechet_from_moments(*gaussian_moments(a), *gaussian_moments(b))


def _kth_radius(a: Tensor, k: int, chunk: int = 2048) -> Tensor:
    out = []
    for i in range(0, a.shape[0], chunk):
        d = torch.cdist(a[i:i + chunk], a)
        out.append(torch.kthvalue(d, k + 1, dim=1).values)  # k + 1: the point itself is 0
    return torch.cat(out)


def _inside(points: Tensor, centres: Tensor, radii: Tensor, chunk: int = 2048) -> Tensor:
    out = []
    for i in range(0, points.shape[0], chunk):
        d = torch.cdist(points[i:i + chunk], centres)
        out.append((d <= radii[None, :]).any(dim=1))
    return torch.cat(out)


def precision_recall(real: Tensor, generated: Tensor, k: int = 3) -> tuple[float, float]:
    """``(precision, recall)`` by k-NN manifolds (module docstring); ``k`` must be
    smaller than both set sizes."""
    a, b = _pair("precision_recall", real, generated)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"precision_recall: k must be an int >= 1, got {k!r}")
    if k >= a.shape[0] or k >= b.shape[0]:
        raise ValueError(f"precision_recall: k={k} needs more than k samples in both sets, "
                         f"got {a.shape[0]} real and {b.shape[0]} generated")
    precision = float(_inside(b, a, _kth_radius(a, k)).double().mean())
    recall = float(_inside(a, b, _kth_radius(b, k)).double().mean())
    return precision, recall
