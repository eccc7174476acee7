"""``hyperode odeness --model RUN_DIR [--out DIR]``: the solver-independence report of
a finished training run (Ott et al., ICLR 2021): table, ``odeness.png``,
``odeness.json``, ``odeness.md`` and a verdict."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..adapt.report import solver_independence_report
from ..errors import ConfigError
from ..experiments.config import DEVICES
from ..experiments.trained import load_run
from ..nn import SolverConfig
from ..solvers.config import method_kind
from .args import fraction_arg, positive_int_arg, tolerance_arg
from .errors import guarded


@guarded
def run(args: argparse.Namespace) -> int:
    loaded = load_run(args.model, device=args.device or "cpu", argument="model")
    out = Path(args.out) if args.out else loaded.run_dir / "odeness"
    if out.exists() and not out.is_dir():
        raise ConfigError("out", f"{str(out)!r} exists and is not a folder")
    report = solver_independence_report(loaded.model, loaded.split, loaded.solver,
                                        threshold=args.threshold, out_dir=out,
                                        batch_size=args.batch_size,
                                        reference=args.reference)
    print(report.table())
    print(f"wrote {out / 'odeness.png'}, {out / 'odeness.json'}, {out / 'odeness.md'}")
    return 0


def reference_solver_arg(text: str) -> SolverConfig:
    """``METHOD:STEPS`` (a fixed-step method) or ``METHOD:TOL`` (an adaptive one)."""
    name, sep, value = text.partition(":")
    if not sep or not value:
        raise argparse.ArgumentTypeError(f"must be METHOD:STEPS or METHOD:TOL (e.g. rk4:256, "
                                         f"dopri5:1e-7), got {text!r}")
    try:
        adaptive = method_kind(name) == "adaptive"
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if adaptive:
        tol = tolerance_arg(value)
        return SolverConfig(method=name, rtol=tol, atol=tol)
    return SolverConfig(method=name, num_steps=positive_int_arg(value))


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``hyperode odeness``."""
    p = subparsers.add_parser(
        "odeness", help="solver-independence report of a trained run (Ott et al.)",
        description="Evaluate a trained Neural ODE with its training solver and more "
                    "accurate test solvers (step factors 0.5-2 or tolerance factors "
                    "0.1-10); write a table, odeness.png and a verdict.")
    p.add_argument("--model", required=True, metavar="RUN_DIR",
                   help="a finished training run folder (hyperode train --out DIR)")
    p.add_argument("--out", metavar="DIR", help="output folder (default RUN_DIR/odeness)")
    p.add_argument("--threshold", type=fraction_arg, default=0.1,
                   help="largest tolerated accuracy gap (default 0.1)")
    p.add_argument("--batch-size", type=positive_int_arg, default=1000, metavar="B")
    p.add_argument("--reference", type=reference_solver_arg,
                   metavar="METHOD:STEPS|METHOD:TOL",
                   help="add a far more accurate solver to the verdict, e.g. rk4:256 (fixed "
                        "steps) or dopri5:1e-7 (rtol = atol); the paper's test solvers are "
                        "only a little more accurate than the training solver")
    p.add_argument("--device", choices=DEVICES, help="default cpu")
    p.set_defaults(run=run, parser=p)
