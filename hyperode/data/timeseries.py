"""Irregularly sampled time series: 2-D spirals, clockwise vs anticlockwise.

The classification task of the Neural CDE experiments (``hyperode.nn.cde``), at a
size that trains in seconds on a CPU. Each sample is a spiral::

    x(t) = r_0 exp(-lam t) (cos(phi + s w t), sin(phi + s w t)) + noise,   t in [0, T]

with direction ``s = -1`` (clockwise, label 0) or ``s = +1`` (anticlockwise,
label 1), and per sample: phase ``phi ~ U(0, 2 pi)``, angular speed
``w ~ U(0.6, 1.0)`` (1 to 1.6 turns over the default ``T = 10``), initial radius
``r_0 ~ U(0.8, 1.2)``, decay rate ``lam ~ U(0.05, 0.15)`` and i.i.d. Gaussian
observation noise of standard deviation ``noise`` per coordinate. Each sample is
observed at its own ``n ~ U{min_obs, ..., max_obs}`` sorted times drawn uniformly
from ``[0, T]``. Labels are balanced (alternating, then shuffled).

Rows are padded to ``max_obs`` by repeating the last observation (time and value)
— the "fill-forward" convention of ``hyperode.nn.cde.observation_path`` — and
``lengths`` says how many observations are genuine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ._checks import check_int, check_real, check_seed, train_test_rngs


@dataclass(frozen=True, eq=False)
class IrregularSeries:
    """A batch of irregularly sampled series, padded to a common length ``L``.

    Attributes:
        times: float32 ``[N, L]``, sorted within each row, padded by repeating the last
            genuine time.
        values: float32 ``[N, L, C]``, padded by repeating the last genuine value.
        lengths: int64 ``[N]``, genuine observations per row.
        labels: int64 ``[N]``.
    """

    times: Tensor
    values: Tensor
    lengths: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True, eq=False)
class IrregularSplit:
    """Training and test sets of an irregular time-series classification task."""

    train: IrregularSeries
    test: IrregularSeries
    num_classes: int
    t_end: float


def _spirals(n: int, min_obs: int, max_obs: int, t_end: float, noise: float,
             g: np.random.Generator) -> IrregularSeries:
    labels = (np.arange(n) % 2)[g.permutation(n)]
    direction = np.where(labels == 1, 1.0, -1.0)
    phase = g.uniform(0.0, 2.0 * np.pi, n)
    speed = g.uniform(0.6, 1.0, n)
    radius = g.uniform(0.8, 1.2, n)
    decay = g.uniform(0.05, 0.15, n)
    lengths = g.integers(min_obs, max_obs + 1, size=n)
    times = np.empty((n, max_obs))
    for i, k in enumerate(lengths):
        row = np.sort(g.uniform(0.0, t_end, k))
        times[i, :k] = row
        times[i, k:] = row[-1]
    angle = phase[:, None] + (direction * speed)[:, None] * times
    r = radius[:, None] * np.exp(-decay[:, None] * times)
    values = np.stack([r * np.cos(angle), r * np.sin(angle)], axis=-1)
    values = values + noise * g.standard_normal(values.shape)
    for i, k in enumerate(lengths):  # noise drawn for padding too; make the padding a copy
        values[i, k:] = values[i, k - 1]
    return IrregularSeries(
        times=torch.from_numpy(times.astype(np.float32)),
        values=torch.from_numpy(values.astype(np.float32)),
        lengths=torch.from_numpy(lengths.astype(np.int64)),
        labels=torch.from_numpy(labels.astype(np.int64)),
    )


def irregular_spirals(n_train: int = 1000, n_test: int = 500, seed: int = 0, *,
                      min_obs: int = 20, max_obs: int = 50, t_end: float = 10.0,
                      noise: float = 0.03) -> IrregularSplit:
    """Clockwise (label 0) vs anticlockwise (label 1) 2-D spirals; module docstring.

    Deterministic given the arguments; training and test sets come from independent
    random streams of ``seed``.

    Returns:
        ``IrregularSplit`` whose ``train``/``test`` hold ``times [N, max_obs]``,
        ``values [N, max_obs, 2]``, ``lengths [N]`` and ``labels [N]``.
    """
    n_train = check_int("n_train", n_train, 1)
    n_test = check_int("n_test", n_test, 1)
    min_obs = check_int("min_obs", min_obs, 2)
    max_obs = check_int("max_obs", max_obs, min_obs)
    t_end = check_real("t_end", t_end, low=0.0, low_open=True)
    noise = check_real("noise", noise, low=0.0)
    train_rng, test_rng = train_test_rngs(check_seed(seed), "irregular_spirals")
    return IrregularSplit(
        train=_spirals(n_train, min_obs, max_obs, t_end, noise, train_rng),
        test=_spirals(n_test, min_obs, max_obs, t_end, noise, test_rng),
        num_classes=2, t_end=t_end,
    )
