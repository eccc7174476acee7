"""Gradients through ``hyperode.odeint`` w.r.t. y0, the parameters of ``func`` and ``t``.

Reference values are central finite differences of the *same* solve and, where known,
analytic derivatives of the exact solution.

Choice of the finite-difference step (eps = 1e-6, float64): for a smooth function the
central difference has truncation error ~ eps**2 * |L'''| / 6 ~ 1e-12 and rounding error
~ macheps * |L| / eps ~ 1e-10 * |L|. An adaptive solve is a smooth function of its inputs
as long as the accept/reject pattern does not change, but backpropagation holds the step
sizes fixed while the finite difference also sees them move; that difference is of the
order of the local error, i.e. of the tolerance (1e-10 here). All of these are orders of
magnitude below the 1e-5 relative error we allow, while a wrong gradient (a missing term,
a wrong sign, a gradient through the wrong stage) is off by O(1).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

import hyperode

F64 = torch.float64
EPS = 1e-6
FD_RTOL = 1e-5
TIGHT = dict(rtol=1e-10, atol=1e-10)

ADAPTIVE = ["dopri5", "tsit5"]
# (method, solver kwargs): adaptive at tight tolerance, rk4 on a fixed grid.
SOLVERS = [
    pytest.param("dopri5", dict(TIGHT), id="dopri5"),
    pytest.param("tsit5", dict(TIGHT), id="tsit5"),
    pytest.param("rk4", dict(options=dict(step_size=0.05)), id="rk4-fixed"),
]

A_NP = np.array([[-0.3, 2.0], [-1.5, -0.1]])
T_OUT = [0.0, 0.7, 1.5, 2.3]


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().flatten(), b.detach().double().flatten()
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def _loss(ys: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """A scalar loss mixing every output time, linear plus quadratic."""
    return (w * ys).sum() + 0.1 * (ys**2).sum()


def _weights(shape, seed=1, dtype=F64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=F64).to(dtype)


def _mlp(seed: int = 0, n_in: int = 2, dtype=F64) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(n_in, 8), nn.Tanh(), nn.Linear(8, 2)).to(dtype)


class Autonomous(nn.Module):
    """2-8-2 tanh MLP vector field."""

    def __init__(self, seed=0, dtype=F64):
        super().__init__()
        self.net = _mlp(seed, 2, dtype)

    def forward(self, t, y):
        return self.net(y)


class NonAutonomous(nn.Module):
    """A field that uses t: MLP(y, sin t) plus a t-dependent linear forcing."""

    def __init__(self, seed=0, dtype=F64):
        super().__init__()
        self.net = _mlp(seed, 3, dtype)
        self.c = nn.Parameter(torch.tensor([0.4, -0.2], dtype=dtype))

    def forward(self, t, y):
        assert t.ndim == 0
        z = torch.cat([y, torch.sin(t).reshape(1)])
        return self.net(z) + self.c * torch.cos(2 * t)


class Linear(nn.Module):
    def __init__(self, a=A_NP, dtype=F64):
        super().__init__()
        self.A = nn.Parameter(torch.tensor(a, dtype=dtype))

    def forward(self, t, y):
        return self.A @ y


def _params_vector(module: nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in module.parameters()]


def _fd_params(loss_fn, params, eps=EPS) -> list[torch.Tensor]:
    """Central differences of loss_fn() w.r.t. every entry of every parameter."""
    grads = []
    with torch.no_grad():
        for p in params:
            g = torch.zeros_like(p)
            flat, gflat = p.view(-1), g.view(-1)
            for k in range(flat.numel()):
                old = flat[k].item()
                flat[k] = old + eps
                lp = loss_fn().item()
                flat[k] = old - eps
                lm = loss_fn().item()
                flat[k] = old
                gflat[k] = (lp - lm) / (2 * eps)
            grads.append(g)
    return grads


def _fd_vector(loss_of, x: torch.Tensor, eps=EPS) -> torch.Tensor:
    """Central differences of loss_of(x) w.r.t. every entry of x (x is not modified)."""
    g = torch.zeros_like(x)
    with torch.no_grad():
        for k in range(x.numel()):
            e = torch.zeros_like(x).view(-1)
            e[k] = eps
            e = e.view_as(x)
            g.view(-1)[k] = (loss_of(x + e).item() - loss_of(x - e).item()) / (2 * eps)
    return g


# --------------------------------------------------------------------- y0 and parameters


@pytest.mark.parametrize("field_cls", [Autonomous, NonAutonomous], ids=["autonomous", "t-dep"])
@pytest.mark.parametrize(("method", "kw"), SOLVERS)
def test_grad_y0_matches_finite_differences(field_cls, method, kw):
    field = field_cls()
    t = torch.tensor(T_OUT, dtype=F64)
    w = _weights((len(T_OUT), 2))
    y0 = torch.tensor([0.8, -0.4], dtype=F64)

    def loss_of(y):
        return _loss(hyperode.odeint(field, y, t, method=method, **kw), w)

    y0r = y0.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(loss_of(y0r), y0r)
    g_fd = _fd_vector(loss_of, y0)
    assert _rel_err(g, g_fd) <= FD_RTOL, (g, g_fd)


@pytest.mark.parametrize("field_cls", [Autonomous, NonAutonomous], ids=["autonomous", "t-dep"])
@pytest.mark.parametrize(("method", "kw"), SOLVERS)
def test_grad_params_matches_finite_differences(field_cls, method, kw):
    field = field_cls()
    params = _params_vector(field)
    t = torch.tensor(T_OUT, dtype=F64)
    w = _weights((len(T_OUT), 2), seed=2)
    y0 = torch.tensor([0.8, -0.4], dtype=F64)

    def loss_fn():
        return _loss(hyperode.odeint(field, y0, t, method=method, **kw), w)

    grads = torch.autograd.grad(loss_fn(), params)
    assert all(g is not None for g in grads)
    grads_fd = _fd_params(loss_fn, params)
    g = torch.cat([x.flatten() for x in grads])
    g_fd = torch.cat([x.flatten() for x in grads_fd])
    assert g_fd.norm() > 1e-3  # the check is not vacuous
    assert _rel_err(g, g_fd) <= FD_RTOL


# --------------------------------------------------------------------- analytic (linear)


@pytest.mark.parametrize(("method", "kw", "tol"), [
    ("dopri5", dict(TIGHT), 1e-7),
    ("tsit5", dict(TIGHT), 1e-7),
    ("rk4", dict(options=dict(step_size=0.01)), 1e-6),
])
def test_linear_jacobian_y0_is_expm(method, kw, tol):
    """y' = A y: dy(t_i)/dy0 = expm(A (t_i - t_0)) for every output time."""
    field = Linear()
    t = torch.tensor(T_OUT, dtype=F64)
    y0 = torch.tensor([1.0, 0.5], dtype=F64, requires_grad=True)
    ys = hyperode.odeint(field, y0, t, method=method, **kw)
    for i in range(1, len(T_OUT)):
        jac = torch.stack([torch.autograd.grad(ys[i, r], y0, retain_graph=True)[0]
                           for r in range(2)])
        expected = scipy.linalg.expm(A_NP * T_OUT[i])
        np.testing.assert_allclose(jac.numpy(), expected, rtol=0, atol=tol)


