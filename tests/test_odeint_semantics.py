"""Semantics of ``hyperode.odeint`` / ``hyperode.solve``: shapes, dtypes, direction,
tolerances, norms, fixed grids, recorded steps, landing/jump times, NFE accounting,
step-size limits and controllers."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

import hyperode
from hyperode import IController, PIController, rms_norm

F64 = torch.float64
F32 = torch.float32


def decay(t, y):
    """y' = -k y with a per-element rate k = 0.5 + (index mod 3) / 2."""
    k = 0.5 + (torch.arange(y.numel(), dtype=y.dtype).reshape(y.shape) % 3) / 2
    return -k * y


def decay_exact(y0, t):
    k = 0.5 + (torch.arange(y0.numel(), dtype=y0.dtype).reshape(y0.shape) % 3) / 2
    return torch.stack([y0 * torch.exp(-k * ti) for ti in t])


def oscillator(t, y):
    """Harmonic oscillator y = (x, v): x' = v, v' = -x."""
    return torch.stack([y[1], -y[0]])


def oscillator_exact(t):
    t = torch.as_tensor(t, dtype=F64)
    return torch.stack([torch.cos(t), -torch.sin(t)], dim=-1)


def tuple_field(t, state):
    """A slow decay (member 0) and a fast oscillator (member 1)."""
    a, b = state
    return -0.5 * a, torch.stack([10 * b[1], -10 * b[0]])


TUPLE_Y0 = (torch.ones(2, dtype=F64), torch.tensor([1.0, 0.0], dtype=F64))

SOLVERS = [
    pytest.param("dopri5", {}, id="dopri5"),
    pytest.param("tsit5", {}, id="tsit5"),
    pytest.param("bosh3", {}, id="bosh3"),
    pytest.param("rk4", dict(step_size=0.01), id="rk4"),
    pytest.param("dopri5", dict(num_steps=50), id="dopri5-fixed"),
]


def _accepted_sizes(stats, t0):
    ts = [t0, *stats.accepted_ts]
    return np.abs(np.diff(ts))


# --------------------------------------------------------------------- shapes


@pytest.mark.parametrize("shape", [(3,), (4, 3), (2, 3, 4, 5)], ids=["d", "Bd", "BCHW"])
@pytest.mark.parametrize(("method", "opts"), SOLVERS)
def test_tensor_state_shapes_and_values(shape, method, opts):
    y0 = torch.linspace(-1, 2, math.prod(shape), dtype=F64).reshape(shape)
    t = torch.tensor([0.0, 0.3, 1.1, 2.0], dtype=F64)
    ys = hyperode.odeint(decay, y0, t, rtol=1e-8, atol=1e-10, method=method,
                         options=opts or None)
    assert ys.shape == (4, *shape)
    assert ys.dtype == F64
    torch.testing.assert_close(ys, decay_exact(y0, t), rtol=1e-6, atol=1e-7)


