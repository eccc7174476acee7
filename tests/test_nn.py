"""hyperode.nn: solver configuration, the NeuralODE module, data control, augmentation,
Galerkin layers, continuous normalizing flows and the papers' architectures."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import hyperode
from hyperode.nn import (
    CNF,
    Autonomous,
    CNFModel,
    ContinuousDepthModel,
    DataControlled,
    DepthVariantSequential,
    GalerkinConv2d,
    GalerkinLinear,
    LearnedAugment,
    NeuralODE,
    SolverConfig,
    TimeConcat,
    ZeroAugment,
    architectures,
    basis_functions,
    standard_normal_log_prob,
)

F64 = torch.float64
EULER2 = SolverConfig.fixed("euler", num_steps=2)
TIGHT = SolverConfig(rtol=1e-10, atol=1e-10)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def mlp_field(d: int = 3, hidden: int = 8, dtype: torch.dtype = torch.float32) -> nn.Module:
    return TimeConcat(nn.Sequential(nn.Linear(d + 1, hidden), nn.Tanh(),
                                    nn.Linear(hidden, d))).to(dtype)


class Linear(nn.Module):
    """``f(t, z) = z A^T``."""

    def __init__(self, a: torch.Tensor):
        super().__init__()
        self.a = nn.Parameter(a.clone())

    def forward(self, t, z):
        return z @ self.a.T


# ====================================================================== SolverConfig


def test_solver_config_defaults_and_kwargs():
    cfg = SolverConfig()
    assert cfg.odeint_kwargs() == dict(rtol=1e-4, atol=1e-4, method="dopri5", options={})
    assert not cfg.is_fixed and cfg.describe() == "dopri5, rtol=1e-04, atol=1e-04"
    fixed = SolverConfig.fixed("rk4", step_size=0.25, options={"max_num_steps": 50})
    assert fixed.is_fixed and fixed.options == (("max_num_steps", 50),)
    assert fixed.odeint_kwargs()["options"] == {"max_num_steps": 50, "step_size": 0.25}
    assert fixed.describe().startswith("rk4, h=0.25")
    assert SolverConfig.fixed("euler", num_steps=4).describe() == "euler, 4 steps"
    assert SolverConfig(method="dopri5", num_steps=3).is_fixed  # adaptive method on a grid
    # a value object: hashable, equal by value, a ButcherTableau works as the method
    assert hash(fixed) == hash(SolverConfig.fixed("rk4", step_size=0.25,
                                                  options=(("max_num_steps", 50),)))
    assert {cfg, SolverConfig()} == {cfg}
    assert SolverConfig.fixed(hyperode.alpha(0.75), num_steps=2).method_name == "alpha(0.75)"
    with pytest.raises(AttributeError):
        cfg.rtol = 1.0  # frozen


def test_solver_config_replace_switches_grids():
    fixed = SolverConfig.fixed("rk4", step_size=0.1)
    assert fixed.replace(num_steps=8) == SolverConfig.fixed("rk4", num_steps=8)
    assert SolverConfig().replace(method="euler", step_size=0.5).step_size == 0.5
    assert fixed.replace(method="dopri5", step_size=None).is_fixed is False
    with pytest.raises(ValueError, match="unknown field"):
        fixed.replace(tolerance=1.0)


def test_solver_config_adjoint_kwargs():
    cfg = SolverConfig(rtol=1e-5, atol=1e-6, options={"max_num_steps": 99})
    assert cfg.adjoint_kwargs() == dict(adjoint_rtol=1e-5, adjoint_atol=1e-6,
                                        adjoint_method="dopri5",
                                        adjoint_options={"max_num_steps": 99})
    assert cfg.adjoint_kwargs("seminorm")["adjoint_options"]["norm"] == "seminorm"
    cfg2 = cfg.replace(adjoint_rtol=1e-3, adjoint_method="bosh3", adjoint_norm="state_seminorm")
    kw = cfg2.adjoint_kwargs()
    assert (kw["adjoint_rtol"], kw["adjoint_method"]) == (1e-3, "bosh3")
    assert kw["adjoint_options"] == {"max_num_steps": 99, "norm": "state_seminorm"}
    # a fixed-grid backward solve keeps the grid and has no error norm to pass
    rk4 = SolverConfig.fixed("rk4", num_steps=4, adjoint_norm="seminorm")
    assert rk4.adjoint_kwargs()["adjoint_options"] == {"num_steps": 4}
    mixed = SolverConfig.fixed("euler", step_size=0.1, adjoint_method="rk4")
    assert mixed.adjoint_kwargs()["adjoint_options"] == {"step_size": 0.1}


@pytest.mark.parametrize("kwargs, match", [
    (dict(method="rk5"), "method='rk5'"),
    (dict(method="rk4"), "fixed-step"),
    (dict(method="rk4", step_size=0.1, num_steps=3), "only one of"),
    (dict(method="euler", step_size=-0.1), "step_size"),
    (dict(method="euler", step_size=float("nan")), "step_size"),
    (dict(method="euler", num_steps=0), "num_steps"),
    (dict(method="euler", num_steps=2.0), "num_steps"),
    (dict(rtol=-1.0), "rtol"),
    (dict(atol=float("inf")), "atol"),
    (dict(rtol=0.0, atol=0.0), "both 0"),
    (dict(options={"step_size": 0.1}), "field step_size"),
    (dict(method="rk4", num_steps=2, options={"controller": "pi"}), "adaptive"),
    (dict(options=5), "options"),
    (dict(adjoint_rtol=-1e-3), "adjoint_rtol"),
    (dict(adjoint_method="nope"), "adjoint_method='nope'"),
    (dict(adjoint_method="rk4"), "adjoint_method='rk4'"),
    (dict(adjoint_norm="l1"), "adjoint_norm"),
])
def test_solver_config_rejects(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SolverConfig(**kwargs)


def test_solver_config_constructors_reject():
    with pytest.raises(ValueError, match="exactly one"):
        SolverConfig.fixed("rk4")
    with pytest.raises(ValueError, match="exactly one"):
        SolverConfig.fixed("rk4", step_size=0.1, num_steps=2)
    with pytest.raises(ValueError, match="no error estimate"):
        SolverConfig.adaptive("euler")


# ====================================================================== NeuralODE


def test_neural_ode_matches_solve():
    field = mlp_field(dtype=F64)
    z0 = torch.randn(5, 3, dtype=F64)
    t = torch.linspace(0.0, 1.0, 6, dtype=F64)
    cfg = SolverConfig(method="tsit5", rtol=1e-6, atol=1e-7)
    node = NeuralODE(field, solver=cfg)
    traj = node(z0, t)
    ref = hyperode.solve(field, z0, t, rtol=1e-6, atol=1e-7, method="tsit5")
    assert traj.shape == (6, 5, 3)
    torch.testing.assert_close(traj, ref.ys, rtol=0, atol=0)
    assert node.nfe_forward == ref.stats.nfe == node.last_stats.nfe
    # without t_eval: the end state of the default span (0, 1)
    torch.testing.assert_close(node(z0), ref.ys[-1], rtol=0, atol=0)
    # a reversed span integrates backwards
    back = NeuralODE(field, t_span=(1.0, 0.0), solver=cfg)
    torch.testing.assert_close(back(traj[-1]), z0, rtol=1e-5, atol=1e-5)


def test_neural_ode_tuple_state():
    def field(t, y):
        return (y[1], -y[0])

    class Field(nn.Module):
        def forward(self, t, y):
            return field(t, y)

    node = NeuralODE(Field(), t_span=(0.0, math.pi / 2), solver=TIGHT)
    z1 = node((torch.ones(2, dtype=F64), torch.zeros(2, dtype=F64)))
    torch.testing.assert_close(z1[0], torch.zeros(2, dtype=F64), rtol=0, atol=1e-8)
    torch.testing.assert_close(z1[1], -torch.ones(2, dtype=F64), rtol=0, atol=1e-8)


def test_solver_swap_changes_nfe_not_weights():
    model = architectures.digits_model(channels=4, solver=EULER2)
    x = torch.randn(3, 1, 8, 8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.eval()
    with torch.no_grad():
        y_euler = model(x)
        assert model.node.nfe_forward == 2
        model.solver = SolverConfig.fixed("rk4", num_steps=2)
        y_rk4 = model(x)
        assert model.node.nfe_forward == 8
        model.node.solver = SolverConfig(rtol=1e-7, atol=1e-7)
        model(x)
        assert model.node.nfe_forward > 8
    assert not torch.allclose(y_euler, y_rk4)
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert "solver" not in " ".join(after)  # the solver is not part of the weights


def test_using_restores_solver_even_on_error():
    node = NeuralODE(mlp_field(), solver=EULER2)
    rk4 = SolverConfig.fixed("rk4", num_steps=1)
    with node.using(rk4) as n:
        assert n is node and node.solver is rk4
        node(torch.randn(2, 3))
        assert node.nfe_forward == 4
    assert node.solver is EULER2
    with pytest.raises(RuntimeError, match="boom"), node.using(rk4):
        raise RuntimeError("boom")
    assert node.solver is EULER2
    model = architectures.mlp_model(2, hidden=4, solver=EULER2)
    with model.using(rk4):
        assert model.node.solver is rk4
    assert model.node.solver is EULER2


def test_autograd_backward_nfe_is_zero_and_grads_flow():
    field = mlp_field()
    node = NeuralODE(field, solver=SolverConfig.fixed("rk4", num_steps=3))
    node(torch.randn(4, 3)).pow(2).sum().backward()
    assert node.nfe_forward == 12 and node.nfe_backward == 0
    assert node.last_backward_stats is None
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in field.parameters())


def test_neural_ode_rejects_bad_arguments():
    field = mlp_field()
    with pytest.raises(ValueError, match="vector_field"):
        NeuralODE(lambda t, z: z)
    with pytest.raises(ValueError, match="t_span"):
        NeuralODE(field, t_span=(1.0, 1.0))
    with pytest.raises(ValueError, match="t_span"):
        NeuralODE(field, t_span=(0.0, float("nan")))
    with pytest.raises(ValueError, match="t_span"):
        NeuralODE(field, t_span=1.0)
    with pytest.raises(ValueError, match="sensitivity"):
        NeuralODE(field, sensitivity="backprop")
    with pytest.raises(ValueError, match="seminorm"):
        NeuralODE(field, seminorm=True)
    with pytest.raises(ValueError, match="solver"):
        NeuralODE(field, solver={"method": "rk4"})
    node = NeuralODE(field, solver=EULER2)
    with pytest.raises(ValueError, match="solver"):
        node.solver = "dopri5"
    with pytest.raises(ValueError, match=r"t_eval must start at t_span\[0\]"):
        node(torch.randn(2, 3), torch.tensor([0.5, 1.0]))
    with pytest.raises(ValueError, match="t_eval"):
        node(torch.randn(2, 3), torch.tensor(1.0))
    with pytest.raises(ValueError, match="control"):
        node(torch.randn(2, 3), control=torch.randn(2, 3))
    node.sensitivity = "nope"
    with pytest.raises(ValueError, match="sensitivity"):
        node(torch.randn(2, 3))


# ====================================================================== adjoint path


def test_adjoint_gradients_match_autograd():
    pytest.importorskip("hyperode.adjoint")
    field = mlp_field(dtype=F64)
    z0 = torch.randn(4, 3, dtype=F64, requires_grad=True)
    cfg = SolverConfig(rtol=1e-9, atol=1e-9)
    grads = {}
    for sensitivity, seminorm in (("autograd", False), ("adjoint", False), ("adjoint", True)):
        node = NeuralODE(field, solver=cfg, sensitivity=sensitivity, seminorm=seminorm)
        field.zero_grad()
        z0.grad = None
        out = node(z0)
        assert node.nfe_backward == 0
        out.pow(2).sum().backward()
        if sensitivity == "adjoint":
            assert node.nfe_backward > 0
            assert node.nfe_backward == node.last_backward_stats.nfe
        grads[sensitivity, seminorm] = [z0.grad.clone()] + [p.grad.clone()
                                                            for p in field.parameters()]
    for key in (("adjoint", False), ("adjoint", True)):
        for g_ref, g in zip(grads["autograd", False], grads[key]):
            torch.testing.assert_close(g, g_ref, rtol=1e-6, atol=1e-7)


def test_adjoint_receives_solver_settings(monkeypatch):
    import hyperode.nn.node as node_module

    seen = {}
    real = node_module.solve_adjoint

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(node_module, "solve_adjoint", spy)
    field = mlp_field()
    cfg = SolverConfig(rtol=1e-5, atol=1e-6, adjoint_rtol=1e-4, adjoint_method="bosh3")
    node = NeuralODE(field, solver=cfg, sensitivity="adjoint", seminorm=True)
    node(torch.randn(2, 3))
    assert seen["rtol"] == 1e-5 and seen["atol"] == 1e-6 and seen["method"] == "dopri5"
    assert seen["adjoint_rtol"] == 1e-4 and seen["adjoint_atol"] == 1e-6
    assert seen["adjoint_method"] == "bosh3"
    assert seen["adjoint_options"] == {"norm": "seminorm"}
    assert seen["adjoint_params"] == tuple(field.parameters())
    node.solver = cfg.replace(adjoint_norm="default")
    with pytest.raises(ValueError, match="conflicts"):
        node(torch.randn(2, 3))


# ====================================================================== data control


class EchoControl(nn.Module):
    """``field(t, [z, x]) = x``: the state moves at the speed of the input."""

    def forward(self, t, zx):
        return zx[:, zx.shape[1] // 2:]


@pytest.mark.parametrize("sensitivity", ["autograd", "adjoint"])
def test_data_control_sees_x_and_is_not_stale(sensitivity):
    if sensitivity == "adjoint":
        pytest.importorskip("hyperode.adjoint")
    node = NeuralODE(EchoControl(), t_span=(0.0, 2.0), solver=EULER2, sensitivity=sensitivity)
    model = ContinuousDepthModel(nn.Identity(), node, nn.Identity(), data_control=True)
    assert isinstance(model.node.vector_field, DataControlled)
    x1 = torch.randn(3, 2, requires_grad=True)
    x2 = torch.randn(3, 2)
    out1 = model(x1)  # z(2) = x + 2x
    torch.testing.assert_close(out1, 3 * x1.detach())
    torch.testing.assert_close(model(x2), 3 * x2)  # the second batch, not the first
    out1.sum().backward()  # the backward pass still sees x1 (adjoint: in its backward solve)
    torch.testing.assert_close(x1.grad, torch.full_like(x1, 3.0))
    with pytest.raises(ValueError, match="control"):
        model.node.vector_field(torch.tensor(0.0), torch.randn(3, 2))  # nothing is held
    traj = model.trajectory(x2, torch.tensor([0.0, 1.0, 2.0]))
    torch.testing.assert_close(traj[1], 2 * x2)


def test_data_control_images_and_errors():
    field = Autonomous(nn.Conv2d(4 + 1, 4, 3, padding=1))
    model = ContinuousDepthModel(nn.Conv2d(1, 4, 3, padding=1),
                                 NeuralODE(field, solver=EULER2),
                                 nn.Flatten(), data_control=True)
    assert model(torch.randn(2, 1, 5, 5)).shape == (2, 4 * 25)
    bad = ContinuousDepthModel(nn.AvgPool2d(2), NeuralODE(Autonomous(nn.Conv2d(2, 1, 1)),
                                                          solver=EULER2),
                               nn.Identity(), data_control=True)
    with pytest.raises(ValueError, match="does not match the state"):
        bad(torch.randn(2, 1, 4, 4))
    with pytest.raises(ValueError, match="data_control=True"):
        ContinuousDepthModel(nn.Identity(), NeuralODE(DataControlled(EchoControl())),
                             nn.Identity())
    with pytest.raises(ValueError, match="input_map"):
        ContinuousDepthModel(lambda x: x, NeuralODE(EchoControl()), nn.Identity())
    with pytest.raises(ValueError, match="node"):
        ContinuousDepthModel(nn.Identity(), EchoControl(), nn.Identity())
    with pytest.raises(ValueError, match="already"):
        DataControlled(DataControlled(EchoControl()))


# ====================================================================== augmentation


def test_augmenters():
    v = torch.randn(4, 2)
    out = ZeroAugment(3)(v)
    assert out.shape == (4, 5)
    assert torch.equal(out[:, :2], v) and not out[:, 2:].any()
    img = torch.randn(2, 1, 6, 6)
    out = ZeroAugment(2)(img)
    assert out.shape == (2, 3, 6, 6) and torch.equal(out[:, :1], img) and not out[:, 1:].any()
    conv = nn.Conv2d(1, 31, 3, padding=1)
    out = LearnedAugment(conv)(img)
    assert out.shape == (2, 32, 6, 6)
    assert torch.equal(out[:, :1], img) and torch.equal(out[:, 1:], conv(img))
    with pytest.raises(ValueError, match="extra"):
        ZeroAugment(0)
    with pytest.raises(ValueError, match="module"):
        LearnedAugment(torch.relu)


# ====================================================================== Galerkin layers


def _fourier(s: float, n: int) -> list[float]:
    out = [1.0]
    k = 1
    while len(out) < n:
        out += [math.cos(2 * math.pi * k * s), math.sin(2 * math.pi * k * s)]
        k += 1
    return out[:n]


def test_basis_functions():
    s = 0.3
    got = basis_functions("fourier", 6, s, dtype=F64)
    torch.testing.assert_close(got, torch.tensor(_fourier(s, 6), dtype=F64))
    got = basis_functions("polynomial", 4, torch.tensor(s, dtype=F64))
    torch.testing.assert_close(got, torch.tensor([1, s, s**2, s**3], dtype=F64))
    got = basis_functions("fourier", 3, 0.5, period=2.0, dtype=F64)
    torch.testing.assert_close(got, torch.tensor(_fourier(0.25, 3), dtype=F64))


@pytest.mark.parametrize("basis", ["fourier", "polynomial"])
def test_galerkin_linear_is_the_formula(basis):
    layer = GalerkinLinear(3, 2, basis=basis, n_terms=5).double()
    assert layer.weight_coeffs.shape == (5, 2, 3) and layer.bias_coeffs.shape == (5, 2)
    # at initialisation only the constant term is non-zero: depth-invariant
    assert not layer.weight_coeffs[1:].any() and layer.weight_coeffs[0].any()
    torch.testing.assert_close(layer.weight(0.1), layer.weight(0.7))
    with torch.no_grad():
        layer.weight_coeffs.normal_()
        layer.bias_coeffs.normal_()
    x = torch.randn(4, 3, dtype=F64)
    for s in (0.0, 0.3, 0.8):
        phi = _fourier(s, 5) if basis == "fourier" else [s**k for k in range(5)]
        w = sum(c * layer.weight_coeffs[n] for n, c in enumerate(phi))
        b = sum(c * layer.bias_coeffs[n] for n, c in enumerate(phi))
        torch.testing.assert_close(layer.weight(s), w)
        torch.testing.assert_close(layer.bias(torch.tensor(s, dtype=F64)), b)
        torch.testing.assert_close(layer(torch.tensor(s, dtype=F64), x), x @ w.T + b)
    assert not torch.allclose(layer.weight(0.3), layer.weight(0.8))


def test_galerkin_conv2d_is_the_formula():
    layer = GalerkinConv2d(2, 3, 3, padding=1, basis="fourier", n_terms=3).double()
    with torch.no_grad():
        layer.weight_coeffs.normal_()
        layer.bias_coeffs.normal_()
    x = torch.randn(2, 2, 5, 5, dtype=F64)
    s = 0.2
    phi = _fourier(s, 3)
    w = sum(c * layer.weight_coeffs[n] for n, c in enumerate(phi))
    b = sum(c * layer.bias_coeffs[n] for n, c in enumerate(phi))
    out = layer(torch.tensor(s, dtype=F64), x)
    assert out.shape == (2, 3, 5, 5)
    torch.testing.assert_close(out, F.conv2d(x, w, b, padding=1))
    assert not torch.allclose(out, layer(torch.tensor(0.6, dtype=F64), x))


def test_galerkin_field_in_neural_ode():
    field = DepthVariantSequential(GalerkinLinear(2, 8, n_terms=3), nn.Tanh(),
                                   GalerkinLinear(8, 2, basis="polynomial", n_terms=2))
    node = NeuralODE(field, solver=SolverConfig.fixed("midpoint", num_steps=4))
    out = node(torch.randn(5, 2))
    assert out.shape == (5, 2)
    out.pow(2).sum().backward()
    for p in field.parameters():  # every coefficient, constant or not, is trained
        assert p.grad is not None and (p.grad.abs() > 0).all()
    conv_field = DepthVariantSequential(GalerkinConv2d(2, 2, 3, padding=1, n_terms=2))
    assert NeuralODE(conv_field, solver=EULER2)(torch.randn(1, 2, 4, 4)).shape == (1, 2, 4, 4)


@pytest.mark.parametrize("kwargs, match", [
    (dict(basis="chebyshev"), "basis"),
    (dict(n_terms=0), "n_terms"),
    (dict(period=0.0), "period"),
])
def test_galerkin_rejects(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GalerkinLinear(2, 2, **kwargs)
    with pytest.raises(ValueError, match=match):
        GalerkinConv2d(2, 2, 3, **kwargs)


# ====================================================================== CNF


A = torch.tensor([[0.3, -0.8, 0.1], [0.5, -0.2, 0.0], [0.2, 0.4, -0.6]], dtype=F64)


def test_cnf_exact_trace_linear_field_is_analytic():
    t_span = (0.0, 0.7)
    model = CNFModel(CNF(Linear(A)), t_span=t_span, solver=TIGHT)
    x = torch.randn(6, 3, dtype=F64)
    z0, delta = model.base_and_delta(x)
    big_t = t_span[1] - t_span[0]
    torch.testing.assert_close(z0, x @ torch.linalg.matrix_exp(-A * big_t).T,
                               rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(delta, torch.full((6,), float(A.trace()) * big_t, dtype=F64),
                               rtol=1e-9, atol=1e-9)
    # log p(x) = log N(z0) - tr(A) T, N the standard normal (scipy-free closed form)
    expected = -0.5 * (z0.pow(2).sum(1) + 3 * math.log(2 * math.pi)) - float(A.trace()) * big_t
    torch.testing.assert_close(model.log_prob(x), expected, rtol=1e-9, atol=1e-9)
    bpd = model.nll_bits_per_dim(x)
    torch.testing.assert_close(bpd, -model.log_prob(x).mean() / (3 * math.log(2)))
    torch.testing.assert_close(model.nll_bits_per_dim(x, n_bins=256),
                               bpd + math.log(256) / math.log(2))


def test_cnf_log_prob_gradient_flows_through_the_trace():
    """f(z) = a z: log p(x) = log N(e^{-aT} x) - a D T, so
    d/da = T e^{-2aT} |x|^2 - D T; the -D T part exists only through the trace."""
    a = torch.tensor([[0.4]], dtype=F64)

    class Scalar(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Parameter(a[0, 0].clone())

        def forward(self, t, z):
            return self.a * z

    net = Scalar()
    model = CNFModel(CNF(net), t_span=(0.0, 1.0), solver=TIGHT)
    x = torch.randn(5, 2, dtype=F64)
    model.log_prob(x).sum().backward()
    expected = (torch.exp(-2 * a[0, 0]) * x.pow(2).sum(1) - 2).sum()
    torch.testing.assert_close(net.a.grad, expected, rtol=1e-7, atol=1e-8)


class ShiftedNet(nn.Module):
    """An MLP plus ``0.5 z``: a Jacobian with a dominant diagonal, so that the
    probes' spread is small next to the trace and a bias of a few percent shows."""

    def __init__(self):
        super().__init__()
        self.mlp = architectures.cnf_net(dim=3, hidden=16, n_hidden=2, activation="tanh")

    def forward(self, t, z):
        return self.mlp(t, z) + 0.5 * z


