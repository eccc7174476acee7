"""Hypersolvers: the step (eq. 5) against its base, integration with every entry point,
residuals (eq. 6), fitting, swapping the base, the compiled path and bad input."""

from __future__ import annotations

import copy
import math
import shutil

import pytest
import torch
from torch import nn

import hyperode
from hyperode import alpha
from hyperode.hyper import (
    Adversarial,
    ConvHyperNet,
    FitConfig,
    FixedGridSolve,
    HyperEuler,
    HyperHeun,
    HyperMidpoint,
    HyperSolver,
    MLPHyperNet,
    cifar_hypernet,
    cnf_hypernet,
    compile_solve,
    fit,
    mnist_hypermidpoint_net,
    mnist_hypernet,
    prepare_batch,
    reference_trajectory,
    residual_loss,
    residuals,
    trajectory_loss,
    uniform_mesh,
)
from hyperode.nn import CNF, Autonomous, NeuralODE, SolverConfig, cnf_net

F64 = torch.float64
A = torch.tensor([[-0.1, -2.0], [2.0, -0.1]], dtype=F64)  # damped rotation


def linear(t, y):
    return y @ A.T


def field_mlp(dtype=F64, seed=0, width=16):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(2, width), nn.Tanh(), nn.Linear(width, 2)).to(dtype)
    return Autonomous(net)


class CountingG(nn.Module):
    """g = W y + v dy + c eps (nonzero), counting its calls."""

    def __init__(self, dim=2, dtype=F64, scale=0.3):
        super().__init__()
        torch.manual_seed(1)
        self.w = nn.Parameter(scale * torch.randn(dim, dim, dtype=dtype))
        self.v = nn.Parameter(torch.tensor(scale, dtype=dtype))
        self.calls = 0
        self.seen = []

    def forward(self, eps, t, y, dy):
        self.calls += 1
        self.seen.append((eps, t))
        return y @ self.w.T + self.v * dy + eps


class LinearG(nn.Module):
    """g = W y, zero-initialised: can represent the residual of a linear ODE exactly."""

    def __init__(self, dim=2):
        super().__init__()
        self.lin = nn.Linear(dim, dim, bias=False).to(F64)
        nn.init.zeros_(self.lin.weight)

    def forward(self, eps, t, y, dy):
        return self.lin(y)


def t01(n=2):
    return torch.linspace(0.0, 1.0, n, dtype=F64)


# ---------------------------------------------------------------------- the step


@pytest.mark.parametrize("base", ["euler", "midpoint", "heun2", "ralston", "rk4", "bosh3",
                                  alpha(0.7)])
def test_unfitted_hypersolver_equals_base_bit_for_bit(base):
    z0 = torch.randn(16, 2, dtype=F64)
    field = field_mlp()
    hyper = HyperSolver(base, MLPHyperNet(2, (8, 8)).double())  # last layer zero
    t = t01(5)
    a = hyperode.solve(field, z0, t, method=hyper, options=dict(num_steps=12))
    b = hyperode.solve(field, z0, t, method=base, options=dict(num_steps=12))
    assert torch.equal(a.ys, b.ys)
    assert a.stats.nfe_correction == 12 and b.stats.nfe_correction == 0
    if not hyper.base.fsal:  # FSAL bases lose their reuse when corrected (docstring)
        assert a.stats.nfe == b.stats.nfe


def test_step_is_base_plus_scaled_correction_and_reuses_first_stage():
    g = CountingG()
    hyper = HyperMidpoint(g)
    z0 = torch.randn(8, 2, dtype=F64)
    calls = []

    def f(t, y):
        calls.append(float(t))
        return linear(t, y)

    h = 0.25
    sol = hyperode.solve(f, z0, [0.0, h], method=hyper, options=dict(num_steps=1))
    assert calls == [0.0, h / 2]  # first stage at s_k reused for g: no extra f call
    k1 = linear(None, z0)
    base = z0 + h * linear(None, z0 + h / 2 * k1)
    expected = base + h ** 3 * (z0 @ g.w.T + g.v * k1 + h)
    torch.testing.assert_close(sol.ys[-1], expected, rtol=1e-14, atol=1e-14)
    eps, t = g.seen[0]
    assert eps.ndim == 0 and t.ndim == 0 and eps.dtype == F64 and float(eps) == h