def _check_tuple_solve(third, method, opts):
    y0 = (torch.ones(2, 3, dtype=F64), torch.tensor([1.0, 0.0], dtype=F64), third)

    def f(t, s):
        a, b, c = s
        assert c.shape == third.shape
        return -a, torch.stack([b[1], -b[0]]), -2 * c

    t = torch.tensor([0.0, 0.5, 1.5], dtype=F64)
    out = hyperode.odeint(f, y0, t, rtol=1e-8, atol=1e-10, method=method, options=opts or None)
    assert isinstance(out, tuple) and len(out) == 3
    assert out[0].shape == (3, 2, 3) and out[1].shape == (3, 2)
    assert out[2].shape == (3, *third.shape)
    torch.testing.assert_close(out[0], torch.exp(-t)[:, None, None].expand(3, 2, 3),
                               rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(out[1], oscillator_exact(t), rtol=1e-6, atol=1e-7)
    exact = third * torch.exp(-2 * t).reshape(3, *([1] * third.ndim))
    torch.testing.assert_close(out[2], exact, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(("method", "opts"), SOLVERS)
def test_tuple_state_shapes_and_values(method, opts):
    _check_tuple_solve(torch.tensor([2.0, -1.0], dtype=F64).reshape(2, 1, 1), method, opts)


@pytest.mark.parametrize(("method", "opts"), [SOLVERS[0], SOLVERS[3]])
def test_tuple_state_with_0dim_member(method, opts):
    _check_tuple_solve(torch.tensor(2.0, dtype=F64), method, opts)


@pytest.mark.parametrize(("method", "opts"), [SOLVERS[0], SOLVERS[3]])
def test_0dim_tensor_state(method, opts):
    y0 = torch.tensor(2.0, dtype=F64)
    t = torch.tensor([0.0, 0.5, 1.5], dtype=F64)
    ys = hyperode.odeint(lambda t, y: -2 * y, y0, t, rtol=1e-8, atol=1e-10, method=method,
                         options=opts)
    assert ys.shape == (3,)
    torch.testing.assert_close(ys, 2 * torch.exp(-2 * t), rtol=1e-6, atol=1e-7)


def test_solve_returns_solution_consistent_with_odeint():
    t = torch.tensor([0.0, 1.0, 2.0], dtype=F64)
    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    sol = hyperode.solve(oscillator, y0, t)
    assert isinstance(sol, hyperode.Solution)
    assert sol.ts is t
    torch.testing.assert_close(sol.ys, hyperode.odeint(oscillator, y0, t), rtol=0, atol=0)
    st = sol.stats
    assert st.steps == st.accepted + st.rejected and st.accepted > 0 and st.nfe > 0
    assert st.accepted_ts is None and st.rejected_ts is None
    d = st.as_dict()
    assert d["nfe"] == st.nfe and d["steps"] == st.steps


def test_t_as_python_list_is_accepted():
    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    a = hyperode.odeint(oscillator, y0, [0.0, 1.0, 2.0])
    b = hyperode.odeint(oscillator, y0, torch.tensor([0.0, 1.0, 2.0], dtype=F64))
    torch.testing.assert_close(a, b, rtol=0, atol=0)


# --------------------------------------------------------------------- direction


@pytest.mark.parametrize(("method", "opts", "tol"), [
    ("dopri5", None, 1e-8),
    ("tsit5", None, 1e-8),
    ("rk4", dict(step_size=0.01), 1e-8),
])
def test_decreasing_t_reverses_forward_solution(method, opts, tol):
    t_fwd = torch.linspace(0, 5, 11, dtype=F64)
    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    kw = dict(rtol=1e-10, atol=1e-12, method=method, options=opts)
    fwd = hyperode.odeint(oscillator, y0, t_fwd, **kw)
    bwd = hyperode.odeint(oscillator, fwd[-1], t_fwd.flip(0), **kw)
    assert bwd.shape == fwd.shape
    torch.testing.assert_close(bwd, fwd.flip(0), rtol=0, atol=tol)
    torch.testing.assert_close(fwd, oscillator_exact(t_fwd), rtol=0, atol=tol)
    # Backward from the exact state matches the exact solution too.
    y5 = oscillator_exact(5.0)
    bwd_exact = hyperode.odeint(oscillator, y5, t_fwd.flip(0), **kw)
    torch.testing.assert_close(bwd_exact, oscillator_exact(t_fwd.flip(0)), rtol=0, atol=tol)


def test_decreasing_t_negative_times():
    t = torch.tensor([0.0, -0.5, -2.0], dtype=F64)
    y0 = torch.tensor([1.0, 2.0], dtype=F64)
    ys = hyperode.odeint(lambda t, y: -y, y0, t, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ys, y0 * torch.exp(-t)[:, None], rtol=1e-8, atol=0)


# --------------------------------------------------------------------- single time


@pytest.mark.parametrize(("method", "opts"), [
    ("dopri5", None), ("rk4", dict(step_size=0.1)), ("euler", dict(num_steps=4)),
    ("rk4", dict(grid_points=[-1.0, 0.0, 1.0])),
])
def test_single_output_time_returns_y0(method, opts):
    y0 = torch.tensor([[1.5, -2.0], [0.25, 3.0]], dtype=F64)
    sol = hyperode.solve(decay, y0, torch.tensor([0.7], dtype=F64), method=method,
                         options=opts)
    assert sol.ys.shape == (1, 2, 2)
    torch.testing.assert_close(sol.ys[0], y0, rtol=0, atol=0)
    assert sol.stats.steps == 0


def test_single_output_time_tuple_state():
    out = hyperode.odeint(tuple_field, TUPLE_Y0, [1.0])
    assert isinstance(out, tuple) and len(out) == 2
    for o, y in zip(out, TUPLE_Y0):
        assert o.shape == (1, *y.shape)
        torch.testing.assert_close(o[0], y, rtol=0, atol=0)


@pytest.mark.parametrize("t_grad", [False, True])
def test_output_at_t0_is_exactly_y0(t_grad):
    y0 = torch.tensor([0.3, -0.7], dtype=F64)
    t = torch.tensor([0.5, 1.0, 2.0], dtype=F64, requires_grad=t_grad)
    ys = hyperode.odeint(oscillator, y0, t)
    torch.testing.assert_close(ys[0].detach(), y0, rtol=0, atol=0)


# --------------------------------------------------------------------- dtypes


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("t_dtype", [F32, F64, None], ids=["t32", "t64", "tlist"])
@pytest.mark.parametrize(("method", "opts"), [("dopri5", None), ("rk4", dict(step_size=0.1))])
def test_dtype_is_kept_and_f_sees_0dim_t_in_state_dtype(dtype, t_dtype, method, opts):
    seen = []

    def f(t, y):
        seen.append((type(t), t.shape, t.dtype, y.dtype))
        return -y

    times = [0.0, 0.5, 1.0]
    t = times if t_dtype is None else torch.tensor(times, dtype=t_dtype)
    y0 = torch.tensor([1.0, 2.0], dtype=dtype)
    rtol, atol = (1e-5, 1e-7) if dtype == F32 else (1e-9, 1e-11)
    ys = hyperode.odeint(f, y0, t, rtol=rtol, atol=atol, method=method, options=opts)
    assert ys.dtype == dtype
    assert seen
    assert all(s == (torch.Tensor, torch.Size([]), dtype, dtype) for s in seen)
    expected = y0.double() * torch.exp(-torch.tensor(times, dtype=F64))[:, None]
    tol = 1e-5 if dtype == F32 or method == "rk4" else 1e-8
    torch.testing.assert_close(ys.double(), expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [F32, F64])
def test_tuple_state_dtype_kept(dtype):
    y0 = tuple(m.to(dtype) for m in TUPLE_Y0)
    out = hyperode.odeint(tuple_field, y0, [0.0, 1.0], rtol=1e-5, atol=1e-7)
    assert all(o.dtype == dtype for o in out)


# --------------------------------------------------------------------- tolerances


def three_component(t, y):
    """Component 0: slow decay; components 1, 2: a fast oscillator (omega = 10)."""
    return torch.stack([-0.5 * y[0], 10 * y[2], -10 * y[1]])


THREE_Y0 = torch.tensor([1.0, 1.0, 0.0], dtype=F64)
THREE_EXACT = torch.tensor([math.exp(-1.5), math.cos(30.0), -math.sin(30.0)], dtype=F64)


def test_per_element_atol_tensor():
    tight = torch.full((3,), 1e-9, dtype=F64)
    loose_fast = torch.tensor([1e-9, 1e-3, 1e-3], dtype=F64)
    loose_slow = torch.tensor([1e-3, 1e-9, 1e-9], dtype=F64)
    runs = {}
    for name, atol in [("tight", tight), ("loose_fast", loose_fast), ("loose_slow", loose_slow)]:
        runs[name] = hyperode.solve(three_component, THREE_Y0, [0.0, 3.0], rtol=1e-9, atol=atol)
    # Loosening the components that limit the step size makes the solve much cheaper...
    assert runs["loose_fast"].stats.steps < runs["tight"].stats.steps / 3
    # ... but loosening one that doesn't limit it changes little.
    assert runs["loose_slow"].stats.steps >= 0.9 * runs["tight"].stats.steps
    err_tight = (runs["tight"].ys[-1] - THREE_EXACT).abs()
    err_loose = (runs["loose_fast"].ys[-1] - THREE_EXACT).abs()
    assert err_tight.max() < 1e-6
    assert err_loose[1:].max() > 10 * err_tight[1:].max()  # the loose components are worse


def test_per_element_rtol_tensor_broadcast_and_float_equivalence():
    y0 = torch.tensor([[1.0, 1.0, 0.0], [2.0, 1.0, 0.0]], dtype=F64)

    def f(t, y):
        return torch.stack([-0.5 * y[:, 0], 10 * y[:, 2], -10 * y[:, 1]], dim=1)

    a = hyperode.solve(f, y0, [0.0, 3.0], rtol=1e-7, atol=1e-9)
    # A [3] tensor broadcasts over the batch; a constant tensor equals the float.
    b = hyperode.solve(f, y0, [0.0, 3.0], rtol=torch.full((3,), 1e-7, dtype=F64), atol=1e-9)
    c = hyperode.solve(f, y0, [0.0, 3.0], rtol=torch.tensor(1e-7), atol=torch.tensor(1e-9))
    assert a.stats.as_dict() == b.stats.as_dict() == c.stats.as_dict()
    torch.testing.assert_close(a.ys, b.ys, rtol=1e-14, atol=1e-15)
    loose = hyperode.solve(f, y0, [0.0, 3.0], rtol=torch.tensor([1e-7, 1e-2, 1e-2]), atol=1e-9)
    assert loose.stats.steps < a.stats.steps / 2


def test_tuple_state_rtol_as_tuple():
    kw = dict(atol=1e-12)
    base = hyperode.solve(tuple_field, TUPLE_Y0, [0.0, 3.0], rtol=1e-8, **kw)
    same = hyperode.solve(tuple_field, TUPLE_Y0, [0.0, 3.0], rtol=(1e-8, 1e-8), **kw)
    assert same.stats.as_dict() == base.stats.as_dict()
    # Loosening the fast (step-limiting) member makes the solve cheaper ...
    loose_fast = hyperode.solve(tuple_field, TUPLE_Y0, [0.0, 3.0], rtol=(1e-8, 1e-3), **kw)
    assert loose_fast.stats.steps < base.stats.steps / 3
    # ... loosening the slow one changes nothing much.
    loose_slow = hyperode.solve(tuple_field, TUPLE_Y0, [0.0, 3.0], rtol=(1e-3, 1e-8), **kw)
    assert loose_slow.stats.steps >= 0.9 * base.stats.steps
    # Tensors per member are accepted too.
    tens = hyperode.solve(tuple_field, TUPLE_Y0, [0.0, 3.0],
                          rtol=(torch.tensor([1e-8, 1e-8]), 1e-3), **kw)
    assert tens.stats.as_dict() == loose_fast.stats.as_dict()


def test_tuple_default_norm_is_max_of_member_rms():
    kw = dict(rtol=1e-8, atol=1e-12)
    base = hyperode.solve(tuple_field, TUPLE_Y0, [0.0, 3.0], **kw)
    seen_types = []

    def max_rms(x):
        seen_types.append(type(x))
        return torch.stack([rms_norm(m) for m in x]).max()

    custom = hyperode.solve(tuple_field, TUPLE_Y0, [0.0, 3.0], options=dict(norm=max_rms), **kw)
    assert all(tp is tuple for tp in seen_types) and seen_types
    assert custom.stats.as_dict() == base.stats.as_dict()
    for a, b in zip(custom.ys, base.ys):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # The public mixed_norm is the same thing.
    mixed = hyperode.solve(tuple_field, TUPLE_Y0, [0.0, 3.0],
                           options=dict(norm=hyperode.mixed_norm), **kw)
    assert mixed.stats.as_dict() == base.stats.as_dict()
    # Not the RMS over all elements together ...
    def flat_rms(x):
        return rms_norm(torch.cat([m.flatten() for m in x]))

    flat = hyperode.solve(tuple_field, TUPLE_Y0, [0.0, 3.0], options=dict(norm=flat_rms), **kw)
    assert flat.stats.as_dict() != base.stats.as_dict()
    # ... and a norm that ignores the fast member takes far fewer steps.
    ignore = hyperode.solve(tuple_field, TUPLE_Y0, [0.0, 3.0],
                            options=dict(norm=lambda x: rms_norm(x[0])), **kw)
    assert ignore.stats.steps < base.stats.steps / 3


@pytest.mark.parametrize("norm", [hyperode.max_norm, rms_norm])
def test_custom_norm_on_tensor_state(norm):
    kw = dict(rtol=1e-8, atol=1e-12)
    a = hyperode.solve(three_component, THREE_Y0, [0.0, 3.0], options=dict(norm=norm), **kw)
    torch.testing.assert_close(a.ys[-1], THREE_EXACT, rtol=0, atol=1e-6)
    default = hyperode.solve(three_component, THREE_Y0, [0.0, 3.0], **kw)
    if norm is rms_norm:
        assert a.stats.as_dict() == default.stats.as_dict()
    else:  # max >= rms: at least as many steps
        assert a.stats.steps >= default.stats.steps


# --------------------------------------------------------------------- fixed grids


@pytest.mark.parametrize("method", ["rk4", "euler", "midpoint", "dopri5"])
def test_fixed_step_lands_on_output_times(method):
    calls = []

    def f(t, y):
        calls.append(float(t))
        return torch.cos(t) * y + 0.1 * t

    y0 = torch.tensor([1.0, -0.5], dtype=F64)
    t = torch.tensor([0.0, 0.45, 1.0], dtype=F64)
    ys = hyperode.odeint(f, y0, t, method=method, options=dict(step_size=0.3))
    tableau = hyperode.get_method(method)
    s = tableau.stages
    # The grid is t0 + k * step_size (so 0.3 * 3 = 0.8999999999999999) plus the outputs.
    expected_grid = [0.0, 0.3, 0.45, 0.3 * 2, 0.3 * 3, 1.0]
    n_steps = len(expected_grid) - 1
    # Every step starts with f(t_j, y_j) (FSAL reuses the last stage, which is at t_j too).
    step_evals = s - 1 if tableau.fsal else s
    assert len(calls) == step_evals * n_steps + (1 if tableau.fsal else 0)
    starts = calls[::s] if not tableau.fsal else [calls[0], *calls[s - 1::s - 1]][:n_steps]
    np.testing.assert_allclose(starts, expected_grid[:-1], rtol=0, atol=1e-15)
    assert 0.45 in calls  # exactly, not only approximately
    ref = hyperode.odeint(f, y0, t, method=method, options=dict(grid_points=expected_grid))
    torch.testing.assert_close(ys, ref, rtol=0, atol=0)


def test_fixed_step_output_times_with_record_steps():
    t = [0.0, 0.45, 1.0]
    sol = hyperode.solve(decay, torch.ones(2, dtype=F64), t, method="rk4",
                         options=dict(step_size=0.3, record_steps=True))
    assert sol.stats.accepted_ts == [0.3, 0.45, 0.3 * 2, 0.3 * 3, 1.0]
    assert sol.stats.rejected_ts == [] and sol.stats.rejected == 0
    assert sol.stats.accepted == 5


@pytest.mark.parametrize("n", [1, 3, 10])
def test_num_steps_euler_exact_recursion_and_nfe(n):
    lam = -0.7
    sol = hyperode.solve(lambda t, y: lam * y, torch.tensor([2.0], dtype=F64), [0.0, 1.5],
                         method="euler", options=dict(num_steps=n))
    assert sol.stats.nfe == n
    assert sol.stats.accepted == n and sol.stats.rejected == 0
    expected = 2.0 * (1 + lam * 1.5 / n) ** n
    assert sol.ys[-1].item() == pytest.approx(expected, rel=1e-13)


@pytest.mark.parametrize("method", ["rk4", "heun3", "midpoint", "euler"])
def test_num_steps_nfe_is_stages_times_steps(method):
    sol = hyperode.solve(decay, torch.ones(3, dtype=F64), [0.0, 0.6, 2.0], method=method,
                         options=dict(num_steps=8))
    # The output time 0.6 is merged into the 8-step grid (0.25 apart) as an extra point.
    steps = 9
    assert sol.stats.accepted == steps
    assert sol.stats.nfe == hyperode.get_method(method).stages * steps


def test_num_steps_equals_step_size():
    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    a = hyperode.odeint(oscillator, y0, [0.0, 2.0], method="rk4", options=dict(num_steps=20))
    b = hyperode.odeint(oscillator, y0, [0.0, 2.0], method="rk4", options=dict(step_size=0.1))
    torch.testing.assert_close(a, b, rtol=0, atol=1e-14)


def test_grid_points_nonuniform_euler_exact_product():
    lam = -1.3
    grid = [-0.5, 0.0, 0.1, 0.35, 0.5, 0.9, 1.0, 1.7]  # extends past t on both sides
    t = [0.0, 0.5, 1.0]
    sol = hyperode.solve(lambda t, y: lam * y, torch.tensor([1.0], dtype=F64), t,
                         method="euler", options=dict(grid_points=grid, record_steps=True))
    inner = [0.0, 0.1, 0.35, 0.5, 0.9, 1.0]
    np.testing.assert_allclose(sol.stats.accepted_ts, inner[1:], rtol=0, atol=0)
    expected = [1.0]
    y = 1.0
    for a, b in itertools.pairwise(inner):
        y *= 1 + lam * (b - a)
        if b in t:
            expected.append(y)
    np.testing.assert_allclose(sol.ys[:, 0].numpy(), expected, rtol=1e-14)


def test_grid_points_decreasing():
    grid = [1.0, 0.6, 0.25, 0.0]
    sol = hyperode.solve(lambda t, y: -y, torch.tensor([1.0], dtype=F64), [1.0, 0.0],
                         method="euler", options=dict(grid_points=grid))
    y = 1.0
    for a, b in itertools.pairwise(grid):
        y *= 1 - (b - a)
    assert sol.ys[-1].item() == pytest.approx(y, rel=1e-14)


@pytest.mark.parametrize(("method", "order"), [("rk4", 4), ("midpoint", 2), ("euler", 1)])
def test_fixed_step_converges_at_its_order(method, order):
    errs = []
    for h in (0.1, 0.05):
        ys = hyperode.odeint(oscillator, torch.tensor([1.0, 0.0], dtype=F64), [0.0, 2.0],
                             method=method, options=dict(step_size=h))
        errs.append((ys[-1] - oscillator_exact(2.0)).norm().item())
    assert math.log2(errs[0] / errs[1]) == pytest.approx(order, abs=0.3)


# --------------------------------------------------------------------- recorded steps


@pytest.mark.parametrize(("method", "rtol"), [
    ("dopri5", 1e-7), ("tsit5", 1e-7), ("bosh3", 1e-6), ("adaptive_heun", 1e-4),
    ("fehlberg2", 1e-4),
])
@pytest.mark.parametrize("direction", [1.0, -1.0])
def test_record_steps_consistent_with_counts(method, rtol, direction):
    t = [0.0, direction * 1.0, direction * 4.0]
    sol = hyperode.solve(three_component, THREE_Y0, t, rtol=rtol, atol=rtol * 1e-2,
                         method=method, options=dict(record_steps=True))
    st = sol.stats
    assert len(st.accepted_ts) == st.accepted
    assert len(st.rejected_ts) == st.rejected
    assert st.accepted_ts[-1] == t[-1]
    diffs = np.diff([t[0], *st.accepted_ts]) * direction
    assert (diffs > 0).all()
    # A rejected attempt starts where the last accepted step ended.
    starts = {t[0], *st.accepted_ts}
    assert all(r in starts for r in st.rejected_ts)
    if method in ("dopri5", "tsit5"):
        assert st.rejected > 0, "the problem should provoke some rejections"


def test_record_steps_off_by_default():
    st = hyperode.solve(oscillator, torch.tensor([1.0, 0.0], dtype=F64), [0.0, 1.0]).stats
    assert st.accepted_ts is None and st.rejected_ts is None
    assert "accepted_ts" not in st.as_dict()


def _bump(t, y):
    """y = exp(-50 (t - 1)^2): a sharp feature at t = 1, flat elsewhere."""
    return -100 * (t - 1) * torch.exp(-50 * (t - 1) ** 2) * torch.ones_like(y)


def test_adaptive_step_sizes_track_the_problem():
    """Steps are short where the solution changes fast and long where it is flat."""
    sol = hyperode.solve(_bump, torch.full((1,), math.exp(-50.0), dtype=F64), [0.0, 3.0],
                         rtol=1e-8, atol=1e-10, options=dict(record_steps=True))
    ends = np.array(sol.stats.accepted_ts)
    sizes = _accepted_sizes(sol.stats, 0.0)
    near = sizes[np.abs(ends - 1.0) < 0.2]
    far = sizes[ends > 2.0]
    assert near.max() < far.max() / 5
    assert sol.ys[-1].item() == pytest.approx(math.exp(-200.0), abs=1e-8)


# --------------------------------------------------------------------- step_t / jump_t


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "bosh3"])
def test_step_t_is_landed_on(method):
    step_t = [0.123456789, 1.5, 2.718281828, 9.0, -1.0]  # the last two are outside the span
    sol = hyperode.solve(oscillator, torch.tensor([1.0, 0.0], dtype=F64), [0.0, 1.0, 3.0],
                         method=method, options=dict(step_t=step_t, record_steps=True))
    acc = sol.stats.accepted_ts
    for s in step_t[:3]:
        assert s in acc
    assert 9.0 not in acc and -1.0 not in acc
    torch.testing.assert_close(sol.ys, oscillator_exact([0.0, 1.0, 3.0]), rtol=0, atol=1e-6)


