"""Per-sample step sizes (``options=dict(per_sample_steps=True)``): every sample's solve
equals solving that sample alone with the shared-step solver (same accepted and rejected
steps, values equal to round-off), closed forms, gradients against finite differences,
and clear errors for what the mode cannot do."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from hyperode import odeint, odeint_adjoint, solve
from hyperode.errors import MaxStepsExceededError, StepSizeUnderflowError
from hyperode.solvers.controllers import IController, PIController
from hyperode.solvers.norms import max_norm, rms_norm

F64 = torch.float64
EXPLICIT_ADAPTIVE = ["dopri5", "tsit5", "bosh3", "fehlberg2", "adaptive_heun", "dopri8"]
PS = dict(per_sample_steps=True)


def vdp(mu: torch.Tensor):
    """Van der Pol with one ``mu`` per sample: ``y = [B, 2]``."""

    def f(t, y):
        x, v = y[:, 0], y[:, 1]
        return torch.stack([v, mu * (1 - x * x) * v - x], dim=1)

    return f


MU = torch.tensor([0.2, 1.0, 2.5, 0.6], dtype=F64)
Y0 = torch.tensor([[2.0, 0.0], [1.0, 0.5], [0.5, -1.0], [-1.5, 0.3]], dtype=F64)


def assert_matches_alone(f_of, params, y0, t, *, rtol, atol, method, options=None,
                         tol=1e-9):
    """Per-sample solve of the batch vs each sample solved alone (shared steps)."""
    options = dict(options or {})
    sol = solve(f_of(params), y0, t, rtol=rtol, atol=atol, method=method,
                options={**options, **PS})
    for b in range(y0.shape[0]):
        alone = solve(f_of(params[b:b + 1]), y0[b:b + 1], t, rtol=rtol, atol=atol,
                      method=method, options=options)
        assert int(sol.stats.accepted_per_sample[b]) == alone.stats.accepted, (method, b)
        assert int(sol.stats.rejected_per_sample[b]) == alone.stats.rejected, (method, b)
        scale = alone.ys.abs().max()
        assert (sol.ys[:, b:b + 1] - alone.ys).abs().max() <= tol * scale, (method, b)
    return sol


@pytest.mark.parametrize("method", EXPLICIT_ADAPTIVE)
def test_each_sample_takes_the_steps_it_takes_alone(method):
    t = torch.linspace(0.0, 4.0, 9, dtype=F64)
    rtol, atol = (1e-4, 1e-6) if method in ("adaptive_heun", "fehlberg2") else (1e-6, 1e-8)
    sol = assert_matches_alone(vdp, MU, Y0, t, rtol=rtol, atol=atol, method=method)
    # samples differ in stiffness, so their step counts differ
    assert len(set(sol.stats.accepted_per_sample.tolist())) > 1
    assert sol.stats.accepted == int(sol.stats.accepted_per_sample.sum())
    assert sol.stats.rejected == int(sol.stats.rejected_per_sample.sum())
    assert sol.stats.row_evaluations == sol.stats.nfe * Y0.shape[0]


@pytest.mark.parametrize("controller", ["pi", IController(shrink_after_accept=True),
                                        PIController(beta=0.1, safety=0.8)])
def test_controllers_and_step_bounds_per_sample(controller):
    t = torch.tensor([0.0, 1.5, 3.0], dtype=F64)
    for options in (dict(controller=controller),
                    dict(controller=controller, max_step=0.05),
                    dict(controller=controller, min_step=0.02, first_step=0.3)):
        assert_matches_alone(vdp, MU, Y0, t, rtol=1e-5, atol=1e-7, method="dopri5",
                             options=options)


def test_max_step_bounds_every_sample():
    t = torch.tensor([0.0, 1.0], dtype=F64)
    sol = solve(vdp(MU), Y0, t, rtol=1e-3, atol=1e-3, options=dict(max_step=0.01, **PS))
    assert int(sol.stats.accepted_per_sample.min()) >= 100


def test_decreasing_time_and_a_time_dependent_field():
    """``y' = -k y + cos(t)`` per sample (``t`` of shape [B]), integrated backwards."""
    k = torch.tensor([0.5, 2.0, 6.0], dtype=F64)

    def f(t, y):
        assert t.shape == (3,)
        return -k[:, None] * y + torch.cos(t)[:, None]

    y0 = torch.tensor([[1.0, -2.0], [0.5, 0.0], [3.0, 1.0]], dtype=F64)
    t = torch.linspace(2.0, 0.0, 11, dtype=F64)
    sol = solve(f, y0, t, rtol=1e-10, atol=1e-12, options=PS)
    kk, tt = k[:, None], t[:, None, None]

    def particular(s):
        return (kk * torch.cos(s) + torch.sin(s)) / (kk * kk + 1)

    c = (y0 - particular(t[0])) * torch.exp(kk * t[0])
    exact = c * torch.exp(-kk * tt) + particular(tt)
    torch.testing.assert_close(sol.ys, exact, rtol=1e-8, atol=1e-9)


