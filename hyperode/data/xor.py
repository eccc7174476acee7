"""The XOR toy problem (Ott et al., ICLR 2021, section 3).

The paper's dataset is the four points ``(0,0)->0, (1,1)->0, (0,1)->1, (1,0)->1``.
Recipe used here (our choice; the paper gives no sampling details): the corners
are centred, ``c = 2 * corner - 1`` in ``{-1, 1}^2``, each of the four clusters
gets ``N // 4`` points (the first ``N % 4`` clusters, in the order
``(-1,-1), (1,1), (-1,1), (1,-1)``, one more), and a point is
``c + noise * N(0, I_2)``. Its label is the XOR of the signs of its cluster centre:
0 for ``(-1,-1)`` and ``(1,1)``, 1 for ``(-1,1)`` and ``(1,-1)``. With the default
``noise=0.1`` every point lies in its centre's quadrant (a crossing would need a
10-sigma draw), so the label is also the XOR of the point's own coordinate signs;
for ``noise >= ~0.3`` some points cross an axis and keep their cluster's label.
``noise=0`` gives the paper's four points, repeated; it is the one setting in
which training and test points coincide.
"""

from __future__ import annotations

import numpy as np
import torch

from ._checks import check_int, check_real, check_seed, train_test_rngs
from .split import Split

#: Cluster centres and their labels (XOR of the coordinate signs).
CENTRES = np.array([[-1.0, -1.0], [1.0, 1.0], [-1.0, 1.0], [1.0, -1.0]])
LABELS = np.array([0, 0, 1, 1], dtype=np.int64)


def sample_xor(n: int, noise: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` shuffled points: x float32 ``[n, 2]``, y int64 ``[n]``."""
    cluster = np.arange(n) % 4  # balanced: counts differ by at most one, first clusters first
    cluster = cluster[rng.permutation(n)]
    x = CENTRES[cluster] + noise * rng.standard_normal((n, 2))
    return x.astype(np.float32), LABELS[cluster]


def xor(n_train: int = 2000, n_test: int = 1000, seed: int = 0, noise: float = 0.1) -> Split:
    """XOR of four Gaussian clusters at ``(+-1, +-1)``; see the module docstring.

    Args:
        n_train, n_test: numbers of points (>= 1).
        seed: non-negative integer; train and test come from independent streams.
        noise: standard deviation of the isotropic Gaussian around each centre (>= 0).

    Returns:
        ``Split`` with x float32 ``[N, 2]``, y int64 ``[N]`` in {0, 1}, ``num_classes=2``.
    """
    n_train = check_int("n_train", n_train, 1)
    n_test = check_int("n_test", n_test, 1)
    noise = check_real("noise", noise, low=0.0)
    train_rng, test_rng = train_test_rngs(check_seed(seed), "xor")
    x_tr, y_tr = sample_xor(n_train, noise, train_rng)
    x_te, y_te = sample_xor(n_test, noise, test_rng)
    return Split(torch.from_numpy(x_tr), torch.from_numpy(y_tr),
                 torch.from_numpy(x_te), torch.from_numpy(y_te), num_classes=2)
