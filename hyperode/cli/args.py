"""Argument types shared by the commands: each parses one command-line string or raises
``argparse.ArgumentTypeError`` saying what was expected (argparse names the flag)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any


def int_arg(minimum: int) -> Callable[[str], int]:
    """An integer >= ``minimum``."""
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
    """A finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def float_in(low: float, high: float = math.inf, *, include_low: bool = False
             ) -> Callable[[str], float]:
    """A finite number in ``(low, high)`` (``[low, high)`` with ``include_low``)."""
    span = f"{'[' if include_low else '('}{low:g}, {high:g})"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number in {span}, got {text!r}") \
                from None
        above = value >= low if include_low else value > low
        if not (above and value < high and math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"must be a finite number in {span}, got {text!r}")
        return value
    return parse


#: A tolerance in (0, 1); a fraction (accuracy gap) in [0, 1).
tolerance_arg = float_in(0.0, 1.0)
fraction_arg = float_in(0.0, 1.0, include_low=True)


def above_arg(limit: float) -> Callable[[str], float]:
    """A finite number > ``limit``."""
    return float_in(limit)


def list_arg(kind: str, parse: Callable[[str], Any], *, distinct: bool = True
             ) -> Callable[[str], list]:
    """A non-empty comma-separated list of values, each checked by ``parse`` and, with
    ``distinct``, all different (``kind`` names one value in the messages)."""
    def parse_list(text: str) -> list:
        parts = [p.strip() for p in text.split(",") if p.strip()]
        if not parts:
            raise argparse.ArgumentTypeError(f"needs at least one {kind}, got {text!r}")
        values = [parse(p) for p in parts]
        if distinct and len(set(values)) != len(values):
            raise argparse.ArgumentTypeError(f"{kind}s must be distinct, got {text!r}")
        return values
    return parse_list


step_counts_arg = list_arg("step count", positive_int_arg)
