"""Terminal events and ``odeint_event``: event times against closed forms (adaptive and
fixed-step methods, reverse time, tuple states, combined and per-sample batches), the
implicit-function gradient of the event time against central differences (through
``odeint`` and ``odeint_adjoint``, several bounces of a bouncing ball), and bad input."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import hyperode
from hyperode import MaxStepsExceededError, odeint, odeint_adjoint, odeint_event

F64 = torch.float64
TIGHT = dict(rtol=1e-10, atol=1e-12)
INTERFACES = {"odeint": odeint, "odeint_adjoint": odeint_adjoint}


def num(x) -> float:
    """A tensor's (or number's) value as a float, without autograd's warning."""
    return float(x.detach()) if isinstance(x, torch.Tensor) else float(x)


def scalar(x: float, grad: bool = False) -> torch.Tensor:
    return torch.tensor(x, dtype=F64, requires_grad=grad)


# --------------------------------------------------------------------------- problems


def fall_time(h0: float, v0: float, g: float, r: float, t0: float = 0.0) -> float:
    """First t > t0 with h0 + v0 (t - t0) - g (t - t0)^2 / 2 = r (a ball dropped from h0
    above a floor at height r, thrown up with v0)."""
    return t0 + (v0 + math.sqrt(v0 * v0 + 2.0 * g * (h0 - r))) / g


class Ball(nn.Module):
    """``[h, v]`` (last dimension) under gravity ``g``: h' = v, v' = -g."""

    def __init__(self, g: float = 9.8):
        super().__init__()
        self.g = nn.Parameter(scalar(g))

    def forward(self, t, y):
        return torch.stack([y[..., 1], -self.g * torch.ones_like(y[..., 1])], dim=-1)


class TupleBall(Ball):
    """The same ball as a tuple state ``(h, v)``."""

    def forward(self, t, state):
        _, v = state
        return v, -self.g * torch.ones_like(v)


class Drag(nn.Module):
    """A nonlinear, non-autonomous ball: h' = v, v' = -g - k v sqrt(1 + v^2) + 0.3 sin(t)."""

    def __init__(self, g: float = 9.8, k: float = 0.3):
        super().__init__()
        self.g = nn.Parameter(scalar(g))
        self.k = nn.Parameter(scalar(k))

    def forward(self, t, y):
        v = y[..., 1]
        dv = -self.g - self.k * v * torch.sqrt(1 + v * v) + 0.3 * torch.sin(t)
        return torch.stack([v, dv], dim=-1)


def linear(a: float):
    return lambda t, y: a * y


ADAPTIVE = ["dopri5", "tsit5", "dopri8", "bosh3"]
FIXED = [("rk4", None), ("rk4", "linear"), ("rk4", "cubic")]


def fixed_options(interp: str | None, h: float = 0.05) -> dict:
    return {"step_size": h} if interp is None else {"step_size": h, "interp": interp}


# --------------------------------------------------------------------------- event times


@pytest.mark.parametrize("method", ADAPTIVE)
@pytest.mark.parametrize("v0", [0.0, 2.5])
def test_ball_adaptive(method, v0):
    h0, r = 10.0, 0.2
    y0 = torch.tensor([h0, v0], dtype=F64)
    t_ev, sol = odeint_event(Ball(), y0, scalar(0.0), event_fn=lambda t, y: y[0] - r,
                             method=method, **TIGHT)
    assert t_ev.shape == () and sol.shape == (2, 2)
    assert torch.equal(sol[0], y0)
    assert abs(num(t_ev) - fall_time(h0, v0, 9.8, r)) < 1e-10
    assert abs(num(sol[1, 0]) - r) < 1e-10
    assert abs(num(sol[1, 1]) - (v0 - 9.8 * num(t_ev))) < 1e-9


