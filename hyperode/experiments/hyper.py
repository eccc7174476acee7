"""The hypersolver pipeline: fit a hypersolver to a trained Neural ODE, evaluate it
against the classic solvers and dopri5, and the ``hyperode demo`` that runs it all.

    out = fit_hypersolver("runs/digits", base="euler", steps=10, iterations=1000)
    results = evaluate_hypersolver("runs/digits", out)
    run_demo_pipeline("runs/demo")        # train (cached) -> fit -> evaluate -> plots

A *model folder* is a training run folder (``hyperode train``): ``config.json`` and
``model.safetensors``; the model is rebuilt by the task's builders and its weights
loaded (safetensors: loading cannot run code). The model must be a
``ContinuousDepthModel`` (``x -> output_map(ODESolve(f, input_map(x)))``) without data
control; its Neural ODE's vector field ``f`` is what the hypersolver integrates.

Choices (``docs``: README, "Hypersolvers"):

- Initial conditions ``z0 = input_map(x)`` come from the *training* split only (in
  eval mode: BatchNorm uses its running statistics, whereas the paper's notebook left
  the model in training mode); a fixed slice of it is the fit's validation batch.
  The test split is used only by ``evaluate_hypersolver``.
- ``g`` is a ``ConvHyperNet`` over ``[z, f(z), eps]`` for image states ``[B, C, H, W]``
  and an ``MLPHyperNet`` for every other state (flattened per sample).
- Terminal error is the MAPE (``hyperode.metrics.mape``, mean over elements) of
  ``z(s1)`` against dopri5 at a tight tolerance; accuracy loss is against dopri5 at the
  classifier tolerance 1e-4 (the paper's reference).
- The NFE axis counts evaluations of ``f`` (the paper's axis); ``g``'s evaluations are
  reported separately and enter the MAC axis, which is the honest total cost.
- Wall-clock: every method runs through the same entry point (``hyperode.solve`` and
  the model's output map) on one test batch; ``time_call`` warms up, then takes the
  median of repeated calls.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn

from .. import __version__
from ..hyper import ConvHyperNet, FitConfig, HyperSolver, MLPHyperNet, fit
from ..hyper.solver import resolve_base
from ..metrics import MacCounter, accuracy, accuracy_loss, mape, pareto_indices, time_call
from ..nn import ContinuousDepthModel
from ..odeint import solve
from ..solvers.config import method_kind
from ..solvers.methods import METHODS
from . import runs
from .config import ConfigError, TrainConfig, resolve_config
from .train import train, versions
from .trained import load_run

HYPER_WEIGHTS = "hyper.safetensors"
HYPER_FORMAT = "hyperode.hyper/1"
FIT_CURVE = "fitting_curve.png"
PARETO_PLOTS = {
    "error_vs_nfe": "pareto_error_vs_nfe.png",
    "error_vs_macs": "pareto_error_vs_macs.png",
    "accuracy_loss_vs_nfe": "pareto_accuracy_loss_vs_nfe.png",
}
DEFAULT_METHODS = ("euler", "midpoint", "heun2", "rk4")
DEFAULT_STEPS = (1, 2, 3, 4, 5, 6, 8, 10, 16, 20, 32)
ACCURACY_LOSS_LIMIT = 1e-3
"""The paper's "< 0.1% accuracy loss" against dopri5, as a fraction."""


# ---------------------------------------------------------------------- loading


class LoadedModel:
    """A trained model rebuilt from its run folder, with its data split."""

    def __init__(self, run_dir: Path, cfg: TrainConfig, model: ContinuousDepthModel,
                 split: Any):
        self.run_dir = run_dir
        self.cfg = cfg
        self.model = model
        self.split = split

    @property
    def field(self) -> nn.Module:
        return self.model.node.vector_field

    @property
    def t_span(self) -> tuple[float, float]:
        return cast("tuple[float, float]", tuple(self.model.node.t_span))

    @torch.no_grad()
    def initial_states(self, x: Tensor, batch_size: int = 512) -> Tensor:
        """``input_map(x)`` in eval mode, in batches, without a graph."""
        return torch.cat([self.model.input_map(x[i:i + batch_size])
                          for i in range(0, len(x), batch_size)])


def load_trained_model(run_dir: str | Path, *, device: str = "cpu",
                       argument: str = "model") -> LoadedModel:
    """Rebuild the model of a training run folder and load its weights (eval mode).

    Raises ``ConfigError`` naming ``argument`` when the folder or a file is missing or
    the model is not a ``ContinuousDepthModel`` without data control.
    """
    run = load_run(run_dir, device=device, argument=argument)
    cfg, model, split = run.config, run.model, run.split
    if not isinstance(model, ContinuousDepthModel) or model.data_control:
        raise ConfigError(argument, f"task {cfg.task!r} ({type(model).__name__}) is not a "
                                    f"Neural ODE classifier without data control; "
                                    f"hypersolver fitting supports those")
    for p in model.parameters():
        p.requires_grad_(False)
    return LoadedModel(run.run_dir, cfg, model, split)


