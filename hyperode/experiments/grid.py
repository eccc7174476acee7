"""The grid-search runner (Ott et al., ICLR 2021, Fig. 4, Table 1): train a
classification task at every training solver setting and seed, report each model's
solver independence and the critical step count / tolerance.

The rules and the result type (validating a grid, critical values, the summary, the
table and the plot) are library code in ``hyperode.adapt.grid``; this module trains.
``hyperode grid`` is the command-line front end.

    from hyperode.experiments import run_grid
    res = run_grid("spheres", "euler", steps=[1, 2, 4, 8, 16, 32], seeds=[0, 1],
                   iterations=1500, out="runs/grid-euler")
    res.critical["0.1"]["critical"]      # n_c at threshold 0.1
    print(res.table())
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch

from ..adapt.grid import (
    CONFIG_FILE,
    PLOT_FILE,
    RESULTS_FILE,
    TABLE_FILE,
    GridResult,
    accuracy_drops,
    critical_summary,
    grid_settings,
    plot_grid,
    setting_label,
    summarise_runs,
)
from ..adapt.report import STEP_FACTORS, TOL_FACTORS, solver_independence_report
from ..data import Split
from ..errors import ConfigError
from ..nn import SolverConfig
from ..nn.odes import neural_odes
from .config import TrainConfig, build_solver, resolve_config
from .runs import atomic_write_json, remove_stale_temp_files
from .tasks import CLASSIFICATION, TASKS, load_split
from .train import TrainingDivergedError, train, versions

#: ``TrainConfig`` fields the grid sets itself (not allowed in ``train_options``).
GRID_FIELDS = frozenset({"method", "step_size", "num_steps", "rtol", "atol", "seed", "out",
                         "resume", "iterations", "task"})


@dataclass(frozen=True)
class _Plan:
    """A validated grid: what to train and where to write."""

    task: str
    method: str
    kind: str
    values: list[float]
    seeds: list[int]
    thresholds: list[float]
    options: dict[str, Any]
    out: Path | None
    keep_runs: bool


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
        steps, tolerances: the grid (defaults ``DEFAULT_STEPS`` / ``DEFAULT_TOLERANCES``
            of ``hyperode.adapt.grid``).
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
    plan = _plan(task, method, steps, tolerances, seeds, threshold, thresholds,
                 train_options, out, keep_runs)
    # validate every run before the first trains
    configs = {(v, s): _run_config(plan, iterations, v, s) for v in plan.values
               for s in plan.seeds}
    first = configs[(plan.values[0], plan.seeds[0])]
    split = load_split(first)
    config = _grid_record(plan, first, threshold, step_factors, tol_factors)
    if plan.out is not None:
        _start_folder(plan.out, config)
    runs = _train_all(plan, configs, split, threshold, step_factors, tol_factors, log, on_run)
    result = _result(plan, config, runs, threshold)
    if plan.out is not None:
        _write_results(plan.out, result)
    return result


# --------------------------------------------------------------------------- validation


def _plan(task: str, method: str, steps: Sequence[int] | None,
          tolerances: Sequence[float] | None, seeds: Sequence[int], threshold: float,
          thresholds: Sequence[float], train_options: dict[str, Any] | None,
          out: str | Path | None, keep_runs: bool) -> _Plan:
    """Check the grid's own arguments (each error names its argument)."""
    kind, values = grid_settings(method, steps, tolerances)
    seeds = list(seeds)
    if not seeds or len(set(seeds)) != len(seeds) or any(
            isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
        raise ConfigError("seeds", f"need distinct integers >= 0, got {seeds!r}")
    all_thresholds = list(dict.fromkeys([threshold, *thresholds]))
    for thr in all_thresholds:
        if isinstance(thr, bool) or not isinstance(thr, (int, float)) or not 0 <= thr < 1:
            raise ConfigError("threshold", f"must lie in [0, 1), got {thr!r}")
    options = dict(train_options or {})
    reserved = GRID_FIELDS & set(options)
    if reserved:
        raise ConfigError("train_options", f"{sorted(reserved)} are set by the grid itself")
    if task in TASKS and TASKS[task].kind != CLASSIFICATION:
        raise ConfigError("task", f"the grid needs a classification task (accuracy), got "
                         f"{task!r}")
    if keep_runs and out is None:
        raise ConfigError("keep_runs", "needs out (the folder the runs are kept in)")
    out_dir = None if out is None else Path(out)
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise ConfigError("out", f"{str(out_dir)!r} exists and is not a folder")
    if out_dir is not None and (out_dir / RESULTS_FILE).exists():
        raise ConfigError("out", f"{str(out_dir)!r} already holds a grid result "
                         f"({RESULTS_FILE}); choose another folder")
    return _Plan(task=task, method=method, kind=kind, values=values, seeds=seeds,
                 thresholds=all_thresholds, options=options, out=out_dir,
                 keep_runs=keep_runs)


def _run_config(plan: _Plan, iterations: int | None, value: float, seed: int
                ) -> TrainConfig:
    """The resolved configuration of one grid point. The test split is evaluated once,
    at the end of the run (the report evaluates it again with every solver)."""
    solver = ({"num_steps": int(value)} if plan.kind == "steps"
              else {"rtol": float(value), "atol": float(value)})
    base = {"quiet": True, "plots": False, "checkpoint_every": 10**9, "threads": 1}
    base.update(plan.options)
    cfg = resolve_config(TrainConfig(task=plan.task, method=plan.method, seed=seed,
                                     iterations=iterations, **solver, **base))
    return cfg.replace(eval_every=cfg.iterations)


def _grid_record(plan: _Plan, first: TrainConfig, threshold: float,
                 step_factors: Sequence[float], tol_factors: Sequence[float]
                 ) -> dict[str, Any]:
    """``GridResult.config``: the grid and the settings shared by every run."""
    return {
        "task": plan.task, "method": plan.method, "kind": plan.kind, "values": plan.values,
        "seeds": plan.seeds, "iterations": first.iterations, "threshold": threshold,
        "thresholds": plan.thresholds, "step_factors": list(step_factors),
        "tol_factors": list(tol_factors), "train_options": plan.options,
        "train_config": {k: v for k, v in first.to_dict().items()
                         if k not in ("seed", "out", "num_steps", "rtol", "atol")},
    }


# --------------------------------------------------------------------------- training


def _train_all(plan: _Plan, configs: dict[tuple[float, int], TrainConfig], split: Split,
               threshold: float, step_factors: Sequence[float],
               tol_factors: Sequence[float], log: Callable[[str], None] | None,
               on_run: Callable[..., dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Every grid point in grid order, seeds innermost (torch's thread count restored)."""
    runs: list[dict[str, Any]] = []
    threads = torch.get_num_threads()
    try:
        for value in plan.values:
            for seed in plan.seeds:
                cfg = configs[(value, seed)]
                keep_in = plan.out if plan.keep_runs else None
                t0 = time.process_time()
                model, results, run_dir = _train_point(cfg, plan.kind, value, seed, split,
                                                       keep_in)
                cpu_train = time.process_time() - t0
                r = _evaluate_point(cfg, model, results, split, threshold, step_factors,
                                    tol_factors, on_run)
                r.update(value=value, seed=seed, cpu_s_train=cpu_train,
                         run_dir=str(run_dir) if keep_in is not None else None)
                runs.append(_ordered(r))
                if log is not None:
                    log(f"grid {plan.method} {setting_label(plan.kind, value)} seed={seed}: "
                        f"acc {r['test_accuracy']:.3f}, worst drop "
                        f"{r['max_drop']['all']:+.3f}, NFE/iter "
                        f"{r['nfe_forward_per_iter']:.1f}, {r['cpu_s_train']:.1f} s")
    finally:
        torch.set_num_threads(threads)
    return runs


def _train_point(cfg: TrainConfig, kind: str, value: float, seed: int, split: Split,
                 keep_in: Path | None) -> tuple[Any, dict[str, Any], Path]:
    """Train one grid point (in a temporary folder unless ``keep_in``)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) if keep_in is None else keep_in / "runs"
        run_dir = root / f"{cfg.method}-{setting_label(kind, value)}-seed{seed}"
        try:
            result = train(cfg.replace(out=str(run_dir)), split=split)
        except TrainingDivergedError as e:
            kept = "" if keep_in else " (that run folder was temporary: --keep-runs keeps it)"
            raise TrainingDivergedError(
                f"grid run {cfg.method} {setting_label(kind, value)} seed={seed}: {e}{kept}",
                iteration=e.iteration, checkpoint=e.checkpoint if keep_in else None) from e
    return result.model, result.results, run_dir


def _evaluate_point(cfg: TrainConfig, model: Any, results: dict[str, Any], split: Split,
                    threshold: float, step_factors: Sequence[float],
                    tol_factors: Sequence[float],
                    on_run: Callable[..., dict[str, Any]] | None) -> dict[str, Any]:
    """The solver-independence report of one trained grid point, as its run record."""
    solver = build_solver(cfg)
    t0 = time.process_time()
    rep = solver_independence_report(model, split, solver, threshold=threshold,
                                     step_factors=step_factors, tol_factors=tol_factors,
                                     batch_size=cast(int, cfg.eval_batch_size))
    s0, s1 = neural_odes(model)[0].t_span
    nfe = results["nfe"]
    cpu_report = time.process_time() - t0
    extra = None if on_run is None else on_run(model, split, solver)
    return {
        "solver": solver.describe(),
        "test_accuracy": rep.train_accuracy,
        "final_test_accuracy_logged": results["final"].get("test_accuracy"),
        "nfe_forward_per_iter": nfe["forward_mean"],
        "nfe_backward_per_iter": nfe["backward_mean"],
        "eval_nfe": rep.rows[0]["nfe"], "eval_steps": rep.rows[0]["steps"],
        "max_gap": rep.max_gap, "max_drop": accuracy_drops(rep.rows), "rows": rep.rows,
        "span": abs(s1 - s0), "cpu_s_report": cpu_report, "extra": extra,
    }


#: Key order of a run record in ``results.json``.
_RUN_KEYS = ("value", "seed", "solver", "test_accuracy", "final_test_accuracy_logged",
             "nfe_forward_per_iter", "nfe_backward_per_iter", "eval_nfe", "eval_steps",
             "max_gap", "max_drop", "rows", "span", "cpu_s_train", "cpu_s_report",
             "run_dir", "extra")


def _ordered(record: dict[str, Any]) -> dict[str, Any]:
    return {key: record[key] for key in _RUN_KEYS}


# --------------------------------------------------------------------------- output


def _start_folder(out: Path, config: dict[str, Any]) -> None:
    """Create the results folder and write the grid (``config.json``) before training."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError("out", f"cannot create {str(out)!r} ({e.strerror or e})") from None
    remove_stale_temp_files(out, (CONFIG_FILE, RESULTS_FILE))
    atomic_write_json(out / CONFIG_FILE, config)


def _result(plan: _Plan, config: dict[str, Any], runs: list[dict[str, Any]],
            threshold: float) -> GridResult:
    """Summary and critical values of the finished runs."""
    config["span"] = runs[0]["span"] if runs else 1.0
    summary = summarise_runs(config, runs)
    critical = {str(thr): critical_summary(plan.kind, summary, runs, thr)
                for thr in plan.thresholds}
    cpu_total = sum(r["cpu_s_train"] + r["cpu_s_report"] for r in runs)
    return GridResult(config=config, runs=runs, summary=summary, critical=critical,
                      out=plan.out, extra={"versions": versions(), "cpu_s_total": cpu_total})


def _write_results(out: Path, result: GridResult) -> None:
    """``config.json`` (now with the span), ``grid.png``, ``results.json``, ``grid.md``."""
    atomic_write_json(out / CONFIG_FILE, result.config)
    result.extra["plot"] = plot_grid(result, out / PLOT_FILE).name
    atomic_write_json(out / RESULTS_FILE, result.to_dict())
    (out / TABLE_FILE).write_text(result.table() + "\n")