def test_step_t_decreasing_direction():
    sol = hyperode.solve(oscillator, oscillator_exact(3.0), [3.0, 0.0],
                         options=dict(step_t=[0.5, 2.25], record_steps=True))
    assert 0.5 in sol.stats.accepted_ts and 2.25 in sol.stats.accepted_ts
    torch.testing.assert_close(sol.ys[-1], oscillator_exact(0.0), rtol=0, atol=1e-6)


def _step_right_cont(t, y):  # f = 0 for t < 1, 1 for t >= 1
    return torch.ones_like(y) * (t >= 1).to(y.dtype)


def _step_left_cont(t, y):  # f = 0 for t <= 1, 1 for t > 1
    return torch.ones_like(y) * (t > 1).to(y.dtype)


@pytest.mark.parametrize("f", [_step_right_cont, _step_left_cont], ids=["t>=1", "t>1"])
def test_jump_t_discontinuous_field(f):
    y0 = torch.zeros(1, dtype=F64)
    t = [0.0, 0.5, 2.0]
    kw = dict(rtol=1e-6, atol=1e-8)
    without = hyperode.solve(f, y0, t, **kw)
    with_jump = hyperode.solve(f, y0, t, options=dict(jump_t=[1.0], record_steps=True), **kw)
    assert 1.0 in with_jump.stats.accepted_ts
    assert with_jump.ys[1].item() == pytest.approx(0.0, abs=1e-12)
    assert with_jump.ys[2].item() == pytest.approx(1.0, abs=1e-7)
    assert with_jump.stats.rejected < without.stats.rejected
    if f is _step_left_cont:
        assert with_jump.stats.rejected == 0
        assert with_jump.ys[2].item() == pytest.approx(1.0, abs=1e-12)


