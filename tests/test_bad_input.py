"""Bad arguments raise ValueError naming the argument and the offending value; solves
that fail raise a hyperode.SolverError subclass naming where (t, h) it failed."""

from __future__ import annotations

import itertools
import math
import re

import numpy as np
import pytest
import torch

import hyperode
from hyperode import (
    IController,
    MaxStepsExceededError,
    NonFiniteStateError,
    PIController,
    SolverError,
    StepSizeUnderflowError,
)

F64 = torch.float64
Y0 = torch.tensor([1.0, 0.0], dtype=F64)
T = torch.tensor([0.0, 1.0], dtype=F64)


def osc(t, y):
    return torch.stack([y[1], -y[0]])


def _solve(func=osc, y0=None, t=None, **kw):
    return hyperode.solve(func, Y0 if y0 is None else y0, T if t is None else t, **kw)


def _float_after(label: str, message: str) -> float:
    m = re.search(re.escape(label) + r"(-?[0-9.eE+-]+)", message)
    assert m, f"{label!r} not in {message!r}"
    return float(m.group(1).rstrip("."))


# --------------------------------------------------------------------- method


@pytest.mark.parametrize("method", ["dopri6", "RK4", "", "torchdiffeq.dopri5", 5])
def test_unknown_method_lists_known_ones(method):
    with pytest.raises(ValueError, match=re.escape(f"method={method!r}")) as info:
        _solve(method=method)
    msg = str(info.value)
    for name in ("dopri5", "tsit5", "rk4", "euler", "bosh3"):
        assert name in msg


def test_method_none_is_dopri5():
    torch.testing.assert_close(_solve(method=None).ys, _solve(method="dopri5").ys, rtol=0, atol=0)


def test_method_alias_and_tableau_accepted():
    a = _solve(method="heun", options=dict(step_size=0.1)).ys
    b = _solve(method="heun2", options=dict(step_size=0.1)).ys
    c = _solve(method=hyperode.get_method("heun2"), options=dict(step_size=0.1)).ys
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(a, c, rtol=0, atol=0)


# --------------------------------------------------------------------- tolerances


@pytest.mark.parametrize("name", ["rtol", "atol"])
@pytest.mark.parametrize(("value", "pattern"), [
    (-1e-6, r"-1e-06"),
    (float("nan"), r"nan"),
    (float("inf"), r"inf"),
    ("1e-6", r"1e-6"),
    (True, r"True"),
    ([1e-6, 1e-6], r"\[1e-06, 1e-06\]"),
])
def test_bad_scalar_tolerance(name, value, pattern):
    with pytest.raises(ValueError, match=rf"{name}.*{pattern}"):
        _solve(**{name: value})


@pytest.mark.parametrize("name", ["rtol", "atol"])
@pytest.mark.parametrize(("value", "pattern"), [
    (torch.ones(3, dtype=F64) * 1e-6, r"shape \(3,\).*\(2,\)"),
    (torch.ones(2, 2, dtype=F64) * 1e-6, r"shape \(2, 2\).*\(2,\)"),
    (torch.tensor([1e-6, -1e-6], dtype=F64), r"finite and >= 0"),
    (torch.tensor([1e-6, float("nan")], dtype=F64), r"finite and >= 0"),
])
def test_bad_tensor_tolerance(name, value, pattern):
    with pytest.raises(ValueError, match=rf"{name}.*{pattern}"):
        _solve(**{name: value})


def test_rtol_and_atol_both_zero():
    with pytest.raises(ValueError, match=r"rtol and atol are both 0"):
        _solve(rtol=0.0, atol=0.0)
    with pytest.raises(ValueError, match=r"rtol and atol are both 0"):
        _solve(rtol=0, atol=0)


def test_rtol_and_atol_both_zero_tensors():
    with pytest.raises(ValueError, match=r"rtol.*atol.*0"):
        _solve(rtol=torch.zeros(2, dtype=F64), atol=torch.zeros(2, dtype=F64),
               options=dict(max_num_steps=50))


