"""Solver-independence report of a trained model (Ott et al., ICLR 2021, §4, Figs. 2–4).

A Neural ODE is a valid ODE model only if its accuracy does not depend on the solver
it is evaluated with, at least when that solver gets *more* accurate. The report
evaluates a trained classifier on a split with:

- a fixed-step training solver with step ``h``: the training method and each more
  accurate method among Euler, midpoint and rk4 (Euler-trained: Euler, midpoint, rk4;
  midpoint-trained: midpoint, rk4; rk4-trained: rk4) at steps ``h * f`` for the step
  factors ``f`` in ``(0.5, 0.75, 1, 1.5, 2)`` (the reference code's
  ``evaluate_with_dif_solver.py`` uses ``1/(h*f)``, a bug; here the step is ``h*f``);
- an adaptive training solver at tolerance ``tol``: fehlberg2 -> fehlberg2 and dopri5,
  dopri5 -> dopri5 (other methods: themselves and dopri5) at ``tol * f`` for ``f`` in
  ``(0.1, 1, 10)``.

Each row: solver, step or tolerance, steps (a fixed grid's count; an adaptive solve's
accepted steps averaged over batches), accuracy, forward NFE per batch, the fraction
of predictions that differ from the training solver's, and the fraction of samples
whose logits are not finite (the state overflowed: counted as wrong predictions, never
as a class).

The paper's test solvers are only a little more accurate than the training solver;
passing them is necessary, not sufficient (a model trained at one Euler step can pass
a midpoint check and still overflow under a fine solve). ``reference=`` adds one row
with a far more accurate solver of your choice (e.g. rk4 at 256 steps, or dopri5 at
1e-7), counted in the verdict like the other more accurate rows. A row is *more
accurate* than the training solver when its estimated global error is smaller: for
fixed steps ``h_row^q < h^p`` (orders ``q``, ``p``, constants taken equal, as in the
test-solver rule), for adaptive solves a smaller tolerance, or the same tolerance
with a higher-order method. Verdict: the model behaves like an ODE when every more
accurate row keeps the training solver's accuracy within ``threshold``.

The plot is the paper's: test accuracy against the number of steps, one colour per
method, the training method's points dark and the other methods' light.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..data.split import Split
from ..errors import SolverError
from ..nn import SolverConfig
from ..nn.odes import neural_odes, nfe_counts, using_solver
from .checking import method_order, step_of

STEP_FACTORS: tuple[float, ...] = (0.5, 0.75, 1.0, 1.5, 2.0)
TOL_FACTORS: tuple[float, ...] = (0.1, 1.0, 10.0)
_FIXED_FAMILY = ("euler", "midpoint", "rk4")
#: One colour per method in every ODE-ness plot (report and grid).
METHOD_COLOURS = {"euler": "tab:blue", "midpoint": "tab:orange", "rk4": "tab:green",
                  "fehlberg2": "tab:purple", "dopri5": "tab:red"}


@dataclass
class OdenessReport:
    """Result of ``solver_independence_report``.

    Attributes:
        rows: one dict per evaluation (``solver``, ``method``, ``step``/``tol``,
            ``steps``, ``accuracy``, ``nfe``, ``changed``, ``same_method``,
            ``more_accurate``, ``is_train``).
        train_accuracy: accuracy with the training solver.
        max_gap: the largest accuracy gap over the more accurate rows.
        is_ode: the verdict (``max_gap <= threshold``).
        threshold: the tolerated accuracy gap.
        plot: the PNG written (``None`` if none was).
    """

    rows: list[dict[str, Any]]
    train_accuracy: float
    max_gap: float
    is_ode: bool
    threshold: float
    plot: Path | None = None
    train_solver: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: NFE and steps of a row whose every batch failed (NaN) become
        ``None``."""
        rows = [{k: None if isinstance(v, float) and math.isnan(v) else v
                 for k, v in r.items()} for r in self.rows]
        return {"train_solver": self.train_solver, "train_accuracy": self.train_accuracy,
                "max_gap": self.max_gap, "is_ode": self.is_ode, "threshold": self.threshold,
                "rows": rows, "plot": str(self.plot) if self.plot else None}

    def table(self) -> str:
        """The rows as a Markdown table."""
        lines = ["| solver | step/tol | steps | accuracy | NFE | changed | non-finite |",
                 "|---|---|---|---|---|---|---|"]
        for r in self.rows:
            knob = f"h={r['step']:.4g}" if r.get("step") is not None else f"tol={r['tol']:.1e}"
            mark = " (train)" if r["is_train"] else (
                " (reference)" if r.get("is_reference") else "")
            lines.append(f"| {r['method']}{mark} | {knob} | {r['steps']:.4g} | "
                         f"{r['accuracy']:.4f} | {r['nfe']:.1f} | {r['changed']:.4f} | "
                         f"{r.get('nonfinite', 0.0):.4f} |")
        verdict = "holds" if self.is_ode else "does NOT hold"
        lines.append("")
        lines.append(f"Verdict: accuracy {verdict} within {self.threshold:g} when the solver "
                     f"gets more accurate (largest gap {self.max_gap:.4f}; training solver "
                     f"{self.train_solver}, accuracy {self.train_accuracy:.4f}).")
        return "\n".join(lines)