def test_jump_t_right_continuous_field_same_as_left_continuous():
    """The two fields differ only at the single point t=1, so with jump_t=[1] a solver
    that keeps every stage of the step ending at the jump on the near side sees the same
    function and must take exactly the same steps."""
    y0 = torch.zeros(1, dtype=F64)
    kw = dict(rtol=1e-6, atol=1e-8, options=dict(jump_t=[1.0]))
    right = hyperode.solve(_step_right_cont, y0, [0.0, 2.0], **kw)
    left = hyperode.solve(_step_left_cont, y0, [0.0, 2.0], **kw)
    assert right.stats.rejected == left.stats.rejected == 0


def test_jump_t_reevaluates_f_after_the_jump():
    """After a jump the FSAL stage (evaluated at the jump, on the near side) is not reused."""
    y0 = torch.zeros(1, dtype=F64)
    a = hyperode.solve(_step_left_cont, y0, [0.0, 2.0], options=dict(jump_t=[1.0]))
    b = hyperode.solve(_step_left_cont, y0, [0.0, 2.0], options=dict(step_t=[1.0]))
    assert a.stats.nfe == 6 * a.stats.steps + 2 + 1
    assert b.stats.nfe == 6 * b.stats.steps + 2
    assert a.ys[-1].item() == pytest.approx(1.0, abs=1e-12)


