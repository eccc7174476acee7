"""torchdyn's documented usage patterns against ``hyperode.compat.torchdyn``.

The patterns come from torchdyn's README and quickstart tutorial, its test suite
(``test/models/test_ode.py``) and torchcfm's sampling code; the expected values are
closed forms, finite differences in float64, backpropagation through the solver and
tight ``hyperode.odeint`` solves.
"""

from __future__ import annotations

import functools
import math
import warnings

import pytest
import torch
from torch import nn

import hyperode
from hyperode.compat.torchdyn import NeuralODE, odeint
from hyperode.hyper import HyperEuler, HyperSolver, MLPHyperNet

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


def mlp(dim: int = 2, hidden: int = 16, dtype=torch.float32, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, dim)).to(dtype)


class TorchWrapper(nn.Module):
    """torchcfm's ``torch_wrapper``: appends the time to the input of an MLP."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, t, x, *args, **kwargs):
        return self.model(torch.cat([x, t.repeat(x.shape[0])[:, None]], 1))


def moons(n: int = 256, seed: int = 0):
    from sklearn.datasets import make_moons

    x, y = make_moons(n_samples=n, noise=0.1, random_state=seed)
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.long)


# --------------------------------------------------------------------------- usage patterns


def test_quickstart_training_loop_with_the_adjoint_and_dopri5():
    """torchdyn's quickstart: ``NeuralODE(f, sensitivity='adjoint', solver='dopri5')``,
    ``t_eval, y_hat = model(x, t_span)``, cross-entropy on ``y_hat[-1]``, Adam."""
    x, y = moons(128)
    f = mlp()
    model = NeuralODE(f, sensitivity="adjoint", solver="dopri5")
    t_span = torch.linspace(0, 1, 5)
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    losses = []
    for _ in range(15):
        t_eval, y_hat = model(x, t_span)
        loss = nn.CrossEntropyLoss()(y_hat[-1], y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert torch.equal(t_eval, t_span)
    assert y_hat.shape == (5, 128, 2)
    assert losses[-1] < 0.7 * losses[0]
    assert model.last_backward_stats.nfe > 0
    # the quickstart evaluates the learned field on a grid as model.vf(0, z)
    z = torch.randn(10, 2)
    torch.testing.assert_close(model.vf(0, z), f(z))


def test_quickstart_rk4_forward_with_a_dopri5_adjoint():
    """``NeuralODE(f, sensitivity='adjoint', solver='rk4', solver_adjoint='dopri5',
    atol_adjoint=1e-4, rtol_adjoint=1e-4)``: rk4 steps on t_span, the backward solve is
    adaptive; its gradient is the exact ODE's, close to backpropagating a tight solve."""
    f = mlp(dtype=F64)
    x = torch.randn(16, 2, dtype=F64)
    t_span = torch.linspace(0, 1, 11, dtype=F64)
    model = NeuralODE(f, sensitivity="adjoint", solver="rk4", solver_adjoint="dopri5",
                      atol_adjoint=1e-7, rtol_adjoint=1e-7)
    _, sol = model(x, t_span)
    assert model.last_stats.nfe == 4 * 10  # rk4, one step per t_span interval
    grads = torch.autograd.grad(sol[-1].square().sum(), tuple(f.parameters()))
    ref_sol = hyperode.odeint(f_t(f), x, t_span, rtol=1e-9, atol=1e-9)
    ref = torch.autograd.grad(ref_sol[-1].square().sum(), tuple(f.parameters()))
    for g, r in zip(grads, ref):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-5)
    assert model.last_backward_stats.accepted > 0


def f_t(f: nn.Module):
    return lambda t, x: f(x)


