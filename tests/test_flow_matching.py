"""Flow matching: paths and their conditional target fields, couplings, the loss, the
fields and the training loop, against closed forms (float64) and brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from hyperode import odeint
from hyperode.flow import (
    ConvField,
    CosinePath,
    FlowMatcher,
    FlowTrainConfig,
    GaussianLinearPathField,
    LinearPath,
    TimeMLP,
    VPDiffusionPath,
    minibatch_ot,
    ot_assignment,
    train_flow,
    transport_cost,
)

PATHS = [LinearPath(0.0), LinearPath(0.05), CosinePath(), VPDiffusionPath()]


pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------- paths


@pytest.mark.parametrize("path", PATHS, ids=repr)
def test_target_field_is_the_time_derivative_of_the_path(path):
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(16, 3, dtype=torch.float64, generator=gen)
    x1 = torch.randn(16, 3, dtype=torch.float64, generator=gen)
    lo, hi = path.time_range
    t = (lo + 0.02 + (hi - lo - 0.04) * torch.rand(16, dtype=torch.float64, generator=gen))
    # autograd: d/dt of x_t, one sample's time at a time (sum over the batch is separable)
    tt = t.clone().requires_grad_(True)
    xt = path.sample(x0, x1, tt)
    grads = torch.stack([torch.autograd.grad(xt[:, d].sum(), tt, retain_graph=True)[0]
                         for d in range(3)], dim=1)
    target = path.target(x0, x1, t)
    torch.testing.assert_close(target, grads, rtol=1e-12, atol=1e-12)
    # central finite differences
    eps = 1e-6
    fd = (path.sample(x0, x1, t + eps) - path.sample(x0, x1, t - eps)) / (2 * eps)
    torch.testing.assert_close(target, fd, rtol=1e-6, atol=1e-6)


def test_path_end_points():
    x0, x1 = torch.randn(5, 2, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
    zero, one = torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64)
    lin = LinearPath(0.1)
    torch.testing.assert_close(lin.sample(x0, x1, zero), x0)
    torch.testing.assert_close(lin.sample(x0, x1, one), x1 + 0.1 * x0)
    torch.testing.assert_close(lin.target(x0, x1, zero), x1 - 0.9 * x0)
    cos = CosinePath()
    torch.testing.assert_close(cos.sample(x0, x1, zero), x0)
    torch.testing.assert_close(cos.sample(x0, x1, one), x1, atol=1e-15, rtol=0)
    vp = VPDiffusionPath()
    t = torch.linspace(0, vp.t_max, 50, dtype=torch.float64)
    torch.testing.assert_close(vp.alpha(t) ** 2 + vp.sigma(t) ** 2, torch.ones_like(t))
    assert float(vp.alpha(zero)) == pytest.approx(np.exp(-0.5 * (0.1 + 0.5 * 19.9)))


def test_path_arguments_are_checked():
    with pytest.raises(ValueError, match="sigma_min"):
        LinearPath(1.0)
    with pytest.raises(ValueError, match=r"x0 has shape \(3, 2\) but x1 has \(4, 2\)"):
        LinearPath().sample(torch.zeros(3, 2), torch.zeros(4, 2), torch.zeros(3))
    with pytest.raises(ValueError, match=r"t must be 0-dim or \[B\]"):
        LinearPath().target(torch.zeros(3, 2), torch.zeros(3, 2), torch.zeros(4))
    with pytest.raises(ValueError, match="path must be one of"):
        FlowMatcher("straight")
    with pytest.raises(ValueError, match="coupling must be one of"):
        FlowMatcher("linear", "sinkhorn")


# ---------------------------------------------------------------------- couplings


@pytest.mark.parametrize("n", [2, 4, 6])
def test_ot_assignment_is_the_brute_force_optimum(n):
    gen = torch.Generator().manual_seed(n)
    for _ in range(5):
        x0 = torch.randn(n, 3, dtype=torch.float64, generator=gen)
        x1 = torch.randn(n, 3, dtype=torch.float64, generator=gen)
        cost = ((x0[:, None] - x1[None]) ** 2).sum(-1).numpy()
        best = min(sum(cost[p[i], i] for i in range(n)) for p in itertools.permutations(range(n)))
        perm = ot_assignment(x0, x1)
        assert sum(cost[perm[i], i] for i in range(n)) == pytest.approx(best, rel=1e-12)
        rows, cols = linear_sum_assignment(cost)
        assert cost[rows, cols].sum() == pytest.approx(best, rel=1e-12)


def test_minibatch_ot_pairs_a_permutation_and_lowers_the_cost():
    gen = torch.Generator().manual_seed(1)
    x0 = torch.randn(128, 2, generator=gen)
    x1 = 0.5 * torch.randn(128, 2, generator=gen)
    y0, y1 = minibatch_ot(x0, x1)
    assert y1 is x1  # the data order is kept
    assert torch.equal(torch.sort(y0, dim=0).values, torch.sort(x0, dim=0).values)
    # W2^2 between N(0, I) and N(0, 0.25 I) is 2 * (1 - 0.5)^2 = 0.5; independent: 2.5
    assert transport_cost(y0, y1) < 0.4 * transport_cost(x0, x1)
    for _ in range(20):
        assert transport_cost(y0, y1) <= transport_cost(x0[torch.randperm(128)], x1)
    # images are flattened per sample
    a, b = torch.randn(8, 1, 4, 4, generator=gen), torch.randn(8, 1, 4, 4, generator=gen)
    pa, _ = minibatch_ot(a, b)
    assert transport_cost(pa, b) <= transport_cost(a, b) + 1e-12


# ---------------------------------------------------------------------- the analytic field


def test_gaussian_marginal_field_is_the_conditional_expectation():
    """At a fixed t, the least-squares regression of u_t on (1, x_t) over many pairs
    recovers the analytic marginal field's affine coefficients (per feature)."""
    mean = torch.tensor([2.0, -1.0], dtype=torch.float64)
    std = torch.tensor([0.5, 1.5], dtype=torch.float64)
    field = GaussianLinearPathField(mean, std, sigma_min=0.05)
    path = LinearPath(0.05)
    gen = torch.Generator().manual_seed(3)
    n, t = 400_000, 0.3
    x0 = torch.randn(n, 2, dtype=torch.float64, generator=gen)
    x1 = mean + std * torch.randn(n, 2, dtype=torch.float64, generator=gen)
    tt = torch.tensor(t, dtype=torch.float64)
    xt, ut = path.sample(x0, x1, tt), path.target(x0, x1, tt)
    for d in range(2):
        design = torch.stack([torch.ones(n, dtype=torch.float64), xt[:, d]], dim=1)
        coef = torch.linalg.lstsq(design, ut[:, d:d + 1]).solution[:, 0]
        probe = torch.zeros(2, 2, dtype=torch.float64)
        probe[1, d] = 1.0
        v = field(tt, probe)[:, d]
        assert float(coef[0]) == pytest.approx(float(v[0]), abs=1e-2)
        assert float(coef[1]) == pytest.approx(float(v[1] - v[0]), abs=1e-2)


