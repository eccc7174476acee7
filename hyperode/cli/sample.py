"""``hyperode sample fit|eval``: learned samplers of a flow-matching run.

Every option's ``dest`` is the argument of ``fit_run_sampler`` / ``evaluate_run`` it
fills, so a ``ConfigError`` naming an argument is reported with its flag.
"""

from __future__ import annotations

import argparse

import torch

from ..experiments.sampling import (
    DEFAULT_NFES,
    SAMPLERS,
    evaluate_run,
    fit_run_sampler,
    format_table,
)
from .args import int_arg, list_arg, positive_float_arg, positive_int_arg
from .errors import guarded


@guarded
def run(args: argparse.Namespace) -> int:
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        if args.sample_command == "fit":
            fit_run_sampler(args.model, args.sampler, args.nfe, iterations=args.iterations,
                            batch_size=args.batch_size, pairs=args.pairs, lr=args.lr,
                            tol=args.tol, hidden=args.hidden, seed=args.seed,
                            quiet=args.quiet)
        else:
            results = evaluate_run(args.model, nfe=args.nfe, samplers=args.samplers,
                                   samples=args.samples, tol=args.tol, repeats=args.repeats,
                                   seed=args.seed, plots=args.plots)
            print(format_table(results))
            if results["skipped"]:
                print(f"not run (NFE not a multiple of the method's stages): "
                      f"{', '.join(results['skipped'])}")
            print(f"results in {args.model}/sampling/results.json")
    finally:
        torch.set_num_threads(threads)
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``hyperode sample fit|eval``."""
    sp = sub.add_parser("sample", help="fit and evaluate few-step samplers of a flow run",
                        description="Learned few-step samplers of a flow-matching run (a "
                                    "folder written by hyperode train --task fm2d|fm-digits|"
                                    "fm-mnist5k): fit them, then evaluate them with Euler, "
                                    "Midpoint and RK4 against dopri5.")
    ssub = sp.add_subparsers(dest="sample_command", required=True)

    fit = ssub.add_parser(
        "fit", help="fit a learned sampler to the flow",
        description="Fit a hypersolver (trajectory fitting against dopri5 on fresh prior "
                    "noise) or a bespoke solver (end points of prior noise against dopri5) "
                    "at --nfe evaluations of the flow; writes RUN/samplers/<sampler>-nfe<N>/"
                    "sampler.json and state.safetensors.",
        epilog="example: hyperode sample fit --model runs/fm2d --sampler bespoke-midpoint "
               "--nfe 4")
    fit.add_argument("--model", required=True, metavar="RUN", help="flow-matching run folder")
    fit.add_argument("--sampler", required=True, choices=list(SAMPLERS),
                     help="the learned sampler")
    fit.add_argument("--nfe", required=True, type=positive_int_arg, metavar="N",
                     help="evaluations of the flow per sample (a multiple of the base "
                          "method's stages: 1 euler, 2 heun/midpoint, 4 rk4)")
    fit.add_argument("--iterations", type=positive_int_arg, default=300, metavar="N")
    fit.add_argument("--batch-size", type=positive_int_arg, default=256, metavar="B")
    fit.add_argument("--pairs", type=int_arg(2), default=2048, metavar="N",
                     help="bespoke: noise samples with dopri5 end points (default 2048)")
    fit.add_argument("--lr", type=positive_float_arg,
                     help="default 5e-3 (hypersolvers), 2e-2 (bespoke)")
    fit.add_argument("--hidden", type=list_arg("width", positive_int_arg, distinct=False),
                     metavar="W1[,W2,...]",
                     help="hypersolvers: widths of g (default 64,64; images 32,32 channels)")
    fit.add_argument("--quiet", action="store_true", help="no summary line")

    ev = ssub.add_parser(
        "eval", help="evaluate dopri5, Euler/Midpoint/RK4 and the fitted samplers",
        description="Sample from one noise batch with dopri5 (the reference), Euler, "
                    "Midpoint and RK4 at each --nfe their stages divide, and every fitted "
                    "sampler; print a table and write RUN/sampling/results.json, "
                    "quality_vs_nfe.png and samples.png.",
        epilog="example: hyperode sample eval --model runs/fm2d --nfe 2,4,8,16")
    ev.add_argument("--model", required=True, metavar="RUN", help="flow-matching run folder")
    ev.add_argument("--nfe", type=list_arg("NFE", int_arg(1)),
                    default=list(DEFAULT_NFES), metavar="N1,N2,...",
                    help="NFEs of the fixed-step methods (default 2,4,8,16; at most 64)")
    ev.add_argument("--samplers", type=list_arg("sampler", str), metavar="NAME@NFE,...",
                    help="fitted samplers to include, e.g. bespoke-midpoint@4 (default all)")
    ev.add_argument("--samples", type=int_arg(10), metavar="N",
                    help="samples per sampler (default 2000; images: the held-out set, at "
                         "most 1000)")
    ev.add_argument("--repeats", type=positive_int_arg, default=1, metavar="R",
                    help="timed runs per sampler (median reported)")
    ev.add_argument("--no-plots", dest="plots", action="store_false", help="skip the PNGs")
    for p in (fit, ev):
        p.add_argument("--tol", type=positive_float_arg, default=1e-5,
                       help="rtol = atol of the dopri5 reference (default 1e-5)")
        p.add_argument("--seed", type=int_arg(0), default=0, metavar="S")
        p.add_argument("--threads", type=positive_int_arg, default=1,
                       help="CPU threads (default 1)")
        p.set_defaults(run=run, parser=p)
