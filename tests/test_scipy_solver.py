"""``method="scipy_solver"``: scipy's solve_ivp behind the torchdiffeq API — accuracy of
every scipy solver against closed forms, both directions, complex/tuple/float32 states,
tolerances, option validation, failure reporting, statistics, the no-gradient warning and
adjoint gradients against dopri5's."""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import hyperode
from hyperode import MaxStepsExceededError, NonFiniteStateError, SolverError, odeint, solve
from hyperode.solvers.config import method_kind
from hyperode.solvers.methods.scipy_solver import (
    COMPLEX_SOLVERS,
    SOLVERS,
    ScipySolver,
    lsoda_honours_min_step,
)

F64 = torch.float64
TIGHT = dict(rtol=1e-9, atol=1e-12)
# y' = A y with A = [[a, b], [-b, a]]: y(t) = e^{a t} R(b t) y0, R a rotation.
A_RE, A_IM = -0.3, 2.0
A = torch.tensor([[A_RE, A_IM], [-A_IM, A_RE]], dtype=F64)
Y0 = torch.tensor([1.0, 0.5], dtype=F64)


def linear(t, y):
    return y @ A.T


def linear_exact(t: torch.Tensor, t0: float, y0: torch.Tensor) -> torch.Tensor:
    out = []
    for ti in t.tolist():
        s = ti - t0
        c, sn = math.cos(A_IM * s), math.sin(A_IM * s)
        out.append(math.exp(A_RE * s) * torch.tensor([[c, sn], [-sn, c]], dtype=F64) @ y0)
    return torch.stack(out)


def rel_err(y: torch.Tensor, exact: torch.Tensor) -> float:
    return float(((y - exact).abs().max(dim=-1).values
                  / exact.abs().max(dim=-1).values).max())


def _t(reverse: bool, n: int = 5, t_end: float = 2.0) -> torch.Tensor:
    t = torch.linspace(0.0, t_end, n, dtype=F64)
    return t.flip(0) if reverse else t


# --------------------------------------------------------------------------- accuracy


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("solver", SOLVERS)
def test_every_solver_matches_the_closed_form(solver, reverse):
    t = _t(reverse, t_end=1.0 if solver == "RK23" else 2.0)  # RK23 at 1e-9: many steps
    calls = [0]

    def f(tt, y):
        calls[0] += 1
        assert not torch.is_grad_enabled()
        assert tt.dtype == F64 and tt.ndim == 0
        return linear(tt, y)

    y_start = linear_exact(t[:1], 0.0, Y0)[0]  # y(t[0]) of the solution through (0, Y0)
    sol = solve(f, y_start, t, method="scipy_solver", options=dict(solver=solver), **TIGHT)
    assert sol.ys.shape == (len(t), 2) and sol.ys.dtype == F64
    assert rel_err(sol.ys, linear_exact(t, 0.0, Y0)) < 1e-6
    assert torch.equal(sol.ys[0], y_start)
    assert sol.stats.nfe == calls[0] > 0
    assert sol.stats.accepted > 0 and sol.stats.rejected == 0
    if solver in ("Radau", "BDF"):
        assert sol.stats.n_lu > 0 and sol.stats.n_jacobian > 0


def test_registered_external_method_with_lsoda_default():
    assert hyperode.METHODS["scipy_solver"].solver == "LSODA"
    assert method_kind("scipy_solver") == "external"
    t = _t(False)
    a = odeint(linear, Y0, t, method="scipy_solver")
    b = odeint(linear, Y0, t, method="scipy_solver", options=dict(solver="LSODA"))
    assert torch.equal(a, b)
    assert rel_err(a, linear_exact(t, 0.0, Y0)) < 1e-5  # default rtol=1e-7, atol=1e-9


