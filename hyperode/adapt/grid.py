"""Grid search over training solver settings (Ott et al., ICLR 2021, Fig. 4, Table 1).

Train a classification task once per training solver setting and seed, then evaluate
each trained model with ``solver_independence_report`` (the training solver and the
more accurate test solvers of the paper):

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

    from hyperode.adapt import run_grid
    res = run_grid("spheres", "euler", steps=[1, 2, 4, 8, 16, 32], seeds=[0, 1],
                   iterations=1500, out="runs/grid-euler")
    res.critical["0.1"]["critical"]      # n_c at threshold 0.1
    print(res.table())

``hyperode grid`` is the command-line front end. A results folder holds
``config.json`` (the grid), ``results.json`` (every run's figures and report rows, the
per-setting summary, the critical values, versions), ``grid.md`` (the table) and
``grid.png`` (test accuracy against steps or tolerance: the training method's points
dark, the other test methods' light). NFE per iteration is the forward NFE of the
training solves (backpropagation through the solver re-evaluates nothing: backward 0;
with the adjoint the backward NFE is reported too).
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..nn import SolverConfig
from .report import METHOD_COLOURS, STEP_FACTORS, TOL_FACTORS, solver_independence_report

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
    """What ``run_grid`` returns (and ``results.json`` holds).

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


def _label(kind: str, value: float) -> str:
    return f"{int(value)}" if kind == "steps" else f"{value:.0e}"


def _mean_std(xs: Sequence[float]) -> tuple[float, float]:
    a = np.asarray(xs, dtype=float)
    return float(a.mean()), (float(a.std(ddof=1)) if len(a) > 1 else 0.0)


def _drops(rows: list[dict[str, Any]]) -> dict[str, float]:
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


