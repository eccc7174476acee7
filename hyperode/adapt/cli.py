"""``hyperode odeness``, ``hyperode adapt`` and ``hyperode grid`` (Ott et al., ICLR 2021).

Hook into ``hyperode/cli.py``'s ``build_parser`` with
``from .adapt.cli import add_parsers; add_parsers(sub)``.

- ``hyperode odeness --model RUN_DIR [--out DIR]``: the solver-independence report
  of a finished training run (table, ``odeness.png``, ``odeness.json``, verdict).
- ``hyperode adapt --task spheres --method euler --adapt step [train options]``:
  train with step adaptation (fixed-step methods) or ``--adapt tolerance`` (adaptive
  methods); every ``hyperode train`` option applies.
- ``hyperode grid --task spheres --solver euler --steps 1,2,4,8 --seeds 0,1``: train
  at every step count (or ``--tolerances`` for fehlberg2/dopri5) and seed, report each
  model's solver independence and the critical step count / tolerance.
"""

from __future__ import annotations

import argparse
import math

from ..cli import _FLAGS as _TRAIN_FLAGS
from ..cli import EXIT_INTERRUPTED, guarded, int_arg, list_arg, positive_int_arg

_ADAPT_FLAGS = {"every": "--adapt-every", "threshold": "--threshold",
                "max_steps": "--max-steps", "factor": "--factor",
                "test_method": "--test-method", "initial_tol": "--initial-tol"}
_ODENESS_FLAGS = {"model": "--model", "out": "--out", "threshold": "--threshold",
                  "batch_size": "--batch-size", "reference": "--reference",
                  "device": "--device"}