def test_state_shape_and_single_time():
    y0 = torch.randn(3, 2, dtype=F64)
    t = _t(False, n=3)
    ys = odeint(linear, y0, t, method="scipy_solver", options=dict(solver="DOP853"), **TIGHT)
    assert ys.shape == (3, 3, 2)
    for i in range(3):
        assert rel_err(ys[:, i], linear_exact(t, 0.0, y0[i])) < 1e-6
    sol = solve(linear, y0, torch.tensor([0.5], dtype=F64), method="scipy_solver")
    assert sol.ys.shape == (1, 3, 2) and torch.equal(sol.ys[0], y0) and sol.stats.nfe == 0


def test_negative_reverse_span_with_non_zero_start():
    t = torch.tensor([1.0, 0.25, -0.5, -1.5], dtype=F64)
    y_start = linear_exact(t[:1], 0.0, Y0)[0]
    ys = odeint(linear, y_start, t, method="scipy_solver", options=dict(solver="RK45"), **TIGHT)
    assert rel_err(ys, linear_exact(t, 0.0, Y0)) < 1e-6


# --------------------------------------------------------------------------- state kinds


@pytest.mark.parametrize("solver", sorted(COMPLEX_SOLVERS))
def test_complex_state(solver):
    w = torch.tensor([1.5, -0.7], dtype=F64)
    y0 = torch.tensor([1 + 0.5j, -0.3j], dtype=torch.complex128)
    t = _t(False, t_end=1.0)
    ys = odeint(lambda tt, y: (1j * w - 0.1) * y, y0, t, method="scipy_solver",
                options=dict(solver=solver), **TIGHT)
    exact = torch.exp((1j * w - 0.1)[None] * t[:, None]) * y0
    assert ys.dtype == torch.complex128
    assert float((ys - exact).abs().max()) < 1e-6
    ys64 = odeint(lambda tt, y: (1j * w.float() - 0.1) * y, y0.to(torch.complex64), t.float(),
                  method="scipy_solver", options=dict(solver=solver), rtol=1e-6, atol=1e-8)
    assert ys64.dtype == torch.complex64
    assert float((ys64 - exact.to(torch.complex64)).abs().max()) < 1e-4


@pytest.mark.parametrize("solver", ["Radau", "LSODA"])
def test_complex_state_with_a_real_only_solver_is_refused(solver):
    y0 = torch.tensor([1 + 0.5j], dtype=torch.complex128)
    calls = [0]

    def f(tt, y):
        calls[0] += 1
        return 1j * y

    with pytest.raises(ValueError, match=f"complex.*scipy's {solver}.*RK45"):
        odeint(f, y0, [0.0, 1.0], method="scipy_solver", options=dict(solver=solver))
    assert calls[0] == 0


@pytest.mark.parametrize("solver", ["RK45", "LSODA"])
def test_tuple_state(solver):
    # x' = v, v' = -x with members of different shapes: x = cos t, v = -sin t
    def f(tt, state):
        x, v = state
        return v.reshape(2), -x.reshape(1, 2)

    y0 = (torch.tensor([1.0, 2.0], dtype=F64), torch.zeros(1, 2, dtype=F64))
    t = _t(False)
    xs, vs = odeint(f, y0, t, method="scipy_solver", options=dict(solver=solver), **TIGHT)
    assert xs.shape == (5, 2) and vs.shape == (5, 1, 2)
    torch.testing.assert_close(xs, torch.cos(t)[:, None] * y0[0], rtol=0, atol=1e-7)
    torch.testing.assert_close(vs[:, 0], -torch.sin(t)[:, None] * y0[0], rtol=0, atol=1e-7)