# --------------------------------------------------------------------- NFE accounting


@pytest.mark.parametrize(("method", "new_per_step"), [("dopri5", 6), ("tsit5", 6), ("bosh3", 3)])
@pytest.mark.parametrize("case", ["oscillator", "three", "three-backward", "many-outputs"])
def test_nfe_fsal_methods(method, new_per_step, case):
    if case == "oscillator":
        f, y0, t = oscillator, torch.tensor([1.0, 0.0], dtype=F64), [0.0, 10.0]
    elif case == "three":
        f, y0, t = three_component, THREE_Y0, [0.0, 4.0]
    elif case == "three-backward":
        f, y0, t = three_component, THREE_Y0, [0.0, -4.0]
    else:
        f, y0, t = three_component, THREE_Y0, torch.linspace(0, 4, 41, dtype=F64)
    st = hyperode.solve(f, y0, t, rtol=1e-7, atol=1e-9, method=method).stats
    assert st.nfe == new_per_step * st.steps + 2


def test_nfe_counts_rejected_steps():
    st = hyperode.solve(three_component, THREE_Y0, [0.0, 4.0], rtol=1e-9, atol=1e-12).stats
    assert st.rejected > 0
    assert st.nfe == 6 * st.steps + 2


def test_nfe_with_first_step_skips_the_estimate():
    st = hyperode.solve(oscillator, torch.tensor([1.0, 0.0], dtype=F64), [0.0, 3.0],
                        options=dict(first_step=0.01)).stats
    assert st.nfe == 6 * st.steps + 1


