"""Trajectory crossing in phase space (Ott et al., ICLR 2021, §3 and Fig. 1), and the
piecewise field of their appendix A (eq. 6, ``CrossingField``) whose Euler trajectories
cross at one step size but not at a larger or a smaller one.

Solutions of an autonomous ODE ``dz/dt = f(z)`` with a Lipschitz ``f`` never cross in
phase space; the polygonal paths of a coarse explicit solver (a ResNet) can. Given
trajectories ``[T, B, 2]`` (time, batch, state), each trajectory is the polygon
through its ``T`` points, and two trajectories cross when a segment of one
intersects a segment of the other. (For a non-autonomous field ``f(t, z)`` crossing in
the ``z``-plane is allowed; the check is then a diagnostic, not a proof.)

The segment test is the standard orientation test (e.g. Cormen et al., *Introduction
to Algorithms*, §33.1): with ``o(p, q, r) = sign((q - p) x (r - p))``, segments
``p1p2`` and ``p3p4`` intersect iff ``o(p1,p2,p3)*o(p1,p2,p4) < 0`` and
``o(p3,p4,p1)*o(p3,p4,p2) < 0`` (a proper crossing), or an endpoint lies on the
other segment (a zero orientation and inside the bounding box; touching counts).
It is exact up to the floating-point rounding of the cross products (computed in
float64). Higher-dimensional states are projected to 2-D first (``project_2d``):
a projection can create apparent crossings, never remove real ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor


@dataclass
class CrossingResult:
    """Outcome of ``find_crossings``.

    Attributes:
        crossed: whether any two trajectories intersect.
        pairs: the ``(i, j)`` trajectory pairs (``i < j``) that intersect.
        segments: for each pair, the first intersecting segment pair ``(i, k, j, l)``:
            segment ``k`` (points ``k, k+1``) of trajectory ``i`` meets segment ``l``
            of trajectory ``j``.
    """

    crossed: bool
    pairs: list[tuple[int, int]]
    segments: list[tuple[int, int, int, int]]


def _orient(p: Tensor, q: Tensor, r: Tensor) -> Tensor:
    """Sign of the cross product ``(q - p) x (r - p)`` (broadcast over leading dims)."""
    d = (q[..., 0] - p[..., 0]) * (r[..., 1] - p[..., 1]) \
        - (q[..., 1] - p[..., 1]) * (r[..., 0] - p[..., 0])
    return torch.sign(d)


def _on_segment(p: Tensor, q: Tensor, r: Tensor) -> Tensor:
    """Whether ``r`` lies in the bounding box of segment ``pq`` (use with ``o == 0``)."""
    lo, hi = torch.minimum(p, q), torch.maximum(p, q)
    return ((r >= lo) & (r <= hi)).all(dim=-1)


def segments_intersect(p1: Tensor, p2: Tensor, p3: Tensor, p4: Tensor) -> Tensor:
    """Elementwise: does segment ``p1p2`` intersect ``p3p4``? Points ``[..., 2]``
    (broadcast); returns a bool tensor of the broadcast leading shape."""
    o1, o2 = _orient(p1, p2, p3), _orient(p1, p2, p4)
    o3, o4 = _orient(p3, p4, p1), _orient(p3, p4, p2)
    proper = (o1 * o2 < 0) & (o3 * o4 < 0)
    touch = ((o1 == 0) & _on_segment(p1, p2, p3)) | ((o2 == 0) & _on_segment(p1, p2, p4)) \
        | ((o3 == 0) & _on_segment(p3, p4, p1)) | ((o4 == 0) & _on_segment(p3, p4, p2))
    return proper | touch


def project_2d(trajectories: Tensor, method: str = "pca") -> Tensor:
    """Project ``[T, B, d]`` to ``[T, B, 2]``: ``"pca"`` (the two principal directions
    of all points) or ``"first"`` (the first two coordinates)."""
    if trajectories.ndim != 3 or trajectories.shape[-1] < 2:
        raise ValueError(f"project_2d: trajectories must be [T, B, d] with d >= 2, got "
                         f"{tuple(trajectories.shape)}")
    if trajectories.shape[-1] == 2:
        return trajectories
    if method == "first":
        return trajectories[..., :2]
    if method != "pca":
        raise ValueError(f"project_2d: method must be 'pca' or 'first', got {method!r}")
    pts = trajectories.reshape(-1, trajectories.shape[-1]).double()
    centred = pts - pts.mean(dim=0)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    return (centred @ vh[:2].T).reshape(*trajectories.shape[:2], 2)


def find_crossings(trajectories: Tensor, *, projection: str = "pca") -> CrossingResult:
    """Which trajectories of ``[T, B, 2]`` (or ``[T, B, d]``, projected) intersect.

    Compares every segment of trajectory ``i`` with every segment of each later
    trajectory at once (memory ``O(B * T^2)`` per ``i``); segments of the same
    trajectory are not compared.
    """
    if not isinstance(trajectories, Tensor) or trajectories.ndim != 3:
        raise ValueError(f"find_crossings: trajectories must be a [T, B, d] tensor, got "
                         f"{getattr(trajectories, 'shape', type(trajectories).__name__)}")
    if trajectories.shape[0] < 2:
        raise ValueError(f"find_crossings: need at least 2 time points, got "
                         f"{trajectories.shape[0]}")
    if not torch.isfinite(trajectories).all():
        raise ValueError("find_crossings: trajectories contain non-finite values")
    z = project_2d(trajectories.detach(), projection).double().cpu()
    a, b = z[:-1], z[1:]  # segment starts / ends, [S, B, 2]
    n = z.shape[1]
    pairs: list[tuple[int, int]] = []
    segments: list[tuple[int, int, int, int]] = []
    for i in range(n - 1):
        # [S_i, 1, 1, 2] against [1, S_j, B - i - 1, 2]
        p1, p2 = a[:, i][:, None, None], b[:, i][:, None, None]
        p3, p4 = a[:, i + 1:][None], b[:, i + 1:][None]
        hit = segments_intersect(p1, p2, p3, p4)  # [S, S, B - i - 1]
        for j_off in torch.nonzero(hit.any(dim=0).any(dim=0)).flatten().tolist():
            k, ll = (int(v) for v in torch.nonzero(hit[:, :, j_off])[0])
            j = i + 1 + j_off
            pairs.append((i, j))
            segments.append((i, k, j, ll))
    return CrossingResult(crossed=bool(pairs), pairs=pairs, segments=segments)


def plot_crossings(trajectories: Tensor, path: str | Path, *,
                   result: CrossingResult | None = None, projection: str = "pca",
                   title: str = "") -> Path:
    """Plot the (projected) trajectories, crossing ones in red, and the crossing points'
    segments highlighted; returns the PNG path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    z = project_2d(trajectories.detach(), projection).double().cpu()
    result = result if result is not None else find_crossings(trajectories,
                                                              projection=projection)
    bad = {i for pair in result.pairs for i in pair}
    fig, ax = plt.subplots(figsize=(5, 5))
    for i in range(z.shape[1]):
        colour = "tab:red" if i in bad else "tab:blue"
        ax.plot(z[:, i, 0], z[:, i, 1], "-", color=colour, alpha=0.8 if i in bad else 0.4,
                linewidth=1)
        ax.plot(z[0, i, 0], z[0, i, 1], "o", color=colour, markersize=3)
    for i, k, j, ll in result.segments:
        for traj, seg in ((i, k), (j, ll)):
            ax.plot(z[seg:seg + 2, traj, 0], z[seg:seg + 2, traj, 1], "-", color="black",
                    linewidth=2)
    ax.set_title(title or (f"{len(result.pairs)} crossing pair(s)" if result.crossed
                           else "no crossings"))
    ax.set_aspect("equal", adjustable="datalim")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- eq. 6


