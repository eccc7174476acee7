"""Natural cubic splines against scipy and their defining properties; the CDE field."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.interpolate import CubicSpline

import hyperode
from hyperode.nn.cde import (
    CDEFunc,
    CDEVectorField,
    NaturalCubicSpline,
    NeuralCDE,
    index_knots,
    observation_path,
)


def _random_spline(seed=0, n=9, batch=3, channels=2):
    g = torch.Generator().manual_seed(seed)
    knots = torch.cumsum(0.2 + torch.rand(n, generator=g, dtype=torch.float64), 0)
    values = torch.randn(batch, n, channels, generator=g, dtype=torch.float64)
    return knots, values, NaturalCubicSpline(knots, values)


def test_interpolates_knots_exactly():
    knots, values, spline = _random_spline()
    for i, t in enumerate(knots):
        torch.testing.assert_close(spline.evaluate(t), values[:, i], rtol=0, atol=1e-12)


def test_first_and_second_derivatives_continuous_at_knots():
    knots, _, spline = _random_spline(seed=1)
    eps = 1e-10  # one-sided limits; X''' jumps, so X'' moves by ~eps |X'''| across
    for t in knots[1:-1]:
        for fn in (spline.evaluate, spline.derivative, spline.second_derivative):
            left, right = fn(t - eps), fn(t + eps)
            torch.testing.assert_close(left, right, rtol=0, atol=1e-7)
    # ... while the third derivative genuinely jumps (so the test can see a jump)
    d_left, d_right = spline._d[:, :-1], spline._d[:, 1:]
    assert float((d_left - d_right).abs().max()) > 1e-3


def test_natural_boundary():
    knots, _, spline = _random_spline(seed=2)
    for t in (knots[0], knots[-1]):
        torch.testing.assert_close(spline.second_derivative(t), torch.zeros(3, 2,
                                   dtype=torch.float64), rtol=0, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 3])
def test_matches_scipy_natural_cubic_spline(seed):
    knots, values, spline = _random_spline(seed=seed, n=12)
    ref = CubicSpline(knots.numpy(), values.numpy(), axis=1, bc_type="natural")
    ts = np.linspace(float(knots[0]) - 0.3, float(knots[-1]) + 0.3, 97)
    for t in ts:
        tt = torch.tensor(t, dtype=torch.float64)
        np.testing.assert_allclose(spline.evaluate(tt).numpy(), ref(t), rtol=0, atol=1e-10)
        np.testing.assert_allclose(spline.derivative(tt).numpy(), ref(t, 1), rtol=0, atol=1e-10)
        np.testing.assert_allclose(spline.second_derivative(tt).numpy(), ref(t, 2), rtol=0,
                                   atol=1e-9)


def test_two_knots_is_linear_and_select():
    knots = torch.tensor([0.0, 2.0])
    values = torch.tensor([[[1.0], [3.0]], [[0.0], [-2.0]]])
    spline = NaturalCubicSpline(knots, values)
    torch.testing.assert_close(spline.evaluate(torch.tensor(0.5)), torch.tensor([[1.5], [-0.5]]))
    torch.testing.assert_close(spline.derivative(1.0), torch.tensor([[1.0], [-1.0]]))
    sub = spline.select([1])
    torch.testing.assert_close(sub.evaluate(2.0), torch.tensor([[-2.0]]))


def test_bad_input():
    with pytest.raises(ValueError, match="strictly increasing"):
        NaturalCubicSpline(torch.tensor([0.0, 1.0, 1.0]), torch.zeros(1, 3, 1))
    with pytest.raises(ValueError, match="values"):
        NaturalCubicSpline(torch.tensor([0.0, 1.0]), torch.zeros(1, 3, 1))
    with pytest.raises(ValueError, match="finite"):
        NaturalCubicSpline(torch.tensor([0.0, 1.0]), torch.full((1, 2, 1), float("nan")))


def test_observation_path_fills_forward():
    times = torch.tensor([[0.0, 1.0, 5.0], [0.0, 2.0, 9.0]])
    values = torch.arange(12.0).view(2, 3, 2)
    path = observation_path(times, values, torch.tensor([3, 2]), time_scale=10.0)
    assert path.shape == (2, 3, 3)
    torch.testing.assert_close(path[0, :, 0], torch.tensor([0.0, 0.1, 0.5]))
    torch.testing.assert_close(path[1, 2], path[1, 1])  # padded with the last genuine obs


def test_vector_field_shape_and_parameters():
    batch, hidden, channels, n = 5, 7, 3, 10
    spline = NaturalCubicSpline(index_knots(n), torch.randn(batch, n, channels))
    func = CDEFunc(hidden, channels, width=16, depth=2)
    field = CDEVectorField(func, spline)
    out = field(torch.tensor(2.5), torch.randn(batch, hidden))
    assert out.shape == (batch, hidden)
    assert func(torch.randn(batch, hidden)).shape == (batch, hidden, channels)
    assert func(torch.randn(batch, hidden)).abs().max() <= 1  # tanh output
    assert {id(p) for p in field.parameters()} == {id(p) for p in func.parameters()}


class _LinearG(torch.nn.Module):
    """g(z)[:, :, c] = W_c z: a linear CDE."""

    def __init__(self, mats):
        super().__init__()
        self.mats = mats  # [C, H, H]

    def forward(self, z):
        return torch.einsum("chk,bk->bhc", self.mats, z)


def test_linear_control_reduces_to_known_linear_ode():
    # X(s) = (s, a s) is linear, so the natural spline reproduces it exactly and
    # dX/ds = (1, a): dz/ds = (W_0 + a W_1) z, solved by the matrix exponential.
    torch.manual_seed(0)
    a, hidden, s_end = 0.7, 3, 2.0
    knots = torch.linspace(0.0, s_end, 6, dtype=torch.float64)
    values = torch.stack([knots, a * knots], dim=-1).unsqueeze(0).repeat(2, 1, 1)
    spline = NaturalCubicSpline(knots, values)
    mats = 0.5 * torch.randn(2, hidden, hidden, dtype=torch.float64)
    field = CDEVectorField(_LinearG(mats), spline)
    z0 = torch.randn(2, hidden, dtype=torch.float64)
    z_end = hyperode.odeint(field, z0, knots[[0, -1]], rtol=1e-10, atol=1e-12)[-1]
    expected = z0 @ torch.linalg.matrix_exp(s_end * (mats[0] + a * mats[1])).T
    torch.testing.assert_close(z_end, expected, rtol=1e-8, atol=1e-9)


def test_neural_cde_trains_through_adjoint():
    torch.manual_seed(0)
    n = 8
    spline = NaturalCubicSpline(index_knots(n), torch.randn(4, n, 3))
    model = NeuralCDE(channels=3, hidden=5, out=2, width=8, depth=1)
    out = model(spline, solver=hyperode.odeint_adjoint, rtol=1e-4, atol=1e-6,
                adjoint_params=tuple(model.func.parameters()),
                adjoint_options=dict(norm="seminorm"))
    assert out.shape == (4, 2)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
