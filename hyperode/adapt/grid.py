"""Grid search over training solver settings (Ott et al., ICLR 2021, Fig. 4, Table 1):
the rules and the results, without the training.

The runner (``hyperode.experiments.run_grid``, the ``hyperode grid`` command) trains a
classification task once per training solver setting and seed, then evaluates each
trained model with ``solver_independence_report`` (the training solver and the more
accurate test solvers of the paper):

- fixed-step training solvers (euler, midpoint, rk4): a grid of step counts over the
  depth span; test solvers at the training step times 0.5, 0.75, 1, 1.5, 2;
- adaptive training solvers (fehlberg2, dopri5): a grid of tolerances
  (``rtol = atol = tol``); test solvers at the tolerance times 0.1, 1, 10.

A setting is *valid* at a threshold when, for every seed, no more accurate test solver
loses more than ``threshold`` test accuracy against the training solver (a gain does
not count against it). The *critical step count* ``n_c`` is the smallest grid count
from which every larger grid count is valid; the *critical tolerance* is the largest
grid tolerance from which every tighter one is valid. A valid setting followed by an
invalid one does not count: validity must hold from the critical value on.

    from hyperode.experiments import run_grid
    res = run_grid("spheres", "euler", steps=[1, 2, 4, 8, 16, 32], seeds=[0, 1],
                   iterations=1500, out="runs/grid-euler")
    res.critical["0.1"]["critical"]      # n_c at threshold 0.1
    print(res.table())

This module holds what needs no training: validating a grid (``grid_settings``), the
per-setting summary and critical values (``critical_steps``, ``critical_tolerance``,
``critical_summary``), ``GridResult`` with its table and ``plot_grid``. A results folder
holds
``config.json`` (the grid), ``results.json`` (every run's figures and report rows, the
per-setting summary, the critical values, versions), ``grid.md`` (the table) and
``grid.png`` (test accuracy against steps or tolerance: the training method's points
dark, the other test methods' light). NFE per iteration is the forward NFE of the
training solves (backpropagation through the solver re-evaluates nothing: backward 0;
with the adjoint the backward NFE is reported too).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from .report import METHOD_COLOURS

FIXED_METHODS: tuple[str, ...] = ("euler", "midpoint", "rk4")
ADAPTIVE_METHODS: tuple[str, ...] = ("fehlberg2", "dopri5")
#: Defaults of ``hyperode grid`` when no grid is given.
DEFAULT_STEPS: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
DEFAULT_TOLERANCES: tuple[float, ...] = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5)
RESULTS_FILE, CONFIG_FILE, TABLE_FILE, PLOT_FILE = (
    "results.json", "config.json", "grid.md", "grid.png")


# --------------------------------------------------------------------------- critical values


def _critical_index(valid: Sequence[bool]) -> int | None:
    """Index of the first entry from which every entry is valid (``None`` if the last
    is invalid)."""
    idx: int | None = None
    for i in range(len(valid) - 1, -1, -1):
        if not valid[i]:
            break
        idx = i
    return idx


def _check_pairs(name: str, values: Sequence[Any], valid: Sequence[bool]) -> None:
    if len(values) != len(valid):
        raise ValueError(f"{name}: values and valid must have the same length, got "
                         f"{len(values)} and {len(valid)}")
    if len(set(values)) != len(values):
        raise ValueError(f"{name}: values must be distinct, got {list(values)!r}")


def critical_steps(counts: Sequence[int], valid: Sequence[bool]) -> int | None:
    """The smallest step count from which every larger count is valid.

    Args:
        counts: the grid's step counts (any order, distinct, >= 1).
        valid: whether each count is valid.

    Returns:
        The critical count, or ``None`` when the largest count is invalid. Example:
        counts ``1, 2, 4, 8, 16`` with validity ``F, T, F, T, T`` give 8 (2 is valid,
        but 4 is not).
    """
    _check_pairs("critical_steps", counts, valid)
    for n in counts:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"critical_steps: counts must be integers >= 1, got {n!r}")
    order = sorted(range(len(counts)), key=lambda i: counts[i])
    idx = _critical_index([bool(valid[i]) for i in order])
    return None if idx is None else int(counts[order[idx]])


def critical_tolerance(tolerances: Sequence[float], valid: Sequence[bool]) -> float | None:
    """The largest tolerance from which every tighter (smaller) tolerance is valid.

    Args:
        tolerances: the grid's tolerances (any order, distinct, finite, > 0).
        valid: whether each tolerance is valid.

    Returns:
        The critical tolerance, or ``None`` when the tightest one is invalid. Example:
        ``1e-1, 1e-2, 1e-3, 1e-4`` with validity ``T, F, T, T`` give ``1e-3``.
    """
    _check_pairs("critical_tolerance", tolerances, valid)
    for t in tolerances:
        if isinstance(t, bool) or not isinstance(t, (int, float, np.floating)) or not (
                t > 0 and math.isfinite(t)):
            raise ValueError(f"critical_tolerance: tolerances must be finite numbers > 0, "
                             f"got {t!r}")
    order = sorted(range(len(tolerances)), key=lambda i: -tolerances[i])
    idx = _critical_index([bool(valid[i]) for i in order])
    return None if idx is None else float(tolerances[order[idx]])


# --------------------------------------------------------------------------- the grid


@dataclass
class GridResult:
    """What ``hyperode.experiments.run_grid`` returns (and ``results.json`` holds).

    Attributes:
        config: the grid (task, method, kind, values, seeds, iterations, thresholds,
            train options).
        runs: one dict per (setting, seed): ``value`` (step count or tolerance),
            ``seed``, ``test_accuracy`` (training solver), ``max_drop`` (largest loss of
            a more accurate test solver, overall and per method), ``max_gap`` (largest
            absolute difference), ``nfe_forward_per_iter``, ``nfe_backward_per_iter``,
            ``eval_nfe`` (training solver, per test batch), ``eval_steps``,
            ``cpu_s_train``, ``cpu_s_report``, ``rows`` (the report's rows).
        summary: one dict per setting, in grid order from least to most accurate:
            mean/std of accuracy and NFE over seeds, ``worst_drop``, and the mean
            accuracy of each test method at the training step / tolerance.
        critical: per threshold (key ``str(threshold)``): ``valid`` per setting,
            ``critical`` (``n_c`` or the critical tolerance, ``None`` if none),
            ``last_invalid`` (the next less accurate grid value), ``next_after`` (the
            next more accurate one), ``acc_at_critical``, ``accs_at_critical`` (per
            seed), ``best_valid``.
        out: the results folder (``None`` when nothing was written).
    """

    config: dict[str, Any]
    runs: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    critical: dict[str, dict[str, Any]]
    out: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """``"steps"`` (fixed-step grid) or ``"tolerance"``."""
        return self.config["kind"]

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config, "runs": self.runs, "summary": self.summary,
                "critical": self.critical, **self.extra}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GridResult:
        """Inverse of ``to_dict`` (e.g. a loaded ``results.json``)."""
        extra = {k: v for k, v in data.items()
                 if k not in ("config", "runs", "summary", "critical")}
        return cls(config=data["config"], runs=data["runs"], summary=data["summary"],
                   critical=data["critical"], extra=extra)

    def table(self) -> str:
        """The per-setting table and the critical values, as Markdown."""
        return grid_table(self)


def setting_label(kind: str, value: float) -> str:
    """How a grid value is written in tables and keys: ``8`` (steps), ``1e-03`` (tol)."""
    return f"{int(value)}" if kind == "steps" else f"{value:.0e}"


def _mean_std(xs: Sequence[float]) -> tuple[float, float]:
    a = np.asarray(xs, dtype=float)
    return float(a.mean()), (float(a.std(ddof=1)) if len(a) > 1 else 0.0)


def accuracy_drops(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Largest accuracy loss (training solver minus row) over the more accurate rows,
    overall (``all``) and per method; 0 when none loses."""
    acc0 = rows[0]["accuracy"]
    out: dict[str, float] = {"all": 0.0}
    for r in rows:
        if r["more_accurate"]:
            d = acc0 - r["accuracy"]
            out["all"] = max(out["all"], d)
            out[r["method"]] = max(out.get(r["method"], 0.0), d)
    return out


def _at_training_setting(row: dict[str, Any], kind: str, value: float, span: float) -> bool:
    if kind == "steps":
        return row["step"] is not None and math.isclose(row["step"], span / value)
    return row["tol"] is not None and math.isclose(row["tol"], value)


def summarise_runs(config: dict[str, Any], runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One dict per grid setting with runs, in grid order (``GridResult.summary``)."""
    kind, span = config["kind"], config.get("span", 1.0)
    out = []
    for value in config["values"]:
        rs = [r for r in runs if r["value"] == value]
        if not rs:
            continue
        methods = dict.fromkeys(x["method"] for x in rs[0]["rows"])
        by_method = {}
        for m in methods:
            accs = [x["accuracy"] for r in rs for x in r["rows"]
                    if x["method"] == m and _at_training_setting(x, kind, value, span)]
            if accs:
                by_method[m] = float(np.mean(accs))
        acc = _mean_std([r["test_accuracy"] for r in rs])
        nfe = _mean_std([r["nfe_forward_per_iter"] for r in rs])
        out.append({
            "value": value, "seeds": [r["seed"] for r in rs],
            "acc_mean": acc[0], "acc_std": acc[1],
            "worst_drop": max(r["max_drop"]["all"] for r in rs),
            "mean_drop": _mean_std([r["max_drop"]["all"] for r in rs])[0],
            "nfe_forward_per_iter": nfe[0], "nfe_forward_per_iter_std": nfe[1],
            "nfe_backward_per_iter": _mean_std([r["nfe_backward_per_iter"] for r in rs])[0],
            "eval_steps": _mean_std([r["eval_steps"] for r in rs])[0],
            "acc_by_method": by_method,
        })
    return out


def critical_summary(kind: str, summary: list[dict[str, Any]], runs: list[dict[str, Any]],
                     threshold: float) -> dict[str, Any]:
    """Validity of each setting at ``threshold`` and the critical value (see the module
    docstring); ``summary`` in grid order from least to most accurate."""
    values = [s["value"] for s in summary]
    valid = [s["worst_drop"] <= threshold for s in summary]
    crit = (critical_steps(values, valid) if kind == "steps"
            else critical_tolerance(values, valid))
    entry: dict[str, Any] = {"threshold": threshold,
                             "valid": {setting_label(kind, v): ok for v, ok in zip(values, valid,
                                                                           strict=True)},
                             "critical": crit}
    if crit is None:
        return entry
    idx = values.index(crit)
    best = max(summary[idx:], key=lambda s: s["acc_mean"])
    entry.update(
        last_invalid=values[idx - 1] if idx > 0 else None,
        next_after=values[idx + 1] if idx + 1 < len(values) else None,
        acc_at_critical=[summary[idx]["acc_mean"], summary[idx]["acc_std"]],
        accs_at_critical=[r["test_accuracy"] for r in runs if r["value"] == crit],
        nfe_at_critical=summary[idx]["nfe_forward_per_iter"],
        best_valid={"value": best["value"], "acc": [best["acc_mean"], best["acc_std"]],
                    "nfe_forward_per_iter": best["nfe_forward_per_iter"]},
    )
    return entry


def grid_settings(method: str, steps: Sequence[int] | None,
                  tolerances: Sequence[float] | None) -> tuple[str, list[float]]:
    """Validate a grid: ``("steps", counts ascending)`` for a fixed-step method or
    ``("tolerance", tolerances descending)`` for an adaptive one (least to most
    accurate). Raises ``ConfigError`` (a ``ValueError``) naming the argument."""
    if method in FIXED_METHODS:
        if tolerances is not None:
            raise ConfigError("tolerances", f"apply to adaptive solvers "
                             f"({', '.join(ADAPTIVE_METHODS)}), got method {method!r}")
        values = list(DEFAULT_STEPS if steps is None else steps)
        for n in values:
            if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
                raise ConfigError("steps", f"must be integers >= 1, got {n!r}")
        if not values or len(set(values)) != len(values):
            raise ConfigError("steps", f"need distinct step counts, got {values!r}")
        return "steps", [int(n) for n in sorted(values)]
    if method in ADAPTIVE_METHODS:
        if steps is not None:
            raise ConfigError("steps", f"apply to fixed-step solvers ({', '.join(FIXED_METHODS)}),"
                             f" got method {method!r}")
        values = list(DEFAULT_TOLERANCES if tolerances is None else tolerances)
        for t in values:
            if isinstance(t, bool) or not isinstance(t, (int, float)) or not (
                    0 < t < 1 and math.isfinite(t)):
                raise ConfigError("tolerances", f"must be numbers in (0, 1), got {t!r}")
        if not values or len(set(values)) != len(values):
            raise ConfigError("tolerances", f"need distinct tolerances, got {values!r}")
        return "tolerance", [float(t) for t in sorted(values, reverse=True)]
    raise ConfigError("method", f"must be one of {', '.join(FIXED_METHODS + ADAPTIVE_METHODS)}, "
                     f"got {method!r}")


# --------------------------------------------------------------------------- output


def grid_table(result: GridResult) -> str:
    """Markdown: one row per setting, then the critical value per threshold."""
    cfg = result.config
    kind = cfg["kind"]
    head = "steps" if kind == "steps" else "tol"
    others = [m for m in (result.summary[0]["acc_by_method"] if result.summary else {})
              if m != cfg["method"]]
    thr = str(cfg["threshold"])
    lines = [f"Grid: {cfg['task']}, trained with {cfg['method']}, {cfg['iterations']} "
             f"iterations, seeds {cfg['seeds']}; accuracy on the test split.", "",
             f"| {head} | NFE fwd / bwd per iter | acc. ({cfg['method']}, training solver) | "
             + "".join(f"{m} at same {head} | " for m in others)
             + f"worst drop (more accurate, over seeds) | valid ({cfg['threshold']:g}) |",
             "|---|---|---|" + "---|" * len(others) + "---|---|"]
    for s in result.summary:
        label = setting_label(kind, s["value"])
        cells = "".join(f"{100 * s['acc_by_method'][m]:.1f}% | " if m in s["acc_by_method"]
                        else "- | " for m in others)
        ok = result.critical[thr]["valid"][label]
        lines.append(f"| {label} | {s['nfe_forward_per_iter']:.1f} / "
                     f"{s['nfe_backward_per_iter']:.0f} | {100 * s['acc_mean']:.1f} ± "
                     f"{100 * s['acc_std']:.1f}% | {cells}{100 * s['worst_drop']:+.1f} pp | "
                     f"{'yes' if ok else 'no'} |")
    name = "critical step count n_c" if kind == "steps" else "critical tolerance"
    lines += ["", f"{name[0].upper() + name[1:]} (from it on every more accurate grid "
                  f"setting is valid for every seed):", ""]
    for key, c in result.critical.items():
        if c.get("critical") is None:
            lines.append(f"- threshold {key}: none (the most accurate setting is invalid)")
            continue
        crit = setting_label(kind, c["critical"])
        last = "-" if c["last_invalid"] is None else setting_label(kind, c["last_invalid"])
        best = c["best_valid"]
        lines.append(f"- threshold {key}: {name} = **{crit}** (last invalid {last}); "
                     f"accuracy there {100 * c['acc_at_critical'][0]:.1f} ± "
                     f"{100 * c['acc_at_critical'][1]:.1f}%, NFE/iter "
                     f"{c['nfe_at_critical']:.1f}; best valid "
                     f"{setting_label(kind, best['value'])}: "
                     f"{100 * best['acc'][0]:.1f}%")
    return "\n".join(lines)


_MARKERS = {"euler": "o", "midpoint": "x", "rk4": "^", "fehlberg2": "o", "dopri5": "x"}


def plot_grid(result: GridResult, path: str | Path, *, title: str | None = None,
              extra_points: Sequence[tuple[float, float, str]] = ()) -> Path:
    """Test accuracy against the training steps / tolerance (paper Fig. 4).

    Every report row of every run is a point at its run's training setting (slightly
    spread by test factor): the training method's rows dark, the other test methods'
    light; the line is the training solver's mean accuracy over seeds. A dashed line
    marks the critical value at the main threshold. ``extra_points``: ``(x, accuracy,
    label)`` triples drawn as stars (e.g. adapted runs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = result.config
    kind, method = cfg["kind"], cfg["method"]
    factors = cfg["step_factors"] if kind == "steps" else cfg["tol_factors"]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    seen: set[str] = set()
    for r in result.runs:
        x0 = r["value"]
        for row in r["rows"]:
            m = row["method"]
            same = m == method
            f = (row["step"] * x0 / r["span"]) if kind == "steps" else row["tol"] / x0
            k = min(range(len(factors)), key=lambda i: abs(math.log(factors[i] / f)))
            jitter = 2 ** (0.06 * (k - (len(factors) - 1) / 2))
            x = x0 * jitter if kind == "steps" else x0 / jitter
            label = f"test: {m}" + (" (training method)" if same else "")
            ax.plot([x], [row["accuracy"]], _MARKERS.get(m, "s"),
                    color=METHOD_COLOURS.get(m, "tab:gray"), alpha=0.9 if same else 0.3,
                    ms=4 if not row["is_train"] else 6, mfc="none" if not same else None,
                    label=None if label in seen else label)
            seen.add(label)
    xs = [s["value"] for s in result.summary]
    ax.plot(xs, [s["acc_mean"] for s in result.summary], "-", color="k", lw=1.2,
            label="training solver (mean over seeds)")
    crit = result.critical[str(cfg["threshold"])].get("critical")
    if crit is not None:
        ax.axvline(crit, color="k", ls="--", lw=0.8,
                   label=f"critical ({cfg['threshold']:g}): {setting_label(kind, crit)}")
    for i, (x, acc, label) in enumerate(extra_points):
        ax.plot([x], [acc], "k*", ms=10, label=label if i == 0 else None)
    if kind == "steps":
        ax.set_xscale("log", base=2)
        ax.set_xlabel(f"training steps ({method}); test steps x {factors}")
    else:
        ax.set_xscale("log")
        ax.invert_xaxis()
        ax.set_xlabel(f"training tolerance ({method}); test tolerance x {factors}")
    ax.set_ylabel("test accuracy")
    ax.set_title(title or f"{cfg['task']}: trained with {method}, tested with other solvers")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