@pytest.mark.parametrize("method", ADAPTIVE)
def test_linear_level_adaptive(method):
    """y' = a y from y0 crosses c at t = log(c / y0) / a (not a polynomial in t)."""
    a, y0, c = -0.7, 2.0, 0.5
    tol = 1e-7 if method == "bosh3" else 1e-9
    t_ev, sol = odeint_event(linear(a), torch.tensor([y0], dtype=F64), scalar(0.3),
                             event_fn=lambda t, y: y[0] - c, method=method, **TIGHT)
    assert abs(num(t_ev) - (0.3 + math.log(c / y0) / a)) < tol
    assert abs(num(sol[-1, 0]) - c) < 1e-12


@pytest.mark.parametrize(("method", "interp"), FIXED)
def test_fixed_step(method, interp):
    """rk4 with step_size: the default dense output and cubic Hermite interpolation are
    exact for the ball's quadratic trajectory; linear interpolation is off by O(h^2)."""
    h0, v0, r = 10.0, 1.0, 0.2
    exact = fall_time(h0, v0, 9.8, r)
    t_ev, sol = odeint_event(Ball(), torch.tensor([h0, v0], dtype=F64), scalar(0.0),
                             event_fn=lambda t, y: y[0] - r, method=method,
                             options=fixed_options(interp))
    ball_tol = 2e-3 if interp == "linear" else 1e-12
    assert abs(num(t_ev) - exact) < ball_tol
    assert abs(num(sol[-1, 0]) - r) < 1e-12  # the located state is on the event surface

    a, y0, c = -0.7, 2.0, 0.5
    t_ev, _ = odeint_event(linear(a), torch.tensor([y0], dtype=F64), scalar(0.0),
                           event_fn=lambda t, y: y[0] - c, method=method,
                           options=fixed_options(interp))
    lin_tol = 5e-4 if interp == "linear" else 1e-6
    assert abs(num(t_ev) - math.log(c / y0) / a) < lin_tol


def test_fixed_step_euler_converges():
    """A first-order method: the event-time error shrinks in proportion to the step."""
    a, y0, c = -0.7, 2.0, 0.5
    exact = math.log(c / y0) / a
    errors = []
    for h in (0.02, 0.01):
        t_ev, _ = odeint_event(linear(a), torch.tensor([y0], dtype=F64), scalar(0.0),
                               event_fn=lambda t, y: y[0] - c, method="euler",
                               options={"step_size": h})
        errors.append(abs(num(t_ev) - exact))
    assert 1.8 < errors[0] / errors[1] < 2.2


@pytest.mark.parametrize("method", ["dopri5", "rk4"])
def test_reverse_time(method):
    """Backwards from t0 = 1: y' = a y reaches c > y(1) at t = 1 + log(c / y1) / a < 1,
    and a ball resting at the floor at t0 was at height H at t0 - s."""
    options = {"step_size": 0.01} if method == "rk4" else None
    a, y1, c = -0.7, 0.5, 2.0
    t_ev, sol = odeint_event(linear(a), torch.tensor([y1], dtype=F64), scalar(1.0),
                             event_fn=lambda t, y: y[0] - c, reverse_time=True,
                             method=method, options=options, **TIGHT)
    assert num(t_ev) < 1.0
    assert abs(num(t_ev) - (1.0 + math.log(c / y1) / a)) < 1e-9
    assert abs(num(sol[-1, 0]) - c) < 1e-12

    # Ball on the floor at t0 = 2 moving down at speed u; it was at height H when
    # r - u s - g s^2 / 2 = H for s = t - t0 < 0, i.e. s = (-u + sqrt(u^2 - 2 g (H - r))) / g.
    # The parabola crosses H twice; a sign change is only seen between the ends of a
    # step, and the ball's quadratic trajectory has no local error to keep steps short,
    # so max_step keeps the first step from jumping over both crossings.
    r, u, H, g = 0.2, 12.0, 5.0, 9.8
    s = (-u + math.sqrt(u * u - 2 * g * (H - r))) / g
    t_ev, sol = odeint_event(Ball(), torch.tensor([r, -u], dtype=F64), scalar(2.0),
                             event_fn=lambda t, y: y[0] - H, reverse_time=True,
                             method=method, options=options or {"max_step": 0.1}, **TIGHT)
    assert abs(num(t_ev) - (2.0 + s)) < 1e-10


