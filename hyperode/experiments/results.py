"""What a finished training session writes besides its checkpoint: the figures of
``results.json``, the PNG plots and the summary printed at the end."""

from __future__ import annotations

import platform
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import __version__
from ..data import Split
from ..nn import SolverConfig
from ..nn.odes import solver_to_dict
from . import runs
from .config import TrainConfig
from .tasks import CLASSIFICATION, DENSITY


def versions() -> dict[str, str]:
    """Versions of hyperode and the libraries a result depends on."""
    return {"hyperode": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "platform": platform.platform()}


def run_results(*, cfg: TrainConfig, kind: str, model: nn.Module, custom_model: bool,
                status: str, iteration: int, batches_per_epoch: int,
                eval_metrics: dict[str, Any], records: list[dict[str, Any]],
                initial_solver: SolverConfig, final_solver: SolverConfig | None,
                wall_time: float, train_time: float, device: torch.device, world_size: int,
                split: Split, resumed_from: int | None) -> dict[str, Any]:
    """The contents of ``results.json`` (without ``plots``) from the session's state and
    the run's ``metrics.jsonl`` ``records``."""
    tail = records[-min(len(records), 50):]
    train_keys = ("loss", "accuracy") if kind == CLASSIFICATION else \
        ("loss", "nll", "bits_per_dim")
    final = {("iteration" if k == "iteration" else f"test_{k}"): v
             for k, v in eval_metrics.items()}
    evals = [r for r in records if "test_loss" in r]
    best: dict[str, Any] = {}
    if evals:
        key, pick = (("test_accuracy", max) if kind == CLASSIFICATION else ("test_nll", min))
        top = pick(evals, key=lambda r: r[key])
        best = {key: top[key], "iteration": top["iteration"]}
    return {
        "task": cfg.task, "kind": kind, "model": "custom" if custom_model else cfg.model,
        "status": status, "iterations": iteration, "epochs": iteration / batches_per_epoch,
        "final": final, "best": best,
        "train_last_50": {k: float(np.mean([r[k] for r in tail])) for k in train_keys}
        if tail else {},
        "nfe": {
            "forward_mean": float(np.mean([r["nfe_forward"] for r in records]))
            if records else 0.0,
            "backward_mean": float(np.mean([r["nfe_backward"] for r in records]))
            if records else 0.0,
            "eval_forward_per_batch": final.get("test_nfe"),
        },
        "solver": {"initial": solver_to_dict(initial_solver),
                   "final": solver_to_dict(final_solver) if final_solver else None},
        "wall_time_s": wall_time, "train_time_s": train_time,
        "seed": cfg.seed, "data_seed": cfg.data_seed,
        "device": str(device), "world_size": world_size,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "data": {"n_train": split.n_train, "n_test": split.n_test,
                 "input_shape": list(split.input_shape), "num_classes": split.num_classes},
        "resumed_from": resumed_from,
        "versions": versions(), "config": cfg.to_dict(),
        "files": {"config": runs.CONFIG_FILE, "metrics": runs.METRICS_FILE,
                  "checkpoint": runs.CHECKPOINT_FILE, "weights": runs.WEIGHTS_FILE},
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def draw_plots(run_dir: Path, records: list[dict[str, Any]], kind: str, model: nn.Module,
               split: Split, seed: int) -> tuple[list[str], list[str]]:
    """The run's PNGs (training curves; decision regions of 2-D classification, the
    density of a 2-D CNF): ``(files made, errors)``. A plot that fails is reported, not
    raised: it must not cost the run its results."""
    from . import plots  # matplotlib: loaded only when plots are drawn

    features = int(np.prod(split.input_shape))
    jobs = [("training_curves.png", lambda p: plots.plot_training_curves(records, p, kind))]
    if kind == CLASSIFICATION and split.input_shape[-1] == 2 and features == 2:
        jobs.append(("decision_regions.png",
                     lambda p: plots.plot_decision_regions(model, split, p)))
    if kind == DENSITY and features == 2:
        jobs.append(("density.png", lambda p: plots.plot_density(model, split, p, seed=seed)))
    return draw_each(run_dir, jobs)


def draw_each(run_dir: Path, jobs: list[tuple[str, Callable[[Path], Any]]]
              ) -> tuple[list[str], list[str]]:
    """Run each ``(file name, draw(path))`` job into ``run_dir`` with the global RNG state
    saved and restored: ``(files made, errors)``. A plot that fails is warned about and
    reported, not raised: it must not cost the run its results."""
    made, errors = [], []
    for name, job in jobs:
        try:
            with torch.random.fork_rng(devices=[]):
                job(run_dir / name)
            made.append(name)
        except Exception as e:
            warnings.warn(f"could not draw {name}: {type(e).__name__}: {e}", stacklevel=3)
            errors.append(f"{name}: {type(e).__name__}: {e}")
    return made, errors


def print_summary(results: dict[str, Any], run_dir: Path) -> None:
    final = results.get("final", {})
    figures = ", ".join(f"{k} {v:.4g}" for k, v in final.items()
                        if isinstance(v, float))
    print(f"hyperode: {results['status']} after {results['iterations']} iterations in "
          f"{results['wall_time_s']:.1f} s; {figures}")
    print(f"  results in {run_dir / runs.RESULTS_FILE}")