class CrossingField:
    r"""The piecewise vector field of Ott et al.'s appendix A (eq. 6): Euler trajectories
    that do not cross at ``h = 1`` cross at ``h = 1/2`` and no longer at ``h = 2^-5``.

    On ``x >= 0, y >= 0.1``::

        d/dt (x, y) = f(x, y) = y * v(x),

                 (1 - 2(x - 1),    2(x - 1))       if x in (1, 1.25]
        v(x) =   (0.5,             0.5)            if x in (1.25, 1.75]
                 (0.5 + 2(x-1.75), 0.5 - 2(x-1.75)) if x in (1.75, 2]
                 (1,               0)              otherwise.

    ``v`` is continuous and piecewise linear (it turns the flow up by 45 degrees on
    ``(1, 2]`` and back), so ``f`` is Lipschitz on bounded parts of the domain and the
    exact solutions do not cross (Picard-Lindelöf). Since ``f_y/f_x = v_2(x)/v_1(x)``
    does not depend on ``y``, the exact phase curves are vertical translates of one
    curve, ``y = y0 + G(x) - G(x0)`` (``phase_curve``), rising by ``G(2) = ln 2`` over
    the bend.

    Reading of the paper's text (its equation is garbled in the extracted text: the
    four rows of ``v`` and a lone ``· y`` next to the middle row):

    - **``f = y * v(x)``, not ``f = v(x)``.** With ``f = v(x)`` Euler's ``x``-update
      would not depend on ``y``: trajectories from ``x(0) = 0`` (the paper's blue set)
      would be vertical translates of each other at every step size and could never
      cross, contradicting Fig. 7(b). The factor ``y`` makes an IVP's speed
      proportional to its height, so Euler samples the bend at different points for
      different IVPs. It also explains the stated domain ``y >= 0.1`` and codomain
      ``[0, inf)^2``: ``y`` never decreases (``v_2 >= 0``), so the speed stays
      bounded below by ``0.1 * |v|``.
    - **The blue IVPs** are ``x0 = 0``, ``y0 = 0.1, 0.2, ..., 1.0`` (``initial_states``)
      over ``t in [0, 2]``, values not printed in the paper. With ``h = 1`` the two
      Euler steps stay in ``x <= 1`` (``x1 = y0 <= 1``) and never see the bend (the
      paper: "the numerical solver fails to resolve the change in curvature"), so the
      trajectories are parallel segments; with ``h = 1/2`` the upper IVPs take their
      third step inside the bend and cross; with ``h = 2^-5`` the bend is resolved.
      Longer spans (``T >= 3``) or ``y0 > 1`` make ``h = 1`` cross as well, so these
      two choices are what the described behaviour pins down.
    - **The extra (orange) IVPs start at ``x0 = 1.4``** in the text and at ``1.5`` in
      Fig. 7's caption; both start inside the bend, and both make ``h = 1`` cross the
      blue set (``x0`` is a parameter of ``initial_states``).

    A callable ``f(t, z)`` on states ``[..., 2]`` (columns ``x, y``), any dtype/device.
    """

    #: the kinks of v (x = 1, 1.25, 1.75, 2)
    breakpoints = (1.0, 1.25, 1.75, 2.0)

    def __call__(self, t: Tensor | float, z: Tensor) -> Tensor:
        if not isinstance(z, Tensor) or z.ndim < 1 or z.shape[-1] != 2:
            raise ValueError(f"CrossingField: z must be a [..., 2] tensor of (x, y), got "
                             f"{getattr(z, 'shape', type(z).__name__)}")
        return z[..., 1:2] * self.direction(z[..., 0])

    @staticmethod
    def direction(x: Tensor) -> Tensor:
        """``v(x)`` of eq. 6, shape ``[..., 2]`` for ``x`` of shape ``[...]``."""
        if not isinstance(x, Tensor):
            raise ValueError(f"CrossingField.direction: x must be a tensor, got "
                             f"{type(x).__name__}")
        s = x - 1.0
        u = x - 1.75
        half = torch.full_like(x, 0.5)
        one, zero = torch.ones_like(x), torch.zeros_like(x)
        vx = torch.where((x > 1) & (x <= 1.25), 1 - 2 * s,
             torch.where((x > 1.25) & (x <= 1.75), half,
             torch.where((x > 1.75) & (x <= 2), 0.5 + 2 * u, one)))
        vy = torch.where((x > 1) & (x <= 1.25), 2 * s,
             torch.where((x > 1.25) & (x <= 1.75), half,
             torch.where((x > 1.75) & (x <= 2), 0.5 - 2 * u, zero)))
        return torch.stack([vx, vy], dim=-1)

    @staticmethod
    def rise(x: Tensor) -> Tensor:
        """``G(x) = int_0^x v_2/v_1``: the exact phase curves are ``y = c + G(x)``.

        ``G = 0`` for ``x <= 1``; ``-s - ln(1 - 2s)/2`` with ``s = x - 1`` on
        ``(1, 1.25]``; ``G(1.25) + (x - 1.25)`` on ``(1.25, 1.75]``; ``G(1.75) +
        ln(1 + 4u)/2 - u`` with ``u = x - 1.75`` on ``(1.75, 2]``; ``ln 2`` for
        ``x > 2``.
        """
        if not isinstance(x, Tensor):
            raise ValueError(f"CrossingField.rise: x must be a tensor, got {type(x).__name__}")
        s = (x - 1.0).clamp(0.0, 0.25)
        g1 = -s - 0.5 * torch.log1p(-2 * s)
        g2 = (x - 1.25).clamp(0.0, 0.5)
        u = (x - 1.75).clamp(0.0, 0.25)
        g3 = 0.5 * torch.log1p(4 * u) - u
        return g1 + g2 + g3

    def phase_curve(self, x: Tensor, x0: float, y0: float) -> Tensor:
        """The exact solution through ``(x0, y0)`` as ``y(x)`` (for ``x >= x0``)."""
        x0_t = torch.as_tensor(x0, dtype=x.dtype, device=x.device)
        return y0 + self.rise(x) - self.rise(x0_t)

    @staticmethod
    def initial_states(n: int = 10, x0: float = 0.0, y_min: float = 0.1, y_max: float = 1.0,
                       dtype: torch.dtype = torch.float64) -> Tensor:
        """``n`` IVPs ``(x0, y)`` with ``y`` evenly spaced in ``[y_min, y_max]``,
        ``[n, 2]``. The defaults are the blue set of Fig. 7; ``x0=1.4`` gives the
        orange one (fewer, e.g. ``n=4``)."""
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"CrossingField.initial_states: n must be an int >= 1, got {n!r}")
        if not (math.isfinite(x0) and x0 >= 0):
            raise ValueError(f"CrossingField.initial_states: x0 must be a finite number >= 0 "
                             f"(the field's domain), got {x0!r}")
        if not (math.isfinite(y_min) and y_min >= 0.1):
            raise ValueError(f"CrossingField.initial_states: y_min must be a finite number "
                             f">= 0.1 (the field's domain), got {y_min!r}")
        if not (math.isfinite(y_max) and y_max >= y_min):
            raise ValueError(f"CrossingField.initial_states: y_max must be a finite number "
                             f">= y_min = {y_min!r}, got {y_max!r}")
        y = torch.linspace(y_min, y_max, n, dtype=dtype)
        return torch.stack([torch.full_like(y, x0), y], dim=-1)