def test_tuple_state_tolerances():
    y0 = (torch.ones(2, dtype=F64), torch.ones(3, dtype=F64))

    def f(t, s):
        return -s[0], -s[1]

    with pytest.raises(ValueError, match=r"rtol has 3 entries but y0 has 2 members"):
        hyperode.solve(f, y0, T, rtol=(1e-6, 1e-6, 1e-6))
    with pytest.raises(ValueError, match=r"atol\[1\] has shape \(2,\).*\(3,\)"):
        hyperode.solve(f, y0, T, atol=(1e-9, torch.ones(2, dtype=F64)))
    with pytest.raises(ValueError, match=r"rtol: for a tuple state.*shape \(5,\)"):
        hyperode.solve(f, y0, T, rtol=torch.ones(5, dtype=F64) * 1e-6)
    with pytest.raises(ValueError, match=r"rtol\[0\] must be finite and >= 0"):
        hyperode.solve(f, y0, T, rtol=(-1.0, 1e-6))


# --------------------------------------------------------------------- t


@pytest.mark.parametrize(("t", "pattern"), [
    (torch.zeros(2, 2, dtype=F64), r"t must be 1-D, got shape \(2, 2\)"),
    (torch.tensor(1.0, dtype=F64), r"t must be 1-D, got shape \(\)"),
    (torch.tensor([], dtype=F64), r"t is empty"),
    ([], r"t is empty"),
    ([0.0, 1.0, 0.5], r"not strictly monotonic: t\[1\] = 1\.0, t\[2\] = 0\.5"),
    ([1.0, 0.0, 0.5], r"not strictly monotonic: t\[1\] = 0\.0, t\[2\] = 0\.5"),
    ([0.0, 1.0, 1.0, 2.0], r"repeats a value: t\[1\] = 1\.0, t\[2\] = 1\.0"),
    ([0.0, 0.0], r"repeats a value: t\[0\] = 0\.0, t\[1\] = 0\.0"),
    ([0.0, float("nan"), 1.0], r"t must be finite, t\[1\] = nan"),
    ([0.0, 1.0, float("inf")], r"t must be finite, t\[2\] = inf"),
    ([float("-inf"), 1.0], r"t must be finite, t\[0\] = -inf"),
    (torch.tensor([0.0, 1.0], dtype=torch.complex64), r"t must be real.*complex64"),
    ("abc", r"t must be a 1-D tensor or sequence of times, got 'abc'"),
    ([[0.0, 1.0], [2.0]], r"t must be a 1-D tensor or sequence of times"),
])
def test_bad_t(t, pattern):
    with pytest.raises(ValueError, match=pattern):
        _solve(t=t)


@pytest.mark.parametrize("method_opts", [("dopri5", None), ("rk4", dict(step_size=0.1))])
def test_bad_t_checked_for_fixed_methods_too(method_opts):
    method, opts = method_opts
    with pytest.raises(ValueError, match=r"repeats a value"):
        _solve(t=[0.0, 0.5, 0.5], method=method, options=opts)


# --------------------------------------------------------------------- y0


@pytest.mark.parametrize(("y0", "pattern"), [
    ([1.0, 0.0], r"y0 must be a torch\.Tensor.*got list"),
    (np.array([1.0, 0.0]), r"y0 must be a torch\.Tensor.*got ndarray"),
    (1.0, r"y0 must be a torch\.Tensor.*got float"),
    (torch.tensor([1, 0]), r"y0 must have a floating \(or complex\) dtype, got torch\.int64"),
    (torch.tensor([True, False]), r"y0 must have a floating \(or complex\) dtype, got torch\.bool"),
    (torch.tensor([1.0, float("nan")], dtype=F64), r"y0 contains non-finite.*index \(1,\): nan"),
    (torch.tensor([[1.0, 2.0], [float("inf"), 0.0]], dtype=F64),
     r"y0 contains non-finite.*index \(1, 0\): inf"),
    ((), r"y0 is an empty tuple"),
    ((torch.ones(2, dtype=F64), [1.0]), r"y0\[1\] must be a torch\.Tensor.*got list"),
    ((torch.ones(2, dtype=F64), torch.ones(2, dtype=torch.int32)),
     r"y0\[1\] must have a floating \(or complex\) dtype, got torch\.int32"),
    ((torch.ones(2, dtype=F64), torch.ones(2, dtype=torch.float32)),
     r"share dtype.*y0\[0\] is torch\.float64.*y0\[1\] is torch\.float32"),
    ((torch.ones(2, dtype=F64), torch.tensor([0.0, float("nan")], dtype=F64)),
     r"y0\[1\] contains non-finite.*index \(1,\): nan"),
])
def test_bad_y0(y0, pattern):
    with pytest.raises(ValueError, match=pattern):
        _solve(func=lambda t, y: y, y0=y0)


