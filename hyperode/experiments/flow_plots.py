"""The PNGs of flow-matching runs and their sampler evaluations: the training loss,
sample panels (a scatter per sampler for 2-D samples, a grid of images otherwise) and
quality against NFE. Matplotlib's Agg backend (no display needed)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from torch import Tensor

_DPI = 110


def plot_loss(loss: Sequence[tuple[int, float]], path: str | Path) -> None:
    """The flow-matching loss (mean over each logging interval) against iteration."""
    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.plot([i for i, _ in loss], [v for _, v in loss])
    ax.set_xlabel("iteration")
    ax.set_ylabel("flow-matching loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)
    plt.close(fig)


def _image_grid(x: Tensor, side: int) -> Tensor:
    """The first ``side**2`` images ``[B, C, H, W]`` in ``[-1, 1]`` as one ``[side*H,
    side*W]`` (or ``[..., C]``) array in ``[0, 1]`` (missing tiles blank)."""
    x = ((x[:side * side].detach().float().cpu().clamp(-1, 1) + 1) / 2)
    n, c, h, w = x.shape
    if n < side * side:
        x = torch.cat([x, x.new_zeros(side * side - n, c, h, w)])
    grid = x.reshape(side, side, c, h, w).permute(0, 3, 1, 4, 2).reshape(side * h, side * w, c)
    return grid[..., 0] if c == 1 else grid


def plot_samples(samples: Mapping[str, Tensor], path: str | Path, *, limit: float = 4.5,
                 side: int = 6) -> None:
    """One panel per named sample set: 2-D samples ``[B, 2]`` as a scatter on
    ``[-limit, limit]^2``, images ``[B, C, H, W]`` as a ``side x side`` grid."""
    names = list(samples)
    cols = min(len(names), 5)
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.5 * rows), squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_visible(False)
    for ax, name in zip(axes.flat, names):
        ax.set_visible(True)
        x = samples[name]
        if x.ndim == 2 and x.shape[1] == 2:
            pts = x[:4000].detach().cpu().numpy()
            ax.scatter(pts[:, 0], pts[:, 1], s=0.4, alpha=0.5)
            ax.set_xlim(-limit, limit)
            ax.set_ylim(-limit, limit)
            ax.set_aspect("equal")
        else:
            ax.imshow(_image_grid(x, side).numpy(), cmap="gray", vmin=0, vmax=1)
        ax.set_title(name, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)
    plt.close(fig)


def plot_quality_vs_nfe(rows: Mapping[str, Mapping], metric: str, path: str | Path, *,
                        label: str) -> None:
    """``metric`` of every sampler row (``rows[name]`` with ``nfe`` and ``family``)
    against NFE: a line per fixed-step family, a marker per learned sampler, dopri5
    (family ``reference``) as a dashed line."""
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    families: dict[str, list[tuple[int, float]]] = {}
    for name, row in rows.items():
        value = row.get(metric)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            continue
        if row["family"] == "reference":
            ax.axhline(value, color="k", ls="--", label=f"{name} ({row['nfe']} NFE)")
        elif row["family"] == "fixed":
            families.setdefault(row["method"], []).append((row["nfe"], value))
        else:
            ax.plot([row["nfe"]], [value], "s", ms=7, label=name)
    for method, pts in families.items():
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=method)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("NFE (field evaluations)")
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)
    plt.close(fig)