def test_tuple_state_closed_form_and_alone():
    k = torch.tensor([0.3, 4.0, 12.0], dtype=F64)

    def field(kb):
        return lambda t, y: (-kb[:, None] * y[0], -0.5 * kb * y[1])

    y0 = (torch.ones(3, 2, dtype=F64), torch.full((3,), 2.0, dtype=F64))
    t = torch.tensor([0.0, 0.25, 1.0], dtype=F64)
    sol = solve(field(k), y0, t, rtol=1e-9, atol=1e-11, options=PS)
    torch.testing.assert_close(sol.ys[0], torch.exp(-k[None, :, None] * t[:, None, None])
                               .expand(3, 3, 2), rtol=1e-7, atol=1e-10)
    torch.testing.assert_close(sol.ys[1], 2 * torch.exp(-0.5 * k[None] * t[:, None]),
                               rtol=1e-7, atol=1e-10)
    for b in range(3):
        alone = solve(field(k[b:b + 1]), (y0[0][b:b + 1], y0[1][b:b + 1]), t, rtol=1e-9,
                      atol=1e-11)
        assert int(sol.stats.accepted_per_sample[b]) == alone.stats.accepted
        torch.testing.assert_close(sol.ys[0][:, b:b + 1], alone.ys[0], rtol=1e-12, atol=0)


def test_many_outputs_inside_steps_use_dense_output():
    """Outputs far denser than the steps: harmonic oscillators of different frequencies."""
    w = torch.tensor([0.5, 1.0, 3.0], dtype=F64)

    def f(t, y):
        return torch.stack([y[:, 1], -(w * w) * y[:, 0]], dim=1)

    y0 = torch.stack([torch.ones(3, dtype=F64), torch.zeros(3, dtype=F64)], dim=1)
    t = torch.linspace(0.0, 3.0, 301, dtype=F64)
    # continuous extension, Hermite interpolant, continuous extension with extra stages
    for method, tol, err in (("dopri5", 1e-9, 2e-7), ("bosh3", 1e-6, 1e-4),
                             ("dopri8", 1e-9, 2e-7)):
        sol = solve(f, y0, t, rtol=tol, atol=tol, method=method, options=PS)
        assert int(sol.stats.accepted_per_sample.max()) < len(t) - 1
        exact = torch.cos(w[None] * t[:, None])
        torch.testing.assert_close(sol.ys[..., 0], exact, rtol=0, atol=err)


