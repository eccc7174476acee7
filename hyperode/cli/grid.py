"""``hyperode grid --task spheres --method euler --steps 1,2,4,8 --seeds 0,1``: train at
every step count (or ``--tolerances`` for fehlberg2/dopri5) and seed, report each
model's solver independence and the critical step count / tolerance (Ott et al., ICLR
2021, Fig. 4). ``--solver`` is an alias of ``--method``."""

from __future__ import annotations

import argparse

from ..adapt.grid import ADAPTIVE_METHODS, FIXED_METHODS
from ..experiments import run_grid
from ..experiments.config import DEVICES
from ..experiments.runs import default_run_dir
from ..experiments.tasks import CLASSIFICATION, TASKS
from .args import above_arg, fraction_arg, int_arg, list_arg, positive_int_arg, tolerance_arg
from .errors import StoreAlias, guarded

GRID_EPILOG = """\
examples:
  hyperode grid --task spheres --method euler --steps 1,2,4,8,16,32 --seeds 0,1,2
  hyperode grid --task spheres --method rk4 --steps 1,2,4,8 --iterations 1500
  hyperode grid --task spheres --method dopri5 --tolerances 1e-1,1e-2,1e-3,1e-4
  hyperode grid --task digits --method euler --steps 1,2,4,8,16 --seeds 0,1 \\
      --iterations 400 --out runs/grid-digits

Fixed-step solvers are tested with themselves and every more accurate one of euler,
midpoint, rk4 at the training step times 0.5, 0.75, 1, 1.5, 2; fehlberg2 with
fehlberg2 and dopri5, dopri5 with dopri5, at the tolerance times 0.1, 1, 10. A
setting is valid when no more accurate test solver loses more than --threshold test
accuracy, for every seed. The folder (--out) gets config.json, results.json (every
run's figures), grid.md (the table, also printed) and grid.png.
"""

#: Options passed on to every training run (``TrainConfig`` fields).
TRAIN_OPTIONS = ("dim", "model", "data_dir", "n_train", "n_test", "batch_size", "lr",
                 "device", "threads")


@guarded
def run(args: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser = args.parser
    flag = (getattr(args, "flags_given", None) or {}).get("method") or "--method"
    if args.steps is not None and args.method in ADAPTIVE_METHODS:
        parser.error(f"argument --steps: applies to fixed-step solvers "
                     f"({', '.join(FIXED_METHODS)}); {flag} {args.method} takes --tolerances")
    if args.tolerances is not None and args.method in FIXED_METHODS:
        parser.error(f"argument --tolerances: applies to adaptive solvers "
                     f"({', '.join(ADAPTIVE_METHODS)}); {flag} {args.method} takes --steps")
    options = {name: getattr(args, name) for name in TRAIN_OPTIONS
               if getattr(args, name) is not None}
    out = args.out or str(default_run_dir(f"grid-{args.task}-{args.method}"))
    result = run_grid(args.task, args.method, steps=args.steps, tolerances=args.tolerances,
                      seeds=args.seeds, iterations=args.iterations,
                      threshold=args.threshold, train_options=options, out=out,
                      keep_runs=args.keep_runs, log=None if args.quiet else print)
    print(result.table())
    print(f"wrote {out}/results.json, grid.md, grid.png")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``hyperode grid``."""
    tasks = [name for name, task in TASKS.items() if task.kind == CLASSIFICATION]
    g = subparsers.add_parser(
        "grid", help="grid search over training steps or tolerances (Ott et al., Fig. 4)",
        usage="hyperode grid --task TASK --method METHOD [--steps N1,N2,... | "
              "--tolerances T1,T2,...] [options]",
        description="Train a classification task once per training solver setting and "
                    "seed, evaluate every model with its training solver and more accurate "
                    "test solvers, and report the critical step count (smallest count from "
                    "which every larger one is valid) or critical tolerance (largest "
                    "tolerance from which every tighter one is valid).",
        epilog=GRID_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    g.add_argument("--task", required=True, choices=tasks, help="what to train on")
    method = g.add_mutually_exclusive_group(required=True)
    for spelling, text in (("--method", "training solver: euler, midpoint, rk4 (grid over "
                                        "--steps) or fehlberg2, dopri5 (grid over "
                                        "--tolerances)"),
                           ("--solver", "alias of --method")):
        method.add_argument(spelling, dest="method", action=StoreAlias, metavar="METHOD",
                            choices=FIXED_METHODS + ADAPTIVE_METHODS, help=text)
    g.add_argument("--steps", type=list_arg("step count", positive_int_arg),
                   metavar="N1,N2,...", help="step counts of a fixed-step solver (default "
                                             "1,2,4,8,16,32,64)")
    g.add_argument("--tolerances", type=list_arg("tolerance", tolerance_arg),
                   metavar="T1,T2,...",
                   help="rtol = atol of an adaptive solver (default 1e-1,1e-2,...,1e-5)")
    g.add_argument("--seeds", type=list_arg("seed", int_arg(0)), default=[0], metavar="S1,S2,...",
                   help="training seeds (default 0); validity needs every seed")
    g.add_argument("--iterations", type=positive_int_arg, metavar="N",
                   help="training iterations per run (default: the task's)")
    g.add_argument("--threshold", type=fraction_arg, default=0.1,
                   help="largest tolerated accuracy loss of a more accurate solver "
                        "(default 0.1)")
    g.add_argument("--out", metavar="DIR",
                   help="results folder (default runs/grid-<task>-<method>-<time>)")
    t = g.add_argument_group("training (default: the task's)")
    t.add_argument("--dim", type=positive_int_arg, help="dimension of the spheres task")
    t.add_argument("--model", help="architecture variant of the task")
    t.add_argument("--data-dir", metavar="DIR", help="folder of the MNIST / CIFAR-10 files")
    t.add_argument("--n-train", type=positive_int_arg, metavar="N", help="training set size")
    t.add_argument("--n-test", type=positive_int_arg, metavar="N", help="test set size")
    t.add_argument("--batch-size", type=positive_int_arg, metavar="B")
    t.add_argument("--lr", type=above_arg(0.0), help="initial learning rate")
    t.add_argument("--device", choices=DEVICES, help="default: cuda when available")
    t.add_argument("--threads", type=positive_int_arg, default=1, metavar="N",
                   help="CPU threads (default 1)")
    t.add_argument("--keep-runs", action="store_true",
                   help="keep every training run folder under OUT/runs")
    t.add_argument("--quiet", action="store_true", help="no line per finished run")
    g.set_defaults(run=run, parser=g)