def hypernet_spec(z0: Tensor, hidden: Sequence[int] | None = None,
                  kernel_size: int = 3) -> dict[str, Any]:
    """The ``g`` for states like ``z0``: conv for ``[B, C, H, W]`` (hidden widths default
    ``[16]``, ``kernel_size`` x ``kernel_size`` kernels), MLP otherwise (default
    ``[64, 64]``; ``kernel_size`` is ignored)."""
    if z0.ndim == 4:
        return {"kind": "conv", "channels": int(z0.shape[1]),
                "hidden": list(hidden) if hidden else [16], "activation": "prelu",
                "kernel_size": kernel_size}
    return {"kind": "mlp", "state_dim": int(z0[0].numel()),
            "hidden": list(hidden) if hidden else [64, 64], "activation": "prelu"}


def build_hypernet(spec: dict[str, Any]) -> nn.Module:
    if spec["kind"] == "conv":
        return ConvHyperNet(spec["channels"], tuple(spec["hidden"]), spec["activation"],
                            kernel_size=spec.get("kernel_size", 3))
    if spec["kind"] == "mlp":
        return MLPHyperNet(spec["state_dim"], tuple(spec["hidden"]), spec["activation"])
    raise ValueError(f"unknown hypernet kind {spec['kind']!r}")


def load_hypersolver(hyper_dir: str | Path, *, argument: str = "hyper") -> tuple[
        HyperSolver, dict[str, Any]]:
    """The fitted hypersolver of a ``fit_hypersolver`` folder and its ``config.json``."""
    hyper_dir = Path(hyper_dir)
    if not hyper_dir.is_dir():
        raise ConfigError(argument, f"hypersolver folder {str(hyper_dir)!r} does not exist")
    for name in (runs.CONFIG_FILE, HYPER_WEIGHTS):
        if not (hyper_dir / name).is_file():
            raise ConfigError(argument, f"{str(hyper_dir)!r} has no {name}; give a folder "
                                        f"written by hyperode hyper fit")
    config_path = hyper_dir / runs.CONFIG_FILE
    try:
        config = json.loads(config_path.read_text())
    except ValueError as e:
        raise ConfigError(argument, f"{str(config_path)!r} is not valid JSON ({e})") from None
    if not isinstance(config, dict) or config.get("format") != HYPER_FORMAT:
        raise ConfigError(argument, f"{str(config_path)!r} is not a hypersolver "
                                    f"configuration (format {HYPER_FORMAT!r})")
    missing = [k for k in ("base", "net", "steps") if k not in config]
    if missing:
        raise ConfigError(argument, f"{str(config_path)!r} lacks the key(s) "
                                    f"{', '.join(missing)}")
    try:
        g = build_hypernet(config["net"])
        hyper = HyperSolver(config["base"], g)
        _check_fit_steps(config["steps"])
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(argument, f"{str(config_path)!r} does not describe a hypersolver "
                                    f"({type(e).__name__}: {e})") from None
    weights = hyper_dir / HYPER_WEIGHTS
    try:
        runs.load_weights(weights, g)
    except Exception as e:  # a torn file (SafetensorError) or another architecture
        raise ConfigError(argument, f"cannot load {str(weights)!r} into the hypersolver of "
                                    f"{str(config_path)!r} ({type(e).__name__}: "
                                    f"{' '.join(str(e).split())})") from None
    hyper.eval()
    for p in hyper.parameters():
        p.requires_grad_(False)
    return hyper, config


# ---------------------------------------------------------------------- fit


def _check_steps(steps: Any, argument: str = "steps") -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(argument, f"must be an integer >= 1, got {steps!r}")
    return steps


def _check_fit_steps(steps: Any) -> int | list[int]:
    """``steps`` of a fit: one ``K`` or a non-empty list of distinct ``K`` (multi-step-size
    fitting)."""
    if isinstance(steps, int) and not isinstance(steps, bool):
        return _check_steps(steps)
    if isinstance(steps, str) or not isinstance(steps, Sequence) or not steps:
        raise ConfigError("steps", f"must be an integer >= 1 or a non-empty list of them, "
                                   f"got {steps!r}")
    ks = [_check_steps(k) for k in steps]
    if len(set(ks)) != len(ks):
        raise ConfigError("steps", f"step counts must be distinct, got {list(steps)!r}")
    return ks[0] if len(ks) == 1 else sorted(ks)