def test_tolerance_tensors_per_sample():
    atol = torch.tensor([[1e-9, 1e-9], [1e-4, 1e-4], [1e-7, 1e-3], [1e-6, 1e-6]], dtype=F64)
    rtol = torch.tensor([1e-8, 1e-3], dtype=F64)  # per component, broadcast over the batch
    t = torch.tensor([0.0, 2.0], dtype=F64)
    sol = solve(vdp(MU), Y0, t, rtol=rtol, atol=atol, options=PS)
    for b in range(4):
        alone = solve(vdp(MU[b:b + 1]), Y0[b:b + 1], t, rtol=rtol, atol=atol[b:b + 1])
        assert int(sol.stats.accepted_per_sample[b]) == alone.stats.accepted
        torch.testing.assert_close(sol.ys[:, b:b + 1], alone.ys, rtol=1e-9, atol=1e-12)


def test_norm_options_per_sample():
    t = torch.tensor([0.0, 2.0], dtype=F64)
    by_name = solve(vdp(MU), Y0, t, rtol=1e-6, atol=1e-8, options=dict(norm=max_norm, **PS))
    own = solve(vdp(MU), Y0, t, rtol=1e-6, atol=1e-8,
                options=dict(norm=lambda e: e.abs().amax(dim=1), **PS))
    torch.testing.assert_close(by_name.ys, own.ys, rtol=0, atol=0)
    assert torch.equal(by_name.stats.accepted_per_sample, own.stats.accepted_per_sample)
    assert_matches_alone(vdp, MU, Y0, t, rtol=1e-6, atol=1e-8, method="dopri5",
                         options=dict(norm=rms_norm))


def test_compacting_finished_samples_gives_the_same_solution():
    k = torch.tensor([0.1, 0.5, 30.0, 200.0, 1.0, 60.0], dtype=F64)
    y0 = torch.linspace(1.0, 2.0, 6, dtype=F64)[:, None].repeat(1, 2)

    def f(t, y):  # no per-sample tensors: rows are independent of their position
        return -y * y * y - torch.sin(3 * t)[:, None] * y

    t = torch.linspace(0.0, 3.0, 7, dtype=F64)
    masked = solve(f, y0 * k[:, None], t, rtol=1e-8, atol=1e-10, options=PS)
    compact = solve(f, y0 * k[:, None], t, rtol=1e-8, atol=1e-10,
                    options=dict(compact_finished=True, **PS))
    torch.testing.assert_close(compact.ys, masked.ys, rtol=1e-13, atol=0)
    assert torch.equal(compact.stats.accepted_per_sample, masked.stats.accepted_per_sample)
    assert compact.stats.nfe == masked.stats.nfe
    assert compact.stats.row_evaluations < masked.stats.row_evaluations


def test_compacting_a_tuple_state_with_per_sample_tolerances():
    """Rows dropped mid-solve carry their own atol rows; a non-FSAL method (fehlberg2:
    Hermite output from a fresh f(t1, y1)) and a tuple state, against the masked solve
    and against each sample alone."""
    k = torch.tensor([0.2, 6.0, 1.0, 15.0], dtype=F64)

    def f(t, y):  # rows independent of their position: the rate travels in the state;
        # t is [B] in the per-sample solves, 0-dim in the shared ones
        a, rate = y
        return -rate * a * (1 + 0.5 * torch.cos(t).reshape(-1, 1)), torch.zeros_like(rate)

    y0 = (torch.ones(4, 2, dtype=F64), k[:, None].clone())
    atol = (torch.tensor([[1e-8], [1e-5], [1e-7], [1e-6]], dtype=F64).expand(4, 2),
            torch.full((4, 1), 1e-6, dtype=F64))
    t = torch.tensor([0.0, 0.1, 0.5, 1.0], dtype=F64)
    kw = dict(rtol=1e-5, atol=atol, method="fehlberg2")
    masked = solve(f, y0, t, options=PS, **kw)
    compact = solve(f, y0, t, options=dict(compact_finished=True, **PS), **kw)
    for a, b in zip(compact.ys, masked.ys):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=0)
    assert torch.equal(compact.stats.rejected_per_sample, masked.stats.rejected_per_sample)
    assert compact.stats.row_evaluations < masked.stats.row_evaluations
    for b in range(4):
        alone = solve(f, (y0[0][b:b + 1], y0[1][b:b + 1]), t, rtol=1e-5,
                      atol=(atol[0][b:b + 1], atol[1][b:b + 1]), method="fehlberg2")
        assert int(compact.stats.accepted_per_sample[b]) == alone.stats.accepted
        torch.testing.assert_close(compact.ys[0][:, b:b + 1], alone.ys[0], rtol=1e-8, atol=1e-12)
    # fehlberg2 propagates its first-order solution: the global error is far above rtol
    exact = torch.exp(-k[None, :, None] * (t + 0.5 * torch.sin(t))[:, None, None])
    torch.testing.assert_close(compact.ys[0], exact.expand(4, 4, 2), rtol=0, atol=2e-3)