def candidate_solvers(train_solver: SolverConfig, *, span: float = 1.0,
                      step_factors: Sequence[float] = STEP_FACTORS,
                      tol_factors: Sequence[float] = TOL_FACTORS) -> list[SolverConfig]:
    """The solvers the report evaluates (see the module docstring), training solver
    first."""
    train_solver = normalised(train_solver, span)
    name = train_solver.method_name
    out: list[SolverConfig] = [train_solver]
    if train_solver.is_fixed:
        if name not in _FIXED_FAMILY:
            raise ValueError(f"solver_independence_report: fixed-step training method must be "
                             f"one of {_FIXED_FAMILY}, got {name!r}")
        h, p = step_of(train_solver, span), method_order(name)
        methods = [m for m in _FIXED_FAMILY if method_order(m) >= p]
        for method in methods:
            for f in step_factors:  # a step longer than the span is one step of the span
                out.append(SolverConfig(method=method, step_size=min(h * f, abs(span))))
    else:
        methods = [name] + ([] if name == "dopri5" else ["dopri5"])
        for method in methods:
            for f in tol_factors:
                out.append(SolverConfig(method=method, rtol=train_solver.rtol * f,
                                        atol=train_solver.atol * f))
    # drop exact duplicates of the training solver (kept first)
    seen: list[SolverConfig] = []
    for s in out:
        if s not in seen:
            seen.append(s)
    return seen


def normalised(solver: SolverConfig, span: float = 1.0) -> SolverConfig:
    """The evaluation-relevant part of a training solver: method and step (as
    ``step_size``) or method and tolerances; adjoint settings dropped."""
    if not isinstance(solver.method, str):
        raise ValueError(f"solver_independence_report: the training method must be a named "
                         f"method, got {solver.describe()!r}")
    if solver.is_fixed:
        return SolverConfig(method=solver.method_name, step_size=step_of(solver, span))
    return SolverConfig(method=solver.method_name, rtol=solver.rtol, atol=solver.atol)


def _evaluate(model: nn.Module, x: Tensor, y: Tensor, solver: SolverConfig, batch_size: int
              ) -> tuple[Tensor, float, float, str | None]:
    """Predictions (``-1`` where the logits are not finite or the solve failed), mean
    forward NFE and accepted steps per successful batch (NaN when none succeeded), and
    the first solver error's message (``None`` if none)."""
    preds, nfes, steps = [], [], []
    error: str | None = None
    with torch.no_grad(), using_solver(model, solver):
        for start in range(0, len(x), batch_size):
            xb = x[start:start + batch_size]
            try:
                logits = model(xb)
            except SolverError as e:  # the state overflowed, the step underflowed, ...
                error = error or f"{type(e).__name__}: {e}"
                preds.append(torch.full((len(xb),), -1, dtype=torch.long, device=x.device))
                continue
            finite = torch.isfinite(logits).all(dim=-1)
            preds.append(torch.where(finite, logits.argmax(dim=-1), -1))
            nfes.append(nfe_counts(model)[0])
            stats = neural_odes(model)[0].last_stats
            steps.append(stats.accepted if stats is not None else 0)
    return torch.cat(preds), _mean(nfes), _mean(steps), error


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _error_estimate(solver: SolverConfig, span: float) -> float:
    """The proxy of the global error that orders solvers (fixed: ``h^order``)."""
    return step_of(solver, span) ** method_order(solver.method_name)


def _more_accurate(row: SolverConfig, train: SolverConfig, span: float) -> bool:
    if train.is_fixed:
        return _error_estimate(row, span) < _error_estimate(train, span) * (1 - 1e-9)
    if row.rtol < train.rtol * (1 - 1e-9):
        return True
    return math.isclose(row.rtol, train.rtol) and (
        method_order(row.method_name) > method_order(train.method_name))