@guarded(_ODENESS_FLAGS)
def _odeness(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..experiments.config import ConfigError
    from ..experiments.trained import load_run
    from .report import solver_independence_report

    run = load_run(args.model, device=args.device or "cpu", argument="model")
    out = Path(args.out) if args.out else run.run_dir / "odeness"
    if out.exists() and not out.is_dir():
        raise ConfigError("out", f"{str(out)!r} exists and is not a folder")
    report = solver_independence_report(run.model, run.split, run.solver,
                                        threshold=args.threshold, out_dir=out,
                                        batch_size=args.batch_size,
                                        reference=args.reference)
    print(report.table())
    print(f"wrote {out / 'odeness.png'}, {out / 'odeness.json'}, {out / 'odeness.md'}")
    return 0


@guarded({**_TRAIN_FLAGS, **_ADAPT_FLAGS})
def _adapt(args: argparse.Namespace) -> int:
    from .. import cli as main_cli
    from ..experiments import ConfigError, build_solver, resolve_config, train
    from ..solvers.config import method_kind
    from ..solvers.methods import METHODS
    from .step_adaptation import StepAdaptation
    from .tolerance_adaptation import ToleranceAdaptation

    config = main_cli.train_config_from_args(args)
    if (args.adapt == "step" and config.method in METHODS
            and method_kind(config.method) == "fixed"
            and config.step_size is None and config.num_steps is None):
        config = config.replace(num_steps=1)  # replaced by the starting step
    solver = build_solver(resolve_config(config))
    if args.adapt == "step":
        if not solver.is_fixed:
            raise ConfigError("method", f"--adapt step needs a fixed-step method (euler, "
                                        f"midpoint, rk4), got {solver.describe()!r}")
        callback = StepAdaptation(every=args.adapt_every, threshold=args.threshold,
                                  max_steps=args.max_steps, factor=args.factor,
                                  test_method=args.test_method)
    else:
        if solver.is_fixed:
            raise ConfigError("method", f"--adapt tolerance needs an adaptive method "
                                        f"(fehlberg2, dopri5) without a grid, got "
                                        f"{solver.describe()!r}")
        callback = ToleranceAdaptation(every=args.adapt_every, threshold=args.threshold,
                                       initial_tol=args.initial_tol)
    result = train(config, callbacks=[callback], handle_signals=True)
    return EXIT_INTERRUPTED if result.results.get("status") == "interrupted" else 0


GRID_EPILOG = """\
examples:
  hyperode grid --task spheres --solver euler --steps 1,2,4,8,16,32 --seeds 0,1,2
  hyperode grid --task spheres --solver rk4 --steps 1,2,4,8 --iterations 1500
  hyperode grid --task spheres --solver dopri5 --tolerances 1e-1,1e-2,1e-3,1e-4
  hyperode grid --task digits --solver euler --steps 1,2,4,8,16 --seeds 0,1 \\
      --iterations 400 --out runs/grid-digits

Fixed-step solvers are tested with themselves and every more accurate one of euler,
midpoint, rk4 at the training step times 0.5, 0.75, 1, 1.5, 2; fehlberg2 with
fehlberg2 and dopri5, dopri5 with dopri5, at the tolerance times 0.1, 1, 10. A
setting is valid when no more accurate test solver loses more than --threshold test
accuracy, for every seed. The folder (--out) gets config.json, results.json (every
run's figures), grid.md (the table, also printed) and grid.png.
"""

#: run_grid's argument names (the text before ": " of its errors, ConfigError fields)
#: -> flags.
_GRID_FLAGS = {**_TRAIN_FLAGS, "steps": "--steps", "tolerances": "--tolerances",
               "seeds": "--seeds", "threshold": "--threshold", "out": "--out",
               "method": "--solver", "task": "--task"}




def _float_in(low: float, high: float = math.inf, *, include_low: bool = False):
    """An argparse type: a finite number in ``(low, high)`` (``[low, high)`` with
    ``include_low``)."""
    span = f"{'[' if include_low else '('}{low:g}, {high:g})"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number in {span}, got {text!r}") \
                from None
        above = value >= low if include_low else value > low
        if not (above and value < high and math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"must be a finite number in {span}, got {text!r}")
        return value
    return parse


_tolerance = _float_in(0.0, 1.0)
_fraction = _float_in(0.0, 1.0, include_low=True)


def _above(limit: float):  # -> Callable[[str], float]
    return _float_in(limit)


@guarded(_GRID_FLAGS)
def _grid(args: argparse.Namespace) -> int:
    from ..experiments.runs import default_run_dir
    from .grid import ADAPTIVE_METHODS, FIXED_METHODS, run_grid
    parser: argparse.ArgumentParser = args.parser
    if args.steps is not None and args.solver in ADAPTIVE_METHODS:
        parser.error(f"argument --steps: applies to fixed-step solvers "
                     f"({', '.join(FIXED_METHODS)}); --solver {args.solver} takes --tolerances")
    if args.tolerances is not None and args.solver in FIXED_METHODS:
        parser.error(f"argument --tolerances: applies to adaptive solvers "
                     f"({', '.join(ADAPTIVE_METHODS)}); --solver {args.solver} takes --steps")
    options = {name: getattr(args, name) for name in
               ("dim", "model", "data_dir", "n_train", "n_test", "batch_size", "lr", "device",
                "threads") if getattr(args, name) is not None}
    out = args.out or str(default_run_dir(f"grid-{args.task}-{args.solver}"))
    result = run_grid(args.task, args.solver, steps=args.steps, tolerances=args.tolerances,
                      seeds=args.seeds, iterations=args.iterations,
                      threshold=args.threshold, train_options=options, out=out,
                      keep_runs=args.keep_runs, log=None if args.quiet else print)
    print(result.table())
    print(f"wrote {out}/results.json, grid.md, grid.png")
    return 0


def _reference_solver(text: str):  # -> SolverConfig
    """``METHOD:STEPS`` (a fixed-step method) or ``METHOD:TOL`` (an adaptive one)."""
    from ..nn import SolverConfig
    from ..solvers.config import method_kind

    name, sep, value = text.partition(":")
    if not sep or not value:
        raise argparse.ArgumentTypeError(f"must be METHOD:STEPS or METHOD:TOL (e.g. rk4:256, "
                                         f"dopri5:1e-7), got {text!r}")
    try:
        adaptive = method_kind(name) == "adaptive"
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if adaptive:
        tol = _tolerance(value)
        return SolverConfig(method=name, rtol=tol, atol=tol)
    return SolverConfig(method=name, num_steps=positive_int_arg(value))


def _train_parser() -> argparse.ArgumentParser:
    """The ``hyperode train`` parser, to copy its options."""
    from .. import cli as main_cli

    holder = argparse.ArgumentParser(add_help=False)
    sub = holder.add_subparsers()
    main_cli._add_train_parser(sub)
    return sub.choices["train"]


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``odeness`` and ``adapt`` subcommands to ``hyperode``'s subparsers."""
    from ..experiments.config import DEVICES

    p = subparsers.add_parser(
        "odeness", help="solver-independence report of a trained run (Ott et al.)",
        description="Evaluate a trained Neural ODE with its training solver and more "
                    "accurate test solvers (step factors 0.5-2 or tolerance factors "
                    "0.1-10); write a table, odeness.png and a verdict.")
    p.add_argument("--model", required=True, metavar="RUN_DIR",
                   help="a finished training run folder (hyperode train --out DIR)")
    p.add_argument("--out", metavar="DIR", help="output folder (default RUN_DIR/odeness)")
    p.add_argument("--threshold", type=_fraction, default=0.1,
                   help="largest tolerated accuracy gap (default 0.1)")
    p.add_argument("--batch-size", type=positive_int_arg, default=1000, metavar="B")
    p.add_argument("--reference", type=_reference_solver, metavar="METHOD:STEPS|METHOD:TOL",
                   help="add a far more accurate solver to the verdict, e.g. rk4:256 (fixed "
                        "steps) or dopri5:1e-7 (rtol = atol); the paper's test solvers are "
                        "only a little more accurate than the training solver")
    p.add_argument("--device", choices=DEVICES, help="default cpu")
    p.set_defaults(run=_odeness, parser=p)

    a = subparsers.add_parser(
        "adapt", parents=[_train_parser()], conflict_handler="resolve",
        help="train with step or tolerance adaptation (Ott et al., Algorithms 2/3)",
        usage="hyperode adapt --task TASK --adapt step|tolerance [train options]",
        description="Train like `hyperode train`, adapting the solver every --adapt-every "
                    "iterations: --adapt step (fixed-step --method; the step starts at "
                    "Hairer's starting step) or --adapt tolerance (adaptive --method, "
                    "starting at --initial-tol). Every `hyperode train` option applies.")
    g = a.add_argument_group("adaptation")
    g.add_argument("--adapt", required=True, choices=("step", "tolerance"),
                   help="what to adapt")
    g.add_argument("--adapt-every", type=positive_int_arg, default=50, metavar="N",
                   help="check every N iterations (default 50)")
    g.add_argument("--threshold", type=_fraction, default=0.1,
                   help="accuracy gap that fails a check (default 0.1)")
    g.add_argument("--max-steps", type=positive_int_arg, default=500, metavar="N",
                   help="most steps over the span (step adaptation; default 500)")
    g.add_argument("--factor", type=_above(1.0), default=50.0,
                   help="test solver's error is this many times smaller (default 50)")
    g.add_argument("--test-method", choices=("midpoint", "rk4"),
                   help="test method of step adaptation (default: euler->midpoint, "
                        "midpoint->rk4)")
    g.add_argument("--initial-tol", type=_above(0.0), default=1e-6, metavar="TOL",
                   help="starting tolerance of tolerance adaptation (default 1e-6)")
    a.set_defaults(run=_adapt, parser=a)

    _add_grid_parser(subparsers)


def _add_grid_parser(subparsers: argparse._SubParsersAction) -> None:
    from ..experiments.config import DEVICES
    from ..experiments.tasks import CLASSIFICATION, PRESETS
    from .grid import ADAPTIVE_METHODS, FIXED_METHODS

    tasks = [name for name, preset in PRESETS.items() if preset.kind == CLASSIFICATION]
    g = subparsers.add_parser(
        "grid", help="grid search over training steps or tolerances (Ott et al., Fig. 4)",
        usage="hyperode grid --task TASK --solver SOLVER [--steps N1,N2,... | "
              "--tolerances T1,T2,...] [options]",
        description="Train a classification task once per training solver setting and "
                    "seed, evaluate every model with its training solver and more accurate "
                    "test solvers, and report the critical step count (smallest count from "
                    "which every larger one is valid) or critical tolerance (largest "
                    "tolerance from which every tighter one is valid).",
        epilog=GRID_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    g.add_argument("--task", required=True, choices=tasks, help="what to train on")
    g.add_argument("--solver", required=True, choices=FIXED_METHODS + ADAPTIVE_METHODS,
                   help="training solver: euler, midpoint, rk4 (grid over --steps) or "
                        "fehlberg2, dopri5 (grid over --tolerances)")
    g.add_argument("--steps", type=list_arg("step count", positive_int_arg),
                   metavar="N1,N2,...", help="step counts of a fixed-step solver (default "
                                             "1,2,4,8,16,32,64)")
    g.add_argument("--tolerances", type=list_arg("tolerance", _tolerance), metavar="T1,T2,...",
                   help="rtol = atol of an adaptive solver (default 1e-1,1e-2,...,1e-5)")
    g.add_argument("--seeds", type=list_arg("seed", int_arg(0)), default=[0], metavar="S1,S2,...",
                   help="training seeds (default 0); validity needs every seed")
    g.add_argument("--iterations", type=positive_int_arg, metavar="N",
                   help="training iterations per run (default: the task's)")
    g.add_argument("--threshold", type=_fraction, default=0.1,
                   help="largest tolerated accuracy loss of a more accurate solver "
                        "(default 0.1)")
    g.add_argument("--out", metavar="DIR",
                   help="results folder (default runs/grid-<task>-<solver>-<time>)")
    t = g.add_argument_group("training (default: the task's)")
    t.add_argument("--dim", type=positive_int_arg, help="dimension of the spheres task")
    t.add_argument("--model", help="architecture variant of the task")
    t.add_argument("--data-dir", metavar="DIR", help="folder of the MNIST / CIFAR-10 files")
    t.add_argument("--n-train", type=positive_int_arg, metavar="N", help="training set size")
    t.add_argument("--n-test", type=positive_int_arg, metavar="N", help="test set size")
    t.add_argument("--batch-size", type=positive_int_arg, metavar="B")
    t.add_argument("--lr", type=_above(0.0), help="initial learning rate")
    t.add_argument("--device", choices=DEVICES, help="default: cuda when available")
    t.add_argument("--threads", type=positive_int_arg, default=1, metavar="N",
                   help="CPU threads (default 1)")
    t.add_argument("--keep-runs", action="store_true",
                   help="keep every training run folder under OUT/runs")
    t.add_argument("--quiet", action="store_true", help="no line per finished run")
    g.set_defaults(run=_grid, parser=g)
