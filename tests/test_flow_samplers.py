"""Samplers of a flow through the solvers, the bespoke solver as a step method, and
fitting the learned samplers, on the analytic Gaussian flow (closed-form end points)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hyperode import odeint, solve
from hyperode.flow import (
    AdaptiveSampler,
    BespokeSolver,
    FixedSampler,
    GaussianLinearPathField,
    bespoke_sampler,
    endpoint_distance,
    fit_bespoke,
    fit_flow_bespoke,
    fit_flow_hypersolver,
    hypersolver_sampler,
)
from hyperode.hyper import HyperEuler, MLPHyperNet

pytestmark = pytest.mark.usefixtures("one_thread")


def gaussian_flow(dtype=torch.float64, std=(0.05, 0.3)):
    """A curved flow: N(0, I) to a narrow, shifted Gaussian."""
    return GaussianLinearPathField(torch.tensor([3.0, -2.0], dtype=dtype),
                                   torch.tensor(std, dtype=dtype))


def noise(n=512, dtype=torch.float64, seed=0):
    return torch.randn(n, 2, dtype=dtype, generator=torch.Generator().manual_seed(seed))


def end_error(x, field, x0):
    return float((x - field.endpoint(x0)).norm(dim=1).mean())


# ---------------------------------------------------------------------- fixed and adaptive


def test_fixed_samplers_converge_at_their_order_and_dopri5_is_the_truth():
    """At least the method's order (midpoint shows 3 on this affine-in-x field)."""
    field, x0 = gaussian_flow(std=(0.2, 0.5)), noise()
    for method, order in (("euler", 1), ("midpoint", 2), ("rk4", 4)):
        stages = {"euler": 1, "midpoint": 2, "rk4": 4}[method]
        errs = [end_error(FixedSampler(method, stages * k)(field, x0).samples, field, x0)
                for k in (16, 32, 64)]
        slope = np.polyfit(np.log([16, 32, 64]), np.log(errs), 1)[0]
        assert slope < -order + 0.1, (method, errs)
    run = AdaptiveSampler("dopri5", 1e-8, 1e-8)(field, x0)
    assert end_error(run.samples, field, x0) < 1e-6
    assert run.nfe > 20
    run4 = FixedSampler("midpoint", 4)(field, x0)
    assert run4.nfe == 4 and run4.nfe_correction == 0


def test_sampler_arguments_are_checked():
    with pytest.raises(ValueError, match="not a multiple of 'midpoint'"):
        FixedSampler("midpoint", 3)
    with pytest.raises(ValueError, match="fixed-step method"):
        AdaptiveSampler("rk4")


# ---------------------------------------------------------------------- bespoke solver