def test_backward_in_time_uses_signed_step():
    g = CountingG()
    hyper = HyperEuler(g)
    z0 = torch.randn(4, 2, dtype=F64)
    sol = hyperode.solve(linear, z0, [1.0, 0.5], method=hyper, options=dict(num_steps=1))
    h = -0.5
    k1 = linear(None, z0)
    expected = z0 + h * k1 + h ** 2 * (z0 @ g.w.T + g.v * k1 + h)
    torch.testing.assert_close(sol.ys[-1], expected, rtol=1e-14, atol=1e-14)
    assert float(g.seen[0][0]) == h and float(g.seen[0][1]) == 1.0


def test_nfe_of_g_counted_separately_and_f_nfe_unchanged():
    g = CountingG()
    z0 = torch.randn(8, 2, dtype=F64)
    for cls, base, stages in ((HyperEuler, "euler", 1), (HyperMidpoint, "midpoint", 2),
                              (HyperHeun, "heun2", 2)):
        hyper = cls(g)
        g.calls = 0
        a = hyperode.solve(linear, z0, t01(2), method=hyper, options=dict(num_steps=7))
        b = hyperode.solve(linear, z0, t01(2), method=base, options=dict(num_steps=7))
        assert a.stats.nfe == b.stats.nfe == 7 * stages
        assert a.stats.nfe_correction == g.calls == 7
        assert a.stats.as_dict()["nfe_correction"] == 7
        with hyper.disabled():
            c = hyperode.solve(linear, z0, t01(2), method=hyper, options=dict(num_steps=7))
        assert c.stats.nfe_correction == 0 and g.calls == 7
        assert torch.equal(c.ys, b.ys)


def test_disabled_runs_the_plain_base():
    g = CountingG()
    hyper = HyperEuler(g, enabled=False)
    z0 = torch.randn(8, 2, dtype=F64)
    a = hyperode.odeint(linear, z0, t01(3), method=hyper, options=dict(step_size=0.1))
    b = hyperode.odeint(linear, z0, t01(3), method="euler", options=dict(step_size=0.1))
    assert torch.equal(a, b) and g.calls == 0
    assert "g off" in hyper.name
    hyper.enabled = True
    with hyper.disabled():
        assert not hyper.enabled and hyper.corrections_per_step == 0
    assert hyper.enabled and hyper.corrections_per_step == 1
    bosh = HyperSolver("bosh3", g)
    assert not bosh.fsal
    with bosh.disabled():
        assert bosh.fsal  # the plain base keeps its FSAL reuse


def test_with_base_shares_g_across_alpha_family():
    g = CountingG()
    mid = HyperMidpoint(g)
    before = copy.deepcopy(g.state_dict())
    z0 = torch.randn(8, 2, dtype=F64)
    field = field_mlp()
    for a in (0.3, 0.5, 0.75, 1.0):
        other = mid.with_base(alpha(a))
        assert other.g is g and other.order == 2 and other.base == alpha(a)
        h = 0.2
        ys = hyperode.odeint(field, z0, [0.0, h], method=other, options=dict(num_steps=1))
        with torch.no_grad():
            base = hyperode.odeint(field, z0, [0.0, h], method=alpha(a),
                                   options=dict(num_steps=1))[-1]
            k1 = field(None, z0)
            expected = base + h ** 3 * (z0 @ g.w.T + g.v * k1 + h)
        torch.testing.assert_close(ys[-1].detach(), expected, rtol=1e-13, atol=1e-13)
    assert all(torch.equal(before[k], v) for k, v in g.state_dict().items())
    assert mid.with_base("heun2").g is g
    with pytest.raises(ValueError, match="order 1"):
        mid.with_base("euler")
    off = HyperMidpoint(g, enabled=False).with_base(alpha(0.8))
    assert not off.enabled


def test_only_g_parameters_belong_to_the_hypersolver():
    g = MLPHyperNet(2, (4,))
    hyper = HyperEuler(g)
    assert list(hyper.parameters()) == list(g.parameters())
    assert set(hyper.state_dict()) == {f"g.{k}" for k in g.state_dict()}
    assert "euler" in repr(hyper)


