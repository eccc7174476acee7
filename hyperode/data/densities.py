"""2-D target densities for continuous normalising flows.

Five follow FFJORD's toy recipes (Grathwohl et al. 2019, ``lib/toy_data.py``), as
summarised in the project's REPRODUCTION notes; the sixth reconstructs the
hypersolvers paper's "circles connected by three curves". All return float32
``[n, 2]`` points, exactly ``n`` of them, shuffled, in the units of the recipe
(no standardisation).

``pinwheel``
    5 arms. ``v = (a, b)``, ``a ~ N(1, 0.3^2)``, ``b ~ N(0, 0.1^2)``; arm ``k`` has
    angle ``phi = 2 pi k / 5 + 0.25 exp(a)``; the point is
    ``2 * v @ [[cos phi, -sin phi], [sin phi, cos phi]]`` (the row vector times the
    matrix, i.e. a rotation by ``-phi``). Arm counts differ by at most one (FFJORD
    drops the remainder of ``n / 5``; we keep exactly ``n`` points).
``rings``
    Circles of radius 1, 0.75, 0.5, 0.25 with ``n // 4`` evenly spaced angles each
    (endpoint excluded; the radius-0.25 ring takes the remainder), times 3, plus
    ``N(0, 0.08^2)`` noise per coordinate. Radii about 3, 2.25, 1.5, 0.75.
``checkerboard``
    ``x1 ~ U(-2, 2)``, ``x2 = U(0, 1) - 2 Bernoulli(1/2) + (floor(x1) mod 2)``,
    times 2: uniform on the 8 cells of ``[-4, 4)^2`` (cells of side 2) whose
    ``floor(x1/2) + floor(x2/2)`` is even.
``circles``
    ``sklearn.datasets.make_circles(n, factor=0.5, noise=0.08)`` times 3: two noisy
    circles of radius 3 and 1.5 (noise std 0.24 after scaling), half the points each.
``8gaussians``
    Centres ``4 * c`` for ``c`` in ``(+-1, 0), (0, +-1), (+-1/sqrt2, +-1/sqrt2)``;
    the point is ``(0.5 * N(0, I) + centre) / 1.414``: eight Gaussians of std about
    0.354 on the circle of radius about 2.83, chosen uniformly.
``circles_curves``
    A *reconstruction* (by inference from torchdyn's ``generate_diffeqml``; the
    paper shows only a picture): the limit-cycle field
    ``x' = -y + x (1 - r^2)``, ``y' = x + y (1 - r^2)`` (in polar form
    ``r' = r (1 - r^2)``, ``theta' = 1``) is integrated with
    ``scipy.integrate.solve_ivp`` from ``(0, 2)``, ``(1.6, -1.2)`` and
    ``(-1.6, -1.2)`` over ``t in [0, 3.2]``; each trajectory spirals from the
    radius-2 circle onto the unit circle. The curve points are the three
    trajectories on a uniform time grid plus uniformly spaced points on the
    radius-2 circle, weighted like the reference (500 points per spiral and 1000 on
    the circle, so 3/5 of the mass on the spirals and 2/5 on the outer circle; we
    use a 4x denser grid with the same proportions so the curves are not beaded).
    Samples come from the Gaussian KDE of those points with bandwidth
    ``CURVES_BANDWIDTH`` (0.01, the reference value): a uniformly chosen curve
    point plus ``N(0, 0.01^2 I)``. Support: radii in about [0.95, 2.05].
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from ._checks import check_int, check_seed, rng
from .split import Split

DENSITIES: tuple[str, ...] = (
    "pinwheel", "rings", "checkerboard", "circles", "8gaussians", "circles_curves",
)

#: Gaussian-KDE bandwidth of ``circles_curves``.
CURVES_BANDWIDTH = 0.01
#: Starting points of the three spirals of ``circles_curves`` and their time span.
CURVES_STARTS = ((0.0, 2.0), (1.6, -1.2), (-1.6, -1.2))
CURVES_T_END = 3.2
#: Grid sizes: points per spiral and points on the radius-2 circle (ratio 1 : 2).
CURVES_POINTS_PER_SPIRAL = 2000
CURVES_POINTS_ON_CIRCLE = 4000


def _pinwheel(n: int, g: np.random.Generator) -> np.ndarray:
    arms = 5
    arm = np.arange(n) % arms
    v = g.standard_normal((n, 2)) * np.array([0.3, 0.1])
    v[:, 0] += 1.0
    phi = 2.0 * np.pi * arm / arms + 0.25 * np.exp(v[:, 0])
    cos, sin = np.cos(phi), np.sin(phi)
    # Row vector v times [[cos, -sin], [sin, cos]].
    out = np.stack([v[:, 0] * cos + v[:, 1] * sin, -v[:, 0] * sin + v[:, 1] * cos], axis=1)
    return 2.0 * out[g.permutation(n)]


def _rings(n: int, g: np.random.Generator) -> np.ndarray:
    quarter = n // 4
    counts = (quarter, quarter, quarter, n - 3 * quarter)
    parts = []
    for radius, count in zip((1.0, 0.75, 0.5, 0.25), counts):
        angle = np.linspace(0.0, 2.0 * np.pi, count, endpoint=False)
        parts.append(radius * np.stack([np.cos(angle), np.sin(angle)], axis=1))
    x = 3.0 * np.concatenate(parts)
    x = x + 0.08 * g.standard_normal(x.shape)
    return x[g.permutation(n)]


def _checkerboard(n: int, g: np.random.Generator) -> np.ndarray:
    x1 = 4.0 * g.random(n) - 2.0
    x2 = g.random(n) - 2.0 * g.integers(0, 2, size=n) + np.floor(x1) % 2
    return 2.0 * np.stack([x1, x2], axis=1)


def _circles(n: int, g: np.random.Generator) -> np.ndarray:
    from sklearn.datasets import make_circles

    x, _ = make_circles(n_samples=n, factor=0.5, noise=0.08, shuffle=True,
                        random_state=int(g.integers(0, 2**31 - 1)))
    return 3.0 * np.asarray(x)


_S = 1.0 / math.sqrt(2.0)
_EIGHT_CENTRES = 4.0 * np.array([[1, 0], [-1, 0], [0, 1], [0, -1],
                                 [_S, _S], [_S, -_S], [-_S, _S], [-_S, -_S]])


def _eight_gaussians(n: int, g: np.random.Generator) -> np.ndarray:
    centre = _EIGHT_CENTRES[g.integers(0, 8, size=n)]
    return (0.5 * g.standard_normal((n, 2)) + centre) / 1.414


def limit_cycle_field(t: float, z: np.ndarray) -> np.ndarray:
    """``x' = -y + x(1 - r^2)``, ``y' = x + y(1 - r^2)`` for stacked ``[x0, y0, x1, y1, ...]``."""
    xy = z.reshape(-1, 2)
    x, y = xy[:, 0], xy[:, 1]
    damp = 1.0 - (x * x + y * y)
    return np.stack([-y + x * damp, x + y * damp], axis=1).reshape(-1)


@functools.lru_cache(maxsize=1)
def curve_points() -> np.ndarray:
    """The (cached, read-only) float64 ``[P, 2]`` curve points of ``circles_curves``.

    Rows are the three spirals (``CURVES_POINTS_PER_SPIRAL`` each, in time order,
    ``t`` evenly spaced in ``[0, CURVES_T_END]``) followed by
    ``CURVES_POINTS_ON_CIRCLE`` points on the radius-2 circle.
    """
    from scipy.integrate import solve_ivp

    t = np.linspace(0.0, CURVES_T_END, CURVES_POINTS_PER_SPIRAL)
    sol = solve_ivp(limit_cycle_field, (0.0, CURVES_T_END), np.ravel(CURVES_STARTS), t_eval=t,
                    method="DOP853", rtol=1e-10, atol=1e-12)
    if not sol.success:  # pragma: no cover - a smooth, bounded field
        raise RuntimeError(f"circles_curves: solve_ivp failed: {sol.message}")
    spirals = sol.y.reshape(len(CURVES_STARTS), 2, -1).transpose(0, 2, 1).reshape(-1, 2)
    angle = np.linspace(0.0, 2.0 * np.pi, CURVES_POINTS_ON_CIRCLE, endpoint=False)
    circle = 2.0 * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    points = np.concatenate([spirals, circle])
    points.setflags(write=False)
    return points


def _circles_curves(n: int, g: np.random.Generator) -> np.ndarray:
    points = curve_points()
    return points[g.integers(0, len(points), size=n)] + CURVES_BANDWIDTH * g.standard_normal((n, 2))


_SAMPLERS: dict[str, Callable[[int, np.random.Generator], np.ndarray]] = {
    "pinwheel": _pinwheel,
    "rings": _rings,
    "checkerboard": _checkerboard,
    "circles": _circles,
    "8gaussians": _eight_gaussians,
    "circles_curves": _circles_curves,
}
assert tuple(_SAMPLERS) == DENSITIES


def _check_name(name: object) -> str:
    if not isinstance(name, str) or name not in _SAMPLERS:
        raise ValueError(f"density must be one of {', '.join(DENSITIES)}; got {name!r}")
    return name  # type: ignore[return-value]


def _sample(name: str, n: int, seed: int, stream: int) -> Tensor:
    x = _SAMPLERS[name](n, rng(seed, f"density:{name}", stream))
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def sample_density(name: str, n: int, seed: int = 0) -> Tensor:
    """``n`` samples (float32 ``[n, 2]``) of the 2-D density ``name`` (see ``DENSITIES``).

    Deterministic given ``seed`` (a non-negative integer). Equal to
    ``density(name, n_train=n, seed=seed).x_train``.
    """
    name = _check_name(name)
    return _sample(name, check_int("n", n, 1), check_seed(seed), stream=0)


def density(name: str, n_train: int = 10_000, n_test: int = 2_000, seed: int = 0) -> Split:
    """Unlabelled ``Split`` (x float32 ``[N, 2]``, y ``None``) of the 2-D density ``name``.

    Training and test points come from independent random streams of ``seed``.
    """
    name = _check_name(name)
    n_train = check_int("n_train", n_train, 1)
    n_test = check_int("n_test", n_test, 1)
    seed = check_seed(seed)
    return Split(_sample(name, n_train, seed, 0), None, _sample(name, n_test, seed, 1), None)


# ---------------------------------------------------------------------- exact log densities

#: The densities with an exact log density (``log_density``). ``pinwheel`` has none: its
#: samples are a nonlinear, many-to-one image of a Gaussian (the rotation angle depends on
#: the radial coordinate), whose density would need a root search per point; it is not
#: provided rather than approximated.
LOG_DENSITIES: tuple[str, ...] = ("rings", "checkerboard", "circles", "8gaussians",
                                  "circles_curves")


def _ring_mixture_log_density(x: np.ndarray, radii: tuple[float, ...],
                              weights: tuple[float, ...], std: float) -> np.ndarray:
    """``log sum_k w_k p_k(x)`` with ``p_k`` a uniform angle on the circle of radius
    ``R_k`` plus ``N(0, std^2 I)``: ``p_k(x) = exp(-(rho^2 + R^2) / (2 std^2))
    I_0(rho R / std^2) / (2 pi std^2)``, ``rho = |x|`` (``I_0`` through the scaled
    ``i0e`` for stability)."""
    from scipy.special import i0e, logsumexp

    rho = np.linalg.norm(x, axis=1)
    s2 = std * std
    terms = []
    for radius, w in zip(radii, weights):
        z = rho * radius / s2
        terms.append(np.log(w) - (rho - radius) ** 2 / (2 * s2) + np.log(i0e(z))
                     - np.log(2 * np.pi * s2))
    return np.asarray(logsumexp(np.stack(terms), axis=0))


def log_density(name: str, x: Tensor) -> Tensor:
    """The exact log density (natural log, float64 ``[n]``) of the 2-D density ``name``
    at the points ``x`` ``[n, 2]``, in the units of ``sample_density``.

    - ``8gaussians``: the mixture of the eight ``N(c / 1.414, (0.5 / 1.414)^2 I)``,
      weights 1/8.
    - ``checkerboard``: ``1/32`` on the 8 cells (total area 32), ``-inf`` elsewhere.
    - ``rings``: four rings (radii 3, 2.25, 1.5, 0.75, weight 1/4 each) with a uniform
      angle, convolved with ``N(0, 0.08^2 I)`` (closed form with Bessel's ``I_0``).
      The recipe places ``n/4`` *evenly spaced* angles per ring; this is their
      continuous-angle limit, which it matches to well below 1e-10 relative once the
      spacing ``2 pi R / (n/4)`` is under about a third of the noise std (``n >= 1000``).
    - ``circles``: the same for radii 3 and 1.5, weight 1/2 each, noise std 0.24.
    - ``circles_curves``: the exact KDE mixture over ``curve_points()``, bandwidth
      ``CURVES_BANDWIDTH``.
    - ``pinwheel``: none (``ValueError``; see ``LOG_DENSITIES``).
    """
    from scipy.special import logsumexp

    name = _check_name(name)
    if not isinstance(x, Tensor) or x.ndim != 2 or x.shape[1] != 2:
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"log_density: x must be a tensor [n, 2], got {got}")
    if name not in LOG_DENSITIES:
        raise ValueError(f"log_density: {name!r} has no exact log density (available: "
                         f"{', '.join(LOG_DENSITIES)})")
    pts = x.detach().cpu().double().numpy()
    if name == "8gaussians":
        std = 0.5 / 1.414
        centres = _EIGHT_CENTRES / 1.414
        d2 = ((pts[:, None, :] - centres[None]) ** 2).sum(axis=2)
        out = logsumexp(-d2 / (2 * std * std), axis=1) - np.log(8 * 2 * np.pi * std * std)
    elif name == "checkerboard":
        inside = (np.abs(pts) < 4.0).all(axis=1) & \
            ((np.floor(pts[:, 0] / 2) + np.floor(pts[:, 1] / 2)) % 2 == 0)
        out = np.where(inside, -np.log(32.0), -np.inf)
    elif name == "rings":
        out = _ring_mixture_log_density(pts, (3.0, 2.25, 1.5, 0.75), (0.25,) * 4, 0.08)
    elif name == "circles":
        out = _ring_mixture_log_density(pts, (3.0, 1.5), (0.5, 0.5), 0.24)
    else:
        centres = curve_points()
        bw2 = CURVES_BANDWIDTH ** 2
        out = np.empty(len(pts))
        for i in range(0, len(pts), 512):
            d2 = ((pts[i:i + 512, None, :] - centres[None]) ** 2).sum(axis=2)
            out[i:i + 512] = logsumexp(-d2 / (2 * bw2), axis=1)
        out = out - np.log(len(centres) * 2 * np.pi * bw2)
    return torch.from_numpy(np.asarray(out, dtype=np.float64))