def test_tuple_state():
    h0, v0, r = 10.0, 1.5, 0.2
    y0 = (torch.tensor([h0], dtype=F64), torch.tensor([v0], dtype=F64))
    t_ev, (h, v) = odeint_event(TupleBall(), y0, scalar(0.0),
                                event_fn=lambda t, s: s[0].sum() - r, **TIGHT)
    assert h.shape == (2, 1) and v.shape == (2, 1)
    assert abs(num(t_ev) - fall_time(h0, v0, 9.8, r)) < 1e-10
    assert abs(num(h[-1, 0]) - r) < 1e-10


def test_multi_element_event_sign_normalised():
    """Several event elements, some negative at t0: the first of them to change sign
    stops the solve (a ball thrown up between a floor and a ceiling)."""
    h0, v0, r, ceiling = 1.0, 8.0, 0.2, 3.0  # reaches the ceiling on the way up
    up = (v0 - math.sqrt(v0 * v0 - 2 * 9.8 * (ceiling - h0))) / 9.8

    def event_fn(t, y):  # floor: positive above it; ceiling: negative below it
        return torch.stack([y[0] - r, y[0] - ceiling])

    # max_step: see test_reverse_time (the ceiling is crossed twice by the parabola)
    t_ev, sol = odeint_event(Ball(), torch.tensor([h0, v0], dtype=F64), scalar(0.0),
                             event_fn=event_fn, options={"max_step": 0.1}, **TIGHT)
    assert abs(num(t_ev) - up) < 1e-10
    assert abs(num(sol[-1, 0]) - ceiling) < 1e-10


HEIGHTS = [10.0, 4.0, 7.0]
SPEEDS = [0.0, 1.0, -2.0]


def batch_y0() -> torch.Tensor:
    return torch.tensor(list(zip(HEIGHTS, SPEEDS)), dtype=F64)


def test_batch_combined_stops_at_first_event():
    """torchdiffeq's semantics: a [B] event function stops at the first sample's event."""
    r = 0.2
    t_ev, sol = odeint_event(Ball(), batch_y0(), scalar(0.0),
                             event_fn=lambda t, y: y[:, 0] - r, **TIGHT)
    times = [fall_time(h, v, 9.8, r) for h, v in zip(HEIGHTS, SPEEDS)]
    assert t_ev.shape == () and sol.shape == (2, 3, 2)
    assert abs(num(t_ev) - min(times)) < 1e-10
    first = times.index(min(times))
    assert abs(num(sol[-1, first, 0]) - r) < 1e-10
    assert bool((sol[-1, :, 0] > r - 1e-10).all())


@pytest.mark.parametrize(("method", "options"), [("dopri5", None), ("tsit5", None),
                                                 ("rk4", {"step_size": 0.05})])
def test_batch_per_sample(method, options):
    r = 0.2
    t_ev, sol = odeint_event(Ball(), batch_y0(), scalar(0.5),
                             event_fn=lambda t, y: y[:, 0] - r, event_per_sample=True,
                             method=method, options=options, **TIGHT)
    assert t_ev.shape == (3,) and sol.shape == (2, 3, 2)
    for b, (h, v) in enumerate(zip(HEIGHTS, SPEEDS)):
        exact = fall_time(h, v, 9.8, r, t0=0.5)
        assert abs(num(t_ev[b]) - exact) < 1e-10
        assert abs(num(sol[-1, b, 0]) - r) < 1e-10
        assert abs(num(sol[-1, b, 1]) - (v - 9.8 * (exact - 0.5))) < 1e-9


