"""The ``hyperode`` command (also ``python -m hyperode``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _demo(args: argparse.Namespace) -> int:
    from .experiments.demo import format_table, run_demo

    rows = run_demo(num_steps=args.steps, rtol=args.rtol, atol=args.atol)
    print("hyperode demo: every method on reference problems with exact solutions (float64)")
    print(f"fixed-step methods: {args.steps} equal steps; adaptive: rtol={args.rtol:g}, "
          f"atol={args.atol:g}; error = max |y - y_exact| over 11 output times\n")
    print(format_table(rows))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hyperode", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="solve reference problems with every method")
    demo.add_argument("--steps", type=int, default=100, help="steps of fixed-step methods")
    demo.add_argument("--rtol", type=float, default=1e-6, help="rtol of adaptive methods")
    demo.add_argument("--atol", type=float, default=1e-9, help="atol of adaptive methods")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