# --------------------------------------------------------------------- func's output


@pytest.mark.parametrize(("func", "pattern"), [
    (lambda t, y: torch.cat([y, y]), r"func's output has shape \(4,\) but the state has shape "
                                     r"\(2,\)"),
    (lambda t, y: y[None], r"func's output has shape \(1, 2\) but the state has shape \(2,\)"),
    (lambda t, y: y.sum(), r"func's output has shape \(\) but the state has shape \(2,\)"),
    (lambda t, y: y.float(), r"func's output has dtype torch\.float32 but the state has dtype "
                             r"torch\.float64"),
    (lambda t, y: None, r"func must return a tensor like y0, got NoneType"),
    (lambda t, y: (y,), r"func must return a tensor like y0, got tuple"),
    (lambda t, y: y.tolist(), r"func must return a tensor like y0, got list"),
])
@pytest.mark.parametrize("method_opts", [("dopri5", None), ("rk4", dict(step_size=0.1))])
def test_bad_func_output_tensor_state(func, pattern, method_opts):
    method, opts = method_opts
    with pytest.raises(ValueError, match=pattern):
        _solve(func=func, method=method, options=opts)


TUPLE_Y0 = (torch.ones(2, dtype=F64), torch.ones(3, dtype=F64))


@pytest.mark.parametrize(("func", "pattern"), [
    (lambda t, s: (s[0],), r"func must return a tuple of 2 tensors like y0, got tuple"),
    (lambda t, s: (s[0], s[1], s[1]), r"func must return a tuple of 2 tensors like y0, got tuple"),
    (lambda t, s: s[0], r"func must return a tuple of 2 tensors like y0, got Tensor"),
    (lambda t, s: (s[0], s[1][:2]), r"func's output\[1\] has shape \(2,\) but the state has "
                                    r"shape \(3,\)"),
    (lambda t, s: (s[0].float(), s[1]), r"func's output\[0\] has dtype torch\.float32"),
    (lambda t, s: (s[0], 1.0), r"func's output\[1\] must be a tensor, got float"),
])
def test_bad_func_output_tuple_state(func, pattern):
    with pytest.raises(ValueError, match=pattern):
        hyperode.solve(func, TUPLE_Y0, T)


# --------------------------------------------------------------------- fixed-grid options


@pytest.mark.parametrize(("value", "pattern"), [
    (0, r"got 0"), (0.0, r"got 0\.0"), (-0.1, r"got -0\.1"), (float("nan"), r"got nan"),
    (float("inf"), r"got inf"), ("0.1", r"got '0\.1'"), (True, r"got True"),
    (None, r"got None"),
])
@pytest.mark.parametrize("method", ["rk4", "dopri5"])
def test_bad_step_size(value, pattern, method):
    with pytest.raises(ValueError, match=r"options\['step_size'\] must be a finite number > 0, "
                                         + pattern):
        _solve(method=method, options=dict(step_size=value))