@pytest.mark.parametrize("solver", ["RK45", "Radau", "LSODA"])
def test_float32_state_is_integrated_in_float64_and_cast_back(solver):
    seen = set()

    def f(tt, y):
        seen.add((tt.dtype, y.dtype))
        return -y * (1 + tt)

    y0 = torch.tensor([[1.0, 0.5], [0.2, 0.3]])
    t = torch.linspace(0.0, 2.0, 5)
    ys = odeint(f, y0, t, method="scipy_solver", options=dict(solver=solver), rtol=1e-6,
                atol=1e-9)
    assert ys.dtype == torch.float32 and ys.shape == (5, 2, 2)
    assert seen == {(torch.float32, torch.float32)}
    exact = y0 * torch.exp(-(t + t**2 / 2))[:, None, None]
    assert float(((ys - exact).abs() / exact.abs()).max()) < 2e-5


# --------------------------------------------------------------------------- tolerances


def _nfe(**kw) -> int:
    return solve(linear, Y0, [0.0, 2.0], **kw).stats.nfe


@pytest.mark.parametrize("solver", ["RK45", "LSODA", "Radau"])
def test_per_element_atol(solver):
    opts = dict(method="scipy_solver", options=dict(solver=solver), rtol=1e-12)
    loose = torch.tensor([1e-4, 1e-4], dtype=F64)
    mixed = torch.tensor([1e-4, 1e-10], dtype=F64)
    assert _nfe(atol=mixed, **opts) > _nfe(atol=loose, **opts)
    # a constant tensor is the float
    a = odeint(linear, Y0, [0.0, 2.0], atol=loose, **opts)
    b = odeint(linear, Y0, [0.0, 2.0], atol=1e-4, **opts)
    assert torch.equal(a, b)


@pytest.mark.parametrize("solver", ["RK45", "DOP853", "LSODA"])
def test_per_element_rtol(solver):
    opts = dict(method="scipy_solver", options=dict(solver=solver), atol=1e-14)
    assert _nfe(rtol=torch.tensor([1e-3, 1e-10], dtype=F64), **opts) > \
        _nfe(rtol=torch.tensor([1e-3, 1e-3], dtype=F64), **opts)


@pytest.mark.parametrize("solver", ["Radau", "BDF"])
def test_varying_rtol_refused_by_scalar_rtol_solvers(solver):
    rtol = torch.tensor([1e-3, 1e-8], dtype=F64)
    with pytest.raises(ValueError, match=f"rtol varies.*{solver}"):
        odeint(linear, Y0, [0.0, 1.0], method="scipy_solver", options=dict(solver=solver),
               rtol=rtol)
    # constant per-element rtol is a scalar
    odeint(linear, Y0, [0.0, 1.0], method="scipy_solver", options=dict(solver=solver),
           rtol=torch.tensor([1e-6, 1e-6], dtype=F64))


def test_tuple_state_tolerances_per_member():
    def f(tt, state):
        return state[1], -state[0]

    y0 = (torch.ones(2, dtype=F64), torch.zeros(2, dtype=F64))
    sol = solve(f, y0, [0.0, 1.0], method="scipy_solver", options=dict(solver="RK45"),
                rtol=(1e-10, torch.tensor([1e-10, 1e-4], dtype=F64)), atol=1e-12)
    torch.testing.assert_close(sol.ys[0][-1], torch.full((2,), math.cos(1.0), dtype=F64),
                               rtol=0, atol=1e-7)


# --------------------------------------------------------------------------- options


def test_max_step_first_step_and_record_steps():
    sol = solve(linear, Y0, [0.0, 2.0], method="scipy_solver",
                options=dict(solver="RK45", max_step=0.1, first_step=1e-3, record_steps=True))
    ts = [0.0, *sol.stats.accepted_ts]
    assert len(sol.stats.accepted_ts) == sol.stats.accepted and sol.stats.rejected_ts == []
    steps = np.diff(ts)
    assert ts[-1] == 2.0 and (steps > 0).all() and steps.max() <= 0.1 + 1e-12
    assert ts[1] == pytest.approx(1e-3)
    # backwards, and a first step longer than the span is capped at the span
    sol = solve(linear, Y0, [0.0, -0.5], method="scipy_solver",
                options=dict(solver="LSODA", first_step=10.0, record_steps=True))
    assert sol.stats.accepted_ts[-1] == -0.5 and sol.stats.accepted_ts[0] < 0