def _summarise(config: dict[str, Any], runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
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
                             "valid": {_label(kind, v): ok for v, ok in zip(values, valid,
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
    accurate). Raises ``ValueError`` naming the argument."""
    if method in FIXED_METHODS:
        if tolerances is not None:
            raise ValueError(f"tolerances: apply to adaptive solvers "
                             f"({', '.join(ADAPTIVE_METHODS)}), got method {method!r}")
        values = list(DEFAULT_STEPS if steps is None else steps)
        for n in values:
            if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
                raise ValueError(f"steps: must be integers >= 1, got {n!r}")
        if not values or len(set(values)) != len(values):
            raise ValueError(f"steps: need distinct step counts, got {values!r}")
        return "steps", [int(n) for n in sorted(values)]
    if method in ADAPTIVE_METHODS:
        if steps is not None:
            raise ValueError(f"steps: apply to fixed-step solvers ({', '.join(FIXED_METHODS)}),"
                             f" got method {method!r}")
        values = list(DEFAULT_TOLERANCES if tolerances is None else tolerances)
        for t in values:
            if isinstance(t, bool) or not isinstance(t, (int, float)) or not (
                    0 < t < 1 and math.isfinite(t)):
                raise ValueError(f"tolerances: must be numbers in (0, 1), got {t!r}")
        if not values or len(set(values)) != len(values):
            raise ValueError(f"tolerances: need distinct tolerances, got {values!r}")
        return "tolerance", [float(t) for t in sorted(values, reverse=True)]
    raise ValueError(f"method: must be one of {', '.join(FIXED_METHODS + ADAPTIVE_METHODS)}, "
                     f"got {method!r}")


def run_grid(task: str = "spheres", method: str = "euler", *,
             steps: Sequence[int] | None = None, tolerances: Sequence[float] | None = None,
             seeds: Sequence[int] = (0,), iterations: int | None = None,
             threshold: float = 0.1, thresholds: Sequence[float] = (),
             train_options: dict[str, Any] | None = None,
             step_factors: Sequence[float] = STEP_FACTORS,
             tol_factors: Sequence[float] = TOL_FACTORS,
             out: str | Path | None = None, keep_runs: bool = False,
             log: Callable[[str], None] | None = print,
             on_run: Callable[[Any, Any, SolverConfig], dict[str, Any]] | None = None,
             ) -> GridResult:
    """Train ``task`` at every grid setting and seed and report solver independence.

    Args:
        task: a classification task (``spheres``, ``xor``, ``digits``, ``mnist``,
            ``cifar10``).
        method: the training solver: euler, midpoint, rk4 (grid over ``steps``) or
            fehlberg2, dopri5 (grid over ``tolerances``, ``rtol = atol``).
        steps, tolerances: the grid (defaults ``DEFAULT_STEPS`` / ``DEFAULT_TOLERANCES``).
        seeds: training seeds; validity needs every seed.
        iterations: training iterations (default: the task's preset).
        threshold: the accuracy loss that makes a setting invalid; ``thresholds``:
            further thresholds to report critical values for.
        train_options: further ``TrainConfig`` fields (``dim``, ``model``, ``lr``,
            ``batch_size``, ``n_train``, ``device``, ...); not the solver, seed or out.
        step_factors, tol_factors: the report's test-solver factors.
        out: results folder (``config.json``, ``results.json``, ``grid.md``,
            ``grid.png``); nothing is written when ``None``.
        keep_runs: keep every training run folder under ``out/runs`` (default: train in
            a temporary folder).
        log: called with one line per finished run (``None``: silent).
        on_run: called as ``on_run(model, split, train_solver)`` after each run's report;
            the dict it returns is stored as the run's ``extra`` (e.g. accuracy under a
            reference solver).

    Raises:
        ValueError / ``ConfigError``: a bad argument, naming it (every run's
            configuration is validated before the first one trains).
    """
    import torch

    from ..experiments import TrainConfig, build_solver, resolve_config, train
    from ..experiments.runs import atomic_write_json, remove_stale_temp_files
    from ..experiments.tasks import CLASSIFICATION, PRESETS, load_split
    from ..experiments.train import versions

    kind, values = grid_settings(method, steps, tolerances)
    seeds = list(seeds)
    if not seeds or len(set(seeds)) != len(seeds) or any(
            isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
        raise ValueError(f"seeds: need distinct integers >= 0, got {seeds!r}")
    all_thresholds = list(dict.fromkeys([threshold, *thresholds]))
    for thr in all_thresholds:
        if isinstance(thr, bool) or not isinstance(thr, (int, float)) or not 0 <= thr < 1:
            raise ValueError(f"threshold: must lie in [0, 1), got {thr!r}")
    options = dict(train_options or {})
    reserved = {"method", "step_size", "num_steps", "rtol", "atol", "seed", "out", "resume",
                "iterations", "task"} & set(options)
    if reserved:
        raise ValueError(f"train_options: {sorted(reserved)} are set by the grid itself")
    if task in PRESETS and PRESETS[task].kind != CLASSIFICATION:
        raise ValueError(f"task: the grid needs a classification task (accuracy), got "
                         f"{task!r}")
    if keep_runs and out is None:
        raise ValueError("keep_runs: needs out (the folder the runs are kept in)")
    out_dir = None if out is None else Path(out)
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"out: {str(out_dir)!r} exists and is not a folder")
    if out_dir is not None and (out_dir / RESULTS_FILE).exists():
        raise ValueError(f"out: {str(out_dir)!r} already holds a grid result "
                         f"({RESULTS_FILE}); choose another folder")

    def config_of(value: float, seed: int) -> TrainConfig:
        solver = ({"num_steps": int(value)} if kind == "steps"
                  else {"rtol": float(value), "atol": float(value)})
        base = {"quiet": True, "plots": False, "checkpoint_every": 10**9, "threads": 1}
        base.update(options)
        return TrainConfig(task=task, method=method, seed=seed, iterations=iterations,
                           **solver, **base)

    # validate every run before the first trains; the test split is evaluated once, at
    # the end of each run (the report evaluates it again with every solver)
    configs = {(v, s): resolve_config(config_of(v, s)) for v in values for s in seeds}
    configs = {k: c.replace(eval_every=c.iterations) for k, c in configs.items()}
    first = configs[(values[0], seeds[0])]
    split = load_split(first)
    config: dict[str, Any] = {
        "task": task, "method": method, "kind": kind, "values": values, "seeds": seeds,
        "iterations": first.iterations, "threshold": threshold,
        "thresholds": all_thresholds, "step_factors": list(step_factors),
        "tol_factors": list(tol_factors), "train_options": options,
        "train_config": {k: v for k, v in first.to_dict().items()
                         if k not in ("seed", "out", "num_steps", "rtol", "atol")},
    }
    if out_dir is not None:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ValueError(f"out: cannot create {str(out_dir)!r} ({e.strerror or e})") \
                from None
        remove_stale_temp_files(out_dir, (CONFIG_FILE, RESULTS_FILE))
        atomic_write_json(out_dir / CONFIG_FILE, config)

    runs: list[dict[str, Any]] = []
    threads = torch.get_num_threads()
    try:
        for value in values:
            for seed in seeds:
                cfg = configs[(value, seed)]
                runs.append(_one_run(cfg, value, seed, kind, split, threshold, step_factors,
                                     tol_factors, out_dir if keep_runs else None, train,
                                     build_solver, on_run))
                r = runs[-1]
                if log is not None:
                    log(f"grid {method} {_label(kind, value)} seed={seed}: acc "
                        f"{r['test_accuracy']:.3f}, worst drop {r['max_drop']['all']:+.3f}, "
                        f"NFE/iter {r['nfe_forward_per_iter']:.1f}, "
                        f"{r['cpu_s_train']:.1f} s")
    finally:
        torch.set_num_threads(threads)
    config["span"] = runs[0]["span"] if runs else 1.0
    summary = _summarise(config, runs)
    critical = {str(thr): critical_summary(kind, summary, runs, thr) for thr in all_thresholds}
    result = GridResult(config=config, runs=runs, summary=summary, critical=critical,
                        out=out_dir, extra={"versions": versions(),
                                            "cpu_s_total": sum(r["cpu_s_train"]
                                                               + r["cpu_s_report"]
                                                               for r in runs)})
    if out_dir is not None:
        atomic_write_json(out_dir / CONFIG_FILE, config)
        result.extra["plot"] = plot_grid(result, out_dir / PLOT_FILE).name
        atomic_write_json(out_dir / RESULTS_FILE, result.to_dict())
        (out_dir / TABLE_FILE).write_text(result.table() + "\n")
    return result


def _one_run(cfg: Any, value: float, seed: int, kind: str, split: Any, threshold: float,
             step_factors: Sequence[float], tol_factors: Sequence[float],
             keep_in: Path | None, train: Callable[..., Any],
             build_solver: Callable[[Any], SolverConfig],
             on_run: Callable[..., dict[str, Any]] | None) -> dict[str, Any]:
    """Train one grid point and evaluate it with the report."""
    from ..experiments.odes import neural_odes
    from ..experiments.train import TrainingDivergedError

    t0 = time.process_time()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) if keep_in is None else keep_in / "runs"
        run_dir = root / f"{cfg.method}-{_label(kind, value)}-seed{seed}"
        try:
            result = train(cfg.replace(out=str(run_dir)), split=split)
        except TrainingDivergedError as e:
            kept = "" if keep_in else " (that run folder was temporary: --keep-runs keeps it)"
            raise TrainingDivergedError(
                f"grid run {cfg.method} {_label(kind, value)} seed={seed}: {e}{kept}",
                iteration=e.iteration, checkpoint=e.checkpoint if keep_in else None) from e
    cpu_train = time.process_time() - t0
    solver = build_solver(cfg)
    t0 = time.process_time()
    rep = solver_independence_report(result.model, split, solver, threshold=threshold,
                                     step_factors=step_factors, tol_factors=tol_factors,
                                     batch_size=cfg.eval_batch_size)
    s0, s1 = neural_odes(result.model)[0].t_span
    nfe = result.results["nfe"]
    cpu_report = time.process_time() - t0
    extra = None if on_run is None else on_run(result.model, split, solver)
    return {
        "value": value, "seed": seed, "solver": solver.describe(),
        "test_accuracy": rep.train_accuracy,
        "final_test_accuracy_logged": result.results["final"].get("test_accuracy"),
        "nfe_forward_per_iter": nfe["forward_mean"],
        "nfe_backward_per_iter": nfe["backward_mean"],
        "eval_nfe": rep.rows[0]["nfe"], "eval_steps": rep.rows[0]["steps"],
        "max_gap": rep.max_gap, "max_drop": _drops(rep.rows), "rows": rep.rows,
        "span": abs(s1 - s0),
        "cpu_s_train": cpu_train, "cpu_s_report": cpu_report,
        "run_dir": str(run_dir) if keep_in is not None else None, "extra": extra,
    }


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
        label = _label(kind, s["value"])
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
        crit = _label(kind, c["critical"])
        last = "-" if c["last_invalid"] is None else _label(kind, c["last_invalid"])
        best = c["best_valid"]
        lines.append(f"- threshold {key}: {name} = **{crit}** (last invalid {last}); "
                     f"accuracy there {100 * c['acc_at_critical'][0]:.1f} ± "
                     f"{100 * c['acc_at_critical'][1]:.1f}%, NFE/iter "
                     f"{c['nfe_at_critical']:.1f}; best valid {_label(kind, best['value'])}: "
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
                   label=f"critical ({cfg['threshold']:g}): {_label(kind, crit)}")
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