def test_tuple_state_and_conditioning_on_x():
    torch.manual_seed(0)
    cnf = CNF(cnf_net(2, hidden=16))
    g = cnf_hypernet(2, hidden=16)
    for p in g.parameters():  # non-zero g, to see the tuple plumbing work
        nn.init.normal_(p, std=0.1)
    hyper = HyperHeun(g)
    z = torch.randn(32, 2)
    state = (z, torch.zeros(32, 1))
    with pytest.raises(ValueError, match="conditioned"):
        hyperode.odeint(cnf, state, [0.0, 1.0], method=hyper, options=dict(num_steps=2))
    from hyperode.hyper.nets import per_sample

    with g.conditioned(per_sample(state)):
        zs, logps = hyperode.odeint(cnf, state, [0.0, 1.0], method=hyper,
                                    options=dict(num_steps=2))
    assert zs.shape == (2, 32, 2) and logps.shape == (2, 32, 1)
    base_z, _ = hyperode.odeint(cnf, state, [0.0, 1.0], method="heun2",
                                options=dict(num_steps=2))
    assert not torch.equal(zs, base_z)
    assert g.net[0].in_features == 10 and g.net[-1].out_features == 3


# ---------------------------------------------------------------------- entry points


def test_works_through_odeint_solve_solverconfig_and_neuralode():
    field = field_mlp(torch.float32)
    g = MLPHyperNet(2, (8,), zero_init=False)
    hyper = HyperEuler(g)
    z0 = torch.randn(8, 2)
    t = torch.tensor([0.0, 1.0])
    ref = hyperode.odeint(field, z0, t, method=hyper, options=dict(num_steps=5))
    assert torch.equal(hyper(field, z0, t, num_steps=5), ref)
    assert torch.equal(hyperode.solve(field, z0, t, method=hyper,
                                      options=dict(step_size=0.2)).ys, ref)
    cfg = SolverConfig(method=hyper, num_steps=5)
    assert cfg.is_fixed and cfg.method_name == hyper.name and "hyper(euler)" in cfg.describe()
    assert hash(cfg) == hash(SolverConfig(method=hyper, num_steps=5))
    node = NeuralODE(field, solver=cfg)
    out = node(z0)
    assert torch.equal(out, ref[-1])
    assert node.last_stats.nfe == 5 and node.last_stats.nfe_correction == 5
    assert not any(p is q for p in node.parameters() for q in g.parameters())
    with node.using(SolverConfig.fixed("euler", num_steps=5)):
        plain = node(z0)
    with hyper.disabled():
        assert torch.equal(node(z0), plain)
    out.pow(2).sum().backward()  # backprop through the solver reaches f and g
    assert field.net[0].weight.grad is not None and g.net[0].weight.grad is not None


def test_adjoint_rejects_hypersolvers():
    field = field_mlp(torch.float32)
    hyper = HyperEuler(MLPHyperNet(2, (8,)))
    z0 = torch.randn(8, 2)
    with pytest.raises(ValueError, match="adjoint"):
        hyperode.odeint_adjoint(field, z0, [0.0, 1.0], method=hyper,
                                options=dict(num_steps=4))
    with pytest.raises(ValueError, match="adjoint"):
        hyperode.odeint_adjoint(field, z0, [0.0, 1.0], method="euler",
                                options=dict(num_steps=4), adjoint_method=hyper)
    node = NeuralODE(field, solver=SolverConfig(method=hyper, num_steps=4),
                     sensitivity="adjoint")
    with pytest.raises(ValueError, match="sensitivity='autograd'"):
        node(z0)


# ---------------------------------------------------------------------- residuals