@pytest.mark.parametrize(("method", "kw", "tol"), [
    ("dopri5", dict(TIGHT), 1e-7),
    ("tsit5", dict(TIGHT), 1e-7),
    ("rk4", dict(options=dict(step_size=0.01)), 1e-6),
])
def test_linear_grad_A_is_expm_frechet(method, kw, tol):
    """y(T) = expm(A T) y0, so d<w, y(T)>/dA in direction E = <w, L(AT, ET) y0>."""
    field = Linear()
    T = 1.8
    y0_np = np.array([1.0, 0.5])
    t = torch.tensor([0.0, T], dtype=F64)
    w_np = np.array([0.7, -1.3])
    ys = hyperode.odeint(field, torch.tensor(y0_np), t, method=method, **kw)
    (g,) = torch.autograd.grad((torch.tensor(w_np) * ys[-1]).sum(), field.A)
    expected = np.zeros((2, 2))
    for r in range(2):
        for c in range(2):
            E = np.zeros((2, 2))
            E[r, c] = 1.0
            _, dexp = scipy.linalg.expm_frechet(A_NP * T, E * T)
            expected[r, c] = w_np @ dexp @ y0_np
    np.testing.assert_allclose(g.numpy(), expected, rtol=0, atol=tol)


@pytest.mark.parametrize(("method", "kw", "tol"), [
    ("dopri5", dict(TIGHT), 1e-7),
    ("tsit5", dict(TIGHT), 1e-7),
    ("rk4", dict(options=dict(step_size=0.01)), 1e-6),
])
def test_linear_grad_t_analytic(method, kw, tol):
    """dy(t_i)/dt_i = A y(t_i); dy(t_i)/dt_0 = -expm(A (t_i - t_0)) A y0."""
    field = Linear()
    t0 = 0.2
    times = [t0, 0.9, 1.6, 2.5]
    t = torch.tensor(times, dtype=F64, requires_grad=True)
    y0_np = np.array([1.0, 0.5])
    w_np = _weights((len(times), 2), seed=5).numpy()
    ys = hyperode.odeint(field, torch.tensor(y0_np), t, method=method, **kw)
    (g,) = torch.autograd.grad((torch.tensor(w_np) * ys).sum(), t)
    y_exact = [scipy.linalg.expm(A_NP * (ti - t0)) @ y0_np for ti in times]
    expected = np.zeros(len(times))
    for i in range(1, len(times)):
        expected[i] = w_np[i] @ (A_NP @ y_exact[i])
        expected[0] += -w_np[i] @ (scipy.linalg.expm(A_NP * (times[i] - t0)) @ A_NP @ y0_np)
    np.testing.assert_allclose(g.numpy(), expected, rtol=0, atol=tol)
    assert abs(g[0].item()) > 0.1 and abs(g[-1].item()) > 0.1  # both kinds of term matter