def test_backprop_matches_finite_differences():
    scale = torch.tensor([0.5, 2.0, 6.0], dtype=F64)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)

    def loss(y0, w):
        ys = odeint(lambda s, y: torch.tanh(y @ w.T) * scale[:, None] + 0.1 * torch.sin(s)[:, None],
                    y0, t, rtol=1e-8, atol=1e-10, options=PS)
        return ys[1:].pow(2).sum(dim=-1).reshape(-1)  # 6 outputs keep gradcheck short

    y0 = torch.tensor([[0.3, -0.2], [1.0, 0.4], [-0.5, 0.9]], dtype=F64, requires_grad=True)
    w = torch.tensor([[0.0, 1.0], [-1.0, -0.2]], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(loss, (y0, w), eps=1e-6, atol=1e-5, rtol=1e-4)


def test_gradient_with_respect_to_t():
    t = torch.tensor([0.0, 1.0, 2.0], dtype=F64, requires_grad=True)
    ys = odeint(vdp(MU), Y0, t, rtol=1e-10, atol=1e-12, options=PS)
    (g,) = torch.autograd.grad(ys[-1].sum(), t)
    t_shared = t.detach().clone().requires_grad_(True)
    ys_shared = odeint(vdp(MU), Y0, t_shared, rtol=1e-10, atol=1e-12)
    (g_shared,) = torch.autograd.grad(ys_shared[-1].sum(), t_shared)
    torch.testing.assert_close(g, g_shared, rtol=1e-6, atol=1e-7)


def test_adjoint_forward_per_sample_with_a_shared_step_backward():
    net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    net = net.to(F64)
    field = lambda t, y: net(y)  # noqa: E731
    func = torch.nn.Module()
    func.forward = field
    func.net = net
    y0 = Y0.clone()
    t = torch.tensor([0.0, 1.0], dtype=F64)
    with pytest.raises(ValueError, match="per_sample_steps"):
        odeint_adjoint(func, y0, t, options=PS)
    ys = odeint_adjoint(func, y0, t, rtol=1e-9, atol=1e-11, options=PS, adjoint_options={})
    grads = torch.autograd.grad(ys[-1].pow(2).sum(), list(net.parameters()))
    ys_bp = odeint(func, y0, t, rtol=1e-9, atol=1e-11)
    grads_bp = torch.autograd.grad(ys_bp[-1].pow(2).sum(), list(net.parameters()))
    for a, b in zip(grads, grads_bp):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_one_time_returns_y0_and_float32_runs():
    sol = solve(vdp(MU), Y0, torch.tensor([0.5], dtype=F64), options=PS)
    assert torch.equal(sol.ys[0], Y0)
    y32 = Y0.float()
    mu32 = MU.float()
    sol = solve(vdp(mu32), y32, torch.tensor([0.0, 1.0]), rtol=1e-5, atol=1e-6, options=PS)
    ref = solve(vdp(MU), Y0, torch.tensor([0.0, 1.0], dtype=F64), rtol=1e-10, atol=1e-12)
    assert sol.ys.dtype == torch.float32
    torch.testing.assert_close(sol.ys.double(), ref.ys, rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------- failures


def test_stuck_samples_are_named():
    mu = torch.tensor([0.1, 1000.0, 0.2, 800.0], dtype=F64)
    with pytest.raises(MaxStepsExceededError, match=r"samples \[1, 3\]"):
        solve(vdp(mu), Y0, torch.tensor([0.0, 20.0], dtype=F64), rtol=1e-5, atol=1e-7,
              options=dict(max_num_steps=300, **PS))


def test_a_sample_whose_field_blows_up_is_named_and_alone_in_failing():
    def f(t, y):
        bad = (t > 0.5) & (torch.arange(3) == 2)
        return torch.where(bad[:, None], math.nan, -y)

    with pytest.raises(StepSizeUnderflowError, match=r"samples \[2\]"):
        solve(f, torch.ones(3, 2, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64), options=PS)


def test_a_field_that_cannot_take_a_batch_of_times_is_explained():
    def scalar_time_only(t, y):
        return -y * float(t)  # float() of a [B] tensor fails

    with pytest.raises((RuntimeError, TypeError, ValueError)) as info:
        solve(scalar_time_only, torch.ones(3, 2, dtype=F64), [0.0, 1.0], options=PS)
    assert "t of shape [B]" in "\n".join([str(info.value), *getattr(info.value, "__notes__", [])])

    def broadcasts_wrongly(t, y):
        return -y * t[None, :]  # [B] t against [B, B] rows: a wrong shape, caught

    with pytest.raises(ValueError, match=r"shape \(3, 3\).*t of shape \[B\]"):
        solve(broadcasts_wrongly, torch.ones(3, 1, dtype=F64), [0.0, 1.0], options=PS)


@pytest.mark.parametrize("method, match", [
    ("kvaerno5", "implicit method"),
    ("radau5", "implicit method"),
    ("rk4", "apply only to adaptive solves"),
    ("implicit_adams", "apply only to adaptive solves"),
    ("scipy_solver", "do not apply to method 'scipy_solver'"),
])
def test_methods_that_cannot_step_per_sample(method, match):
    with pytest.raises(ValueError, match=match):
        solve(vdp(MU), Y0, [0.0, 1.0], method=method, options=PS)


@pytest.mark.parametrize("options, match", [
    (dict(per_sample_steps="yes"), r"options\['per_sample_steps'\] must be True or False"),
    (dict(compact_finished=True), "applies only with"),
    (dict(step_t=[0.5], **PS), r"\['step_t'\] are not supported"),
    (dict(jump_t=[0.5], **PS), r"\['jump_t'\] are not supported"),
    (dict(record_steps=True, **PS), r"\['record_steps'\] are not supported"),
    (dict(step_size=0.1, **PS), "apply only to adaptive solves"),
    (dict(norm=lambda e: e.abs().max(), **PS), r"one real value per sample.*\[4\]"),
])
def test_bad_options(options, match):
    with pytest.raises(ValueError, match=match):
        solve(vdp(MU), Y0, [0.0, 1.0], options=options)


def test_a_state_without_a_batch_dimension_is_refused():
    with pytest.raises(ValueError, match="batch as dimension 0"):
        solve(lambda t, y: -y, torch.tensor(1.0, dtype=F64), [0.0, 1.0], options=PS)
    with pytest.raises(ValueError, match="batch as dimension 0"):
        solve(lambda t, y: (-y[0], -y[1]),
              (torch.ones(3, 2, dtype=F64), torch.ones(2, dtype=F64)), [0.0, 1.0], options=PS)


def test_events_and_callbacks():
    with pytest.raises(ValueError, match="event_fn cannot be combined"):
        odeint(vdp(MU), Y0, torch.tensor([0.0, 1.0], dtype=F64),
               event_fn=lambda t, y: y[:, 0].sum(), options=PS)

    class Field(torch.nn.Module):
        def forward(self, t, y):
            return -y

        def callback_accept_step(self, t0, y0, dt):
            raise AssertionError("never called")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        solve(Field(), Y0, [0.0, 1.0], options=PS)
    assert any("callback_accept_step" in str(w.message) for w in caught)