@pytest.mark.parametrize("method", ["rk4", "euler", "midpoint", "rk4_38"])
@pytest.mark.parametrize("options", [{}, dict(max_num_steps=10), dict(record_steps=True)])
def test_fixed_method_without_grid_steps_on_t(method, options):
    """torchdiffeq's rule: no grid option means one step per interval of t."""
    t = [0.0, 0.3, 0.5, 1.0]
    a = _solve(t=t, method=method, options=options)
    b = _solve(t=t, method=method, options=dict(grid_points=t))
    torch.testing.assert_close(a.ys, b.ys, rtol=0, atol=0)
    assert a.stats.accepted == 3


@pytest.mark.parametrize("method", ["rk4", "euler"])
def test_fixed_method_refuses_adaptive_options(method):
    with pytest.raises(ValueError, match=rf"options \['max_step'\] apply only to adaptive "
                                         rf"solves, but method '{method}' has no error estimate"):
        _solve(method=method, options=dict(max_step=0.1))


@pytest.mark.parametrize(("value", "pattern"), [
    (0, r"got 0$"), (-3, r"got -3$"), (2.0, r"got 2\.0$"), (True, r"got True$"),
    ("4", r"got '4'$"),
])
def test_bad_num_steps(value, pattern):
    with pytest.raises(ValueError, match=r"options\['num_steps'\] must be an int >= 1, " + pattern):
        _solve(method="rk4", options=dict(num_steps=value))


@pytest.mark.parametrize(("grid", "t", "pattern"), [
    ([0.0, 0.5], [0.0, 1.0], r"the grid must cover \[t\[0\], t\[-1\]\] = \[0\.0, 1\.0\], "
                             r"got \[0\.0, 0\.5\]"),
    ([0.1, 1.0], [0.0, 1.0], r"must cover.*got \[0\.1, 1\.0\]"),
    ([0.0, 0.5, 0.4, 1.0], [0.0, 1.0], r"grid_points'\] must be strictly monotonic, "
                                       r"got \[0\.0, 0\.5, 0\.4, 1\.0\]"),
    ([0.0, 0.5, 0.5, 1.0], [0.0, 1.0], r"grid_points'\] must be strictly monotonic"),
    ([0.0], [0.0, 1.0], r"grid_points'\] needs at least two times, got \[0\.0\]"),
    ([0.0, float("nan"), 1.0], [0.0, 1.0], r"grid_points'\] must be finite, got \[0\.0, nan"),
    ([[0.0, 1.0]], [0.0, 1.0], r"grid_points'\] must be 1-D, got shape \(1, 2\)"),
    ("abc", [0.0, 1.0], r"grid_points'\] must be a 1-D sequence of times, got 'abc'"),
])
def test_bad_grid_points(grid, t, pattern):
    """(A grid given in the opposite direction is reversed: the backward solve of the
    adjoint reuses the forward grid that way.)"""
    with pytest.raises(ValueError, match=pattern):
        _solve(t=t, method="rk4", options=dict(grid_points=grid))


@pytest.mark.parametrize("opts", [
    dict(step_size=0.1, num_steps=10),
    dict(step_size=0.1, grid_points=[0.0, 1.0]),
    dict(num_steps=10, grid_points=[0.0, 1.0]),
])
@pytest.mark.parametrize("method", ["rk4", "dopri5"])
def test_two_grid_options(opts, method):
    with pytest.raises(ValueError, match=r"give only one of step_size, num_steps, grid_points"
                                         ) as info:
        _solve(method=method, options=opts)
    for key in opts:
        assert key in str(info.value)


@pytest.mark.parametrize("key,value", [
    ("max_step", 0.1), ("min_step", 0.01), ("first_step", 0.01), ("controller", "i"),
    ("safety", 0.8), ("ifactor", 5.0), ("dfactor", 0.3), ("norm", hyperode.max_norm),
    ("step_t", [0.5]), ("jump_t", [0.5]),
])
@pytest.mark.parametrize("grid_opt", [dict(step_size=0.1), dict(num_steps=5)])
@pytest.mark.parametrize("method", ["rk4", "dopri5"])
def test_adaptive_only_options_with_fixed_grid(key, value, grid_opt, method):
    grid_key = next(iter(grid_opt))
    with pytest.raises(ValueError, match=rf"options \['{key}'\] apply only to adaptive solves, "
                                         rf"but {grid_key} makes this a fixed-grid solve"):
        _solve(method=method, options={**grid_opt, key: value})


