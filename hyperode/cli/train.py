"""``hyperode train``: train a Neural ODE or CNF on a task and write a run folder.

Every option fills the ``TrainConfig`` field of the same name (its ``dest``); options
left out stay ``None`` so that the task's preset, or the run being resumed, fills them.
"""

from __future__ import annotations

import argparse

from ..data import DENSITIES
from ..errors import ConfigError
from ..experiments import TrainConfig, train
from ..experiments.config import DEVICES, OPTIMIZERS
from ..experiments.flow import FLOW_TASKS, FlowRunConfig, flow_task_fields, train_flow_run
from ..experiments.tasks import TASKS
from ..flow.couplings import COUPLINGS
from ..flow.paths import PATHS
from ..solvers.methods import METHODS
from .errors import EXIT_INTERRUPTED, guarded

TRAIN_EPILOG = """\
tasks (defaults; every one can be overridden by the options above):
{tasks}

examples:
  hyperode train --task spheres                  # Sphere2, dopri5; about 30 s on 2 CPU cores
  hyperode train --task digits --method euler --num-steps 4 --out runs/digits-euler
  hyperode train --task cnf2d --density rings --adjoint --seminorm
  hyperode train --task fm2d --density checkerboard --coupling ot --out runs/fm2d
  hyperode train --task mnist --data-dir ~/data/mnist --device cuda
  hyperode train --task digits --out runs/digits-euler --resume   # continue that run
  torchrun --nproc_per_node 2 -m hyperode train --task digits      # data parallel

A run writes its folder (--out, default runs/<task>-<timestamp>): config.json,
metrics.jsonl (one line per iteration), results.json, PNG plots, checkpoint.pt and
model.safetensors. Ctrl-C finishes the current iteration and writes a checkpoint;
--resume continues from it. A diverging run (non-finite loss or gradient, a failed
solve, a solve over --max-steps-per-solve) stops with a one-line error after writing
a checkpoint of the state before the failing iteration.

The flow-matching tasks (fm2d, fm-digits, fm-mnist5k) train without solving (the
conditional flow-matching regression) and take the data, optimisation and run options
(not the solver ones, --resume or the evaluation schedule) plus --path, --sigma-min,
--coupling and --ema. Their folder holds config.json, model.safetensors, results.json
(loss history; quality of dopri5 samples against held-out data), training_loss.png and
samples.png; hyperode sample fit|eval fits and compares few-step samplers on it.
"""


def _task_table() -> str:
    lines = []
    for name, task in TASKS.items():
        p = task.preset
        data = " (needs --data-dir)" if task.needs_data_dir else ""
        lines.append(f"  {name:8s} {task.summary}{data}")
        lines.append(f"  {'':8s}   model {'|'.join(task.models)}; {p.solver.describe()}; "
                     f"{p.iterations} it, batch {p.batch_size}, {p.optimizer} lr {p.lr:g}")
    for name, flow in FLOW_TASKS.items():
        c = flow.train
        lines.append(f"  {name:8s} {flow.summary}")
        lines.append(f"  {'':8s}   {c.path} path, {c.coupling} coupling; {c.iterations} it, "
                     f"batch {c.batch_size}, adamw lr {c.lr:g}, ema {c.ema:g}")
    return "\n".join(lines)


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``hyperode train``; returns its parser."""
    p = sub.add_parser(
        "train", help="train a Neural ODE or CNF on a task and write a run folder",
        usage="hyperode train --task TASK [options]   (hyperode train -h: every option)",
        description="Train a continuous-depth model on one of the tasks and write a run "
                    "folder with metrics, results, plots and checkpoints. Options left "
                    "out take the task's defaults (listed below).",
        epilog=TRAIN_EPILOG.format(tasks=_task_table()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_train_arguments(p, flow_tasks=True)
    flow = p.add_argument_group(
        "flow matching", "only for the tasks fm2d, fm-digits, fm-mnist5k (--path, "
                         "--sigma-min, --coupling, --ema are checked by "
                         "hyperode.flow.FlowTrainConfig)")
    flow.add_argument("--path", metavar="|".join(PATHS),
                      help="probability path (default linear)")
    flow.add_argument("--sigma-min", type=float, metavar="S",
                      help="the linear path's end-point noise in [0, 1) (default 0)")
    flow.add_argument("--coupling", metavar="|".join(COUPLINGS),
                      help="pairing of noise and data: independent (default) or ot "
                           "(minibatch optimal transport)")
    flow.add_argument("--ema", type=float, metavar="DECAY",
                      help="weight-EMA decay in [0, 1), 0 off (default: the task's)")
    flow.add_argument("--classifier-epochs", type=int, metavar="N",
                      help="image tasks: epochs of the feature classifier the sample "
                           "quality is measured with (default 30; fm-mnist5k 10)")
    p.set_defaults(run=run, parser=p)
    return p


#: The options only the flow-matching tasks take (``FlowRunConfig`` fields).
FLOW_OPTIONS = ("path", "sigma_min", "coupling", "ema", "classifier_epochs")


def add_train_arguments(p: argparse.ArgumentParser, *, flow_tasks: bool = False) -> None:
    """Every ``TrainConfig`` option (``dest`` = the field), in groups; shared by
    ``hyperode train`` and ``hyperode adapt`` (``flow_tasks``: the flow-matching tasks
    are ``--task`` choices too)."""
    data = p.add_argument_group("data")
    tasks = list(TASKS) + (list(FLOW_TASKS) if flow_tasks else [])
    data.add_argument("--task", required=True, choices=tasks, help="what to train on")
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
    run.add_argument("--max-steps-per-solve", type=int, metavar="N",
                     help="most steps one solve may take (default: 10000, and 50x the "
                          "longest adaptive solve of the earlier iterations, which stops a "
                          "diverging run within one iteration); a run over it stops after "
                          "writing a checkpoint")


def train_config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The ``TrainConfig`` of parsed ``train`` arguments (unset options stay at their
    defaults, so that task presets and resumed runs fill them in)."""
    names = TrainConfig.__dataclass_fields__
    given = {name: value for name, value in vars(args).items()
             if name in names and value is not None}
    return TrainConfig(**given)


def flow_config_from_args(args: argparse.Namespace) -> FlowRunConfig:
    """The ``FlowRunConfig`` of parsed ``train`` arguments for a flow-matching task; an
    option it does not take is a ``ConfigError`` naming it."""
    taken = flow_task_fields()
    given = {name: value for name, value in vars(args).items()
             if (name in TrainConfig.__dataclass_fields__ or name in FLOW_OPTIONS)
             and value is not None}
    for name in given:
        if name not in taken:
            raise ConfigError(name, f"does not apply to the flow-matching task {args.task} "
                                    f"(it trains without a solver; see hyperode train -h)")
    return FlowRunConfig(**given)


@guarded
def run(args: argparse.Namespace) -> int:
    if args.task in FLOW_TASKS:
        train_flow_run(flow_config_from_args(args))
        return 0
    for name in FLOW_OPTIONS:
        if getattr(args, name, None) is not None:
            raise ConfigError(name, f"applies only to the flow-matching tasks "
                                    f"({', '.join(FLOW_TASKS)}), not to {args.task}")
    result = train(train_config_from_args(args), handle_signals=True)
    return EXIT_INTERRUPTED if result.results.get("status") == "interrupted" else 0
