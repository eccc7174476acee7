"""``hyperode adapt --task spheres --method euler --adapt step [train options]``: train
with step adaptation (fixed-step methods, Ott et al., Algorithm 2) or ``--adapt
tolerance`` (adaptive methods, Algorithm 3); every ``hyperode train`` option applies."""

from __future__ import annotations

import argparse

from ..adapt.step_adaptation import StepAdaptation
from ..adapt.tolerance_adaptation import ToleranceAdaptation
from ..errors import ConfigError
from ..experiments import train
from ..experiments.config import resolve_run
from ..nn.callbacks import Callback
from ..solvers.config import method_kind
from ..solvers.methods import METHODS
from .args import above_arg, fraction_arg, positive_int_arg
from .errors import EXIT_INTERRUPTED, guarded
from .train import add_train_arguments, train_config_from_args


@guarded
def run(args: argparse.Namespace) -> int:
    config = train_config_from_args(args)
    if (args.adapt == "step" and config.method in METHODS
            and method_kind(config.method) == "fixed"
            and config.step_size is None and config.num_steps is None):
        config = config.replace(num_steps=1)  # replaced by the starting step
    _, solver = resolve_run(config)
    callback: Callback
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


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``hyperode adapt``."""
    a = subparsers.add_parser(
        "adapt", help="train with step or tolerance adaptation (Ott et al., Algorithms 2/3)",
        usage="hyperode adapt --task TASK --adapt step|tolerance [train options]",
        description="Train like `hyperode train`, adapting the solver every --adapt-every "
                    "iterations: --adapt step (fixed-step --method; the step starts at "
                    "Hairer's starting step) or --adapt tolerance (adaptive --method, "
                    "starting at --initial-tol). Every `hyperode train` option applies.")
    add_train_arguments(a)
    g = a.add_argument_group("adaptation")
    g.add_argument("--adapt", required=True, choices=("step", "tolerance"),
                   help="what to adapt")
    g.add_argument("--adapt-every", type=positive_int_arg, default=50, metavar="N",
                   help="check every N iterations (default 50)")
    g.add_argument("--threshold", type=fraction_arg, default=0.1,
                   help="accuracy gap that fails a check (default 0.1)")
    g.add_argument("--max-steps", type=positive_int_arg, default=500, metavar="N",
                   help="most steps over the span (step adaptation; default 500)")
    g.add_argument("--factor", type=above_arg(1.0), default=50.0,
                   help="test solver's error is this many times smaller (default 50)")
    g.add_argument("--test-method", choices=("midpoint", "rk4"),
                   help="test method of step adaptation (default: euler->midpoint, "
                        "midpoint->rk4)")
    g.add_argument("--initial-tol", type=above_arg(0.0), default=1e-6, metavar="TOL",
                   help="starting tolerance of tolerance adaptation (default 1e-6)")
    a.set_defaults(run=run, parser=a)
