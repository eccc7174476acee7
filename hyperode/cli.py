"""The ``hyperode`` command (also ``python -m hyperode``).

Errors: every command turns the library's errors into one line on stderr, ``hyperode
<command>: error: ...``, naming the flag or the file, and exits with status 2 for bad
input (an invalid flag, a damaged run folder or data file, ``--resume`` with nothing
to resume) or 1 for a run that failed (a diverging training run, a failed solve, a
file that cannot be written); never with a traceback (``guarded``). A traceback means
a bug: please report it.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable, Sequence

#: Exit statuses.
EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 1, 2, 130


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line: ``PROG: error: MESSAGE``."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {one_line(message)}\n")


def one_line(text: object) -> str:
    """``text`` with its lines joined (an error message must stay one line)."""
    return " ".join(str(text).split()) or "(no message)"


def describe_error(e: BaseException, flags: dict[str, str] | None = None
                   ) -> tuple[int, str] | None:
    """``(exit status, message)`` for an error a command reports in one line, ``None``
    for anything else (a bug, which keeps its traceback).

    ``flags`` maps argument names (``ConfigError.field``, or the text before ``": "`` of
    a ``ValueError``) to the command's flags."""
    from .errors import SolverError
    from .experiments.config import ConfigError
    from .experiments.runs import CheckpointError
    from .experiments.train import TrainingDivergedError

    flags = flags or {}
    if isinstance(e, ConfigError):
        flag = flags.get(e.field, "--" + e.field.replace("_", "-"))
        return EXIT_BAD_INPUT, f"argument {flag}: {one_line(e.detail)}"
    if isinstance(e, CheckpointError):
        return EXIT_BAD_INPUT, one_line(e)
    if isinstance(e, TrainingDivergedError):
        return EXIT_FAILED, one_line(e)
    if isinstance(e, SolverError):
        return EXIT_FAILED, f"a solve failed ({type(e).__name__}): {one_line(e)}"
    if isinstance(e, FloatingPointError):
        return EXIT_FAILED, one_line(e)
    if isinstance(e, OSError):
        text = one_line(e)
        if e.filename is not None and str(e.filename) not in text:
            text += f": {e.filename}"
        return EXIT_FAILED, text
    if isinstance(e, ValueError):
        name, sep, detail = str(e).partition(": ")
        if sep and name in flags:
            return EXIT_BAD_INPUT, f"argument {flags[name]}: {one_line(detail)}"
        return EXIT_BAD_INPUT, one_line(e)
    if isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError":  # CPU, CUDA
        return EXIT_FAILED, (f"out of memory ({type(e).__name__}: {one_line(e)[:300]}); try a "
                             f"smaller --batch-size or --eval-batch-size")
    if isinstance(e, KeyboardInterrupt):
        return EXIT_INTERRUPTED, "interrupted"
    return None


def guarded(flags: dict[str, str] | None = None):  # -> decorator
    """Run a command, reporting the errors ``describe_error`` knows in one line on stderr
    and leaving with ``SystemExit`` of their status."""
    def decorate(run: Callable[[argparse.Namespace], int]
                 ) -> Callable[[argparse.Namespace], int]:
        @functools.wraps(run)
        def guarded_run(args: argparse.Namespace) -> int:
            try:
                return run(args)
            except SystemExit:
                raise
            except BaseException as e:
                known = describe_error(e, flags)
                if known is None:
                    raise
                parser = getattr(args, "parser", None)
                prog = parser.prog if parser is not None else "hyperode"
                print(f"{prog}: error: {known[1]}", file=sys.stderr)
                raise SystemExit(known[0]) from None
        return guarded_run
    return decorate

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
--resume continues from it. A diverging run (non-finite loss or gradient, a failed
solve, a solve over --max-steps-per-solve) stops with a one-line error after writing
a checkpoint of the state before the failing iteration.
"""


@guarded({"out": "--out", "iterations": "--train-iterations"})
def _demo(args: argparse.Namespace) -> int:
    if args.solvers:
        return _solvers_demo(args)
    from .experiments.hyper import run_demo_pipeline

    run_demo_pipeline(args.out, train_iterations=args.train_iterations,
                      fit_iterations=args.fit_iterations, quiet=args.quiet)
    return 0


@guarded({"num_steps": "--steps", "steps": "--steps", "rtol": "--rtol", "atol": "--atol"})
def _solvers_demo(args: argparse.Namespace) -> int:
    from .experiments.demo import format_table, run_demo

    rows = run_demo(num_steps=args.steps, rtol=args.rtol, atol=args.atol)
    print("hyperode demo: every method on reference problems with exact solutions (float64)")
    print(f"fixed-step methods: {args.steps} equal steps; adaptive: rtol={args.rtol:g}, "
          f"atol={args.atol:g}; error = max |y - y_exact| over 11 output times\n")
    print(format_table(rows))
    return 0


def _add_solver_table_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=positive_int_arg, default=100,
                   help="steps of fixed-step methods")
    p.add_argument("--rtol", type=positive_float_arg, default=1e-6,
                   help="rtol of adaptive methods")
    p.add_argument("--atol", type=positive_float_arg, default=1e-9,
                   help="atol of adaptive methods")


# --------------------------------------------------------------------------- hyper

#: argument names of the hyper pipeline (ConfigError.field) -> their flags.
_HYPER_FLAGS = {"model": "--model", "hyper": "--hyper", "base": "--base", "steps": "--steps",
                "iterations": "--iterations", "methods": "--methods",
                "hidden": "--hidden", "kernel_size": "--kernel-size",
                "hyper_steps": "--hyper-steps", "results": "--results", "out": "--out"}


def int_arg(minimum: int):  # -> Callable[[str], int]
    """An argparse type: an integer >= ``minimum``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got "
                                             f"{text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {value}")
        return value
    return parse