# --------------------------------------------------------------------------- gradients


def central_difference(fn, x: torch.Tensor, eps: float) -> torch.Tensor:
    """d fn / d x by central differences, element by element (x changed in place)."""
    out = torch.zeros_like(x)
    flat, grad = x.data.view(-1), out.view(-1)
    for i in range(flat.numel()):
        orig = num(flat[i])
        flat[i] = orig + eps
        plus = num(fn())
        flat[i] = orig - eps
        minus = num(fn())
        flat[i] = orig
        grad[i] = (plus - minus) / (2 * eps)
    return out


def check_against_fd(loss_fn, tensors: dict, eps: float = 1e-5, tol: float = 2e-6):
    """Autograd gradients of ``loss_fn()`` w.r.t. ``tensors`` against central differences;
    returns the largest absolute error."""
    loss = loss_fn()
    grads = torch.autograd.grad(loss, list(tensors.values()), allow_unused=True)
    worst = 0.0
    with torch.no_grad():
        for (name, x), g in zip(tensors.items(), grads):
            fd = central_difference(loss_fn, x, eps)
            g = torch.zeros_like(x) if g is None else g
            err = num((g - fd).abs().max())
            worst = max(worst, err)
            assert err < tol * max(1.0, num(fd.abs().max())), (name, g, fd)
    return worst


@pytest.mark.parametrize("iface", list(INTERFACES))
def test_gradient_closed_form_ball(iface):
    """dt*/d(h0, v0, g, t0, r) against the exact derivatives of the closed form."""
    h0, v0, g, r, t0 = 10.0, 1.0, 9.8, 0.2, 0.3
    ball = Ball(g)
    y0 = torch.tensor([h0, v0], dtype=F64, requires_grad=True)
    t0_t, r_t = scalar(t0, True), scalar(r, True)
    t_ev, _ = odeint_event(ball, y0, t0_t, event_fn=lambda t, y: y[0] - r_t,
                           odeint_interface=INTERFACES[iface], **TIGHT)
    t_ev.backward()
    s = math.sqrt(v0 * v0 + 2 * g * (h0 - r))
    d_h0, d_v0 = 1 / s, (1 + v0 / s) / g
    d_g = -(v0 + s) / g**2 + (h0 - r) / (g * s)
    expected = [d_h0, d_v0, d_g, 1.0, -d_h0]
    got = [*y0.grad.tolist(), num(ball.g.grad), num(t0_t.grad), num(r_t.grad)]
    assert max(abs(a - b) for a, b in zip(got, expected)) < 1e-8


@pytest.mark.parametrize("iface", list(INTERFACES))
@pytest.mark.parametrize("reverse", [False, True])
def test_gradient_vs_fd_nonlinear(iface, reverse):
    """A loss on the event time and on the state there, w.r.t. y0, func's parameters,
    t0 and a parameter of a time-dependent event function (a moving floor)."""
    drag = Drag()
    y0 = torch.tensor([3.0, 0.5], dtype=F64, requires_grad=True)
    t0 = scalar(0.2, True)
    r = scalar(0.4, True)

    def event_fn(t, y):
        return y[0] - r * (1 + 0.2 * t)

    if reverse:  # start on the way down, look back to when the ball was at height 3r
        y0 = torch.tensor([1.0, -6.0], dtype=F64, requires_grad=True)

        def event_fn(t, y):
            return y[0] - 3 * r * (1 + 0.2 * t)

    def loss():
        t_ev, sol = odeint_event(drag, y0, t0, event_fn=event_fn, reverse_time=reverse,
                                 odeint_interface=INTERFACES[iface], rtol=1e-12, atol=1e-12)
        return t_ev + 0.5 * sol[-1, 1] + 0.3 * sol[-1, 0] ** 2

    check_against_fd(loss, {"y0": y0, "g": drag.g, "k": drag.k, "t0": t0, "r": r})


