"""``hyperode demo`` (the hypersolver pipeline on the digits data) and ``hyperode
solvers-demo`` (every method on reference problems with exact solutions)."""

from __future__ import annotations

import argparse

from ..experiments.demo import format_table, run_demo
from ..experiments.hyper import run_demo_pipeline
from .args import positive_float_arg, positive_int_arg
from .errors import guarded


@guarded
def run(args: argparse.Namespace) -> int:
    if args.solvers:
        return run_solvers(args)
    run_demo_pipeline(args.out, train_iterations=args.iterations,
                      fit_iterations=args.fit_iterations, quiet=args.quiet)
    return 0


@guarded
def run_solvers(args: argparse.Namespace) -> int:
    rows = run_demo(num_steps=args.num_steps, rtol=args.rtol, atol=args.atol)
    print("hyperode demo: every method on reference problems with exact solutions (float64)")
    print(f"fixed-step methods: {args.num_steps} equal steps; adaptive: rtol={args.rtol:g}, "
          f"atol={args.atol:g}; error = max |y - y_exact| over 11 output times\n")
    print(format_table(rows))
    return 0


def _add_solver_table_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", dest="num_steps", type=positive_int_arg, default=100,
                   help="steps of fixed-step methods")
    p.add_argument("--rtol", type=positive_float_arg, default=1e-6,
                   help="rtol of adaptive methods")
    p.add_argument("--atol", type=positive_float_arg, default=1e-9,
                   help="atol of adaptive methods")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``hyperode demo`` and ``hyperode solvers-demo``."""
    demo = sub.add_parser(
        "demo", help="the hypersolver pipeline on the digits data (--solvers: the solver table)",
        description="Train the digits Neural ODE with dopri5 (reused from OUT/train on a "
                    "second run), fit HyperEuler at K=10, evaluate it against Euler, "
                    "Midpoint, Heun, RK4 and dopri5, print the Pareto table and the speedup, "
                    "write plots. --solvers instead solves reference problems with every "
                    "method.")
    demo.add_argument("--out", default="runs/demo", metavar="DIR",
                      help="demo folder (default runs/demo)")
    # dest: the training run's setting it fills (errors about it name this flag)
    demo.add_argument("--train-iterations", dest="iterations", type=positive_int_arg,
                      metavar="N", help="training iterations (default 1000)")
    demo.add_argument("--fit-iterations", type=positive_int_arg, default=3000, metavar="N",
                      help="hypersolver fitting iterations (default 3000)")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.add_argument("--solvers", action="store_true",
                      help="run the solver table instead (every method on reference problems)")
    _add_solver_table_args(demo)
    demo.set_defaults(run=run, parser=demo)
    solvers = sub.add_parser("solvers-demo",
                             help="solve reference problems with every method")
    _add_solver_table_args(solvers)
    solvers.set_defaults(run=run_solvers, parser=solvers)
