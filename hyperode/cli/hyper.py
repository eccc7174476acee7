"""``hyperode hyper fit|eval|pareto``: hypersolvers on a trained Neural ODE.

Every option's ``dest`` is the pipeline argument it fills (``fit_hypersolver``,
``evaluate_hypersolver``, ``replot``), so a ``ConfigError`` naming an argument is
reported with its flag.
"""

from __future__ import annotations

import argparse

import torch

from ..experiments.hyper import evaluate_hypersolver, fit_hypersolver, replot
from .args import list_arg, positive_float_arg, positive_int_arg, step_counts_arg
from .errors import guarded


@guarded
def run(args: argparse.Namespace) -> int:
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


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``hyperode hyper fit|eval|pareto``."""
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
    fit.add_argument("--steps", type=step_counts_arg, default=[10], metavar="K[,K2,...]",
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
    ev.add_argument("--steps", type=step_counts_arg, metavar="K1,K2,...",
                    help="step counts of the fixed-step methods")
    ev.add_argument("--hyper-steps", type=step_counts_arg, metavar="K1,K2,...",
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
        p.set_defaults(run=run, parser=p)
