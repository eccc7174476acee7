"""``hyperode odeness`` and ``hyperode adapt`` (Ott et al., ICLR 2021).

Hook into ``hyperode/cli.py``'s ``build_parser`` with
``from .adapt.cli import add_parsers; add_parsers(sub)``.

- ``hyperode odeness --model RUN_DIR [--out DIR]``: the solver-independence report
  of a finished training run (table, ``odeness.png``, ``odeness.json``, verdict).
- ``hyperode adapt --task spheres --method euler --adapt step [train options]``:
  train with step adaptation (fixed-step methods) or ``--adapt tolerance`` (adaptive
  methods); every ``hyperode train`` option applies.
"""

from __future__ import annotations

import argparse
import sys

from ..cli import positive_int_arg

_ADAPT_FLAGS = {"every": "--adapt-every", "threshold": "--threshold",
                "max_steps": "--max-steps", "factor": "--factor",
                "test_method": "--test-method", "initial_tol": "--initial-tol"}


def _odeness(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..experiments import CheckpointError, ConfigError
    from ..experiments.trained import load_run
    from .report import solver_independence_report

    parser: argparse.ArgumentParser = args.parser
    try:
        run = load_run(args.model, device=args.device or "cpu", argument="model")
        out = Path(args.out) if args.out else run.run_dir / "odeness"
        report = solver_independence_report(run.model, run.split, run.solver,
                                            threshold=args.threshold, out_dir=out,
                                            batch_size=args.batch_size)
    except ConfigError as e:
        parser.error(f"argument --{e.field.replace('_', '-')}: {e.detail}")
    except CheckpointError as e:
        print(f"{parser.prog}: error: argument --model: {e}", file=sys.stderr)
        return 1
    except ValueError as e:
        parser.error(f"argument --model: {e}")
    print(report.table())
    print(f"wrote {out / 'odeness.png'}, {out / 'odeness.json'}, {out / 'odeness.md'}")
    return 0


def _adapt(args: argparse.Namespace) -> int:
    from .. import cli as main_cli
    from ..experiments import CheckpointError, ConfigError, build_solver, resolve_config, train
    from ..solvers.methods import METHODS, get_method
    from .step_adaptation import StepAdaptation
    from .tolerance_adaptation import ToleranceAdaptation

    parser: argparse.ArgumentParser = args.parser
    flags = {**main_cli._FLAGS, **_ADAPT_FLAGS}
    try:
        config = main_cli.train_config_from_args(args)
        if (args.adapt == "step" and config.method in METHODS
                and not get_method(config.method).adaptive
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
    except ConfigError as e:
        parser.error(f"argument {flags.get(e.field, '--' + e.field)}: {e.detail}")
    except (FileNotFoundError, CheckpointError) as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 1
    return 130 if result.results.get("status") == "interrupted" else 0


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1), got {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1), got {text!r}")
    return value


def _above(limit: float):  # -> Callable[[str], float]
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number > {limit:g}, got "
                                             f"{text!r}") from None
        if not value > limit or value != value or value == float("inf"):
            raise argparse.ArgumentTypeError(f"must be a finite number > {limit:g}, got "
                                             f"{text!r}")
        return value
    return parse


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