def summary_steps(fitted: int | Sequence[int]) -> int:
    """The step count a fit is judged at: its ``K``, or the middle ``K`` of a multi-step
    fit (sorted; the lower middle for an even count)."""
    if isinstance(fitted, int):
        return fitted
    ks = sorted(fitted)
    return ks[(len(ks) - 1) // 2]


def _steps_label(steps: int | Sequence[int]) -> str:
    return str(steps) if isinstance(steps, int) else "-".join(str(k) for k in steps)


def _check_base(base: Any) -> str:
    try:
        return resolve_base(base, "hyper fit").name
    except ValueError as e:
        raise ConfigError("base", str(e).removeprefix("hyper fit: base ")) from None


def _train_batches(z0: Tensor, batch_size: int, seed: int) -> Iterator[Tensor]:
    """Endless shuffled batches of ``z0`` (a new permutation every epoch)."""
    gen = torch.Generator().manual_seed(seed)
    while True:
        perm = torch.randperm(len(z0), generator=gen)
        for i in range(0, len(z0) - batch_size + 1, batch_size):
            yield z0[perm[i:i + batch_size]]


def fit_hypersolver(run_dir: str | Path, base: str = "euler",
                    steps: int | Sequence[int] = 10, *,
                    iterations: int = 1000, batch_size: int = 64, lr: float = 1e-3,
                    tol: float = 1e-4, hidden: Sequence[int] | None = None,
                    kernel_size: int = 3, validation_size: int = 256,
                    out: str | Path | None = None, seed: int = 0, device: str = "cpu",
                    progress: bool = True, verbose: bool = True) -> Path:
    """Fit ``g`` of a hypersolver on ``base`` by residual fitting at ``K = steps`` against
    dopri5 at ``tol`` (``hyperode.hyper.fit``, the paper's schedule), on initial states
    ``input_map(x)`` of the model's training split; write the folder ``out`` (default
    ``<run_dir>/hyper-<base>-K<steps>``)::

        config.json        base, steps, g's architecture, the fit's settings, the model
        hyper.safetensors  g's weights
        results.json       loss curve, validation losses, terminal MAPE of the base and
                           the hypersolver at each K on the validation batch, timings
        fitting_curve.png

    ``steps`` may be a list of step counts (multi-step-size fitting: each iteration's
    loss averages the residual losses on every mesh), so that one ``g`` serves several
    ``K``; ``hidden`` and ``kernel_size`` size ``g`` (see ``hypernet_spec``).

    Returns the folder. Raises ``ConfigError`` naming the bad argument.
    """
    steps, base_name, kernel_size = _check_fit_arguments(steps, base, iterations, hidden,
                                                         kernel_size)
    start = time.perf_counter()
    loaded = load_trained_model(run_dir, device=device)
    label = _steps_label(steps)
    out = Path(out) if out is not None else loaded.run_dir / f"hyper-{base_name}-K{label}"
    _make_out(out, (runs.CONFIG_FILE, runs.RESULTS_FILE, HYPER_WEIGHTS))
    runs.seed_everything(seed)
    z_all, z_val, z_fit = _initial_states(loaded, device, validation_size, seed)
    n_val = len(z_val)
    batch_size = min(batch_size, len(z_fit))
    spec = hypernet_spec(z_all, hidden, kernel_size)
    hyper = HyperSolver(base_name, build_hypernet(spec)).to(device)
    fit_cfg = FitConfig(iterations=iterations, t_span=loaded.t_span,
                        num_steps=steps if isinstance(steps, int) else tuple(steps),
                        lr=lr, rtol=tol, atol=tol,
                        validate_every=max(1, iterations // 20))
    config = {"format": HYPER_FORMAT, "model": str(loaded.run_dir), "task": loaded.cfg.task,
              "base": base_name, "steps": steps, "net": spec, "tol": tol,
              "batch_size": batch_size, "validation_size": n_val, "seed": seed,
              "fit": fit_cfg.as_dict(), "initial_states": "input_map(x), training split"}
    runs.atomic_write_json(out / runs.CONFIG_FILE, config)
    if verbose:
        print(f"hyperode: fitting {hyper.name} (K={label}, {iterations} iterations, batch "
              f"{batch_size}) to {loaded.run_dir} against dopri5 at {tol:g}")
    history = fit(hyper, loaded.field, _train_batches(z_fit, batch_size, seed), fit_cfg,
                  validation=z_val, progress=progress)
    hyper.eval()
    runs.save_weights(out / HYPER_WEIGHTS, hyper.g,
                      metadata={"config": json.dumps(config), "hyperode": _version()})
    check = _validation_mape(loaded, hyper, z_val, steps, tol)
    results = {"config": config, "history": history.as_dict(), "validation": check,
               "fit_time_s": history.seconds, "wall_time_s": time.perf_counter() - start,
               "num_parameters_g": sum(p.numel() for p in hyper.g.parameters()),
               "versions": _versions(), "files": {"weights": HYPER_WEIGHTS,
                                                  "plot": FIT_CURVE}}
    error = _plot_fit(history, out / FIT_CURVE, f"{hyper.name}, K={label}")
    if error is not None:
        results["plot_error"] = error
    runs.atomic_write_json(out / runs.RESULTS_FILE, results)
    if verbose:
        _print_fit(history.seconds, check, base_name, hyper.name, out)
    return out


def _check_fit_arguments(steps: Any, base: Any, iterations: Any, hidden: Any,
                         kernel_size: Any) -> tuple[int | list[int], str, int]:
    """``fit_hypersolver``'s own arguments, checked (``ConfigError`` naming each):
    ``(steps, base method name, kernel_size)``."""
    steps = _check_fit_steps(steps)
    base_name = _check_base(base)
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ConfigError("iterations", f"must be an integer >= 1, got {iterations!r}")
    if hidden is not None:
        if isinstance(hidden, str) or not isinstance(hidden, Sequence) or not hidden:
            raise ConfigError("hidden", f"must be a non-empty list of widths, got {hidden!r}")
        for w in hidden:
            _check_steps(w, "hidden")
    kernel_size = _check_steps(kernel_size, "kernel_size")
    if kernel_size % 2 == 0:
        raise ConfigError("kernel_size", f"must be odd (same-size padding), got {kernel_size}")
    return steps, base_name, kernel_size


def _initial_states(loaded: LoadedModel, device: str, validation_size: int, seed: int
                    ) -> tuple[Tensor, Tensor, Tensor]:
    """``input_map(x)`` of the training split, and its seeded split into a validation
    batch (``validation_size``, at most a fifth) and the states g is fitted on."""
    z_all = loaded.initial_states(loaded.split.x_train.to(device))
    n_val = min(validation_size, max(1, len(z_all) // 5))
    perm = torch.randperm(len(z_all), generator=torch.Generator().manual_seed(seed))
    return z_all, z_all[perm[:n_val]], z_all[perm[n_val:]]


def _plot_fit(history: Any, path: Path, title: str) -> str | None:
    """Draw the fitting curve; the error as text if it fails (a plot must not cost the
    fit its results)."""
    try:
        from .plots import plot_fitting_curve  # matplotlib: loaded only to draw

        plot_fitting_curve(history.loss, history.val_loss, path, title=title)
    except Exception as e:
        return f"{type(e).__name__}: {e}"
    return None


def _print_fit(seconds: float, check: dict[str, Any], base_name: str, hyper_name: str,
               out: Path) -> None:
    print(f"  {seconds:.1f} s; validation terminal MAPE:")
    for row in check["per_steps"]:
        print(f"    K={row['steps']}: {base_name} {row['mape_base']:.3g}, {hyper_name} "
              f"{row['mape_hyper']:.3g} "
              f"({row['mape_base'] / max(row['mape_hyper'], 1e-300):.1f}x lower)")
    print(f"  written to {out}")


@torch.no_grad()
def _validation_mape(loaded: LoadedModel, hyper: HyperSolver, z0: Tensor,
                     steps: int | Sequence[int], tol: float) -> dict[str, Any]:
    """Terminal MAPE of the base and the hypersolver against dopri5 at ``tol`` at every
    fitted ``K`` (``per_steps``); the top-level keys repeat the row at
    ``summary_steps(steps)``."""
    t = torch.tensor(loaded.t_span, dtype=torch.float64)
    ref = solve(loaded.field, z0, t, method="dopri5", rtol=tol, atol=tol).ys[-1]
    rows = []
    for k in [steps] if isinstance(steps, int) else steps:
        opts = dict(num_steps=k)
        z_hyper = solve(loaded.field, z0, t, method=hyper, options=opts).ys[-1]
        z_base = solve(loaded.field, z0, t, method=hyper.base, options=opts).ys[-1]
        rows.append({"steps": k, "mape_base": float(mape(z_base, ref)),
                     "mape_hyper": float(mape(z_hyper, ref))})
    main = next(r for r in rows if r["steps"] == summary_steps(steps))
    return {**main, "reference_tol": tol, "per_steps": rows}


# ---------------------------------------------------------------------- evaluate


class _Evaluator:
    """Solves the test split with one method and scores it."""

    def __init__(self, loaded: LoadedModel, z0: Tensor, y: Tensor, timing_batch: int,
                 warmup: int, repeats: int):
        self.loaded = loaded
        self.z0, self.y = z0, y
        self.t = torch.tensor(loaded.t_span, dtype=torch.float64)
        self.z_time = z0[:timing_batch]
        self.warmup, self.repeats = warmup, repeats
        self.reference_z: Tensor | None = None
        self.reference_acc: float | None = None

    @torch.no_grad()
    def run(self, name: str, method: Any, *, steps: int | None = None,
            tol: float | None = None) -> dict[str, Any]:
        field = self.loaded.field
        opts = dict(num_steps=steps) if steps is not None else None
        kw: dict[str, Any] = dict(rtol=tol, atol=tol) if tol is not None else {}
        g_modules = [method] if isinstance(method, nn.Module) else []
        with MacCounter(field) as cf, MacCounter(*g_modules) as cg:
            sol = solve(field, self.z0, self.t, method=method, options=opts, **kw)
        z_end = sol.ys[-1]
        acc = accuracy(self.loaded.model.output_map(z_end), self.y)

        def infer() -> Tensor:
            z = solve(field, self.z_time, self.t, method=method, options=opts, **kw).ys[-1]
            return self.loaded.model.output_map(z)

        timing = time_call(infer, warmup=self.warmup, repeats=self.repeats)
        b = len(self.z0)
        row = {"method": name, "steps": steps, "tol": tol, "nfe": sol.stats.nfe,
               "nfe_correction": sol.stats.nfe_correction,
               "macs_f": cf.macs / b, "macs_g": cg.macs / b,
               "accuracy": acc, "time_s": timing.median, "time_min_s": timing.min,
               "z_end": z_end}
        row["macs"] = row["macs_f"] + row["macs_g"]
        return row

    def score(self, row: dict[str, Any]) -> dict[str, Any]:
        z_end = row.pop("z_end")
        # _evaluation_rows sets both (the reference solves) before scoring any row
        ref_z, ref_acc = cast(Tensor, self.reference_z), cast(float, self.reference_acc)
        value = float(mape(z_end, ref_z))
        row["mape"] = value if math.isfinite(value) else None
        diff = (z_end - ref_z).flatten(1).norm(dim=1)
        rel = float((diff / ref_z.flatten(1).norm(dim=1)).mean())
        row["rel_l2"] = rel if math.isfinite(rel) else None
        row["accuracy_loss"] = accuracy_loss(row["accuracy"], ref_acc)
        return row


def evaluate_hypersolver(run_dir: str | Path, hyper_dir: str | Path, *,
                         out: str | Path | None = None,
                         methods: Sequence[str] = DEFAULT_METHODS,
                         steps: Sequence[int] = DEFAULT_STEPS,
                         hyper_steps: Sequence[int] | None = None,
                         tol: float = 1e-4, tight_tol: float = 1e-7,
                         timing_batch: int = 128, warmup: int = 2, repeats: int = 7,
                         device: str = "cpu", verbose: bool = True) -> dict[str, Any]:
    """Evaluate the hypersolver of ``hyper_dir`` and the classic solvers on the model's
    *test* split; write ``results.json`` and the Pareto plots to ``out`` (default
    ``<hyper_dir>/eval``) and return the results.

    Per method (``methods`` at every count in ``steps``, the hypersolver at
    ``hyper_steps``, default ``steps``; dopri5 at ``tol`` and at ``tight_tol``): terminal
    MAPE against dopri5 at ``tight_tol``, test accuracy and its loss against dopri5 at
    ``tol``, NFE of ``f`` and of ``g``, MACs per sample of ``f`` and of ``g``, seconds per
    test batch of ``timing_batch`` samples (median of ``repeats`` after ``warmup``).
    Then the Pareto fronts (error vs NFE, error vs MACs, accuracy loss vs NFE) and, per
    method, the fewest steps with accuracy loss < 0.1% with its time and speedup
    against dopri5 at ``tol``.
    """
    step_list = [_check_steps(k) for k in steps]
    hyper_list = step_list if hyper_steps is None else [_check_steps(k, "hyper_steps")
                                                        for k in hyper_steps]
    for m in methods:
        _check_method(m)
    start = time.perf_counter()
    loaded = load_trained_model(run_dir, device=device)
    hyper, hyper_cfg = load_hypersolver(hyper_dir)
    hyper.to(device)
    out = Path(out) if out is not None else Path(hyper_dir) / "eval"
    _make_out(out, (runs.RESULTS_FILE,))
    split = loaded.split
    z0 = loaded.initial_states(split.x_test.to(device))
    ev = _Evaluator(loaded, z0, split.y_test.to(device), min(timing_batch, len(z0)), warmup,
                    repeats)
    fitted = hyper_cfg["steps"]
    if verbose:
        print(f"hyperode: evaluating {hyper.name} (fitted at K={_steps_label(fitted)}) and "
              f"{', '.join(methods)} on {len(z0)} test samples of {loaded.cfg.task}")
    hyper_name = f"hyper{hyper.base.name}"
    rows, reference, tight = _evaluation_rows(ev, hyper, hyper_name, methods, step_list,
                                              hyper_list, tol, tight_tol)
    best = best_under_loss(rows, reference)
    results = _evaluation_record(loaded, hyper_dir, hyper_name, hyper, hyper_cfg, ev, rows,
                                 reference, tight, best, tol, tight_tol)
    results["plots"], errors = write_pareto_plots(results, out)
    if errors:
        results["plot_errors"] = errors
    results["wall_time_s"] = time.perf_counter() - start
    runs.atomic_write_json(out / runs.RESULTS_FILE, results)
    if verbose:
        print(format_results(results))
        print(f"  results and plots in {out}")
    return results


def _evaluation_rows(ev: _Evaluator, hyper: HyperSolver, hyper_name: str,
                     methods: Sequence[str], step_list: list[int], hyper_list: list[int],
                     tol: float, tight_tol: float
                     ) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """Solve with every method: the references first (dopri5 at ``tight_tol``: the error
    reference; at ``tol``: the accuracy reference), then each fixed-step method at every
    step count and the hypersolver at its counts. ``(rows, reference, tight)``."""
    tight = ev.run("dopri5", "dopri5", tol=tight_tol)
    ev.reference_z = tight["z_end"]
    reference = ev.run("dopri5", "dopri5", tol=tol)
    ev.reference_acc = reference["accuracy"]
    rows = [ev.score(reference), ev.score(tight)]
    for m in methods:
        for k in step_list:
            rows.append(ev.score(ev.run(m, m, steps=k)))
    for k in hyper_list:
        rows.append(ev.score(ev.run(hyper_name, hyper, steps=k)))
    return rows, reference, tight


def _evaluation_record(loaded: LoadedModel, hyper_dir: str | Path, hyper_name: str,
                       hyper: HyperSolver, hyper_cfg: dict[str, Any], ev: _Evaluator,
                       rows: list[dict[str, Any]], reference: dict[str, Any],
                       tight: dict[str, Any], best: Any, tol: float, tight_tol: float
                       ) -> dict[str, Any]:
    """The evaluation's ``results.json`` (without plots and wall time)."""
    fitted = hyper_cfg["steps"]
    return {
        "model": str(loaded.run_dir), "hyper": str(hyper_dir), "task": loaded.cfg.task,
        "hypersolver": {"name": hyper_name, "base": hyper.base.name,
                        "fitted_steps": fitted, "summary_steps": summary_steps(fitted),
                        "net": hyper_cfg["net"]},
        "test_samples": len(ev.z0), "timing_batch": len(ev.z_time),
        "reference": {"method": "dopri5", "tol": tol, "accuracy": ev.reference_acc,
                      "nfe": reference["nfe"], "time_s": reference["time_s"]},
        "error_reference": {"method": "dopri5", "tol": tight_tol, "nfe": tight["nfe"]},
        "accuracy_loss_limit": ACCURACY_LOSS_LIMIT,
        "metrics": {"mape": "mean |(z_T - z_T_ref) / z_T_ref| over test samples and state "
                            "elements (a fraction), z_T_ref by dopri5 at tight_tol",
                    "rel_l2": "mean over test samples of ||z_T - z_T_ref||_2 / ||z_T_ref||_2 "
                              "(robust to near-zero elements, unlike MAPE)",
                    "accuracy_loss": "accuracy(dopri5 at tol) - accuracy (a fraction)",
                    "nfe": "evaluations of f per solve (the whole batch)",
                    "nfe_correction": "evaluations of g per solve",
                    "macs_f, macs_g": "multiply-accumulates per sample over the solve",
                    "time_s": "median seconds per test batch (solve + output map)"},
        "rows": rows,
        "pareto": pareto_sets(rows),
        "best_under_accuracy_loss": best,
        "summary": summarise(rows, hyper_name, summary_steps(fitted), best),
        "wall_time_s": None, "versions": _versions(), "threads": torch.get_num_threads(),
    }


def _make_out(out: Path, names: tuple[str, ...]) -> None:
    """Create the output folder ``out`` (``ConfigError`` naming ``out`` if it cannot be)
    and remove temporary files an interrupted earlier write left there."""
    if out.exists() and not out.is_dir():
        raise ConfigError("out", f"{str(out)!r} exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError("out", f"cannot create {str(out)!r} ({e.strerror or e})") from None
    removed = runs.remove_stale_temp_files(out, names)
    if removed:
        print(f"hyperode: removed {len(removed)} stale temporary file(s) left in {out} by an "
              f"interrupted write: {', '.join(removed)}", file=sys.stderr)


def _check_method(name: str) -> None:
    fixed = [k for k in METHODS if method_kind(k) == "fixed"]
    try:
        kind = method_kind(name)
    except ValueError:
        kind = "unknown"
    if kind != "fixed":
        raise ConfigError("methods", f"must be fixed-step methods ({', '.join(fixed)}), "
                                     f"got {name!r}")


def pareto_sets(rows: list[dict[str, Any]]) -> dict[str, list[int]]:
    """Row indices on each Pareto front (both coordinates minimised)."""
    def pts(cost: str, err: str) -> list[tuple[float, float]]:
        return [(r[cost], r[err] if r[err] is not None else math.inf) for r in rows]

    return {"error_vs_nfe": pareto_indices(pts("nfe", "mape")),
            "error_vs_macs": pareto_indices(pts("macs", "mape")),
            "accuracy_loss_vs_nfe": pareto_indices(pts("nfe", "accuracy_loss"))}


def best_under_loss(rows: list[dict[str, Any]], reference: dict[str, Any],
                    limit: float = ACCURACY_LOSS_LIMIT) -> dict[str, Any]:
    """Per fixed-step method: the fewest steps with ``accuracy_loss < limit``, its time
    per batch and the speedup against the reference (dopri5) time."""
    best: dict[str, Any] = {}
    for r in sorted((r for r in rows if r["steps"] is not None), key=lambda r: r["steps"]):
        if r["method"] in best or r["accuracy_loss"] >= limit:
            continue
        best[r["method"]] = {"steps": r["steps"], "nfe": r["nfe"],
                             "nfe_correction": r["nfe_correction"], "macs": r["macs"],
                             "accuracy_loss": r["accuracy_loss"], "mape": r["mape"],
                             "time_s": r["time_s"],
                             "speedup_vs_dopri5": reference["time_s"] / r["time_s"]}
    return best


def summarise(rows: list[dict[str, Any]], hyper_name: str, fitted_steps: int,
              best: dict[str, Any]) -> dict[str, Any]:
    """The headline comparisons: the hypersolver's MAPE against each method at the
    fitted step count and at equal NFE of ``f``."""
    by = {(r["method"], r["steps"]): r for r in rows if r["steps"] is not None}
    out: dict[str, Any] = {}
    h = by.get((hyper_name, fitted_steps))
    if h is not None and h["mape"]:
        e = by.get(("euler", fitted_steps))
        if e is not None and e["mape"] is not None:
            out["mape_ratio_euler_over_hyper_at_fitted_steps"] = e["mape"] / h["mape"]
            if e.get("rel_l2") is not None and h.get("rel_l2"):
                out["rel_l2_ratio_euler_over_hyper_at_fitted_steps"] = \
                    e["rel_l2"] / h["rel_l2"]
        equal = {}
        for r in rows:
            if r["method"] in (hyper_name, "dopri5") or r["nfe"] != h["nfe"]:
                continue
            if r["mape"] is not None:
                equal[r["method"]] = {"steps": r["steps"], "mape": r["mape"],
                                      "ratio_over_hyper": r["mape"] / h["mape"]}
                if r.get("rel_l2") is not None and h.get("rel_l2"):
                    equal[r["method"]]["rel_l2_ratio_over_hyper"] = r["rel_l2"] / h["rel_l2"]
        out["equal_nfe"] = {"nfe": h["nfe"], "hyper_mape": h["mape"], "methods": equal}
    if hyper_name in best:
        out["hyper_speedup_vs_dopri5"] = best[hyper_name]["speedup_vs_dopri5"]
    others = {m: b["speedup_vs_dopri5"] for m, b in best.items() if m != hyper_name}
    if others:
        out["best_classic"] = max(others, key=others.__getitem__)
        out["best_classic_speedup_vs_dopri5"] = others[out["best_classic"]]
    return out


def format_results(results: dict[str, Any]) -> str:
    """A readable table of the rows, Pareto marks, and the < 0.1% loss summary."""
    rows = results["rows"]
    fronts = results["pareto"]
    head = (f"{'method':<12}{'steps/tol':>10}{'NFE f':>7}{'NFE g':>7}{'MACs/sample':>13}"
            f"{'MAPE':>10}{'rel L2':>10}{'acc':>8}{'acc loss':>10}{'ms/batch':>10}  pareto")
    lines = [head, "-" * len(head)]
    for i, r in enumerate(rows):
        setting = f"{r['tol']:.0e}" if r["steps"] is None else str(r["steps"])
        marks = "".join(c for c, key in (("N", "error_vs_nfe"), ("M", "error_vs_macs"),
                                         ("A", "accuracy_loss_vs_nfe"))
                        if i in fronts[key])
        err = f"{r['mape']:>10.2e}" if r["mape"] is not None else f"{'inf':>10}"
        rel = r.get("rel_l2")
        err += f"{rel:>10.2e}" if rel is not None else f"{'-':>10}"
        lines.append(f"{r['method']:<12}{setting:>10}{r['nfe']:>7}{r['nfe_correction']:>7}"
                     f"{r['macs'] / 1e6:>12.2f}M{err}{100 * r['accuracy']:>7.2f}%"
                     f"{100 * r['accuracy_loss']:>9.2f}%{1e3 * r['time_s']:>10.2f}  {marks}")
    ref = results["reference"]
    lines.append("")
    lines.append("pareto: N = error vs NFE, M = error vs MACs, A = accuracy loss vs NFE "
                 "(MAPE vs dopri5 at {:.0e}; accuracy loss vs dopri5 at {:.0e}, {:.2f}%)"
                 .format(results["error_reference"]["tol"], ref["tol"],
                         100 * ref["accuracy"]))
    lines.append(f"fewest steps with accuracy loss < {100 * results['accuracy_loss_limit']:g}% "
                 f"(dopri5 at {ref['tol']:.0e}: {1e3 * ref['time_s']:.2f} ms per batch of "
                 f"{results['timing_batch']}, NFE {ref['nfe']}):")
    for m, b in results["best_under_accuracy_loss"].items():
        lines.append(f"  {m:<12} {b['steps']:>3} steps, NFE {b['nfe']}+{b['nfe_correction']}, "
                     f"{1e3 * b['time_s']:.2f} ms, {b['speedup_vs_dopri5']:.1f}x faster than "
                     f"dopri5")
    s = results["summary"]
    if "mape_ratio_euler_over_hyper_at_fitted_steps" in s:
        k = results["hypersolver"].get("summary_steps", results["hypersolver"]["fitted_steps"])
        rel = s.get("rel_l2_ratio_euler_over_hyper_at_fitted_steps")
        lines.append(f"{results['hypersolver']['name']} at K={k}: "
                     f"{s['mape_ratio_euler_over_hyper_at_fitted_steps']:.1f}x lower MAPE than "
                     f"euler at K={k}" + (f" ({rel:.1f}x lower rel L2)" if rel else ""))
    if s.get("equal_nfe", {}).get("methods"):
        eq = s["equal_nfe"]
        parts = [f"{m} {v['ratio_over_hyper']:.2g}x" for m, v in eq["methods"].items()]
        lines.append(f"at equal NFE of f ({eq['nfe']}), MAPE relative to "
                     f"{results['hypersolver']['name']}: " + ", ".join(parts))
    return "\n".join(lines)


def write_pareto_plots(results: dict[str, Any], out: str | Path) -> tuple[list[str],
                                                                           list[str]]:
    """The three Pareto plots as PNGs in ``out``; returns (written, errors)."""
    from .plots import plot_pareto

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    made, errors = [], []
    jobs = (("error_vs_nfe", "nfe", "mape", "NFE (evaluations of f)",
             "terminal MAPE vs tight dopri5", True),
            ("error_vs_macs", "macs", "mape", "MACs per sample (f + g)",
             "terminal MAPE vs tight dopri5", True),
            ("accuracy_loss_vs_nfe", "nfe", "accuracy_loss", "NFE (evaluations of f)",
             "test accuracy loss vs dopri5 (%)", False))
    for key, cost, err, xlabel, ylabel, log_y in jobs:
        name = PARETO_PLOTS[key]
        try:
            plot_pareto(results["rows"], results["pareto"][key], cost, err, out / name,
                        xlabel=xlabel, ylabel=ylabel, log_y=log_y,
                        title=f"{results['task']}: {key.replace('_', ' ')}")
            made.append(name)
        except Exception as e:  # a plot must not cost the evaluation its results
            errors.append(f"{name}: {type(e).__name__}: {e}")
    return made, errors


def replot(results_path: str | Path, out: str | Path | None = None) -> list[str]:
    """Redraw the Pareto plots of an evaluation's ``results.json`` (``hyper pareto``)."""
    path = Path(results_path)
    if path.is_dir():
        path = path / runs.RESULTS_FILE
    if not path.is_file():
        raise ConfigError("results", f"{str(path)!r} does not exist; give an evaluation "
                                     f"folder or its results.json (hyperode hyper eval)")
    try:
        results = json.loads(path.read_text())
    except ValueError as e:
        raise ConfigError("results", f"{str(path)!r} is not valid JSON ({e})") from None
    if not isinstance(results, dict) or "rows" not in results or "pareto" not in results:
        raise ConfigError("results", f"{str(path)!r} is not a hypersolver evaluation")
    made, errors = write_pareto_plots(results, out if out is not None else path.parent)
    if errors:
        raise RuntimeError("; ".join(errors))
    print(format_results(results))
    return made


# ---------------------------------------------------------------------- demo


DEMO_TRAIN: dict[str, Any] = dict(task="digits", method="dopri5", rtol=1e-3, atol=1e-3,
                                   iterations=1000, eval_every=250, threads=1)
"""The demo's training run: the digits preset trained with dopri5 at 1e-3 (about 2.5 min
on 2 cores, 96% test accuracy); evaluation's accuracy reference is dopri5 at 1e-4, as
in the paper."""


def _finished_run(path: Path, cfg: TrainConfig) -> bool:
    """``path`` holds a completed run with ``cfg``'s configuration."""
    try:
        saved = json.loads((path / runs.CONFIG_FILE).read_text())
        results = json.loads((path / runs.RESULTS_FILE).read_text())
    except (OSError, ValueError):
        return False
    if results.get("status") != "completed" or not (path / runs.WEIGHTS_FILE).is_file():
        return False
    ignore = {"out", "quiet", "resume", "device", "plots"}
    mine = {k: v for k, v in cfg.to_dict().items() if k not in ignore}
    return all(saved.get(k) == v for k, v in mine.items())


def ensure_demo_model(train_dir: str | Path, *, quiet: bool = True) -> bool:
    """Make ``train_dir`` hold the demo's trained digits model (``DEMO_TRAIN``): reuse it
    when it holds a finished run of that configuration (or at least its weights), else
    train it. Returns whether it was reused. Benchmarks that study the demo's model call
    this so that they run on a fresh clone too."""
    train_dir = Path(train_dir)
    cfg = resolve_config(TrainConfig(**DEMO_TRAIN, out=str(train_dir), quiet=quiet))
    if _finished_run(train_dir, cfg) or (train_dir / runs.WEIGHTS_FILE).is_file():
        return True
    print(f"hyperode: training the digits model with the demo's settings into {train_dir}")
    train(cfg)
    return False


def run_demo_pipeline(out: str | Path = "runs/demo", *, train_iterations: int | None = None,
                      fit_iterations: int = 3000, steps: int = 10, quiet: bool = False,
                      eval_steps: Sequence[int] = DEFAULT_STEPS) -> dict[str, Any]:
    """Train the digits Neural ODE with dopri5 (reused from ``<out>/train`` when that
    holds a finished run of the same configuration), fit HyperEuler at ``K = steps``,
    evaluate, print the table and the speedup, write plots and ``<out>/results.json``."""
    torch.set_num_threads(1)
    start = time.perf_counter()
    out = Path(out)
    train_dir = out / "train"
    settings = dict(DEMO_TRAIN)
    if train_iterations is not None:
        settings["iterations"] = train_iterations
    cfg = resolve_config(TrainConfig(**settings, out=str(train_dir), quiet=quiet))
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if _finished_run(train_dir, cfg):
        print(f"hyperode demo: reusing the trained model in {train_dir}")
        reused = True
    else:
        if (train_dir / runs.CHECKPOINT_FILE).exists():
            raise ConfigError("out", f"{str(train_dir)!r} holds another or an unfinished run; "
                                     f"delete it or choose another --out")
        print(f"hyperode demo: training the digits Neural ODE with dopri5 into {train_dir}")
        train(cfg)
        reused = False
    timings["train_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    hyper_dir = fit_hypersolver(train_dir, "euler", steps, iterations=fit_iterations,
                                out=out / "hyper", progress=not quiet)
    timings["fit_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    results = evaluate_hypersolver(train_dir, hyper_dir, out=out / "eval", steps=eval_steps)
    timings["eval_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - start
    train_results = json.loads((train_dir / runs.RESULTS_FILE).read_text())
    fit_results = json.loads((hyper_dir / runs.RESULTS_FILE).read_text())
    demo = dict(results)
    demo["demo"] = {"train_dir": str(train_dir), "hyper_dir": str(hyper_dir),
                    "eval_dir": str(out / "eval"), "train_reused": reused,
                    "train_config": cfg.to_dict(),
                    "train_final": train_results.get("final"),
                    "train_wall_time_s": train_results.get("wall_time_s"),
                    "fit_iterations": fit_iterations,
                    "fit_validation": fit_results.get("validation"),
                    "timings_s": timings}
    runs.atomic_write_json(out / runs.RESULTS_FILE, demo)
    print(f"hyperode demo: done in {timings['total_s']:.0f} s (train "
          f"{timings['train_s']:.0f} s{' reused' if reused else ''}, fit "
          f"{timings['fit_s']:.0f} s, evaluate {timings['eval_s']:.0f} s); results in "
          f"{out / runs.RESULTS_FILE}")
    return demo


def _version() -> str:
    return __version__


def _versions() -> dict[str, str]:
    return versions()