@pytest.mark.parametrize("noise", ["gaussian", "rademacher"])
def test_hutchinson_is_unbiased(noise):
    """The trajectory of z does not depend on the probe v, so E_v[delta_logp] equals the
    exact value; each row of a batch of copies of x draws its own v."""
    net = ShiftedNet().double()
    n = 10_000
    x = torch.randn(1, 3, dtype=F64).expand(n, 3)
    cfg = SolverConfig.fixed("rk4", num_steps=4)
    exact_z0, exact = CNFModel(CNF(net), solver=cfg).base_and_delta(x[:1])
    hutch = CNFModel(CNF(net, trace="hutchinson", noise=noise), solver=cfg)
    with torch.no_grad():
        z0, deltas = hutch.base_and_delta(x, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(z0[:1], exact_z0)
    assert deltas.std() > 1e-2  # genuinely stochastic
    standard_error = deltas.std() / math.sqrt(n)
    assert standard_error < 0.01 * exact.abs()  # resolves a bias of a few percent
    assert abs(deltas.mean() - exact[0]) < 4 * standard_error
    if noise == "rademacher":
        assert set(hutch.cnf._noise.unique().tolist()) == {-1.0, 1.0}


def test_hutchinson_linear_field_per_probe():
    """For f = A z one probe gives exactly T v^T A v."""
    cnf = CNF(Linear(A), trace="hutchinson")
    model = CNFModel(cnf, t_span=(0.0, 0.5), solver=TIGHT)
    x = torch.randn(7, 3, dtype=F64)
    _, delta = model.base_and_delta(x)
    v = cnf._noise
    torch.testing.assert_close(delta, 0.5 * torch.einsum("bi,ij,bj->b", v, A, v),
                               rtol=1e-9, atol=1e-9)


def test_sample_and_log_prob_are_inverse():
    model = architectures.cnf_mlp(dim=2, hidden=16, n_hidden=2, solver=TIGHT).double()
    seed = 3
    x, logp = model.sample_with_log_prob(32, generator=torch.Generator().manual_seed(seed))
    z0 = torch.randn(32, 2, dtype=F64, generator=torch.Generator().manual_seed(seed))
    assert x.shape == (32, 2) and logp.shape == (32,)
    back, delta = model.base_and_delta(x)
    torch.testing.assert_close(back, z0, rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(model.log_prob(x), logp, rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(standard_normal_log_prob(z0) - delta, logp, rtol=1e-7, atol=1e-7)
    # sample() runs the flow alone, to the same points
    x2 = model.sample(32, generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(x2, x, rtol=1e-7, atol=1e-7)
    assert not torch.allclose(logp, standard_normal_log_prob(x))  # the flow did something


def test_cnf_under_no_grad_and_training():
    model = architectures.cnf_mlp(hidden=8, n_hidden=1, solver=EULER2)
    x = torch.randn(4, 2)
    with torch.no_grad():
        lp = model.log_prob(x)
    assert not lp.requires_grad and lp.shape == (4,)
    loss = -model.log_prob(x).mean()
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_cnf_adjoint_matches_autograd():
    pytest.importorskip("hyperode.adjoint")
    grads = []
    net = architectures.cnf_net(dim=2, hidden=8, n_hidden=1).double()
    x = torch.randn(5, 2, dtype=F64)
    for sensitivity in ("autograd", "adjoint"):
        net.zero_grad()
        model = CNFModel(CNF(net), solver=SolverConfig(rtol=1e-9, atol=1e-9),
                         sensitivity=sensitivity)
        model.log_prob(x).mean().backward()
        grads.append([p.grad.clone() for p in net.parameters()])
    assert model.node.nfe_backward > 0
    for g_ref, g in zip(*grads):
        torch.testing.assert_close(g, g_ref, rtol=1e-6, atol=1e-8)


def test_cnf_rejects():
    with pytest.raises(ValueError, match="trace"):
        CNF(Linear(A), trace="skilling")
    with pytest.raises(ValueError, match="noise"):
        CNF(Linear(A), noise="uniform")
    with pytest.raises(ValueError, match="net"):
        CNF(lambda t, z: z)
    with pytest.raises(ValueError, match="cnf"):
        CNFModel(Linear(A))
    cnf = CNF(Linear(A), trace="hutchinson")
    z, logp = torch.randn(4, 3, dtype=F64), torch.zeros(4, 1, dtype=F64)
    with pytest.raises(ValueError, match="resample_noise"):
        cnf(torch.tensor(0.0), (z, logp))
    cnf.resample_noise(z[:2])
    with pytest.raises(ValueError, match="resample_noise"):
        cnf(torch.tensor(0.0), (z, logp))
    model = CNFModel(CNF(Linear(A)), solver=EULER2)
    with pytest.raises(ValueError, match="dim"):
        model.sample(3)
    model.log_prob(z)  # learns D = 3
    assert model.sample(2).shape == (2, 3)
    with pytest.raises(ValueError, match="features"):
        model.log_prob(torch.randn(2, 4, dtype=F64))
    with pytest.raises(ValueError, match="n must be"):
        model.sample(0)
    with pytest.raises(ValueError, match=r"\[B, D\]"):
        model.log_prob(torch.randn(3, dtype=F64))


# ====================================================================== architectures


CASES = {
    "hypersolver_mnist": (lambda s: architectures.hypersolver_mnist_model(s),
                          (2, 1, 28, 28), (2, 10)),
    "hypersolver_cifar": (lambda s: architectures.hypersolver_cifar_model(s),
                          (2, 3, 32, 32), (2, 10)),
    "ott_sphere": (lambda s: architectures.ott_sphere_model(3, s), (4, 3), (4, 2)),
    "ott_mnist": (lambda s: architectures.ott_mnist_model(s), (2, 1, 28, 28), (2, 10)),
    "ott_cifar": (lambda s: architectures.ott_cifar_model(s), (2, 3, 32, 32), (2, 10)),
    "digits": (lambda s: architectures.digits_model(8, s), (4, 1, 8, 8), (4, 10)),
    "mlp": (lambda s: architectures.mlp_model(2, 8, 2, augment=3, solver=s), (5, 2), (5, 2)),
    "mlp_time": (lambda s: architectures.mlp_model(3, 8, 4, solver=s, time_input=True),
                 (5, 1, 3), (5, 4)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_architecture_forward_backward(name):
    build, in_shape, out_shape = CASES[name]
    model = build(EULER2)
    assert isinstance(model, ContinuousDepthModel)
    assert model.node.solver is EULER2
    out = model(torch.randn(in_shape))
    assert out.shape == out_shape and model.node.nfe_forward == 2
    F.cross_entropy(out, torch.randint(0, out_shape[1], (out_shape[0],))).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


def test_cnf_mlp_forward_backward():
    model = architectures.cnf_mlp(dim=2, hidden=16, n_hidden=3, activation="tanh",
                                  trace="hutchinson", solver=EULER2)
    assert isinstance(model, CNFModel) and model.node.solver is EULER2
    linears = [m for m in model.cnf.net.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == \
        [(3, 16), (16, 16), (16, 16), (16, 2)]
    model.nll_bits_per_dim(torch.randn(8, 2)).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    assert model.sample(3).shape == (3, 2)
    autonomous = architectures.cnf_mlp(time_input=False, hidden=4, n_hidden=1)
    assert isinstance(autonomous.cnf.net, Autonomous)


def test_architecture_layouts():
    mnist = architectures.hypersolver_mnist_model()
    convs = [m for m in mnist.node.vector_field.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.padding) for c in convs] == \
        [(32, 46, (3, 3), (1, 1)), (46, 46, (3, 3), (1, 1)), (46, 32, (3, 3), (1, 1))]
    assert sum(isinstance(m, nn.Softplus) for m in mnist.node.vector_field.modules()) == 2
    assert isinstance(mnist.input_map[0], nn.BatchNorm2d)
    assert mnist.input_map[1].module.out_channels == 31
    cifar = architectures.hypersolver_cifar_model()
    convs = [m for m in cifar.node.vector_field.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(20, 50), (50, 50), (50, 20)]
    assert cifar.output_map[-1].in_features == 80
    block = architectures.ott_ode_block(64, "2d")
    kinds = [(type(m).__name__, getattr(m, "kernel_size", None)) for m in block]
    assert kinds == [("Conv2d", (1, 1)), ("ReLU", None), ("Conv2d", (3, 3)), ("ReLU", None),
                     ("Conv2d", (1, 1))]
    assert all(not m.bias.any() for m in block if isinstance(m, nn.Conv2d))
    # Kaiming normal, fan-in: std = sqrt(2 / fan_in)
    middle = block[2].weight
    assert abs(middle.std().item() / math.sqrt(2 / (64 * 9)) - 1) < 0.05
    assert architectures.ott_ode_block(32)[0].in_channels == 1
    assert architectures.ott_cifar_model().node.vector_field.net[0].in_channels == 3


@pytest.mark.parametrize("call, match", [
    (lambda: architectures.ott_ode_block(0), "channels"),
    (lambda: architectures.ott_ode_block(8, conv="3d"), "conv"),
    (lambda: architectures.ott_sphere_model(0), "dim"),
    (lambda: architectures.mlp_model(2, activation="swish"), "activation"),
    (lambda: architectures.mlp_model(2, augment=-1), "augment"),
    (lambda: architectures.cnf_mlp(hidden=0), "hidden"),
    (lambda: architectures.digits_model(channels=2.5), "channels"),
    (lambda: architectures.digits_model(solver=SolverConfig(), sensitivity="x"), "sensitivity"),
])
def test_architectures_reject(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_time_concat_takes_one_time_per_sample():
    """A [B] time (per-sample step sizes) gives each sample its own time feature, equal
    to calling the field on that sample alone."""
    torch.manual_seed(0)
    f = TimeConcat(nn.Linear(3, 2).double())
    z = torch.randn(4, 2, dtype=torch.float64)
    t = torch.tensor([0.0, 0.5, 1.0, 2.0], dtype=torch.float64)
    out = f(t, z)
    for b in range(4):
        torch.testing.assert_close(out[b:b + 1], f(t[b], z[b:b + 1]), rtol=0, atol=0)
    conv = TimeConcat(nn.Conv2d(2, 1, 1).double())
    img = torch.randn(4, 1, 3, 3, dtype=torch.float64)
    out = conv(t, img)
    torch.testing.assert_close(out[2:3], conv(t[2], img[2:3]), rtol=0, atol=0)
    sol = hyperode.solve(f, z, torch.tensor([0.0, 1.0], dtype=torch.float64), method="dopri5",
                         options=dict(per_sample_steps=True))
    alone = hyperode.solve(f, z[1:2], torch.tensor([0.0, 1.0], dtype=torch.float64),
                           method="dopri5")
    torch.testing.assert_close(sol.ys[-1, 1:2], alone.ys[-1], rtol=1e-6, atol=1e-8)
