"""The ``hyperode`` command (also ``python -m hyperode``).

One module per command (``train``, ``adapt``, ``grid``, ``odeness``, ``hyper``,
``sample``, ``demo``), the argument types they share in ``args`` and the error reporting in
``errors``. Errors: every command turns the library's errors into one line on stderr,
``hyperode <command>: error: ...``, naming the flag or the file, and exits with status
2 for bad input (an invalid flag, a damaged run folder or data file, ``--resume`` with
nothing to resume) or 1 for a run that failed (a diverging training run, a failed
solve, a file that cannot be written); never with a traceback (``errors.guarded``). A
traceback means a bug: please report it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from . import adapt, demo, grid, hyper, odeness, sample, train
from .errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, Parser, describe_error
from .train import train_config_from_args

__all__ = ["EXIT_BAD_INPUT", "EXIT_FAILED", "EXIT_INTERRUPTED", "build_parser",
           "describe_error", "main", "train_config_from_args"]


def build_parser() -> Parser:
    """The ``hyperode`` parser with every command."""
    parser = Parser(prog="hyperode", description="The ``hyperode`` command (also ``python -m "
                                                 "hyperode``).")
    sub = parser.add_subparsers(dest="command", required=True)
    demo.add_parsers(sub)
    hyper.add_parser(sub)
    train.add_parser(sub)
    odeness.add_parser(sub)
    adapt.add_parser(sub)
    grid.add_parser(sub)
    sample.add_parser(sub)
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