def test_nfe_counts_user_calls():
    calls = [0]

    def f(t, y):
        calls[0] += 1
        return oscillator(t, y)

    for method, opts in [("dopri5", None), ("rk4", dict(step_size=0.1)), ("bosh3", None)]:
        calls[0] = 0
        st = hyperode.solve(f, torch.tensor([1.0, 0.0], dtype=F64), [0.0, 1.0, 2.0],
                            method=method, options=opts).stats
        assert st.nfe == calls[0] > 0


# --------------------------------------------------------------------- step-size limits


@pytest.mark.parametrize("max_step", [0.05, 0.3, 0.7])
@pytest.mark.parametrize("method", ["dopri5", "bosh3"])
def test_max_step_respected(max_step, method):
    t = [0.0, 0.33, 5.0]
    sol = hyperode.solve(lambda t, y: -0.1 * y, torch.ones(2, dtype=F64), t, rtol=1e-4,
                         atol=1e-6, method=method,
                         options=dict(max_step=max_step, record_steps=True))
    sizes = _accepted_sizes(sol.stats, 0.0)
    assert sizes.max() <= max_step * (1 + 1e-12)
    assert sizes.max() >= 0.9 * max_step  # the limit is active


def test_max_step_respected_on_landing_step():
    sol = hyperode.solve(lambda t, y: 0 * y, torch.ones(1, dtype=F64), [0.0, 0.1005],
                         options=dict(max_step=0.1, first_step=0.1, record_steps=True))
    sizes = _accepted_sizes(sol.stats, 0.0)
    assert sizes.max() <= 0.1