@pytest.mark.parametrize("iface", list(INTERFACES))
def test_gradient_vs_fd_tuple_state(iface):
    ball = TupleBall()
    h0 = torch.tensor([6.0], dtype=F64, requires_grad=True)
    v0 = torch.tensor([1.0], dtype=F64, requires_grad=True)
    t0 = torch.tensor([0.1], dtype=F64, requires_grad=True)  # shape [1], as in the example
    r = scalar(0.3, True)

    def loss():
        t_ev, (h, v) = odeint_event(ball, (h0, v0), t0, event_fn=lambda t, s: s[0][0] - r,
                                    odeint_interface=INTERFACES[iface], **TIGHT)
        return t_ev * v[-1, 0] + h[-1, 0]

    check_against_fd(loss, {"h0": h0, "v0": v0, "g": ball.g, "t0": t0, "r": r})


def test_gradient_vs_fd_batch_combined():
    drag = Drag()
    y0 = torch.tensor([[3.0, 0.5], [2.5, 1.0]], dtype=F64, requires_grad=True)
    r = scalar(0.4, True)

    def loss():
        t_ev, sol = odeint_event(drag, y0, scalar(0.0), event_fn=lambda t, y: y[:, 0] - r,
                                 rtol=1e-12, atol=1e-12)
        return t_ev + (sol[-1] ** 2).sum() * 0.1

    check_against_fd(loss, {"y0": y0, "g": drag.g, "r": r})


@pytest.mark.parametrize("shared", [False, True])
def test_gradient_vs_fd_per_sample(shared):
    """Each sample's event time depends only on its own row (and the shared parameters);
    with ``shared`` two samples are identical, so their events share a time."""
    drag = Drag()
    rows = [[3.0, 0.5], [2.0, -1.0], [4.0, 2.0]]
    if shared:
        rows[2] = rows[0]
    y0 = torch.tensor(rows, dtype=F64, requires_grad=True)
    t0 = scalar(0.1, True)
    r = scalar(0.4, True)
    w = torch.tensor([1.0, -0.5, 2.0], dtype=F64)

    def event_fn(t, y):
        return y[:, 0] - r * (1 + 0.2 * t)

    def loss():
        t_ev, sol = odeint_event(drag, y0, t0, event_fn=event_fn, event_per_sample=True,
                                 rtol=1e-12, atol=1e-12)
        return (w * t_ev).sum() + (w * sol[-1, :, 1]).sum() * 0.3

    t_ev, _ = odeint_event(drag, y0, t0, event_fn=event_fn, event_per_sample=True)
    assert (num(t_ev[0]) == num(t_ev[2])) == shared
    check_against_fd(loss, {"y0": y0, "g": drag.g, "k": drag.k, "t0": t0, "r": r})
    # sample b's event time depends on row b only
    grad = torch.autograd.grad(t_ev[1], y0)[0] if t_ev.requires_grad else None
    assert grad is not None and num(grad[[0, 2]].abs().max()) == 0.0


@pytest.mark.parametrize(("method", "options", "tol"), [
    ("rk4", {"step_size": 0.05}, 5e-5),
    ("rk4", {"step_size": 0.05, "interp": "cubic"}, 5e-5),
    ("rk4", {"step_size": 0.05, "interp": "linear"}, 1e-2),
    ("bosh3", None, 1e-6),
    ("tsit5", None, 1e-6),
])
def test_gradient_methods_vs_reference(method, options, tol):
    """Each method's event-time gradient against the reference (dopri8 at tight
    tolerances, itself checked against central differences). The implicit-function
    gradient uses the exact-ODE relation dY/dt* = f(t*, Y), as torchdiffeq does, so on
    a fixed grid it approximates the true gradient to the accuracy of the solve and
    of the interpolant, rather than differentiating the discrete map exactly."""
    drag = Drag()
    y0 = torch.tensor([3.0, 0.5], dtype=F64, requires_grad=True)
    r = scalar(0.4, True)
    inputs = [y0, drag.k, r]

    def grads(method, options, **tols):
        t_ev, sol = odeint_event(drag, y0, scalar(0.0), event_fn=lambda t, y: y[0] - r,
                                 method=method, options=options, **tols)
        return torch.cat([g.reshape(-1) for g in
                          torch.autograd.grad(t_ev + sol[-1, 1], inputs)])

    reference = grads("dopri8", None, rtol=1e-12, atol=1e-12)
    err = num((grads(method, options, rtol=1e-9, atol=1e-9) - reference).abs().max())
    assert err < tol