def test_residual_of_an_exact_solution_is_the_formula():
    z0 = torch.randn(5, 2, dtype=F64)
    mesh = uniform_mesh((0.0, 1.0), 4)
    traj = torch.stack([z0 @ torch.linalg.matrix_exp(s * A).T for s in mesh])
    eps = 0.25
    eye = torch.eye(2, dtype=F64)
    # Euler: R = (e^{eps A} - I - eps A) / eps^2 z(s_k)
    m_euler = (torch.linalg.matrix_exp(eps * A) - eye - eps * A) / eps ** 2
    r = residuals("euler", linear, traj, mesh)
    assert r.shape == (4, 5, 2)
    torch.testing.assert_close(r, traj[:-1] @ m_euler.T, rtol=1e-12, atol=1e-12)
    # Midpoint: psi = A (z + eps/2 A z), R = (z(s+eps) - z - eps psi) / eps^3
    r_mid = residuals(HyperMidpoint(LinearG()), linear, traj, mesh)
    for k in range(4):
        z = traj[k]
        psi = (z + eps / 2 * z @ A.T) @ A.T
        torch.testing.assert_close(r_mid[k], (traj[k + 1] - z - eps * psi) / eps ** 3,
                                   rtol=1e-12, atol=1e-12)
    # the cached fitting targets are the same numbers, per sample flattened
    batch = prepare_batch("euler", linear, z0, num_steps=4, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(batch.meshes[0].target, r, rtol=1e-7, atol=1e-7)
    assert batch.nfe > 0
    # tuple states keep their structure
    rt = residuals("euler", lambda t, y: (linear(t, y[0]), -y[1]), (traj, traj[..., :1]),
                   mesh)
    assert isinstance(rt, tuple) and rt[0].shape == (4, 5, 2) and rt[1].shape == (4, 5, 1)


def test_residual_loss_of_exact_g_is_zero_and_reductions():
    z0 = torch.randn(6, 2, dtype=F64)
    batch = prepare_batch("euler", linear, z0, num_steps=5, rtol=1e-12, atol=1e-12)
    eps = 0.2
    m = (torch.linalg.matrix_exp(eps * A) - torch.eye(2, dtype=F64) - eps * A) / eps ** 2
    g = LinearG()
    with torch.no_grad():
        g.lin.weight.copy_(m)
    hyper = HyperEuler(g)
    assert float(residual_loss(hyper, batch).detach()) < 1e-8
    with torch.no_grad():
        g.lin.weight.zero_()
    # mean over k and samples of the per-sample 2-norm of R_k
    expected = torch.linalg.vector_norm(batch.meshes[0].target, dim=2).mean()
    torch.testing.assert_close(residual_loss(hyper, batch), expected)
    # trajectory loss: mean_b sum_k ||z(s_k) - z_k|| with z_k by (plain) Euler
    ys = hyperode.odeint(linear, z0, torch.tensor(batch.meshes[0].mesh, dtype=F64),
                         method="euler", options=dict(num_steps=5))
    ref = torch.stack(batch.meshes[0].z)
    expected = torch.linalg.vector_norm(ys[1:] - ref[1:], dim=2).sum(0).mean()
    torch.testing.assert_close(trajectory_loss(hyper, linear, batch), expected)


# ---------------------------------------------------------------------- fitting


def test_fit_recovers_the_known_truncation_error_of_a_linear_ode():
    torch.manual_seed(0)
    hyper = HyperEuler(LinearG())
    batches = [torch.randn(128, 2, dtype=F64) for _ in range(3)]
    tol = 1e-10
    history = fit(hyper, linear, batches, iterations=500, num_steps=10, lr=1e-2, eta_min=1e-5,
                  rtol=tol, atol=tol, new_batch_every=200, progress=False,
                  validation=torch.randn(64, 2, dtype=F64), validate_every=250)
    eps = 0.1
    m = (torch.linalg.matrix_exp(eps * A) - torch.eye(2, dtype=F64) - eps * A) / eps ** 2
    torch.testing.assert_close(hyper.g.lin.weight.detach(), m, rtol=0, atol=1e-4)
    # one step from fresh points: the local error drops from Euler's to near the tolerance
    z = torch.randn(256, 2, dtype=F64)
    exact = z @ torch.linalg.matrix_exp(eps * A).T
    with torch.no_grad():
        hyp = hyperode.odeint(linear, z, [0.0, eps], method=hyper, options=dict(num_steps=1))
    euler = hyperode.odeint(linear, z, [0.0, eps], method="euler", options=dict(num_steps=1))
    err_hyper = float((hyp[-1] - exact).abs().max())
    err_euler = float((euler[-1] - exact).abs().max())
    assert err_euler > 1e-2 and err_hyper < 1e-6
    assert history.batches == 4 and len(history.loss) == 500  # drawn at i = 0, 10, 210, 410
    assert history.val_loss[0][0] == 0 and history.val_loss[-1][0] == 500
    assert history.val_loss[-1][1] < 1e-3 * history.val_loss[0][1]
    assert history.as_dict()["config"]["num_steps"] == 10


def test_fitting_reduces_validation_loss_on_several_step_sizes_and_generalises_across_alpha():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 2))
    with torch.no_grad():  # livelier dynamics than the default initialisation
        net[0].weight.mul_(2.0)
        net[2].weight.mul_(3.0)
    field = Autonomous(net)
    hyper = HyperMidpoint(MLPHyperNet(2, (32, 32)))
    train = [torch.randn(128, 2) for _ in range(4)]
    val = torch.randn(128, 2)
    history = fit(hyper, field, train, iterations=150, num_steps=(2, 4), lr=1e-2, rtol=1e-6,
                  atol=1e-6, validation=val, validate_every=50, progress=False)
    first, last = history.val_loss[0][1], history.val_loss[-1][1]
    assert last < 0.4 * first
    assert [i for i, _ in history.val_loss] == [0, 50, 100, 150]
    assert history.batches == 15  # i = 0, then every 10 from N1 = 10
    # one g for both meshes
    for k in (2, 4):
        b = prepare_batch(hyper, field, val, num_steps=k, rtol=1e-6, atol=1e-6)
        with torch.no_grad():
            fitted = float(residual_loss(hyper, b))
            unfitted = float(residual_loss(HyperMidpoint(MLPHyperNet(2, (4,))), b))
        assert fitted < 0.5 * unfitted
    # swapping the base across the alpha family without finetuning keeps a gain, and so
    # does an unseen step size
    t = torch.tensor([0.0, 1.0])
    exact = reference_trajectory(field, val, [0.0, 1.0], rtol=1e-7, atol=1e-7)[-1]
    for a, k in ((0.4, 4), (0.7, 4), (1.0, 4), (0.5, 8)):
        with torch.no_grad():
            h = hyperode.odeint(field, val, t, method=hyper.with_base(alpha(a)),
                                options=dict(num_steps=k))[-1]
            plain = hyperode.odeint(field, val, t, method=alpha(a), options=dict(num_steps=k))
        assert float((h - exact).abs().mean()) < 0.8 * float((plain[-1] - exact).abs().mean())