@pytest.mark.parametrize("first_step", [1e-3, 0.05, 0.25])
@pytest.mark.parametrize("direction", [1.0, -1.0])
def test_first_step_used(first_step, direction):
    sol = hyperode.solve(lambda t, y: -0.2 * y, torch.ones(1, dtype=F64), [0.0, direction * 2.0],
                         rtol=1e-6, atol=1e-8,
                         options=dict(first_step=first_step, record_steps=True))
    assert sol.stats.rejected == 0
    assert sol.stats.accepted_ts[0] == pytest.approx(direction * first_step, rel=1e-14)


def test_first_step_capped_by_max_step():
    sol = hyperode.solve(lambda t, y: -0.2 * y, torch.ones(1, dtype=F64), [0.0, 2.0],
                         options=dict(first_step=0.5, max_step=0.2, record_steps=True))
    assert sol.stats.accepted_ts[0] == pytest.approx(0.2, rel=1e-14)


def test_min_step_is_a_floor_not_an_error():
    """torchdiffeq's semantics: with min_step the solve completes (steps clamped to it and
    accepted), less accurately than the tolerance asks."""
    fine = hyperode.solve(three_component, THREE_Y0, [0.0, 3.0], rtol=1e-12, atol=1e-14)
    floored = hyperode.solve(three_component, THREE_Y0, [0.0, 3.0], rtol=1e-12, atol=1e-14,
                             options=dict(min_step=1e-1))
    assert floored.stats.accepted <= 31 < fine.stats.accepted
    assert bool(torch.isfinite(floored.ys).all())


def test_min_step_does_not_forbid_a_short_span():
    sol = hyperode.solve(lambda t, y: -y, torch.ones(1, dtype=F64), [0.0, 0.005],
                         options=dict(min_step=0.01))
    assert sol.ys[-1].item() == pytest.approx(math.exp(-0.005), rel=1e-8)


def test_pure_relative_tolerance_with_a_zero_component():
    sol = hyperode.solve(lambda t, y: -y, torch.tensor([1.0, 0.0], dtype=F64), [0.0, 1.0],
                         rtol=1e-8, atol=0.0, options=dict(max_num_steps=500))
    torch.testing.assert_close(sol.ys[-1], torch.tensor([math.exp(-1.0), 0.0], dtype=F64),
                               rtol=1e-6, atol=0)


# --------------------------------------------------------------------- controllers


@pytest.mark.parametrize("controller", ["i", "pi"])
@pytest.mark.parametrize("method", ["dopri5", "tsit5", "bosh3"])
def test_controllers_by_name_are_accurate(controller, method):
    sol = hyperode.solve(three_component, THREE_Y0, [0.0, 3.0], rtol=1e-8, atol=1e-10,
                         method=method, options=dict(controller=controller))
    torch.testing.assert_close(sol.ys[-1], THREE_EXACT, rtol=0, atol=1e-5)


def test_controller_names_and_objects_agree():
    kw = dict(rtol=1e-8, atol=1e-10)
    run = lambda **o: hyperode.solve(three_component, THREE_Y0, [0.0, 3.0], options=o,  # noqa: E731
                                     **kw).stats.as_dict()
    default = run()
    # README: "controller: 'i' (default), 'pi', or an IController / PIController object".
    assert run(controller="i") == default
    assert run(controller=IController()) == default
    assert run(controller="pi") == run(controller=PIController())
    assert run(controller="pi") != default  # the two controllers differ
    assert run(controller="i", safety=0.8, ifactor=5.0, dfactor=0.3) == \
        run(controller=IController(safety=0.8, ifactor=5.0, dfactor=0.3))
    assert run(controller="pi", safety=0.8) == run(controller=PIController(safety=0.8))
    assert run(controller=PIController(beta=0.0)) != run(controller="pi")


