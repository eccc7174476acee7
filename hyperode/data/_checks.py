"""Argument checks and seeded random streams shared by the dataset modules.

Every generator in ``hyperode.data`` draws from ``numpy.random.Generator`` objects
made here, never from global RNG state, so a dataset is a pure function of its
arguments.
"""

from __future__ import annotations

import math
import os
import zlib
from numbers import Integral, Real
from pathlib import Path

import numpy as np


def check_int(name: str, value: object, minimum: int) -> int:
    """Return ``value`` as an ``int`` if it is an integer ``>= minimum``; else ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_dir(name: str, value: object) -> Path:
    """``value`` as a ``Path`` if it is a ``str`` or ``os.PathLike``; else ``ValueError``
    (rather than ``TypeError`` from deep inside ``pathlib``). Existence is checked by the
    readers, which raise ``FileNotFoundError`` listing what they looked for."""
    if isinstance(value, bool) or not isinstance(value, (str, os.PathLike)) or value == "":
        raise ValueError(f"{name} must be a folder path (str or os.PathLike), got "
                         f"{type(value).__name__}: {value!r}")
    return Path(value)


def check_seed(seed: object) -> int:
    """A seed is a non-negative integer (what ``numpy.random.SeedSequence`` accepts)."""
    return check_int("seed", seed, 0)


def check_real(name: str, value: object, *, low: float, high: float = math.inf,
               low_open: bool = False, high_open: bool = False) -> float:
    """Return ``value`` as a finite ``float`` in the given interval; else ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite real number, got {value!r}")
    value = float(value)
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        lo = "(" if low_open else "["
        hi = ")" if high_open or math.isinf(high) else "]"
        raise ValueError(f"{name} must be in {lo}{low:g}, {high:g}{hi}, got {value!r}")
    return value


def rng(seed: int, key: str, stream: int = 0) -> np.random.Generator:
    """An independent generator for (``seed``, dataset ``key``, ``stream``).

    Streams 0 and 1 are used for the training and test sets. Mixing the dataset
    name into the entropy keeps, say, ``xor(seed=0)`` and ``spheres(seed=0)``
    uncorrelated, and using a separate stream (not ``seed + 1``) keeps the test set
    of seed 0 from being the training set of seed 1.
    """
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(key.encode()), stream]))


def train_test_rngs(seed: int, key: str) -> tuple[np.random.Generator, np.random.Generator]:
    """The (train, test) generators of a generated dataset."""
    return rng(seed, key, 0), rng(seed, key, 1)