# --------------------------------------------------------------------- other options


@pytest.mark.parametrize("key", ["foo", "stepsize", "rtol", "adjoint_params"])
def test_unknown_option(key):
    with pytest.raises(ValueError, match=rf"unknown option '{key}' for method 'dopri5'; known "
                                         rf"options: .*step_size"):
        _solve(options={key: 1})


@pytest.mark.parametrize("key,value", [("interp", "cubic"), ("perturb", True)])
def test_fixed_grid_options_refused_by_an_adaptive_solve(key, value):
    with pytest.raises(ValueError, match=rf"options \['{key}'\] apply only to fixed-grid "
                                         r"solves; method 'dopri5' runs adaptively"):
        _solve(options={key: value})


@pytest.mark.parametrize("key,value,pattern", [
    ("interp", "quadratic", r"options\['interp'\] must be one of \('linear', 'cubic'\)"),
    ("perturb", "yes", r"options\['perturb'\] must be True or False, got 'yes'"),
    ("grid_constructor", 3, r"options\['grid_constructor'\] must be callable"),
])
def test_bad_fixed_grid_options(key, value, pattern):
    with pytest.raises(ValueError, match=pattern):
        _solve(method="rk4", options={key: value})


@pytest.mark.parametrize("options", [[("step_size", 0.1)], "step_size=0.1", 0.1])
def test_options_not_a_dict(options):
    with pytest.raises(ValueError, match=rf"options must be a dict or None, got "
                                         rf"{type(options).__name__}"):
        _solve(options=options)


@pytest.mark.parametrize("controller", ["pid", "I", "PI", ""])
def test_unknown_controller_name(controller):
    with pytest.raises(ValueError, match=rf"options\['controller'\] = {controller!r} is unknown"
                                         r".*\['i', 'pi'\]"):
        _solve(options=dict(controller=controller))


@pytest.mark.parametrize("controller", [0.9, object(), IController])
def test_bad_controller_object(controller):
    with pytest.raises(ValueError, match=r"options\['controller'\] must be 'pi', 'i' or a "
                                         r"controller object, got"):
        _solve(options=dict(controller=controller))


@pytest.mark.parametrize("controller", [IController(), PIController()])
def test_controller_object_conflicts_with_factor_options(controller):
    with pytest.raises(ValueError, match=r"options \['safety'\] conflict with the controller"):
        _solve(options=dict(controller=controller, safety=0.8))


@pytest.mark.parametrize(("key", "value", "pattern"), [
    ("safety", 0.0, r"safety must be in \(0, 1\], got 0\.0"),
    ("safety", 1.5, r"safety must be in \(0, 1\], got 1\.5"),
    ("safety", -0.5, r"safety must be in \(0, 1\], got -0\.5"),
    ("safety", float("nan"), r"safety must be in \(0, 1\], got nan"),
    ("ifactor", 0.5, r"ifactor must be >= 1, got 0\.5"),
    ("ifactor", float("nan"), r"ifactor must be >= 1, got nan"),
    ("dfactor", 1.0, r"dfactor must be in \(0, 1\), got 1\.0"),
    ("dfactor", 0.0, r"dfactor must be in \(0, 1\), got 0\.0"),
])
@pytest.mark.parametrize("controller", ["i", "pi"])
def test_controller_factors_out_of_range(key, value, pattern, controller):
    with pytest.raises(ValueError, match=pattern):
        _solve(options=dict(controller=controller, **{key: value}))
    cls = IController if controller == "i" else PIController
    with pytest.raises(ValueError, match=pattern):
        cls(**{key: value})


def test_controller_factor_of_wrong_type():
    with pytest.raises(ValueError, match=r"safety.*'0\.9'"):
        _solve(options=dict(safety="0.9"))