# --------------------------------------------------------------------- t


@pytest.mark.parametrize("field_cls", [Autonomous, NonAutonomous], ids=["autonomous", "t-dep"])
@pytest.mark.parametrize("method", ADAPTIVE)
@pytest.mark.parametrize("decreasing", [False, True], ids=["increasing", "decreasing"])
def test_grad_t_matches_finite_differences(field_cls, method, decreasing):
    """Every entry of t, adaptive solves (their output is smooth in t)."""
    field = field_cls()
    times = [0.1, 0.7, 1.5, 2.3]
    if decreasing:
        times = times[::-1]
    t = torch.tensor(times, dtype=F64)
    w = _weights((len(times), 2), seed=3)
    y0 = torch.tensor([0.8, -0.4], dtype=F64)

    def loss_of(tt):
        return _loss(hyperode.odeint(field, y0, tt, method=method, **TIGHT), w)

    tr = t.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(loss_of(tr), tr)
    g_fd = _fd_vector(loss_of, t)
    assert (g_fd.abs() > 1e-3).all()  # every entry matters
    assert _rel_err(g, g_fd) <= FD_RTOL, (g, g_fd)


@pytest.mark.parametrize("field_cls", [Autonomous, NonAutonomous], ids=["autonomous", "t-dep"])
@pytest.mark.parametrize("decreasing", [False, True], ids=["increasing", "decreasing"])
def test_grad_t_fixed_grid_follows_exact_relations(field_cls, decreasing):
    """rk4 on a fixed grid: FD in t is not smooth (the grid moves with t[0]), so check
    dL/dt_i = <dL/dy_i, f(t_i, y_i)> (i >= 1) and dL/dt_0 = -<dL/dy0, f(t_0, y0)>."""
    field = field_cls()
    times = [0.1, 0.7, 1.5, 2.3]
    if decreasing:
        times = times[::-1]
    t = torch.tensor(times, dtype=F64, requires_grad=True)
    w = _weights((len(times) - 1, 2), seed=4)
    y0 = torch.tensor([0.8, -0.4], dtype=F64, requires_grad=True)
    ys = hyperode.odeint(field, y0, t, method="rk4", options=dict(step_size=0.05))
    out = ys[1:]  # y(t_0) = y0 does not move with t_0
    loss = _loss(out, w)
    g_t, g_y0, g_out = torch.autograd.grad(loss, (t, y0, ys))
    with torch.no_grad():
        expected = torch.zeros(len(times), dtype=F64)
        for i in range(1, len(times)):
            expected[i] = (g_out[i] * field(t[i].detach(), ys[i].detach())).sum()
        expected[0] = -(g_y0 * field(t[0].detach(), y0.detach())).sum()
    torch.testing.assert_close(g_t, expected, rtol=1e-12, atol=1e-12)
    assert (expected.abs() > 1e-3).all()


# --------------------------------------------------------------------- tuple state


class TupleOscillator(nn.Module):
    """x' = v, v' = -k x - c v with x, v of shape [2]."""

    def __init__(self):
        super().__init__()
        self.k = nn.Parameter(torch.tensor([1.3, 0.7], dtype=F64))
        self.c = nn.Parameter(torch.tensor(0.15, dtype=F64))

    def forward(self, t, state):
        x, v = state
        return v, -self.k * x - self.c * v

    def flat(self, t, y):
        x, v = y[:2], y[2:]
        dx, dv = self.forward(t, (x, v))
        return torch.cat([dx, dv])