def solver_independence_report(
    model: nn.Module, split: Split, train_solver: SolverConfig, *,
    threshold: float = 0.1, step_factors: Sequence[float] = STEP_FACTORS,
    tol_factors: Sequence[float] = TOL_FACTORS, batch_size: int = 1000,
    out_dir: str | Path | None = None, on: str = "test",
    reference: SolverConfig | None = None,
) -> OdenessReport:
    """Evaluate ``model`` on ``split`` with the training solver and the test solvers
    (and ``reference``, when given).

    Args:
        model: a trained classifier containing ``NeuralODE`` modules (restored to its
            solver and mode afterwards).
        split: the data; ``on`` picks ``"test"`` (default) or ``"train"``.
        train_solver: the solver the model was trained with.
        threshold: the accuracy gap the verdict tolerates.
        step_factors, tol_factors: multipliers of the training step / tolerance.
        batch_size: evaluation batch size.
        out_dir: where to write ``odeness.png``, ``odeness.json`` and ``odeness.md``
            (nothing is written when ``None``).
        reference: a far more accurate solver evaluated last (``is_reference``) and
            counted in the verdict whatever its estimated error.

    Returns:
        An ``OdenessReport``.
    """
    if not isinstance(train_solver, SolverConfig):
        raise ValueError(f"solver_independence_report: train_solver must be a SolverConfig, "
                         f"got {type(train_solver).__name__}")
    x, y = _labelled(split, on)
    _check_report_arguments(threshold, reference)
    nodes = neural_odes(model)
    if not nodes:
        raise ValueError("solver_independence_report: the model contains no NeuralODE")
    s0, s1 = nodes[0].t_span
    span = abs(s1 - s0)
    device = next(model.parameters()).device
    x, y = x.to(device), y.to(device)
    train_solver = normalised(train_solver, span)
    solvers = candidate_solvers(train_solver, span=span, step_factors=step_factors,
                                tol_factors=tol_factors)
    if reference is not None:
        solvers.append(normalised(reference, span))
    was_training = model.training
    model.eval()
    try:
        rows: list[dict[str, Any]] = []
        train_preds: Tensor | None = None
        for i, solver in enumerate(solvers):
            preds, nfe, steps, error = _evaluate(model, x, y, solver, batch_size)
            if train_preds is None:
                train_preds = preds
            is_reference = reference is not None and i == len(solvers) - 1
            rows.append(_row(solver, train_solver, span, preds, train_preds, y, nfe, steps,
                             error, is_train=i == 0, is_reference=is_reference))
    finally:
        model.train(was_training)
    acc0 = rows[0]["accuracy"]
    gaps = [abs(r["accuracy"] - acc0) for r in rows if r["more_accurate"]]
    max_gap = max(gaps, default=0.0)
    report = OdenessReport(rows=rows, train_accuracy=acc0, max_gap=max_gap,
                           is_ode=max_gap <= threshold, threshold=threshold,
                           train_solver=train_solver.describe())
    if out_dir is not None:
        _write_report(report, Path(out_dir))
    return report


def _labelled(split: Split, on: str) -> tuple[Tensor, Tensor]:
    """The inputs and labels the report evaluates (``on``: ``test`` or ``train``)."""
    if on not in ("test", "train"):
        raise ValueError(f"solver_independence_report: on must be 'test' or 'train', got {on!r}")
    x, y = (split.x_test, split.y_test) if on == "test" else (split.x_train, split.y_train)
    if y is None:
        raise ValueError("solver_independence_report: the split has no labels (accuracy needs "
                         "a classification task)")
    return x, y


def _check_report_arguments(threshold: Any, reference: Any) -> None:
    if not 0 <= threshold < 1:
        raise ValueError(f"solver_independence_report: threshold must lie in [0, 1), got "
                         f"{threshold!r}")
    if reference is not None and not isinstance(reference, SolverConfig):
        raise ValueError(f"solver_independence_report: reference must be a SolverConfig or "
                         f"None, got {type(reference).__name__}")


def _row(solver: SolverConfig, train_solver: SolverConfig, span: float, preds: Tensor,
         train_preds: Tensor, y: Tensor, nfe: float, steps: float, error: str | None, *,
         is_train: bool, is_reference: bool) -> dict[str, Any]:
    """One row of the report: ``solver``'s accuracy, cost and how it relates to the
    training solver."""
    fixed = solver.is_fixed
    return {
        "solver": solver.describe(), "method": solver.method_name,
        "step": step_of(solver, span) if fixed else None,
        "tol": None if fixed else solver.rtol,
        "steps": float(math.ceil(span / step_of(solver, span) - 1e-9)) if fixed
        else float(steps),
        "accuracy": float((preds == y).float().mean()),
        "nfe": float(nfe),
        "changed": float((preds != train_preds).float().mean()),
        "nonfinite": float((preds < 0).float().mean()),
        "error": error,
        "same_method": solver.method_name == train_solver.method_name,
        "is_train": is_train,
        "is_reference": is_reference,
        "more_accurate": is_reference or (
            solver != train_solver and _more_accurate(solver, train_solver, span)),
    }


def _write_report(report: OdenessReport, out: Path) -> None:
    """``odeness.png``, ``odeness.json`` and ``odeness.md`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    report.plot = plot_odeness(report.rows, out / "odeness.png", title=report.train_solver)
    (out / "odeness.json").write_text(json.dumps(report.to_dict(), indent=2))
    (out / "odeness.md").write_text(report.table() + "\n")


def plot_odeness(rows: list[dict[str, Any]], path: str | Path, *, title: str = "") -> Path:
    """Accuracy against number of steps: training method dark, other methods light."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for method in dict.fromkeys(r["method"] for r in rows):
        pts = sorted((r["steps"], r["accuracy"], r["same_method"]) for r in rows
                     if r["method"] == method)
        same = pts[0][2]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-",
                color=METHOD_COLOURS.get(method, "tab:gray"), alpha=1.0 if same else 0.35,
                label=method + (" (train)" if same else ""))
    train = [r for r in rows if r["is_train"]]
    if train:
        ax.plot([train[0]["steps"]], [train[0]["accuracy"]], "k*", markersize=12,
                label="training solver")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("number of steps")
    ax.set_ylabel("test accuracy")
    ax.set_title(title or "solver independence")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
