"""``load_task``: one entry point from a task name (as the CLI spells it) to a ``Split``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ._checks import check_int, check_seed, rng
from .cifar import load_cifar10
from .densities import density as _density
from .digits import digits
from .mnist import load_mnist
from .spheres import spheres
from .split import Split
from .xor import xor

TASKS: tuple[str, ...] = ("spheres", "xor", "digits", "mnist", "cifar10", "cnf2d")

#: Default (n_train, n_test) of the generated tasks.
DEFAULT_SIZES = {"spheres": (2000, 1000), "xor": (2000, 1000), "cnf2d": (10_000, 2_000)}


def load_task(task: str, *, dim: int = 2, density: str = "pinwheel",
              data_dir: str | Path | None = None, n_train: int | None = None,
              n_test: int | None = None, seed: int = 0) -> Split:
    """The ``Split`` of ``task`` (one of ``TASKS``).

    ==========  ================================================  ====================
    task        data                                              x per sample
    ==========  ================================================  ====================
    spheres     ``spheres(dim, n_train, n_test, seed)``           ``[dim]``
    xor         ``xor(n_train, n_test, seed)``                    ``[2]``
    digits      ``digits(seed=seed)`` (sklearn 8x8, bundled)      ``[1, 8, 8]``
    mnist       ``load_mnist(data_dir)`` (required)               ``[1, 28, 28]``
    cifar10     ``load_cifar10(data_dir)`` (required)             ``[3, 32, 32]``
    cnf2d       ``density(density, n_train, n_test, seed)``, y    ``[2]``
                ``None``
    ==========  ================================================  ====================

    ``n_train`` / ``n_test`` default to each generator's sizes (spheres, xor: 2000 /
    1000; cnf2d: 10000 / 2000). For the fixed sets (digits, mnist, cifar10) they
    select a seeded random subset of that many training / test samples (the whole
    set when ``None``); asking for more than there are is a ``ValueError``. ``dim``
    is used only by spheres and ``density`` only by cnf2d.
    """
    if not isinstance(task, str) or task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}; got {task!r}")
    seed = check_seed(seed)
    if n_train is not None:
        n_train = check_int("n_train", n_train, 1)
    if n_test is not None:
        n_test = check_int("n_test", n_test, 1)
    if task in DEFAULT_SIZES:
        default_train, default_test = DEFAULT_SIZES[task]
        sizes = dict(n_train=default_train if n_train is None else n_train,
                     n_test=default_test if n_test is None else n_test, seed=seed)
        if task == "spheres":
            return spheres(dim, **sizes)
        if task == "xor":
            return xor(**sizes)
        return _density(density, **sizes)
    if task == "digits":
        split = digits(seed=seed)
    else:
        if data_dir is None:
            raise ValueError(f"task {task!r} reads files the user already has: pass data_dir "
                             f"(--data-dir) pointing to them; nothing is downloaded")
        split = load_mnist(data_dir) if task == "mnist" else load_cifar10(data_dir)
    return subset(split, n_train, n_test, seed=seed)


def subset(split: Split, n_train: int | None, n_test: int | None, seed: int = 0) -> Split:
    """A seeded random subset (without replacement, order kept) of a ``Split``'s sets.

    ``None`` keeps a set whole. ``ValueError`` if a size exceeds the set's.
    """
    seed = check_seed(seed)
    parts = []
    for stream, (name, n, x, y) in enumerate((("n_train", n_train, split.x_train, split.y_train),
                                              ("n_test", n_test, split.x_test, split.y_test))):
        if n is None or n == len(x):
            parts += [x, y]
            continue
        n = check_int(name, n, 1)
        if n > len(x):
            raise ValueError(f"{name}={n} exceeds the {len(x)} samples available")
        keep = np.sort(rng(seed, "subset", stream).choice(len(x), size=n, replace=False))
        index = torch.from_numpy(keep)
        parts += [x[index], None if y is None else y[index]]
    return Split(*parts, num_classes=split.num_classes)
