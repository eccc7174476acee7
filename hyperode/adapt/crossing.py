"""Trajectory crossing in phase space (Ott et al., ICLR 2021, §3 and Fig. 1).

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
