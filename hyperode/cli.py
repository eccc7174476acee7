"""The ``hyperode`` command (also ``python -m hyperode``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

TRAIN_EPILOG = """\
tasks (defaults; every one can be overridden by the options above):
{tasks}

examples:
  hyperode train --task spheres                  # Sphere2, dopri5; about 30 s on 2 CPU cores
  hyperode train --task digits --method euler --num-steps 4 --out runs/digits-euler
  hyperode train --task cnf2d --density rings --adjoint --seminorm
  hyperode train --task mnist --data-dir ~/data/mnist --device cuda
  hyperode train --task digits --out runs/digits-euler --resume   # continue that run
  torchrun --nproc_per_node 2 -m hyperode train --task digits      # data parallel

A run writes its folder (--out, default runs/<task>-<timestamp>): config.json,
metrics.jsonl (one line per iteration), results.json, PNG plots, checkpoint.pt and
model.safetensors. Ctrl-C finishes the current iteration and writes a checkpoint;
--resume continues from it.
"""


def _demo(args: argparse.Namespace) -> int:
    from .experiments.demo import format_table, run_demo

    rows = run_demo(num_steps=args.steps, rtol=args.rtol, atol=args.atol)
    print("hyperode demo: every method on reference problems with exact solutions (float64)")
    print(f"fixed-step methods: {args.steps} equal steps; adaptive: rtol={args.rtol:g}, "
          f"atol={args.atol:g}; error = max |y - y_exact| over 11 output times\n")
    print(format_table(rows))
    return 0


# --------------------------------------------------------------------------- train

#: TrainConfig fields that the ``train`` command sets, with their flags.
_FLAGS = {
    "task": "--task", "dim": "--dim", "density": "--density", "data_dir": "--data-dir",
    "n_train": "--n-train", "n_test": "--n-test", "data_seed": "--data-seed",
    "model": "--model", "method": "--method", "step_size": "--step-size",
    "num_steps": "--num-steps", "rtol": "--rtol", "atol": "--atol", "adjoint": "--adjoint",
    "seminorm": "--seminorm", "iterations": "--iterations", "batch_size": "--batch-size",
    "lr": "--lr", "lr_min": "--lr-min", "optimizer": "--optimizer",
    "weight_decay": "--weight-decay", "clip": "--clip", "seed": "--seed",
    "device": "--device", "threads": "--threads", "out": "--out", "resume": "--resume",
    "quiet": "--quiet",
    "eval_every": "--eval-every", "eval_batch_size": "--eval-batch-size",
    "checkpoint_every": "--checkpoint-every", "plots": "--no-plots",
}


def _task_table() -> str:
    from .experiments.tasks import PRESETS

    lines = []
    for name, p in PRESETS.items():
        data = " (needs --data-dir)" if p.needs_data_dir else ""
        lines.append(f"  {name:8s} {p.summary}{data}")
        lines.append(f"  {'':8s}   model {'|'.join(p.models)}; {p.solver.describe()}; "
                     f"{p.iterations} it, batch {p.batch_size}, {p.optimizer} lr {p.lr:g}")
    return "\n".join(lines)


def _add_train_parser(sub: argparse._SubParsersAction) -> None:
    from .data import DENSITIES, TASKS
    from .experiments.config import DEVICES, OPTIMIZERS
    from .solvers.methods import METHODS

    p = sub.add_parser(
        "train", help="train a Neural ODE or CNF on a task and write a run folder",
        usage="hyperode train --task TASK [options]   (hyperode train -h: every option)",
        description="Train a continuous-depth model on one of the tasks and write a run "
                    "folder with metrics, results, plots and checkpoints. Options left "
                    "out take the task's defaults (listed below).",
        epilog=TRAIN_EPILOG.format(tasks=_task_table()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    data = p.add_argument_group("data")
    data.add_argument("--task", required=True, choices=TASKS, help="what to train on")
    data.add_argument("--dim", type=int, help="dimension of the spheres task (default 2)")
    data.add_argument("--density", choices=DENSITIES,
                      help="2-D target density of the cnf2d task (default pinwheel)")
    data.add_argument("--data-dir", metavar="DIR",
                      help="folder with the MNIST / CIFAR-10 files (required for those)")
    data.add_argument("--n-train", type=int, metavar="N", help="training set size")
    data.add_argument("--n-test", type=int, metavar="N", help="test set size")
    data.add_argument("--data-seed", type=int, metavar="S",
                      help="seed of the data generator / subset (default 0)")
    data.add_argument("--model", help="architecture variant of the task (see below)")

    solver = p.add_argument_group(
        "solver", "fixed grid: --method M with --step-size or --num-steps (adaptive methods "
                  "may run on a grid too); adaptive: --method dopri5 --rtol R --atol A")
    solver.add_argument("--method", choices=list(METHODS), metavar="METHOD",
                        help=f"one of {', '.join(METHODS)}")
    solver.add_argument("--step-size", type=float, metavar="H", help="fixed step size")
    solver.add_argument("--num-steps", type=int, metavar="K",
                        help="number of equal steps over the depth span")
    solver.add_argument("--rtol", type=float, help="relative tolerance (adaptive methods)")
    solver.add_argument("--atol", type=float, help="absolute tolerance (adaptive methods)")
    solver.add_argument("--adjoint", action="store_true", default=None,
                        help="gradients by the adjoint method (O(1) memory in depth)")
    solver.add_argument("--seminorm", action="store_true", default=None,
                        help="with --adjoint: seminorm error control of the backward solve")

    opt = p.add_argument_group("optimisation")
    opt.add_argument("--iterations", type=int, metavar="N", help="optimiser steps")
    opt.add_argument("--batch-size", type=int, metavar="B",
                     help="batch size (global: split over processes under torchrun)")
    opt.add_argument("--lr", type=float, help="initial learning rate")
    opt.add_argument("--lr-min", type=float, metavar="LR",
                     help="final learning rate of the cosine schedule")
    opt.add_argument("--optimizer", choices=OPTIMIZERS)
    opt.add_argument("--weight-decay", type=float, metavar="W")
    opt.add_argument("--clip", type=float, metavar="C",
                     help="maximum gradient norm (0: no clipping)")
    opt.add_argument("--seed", type=int, metavar="S",
                     help="seed of the initialisation and data order (default 0)")

    run = p.add_argument_group("run")
    run.add_argument("--device", choices=DEVICES,
                     help="default: cuda when available, else cpu")
    run.add_argument("--threads", type=int, metavar="N",
                     help="CPU threads (default: 1 for the small tasks, torch's default for "
                          "mnist/cifar10)")
    run.add_argument("--out", metavar="DIR",
                     help="run folder (default runs/<task>-<timestamp>)")
    run.add_argument("--resume", action="store_true", default=None,
                     help="continue the run in --out (default: the latest runs/<task>-*) "
                          "from its last checkpoint")
    run.add_argument("--quiet", action="store_true", default=None,
                     help="no progress bars or prints")
    run.add_argument("--eval-every", type=int, metavar="N",
                     help="evaluate on the test split every N iterations")
    run.add_argument("--eval-batch-size", type=int, metavar="B")
    run.add_argument("--checkpoint-every", type=int, metavar="N")
    run.add_argument("--no-plots", dest="plots", action="store_false", default=None,
                     help="skip the PNG plots")
    p.set_defaults(run=_train, parser=p)


def train_config_from_args(args: argparse.Namespace):  # -> TrainConfig
    """The ``TrainConfig`` of parsed ``train`` arguments (unset options stay at their
    defaults, so that task presets and resumed runs fill them in)."""
    from .experiments.config import TrainConfig

    given = {field: getattr(args, field) for field in _FLAGS
             if getattr(args, field, None) is not None}
    return TrainConfig(**given)


def _train(args: argparse.Namespace) -> int:
    from .experiments import CheckpointError, ConfigError, resolve_config, train

    parser: argparse.ArgumentParser = args.parser
    try:
        config = train_config_from_args(args)
        resolve_config(config)
        result = train(config, handle_signals=True)
    except ConfigError as e:
        parser.error(f"argument {_FLAGS.get(e.field, e.field)}: {e.detail}")
    except (FileNotFoundError, CheckpointError) as e:  # missing data files, bad checkpoint
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 1
    return 130 if result.results.get("status") == "interrupted" else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hyperode", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="solve reference problems with every method")
    demo.add_argument("--steps", type=int, default=100, help="steps of fixed-step methods")
    demo.add_argument("--rtol", type=float, default=1e-6, help="rtol of adaptive methods")
    demo.add_argument("--atol", type=float, default=1e-9, help="atol of adaptive methods")
    demo.set_defaults(run=_demo)
    _add_train_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
