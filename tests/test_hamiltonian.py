"""Hamiltonian fields: the pendulum's equations, energy conservation, adjoint gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import hyperode
from hyperode.nn.hamiltonian import HamiltonianField, MLPHamiltonian


class PendulumH(nn.Module):
    """H = p^2/2 + (1 - cos q), with a learnable stiffness k (1 by default)."""

    def __init__(self):
        super().__init__()
        self.k = nn.Parameter(torch.tensor(1.0, dtype=torch.float64))

    def forward(self, q, p):
        return (p**2 / 2 + self.k * (1 - torch.cos(q))).sum(-1)


def _states(n=6):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 2, generator=g, dtype=torch.float64)


def test_field_equals_pendulum_tensor_and_tuple_state():
    y = _states()
    field = HamiltonianField(PendulumH())
    expected = torch.stack([y[:, 1], -torch.sin(y[:, 0])], dim=1)
    torch.testing.assert_close(field(torch.tensor(0.0), y), expected)
    dq, dp = field(torch.tensor(0.0), (y[:, :1], y[:, 1:]))
    torch.testing.assert_close(torch.cat([dq, dp], 1), expected)
    with torch.no_grad():  # works without a graph too, and keeps none
        out = field(torch.tensor(0.0), y)
    assert not out.requires_grad
    torch.testing.assert_close(out, expected)


def test_energy_is_conserved_along_a_solve():
    field = HamiltonianField(PendulumH())
    y0 = _states(8)
    t = torch.linspace(0.0, 10.0, 21, dtype=torch.float64)
    with torch.no_grad():
        ys = hyperode.odeint(field, y0, t, rtol=1e-10, atol=1e-10)
        energy = field.hamiltonian(ys)  # [T, B]
    assert float((energy - energy[0]).abs().max()) < 1e-8


@pytest.mark.parametrize("norm", ["default", "seminorm"])
def test_adjoint_gradient_matches_backprop(norm):
    torch.manual_seed(0)
    net = MLPHamiltonian(dim=1, width=8, depth=2).double()
    field = HamiltonianField(net)
    y0 = _states(4)
    t = torch.linspace(0.0, 1.0, 4, dtype=torch.float64)
    tol = dict(rtol=1e-9, atol=1e-10)

    def grads(solver, **kw):
        ys = solver(field, y0, t, **tol, **kw)
        params = tuple(net.parameters())
        out = torch.autograd.grad((ys**2).sum(), params, allow_unused=True)
        # The last bias shifts H by a constant: it has no effect on the field.
        return [torch.zeros_like(p) if g is None else g for g, p in zip(out, params)]

    direct = grads(hyperode.odeint)
    adjoint = grads(hyperode.odeint_adjoint, adjoint_options=dict(norm=norm))
    for a, b in zip(adjoint, direct):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_time_gradient_through_adjoint_matches_backprop():
    # The adjoint's dL/dt_i evaluates f under no_grad on a view of a saved output that
    # requires grad; the field must still differentiate H there (not return zeros).
    field = HamiltonianField(PendulumH())
    y0 = _states(4)
    grads = []
    for solver in (hyperode.odeint, hyperode.odeint_adjoint):
        t = torch.tensor([0.0, 0.5, 1.2], dtype=torch.float64, requires_grad=True)
        (solver(field, y0, t, rtol=1e-10, atol=1e-10) ** 2).sum().backward()
        grads.append(t.grad)
    assert float(grads[0].abs().max()) > 1e-3
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-6, atol=1e-8)


def test_bad_output_shape():
    field = HamiltonianField(lambda q, p: torch.cat([q, p], -1))
    with pytest.raises(ValueError, match="must return H"):
        field(torch.tensor(0.0), _states())
