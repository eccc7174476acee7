"""Task data: one loader per dataset with a common signature, and ``load_task``, the
dataset by the name the CLI spells it.

A loader takes a ``DataRequest`` (the data settings of a run: ``dim``, ``density``,
``data_dir``, ``n_train``, ``n_test``, ``seed``) and returns a ``Split``. Three
helpers make one from a dataset function: ``generated_data`` (a generator with its
own sizes), ``fixed_data`` (a fixed set, of which ``n_train`` / ``n_test`` select a
seeded subset) and ``file_data`` (a fixed set read from ``data_dir``). The task
registry (``hyperode.experiments.tasks``) holds each task's loader; ``DATASETS``
lists the built-in ones by name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
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


@dataclass(frozen=True)
class DataRequest:
    """The data settings of a run; ``None`` sizes take the dataset's own (generated)
    or the whole set (fixed sets). ``n_train``, ``n_test`` and ``seed`` are checked
    here (``ValueError`` naming them)."""

    dim: int = 2
    density: str = "pinwheel"
    data_dir: str | Path | None = None
    n_train: int | None = None
    n_test: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "seed", check_seed(self.seed))
        for name in ("n_train", "n_test"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, check_int(name, getattr(self, name), 1))


DataLoader = Callable[[DataRequest], Split]


def generated_data(make: Callable[..., Split], n_train: int, n_test: int) -> DataLoader:
    """A loader for a generator ``make(request, n_train=, n_test=, seed=)`` whose default
    sizes are ``n_train`` / ``n_test``."""
    def load(request: DataRequest) -> Split:
        return make(request,
                    n_train=n_train if request.n_train is None else request.n_train,
                    n_test=n_test if request.n_test is None else request.n_test,
                    seed=request.seed)
    return load


def fixed_data(read: Callable[[DataRequest], Split]) -> DataLoader:
    """A loader for a fixed set ``read(request)``: ``n_train`` / ``n_test`` select a
    seeded subset (``subset``)."""
    def load(request: DataRequest) -> Split:
        return subset(read(request), request.n_train, request.n_test, seed=request.seed)
    return load


def file_data(name: str, read: Callable[[str | Path], Split]) -> DataLoader:
    """A loader for a fixed set ``read(data_dir)`` of files the user already has (task
    ``name``, for the message when ``data_dir`` is missing); subsets as ``fixed_data``."""
    def read_files(request: DataRequest) -> Split:
        if request.data_dir is None:
            raise ValueError(f"task {name!r} reads files the user already has: pass data_dir "
                             f"(--data-dir) pointing to them; nothing is downloaded")
        return read(request.data_dir)
    return fixed_data(read_files)


#: Default (n_train, n_test) of the generated tasks.
DEFAULT_SIZES = {"spheres": (2000, 1000), "xor": (2000, 1000), "cnf2d": (10_000, 2_000)}

#: The built-in datasets by task name.
DATASETS: dict[str, DataLoader] = {
    "spheres": generated_data(lambda r, **sizes: spheres(r.dim, **sizes),
                              *DEFAULT_SIZES["spheres"]),
    "xor": generated_data(lambda r, **sizes: xor(**sizes), *DEFAULT_SIZES["xor"]),
    "digits": fixed_data(lambda r: digits(seed=r.seed)),
    "mnist": file_data("mnist", load_mnist),
    "cifar10": file_data("cifar10", load_cifar10),
    "cnf2d": generated_data(lambda r, **sizes: _density(r.density, **sizes),
                            *DEFAULT_SIZES["cnf2d"]),
}
TASKS: tuple[str, ...] = tuple(DATASETS)


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
    request = DataRequest(dim=dim, density=density, data_dir=data_dir, n_train=n_train,
                          n_test=n_test, seed=seed)
    return DATASETS[task](request)


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
