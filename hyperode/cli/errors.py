"""How every command reports a failure: one line on stderr, ``hyperode <command>:
error: ...``, and an exit status (2 bad input, 1 a failed run, 130 interrupted).

A ``ConfigError`` carries the name of the bad setting (``field``); the command's own
parser turns it into the flag: every parser's arguments are declared with the setting
they fill as ``dest``, so the table field -> flag is read off the parser
(``flag_table``), and an alias the user typed is reported as typed
(``StoreAlias``). Nothing here reads an exception's message to find the flag.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from typing import Any

from ..errors import ConfigError, SolverError
from ..experiments.runs import CheckpointError
from ..experiments.train import TrainingDivergedError

#: Exit statuses.
EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 1, 2, 130


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line: ``PROG: error: MESSAGE``."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {one_line(message)}\n")


class StoreAlias(argparse._StoreAction):
    """A stored option that remembers which of its spellings was given
    (``namespace.flags_given[dest]``), so that errors name the flag as typed."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        super().__call__(parser, namespace, values, option_string)
        given = dict(getattr(namespace, "flags_given", None) or {})
        given[self.dest] = option_string
        namespace.flags_given = given


def one_line(text: object) -> str:
    """``text`` with its lines joined (an error message must stay one line)."""
    return " ".join(str(text).split()) or "(no message)"


def flag_table(parser: argparse.ArgumentParser | None) -> dict[str, str]:
    """``dest`` -> its long flag, for every option of ``parser``."""
    if parser is None:
        return {}
    table = {}
    for action in parser._actions:
        longs = [s for s in action.option_strings if s.startswith("--")]
        if longs and action.dest not in table and action.dest != "help":
            table[action.dest] = longs[0]
    return table


def flags_of(args: argparse.Namespace) -> dict[str, str]:
    """Setting -> flag for the command ``args`` were parsed for (spellings as typed)."""
    table = flag_table(getattr(args, "parser", None))
    table.update({k: v for k, v in (getattr(args, "flags_given", None) or {}).items() if v})
    return table


def describe_error(e: BaseException, flags: dict[str, str] | None = None
                   ) -> tuple[int, str] | None:
    """``(exit status, message)`` for an error a command reports in one line, ``None``
    for anything else (a bug, which keeps its traceback). ``flags`` maps settings
    (``ConfigError.field``) to the command's flags."""
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
        return EXIT_BAD_INPUT, one_line(e)
    if isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError":  # CPU, CUDA
        return EXIT_FAILED, (f"out of memory ({type(e).__name__}: {one_line(e)[:300]}); try a "
                             f"smaller --batch-size or --eval-batch-size")
    if isinstance(e, KeyboardInterrupt):
        return EXIT_INTERRUPTED, "interrupted"
    return None


Command = Callable[[argparse.Namespace], int]


def guarded(run: Command) -> Command:
    """Run a command, reporting the errors ``describe_error`` knows in one line on stderr
    and leaving with ``SystemExit`` of their status."""
    @functools.wraps(run)
    def guarded_run(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except SystemExit:
            raise
        except BaseException as e:
            known = describe_error(e, flags_of(args))
            if known is None:
                raise
            parser = getattr(args, "parser", None)
            prog = parser.prog if parser is not None else "hyperode"
            print(f"{prog}: error: {known[1]}", file=sys.stderr)
            raise SystemExit(known[0]) from None
    return guarded_run