@pytest.mark.parametrize("beta", [-0.1, 1.0, 2.0])
def test_pi_beta_out_of_range(beta):
    with pytest.raises(ValueError, match=rf"beta must be in \[0, 1\), got {beta!r}"):
        PIController(beta=beta)


@pytest.mark.parametrize(("key", "value", "pattern"), [
    ("first_step", 0.0, r"options\['first_step'\] must be a finite number > 0, got 0\.0"),
    ("first_step", -1.0, r"options\['first_step'\] must be a finite number > 0, got -1\.0"),
    ("first_step", float("nan"), r"options\['first_step'\] .*got nan"),
    ("first_step", float("inf"), r"options\['first_step'\] .*got inf"),
    ("max_step", 0.0, r"options\['max_step'\] must be a finite number > 0, got 0\.0"),
    ("max_step", float("nan"), r"options\['max_step'\] .*got nan"),
    ("max_step", "1", r"options\['max_step'\] .*got '1'"),
    ("min_step", -1e-3, r"options\['min_step'\] must be a finite number >= 0, got -0\.001"),
    ("min_step", float("inf"), r"options\['min_step'\] .*got inf"),
    ("max_num_steps", 0, r"options\['max_num_steps'\] must be an int >= 1, got 0"),
    ("max_num_steps", 10.0, r"options\['max_num_steps'\] must be an int >= 1, got 10\.0"),
    ("norm", "rms", r"options\['norm'\] must be callable, got 'rms'"),
    ("step_t", [0.5, float("nan")], r"options\['step_t'\] must be finite, got \[0\.5, nan\]"),
    ("jump_t", [[0.5]], r"options\['jump_t'\] must be 1-D, got shape \(1, 1\)"),
    ("jump_t", "x", r"options\['jump_t'\] must be a 1-D sequence of times, got 'x'"),
])
def test_bad_adaptive_option_values(key, value, pattern):
    with pytest.raises(ValueError, match=pattern):
        _solve(options={key: value})


@pytest.mark.parametrize(("min_step", "max_step"), [(1.0, 0.5), (0.2, 0.1)])
def test_min_step_greater_than_max_step(min_step, max_step):
    with pytest.raises(ValueError, match=rf"options\['min_step'\] = {min_step!r} exceeds "
                                         rf"max_step = {max_step!r}"):
        _solve(options=dict(min_step=min_step, max_step=max_step))


def test_errors_raised_before_any_evaluation():
    """Argument errors come from validation, not from a failed evaluation of func."""
    calls = []

    def f(t, y):
        calls.append(t)
        return osc(t, y)

    for kw in (dict(rtol=-1.0), dict(method="nope"), dict(options=dict(foo=1)),
               dict(t=[0.0, 0.0]), dict(options=dict(min_step=1.0, max_step=0.5)),
               dict(options=dict(controller="pid")), dict(method="rk4", options=dict(norm=max))):
        with pytest.raises(ValueError):
            _solve(func=f, **kw)
    assert calls == []


# --------------------------------------------------------------------- failed solves


def test_solver_errors_hierarchy():
    for cls in (NonFiniteStateError, StepSizeUnderflowError, MaxStepsExceededError):
        assert issubclass(cls, SolverError)
        assert issubclass(cls, RuntimeError)
    assert not issubclass(SolverError, ValueError)


def _euler_blowup_time(h: float, t_end: float) -> float:
    """First grid time at which explicit Euler for y' = y^2, y(0) = 1 overflows."""
    n = math.ceil(t_end / h * (1 - 1e-10))
    grid = [h * k for k in range(n)] + [t_end]
    y = np.float64(1.0)
    with np.errstate(over="ignore", invalid="ignore"):
        for a, b in itertools.pairwise(grid):
            y = y + np.float64(b - a) * y * y
            if not np.isfinite(y):
                return b
    raise AssertionError("no blow-up")