@pytest.mark.parametrize(("method", "kw"), SOLVERS)
def test_grad_tuple_state(method, kw):
    field = TupleOscillator()
    t = torch.tensor(T_OUT, dtype=F64)
    wx, wv = _weights((len(T_OUT), 2), seed=6), _weights((len(T_OUT), 2), seed=7)
    x0 = torch.tensor([1.0, -0.5], dtype=F64)
    v0 = torch.tensor([0.3, 0.2], dtype=F64)

    def loss_of(x, v):
        xs, vs = hyperode.odeint(field, (x, v), t, method=method, **kw)
        return _loss(xs, wx) + _loss(vs, wv)

    xr, vr = x0.clone().requires_grad_(True), v0.clone().requires_grad_(True)
    gx, gv, gk, gc = torch.autograd.grad(loss_of(xr, vr), (xr, vr, field.k, field.c))
    assert _rel_err(gx, _fd_vector(lambda x: loss_of(x, v0), x0)) <= FD_RTOL
    assert _rel_err(gv, _fd_vector(lambda v: loss_of(x0, v), v0)) <= FD_RTOL
    gk_fd, gc_fd = _fd_params(lambda: loss_of(x0, v0), [field.k, field.c])
    assert _rel_err(gk, gk_fd) <= FD_RTOL
    assert _rel_err(gc, gc_fd) <= FD_RTOL

    # The same problem as one flat tensor gives the same gradients.
    y0 = torch.cat([x0, v0]).requires_grad_(True)
    ys = hyperode.odeint(field.flat, y0, t, method=method, **kw)
    loss_flat = _loss(ys[:, :2], wx) + _loss(ys[:, 2:], wv)
    gy, gk2, gc2 = torch.autograd.grad(loss_flat, (y0, field.k, field.c))
    # Adaptive step control sees the tuple (max of RMS) and the flat tensor (RMS)
    # differently, so the two solves agree to the tolerance, not bit for bit.
    torch.testing.assert_close(torch.cat([gx, gv]), gy, rtol=1e-7, atol=1e-8)
    torch.testing.assert_close(gk, gk2, rtol=1e-7, atol=1e-8)
    torch.testing.assert_close(gc, gc2, rtol=1e-7, atol=1e-8)


def test_grad_tuple_state_t():
    field = TupleOscillator()
    times = [0.1, 0.7, 1.5, 2.3]
    t = torch.tensor(times, dtype=F64)
    wx, wv = _weights((len(times), 2), seed=8), _weights((len(times), 2), seed=9)
    x0 = torch.tensor([1.0, -0.5], dtype=F64)
    v0 = torch.tensor([0.3, 0.2], dtype=F64)

    def loss_of(tt):
        xs, vs = hyperode.odeint(field, (x0, v0), tt, **TIGHT)
        return _loss(xs, wx) + _loss(vs, wv)

    tr = t.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(loss_of(tr), tr)
    assert _rel_err(g, _fd_vector(loss_of, t)) <= FD_RTOL


# --------------------------------------------------------------------- decreasing t


@pytest.mark.parametrize(("method", "kw"), SOLVERS)
def test_grad_decreasing_t_y0_and_params(method, kw):
    field = NonAutonomous(seed=3)
    t = torch.tensor([2.0, 1.4, 0.5, -0.3], dtype=F64)
    w = _weights((4, 2), seed=10)
    y0 = torch.tensor([0.2, 0.9], dtype=F64)

    def loss_of(y):
        return _loss(hyperode.odeint(field, y, t, method=method, **kw), w)

    y0r = y0.clone().requires_grad_(True)
    loss = loss_of(y0r)
    params = _params_vector(field)
    g_y0, *g_p = torch.autograd.grad(loss, (y0r, *params))
    assert _rel_err(g_y0, _fd_vector(loss_of, y0)) <= FD_RTOL
    g_p_fd = _fd_params(lambda: loss_of(y0), params)
    assert _rel_err(torch.cat([g.flatten() for g in g_p]),
                    torch.cat([g.flatten() for g in g_p_fd])) <= FD_RTOL


@pytest.mark.parametrize(("method", "kw", "tol"), [
    ("dopri5", dict(TIGHT), 1e-7),
    ("rk4", dict(options=dict(step_size=0.01)), 1e-6),
])
def test_linear_decreasing_t_analytic(method, kw, tol):
    """Backward in time: dy(t_1)/dy0 = expm(A (t_1 - t_0)) with t_1 < t_0, and
    dy(t_1)/dt_1 = A y(t_1)."""
    field = Linear()
    times = [1.5, 0.4]
    y0_np = np.array([1.0, 0.5])
    t = torch.tensor(times, dtype=F64, requires_grad=True)
    y0 = torch.tensor(y0_np, requires_grad=True)
    ys = hyperode.odeint(field, y0, t, method=method, **kw)
    jac = torch.stack([torch.autograd.grad(ys[1, r], y0, retain_graph=True)[0] for r in range(2)])
    phi = scipy.linalg.expm(A_NP * (times[1] - times[0]))
    np.testing.assert_allclose(jac.numpy(), phi, rtol=0, atol=tol)
    w_np = np.array([0.3, -1.1])
    (g_t,) = torch.autograd.grad((torch.tensor(w_np) * ys[1]).sum(), t)
    y1 = phi @ y0_np
    np.testing.assert_allclose(g_t.numpy(), [-w_np @ phi @ A_NP @ y0_np, w_np @ A_NP @ y1],
                               rtol=0, atol=tol)