def test_trajectory_and_combined_fitting_train_only_g():
    field = field_mlp(torch.float32)
    hyper = HyperEuler(MLPHyperNet(2, (16, 16)))
    z0 = torch.randn(64, 2)
    batch = prepare_batch(hyper, field, z0, num_steps=4)
    with torch.no_grad():
        before = float(trajectory_loss(hyper, field, batch))
    f_before = copy.deepcopy(field.state_dict())
    history = fit(hyper, field, z0, iterations=40, num_steps=4, residual_weight=0.5,
                  trajectory_weight=1.0, lr=1e-2, progress=False)
    with torch.no_grad():
        assert float(trajectory_loss(hyper, field, batch)) < 0.7 * before
    assert history.loss[-1] < history.loss[0]
    assert all(p.grad is None for p in field.parameters())
    assert all(torch.equal(f_before[k], v) for k, v in field.state_dict().items())
    assert all(p.grad is None for p in hyper.parameters())


def test_fit_schedule_caches_references_per_batch():
    calls = {"n": 0}

    class Source:
        def __iter__(self):
            for _ in range(2):
                calls["n"] += 1
                yield torch.randn(16, 2, dtype=F64)

    hyper = HyperEuler(LinearG())
    seen = []
    history = fit(hyper, linear, Source(), iterations=35, num_steps=3, first_batch_iterations=5,
                  new_batch_every=10, progress=False,
                  callback=lambda i, loss, h: seen.append(i))
    # batches at i = 0, 5, 15, 25: four draws from a two-batch source, re-iterated
    assert history.batches == 4 and calls["n"] == 4 and seen == list(range(35))
    ref_per_batch = history.reference_nfe / 4
    assert ref_per_batch == int(ref_per_batch)  # targets built once per batch, not per step


def test_adversarial_fitting_example_runs():
    torch.manual_seed(0)
    field = field_mlp(torch.float32)
    hyper = HyperEuler(MLPHyperNet(2, (32, 32)))
    adv = copy.deepcopy(field)
    w0 = adv.net[0].weight.detach().clone()
    history = fit(hyper, adv, [torch.randn(64, 2)], iterations=20, num_steps=4,
                  residual_weight=0.0, trajectory_weight=1.0,
                  adversarial=Adversarial(field_lr=1e-2, radius=0.5), progress=False)
    assert len(history.adversarial_loss) == 20
    assert history.adversarial_loss[-1] > history.adversarial_loss[0]  # theta hurts g
    moved = float((adv.net[0].weight.detach() - w0).norm())
    assert 0 < moved <= 0.5 * float(w0.norm()) + 1e-6  # projected onto the radius
    assert torch.equal(field.net[0].weight, w0)  # the original field is untouched