@pytest.mark.parametrize("t_out", [[0.0, 2.0], [0.0, 0.5, 1.5, 2.0]])
def test_nonfinite_fixed_step_names_the_time(t_out):
    """y' = y^2, y(0) = 1 blows up at t = 1; Euler with h = 0.01 overflows a bit later."""
    with pytest.raises(NonFiniteStateError, match=r"non-finite \(NaN/inf\) at t=") as info:
        hyperode.odeint(lambda t, y: y * y, torch.ones(1, dtype=F64), t_out, method="euler",
                        options=dict(step_size=0.01))
    t_bad = _float_after("at t=", str(info.value))
    assert 1.0 < t_bad < 1.5
    assert t_bad == pytest.approx(_euler_blowup_time(0.01, 2.0), abs=1e-12)


@pytest.mark.parametrize("method", ["rk4", "midpoint", "dopri5"])
def test_nonfinite_fixed_step_higher_order(method):
    with pytest.raises(NonFiniteStateError) as info:
        hyperode.odeint(lambda t, y: y * y, torch.ones(3, dtype=F64), [0.0, 2.0], method=method,
                        options=dict(step_size=0.01))
    t_bad = _float_after("at t=", str(info.value))
    assert 1.0 <= t_bad <= 1.2


def test_nonfinite_from_nan_field_fixed_step():
    def f(t, y):
        return y * (torch.nan if t > 0.5 else -1.0)

    with pytest.raises(NonFiniteStateError) as info:
        hyperode.odeint(f, torch.ones(2, dtype=F64), [0.0, 0.25, 1.0], method="rk4",
                        options=dict(step_size=0.1))
    # the rk4 step from 0.4 to 0.5 evaluates f at 0.5 only (not > 0.5): 0.6 is the first bad
    assert _float_after("at t=", str(info.value)) == pytest.approx(0.6, abs=1e-12)


def test_nonfinite_float32_fixed_step():
    with pytest.raises(NonFiniteStateError) as info:
        hyperode.odeint(lambda t, y: y * y, torch.ones(1, dtype=torch.float32), [0.0, 2.0],
                        method="euler", options=dict(step_size=0.01))
    assert 1.0 < _float_after("at t=", str(info.value)) < 1.5


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "bosh3"])
def test_blowup_adaptive(method):
    """Adaptive: the step size collapses at the singularity t = 1."""
    with pytest.raises((StepSizeUnderflowError, NonFiniteStateError)) as info:
        hyperode.odeint(lambda t, y: y * y, torch.ones(1, dtype=F64), [0.0, 2.0],
                        method=method, rtol=1e-6, atol=1e-8)
    msg = str(info.value)
    assert "t=" in msg
    t_fail = _float_after("t=", msg)
    assert abs(t_fail - 1.0) < 1e-3
    if isinstance(info.value, StepSizeUnderflowError):
        assert abs(_float_after("h=", msg)) < 1e-6


def test_step_size_underflow_from_nan_field():
    def f(t, y):
        return y * (torch.nan if t > 0.5 else -1.0)

    with pytest.raises(StepSizeUnderflowError, match=r"step size underflow at t=.*h=.*non-finite"
                       ) as info:
        hyperode.odeint(f, torch.ones(2, dtype=F64), [0.0, 1.0])
    msg = str(info.value)
    assert _float_after("at t=", msg) == pytest.approx(0.5, abs=1e-6)
    assert abs(_float_after("h=", msg)) < 1e-6


def test_min_step_clamps_and_accepts_like_torchdiffeq():
    """A step as short as min_step is accepted whatever its error (torchdiffeq's rule),
    so a too-large min_step trades accuracy for a bounded number of steps."""
    f = lambda t, y: torch.stack([10 * y[1], -10 * y[0]])  # noqa: E731
    sol = hyperode.solve(f, Y0, [0.0, 3.0], rtol=1e-12, atol=1e-14,
                         options=dict(min_step=0.01, record_steps=True))
    steps = torch.diff(torch.tensor([0.0, *sol.stats.accepted_ts], dtype=F64))
    assert bool((steps[:-1] >= 0.01 - 1e-15).all())
    assert sol.stats.accepted <= 301


