"""Irregular spirals and pendulum trajectories: shapes, determinism, labels, physics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hyperode.data.pendulum import pendulum, pendulum_energy
from hyperode.data.timeseries import irregular_spirals


def test_spirals_shapes_and_padding():
    data = irregular_spirals(n_train=40, n_test=20, seed=0, min_obs=20, max_obs=50)
    for part, n in ((data.train, 40), (data.test, 20)):
        assert part.times.shape == (n, 50) and part.values.shape == (n, 50, 2)
        assert part.lengths.dtype == torch.int64 and part.labels.dtype == torch.int64
        assert int(part.lengths.min()) >= 20 and int(part.lengths.max()) <= 50
        assert bool((part.times.diff(dim=1) >= 0).all())
        assert float(part.times.min()) >= 0 and float(part.times.max()) <= data.t_end
        for i, k in enumerate(part.lengths.tolist()):
            assert bool((part.times[i, k:] == part.times[i, k - 1]).all())
            assert bool((part.values[i, k:] == part.values[i, k - 1]).all())
    assert data.num_classes == 2


def test_spirals_deterministic_and_streams_differ():
    a, b = irregular_spirals(30, 10, seed=3), irregular_spirals(30, 10, seed=3)
    for x, y in ((a.train.values, b.train.values), (a.test.times, b.test.times)):
        assert torch.equal(x, y)
    c = irregular_spirals(30, 10, seed=4)
    assert not torch.equal(a.train.values, c.train.values)
    assert not torch.equal(a.train.values[:10], a.test.values)


def test_spiral_labels_are_rotation_direction():
    data = irregular_spirals(200, 10, seed=1, noise=0.0)
    tr = data.train
    assert 0.4 < float(tr.labels.float().mean()) < 0.6
    # The signed area swept (sum of cross products of consecutive points) gives the
    # direction: positive for anticlockwise (label 1).
    v = tr.values.numpy()
    cross = (v[:, :-1, 0] * v[:, 1:, 1] - v[:, :-1, 1] * v[:, 1:, 0]).sum(1)
    np.testing.assert_array_equal(cross > 0, tr.labels.numpy() == 1)


def test_spirals_bad_arguments():
    with pytest.raises(ValueError, match="max_obs"):
        irregular_spirals(10, 10, min_obs=30, max_obs=20)


def test_pendulum_shapes_determinism_and_energy():
    data = pendulum(n_train=12, n_test=5, seed=0, n_times=15, t_end=3.0)
    assert data.times.shape == (15,) and float(data.times[0]) == 0.0
    assert data.x_train.shape == (12, 15, 2) and data.x_test.shape == (5, 15, 2)
    assert data.x_train.dtype == torch.float32
    again = pendulum(n_train=12, n_test=5, seed=0, n_times=15, t_end=3.0)
    assert torch.equal(data.x_train, again.x_train) and torch.equal(data.x_test, again.x_test)
    other = pendulum(n_train=12, n_test=5, seed=1, n_times=15, t_end=3.0)
    assert not torch.equal(data.x_train, other.x_train)
    energy = pendulum_energy(data.x_train.double())
    assert float((energy - energy[:, :1]).abs().max()) < 1e-5  # float32 storage
    assert float(energy.max()) < 2.0  # below the separatrix: oscillations


def test_pendulum_follows_the_equations():
    data = pendulum(n_train=3, n_test=1, seed=2, n_times=401, t_end=2.0)
    x = data.x_train.double().numpy()
    dt = float(data.times[1] - data.times[0])
    dq = (x[:, 2:, 0] - x[:, :-2, 0]) / (2 * dt)
    dp = (x[:, 2:, 1] - x[:, :-2, 1]) / (2 * dt)
    np.testing.assert_allclose(dq, x[:, 1:-1, 1], atol=1e-3)
    np.testing.assert_allclose(dp, -np.sin(x[:, 1:-1, 0]), atol=1e-3)