# ---------------------------------------------------------------------- networks


def test_paper_networks_have_the_papers_shapes_and_start_at_zero():
    convs = [m for m in mnist_hypernet().modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(65, 32), (32, 32), (32, 32)]
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in convs)
    assert sum(isinstance(m, nn.PReLU) for m in mnist_hypernet().modules()) == 2
    convs = [m for m in cifar_hypernet().modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(41, 32), (32, 32), (32, 20)]
    convs = [m for m in mnist_hypermidpoint_net().modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(65, 92), (92, 32)]
    g = ConvHyperNet(4, (8,))
    y = torch.randn(3, 4, 6, 6)
    out = g(torch.tensor(0.1), torch.tensor(0.0), y, y)
    assert out.shape == y.shape and torch.count_nonzero(out) == 0
    field = Autonomous(nn.Conv2d(4, 4, 3, padding=1))
    hyper = HyperEuler(g)
    a = hyperode.odeint(field, y, [0.0, 1.0], method=hyper, options=dict(num_steps=3))
    b = hyperode.odeint(field, y, [0.0, 1.0], method="euler", options=dict(num_steps=3))
    assert torch.equal(a, b)
    timed = MLPHyperNet(3, (4,), time_input=True, zero_init=False)
    assert timed.net[0].in_features == 8