def test_reference_gradient_vs_fd():
    drag = Drag()
    y0 = torch.tensor([3.0, 0.5], dtype=F64, requires_grad=True)
    r = scalar(0.4, True)

    def loss():
        t_ev, sol = odeint_event(drag, y0, scalar(0.0), event_fn=lambda t, y: y[0] - r,
                                 method="dopri8", rtol=1e-12, atol=1e-12)
        return t_ev + sol[-1, 1]

    check_against_fd(loss, {"y0": y0, "k": drag.k, "r": r})


# --------------------------------------------------------------------------- bouncing ball


class BouncingBall(nn.Module):
    """torchdiffeq's examples/bouncing_ball.py, restated: state (pos, vel, log_radius), the
    event ``pos = exp(log_radius)`` (log_radius is in the state and a parameter), and
    after each bounce the ball restarts just above the floor with its velocity reversed
    and damped by ``absorption``."""

    def __init__(self, interface=odeint, radius=0.2, gravity=9.8):
        super().__init__()
        p = lambda x: nn.Parameter(torch.tensor([x], dtype=F64))  # noqa: E731
        self.gravity, self.log_radius = p(gravity), p(math.log(radius))
        self.t0, self.init_pos, self.init_vel, self.absorption = p(0.0), p(10.0), p(0.0), p(0.2)
        self.interface = interface

    def forward(self, t, state):
        _, vel, log_radius = state
        return vel, -self.gravity, torch.zeros_like(log_radius)

    def event_fn(self, t, state):
        return state[0] - torch.exp(state[2])

    def bounce_times(self, n: int) -> list[torch.Tensor]:
        t0, state = self.t0, (self.init_pos, self.init_vel, self.log_radius)
        times = []
        for _ in range(n):
            t0, solution = odeint_event(self, state, t0, event_fn=self.event_fn,
                                        odeint_interface=self.interface, rtol=1e-8, atol=1e-8)
            times.append(t0)
            pos, vel, log_radius = (s[-1] for s in solution)
            state = (pos + 1e-7, -vel * (1 - self.absorption), log_radius)
        return times


def bounce_closed_form(n: int, h0=10.0, v0=0.0, g=9.8, radius=0.2, absorption=0.2, t0=0.0,
                       nudge=1e-7) -> float:
    t, h, v = t0, h0, v0
    for _ in range(n):
        t = fall_time(h, v, g, radius, t)
        v_hit = -math.sqrt(v * v + 2 * g * (h - radius))
        h, v = radius + nudge, -v_hit * (1 - absorption)
    return t


@pytest.mark.parametrize("iface", list(INTERFACES))
def test_bouncing_ball_gradcheck(iface):
    """The example's own check (central differences with eps = 1e-3, |error| < 1e-4 for
    every parameter) for the time of the third bounce, plus a tighter one."""
    system = BouncingBall(INTERFACES[iface])
    names = ["init_pos", "init_vel", "t0", "gravity", "log_radius", "absorption"]
    last = system.bounce_times(3)[-1]
    assert abs(num(last) - bounce_closed_form(3)) < 1e-7
    last.backward()
    with torch.no_grad():
        for name in names:
            p = getattr(system, name)
            fd = central_difference(lambda: system.bounce_times(3)[-1], p, 1e-3)
            assert num((p.grad - fd).abs().max()) < 1e-4, name  # the example's criterion
            fd = central_difference(lambda: system.bounce_times(3)[-1], p, 1e-5)
            assert num((p.grad - fd).abs().max()) < 1e-5 * max(1.0, num(fd.abs())), name


