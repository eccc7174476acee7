"""The PNGs of a run folder: training curves, 2-D decision regions and trajectories, and
for CNFs the learned density next to the data and samples.

Matplotlib's non-interactive Agg backend is used, so plots work without a display.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor, nn

from ..data import Split

if TYPE_CHECKING:
    from matplotlib.axes import Axes

_DPI = 110


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average (the first points average what there is)."""
    if window <= 1 or len(values) == 0:
        return values
    cums = np.cumsum(np.insert(values, 0, 0.0))
    out = np.empty_like(values, dtype=float)
    for i in range(len(values)):
        lo = max(0, i + 1 - window)
        out[i] = (cums[i + 1] - cums[lo]) / (i + 1 - lo)
    return out


def _series(records: list[dict[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    pts = [(r["iteration"], r[key]) for r in records if r.get(key) is not None]
    if not pts:
        return np.zeros(0), np.zeros(0)
    it, v = zip(*pts)
    return np.asarray(it, dtype=float), np.asarray(v, dtype=float)


def plot_training_curves(records: list[dict[str, Any]], path: str | Path, kind: str) -> None:
    """Loss, accuracy (or bits/dim), NFE and learning rate against iterations."""
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    window = max(1, len(records) // 50)
    metric = "accuracy" if kind == "classification" else "bits_per_dim"
    panels = [
        (axes[0, 0], "loss", "loss" if kind == "classification" else "NLL (nats)"),
        (axes[0, 1], metric, metric.replace("_", " ")),
    ]
    for ax, key, label in panels:
        it, v = _series(records, key)
        ax.plot(it, v, color="C0", alpha=0.25, lw=0.8)
        ax.plot(it, _smooth(v, window), color="C0", lw=1.5, label=f"train (mean of {window})")
        it, v = _series(records, f"test_{key}")
        if len(it):
            ax.plot(it, v, "o-", color="C3", ms=4, lw=1.2, label="test")
        ax.set_ylabel(label)
        ax.legend(loc="best", fontsize=8)
    if kind == "classification":
        axes[0, 1].set_ylim(-0.02, 1.02)
    ax = axes[1, 0]
    for key, color, label in (("nfe_forward", "C0", "forward (train)"),
                              ("nfe_backward", "C1", "backward (train)"),
                              ("test_nfe", "C3", "forward (test, per batch)")):
        it, v = _series(records, key)
        if len(it) and (key != "nfe_backward" or v.any()):
            style = "o-" if key == "test_nfe" else "-"
            ax.plot(it, v, style, color=color, lw=1.0, ms=3, label=label)
    ax.set_ylabel("NFE")
    ax.legend(loc="best", fontsize=8)
    ax = axes[1, 1]
    it, v = _series(records, "lr")
    ax.plot(it, v, color="C2")
    ax.set_ylabel("learning rate")
    ax.set_yscale("log")
    _mark_solver_changes(ax, records)
    for ax in axes.flat:
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    fig.suptitle("training curves")
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)
    plt.close(fig)


def _mark_solver_changes(ax: Axes, records: list[dict[str, Any]]) -> None:
    """Vertical lines where the solver in use changed (e.g. step adaptation)."""
    previous = None
    changes = []
    for r in records:
        if previous is not None and r.get("solver") != previous:
            changes.append((r["iteration"], r.get("solver")))
        previous = r.get("solver")
    for it, _ in changes[:30]:
        ax.axvline(it, color="0.5", lw=0.6, ls=":")
    if records:
        first = records[0].get("solver")
        last = records[-1].get("solver")
        text = f"solver: {first}" if first == last else f"solver: {first} -> {last}"
        ax.set_title(text + (f" ({len(changes)} changes)" if changes else ""), fontsize=8)


def _model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _grid(points: np.ndarray, n: int = 200, margin: float = 0.15
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lo, hi = np.quantile(points, 0.0, axis=0), np.quantile(points, 1.0, axis=0)
    pad = (hi - lo) * margin + 1e-6
    xs = np.linspace(lo[0] - pad[0], hi[0] + pad[0], n)
    ys = np.linspace(lo[1] - pad[1], hi[1] + pad[1], n)
    gx, gy = np.meshgrid(xs, ys)
    return gx, gy, np.stack([gx.ravel(), gy.ravel()], axis=1)


@torch.no_grad()
def _batched(fn: Any, x: Tensor, batch: int = 4096) -> Tensor:
    return torch.cat([fn(x[i:i + batch]) for i in range(0, len(x), batch)])


def plot_decision_regions(model: nn.Module, split: Split, path: str | Path,
                          n_trajectories: int = 40) -> None:
    """Class-1 probability over the plane with the test points, and (for models with
    ``trajectory``) hidden-state trajectories of a few test points."""
    device = _model_device(model)
    shape = split.input_shape
    was_training = model.training
    model.eval()
    try:
        x_test = split.x_test.reshape(len(split.x_test), -1).numpy()
        y_test = split.y_test.numpy() if split.y_test is not None else np.zeros(len(x_test))
        gx, gy, pts = _grid(x_test)
        grid = torch.as_tensor(pts, dtype=split.x_test.dtype).reshape(-1, *shape).to(device)
        probs = _batched(lambda xb: torch.softmax(model(xb), dim=1), grid).cpu().numpy()
        has_traj = callable(getattr(model, "trajectory", None))
        fig, axes = plt.subplots(1, 2 if has_traj else 1, figsize=(11 if has_traj else 5.5,
                                                                     5))
        axes = np.atleast_1d(axes)
        ax = axes[0]
        p1 = probs[:, 1] if probs.shape[1] > 1 else probs[:, 0]
        cs = ax.contourf(gx, gy, p1.reshape(gx.shape), levels=np.linspace(0, 1, 11),
                         cmap="RdBu_r", alpha=0.75)
        ax.contour(gx, gy, p1.reshape(gx.shape), levels=[0.5], colors="k", linewidths=1.0)
        ax.scatter(x_test[:, 0], x_test[:, 1], c=y_test, cmap="RdBu_r", s=6,
                   edgecolors="k", linewidths=0.2)
        fig.colorbar(cs, ax=ax, label="p(class 1)")
        ax.set_title("decision regions (test points)")
        ax.set_aspect("equal")
        if has_traj:
            _trajectories(axes[1], model, split, device, n_trajectories)
        fig.tight_layout()
        fig.savefig(path, dpi=_DPI)
        plt.close(fig)
    finally:
        model.train(was_training)


@torch.no_grad()
def _trajectories(ax: Axes, model: nn.Module, split: Split, device: torch.device,
                  n: int) -> None:
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(split.n_test, generator=g)[:n]
    x = split.x_test[idx].to(device)
    y = split.y_test[idx].numpy() if split.y_test is not None else np.zeros(len(idx))
    node_model = cast(Any, model)  # a ContinuousDepthModel: node.t_span, trajectory()
    s0, s1 = node_model.node.t_span
    ts = torch.linspace(s0, s1, 41, dtype=torch.float64, device=device)
    traj = node_model.trajectory(x, ts)  # [T, B, ...]
    traj = traj.reshape(traj.shape[0], traj.shape[1], -1).cpu().numpy()
    d = traj.shape[-1]
    if d == 2:
        proj, label = traj, ("z1", "z2")
    else:  # project the hidden state on its two main directions
        flat = traj.reshape(-1, d)
        mean = flat.mean(axis=0)
        _, _, vt = np.linalg.svd(flat - mean, full_matrices=False)
        proj, label = (traj - mean) @ vt[:2].T, ("PC 1", "PC 2")
    colors = plt.get_cmap("RdBu_r")(np.where(y > 0, 0.9, 0.1))
    for b in range(proj.shape[1]):
        ax.plot(proj[:, b, 0], proj[:, b, 1], color=colors[b], lw=0.8, alpha=0.8)
        ax.plot(proj[0, b, 0], proj[0, b, 1], "o", color=colors[b], ms=2.5)
        ax.plot(proj[-1, b, 0], proj[-1, b, 1], "s", color=colors[b], ms=3.5,
                markeredgecolor="k", markeredgewidth=0.3)
    ax.set_xlabel(label[0])
    ax.set_ylabel(label[1])
    what = "state" if d == 2 else f"{d}-D state, projected"
    ax.set_title(f"{len(idx)} test trajectories ({what})", fontsize=10)


def plot_density(model: nn.Module, split: Split, path: str | Path, *, seed: int = 0,
                 n_samples: int = 4000, resolution: int = 120) -> None:
    """Data histogram, learned density ``exp(log_prob)`` on a grid, and model samples,
    on shared axes."""
    device = _model_device(model)
    was_training = model.training
    model.eval()
    try:
        data = split.x_test.numpy()
        gx, gy, pts = _grid(np.concatenate([data, split.x_train[:5000].numpy()]),
                            n=resolution, margin=0.1)
        grid = torch.as_tensor(pts, dtype=split.x_test.dtype, device=device)
        g = torch.Generator(device=device).manual_seed(seed)
        cnf = cast(Any, model)  # a CNFModel: log_prob(), sample()
        logp = _batched(lambda xb: cnf.log_prob(xb), grid, batch=2048).cpu().numpy()
        with torch.no_grad():
            samples = cnf.sample(n_samples, generator=g).cpu().numpy()
    finally:
        model.train(was_training)
    extent = [gx.min(), gx.max(), gy.min(), gy.max()]
    bins = [np.linspace(extent[0], extent[1], resolution // 2 + 1),
            np.linspace(extent[2], extent[3], resolution // 2 + 1)]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.8))
    axes[0].hist2d(data[:, 0], data[:, 1], bins=bins, cmap="viridis")
    axes[0].set_title(f"data (test, {len(data)} points)")
    density = np.exp(logp - np.max(logp)).reshape(gx.shape)
    axes[1].imshow(density, origin="lower", extent=extent, cmap="viridis", aspect="auto")
    axes[1].set_title("learned density exp(log p(x))")
    axes[2].hist2d(samples[:, 0], samples[:, 1], bins=bins, cmap="viridis")
    axes[2].set_title(f"model samples ({n_samples})")
    for ax in axes:
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[2], extent[3])
        ax.set_aspect("equal")
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)
    plt.close(fig)


def is_png(path: str | Path) -> bool:
    """Whether ``path`` starts with the PNG signature and decodes as an image."""
    path = Path(path)
    with open(path, "rb") as f:
        if f.read(8) != b"\x89PNG\r\n\x1a\n":
            return False
    try:
        image = plt.imread(path)
    except (OSError, ValueError, SyntaxError):
        return False
    return image.ndim == 3 and image.shape[0] > 0 and image.shape[1] > 0 and \
        math.isfinite(float(image.mean()))


# --------------------------------------------------------------------------- hypersolvers


def plot_fitting_curve(loss: list[float], val_loss: list[Any], path: str | Path,
                       title: str = "") -> None:
    """A hypersolver's residual-fitting loss per iteration (raw and smoothed) and its
    validation loss."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    it = np.arange(1, len(loss) + 1, dtype=float)
    v = np.asarray(loss, dtype=float)
    ax.plot(it, v, color="C0", alpha=0.25, lw=0.8)
    window = max(1, len(loss) // 50)
    ax.plot(it, _smooth(v, window), color="C0", lw=1.5, label=f"train (mean of {window})")
    if val_loss:
        vi, vv = zip(*val_loss)
        ax.plot(vi, vv, "o-", color="C3", ms=4, lw=1.2, label="validation")
    ax.set_xlabel("iteration")
    ax.set_ylabel("residual loss  mean ||R - g||")
    ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="best", fontsize=8)
    ax.set_title(f"residual fitting: {title}" if title else "residual fitting")
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)
    plt.close(fig)


def plot_pareto(rows: list[dict[str, Any]], front: list[int], cost: str, error: str,
                path: str | Path, *, xlabel: str, ylabel: str, log_y: bool = True,
                title: str = "") -> None:
    """One line per method (``rows[i]["method"]``) of ``error`` against ``cost``, dopri5
    as stars, and the Pareto front (row indices ``front``) as a dashed line. Accuracy
    losses (fractions) are shown in percent."""
    scale = 100.0 if error == "accuracy_loss" else 1.0
    fig, ax = plt.subplots(figsize=(7.5, 5))
    methods: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        methods.setdefault(r["method"], []).append(r)
    markers = iter("osD^vP<>")
    for name, group in methods.items():
        pts = [(r[cost], r[error] * scale) for r in group if r[error] is not None]
        if log_y:
            pts = [(c, e) for c, e in pts if e > 0]
        if not pts:
            continue
        pts.sort()
        xs, ys = zip(*pts)
        if name == "dopri5":
            ax.plot(xs, ys, "*", color="k", ms=12, label="dopri5 (tolerances)")
        else:
            hyper = name.startswith("hyper")
            ax.plot(xs, ys, marker="*" if hyper else next(markers, "o"), lw=2.2 if hyper
                    else 1.2, ms=9 if hyper else 5, label=name)
    fpts = sorted((rows[i][cost], rows[i][error] * scale) for i in front
                  if rows[i][error] is not None and (not log_y or rows[i][error] > 0))
    if fpts:
        fx, fy = zip(*fpts)
        ax.plot(fx, fy, "--", color="0.3", lw=1.0, label="Pareto front")
    ax.set_xscale("log")
    if log_y:
        ax.set_yscale("log")
    else:
        ax.axhline(0.1, color="C3", lw=0.8, ls=":", label="0.1% loss")
        ax.set_yscale("symlog", linthresh=0.1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="best", fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)
    plt.close(fig)