@pytest.mark.parametrize("base,n", [("euler", 4), ("midpoint", 2), ("rk4", 1), ("rk4", 3)])
def test_bespoke_identity_is_the_base_method(base, n):
    field, x0 = gaussian_flow(), noise(64)
    solver = BespokeSolver(base, n)
    assert solver.grid() == pytest.approx([k / n for k in range(n + 1)], abs=1e-15)
    plain = odeint(field, x0, torch.tensor([0.0, 1.0]), method=base,
                   options=dict(num_steps=n))[-1]
    torch.testing.assert_close(solver.sample(field, x0), plain, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(solver.integrate(field, x0), plain, rtol=1e-14, atol=1e-14)


def test_bespoke_parameter_count_and_nodes():
    assert BespokeSolver("midpoint", 2).num_parameters == 18
    assert BespokeSolver("euler", 4).num_parameters == 18
    rk4 = BespokeSolver("rk4", 1)
    assert rk4.node_r == [0.0, 0.5, 1.0] and rk4.num_parameters == 10
    assert BespokeSolver("midpoint", 8).nfe == 16


def smooth_transformation(solver: BespokeSolver, a: float = 1.5, b: float = 0.6) -> None:
    """Set the solver's node values from t(r) = (e^{a r} - 1)/(e^a - 1) and
    s(r) = 1 + b r (r^2 - 1.5 r + 1), through its public parameters."""
    r = torch.tensor(solver.node_r, dtype=torch.float64)
    t = torch.expm1(a * r) / math.expm1(a)
    dt = a * torch.exp(a * r) / math.expm1(a)
    s = 1 + b * r * (r * r - 1.5 * r + 1)
    ds = b * (3 * r * r - 3 * r + 1)
    with torch.no_grad():
        solver.time_logits.copy_(torch.log(t[1:] - t[:-1]))
        solver.log_time_rate.copy_(torch.log(dt))
        solver.log_scale.copy_(torch.log(s[1:]))
        solver.scale_rate.copy_(ds)
    t_back, dt_back, s_back, ds_back = solver.node_values()
    for got, want in ((t_back, t), (dt_back, dt), (s_back, s), (ds_back, ds)):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("base,order", [("euler", 1), ("midpoint", 2), ("rk4", 4)])
def test_bespoke_is_order_consistent_for_a_smooth_transformation(base, order):
    """Node values of a smooth scale-time transformation: the solver converges to the
    exact end point at the base method's order as the steps are refined."""
    field, x0 = gaussian_flow(std=(0.2, 0.5)), noise(128)
    ns = (16, 32, 64, 128)
    errs = []
    for n in ns:
        solver = BespokeSolver(base, n)
        smooth_transformation(solver)
        errs.append(end_error(solver.sample(field, x0), field, x0))
    slope = np.polyfit(np.log(ns), np.log(errs), 1)[0]
    assert slope < -order + 0.1, errs


def test_bespoke_as_a_step_method_in_odeint():
    field, x0 = gaussian_flow(), noise(32)
    solver = BespokeSolver("midpoint", 3)
    smooth_transformation(solver)
    grid = solver.grid()
    assert grid[0] == 0.0 and grid[-1] == 1.0 and all(np.diff(grid) > 0)
    sol = solve(field, x0, torch.tensor([0.0, 1.0]), method=solver,
                options=dict(grid_points=grid))
    assert sol.stats.nfe == solver.nfe == 6
    torch.testing.assert_close(sol.ys[-1], solver.integrate(field, x0), rtol=1e-13, atol=1e-13)
    with pytest.raises(ValueError, match="steps on its own grid"):
        odeint(field, x0, torch.tensor([0.0, 1.0]), method=solver, options=dict(num_steps=3))
    with pytest.raises(ValueError, match="steps on its own grid"):
        odeint(field, x0, torch.tensor([0.0, 0.5, 1.0]), method=solver,
               options=dict(grid_points=grid))


def test_bespoke_fitting_lowers_the_end_point_error():
    field = gaussian_flow(torch.float32)
    x0 = noise(2048, torch.float32, seed=1)
    ref = field.endpoint(x0)
    val = noise(512, torch.float32, seed=2)
    solver = BespokeSolver("euler", 4)
    base_err = end_error(solver.sample(field, val), field, val)
    history = fit_bespoke(solver, field, x0, ref, iterations=200, batch_size=256, lr=5e-2,
                          validation=(val, field.endpoint(val)))
    assert history.val_before == pytest.approx(base_err, rel=1e-4)
    assert history.val_after < 0.3 * history.val_before
    after = end_error(bespoke_sampler(solver)(field, val).samples, field, val)
    assert after == pytest.approx(history.val_after, rel=1e-3)
    grid = solver.grid()
    assert grid[0] == 0.0 and grid[-1] == 1.0 and all(np.diff(grid) > 0)
    with torch.no_grad():
        distance = float(endpoint_distance(solver, field, val, field.endpoint(val)))
    assert distance == pytest.approx(after, rel=1e-3)


def test_fit_flow_bespoke_uses_dopri5_end_points():
    field = gaussian_flow(torch.float32)
    solver = BespokeSolver("midpoint", 2)
    history = fit_flow_bespoke(solver, field, (2,), pairs=1024, iterations=100, lr=5e-2)
    assert history.val_after < 0.5 * history.val_before


# ---------------------------------------------------------------------- hypersolvers


def test_hypersolver_fitted_to_the_flow_beats_its_base():
    field = gaussian_flow(torch.float32)
    torch.manual_seed(0)
    hyper = HyperEuler(MLPHyperNet(2, (32, 32), time_input=True))
    val = noise(1024, torch.float32, seed=3)
    base = end_error(FixedSampler("euler", 4)(field, val).samples, field, val)
    fit_flow_hypersolver(hyper, field, (256, 2), 4, iterations=150, lr=1e-2)
    run = hypersolver_sampler(hyper, 4)(field, val)
    assert run.nfe == 4 and run.nfe_correction == 4
    assert end_error(run.samples, field, val) < 0.5 * base


def test_evaluate_samplers_tabulates_every_sampler():
    from hyperode.flow import evaluate_samplers

    field, x0 = gaussian_flow(), noise(256)
    samplers = {"dopri5": AdaptiveSampler("dopri5", 1e-8, 1e-8),
                "euler@4": FixedSampler("euler", 4), "rk4@8": FixedSampler("rk4", 8)}
    rows, samples = evaluate_samplers(
        field, samplers, x0, lambda x: {"mean_error": end_error(x, field, x0)}, repeats=2)
    assert set(rows) == set(samplers) == set(samples)
    assert rows["dopri5"]["endpoint_error"] == 0.0
    assert rows["euler@4"]["nfe"] == 4 and rows["rk4@8"]["nfe"] == 8
    for row in rows.values():
        assert row["seconds"] > 0 and row["nfe_g"] == 0
        assert row["endpoint_error"] == pytest.approx(row["mean_error"], rel=1e-4, abs=1e-6)
    with pytest.raises(ValueError, match="reference 'exact' is not among"):
        evaluate_samplers(field, samplers, x0, dict, reference="exact")