# ---------------------------------------------------------------------- compiled path


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit, inside torch.compile
def test_fixed_grid_solve_matches_solver_and_compiled_matches_eager():
    field = field_mlp(torch.float32)
    g = MLPHyperNet(2, (16,), zero_init=False)
    hyper = HyperEuler(g)
    z0 = torch.randn(32, 2)
    eager = FixedGridSolve(field, hyper, (0.0, 1.0), 4, trajectory=True)
    with torch.no_grad():
        traj = eager(z0)
        ref = hyperode.odeint(field, z0, torch.linspace(0, 1, 5), method=hyper,
                              options=dict(num_steps=4))
    assert torch.equal(traj, ref)  # the same operations as the solver, bit for bit
    if not hasattr(torch, "compile"):
        pytest.skip("torch.compile is not available in this PyTorch")
    if shutil.which("c++") is None and shutil.which("g++") is None:
        pytest.skip("torch.compile's CPU backend needs a C++ compiler; none on PATH")
    compiled = compile_solve(field, hyper, (0.0, 1.0), 4, fullgraph=True)
    out = compiled(z0)
    again = compiled(z0 + 1)
    torch.testing.assert_close(out, traj[-1], rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(again, eager(z0 + 1)[-1], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------- bad input


def test_bad_bases_and_networks():
    g = MLPHyperNet(2, (4,))
    with pytest.raises(ValueError, match="not a known method"):
        HyperSolver("implicit_eulr", g)
    with pytest.raises(ValueError, match="'implicit_euler' is not an explicit Butcher tableau"):
        HyperSolver("implicit_euler", g)
    with pytest.raises(ValueError, match="explicit"):
        HyperSolver({"a": [[0.5, 0.5]]}, g)
    with pytest.raises(ValueError, match="lower-triangular"):  # implicit trapezoidal rule
        HyperSolver(hyperode.ButcherTableau("trapezoid", c=(0.0, 1.0), a=((0.0, 0.0),
                                            (0.5, 0.5)), b=(0.5, 0.5), order=2), g)
    with pytest.raises(ValueError, match="not another hypersolver"):
        HyperSolver(HyperEuler(g), g)
    with pytest.raises(ValueError, match=r"nn\.Module"):
        HyperEuler(lambda eps, t, y, dy: y)
    with pytest.raises(ValueError, match="bool"):
        HyperEuler(g, enabled=1)
    with pytest.raises(ValueError, match="activation"):
        MLPHyperNet(2, (4,), activation="gelu")
    with pytest.raises(ValueError, match="odd"):
        ConvHyperNet(2, kernel_size=2)
    with pytest.raises(ValueError, match="state_dim=3"):
        HyperEuler(MLPHyperNet(3, (4,)))(linear, torch.randn(2, 2, dtype=F64), [0.0, 1.0],
                                          num_steps=1)


class WrongShape(nn.Module):
    def forward(self, eps, t, y, dy):
        return y[:, :1]


class WrongDtype(nn.Module):
    def forward(self, eps, t, y, dy):
        return y.float()


def test_g_output_mismatch_fails_on_the_first_step():
    z0 = torch.randn(4, 2, dtype=F64)
    calls = []

    def f(t, y):
        calls.append(float(t))
        return linear(t, y)

    with pytest.raises(ValueError, match=r"shape \(4, 1\).*\(4, 2\).*t=0\.0"):
        hyperode.odeint(f, z0, [0.0, 1.0], method=HyperEuler(WrongShape()),
                        options=dict(num_steps=10))
    assert calls == [0.0]
    with pytest.raises(ValueError, match=r"dtype torch\.float32"):
        hyperode.odeint(linear, z0, [0.0, 1.0], method=HyperEuler(WrongDtype()),
                        options=dict(num_steps=10))

    class NotTuple(nn.Module):
        def forward(self, eps, t, y, dy):
            return y[0]

    with pytest.raises(ValueError, match="tuple of 2"):
        hyperode.odeint(lambda t, y: y, (z0, z0), [0.0, 1.0], method=HyperEuler(NotTuple()),
                        options=dict(num_steps=2))


def test_adaptive_options_and_bad_grids_are_refused():
    hyper = HyperEuler(MLPHyperNet(2, (4,)).double())
    z0 = torch.randn(4, 2, dtype=F64)
    with pytest.raises(ValueError, match=r"options \['max_step'\] apply only to adaptive"):
        hyperode.odeint(linear, z0, [0.0, 1.0], method=hyper, options=dict(max_step=0.1))
    with pytest.raises(ValueError, match="apply only to adaptive solves"):
        hyperode.odeint(linear, z0, [0.0, 1.0], method=hyper,
                        options=dict(num_steps=4, controller="pi"))
    with pytest.raises(ValueError, match="num_steps"):
        hyperode.odeint(linear, z0, [0.0, 1.0], method=hyper, options=dict(num_steps=0))
    with pytest.raises(ValueError, match="fixed-step"):
        SolverConfig(method=hyper)
    with pytest.raises(ValueError, match="K"):
        FitConfig(num_steps=(4, 0))
    with pytest.raises(ValueError, match="K"):
        prepare_batch(hyper, linear, z0, num_steps=0)
    with pytest.raises(ValueError, match="K"):
        fit(hyper, linear, z0, num_steps=-1, progress=False)

    class Claims:
        name, order, fsal, adaptive, corrections_per_step = "x", 1, False, True, 0

        def stepper(self, f, stats):
            raise AssertionError

    with pytest.raises(ValueError, match="is adaptive, so error_exponent must be"):
        hyperode.odeint(linear, z0, [0.0, 1.0], method=Claims(), options=dict(num_steps=2))


def test_bad_fit_arguments():
    hyper = HyperEuler(LinearG())
    z0 = torch.randn(4, 2, dtype=F64)
    with pytest.raises(ValueError, match="both 0"):
        fit(hyper, linear, z0, residual_weight=0.0, progress=False)
    with pytest.raises(ValueError, match="unknown setting"):
        fit(hyper, linear, z0, iters=3, progress=False)
    with pytest.raises(ValueError, match="no \\(more\\) batches"):
        fit(hyper, linear, [], iterations=2, progress=False)
    with pytest.raises(ValueError, match="disabled"):
        fit(HyperEuler(LinearG(), enabled=False), linear, z0, progress=False)
    with pytest.raises(ValueError, match="eta_min"):
        FitConfig(lr=1e-4, eta_min=1e-3)
    with pytest.raises(ValueError, match=r"nn\.Module"):
        fit(hyper, linear, z0, iterations=2, adversarial=Adversarial(), progress=False)
    with pytest.raises(ValueError, match="t_span"):
        uniform_mesh((1.0, 1.0), 3)
    assert math.isclose(uniform_mesh((0.0, 2.0), 4)[1], 0.5)