@pytest.mark.parametrize("controller", [IController(ifactor=1.5), PIController(ifactor=1.5)])
def test_ifactor_limits_growth(controller):
    sol = hyperode.solve(lambda t, y: -0.1 * y, torch.ones(1, dtype=F64), [0.0, 50.0],
                         rtol=1e-3, atol=1e-6,
                         options=dict(controller=controller, record_steps=True, first_step=1e-4))
    sizes = _accepted_sizes(sol.stats, 0.0)[:-1]  # the last one is cut to land on t[-1]
    growth = sizes[1:] / sizes[:-1]
    assert growth.max() <= 1.5 * (1 + 1e-12)
    assert growth.max() >= 1.49  # the limit was hit


@pytest.mark.parametrize("safety", [0.5, 0.9])
def test_lower_safety_takes_more_steps(safety):
    kw = dict(rtol=1e-8, atol=1e-10)
    base = hyperode.solve(three_component, THREE_Y0, [0.0, 3.0], options=dict(safety=0.95), **kw)
    sol = hyperode.solve(three_component, THREE_Y0, [0.0, 3.0], options=dict(safety=safety), **kw)
    assert sol.stats.accepted > base.stats.accepted


def _attempts_from_calls(calls):
    """dopri5 with first_step given: calls = [k1(t0), then 6 stage calls per attempt at
    t + c_i h, c = (1/5, 3/10, 4/5, 8/9, 1, 1)]. Return (start, h, rejected) per attempt."""
    chunks = [calls[k:k + 6] for k in range(1, len(calls), 6)]
    assert all(len(c) == 6 for c in chunks)
    out = []
    for c in chunks:
        h = (c[5] - c[0]) / 0.8
        out.append([c[5] - h, h, False])
    for a, b in itertools.pairwise(out):
        a[2] = abs(a[0] - b[0]) <= 1e-9 * max(1.0, abs(a[1]))
    return out


@pytest.mark.parametrize("controller", ["i", "pi"])
@pytest.mark.parametrize(("dfactor", "ifactor"), [(0.2, 10.0), (0.5, 2.0)])
def test_step_factors_bounded_by_dfactor_ifactor(controller, dfactor, ifactor):
    """Every attempted step is at least dfactor and at most ifactor times the previous
    one; after a rejection the step never grows (also on the next accepted step)."""
    calls = []

    def f(t, y):
        calls.append(float(t))
        return _bump(t, y)

    sol = hyperode.solve(f, torch.full((1,), math.exp(-50.0), dtype=F64), [0.0, 2.0],
                         rtol=1e-8, atol=1e-10,
                         options=dict(controller=controller, dfactor=dfactor, ifactor=ifactor,
                                      first_step=0.5, record_steps=True))
    st = sol.stats
    attempts = _attempts_from_calls(calls)
    assert len(attempts) == st.steps
    assert sum(a[2] for a in attempts) == st.rejected > 0
    assert attempts[0][1] == pytest.approx(0.5, rel=1e-9)
    shrunk_to_floor = False
    for k, (a, b) in enumerate(itertools.pairwise(attempts)):
        ratio = b[1] / a[1]
        # An attempt ending on t[-1] may be cut short (or stretched by <= 1%) to land there.
        landing = b[0] + b[1] == pytest.approx(2.0, abs=1e-12)
        if not landing or a[2]:
            assert ratio >= dfactor * (1 - 1e-9)
        if not landing:
            assert ratio <= ifactor * (1 + 1e-9)
        if a[2]:  # rejected
            assert ratio <= 1 + 1e-9
            shrunk_to_floor |= ratio <= dfactor * (1 + 1e-9)
            if k + 2 < len(attempts) and not b[2]:  # the next accepted step ...
                assert attempts[k + 2][1] <= b[1] * (1 + 1e-9)  # ... does not grow after it
    assert shrunk_to_floor  # first_step=0.5 is far too big: the first rejection hits dfactor
    torch.testing.assert_close(sol.ys[-1], torch.tensor([math.exp(-50.0)], dtype=F64),
                               rtol=0, atol=1e-7)


# --------------------------------------------------------------------- CUDA


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize(("method", "opts"), [("dopri5", None), ("rk4", dict(step_size=0.05))])
def test_cuda_matches_cpu(dtype, method, opts):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    net = net.to(dtype)
    y0 = torch.randn(4, 3, dtype=dtype)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=dtype)
    rtol, atol = (1e-5, 1e-6) if dtype == F32 else (1e-9, 1e-10)
    seen = []

    def field(net):
        def f(t, y):
            seen.append(t.device)
            return net(y)
        return f

    cpu = hyperode.solve(field(net), y0, t, rtol=rtol, atol=atol, method=method, options=opts)
    net_cuda = net.to("cuda")
    gpu = hyperode.solve(field(net_cuda), y0.cuda(), t.cuda(), rtol=rtol, atol=atol,
                         method=method, options=opts)
    assert gpu.ys.device.type == "cuda" and gpu.ys.dtype == dtype
    assert any(d.type == "cuda" for d in seen)
    tol = 1e-4 if dtype == F32 else 1e-8
    torch.testing.assert_close(gpu.ys.cpu(), cpu.ys, rtol=tol, atol=tol)