positive_int_arg = int_arg(1)


def positive_float_arg(text: str) -> float:
    """An argparse type: a finite number > 0."""
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def list_arg(kind: str, parse, *, distinct: bool = True):  # -> Callable[[str], list]
    """An argparse type: a non-empty comma-separated list of values, each checked by
    ``parse`` and, with ``distinct``, all different (``kind`` names one value in the
    messages)."""
    def parse_list(text: str) -> list:
        parts = [p.strip() for p in text.split(",") if p.strip()]
        if not parts:
            raise argparse.ArgumentTypeError(f"needs at least one {kind}, got {text!r}")
        values = [parse(p) for p in parts]
        if distinct and len(set(values)) != len(values):
            raise argparse.ArgumentTypeError(f"{kind}s must be distinct, got {text!r}")
        return values
    return parse_list


_int_list_arg = list_arg("step count", positive_int_arg)


@guarded(_HYPER_FLAGS)
def _hyper(args: argparse.Namespace) -> int:
    import torch

    from .experiments.hyper import evaluate_hypersolver, fit_hypersolver, replot

    torch.set_num_threads(args.threads)
    if args.hyper_command == "fit":
        steps = args.steps[0] if len(args.steps) == 1 else args.steps
        fit_hypersolver(args.model, args.base, steps, iterations=args.iterations,
                        batch_size=args.batch_size, lr=args.lr, tol=args.tol,
                        hidden=args.hidden, kernel_size=args.kernel_size,
                        out=args.out, seed=args.seed, progress=not args.quiet)
    elif args.hyper_command == "eval":
        kw = {} if args.steps is None else {"steps": args.steps}
        evaluate_hypersolver(args.model, args.hyper, out=args.out,
                             methods=args.methods.split(","),
                             hyper_steps=args.hyper_steps, tol=args.tol,
                             tight_tol=args.tight_tol, **kw)
    else:
        made = replot(args.results, args.out)
        print(f"wrote {', '.join(made)}")
    return 0