# --------------------------------------------------------------------- gradcheck


@pytest.mark.parametrize(("method", "kw"), [
    ("dopri5", dict(TIGHT)),
    ("rk4", dict(options=dict(num_steps=20))),
])
def test_gradcheck_y0_and_parameter(method, kw):
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)

    def fn(y0, theta):
        def f(t, y):
            return torch.stack([y[1], -theta[0] * torch.sin(y[0]) - theta[1] * y[1]])
        return hyperode.odeint(f, y0, t, method=method, **kw)

    y0 = torch.tensor([0.6, -0.2], dtype=F64, requires_grad=True)
    theta = torch.tensor([1.4, 0.3], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(fn, (y0, theta), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_gradcheck_t_adaptive():
    y0 = torch.tensor([0.6, -0.2], dtype=F64)

    def f(t, y):
        return torch.stack([y[1], -torch.sin(y[0]) + 0.3 * torch.cos(t)])

    def fn(t):
        return hyperode.odeint(f, y0, t, **TIGHT)

    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(fn, (t,), eps=1e-6, atol=1e-6, rtol=1e-5)


# --------------------------------------------------------------------- float32


@pytest.mark.parametrize(("method", "kw32", "kw64"), [
    ("dopri5", dict(rtol=1e-6, atol=1e-7), dict(TIGHT)),
    ("tsit5", dict(rtol=1e-6, atol=1e-7), dict(TIGHT)),
    ("rk4", dict(options=dict(step_size=0.05)), dict(options=dict(step_size=0.05))),
])
def test_float32_gradients_match_float64(method, kw32, kw64):
    f64 = NonAutonomous(seed=1, dtype=F64)
    f32 = NonAutonomous(seed=1, dtype=torch.float32)
    f32.load_state_dict({k: v.float() for k, v in f64.state_dict().items()})
    times = [0.0, 0.7, 1.5, 2.3]
    w = _weights((4, 2), seed=11)
    grads = {}
    for dtype, field, kw in [(F64, f64, kw64), (torch.float32, f32, kw32)]:
        y0 = torch.tensor([0.8, -0.4], dtype=dtype, requires_grad=True)
        t = torch.tensor(times, dtype=dtype, requires_grad=True)
        ys = hyperode.odeint(field, y0, t, method=method, **kw)
        assert ys.dtype == dtype
        loss = _loss(ys, w.to(dtype))
        gs = torch.autograd.grad(loss, (y0, t, *field.parameters()))
        assert all(g.dtype == dtype for g in gs)
        grads[dtype] = torch.cat([g.double().flatten() for g in gs])
    g64, g32 = grads[F64], grads[torch.float32]
    assert torch.isfinite(g32).all()
    assert _rel_err(g32, g64) <= 1e-4


def test_no_grad_to_unused_inputs_and_detached_outputs():
    """Without requires_grad nothing is tracked; t without requires_grad gets no graph."""
    field = Autonomous()
    y0 = torch.tensor([0.8, -0.4], dtype=F64)
    with torch.no_grad():
        ys = hyperode.odeint(field, y0, torch.tensor(T_OUT, dtype=F64))
    assert not ys.requires_grad
    t = torch.tensor(T_OUT, dtype=F64, requires_grad=True)
    with torch.no_grad():
        ys2 = hyperode.odeint(field, y0, t)
    assert not ys2.requires_grad
    torch.testing.assert_close(ys, ys2, rtol=0, atol=0)


def test_t_grad_does_not_change_values():
    """Attaching the t-gradient adds a zero-valued term: values are identical."""
    field = NonAutonomous()
    y0 = torch.tensor([0.8, -0.4], dtype=F64)
    a = hyperode.odeint(field, y0, torch.tensor(T_OUT, dtype=F64))
    b = hyperode.odeint(field, y0, torch.tensor(T_OUT, dtype=F64, requires_grad=True))
    torch.testing.assert_close(a, b.detach(), rtol=0, atol=0)
    assert math.isfinite(b.sum().item())