def test_torchcfm_sampling_call():
    """torchcfm: ``NeuralODE(torch_wrapper(model), solver="dopri5", sensitivity="adjoint",
    atol=1e-4, rtol=1e-4)`` then ``node.trajectory(x0, t_span=torch.linspace(0, 1, 100))``
    under ``torch.no_grad()``."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(3, 64), nn.SELU(), nn.Linear(64, 64), nn.SELU(),
                          nn.Linear(64, 2))
    node = NeuralODE(TorchWrapper(model), solver="dopri5", sensitivity="adjoint",
                     atol=1e-4, rtol=1e-4)
    x0 = torch.randn(32, 2)
    t_span = torch.linspace(0, 1, 100)
    with torch.no_grad():
        traj = node.trajectory(x0, t_span=t_span)
        ref = hyperode.odeint(TorchWrapper(model), x0, t_span, rtol=1e-7,
                              atol=1e-7)
    assert traj.shape == (100, 32, 2)
    assert torch.equal(traj[0], x0)
    assert (traj - ref).abs().max() < 2e-3
    # steps land on every output time, as torchdyn's do without an interpolator
    assert node.last_stats.accepted >= 99
    assert node.vf.nfe == node.last_stats.nfe


def test_interpolator_4th_uses_dense_output_instead_of_landing():
    model = TorchWrapper(nn.Sequential(nn.Linear(3, 32), nn.Tanh(), nn.Linear(32, 2)))
    x0 = torch.randn(16, 2)
    t_span = torch.linspace(0, 1, 100)
    landing = NeuralODE(model, solver="dopri5", atol=1e-5, rtol=1e-5)
    dense = NeuralODE(model, solver="dopri5", atol=1e-5, rtol=1e-5, interpolator="4th")
    with torch.no_grad():
        a, b = landing.trajectory(x0, t_span), dense.trajectory(x0, t_span)
    assert dense.last_stats.nfe < landing.last_stats.nfe / 5
    assert (a - b).abs().max() < 1e-3


# --------------------------------------------------------------------------- vector fields


class XOnly(nn.Module):
    def forward(self, x):
        return -x


class TimeAndState(nn.Module):
    def forward(self, t, x):
        return torch.cos(t) * x


class TimeStateArgs(nn.Module):
    def forward(self, t, x, args={}):  # noqa: B006 (torchdyn's own default)
        return args.get("rate", 1.0) * torch.cos(t) * x


@pytest.mark.parametrize("field, expected", [
    (XOnly(), lambda t, x0: x0 * torch.exp(-t)),
    (lambda x: -x, lambda t, x0: x0 * torch.exp(-t)),
    (TimeAndState(), lambda t, x0: x0 * torch.exp(torch.sin(t))),
    (lambda t, x: torch.cos(t) * x, lambda t, x0: x0 * torch.exp(torch.sin(t))),
    (TimeStateArgs(), lambda t, x0: x0 * torch.exp(torch.sin(t))),
])
def test_call_patterns_x_tx_txargs(field, expected):
    x0 = torch.randn(5, 3, dtype=F64)
    t_span = torch.linspace(0, 2, 7, dtype=F64)
    node = NeuralODE(field, solver="dopri5", atol=1e-10, rtol=1e-10)
    t_eval, sol = node(x0, t_span)
    torch.testing.assert_close(sol, expected(t_span[:, None, None], x0), rtol=1e-8, atol=1e-8)
    assert torch.equal(t_eval, t_span)


def test_args_reach_a_field_that_takes_them():
    x0 = torch.ones(2, 1, dtype=F64)
    t_span = torch.tensor([0.0, 1.0], dtype=F64)
    node = NeuralODE(TimeStateArgs(), solver="dopri5", atol=1e-10, rtol=1e-10)
    _, sol = node(x0, t_span, args={"rate": 2.0})
    torch.testing.assert_close(sol[-1], x0 * math.exp(2 * math.sin(1.0)))
    with pytest.raises(ValueError, match="takes no 'args'"):
        NeuralODE(TimeAndState())(x0, t_span, args={"rate": 2.0})


def test_time_argument_not_named_t_is_refused():
    class Misnamed(nn.Module):
        def forward(self, s, z):
            return z

    with pytest.raises(ValueError, match="named 't'"):
        NeuralODE(Misnamed())


def test_partial_field_with_optimizable_params_and_interpolated_adjoint():
    """torchdyn's test_arg_ode: a functools.partial of a module's forward, gradients
    through ``optimizable_params`` with the interpolated adjoint."""
    lin = nn.Linear(1, 1).double()

    class TFunc(nn.Module):
        def __init__(self, lin):
            super().__init__()
            self.lin = lin

        def forward(self, t, x, u, v, z, args={}):  # noqa: B006
            return self.lin(x + u + v + z)

    tfunc = TFunc(lin)
    u = v = z = torch.randn(1, 1, dtype=F64)
    f = functools.partial(tfunc.forward, u=u, v=v, z=z)
    x0 = torch.randn(1, 1, dtype=F64, requires_grad=True)
    t_span = torch.linspace(0, 5, 10, dtype=F64)
    _, sol1 = odeint(f, x0, t_span, solver="euler")
    prob = NeuralODE(f, "euler", sensitivity="interpolated_adjoint",
                     optimizable_params=tfunc.parameters())
    _, sol2 = prob(x0, t_span=t_span)
    assert torch.equal(sol1, sol2)
    (g_x0,) = torch.autograd.grad(sol2.sum(), x0)
    assert torch.isfinite(g_x0).all()
    # the same field at tight tolerances: x' = w (x + s) + b, so d sum_i x(t_i) / dx0 =
    # sum_i exp(w t_i); the parameter gradients against backpropagation
    tight = NeuralODE(f, "dopri5", sensitivity="interpolated_adjoint", atol=1e-10,
                      rtol=1e-10, atol_adjoint=1e-10, rtol_adjoint=1e-10,
                      optimizable_params=tfunc.parameters())
    _, sol3 = tight(x0, t_span)
    g_adj = torch.autograd.grad(sol3.sum(), (x0, lin.weight, lin.bias))
    w = lin.weight.item()
    torch.testing.assert_close(g_adj[0], torch.exp(w * t_span).sum().reshape(1, 1),
                               rtol=1e-6, atol=1e-8)
    _, sol4 = odeint(f, x0, t_span, solver="dopri5", atol=1e-10, rtol=1e-10)
    g_ref = torch.autograd.grad(sol4.sum(), (x0, lin.weight, lin.bias))
    for a, r in zip(g_adj, g_ref):
        torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-7)


def test_depth_modules_get_the_time():
    """Submodules with an attribute ``t`` (torchdyn's DepthCat) receive the time."""

    class Depth(nn.Module):
        def __init__(self):
            super().__init__()
            self.t = None

        def forward(self, x):
            return torch.ones_like(x) * self.t

    x0 = torch.zeros(3, 2, dtype=F64)
    t_span = torch.tensor([0.0, 1.5], dtype=F64)
    _, sol = NeuralODE(nn.Sequential(Depth()), solver="dopri5")(x0, t_span)
    torch.testing.assert_close(sol[-1], torch.full_like(x0, 1.5 ** 2 / 2))


def test_image_states():
    """torchdyn's README: ``NeuralODE(f)`` with a convolutional field."""
    f = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.Softplus(), nn.Conv2d(8, 1, 3, padding=1))
    x = torch.randn(4, 1, 6, 6)
    t_eval, sol = NeuralODE(f)(x)
    assert sol.shape == (2, 4, 1, 6, 6) and t_eval.tolist() == [0.0, 1.0]