def _add_hyper_parser(sub: argparse._SubParsersAction) -> None:
    hp = sub.add_parser("hyper", help="fit and evaluate hypersolvers on a trained model",
                        description="Hypersolvers on a trained Neural ODE (a training run "
                                    "folder): fit g, evaluate against Euler/Midpoint/Heun/"
                                    "RK4 and dopri5, draw Pareto fronts.")
    hsub = hp.add_subparsers(dest="hyper_command", required=True)

    fit = hsub.add_parser("fit", help="fit a hypersolver's g by residual fitting",
                          description="Fit g on initial states input_map(x) of the model's "
                                      "training split, residuals at K=--steps against dopri5; "
                                      "writes config.json, hyper.safetensors, results.json "
                                      "and fitting_curve.png.")
    fit.add_argument("--model", required=True, metavar="RUN_DIR",
                     help="training run folder (config.json + model.safetensors)")
    fit.add_argument("--base", default="euler",
                     help="base method: euler, midpoint, heun2, rk4, ... (default euler)")
    fit.add_argument("--steps", type=_int_list_arg, default=[10], metavar="K[,K2,...]",
                     help="steps K of the mesh the residuals are fitted on (default 10); "
                          "several (e.g. 5,10,20) fit one g on every mesh")
    fit.add_argument("--hidden", type=list_arg("width", positive_int_arg, distinct=False),
                     metavar="W1[,W2,...]",
                     help="hidden widths of g (default: 16 channels for image states, "
                          "64,64 for vector states)")
    fit.add_argument("--kernel-size", type=positive_int_arg, default=3, metavar="K",
                     help="odd kernel size of g's convolutions (image states; default 3)")
    fit.add_argument("--iterations", type=positive_int_arg, default=1000, metavar="N")
    fit.add_argument("--batch-size", type=positive_int_arg, default=64, metavar="B")
    fit.add_argument("--lr", type=positive_float_arg, default=1e-3)
    fit.add_argument("--tol", type=positive_float_arg, default=1e-4,
                     help="rtol = atol of the dopri5 reference (default 1e-4)")
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--out", metavar="DIR",
                     help="output folder (default RUN_DIR/hyper-<base>-K<steps>)")
    fit.add_argument("--quiet", action="store_true", help="no progress bar")

    ev = hsub.add_parser("eval", help="evaluate a fitted hypersolver against the classic "
                                      "solvers and dopri5 on the test split",
                         description="Terminal MAPE, accuracy loss, NFE, MACs and time per "
                                     "test batch for every method; Pareto plots, results.json "
                                     "and the fewest steps with < 0.1%% accuracy loss.")
    ev.add_argument("--model", required=True, metavar="RUN_DIR", help="training run folder")
    ev.add_argument("--hyper", required=True, metavar="HYPER_DIR",
                    help="folder written by hyperode hyper fit")
    ev.add_argument("--methods", default="euler,midpoint,heun2,rk4",
                    help="comma-separated fixed-step methods")
    ev.add_argument("--steps", type=_int_list_arg, metavar="K1,K2,...",
                    help="step counts of the fixed-step methods")
    ev.add_argument("--hyper-steps", type=_int_list_arg, metavar="K1,K2,...",
                    help="step counts of the hypersolver (default: --steps)")
    ev.add_argument("--tol", type=positive_float_arg, default=1e-4,
                    help="tolerance of the dopri5 accuracy reference (default 1e-4)")
    ev.add_argument("--tight-tol", type=positive_float_arg, default=1e-7,
                    help="tolerance of the dopri5 error reference (default 1e-7)")
    ev.add_argument("--out", metavar="DIR", help="output folder (default HYPER_DIR/eval)")

    pa = hsub.add_parser("pareto", help="redraw the Pareto plots of an evaluation",
                         description="Redraw the Pareto plots and the table from an "
                                     "evaluation's results.json.")
    pa.add_argument("--results", required=True, metavar="PATH",
                    help="evaluation folder or its results.json")
    pa.add_argument("--out", metavar="DIR", help="where to write the PNGs (default: beside "
                                                 "results.json)")
    for p in (fit, ev, pa):
        p.add_argument("--threads", type=positive_int_arg, default=1,
                       help="CPU threads (default 1)")
        p.set_defaults(run=_hyper, parser=p)


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
    "max_steps_per_solve": "--max-steps-per-solve",
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
    run.add_argument("--max-steps-per-solve", type=int, metavar="N",
                     help="most steps one solve may take (default: 10000, and 50x the "
                          "longest adaptive solve of the earlier iterations, which stops a "
                          "diverging run within one iteration); a run over it stops after "
                          "writing a checkpoint")
    p.set_defaults(run=_train, parser=p)


def train_config_from_args(args: argparse.Namespace):  # -> TrainConfig
    """The ``TrainConfig`` of parsed ``train`` arguments (unset options stay at their
    defaults, so that task presets and resumed runs fill them in)."""
    from .experiments.config import TrainConfig

    given = {field: getattr(args, field) for field in _FLAGS
             if getattr(args, field, None) is not None}
    return TrainConfig(**given)


@guarded(_FLAGS)
def _train(args: argparse.Namespace) -> int:
    from .experiments import resolve_config, train

    config = train_config_from_args(args)
    resolve_config(config)
    result = train(config, handle_signals=True)
    return EXIT_INTERRUPTED if result.results.get("status") == "interrupted" else 0


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="hyperode", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo", help="the hypersolver pipeline on the digits data (--solvers: the solver table)",
        description="Train the digits Neural ODE with dopri5 (reused from OUT/train on a "
                    "second run), fit HyperEuler at K=10, evaluate it against Euler, "
                    "Midpoint, Heun, RK4 and dopri5, print the Pareto table and the speedup, "
                    "write plots. --solvers instead solves reference problems with every "
                    "method.")
    demo.add_argument("--out", default="runs/demo", metavar="DIR",
                      help="demo folder (default runs/demo)")
    demo.add_argument("--train-iterations", type=positive_int_arg, metavar="N",
                      help="training iterations (default 1000)")
    demo.add_argument("--fit-iterations", type=positive_int_arg, default=3000, metavar="N",
                      help="hypersolver fitting iterations (default 3000)")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.add_argument("--solvers", action="store_true",
                      help="run the solver table instead (every method on reference problems)")
    _add_solver_table_args(demo)
    demo.set_defaults(run=_demo, parser=demo)
    solvers = sub.add_parser("solvers-demo",
                             help="solve reference problems with every method")
    _add_solver_table_args(solvers)
    solvers.set_defaults(run=_solvers_demo, parser=solvers)
    _add_hyper_parser(sub)
    _add_train_parser(sub)
    from .adapt.cli import add_parsers as add_adapt_parsers  # imports cli: keep it local

    add_adapt_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code = args.run(args)
    if argv is None and int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        # Under torchrun, gloo's threads abort the interpreter's shutdown about one run
        # in ten ("terminate called without an active exception", exit -6) even after
        # destroy_process_group; a minimal DDP script does the same. Everything has
        # been written and closed by now, so leave without the C++ static teardown.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