def test_step_size_underflow_backward_in_time():
    def f(t, y):
        return y * (torch.nan if t < -0.5 else -1.0)

    with pytest.raises(StepSizeUnderflowError) as info:
        hyperode.odeint(f, torch.ones(2, dtype=F64), [0.0, -1.0])
    msg = str(info.value)
    assert _float_after("at t=", msg) == pytest.approx(-0.5, abs=1e-6)
    assert _float_after("h=", msg) <= 0  # the step is signed


def _t_after_attempts(stats, t0: float, n: int) -> float:
    """Replay recorded steps: the time reached after n attempted steps. A rejected attempt
    starts where the last accepted step ended, so the attempts, in order, are: for each
    accepted step, the rejections at its start time, then the step itself."""
    t, done = t0, 0
    rejected = list(stats.rejected_ts)
    for end in stats.accepted_ts:
        while rejected and rejected[0] == t:
            rejected.pop(0)
            done += 1
            if done == n:
                return t
        done += 1
        t = end
        if done == n:
            return t
    raise AssertionError("fewer attempts than n")


@pytest.mark.parametrize(("controller", "rtol"), [("i", 1e-8), ("pi", 1e-8), ("i", 1e-3)])
def test_max_num_steps_names_t_reached(controller, rtol):
    kw = dict(rtol=rtol, atol=rtol * 1e-2)
    t = [0.0, 10.0]
    full = hyperode.solve(osc, Y0, t, options=dict(record_steps=True, controller=controller),
                          **kw)
    assert full.stats.steps >= 12
    if rtol == 1e-8:  # rejected attempts come before attempt 45: the replay matters
        assert [r for r in full.stats.rejected_ts if r < _t_after_attempts(full.stats, 0, 45)]
    for n in [n for n in (1, 5, 12, 20, 21, 22, 23, 24, 45) if n < full.stats.steps]:
        with pytest.raises(MaxStepsExceededError, match=rf"max_num_steps={n} reached at t=") \
                as info:
            hyperode.solve(osc, Y0, t, options=dict(max_num_steps=n, controller=controller),
                           **kw)
        msg = str(info.value)
        assert _float_after("reached at t=", msg) == _t_after_attempts(full.stats, 0.0, n)
        assert "t=10.0" in msg  # the target time


def test_max_num_steps_counts_rejected_steps():
    def f(t, y):  # a sharp feature provokes rejections
        return -100 * (t - 1) * torch.exp(-50 * (t - 1) ** 2) * torch.ones_like(y)

    kw = dict(rtol=1e-8, atol=1e-10, options=dict(first_step=0.5))
    st = hyperode.solve(f, torch.ones(1, dtype=F64), [0.0, 2.0], **kw).stats
    assert st.rejected > 0
    hyperode.solve(f, torch.ones(1, dtype=F64), [0.0, 2.0],
                   rtol=1e-8, atol=1e-10, options=dict(first_step=0.5, max_num_steps=st.steps))
    with pytest.raises(MaxStepsExceededError, match=rf"max_num_steps={st.steps - 1}"):
        hyperode.solve(f, torch.ones(1, dtype=F64), [0.0, 2.0], rtol=1e-8, atol=1e-10,
                       options=dict(first_step=0.5, max_num_steps=st.steps - 1))


@pytest.mark.parametrize(("opts", "n_steps"), [(dict(step_size=0.01), 100),
                                               (dict(num_steps=50), 50)])
def test_max_num_steps_fixed_grid(opts, n_steps):
    hyperode.solve(osc, Y0, [0.0, 1.0], method="rk4",
                   options=dict(opts, max_num_steps=n_steps))
    with pytest.raises(MaxStepsExceededError, match=rf"{n_steps} steps, more than "
                                                    rf"max_num_steps={n_steps - 1}"):
        hyperode.solve(osc, Y0, [0.0, 1.0], method="rk4",
                       options=dict(opts, max_num_steps=n_steps - 1))
