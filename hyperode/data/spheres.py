"""Concentric spheres (Ott et al., "ResNet After All?", ICLR 2021; Sphere2 etc.).

Three shells in ``R^D``, labelled 0 / 1 / 0 from the inside out:

==========  ================  ======  =====
shell       radius            share   label
==========  ================  ======  =====
inner       [0.10, 0.15]      N/4     0
middle      [0.25, 0.30]      N/2     1
outer       [0.40, 0.45]      N/4     0
==========  ================  ======  =====

A point is ``r * d`` with ``d`` a normalised standard Gaussian (uniform on the unit
sphere) and ``r = r_min + (r_max - r_min) * u**(1/D)``, ``u ~ U(0, 1)``: the radius
recipe of the paper's reference code. Note that this makes
``((r - r_min) / (r_max - r_min))**D`` uniform, i.e. it is uniform in the volume of
a ball of radius ``r_max - r_min``, not exactly uniform in the shell's volume;
we keep it because it is the published dataset. No noise is added.

When ``N`` is not a multiple of 4 the inner and outer shells get ``N // 4`` points
each and the middle shell the rest, so label 1 has ``N - 2 * (N // 4)`` points.
"""

from __future__ import annotations

import numpy as np
import torch

from ._checks import check_int, check_seed, train_test_rngs
from .split import Split

#: (r_min, r_max, label) of the three shells, inside out.
SHELLS: tuple[tuple[float, float, int], ...] = ((0.10, 0.15, 0), (0.25, 0.30, 1), (0.40, 0.45, 0))


def shell_counts(n: int) -> tuple[int, int, int]:
    """Points per shell (inner, middle, outer) for ``n`` points in total."""
    quarter = n // 4
    return quarter, n - 2 * quarter, quarter


def sample_spheres(n: int, dim: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` shuffled points: x float32 ``[n, dim]``, y int64 ``[n]``."""
    xs, ys = [], []
    for (r_min, r_max, label), count in zip(SHELLS, shell_counts(n)):
        direction = rng.standard_normal((count, dim))
        norms = np.linalg.norm(direction, axis=1, keepdims=True)
        # A zero Gaussian vector has probability 0; guard anyway so no NaN can appear.
        direction = np.where(norms > 0, direction / np.maximum(norms, 1e-300),
                             np.eye(1, dim))
        r = r_min + (r_max - r_min) * rng.random((count, 1)) ** (1.0 / dim)
        xs.append(r * direction)
        ys.append(np.full(count, label, dtype=np.int64))
    order = rng.permutation(n)
    x = np.concatenate(xs)[order].astype(np.float32)
    y = np.concatenate(ys)[order]
    return x, y


def spheres(dim: int = 2, n_train: int = 2000, n_test: int = 1000, seed: int = 0) -> Split:
    """Ott et al.'s concentric-spheres classification task.

    Args:
        dim: ambient dimension ``D >= 2`` (the paper uses 2, 3, 10 and 900).
        n_train, n_test: numbers of points (>= 1); the paper uses 2000 and 1000.
        seed: non-negative integer; train and test come from independent streams.

    Returns:
        ``Split`` with x float32 ``[N, D]`` (the reference code's ``[N, 1, D]`` is
        ``x.unsqueeze(1)``), y int64 ``[N]`` in {0, 1}, ``num_classes=2``.
    """
    dim = check_int("dim", dim, 2)
    n_train = check_int("n_train", n_train, 1)
    n_test = check_int("n_test", n_test, 1)
    train_rng, test_rng = train_test_rngs(check_seed(seed), f"spheres{dim}")
    x_tr, y_tr = sample_spheres(n_train, dim, train_rng)
    x_te, y_te = sample_spheres(n_test, dim, test_rng)
    return Split(torch.from_numpy(x_tr), torch.from_numpy(y_tr),
                 torch.from_numpy(x_te), torch.from_numpy(y_te), num_classes=2)