def test_bouncing_ball_gradient_matches_closed_form():
    system = BouncingBall()
    last = system.bounce_times(3)[-1]
    last.backward()
    eps = 1e-6
    for name, kw in [("init_pos", "h0"), ("gravity", "g"), ("absorption", "absorption")]:
        base = {"h0": 10.0, "g": 9.8, "absorption": 0.2}
        plus = bounce_closed_form(3, **{**base, kw: base[kw] + eps})
        minus = bounce_closed_form(3, **{**base, kw: base[kw] - eps})
        assert abs(num(getattr(system, name).grad) - (plus - minus) / (2 * eps)) < 1e-6, name


# --------------------------------------------------------------------------- bad input


def ball_y0():
    return torch.tensor([10.0, 0.0], dtype=F64)


def test_event_fn_returns_non_tensor():
    with pytest.raises(ValueError, match="event_fn must return a tensor"):
        odeint_event(Ball(), ball_y0(), scalar(0.0), event_fn=lambda t, y: num(y[0]))
    with pytest.raises(ValueError, match="event_fn must be callable"):
        odeint_event(Ball(), ball_y0(), scalar(0.0), event_fn=3.0)


def test_event_fn_wrong_shape_per_sample():
    y0 = batch_y0()
    with pytest.raises(ValueError, match=r"event_fn\(t, y\) must return shape \[B\]"):
        odeint_event(Ball(), y0, scalar(0.0), event_fn=lambda t, y: y[:, 0].sum(),
                     event_per_sample=True)
    with pytest.raises(ValueError, match=r"event_fn\(t, y\) must return shape \[B\]"):
        odeint_event(Ball(), y0, scalar(0.0), event_fn=lambda t, y: y - 0.2,
                     event_per_sample=True)
    with pytest.raises(ValueError, match="per-sample events, the state must be one tensor"):
        odeint_event(TupleBall(), (y0[:, 0], y0[:, 1]), scalar(0.0),
                     event_fn=lambda t, s: s[0] - 0.2, event_per_sample=True)


def test_event_fn_shape_changes():
    def event_fn(t, y):
        return (y[0] - 0.2).reshape(1) if num(t) == 0.0 else torch.stack([y[0], y[0]])

    with pytest.raises(ValueError, match="event_fn's output changed shape"):
        odeint_event(Ball(), ball_y0(), scalar(0.0), event_fn=event_fn)


def test_event_fn_zero_at_t0():
    with pytest.raises(ValueError, match="event_fn is already 0 at t0"):
        odeint_event(Ball(), ball_y0(), scalar(0.0), event_fn=lambda t, y: y[0] - 10.0)


@pytest.mark.parametrize(("method", "options"), [("dopri5", {"max_num_steps": 50}),
                                                 ("rk4", {"step_size": 0.1,
                                                          "max_num_steps": 50})])
def test_event_never_fires(method, options):
    """y' = -y never reaches -1: the step budget runs out with a message that says so
    (the fixed-step loop is bounded by max_num_steps too)."""
    with pytest.raises(MaxStepsExceededError, match="the event never fired") as info:
        odeint_event(linear(-1.0), torch.tensor([1.0], dtype=F64), scalar(0.0),
                     event_fn=lambda t, y: y[0] + 1.0, method=method, options=options)
    assert "max_num_steps=50" in str(info.value)