def test_max_num_steps():
    with pytest.raises(MaxStepsExceededError, match="max_num_steps = 5"):
        odeint(linear, Y0, [0.0, 2.0], method="scipy_solver",
               options=dict(solver="RK45", max_num_steps=5))


def test_lsoda_min_step():
    t = torch.linspace(1.0, 8.0, 10, dtype=F64)
    if lsoda_honours_min_step():  # as torchdiffeq's TestMinMaxStep
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sol = solve(linear, Y0, t, method="scipy_solver", options=dict(min_step=2.0))
        assert sol.stats.nfe < 50
    else:  # scipy 1.17: LSODA drops min_step (scipy gh-25827)
        with pytest.warns(RuntimeWarning, match="gh-25827"):
            solve(linear, Y0, t, method="scipy_solver", options=dict(min_step=2.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # min_step=0 (torchdiffeq's default) is silent
        for solver in SOLVERS:
            solve(linear, Y0, [0.0, 1.0], method="scipy_solver",
                  options=dict(solver=solver, min_step=0))


@pytest.mark.parametrize("solver", ["rk45", "Euler", "dopri5", "", None, 3])
def test_unknown_solver_name(solver):
    with pytest.raises(ValueError, match=r"options\['solver'\].*RK45, RK23, DOP853, Radau, "
                                         r"BDF, LSODA"):
        odeint(linear, Y0, [0.0, 1.0], method="scipy_solver", options=dict(solver=solver))


@pytest.mark.parametrize("options, match", [
    (dict(max_step=0.0), r"options\['max_step'\] must be a number > 0"),
    (dict(max_step=-1.0), r"options\['max_step'\]"),
    (dict(max_step=math.nan), r"options\['max_step'\]"),
    (dict(max_step="big"), r"options\['max_step'\]"),
    (dict(min_step=-0.1), r"options\['min_step'\] must be a finite number >= 0"),
    (dict(min_step=math.inf), r"options\['min_step'\]"),
    (dict(first_step=0.0), r"options\['first_step'\] must be a finite number > 0"),
    (dict(first_step=-1e-3), r"options\['first_step'\]"),
    (dict(first_step=math.inf), r"options\['first_step'\]"),
    (dict(first_step=True), r"options\['first_step'\]"),
    (dict(min_step=0.5, max_step=0.1), r"options\['min_step'\] = 0.5 exceeds"),
    (dict(solver="RK45", min_step=0.1), r"options\['min_step'\] = 0.1 applies only to .*LSODA"),
    (dict(max_num_steps=0), r"options\['max_num_steps'\] must be an int >= 1"),
    (dict(max_num_steps=2.5), r"options\['max_num_steps'\]"),
    (dict(record_steps="yes"), r"options\['record_steps'\] must be True or False"),
    (dict(step_size=0.1), r"do not apply to method 'scipy_solver'"),
    (dict(rtoll=1e-3), r"unknown option 'rtoll'"),
])
def test_bad_option_values(options, match):
    with pytest.raises(ValueError, match=match):
        odeint(linear, Y0, [0.0, 1.0], method="scipy_solver", options=options)


def test_tensor_option_values_are_accepted():
    sol = solve(linear, Y0, [0.0, 1.0], method="scipy_solver",
                options=dict(solver="RK45", max_step=torch.tensor(0.25), first_step=np.float64(0.1),
                             max_num_steps=torch.tensor(1000), record_steps=True))
    assert max(np.diff([0.0, *sol.stats.accepted_ts])) <= 0.25 + 1e-12
    assert repr(ScipySolver("BDF", max_step=1.0)).startswith("ScipySolver(solver='BDF'")


def test_events_and_callbacks():
    with pytest.raises(ValueError, match="cannot locate events"):
        odeint(linear, Y0, [0.0, 1.0], method="scipy_solver", event_fn=lambda t, y: y[0])

    class WithCallback(nn.Module):
        def forward(self, t, y):
            return linear(t, y)

        def callback_step(self, t0, y0, dt):
            pass

    with pytest.warns(UserWarning, match="does not call the callbacks"):
        odeint(WithCallback(), Y0, [0.0, 1.0], method="scipy_solver")


# --------------------------------------------------------------------------- failures


def _reached(message: str) -> float:
    return float(re.search(r"last accepted step ended at t=([-0-9.e]+)", message).group(1))


@pytest.mark.parametrize("solver", ["RK45", "DOP853", "Radau", "BDF"])
def test_blow_up_raises_solver_error_with_scipy_message_and_time(solver):
    # y' = y^2, y(0) = 1: y = 1 / (1 - t) blows up at t = 1
    with pytest.raises(SolverError, match=rf"scipy_solver \({solver}\) failed: Required step "
                                          rf"size is less than spacing") as info:
        odeint(lambda t, y: y**2, torch.ones(1, dtype=F64), [0.0, 2.0], method="scipy_solver",
               options=dict(solver=solver))
    assert not isinstance(info.value, NonFiniteStateError)
    assert _reached(str(info.value)) == pytest.approx(1.0, abs=1e-4)


def test_lsoda_blow_up_is_stopped_by_max_num_steps():
    # scipy's own LSODA does not stop on this problem (minutes and more)
    with pytest.raises(MaxStepsExceededError, match=r"LSODA.*max_num_steps = 2000 .*t=0\.99"):
        odeint(lambda t, y: y**2, torch.ones(1, dtype=F64), [0.0, 2.0], method="scipy_solver",
               options=dict(max_num_steps=2000))


@pytest.mark.parametrize("solver", ["RK45", "Radau", "BDF", "LSODA"])
def test_non_finite_field_raises_non_finite_state_error(solver):
    def f(t, y):
        return y * torch.sqrt(0.5 - t)  # NaN beyond t = 0.5

    with pytest.raises(NonFiniteStateError, match=rf"scipy_solver \({solver}\).*non-finite "
                                                  rf"value \(NaN/inf\) at t=0\.50"):
        odeint(f, torch.ones(2, dtype=F64), [0.0, 1.0], method="scipy_solver",
               options=dict(solver=solver, max_num_steps=5000))


@pytest.mark.parametrize("solver", ["RK45", "BDF", "LSODA"])
def test_exceptions_from_func_propagate_unchanged(solver):
    def f(t, y):
        if t > 0.3:
            raise KeyError("boom")
        return -y

    with pytest.raises(KeyError, match="boom"):
        odeint(f, torch.ones(2, dtype=F64), [0.0, 1.0], method="scipy_solver",
               options=dict(solver=solver))
    with pytest.raises(ValueError, match="has shape"):
        odeint(lambda t, y: y[:1], torch.ones(2, dtype=F64), [0.0, 1.0], method="scipy_solver",
               options=dict(solver=solver))


# --------------------------------------------------------------------------- gradients


class _Field(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2).double()

    def forward(self, t, y):
        return torch.tanh(self.lin(y))


def test_forward_only_warns_that_no_gradient_flows():
    t = _t(False, n=3)
    y0 = Y0.clone().requires_grad_()
    with pytest.warns(UserWarning, match="no gradient flows") as record:
        odeint(linear, y0, t, method="scipy_solver")
    assert [w.filename for w in record if "no gradient" in str(w.message)] == [__file__]
    with pytest.warns(UserWarning, match="no gradient flows"):
        odeint(_Field(), Y0, t, method="scipy_solver")
    with pytest.warns(UserWarning, match="no gradient flows"):
        odeint(linear, Y0, t.clone().requires_grad_(), method="scipy_solver")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with torch.no_grad():
            odeint(_Field(), y0, t, method="scipy_solver")
        field = _Field().requires_grad_(False)
        ys = odeint(field, Y0, t, method="scipy_solver")
        assert not ys.requires_grad


def _cubic_problem(t_grad: bool):
    """torchdiffeq's gradient_tests.TestCompareAdjointGradient problem (float32)."""

    class Odefunc(nn.Module):
        def __init__(self):
            super().__init__()
            self.A = nn.Parameter(torch.tensor([[-0.1, 2.0], [-2.0, -0.1]]))
            self.unused_module = nn.Linear(2, 5)

        def forward(self, t, y):
            return torch.mm(y**3, self.A)

    y0 = torch.tensor([[2.0, 0.0]], requires_grad=True)
    t = torch.linspace(0.0, 25.0, 10, requires_grad=t_grad)
    return Odefunc(), y0, t


@pytest.mark.parametrize("t_grad", [True, False], ids=["t_grad", "no_t_grad"])
def test_adjoint_gradients_match_dopri5_backprop(t_grad):
    func, y0, t = _cubic_problem(t_grad)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the adjoint needs no graph: no warning
        ys = hyperode.odeint_adjoint(func, y0, t, method="scipy_solver")
    torch.manual_seed(0)
    grad_ys = torch.rand_like(ys) * 0.1
    ys.backward(grad_ys)
    adjoint = (y0.grad, t.grad, func.A.grad)
    assert float(func.unused_module.weight.grad.abs().max()) == 0
    assert float(func.unused_module.bias.grad.abs().max()) == 0

    func, y0, t = _cubic_problem(t_grad)
    ys_ref = odeint(func, y0, t, method="dopri5")
    ys_ref.backward(grad_ys)
    assert float((ys - ys_ref).detach().abs().max()) < 1e-4
    assert float((adjoint[0] - y0.grad).abs().max()) < 3e-4
    if t_grad:
        assert float((adjoint[1] - t.grad).abs().max()) < 1e-4
    assert float((adjoint[2] - func.A.grad).abs().max()) < 2e-3


def test_adjoint_tuple_state_and_backward_stats():
    field = _Field()

    def f(t, state):
        x, v = state
        return v, field(t, x) - v

    x0 = torch.tensor([0.3, -0.2], dtype=F64, requires_grad=True)
    v0 = torch.tensor([0.1, 0.4], dtype=F64, requires_grad=True)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    params = tuple(field.parameters())

    def loss(ys):
        return (ys[0][1:] ** 2).sum() + ys[1][-1].sum()

    sol = hyperode.solve_adjoint(f, (x0, v0), t, method="scipy_solver",
                                 options=dict(solver="DOP853"), adjoint_params=params,
                                 rtol=1e-10, atol=1e-12)
    got = torch.autograd.grad(loss(sol.ys), (x0, v0, *params))
    assert sol.backward_stats.nfe > 0 and sol.backward_stats.accepted > 0
    ref = torch.autograd.grad(loss(odeint(f, (x0, v0), t, method="dopri5", rtol=1e-10,
                                          atol=1e-12)), (x0, v0, *params))
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, rtol=1e-6, atol=1e-8)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_cuda_state_stays_on_its_device(dtype):
    devices = set()

    def f(t, y):
        devices.add((t.device.type, y.device.type))
        return y @ A.T.to(y)

    y0 = Y0.to("cuda", dtype)
    rtol = torch.full((2,), 1e-7, dtype=dtype, device="cuda")
    ys = odeint(f, y0, _t(False).to("cuda", dtype), method="scipy_solver", rtol=rtol,
                atol=1e-9)
    assert ys.device.type == "cuda" and ys.dtype == dtype and devices == {("cuda", "cuda")}
    ref = odeint(f, Y0.to(dtype), _t(False).to(dtype), method="scipy_solver", rtol=1e-7,
                 atol=1e-9)
    torch.testing.assert_close(ys.cpu(), ref)