def test_gaussian_marginal_field_flow_has_the_closed_form_solution():
    field = GaussianLinearPathField(torch.tensor([1.0, 0.0, -2.0], dtype=torch.float64),
                                    torch.tensor([0.3, 2.0, 1.0], dtype=torch.float64), 0.01)
    x0 = torch.randn(64, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=torch.float64)
    ys = odeint(field, x0, t, rtol=1e-10, atol=1e-12)
    for k, tk in enumerate(t.tolist()):
        torch.testing.assert_close(ys[k], field.solution(x0, tk), rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(field.endpoint(x0),
                               field.mean + torch.sqrt(field.std ** 2 + 0.01 ** 2) * x0)


# ---------------------------------------------------------------------- fields


def test_fields_take_scalar_and_per_sample_times():
    mlp = TimeMLP(2, (16, 16)).double()
    x = torch.randn(5, 2, dtype=torch.float64)
    t = torch.tensor(0.3, dtype=torch.float64)
    torch.testing.assert_close(mlp(t, x), mlp(t.expand(5), x))
    conv = ConvField(1, width=16, depth=2, groups=4)
    img = torch.randn(3, 1, 8, 8)
    assert conv(torch.tensor(0.5), img).shape == img.shape
    assert bool((conv(torch.tensor(0.5), img) == 0).all())  # zero-initialised output
    with pytest.raises(ValueError, match=r"TimeMLP expects x of shape \[B, 2\]"):
        mlp(t, torch.zeros(5, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"t must be 0-dim or \[B\]"):
        mlp(torch.zeros(4, dtype=torch.float64), x)


# ---------------------------------------------------------------------- loss and training


def _gaussian_problem():
    mean = torch.tensor([2.0, -1.0])
    std = torch.tensor([0.5, 1.0])
    data = mean + std * torch.randn(4000, 2, generator=torch.Generator().manual_seed(0))
    return mean, std, data


def test_training_approaches_the_analytic_minimum_and_transports_correctly():
    """The CFM loss of the trained field approaches that of the exact marginal field
    (the minimiser of eq. 9), and its flow maps N(0, I) to the data's Gaussian."""
    torch.manual_seed(0)
    mean, std, data = _gaussian_problem()
    field = TimeMLP(2, (64, 64))
    matcher = FlowMatcher(LinearPath(0.0), "independent")
    exact = GaussianLinearPathField(mean, std, 0.0)
    gen = torch.Generator().manual_seed(9)
    x1 = mean + std * torch.randn(20000, 2, generator=gen)
    x0 = torch.randn(20000, 2, generator=gen)
    t = torch.rand(20000, generator=gen)
    with torch.no_grad():
        before = float(matcher.loss(field, x1, x0, t))
        optimum = float(matcher.loss(exact, x1, x0, t))
    history = train_flow(field, data, FlowTrainConfig(iterations=1500, batch_size=256,
                                                      lr=3e-3, log_every=100))
    with torch.no_grad():
        after = float(matcher.loss(field, x1, x0, t))
    assert history.loss[-1][1] < history.loss[0][1]
    assert optimum < after < optimum * 1.05 < before
    z0 = torch.randn(4000, 2, generator=gen)
    with torch.no_grad():
        x = odeint(field, z0, torch.tensor([0.0, 1.0]), rtol=1e-5, atol=1e-5)[-1]
        target = exact.endpoint(z0)
    assert (x - target).norm(dim=1).mean() < 0.1
    torch.testing.assert_close(x.mean(0), mean, atol=0.06, rtol=0)
    torch.testing.assert_close(x.std(0), std, atol=0.06, rtol=0)


@pytest.mark.parametrize("path,coupling", [("cosine", "independent"), ("vp", "independent"),
                                           ("linear", "ot")])
def test_loss_decreases_for_every_path_and_coupling(path, coupling):
    torch.manual_seed(1)
    _, _, data = _gaussian_problem()
    field = TimeMLP(2, (32, 32))
    history = train_flow(field, data, iterations=300, batch_size=128, lr=3e-3, path=path,
                         coupling=coupling, log_every=50)
    assert history.loss[-1][1] < 0.7 * history.loss[0][1]


def test_ot_coupling_gives_a_straighter_flow():
    """With minibatch OT the learned flow is straighter: one Euler step lands closer to
    the dopri5 end point than with independent coupling (same data, budget, seed)."""
    _, _, data = _gaussian_problem()
    errors = {}
    z0 = torch.randn(2000, 2, generator=torch.Generator().manual_seed(4))
    for coupling in ("independent", "ot"):
        torch.manual_seed(2)
        field = TimeMLP(2, (32, 32))
        train_flow(field, data * torch.tensor([1.0, 3.0]), iterations=300, batch_size=128,
                   lr=5e-3, coupling=coupling, seed=5)
        with torch.no_grad():
            ref = odeint(field, z0, torch.tensor([0.0, 1.0]), rtol=1e-6, atol=1e-6)[-1]
            euler = odeint(field, z0, torch.tensor([0.0, 1.0]), method="euler",
                           options=dict(num_steps=1))[-1]
        errors[coupling] = float((euler - ref).norm(dim=1).mean())
    assert errors["ot"] < 0.7 * errors["independent"]


def test_training_arguments_are_checked():
    field = TimeMLP(2, (8,))
    with pytest.raises(ValueError, match="coupling must be one of"):
        FlowTrainConfig(coupling="exact")
    with pytest.raises(ValueError, match="iterations"):
        FlowTrainConfig(iterations=0)
    with pytest.raises(ValueError, match=r"data is torch\.float64"):
        train_flow(field, torch.zeros(10, 2, dtype=torch.float64), iterations=1)
    with pytest.raises(ValueError, match="must return a velocity of x's shape"):
        train_flow(lambda_field(), torch.zeros(10, 2), iterations=1)


def lambda_field():
    class Wrong(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward(self, t, x):
            return self.w * x[:, :1]

    return Wrong()