def test_second_order_system():
    """``order=2``: the state is [x, v] along dim 1, the field returns the acceleration."""
    x0 = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=F64)  # [position, velocity]
    t_span = torch.linspace(0, 3, 13, dtype=F64)
    node = NeuralODE(lambda x: -x[:, :1], solver="tsit5", order=2, atol=1e-10, rtol=1e-10)
    _, sol = node(x0, t_span)
    t = t_span[:, None]
    exact_pos = x0[:, 0] * torch.cos(t) + x0[:, 1] * torch.sin(t)
    exact_vel = -x0[:, 0] * torch.sin(t) + x0[:, 1] * torch.cos(t)
    torch.testing.assert_close(sol[..., 0], exact_pos, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(sol[..., 1], exact_vel, rtol=1e-8, atol=1e-8)
    with pytest.raises(ValueError, match="divisible by the order"):
        NeuralODE(lambda x: -x[:, :1], order=2)(torch.zeros(2, 3))


def test_integral_loss_channel_with_autograd():
    x0 = torch.randn(4, 2, dtype=F64)
    state = torch.cat([torch.zeros(4, 1, dtype=F64), x0], 1)
    node = NeuralODE(lambda x: -x, solver="dopri5", atol=1e-10, rtol=1e-10,
                     integral_loss=lambda t, x: x.square().sum(1))
    _, sol = node(state, torch.tensor([0.0, 1.0], dtype=F64))
    torch.testing.assert_close(sol[-1, :, 0], x0.square().sum(1) * (1 - math.exp(-2)) / 2)
    torch.testing.assert_close(sol[-1, :, 1:], x0 * math.exp(-1))


def test_nfe_counter_as_torchdyn_exposes_it():
    node = NeuralODE(XOnly(), solver="dopri5")
    x = torch.randn(3, 2)
    node(x)
    first = node.vf.nfe
    assert first == node.last_stats.nfe and isinstance(first, float)
    node(x)
    assert node.vf.nfe == 2 * first  # never reset by a solve
    node.vf.nfe = 0
    node(x)
    assert node.vf.nfe == first
    assert "NFE" in repr(node)
    assert node.vector_field is node.vf.vf


# --------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("sensitivity", ["adjoint", "interpolated_adjoint"])
def test_adjoint_gradients_match_autograd_and_finite_differences(sensitivity):
    f = mlp(hidden=8, dtype=F64, seed=3)
    x0 = torch.randn(6, 2, dtype=F64, requires_grad=True)
    t_span = torch.linspace(0, 1, 4, dtype=F64)
    tol = dict(atol=1e-10, rtol=1e-10, atol_adjoint=1e-10, rtol_adjoint=1e-10)

    def loss_of(node):
        _, sol = node(x0, t_span)
        return sol.square().sum() + sol[1].sum()

    params = (x0, *f.parameters())
    g_adj = torch.autograd.grad(loss_of(NeuralODE(f, solver="dopri5", sensitivity=sensitivity,
                                                  **tol)), params)
    g_ag = torch.autograd.grad(loss_of(NeuralODE(f, solver="dopri5", **tol)), params)
    # the interpolated adjoint reads x(t) from a cubic Hermite interpolant of the forward
    # steps: its error, not the tolerance, bounds the agreement
    rtol = 1e-7 if sensitivity == "adjoint" else 1e-4
    for a, r in zip(g_adj, g_ag):
        torch.testing.assert_close(a, r, rtol=rtol, atol=rtol)
    # central finite differences on a few parameter entries
    weight = f[0].weight
    node = NeuralODE(f, solver="dopri5", **tol)
    eps = 1e-6
    for idx in [(0, 0), (3, 1), (7, 0)]:
        with torch.no_grad():
            weight[idx] += eps
            up = loss_of(node)
            weight[idx] -= 2 * eps
            down = loss_of(node)
            weight[idx] += eps
        fd = (up - down) / (2 * eps)
        assert abs(g_adj[1][idx].item() - fd.item()) <= rtol * max(1.0, abs(fd.item())) * 10


@pytest.mark.parametrize("sensitivity", ["adjoint", "interpolated_adjoint"])
@pytest.mark.parametrize("solver", ["tsit5", "rk4"])
def test_adjoints_on_a_decreasing_span(sensitivity, solver):
    """Backwards in time, adaptive and fixed-step: the adjoints agree with autograd."""
    f = mlp(hidden=8, dtype=F64, seed=4)
    x0 = torch.randn(5, 2, dtype=F64, requires_grad=True)
    t_span = torch.linspace(1, -0.5, 7, dtype=F64)
    tol = dict(atol=1e-9, rtol=1e-9) if solver == "tsit5" else {}
    tol.update(atol_adjoint=1e-9, rtol_adjoint=1e-9)
    params = (x0, *f.parameters())
    grads = []
    for sens in ("autograd", sensitivity):
        _, sol = NeuralODE(f, solver=solver, sensitivity=sens, **tol)(x0, t_span)
        grads.append(torch.autograd.grad(sol.square().sum(), params))
    # rk4 steps once per interval forward and backward: the adjoint is the exact ODE's
    # gradient, the discrete one differs by rk4's error at h = 0.25
    rtol = 1e-4 if solver == "tsit5" else 2e-2
    for a, r in zip(*grads):
        torch.testing.assert_close(r, a, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("sensitivity", ["autograd", "adjoint", "interpolated_adjoint"])
def test_t_span_gradients(sensitivity):
    """x' = -k x: dL/dt_i = <dL/dx_i, f(x_i)>, dL/dt_0 = -sum_i <dL/dx_i, f(x_i)>."""
    k = 0.7
    x0 = torch.tensor([[1.0, -2.0]], dtype=F64)
    t_span = torch.tensor([0.2, 0.5, 1.3], dtype=F64, requires_grad=True)
    node = NeuralODE(lambda x: -k * x, solver="dopri5", sensitivity=sensitivity,
                     atol=1e-10, rtol=1e-10, atol_adjoint=1e-10, rtol_adjoint=1e-10)
    _, sol = node(x0, t_span)
    (grad,) = torch.autograd.grad(sol.sum(), t_span)
    tau = (t_span - t_span[0]).detach()
    per_output = -k * x0.sum() * torch.exp(-k * tau)  # d/dt_i sum(x(t_i))
    expected = per_output.clone()
    expected[0] = -per_output[1:].sum()
    torch.testing.assert_close(grad, expected, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("sensitivity", ["adjoint", "interpolated_adjoint"])
def test_closure_parameters_through_optimizable_params(sensitivity):
    """x' = -k x with k closed over by a plain function: dsum(x(1))/dk = -sum(x0) e^-k."""
    k = nn.Parameter(torch.tensor(0.4, dtype=F64))
    plain = torch.tensor(0.3, dtype=F64, requires_grad=True)
    x0 = torch.tensor([[1.0, 2.0]], dtype=F64)
    node = NeuralODE(lambda t, x: -(k + plain) * x, solver="dopri5", sensitivity=sensitivity,
                     atol=1e-10, rtol=1e-10, atol_adjoint=1e-10, rtol_adjoint=1e-10,
                     optimizable_params=[k, plain])
    _, sol = node(x0, torch.tensor([0.0, 1.0], dtype=F64))
    gk, gp = torch.autograd.grad(sol[-1].sum(), (k, plain))
    expected = -3.0 * math.exp(-0.7)
    assert abs(gk.item() - expected) < 1e-6 and abs(gp.item() - expected) < 1e-6
    assert any(p is k for p in node.parameters())


def test_seminorm_gives_the_same_gradients_with_no_more_backward_steps():
    f = mlp(hidden=32, dtype=F64, seed=5)
    x0 = torch.randn(16, 2, dtype=F64)
    t_span = torch.linspace(0, 1, 3, dtype=F64)
    grads, nfes = [], []
    for seminorm in (False, True):
        node = NeuralODE(f, solver="dopri5", sensitivity="adjoint", atol=1e-6, rtol=1e-6,
                         atol_adjoint=1e-6, rtol_adjoint=1e-6, seminorm=seminorm)
        _, sol = node(x0, t_span)
        grads.append(torch.autograd.grad(sol[-1].square().sum(), tuple(f.parameters())))
        nfes.append(node.last_backward_stats.nfe)
    assert nfes[1] <= nfes[0]
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)


# --------------------------------------------------------------------------- solvers


@pytest.mark.parametrize("solver, growth", [
    ("euler", lambda z: 1 + z),
    ("midpoint", lambda z: 1 + z + z ** 2 / 2),
    ("rk4", lambda z: 1 + z + z ** 2 / 2 + z ** 3 / 6 + z ** 4 / 24),
    ("rk-4", lambda z: 1 + z + z ** 2 / 2 + z ** 3 / 6 + z ** 4 / 24),
    ("RungeKutta4", lambda z: 1 + z + z ** 2 / 2 + z ** 3 / 6 + z ** 4 / 24),
])
def test_fixed_step_solvers_step_on_t_span(solver, growth):
    """x' = lam x on a non-uniform t_span: one step per interval, the method's stability
    polynomial R(lam h_k) per step, exactly."""
    lam = -1.3
    t_span = torch.tensor([0.0, 0.1, 0.35, 0.45, 1.0], dtype=F64)
    x0 = torch.tensor([[1.0], [-0.5]], dtype=F64)
    node = NeuralODE(lambda x: lam * x, solver=solver)
    _, sol = node(x0, t_span)
    factors = [1.0]
    for h in (t_span[1:] - t_span[:-1]).tolist():
        factors.append(factors[-1] * growth(lam * h))
    expected = torch.tensor(factors, dtype=F64)[:, None, None] * x0
    torch.testing.assert_close(sol, expected, rtol=1e-13, atol=1e-13)
    assert node.last_stats.accepted == 4


def test_fixed_step_save_at_and_tolerance_warning():
    """torchdyn's test_save: ``model(x, t_span, save_at)`` returns the subset."""
    t_span = torch.linspace(0, 1, 11, dtype=F64)
    x0 = torch.ones(1, 1, dtype=F64)
    node = NeuralODE(lambda x: -x, solver="euler")
    save_at = t_span[[2, 5, 10]]
    t_eval, sol = node(x0, t_span, save_at)
    torch.testing.assert_close(t_eval, save_at)
    torch.testing.assert_close(sol[:, 0, 0], 0.9 ** torch.tensor([2.0, 5.0, 10.0], dtype=F64))
    with pytest.raises(ValueError, match="save_at"):
        node(x0, t_span, torch.tensor([0.55], dtype=F64))
    with pytest.warns(UserWarning, match="no effect"):
        NeuralODE(lambda x: -x, solver="euler", atol=1e-6)
    with pytest.warns(UserWarning, match="save_at has no effect"):
        NeuralODE(lambda x: -x, solver="dopri5")(x0, t_span, save_at)


def test_return_t_eval_false_and_default_t_span():
    node = NeuralODE(XOnly(), solver="dopri5", return_t_eval=False)
    x = torch.randn(3, 2)
    sol = node(x)
    assert isinstance(sol, torch.Tensor) and sol.shape == (2, 3, 2)
    node.t_span = torch.linspace(0, 2, 4)
    assert node(x).shape == (4, 3, 2)
    seq = nn.Sequential(node, nn.Flatten(0, 1))  # chaining in nn.Sequential
    assert seq(x).shape == (12, 2)


def test_hypersolver_as_solver():
    """A hyperode HyperSolver as ``solver=``: z + h f + h^2 g on t_span's own steps."""

    class ConstantCorrection(nn.Module):
        def forward(self, eps, t, y, dy):
            return torch.full_like(y, 0.5)

    t_span = torch.tensor([0.0, 0.2, 0.5, 1.0], dtype=F64)
    x0 = torch.zeros(2, 3, dtype=F64)
    node = NeuralODE(lambda x: torch.zeros_like(x), solver=HyperEuler(ConstantCorrection()))
    _, sol = node(x0, t_span)
    h2 = torch.cumsum((t_span[1:] - t_span[:-1]) ** 2, 0)
    torch.testing.assert_close(sol[1:, 0, 0], 0.5 * h2)
    # an unfitted MLPHyperNet adds nothing: the plain Euler steps, bit for bit
    field = mlp(dim=3, dtype=F64)
    x = torch.randn(4, 3, dtype=F64)
    hyper = HyperSolver("midpoint", MLPHyperNet(state_dim=3).double())
    _, a = NeuralODE(field, solver=hyper)(x, t_span)
    _, b = NeuralODE(field, solver="midpoint")(x, t_span)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(ValueError, match="learned solver"):
        NeuralODE(field, solver=hyper, sensitivity="adjoint")


def test_hyperode_names_and_tableaus_are_accepted():
    x0 = torch.ones(1, 1, dtype=F64)
    t_span = torch.linspace(0, 1, 5, dtype=F64)
    for solver in ("bosh3", "dopri8", "DormandPrince45", "Tsitouras45"):
        _, sol = NeuralODE(lambda x: -x, solver=solver, atol=1e-10, rtol=1e-10)(x0, t_span)
        assert abs(sol[-1].item() - math.exp(-1)) < 1e-8, solver
    _, sol = NeuralODE(lambda x: -x, solver=hyperode.alpha(0.5))(x0, t_span)
    z = -0.25
    assert abs(sol[-1].item() - (1 + z + z * z / 2) ** 4) < 1e-14


@pytest.mark.parametrize("kwargs, match", [
    (dict(solver="alf"), "asynchronous leapfrog"),
    (dict(solver="dopri6"), "tsit5"),
    (dict(solver=3), "solver must be"),
    (dict(solver_adjoint="foo"), "solver_adjoint='foo'"),
    (dict(sensitivity="backsolve"), "sensitivity must be one of"),
    (dict(interpolator="cubic"), "interpolator"),
    (dict(order=0), "order must be"),
    (dict(atol=-1.0), "atol"),
    (dict(seminorm="yes"), "seminorm must be a bool"),
    (dict(sensitivity="adjoint", integral_loss=lambda t, x: x), "integral_loss"),
    (dict(optimizable_params=torch.zeros(2)), "optimizable_params"),
])
def test_bad_arguments_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NeuralODE(XOnly(), **kwargs)


def test_bad_t_span_raises():
    node = NeuralODE(XOnly())
    x = torch.zeros(2, 2)
    for bad in (torch.tensor([0.0, 1.0, 0.5]), torch.tensor([1.0]), "0,1", torch.zeros(2, 3)):
        with pytest.raises(ValueError, match="t_span"):
            node(x, bad)
    with pytest.raises(ValueError, match="dict states"):
        node({"i1": x})


# --------------------------------------------------------------------------- functional odeint


def test_functional_odeint_tutorial_pattern():
    """torchdyn's tutorial: ``t_eval, sol = odeint(sys, x0, t_span, solver='dopri5',
    atol=1e-6, rtol=1e-6)`` on a system with a closed form (a rotation)."""

    class Rotation(nn.Module):
        def forward(self, t, x):
            return torch.stack([-x[:, 1], x[:, 0]], 1)

    x0 = torch.randn(8, 2, dtype=F64)
    t_span = torch.linspace(0, 3, 50, dtype=F64)
    t_eval, sol = odeint(Rotation(), x0, t_span, solver="dopri5", atol=1e-9, rtol=1e-9)
    c, s = torch.cos(t_span)[:, None], torch.sin(t_span)[:, None]
    exact = torch.stack([c * x0[:, 0] - s * x0[:, 1], s * x0[:, 0] + c * x0[:, 1]], -1)
    torch.testing.assert_close(sol, exact, rtol=1e-7, atol=1e-7)
    assert torch.equal(t_eval, t_span)


def test_functional_odeint_complex_state():
    """torchdyn's test_complex_ode: Rabi oscillations, U(t) x0 U(t)^H."""
    omega = 0.8
    sx = torch.tensor([[0, 1], [1, 0]], dtype=torch.complex128)

    def rabi(t, x):
        dx = -1.0j * omega * sx @ x
        return dx + dx.adjoint()

    torch.manual_seed(0)
    x0 = torch.rand(2, 2, dtype=torch.complex128)
    x0 = 0.5 * (x0 + x0.adjoint()) / torch.real(x0.trace())
    t_span = torch.linspace(0.0, 2.0, 10, dtype=F64)
    t_eval, sol = odeint(rabi, x0, t_span, solver="dopri5", atol=1e-8, rtol=1e-6)
    si = torch.eye(2, dtype=torch.complex128)
    u = torch.cos(omega * t_eval)[:, None, None] * si \
        - 1j * torch.sin(omega * t_eval)[:, None, None] * sx
    torch.testing.assert_close(sol, u @ x0 @ u.adjoint(), rtol=1e-5, atol=1e-5)


def test_functional_odeint_reversed_span_and_options():
    x0 = torch.ones(1, dtype=F64)
    t_eval, sol = odeint(lambda t, x: -x, x0, torch.tensor([1.0, 0.5, 0.0], dtype=F64),
                         "dopri5", atol=1e-10, rtol=1e-10)
    assert t_eval.tolist() == [1.0, 0.5, 0.0]
    torch.testing.assert_close(sol[:, 0], torch.exp(torch.tensor([0.0, 0.5, 1.0], dtype=F64)))
    # seminorm=(True, n) judges x[:n] only; t_stops are stepped onto
    x = torch.tensor([1.0, 1e6], dtype=F64)
    _, a = odeint(lambda t, y: -y, x, torch.tensor([0.0, 1.0], dtype=F64), "dopri5",
                  seminorm=(True, 1), t_stops=[0.25, 0.5])
    torch.testing.assert_close(a[-1, 0], torch.tensor(math.exp(-1), dtype=F64), rtol=1e-3,
                               atol=0)
    with pytest.raises(ValueError, match=r"odeint: solver='alf'.*dopri5"):
        odeint(lambda t, y: -y, x, torch.tensor([0.0, 1.0]), "alf")
    with pytest.raises(ValueError, match="return_all_eval"):
        odeint(lambda t, y: -y, x, torch.tensor([0.0, 1.0]), "dopri5", return_all_eval=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        odeint(lambda t, y: -y, x, torch.tensor([0.0, 1.0], dtype=F64), "euler")