def test_event_never_fires_per_sample_names_samples():
    y0 = torch.tensor([[1.0], [-3.0], [2.0]], dtype=F64)
    with pytest.raises(MaxStepsExceededError,
                       match=r"never fired for 2 of 3 samples \(samples 0, 2\)"):
        odeint_event(linear(-1.0), y0, scalar(0.0), event_fn=lambda t, y: y[:, 0] + 1.0,
                     event_per_sample=True, options={"max_num_steps": 50})


def test_event_needs_two_times():
    ev = lambda t, y: y[0] - 0.2  # noqa: E731
    for t in ([0.0], [0.0, 1.0, 2.0]):
        with pytest.raises(ValueError, match="with event_fn, t must hold 2 times"):
            odeint(Ball(), ball_y0(), torch.tensor(t, dtype=F64), event_fn=ev)


def test_fixed_method_needs_step_size():
    for options in (None, {"num_steps": 10}):
        with pytest.raises(ValueError, match=r"needs options\['step_size'\]"):
            odeint_event(Ball(), ball_y0(), scalar(0.0), event_fn=lambda t, y: y[0] - 0.2,
                         method="rk4", options=options)


class ExternalSolver:
    """A method that integrates by itself (like scipy_solver): it cannot locate events."""

    name = "external_test"
    external = True
    adaptive = True
    complex_states = False

    def integrate(self, f, y0, t, rtol, atol, stats):  # pragma: no cover - never reached
        raise AssertionError


def test_external_methods_refused():
    ev = lambda t, y: y[0] - 0.2  # noqa: E731
    with pytest.raises(ValueError, match="cannot locate events"):
        odeint_event(Ball(), ball_y0(), scalar(0.0), event_fn=ev, method=ExternalSolver())
    if "scipy_solver" in hyperode.METHODS:
        with pytest.raises(ValueError, match="cannot locate events"):
            odeint_event(Ball(), ball_y0(), scalar(0.0), event_fn=ev, method="scipy_solver")


def test_odeint_event_bad_arguments():
    ev = lambda t, y: y[0] - 0.2  # noqa: E731
    with pytest.raises(ValueError, match="t0 must be a tensor with one element"):
        odeint_event(Ball(), ball_y0(), torch.zeros(2, dtype=F64), event_fn=ev)
    with pytest.raises(ValueError, match=r"works through hyperode\.odeint only"):
        odeint_event(Ball(), batch_y0(), scalar(0.0), event_fn=lambda t, y: y[:, 0] - 0.2,
                     event_per_sample=True, odeint_interface=odeint_adjoint)
    with pytest.raises(ValueError, match="y0 is complex"):
        odeint_event(lambda t, y: -y, torch.ones(1, dtype=torch.complex128), scalar(0.0),
                     event_fn=lambda t, y: y.real - 0.5)


def test_no_grad_and_python_t0():
    """Under no_grad nothing is attached; a float t0 is accepted."""
    with torch.no_grad():
        t_ev, sol = odeint_event(Ball(), ball_y0(), 0.0, event_fn=lambda t, y: y[0] - 0.2)
    assert not t_ev.requires_grad and not sol.requires_grad
    assert abs(num(t_ev) - fall_time(10.0, 0.0, 9.8, 0.2)) < 1e-6


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "bosh3"])
def test_event_function_that_jumps_to_zero_fires_at_the_jump(method):
    """torchdiffeq's learn_physics example stops at a final time T with an event function
    that is positive before T and exactly 0 after it: the event is at T, not at the end of
    the step that first sees the zero."""
    T = 0.7371

    def event_fn(t, y):
        return torch.zeros_like(t) if t > T else torch.ones_like(t)

    y0 = torch.tensor([1.0], dtype=torch.float64)
    event_t, sol = hyperode.odeint(lambda t, y: -y, y0, torch.tensor([0.0, 1.0],
                                   dtype=torch.float64), event_fn=event_fn, method=method)
    assert float(event_t) == pytest.approx(T, abs=1e-12)
    assert float(sol[-1]) == pytest.approx(math.exp(-T), rel=1e-6)
