"""Bad input at every public library entry point: the exception type, and a message that
names the argument (and its value where that helps). tests/test_bad_input.py goes deeper
into odeint's options and failed solves; this file covers the breadth.

Cases per entry point (the counts are checked by test_case_counts below):

    odeint / solve                                  75
    odeint_adjoint / solve_adjoint                  28
    odeint_event                                    16
    HyperSolver (construction, forward, odeint)     16
    hyper fitting (fit, FitConfig, Adversarial,
      prepare_batch, reference_trajectory, ...)     34
    NeuralODE / SolverConfig                        34
    data loaders                                    24
    total                                          227

Plus three tests of bounded time and memory (a tiny step_size, a huge num_steps, an
event solve that never fires) and the half-precision policy on every entry point.

Expected types: ValueError for bad arguments (including a vector field or norm that
returns the wrong thing), hyperode.SolverError subclasses for solves that fail,
FileNotFoundError for missing data files, TypeError only where Python itself rejects a
keyword that does not exist.
"""

from __future__ import annotations

import re
import time
import tracemalloc

import numpy as np
import pytest
import torch
from torch import nn

from hyperode import (
    MaxStepsExceededError,
    NonFiniteStateError,
    StepSizeUnderflowError,
    odeint,
    odeint_adjoint,
    odeint_event,
    solve,
    solve_adjoint,
)
from hyperode.data import (
    Split,
    density,
    digits,
    load_cifar10,
    load_mnist,
    load_task,
    read_idx,
    sample_density,
    spheres,
    subset,
    xor,
)
from hyperode.data.pendulum import pendulum
from hyperode.data.timeseries import irregular_spirals
from hyperode.hyper import (
    Adversarial,
    FitConfig,
    HyperEuler,
    HyperSolver,
    MLPHyperNet,
    fit,
    prepare_batch,
    reference_trajectory,
    residuals,
    uniform_mesh,
)
from hyperode.nn import Autonomous, NeuralODE, SolverConfig

F64 = torch.float64
Y0 = torch.tensor([1.0, 0.5], dtype=F64)
YB = torch.ones(3, 2, dtype=F64)  # a batch of 3 samples
T = torch.tensor([0.0, 1.0], dtype=F64)
T0 = torch.tensor(0.0, dtype=F64)


def neg(t, y):
    return -y


def neg_tuple(t, s):
    return -s[0], -s[1]


def changes_after(n_ok: int, bad):
    """A field that returns ``-y`` for ``n_ok`` calls and ``bad(y)`` afterwards."""
    calls = [0]

    def f(t, y):
        calls[0] += 1
        return -y if calls[0] <= n_ok else bad(y)

    return f


class Switch(nn.Module):
    """``lin(y)`` in the forward pass; ``bad(out)`` once ``back`` is set (the backward
    pass of odeint_adjoint calls the field again)."""

    def __init__(self, bad=None):
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(2, 2).double()
        self.bad = bad
        self.back = False

    def forward(self, t, y):
        out = self.lin(y) * 0.1
        return self.bad(out) if self.back else out


def linear_module() -> nn.Module:
    """A small nn.Module vector field f(t, y) in float64."""
    return Switch()


def adjoint_backward_with(bad, t_grad: bool = False):
    field = Switch(bad)
    t = T.clone().requires_grad_(t_grad)
    ys = odeint_adjoint(field, Y0.clone().requires_grad_(True), t)
    field.back = True
    ys.sum().backward()


def hyper(state_dim: int = 2) -> HyperSolver:
    torch.manual_seed(0)
    return HyperEuler(MLPHyperNet(state_dim=state_dim)).double()


class WrongG(nn.Module):
    def __init__(self, bad):
        super().__init__()
        self.w = nn.Parameter(torch.zeros((), dtype=F64))
        self.bad = bad

    def forward(self, eps, t, y, dy):
        return self.bad(y)


def fit_quick(initial_states=None, **kw):
    h = kw.pop("hyper", None) or hyper()
    field = kw.pop("field_fn", neg)
    kw.setdefault("iterations", 1)
    kw.setdefault("progress", False)
    return fit(h, field, YB if initial_states is None else initial_states, **kw)


def node() -> NeuralODE:
    torch.manual_seed(0)
    return NeuralODE(Autonomous(nn.Linear(2, 2)))


def split(**kw) -> Split:
    x = torch.zeros(4, 2)
    y = torch.zeros(4, dtype=torch.int64)
    args = dict(x_train=x, y_train=y, x_test=x, y_test=y)
    args.update(kw)
    return Split(**args)


def case(id_, fn, exc, pattern):
    return pytest.param(fn, exc, pattern, id=id_)


def _norm_nan(e):
    return torch.tensor(float("nan"), dtype=F64)


# ----------------------------------------------------------------------- odeint / solve

ODEINT_CASES = [
    # func
    case("func-int", lambda: odeint(3, Y0, T), ValueError, r"func must be callable.*got int: 3"),
    case("func-none", lambda: solve(None, Y0, T), ValueError, r"func must be callable.*NoneType"),
    case("func-str", lambda: odeint("f", Y0, T), ValueError, r"func must be callable.*'f'"),
    # y0
    case("y0-list", lambda: odeint(neg, [1.0, 0.0], T), ValueError,
         r"y0 must be a torch\.Tensor.*got list"),
    case("y0-ndarray", lambda: odeint(neg, np.ones(2), T), ValueError,
         r"y0 must be a torch\.Tensor.*got ndarray"),
    case("y0-int", lambda: odeint(neg, torch.tensor([1, 2]), T), ValueError,
         r"y0 must have a floating.*torch\.int64"),
    case("y0-float16", lambda: odeint(neg, Y0.half(), T), ValueError,
         r"y0 has dtype torch\.float16: half-precision states are not supported"),
    case("y0-bfloat16", lambda: odeint(neg, Y0.bfloat16(), T, method="rk4"), ValueError,
         r"y0 has dtype torch\.bfloat16: half-precision"),
    case("y0-complex32", lambda: odeint(neg, torch.zeros(2, dtype=torch.complex32), T),
         ValueError, r"y0 has dtype torch\.complex32: half-precision"),
    case("y0-nan", lambda: odeint(neg, torch.tensor([1.0, float("nan")], dtype=F64), T),
         ValueError, r"y0 contains non-finite values.*index \(1,\): nan"),
    case("y0-empty-tuple", lambda: odeint(neg, (), T), ValueError, r"y0 is an empty tuple"),
    case("y0-tuple-dtypes", lambda: odeint(neg_tuple, (Y0, Y0.float()), T), ValueError,
         r"y0\[0\] is torch\.float64.*y0\[1\] is torch\.float32"),
    case("y0-tuple-half", lambda: odeint(neg_tuple, (Y0.half(), Y0.half()), T), ValueError,
         r"y0\[0\] has dtype torch\.float16"),
    # t
    case("t-2d", lambda: odeint(neg, Y0, torch.zeros(2, 2)), ValueError,
         r"t must be 1-D, got shape \(2, 2\)"),
    case("t-empty", lambda: odeint(neg, Y0, []), ValueError, r"t is empty"),
    case("t-not-monotonic", lambda: odeint(neg, Y0, [0.0, 1.0, 0.5]), ValueError,
         r"t is not strictly monotonic: t\[1\] = 1\.0, t\[2\] = 0\.5"),
    case("t-repeat", lambda: odeint(neg, Y0, [0.0, 0.0]), ValueError, r"t repeats a value"),
    case("t-nan", lambda: odeint(neg, Y0, [0.0, float("nan")]), ValueError,
         r"t must be finite, t\[1\] = nan"),
    case("t-complex", lambda: odeint(neg, Y0, torch.zeros(2, dtype=torch.complex64)),
         ValueError, r"t must be real.*complex64"),
    case("t-str", lambda: odeint(neg, Y0, "01"), ValueError, r"t must be a 1-D tensor.*'01'"),
    # rtol / atol
    case("rtol-negative", lambda: odeint(neg, Y0, T, rtol=-1e-3), ValueError,
         r"rtol must be a finite number >= 0, got -0\.001"),
    case("rtol-str", lambda: odeint(neg, Y0, T, rtol="1e-3"), ValueError, r"rtol.*'1e-3'"),
    case("rtol-bool", lambda: odeint(neg, Y0, T, rtol=True), ValueError, r"rtol.*True"),
    case("rtol-bool-tensor", lambda: odeint(neg, Y0, T, rtol=torch.tensor(True)), ValueError,
         r"rtol must be a real number, got tensor\(True\)"),
    case("atol-nan", lambda: odeint(neg, Y0, T, atol=float("nan")), ValueError, r"atol.*nan"),
    case("atol-shape", lambda: odeint(neg, Y0, T, atol=torch.ones(3, dtype=F64)), ValueError,
         r"atol has shape \(3,\), which does not broadcast.*\(2,\)"),
    case("rtol-atol-zero", lambda: odeint(neg, Y0, T, rtol=0.0, atol=0.0), ValueError,
         r"rtol and atol are both 0"),
    case("rtol-tuple-count", lambda: odeint(neg_tuple, (Y0, Y0), T, rtol=(1e-6,) * 3),
         ValueError, r"rtol has 3 entries but y0 has 2 members"),
    # method
    case("method-unknown", lambda: odeint(neg, Y0, T, method="dopri6"), ValueError,
         r"method='dopri6' is not a known method.*dopri5"),
    case("method-int", lambda: odeint(neg, Y0, T, method=5), ValueError,
         r"method=5 is not a known method"),
    case("method-object", lambda: odeint(neg, Y0, T, method=object()), ValueError,
         r"method=<object object.*is not a known method"),
    case("method-implicit-complex",
         lambda: odeint(neg, Y0.to(torch.complex128), T, method="implicit_euler"), ValueError,
         r"y0 is complex \(torch\.complex128\) but method 'implicit_euler' cannot take "
         r"complex states"),
    # options
    case("options-list", lambda: odeint(neg, Y0, T, options=[("step_size", 0.1)]), ValueError,
         r"options must be a dict or None, got list"),
    case("options-unknown", lambda: odeint(neg, Y0, T, options=dict(stepsize=0.1)),
         ValueError, r"unknown option 'stepsize' for method 'dopri5'"),
    case("step_size-zero", lambda: odeint(neg, Y0, T, method="rk4", options=dict(step_size=0)),
         ValueError, r"options\['step_size'\] must be a finite number > 0, got 0"),
    case("step_size-str",
         lambda: odeint(neg, Y0, T, method="rk4", options=dict(step_size="0.1")), ValueError,
         r"options\['step_size'\].*got '0\.1'"),
    case("num_steps-float",
         lambda: odeint(neg, Y0, T, method="rk4", options=dict(num_steps=2.5)), ValueError,
         r"options\['num_steps'\] must be an int >= 1, got 2\.5"),
    case("num_steps-zero",
         lambda: odeint(neg, Y0, T, method="rk4", options=dict(num_steps=0)), ValueError,
         r"options\['num_steps'\] must be an int >= 1, got 0"),
    case("grid_points-short",
         lambda: odeint(neg, Y0, T, method="rk4", options=dict(grid_points=[0.0, 0.5])),
         ValueError, r"the grid must cover \[t\[0\], t\[-1\]\] = \[0\.0, 1\.0\]"),
    case("grid-two-options",
         lambda: odeint(neg, Y0, T, method="rk4", options=dict(step_size=0.1, num_steps=3)),
         ValueError, r"give only one of step_size, num_steps.*\['num_steps', 'step_size'\]"),
    case("grid_constructor-not-callable",
         lambda: odeint(neg, Y0, T, method="rk4", options=dict(grid_constructor=3)),
         ValueError, r"options\['grid_constructor'\] must be callable.*got 3"),
    case("grid_constructor-returns-str",
         lambda: odeint(neg, Y0, T, method="rk4",
                        options=dict(grid_constructor=lambda f, y, t: "abc")),
         ValueError, r"grid_constructor\(func, y0, t\) must be a 1-D sequence of times, "
                     r"got 'abc'"),
    case("max_step-on-fixed",
         lambda: odeint(neg, Y0, T, method="rk4", options=dict(max_step=0.1)), ValueError,
         r"options \['max_step'\] apply only to adaptive solves"),
    case("interp-on-adaptive", lambda: odeint(neg, Y0, T, options=dict(interp="linear")),
         ValueError, r"options \['interp'\] apply only to fixed-grid solves"),
    case("interp-unknown",
         lambda: odeint(neg, Y0, T, method="rk4", options=dict(interp="quadratic")),
         ValueError, r"options\['interp'\] must be one of.*got 'quadratic'"),
    case("perturb-str", lambda: odeint(neg, Y0, T, method="rk4", options=dict(perturb="yes")),
         ValueError, r"options\['perturb'\] must be True or False, got 'yes'"),
    case("record_steps-str", lambda: odeint(neg, Y0, T, options=dict(record_steps="no")),
         ValueError, r"options\['record_steps'\] must be True or False, got 'no'"),
    case("max_num_steps-bool", lambda: odeint(neg, Y0, T, options=dict(max_num_steps=True)),
         ValueError, r"options\['max_num_steps'\] must be an int >= 1, got True"),
    case("dtype-int", lambda: odeint(neg, Y0, T, options=dict(dtype=torch.int32)), ValueError,
         r"options\['dtype'\].*torch\.int32"),
    case("norm-str", lambda: odeint(neg, Y0, T, options=dict(norm="rms")), ValueError,
         r"options\['norm'\] must be callable, got 'rms'"),
    case("controller-unknown", lambda: odeint(neg, Y0, T, options=dict(controller="pid")),
         ValueError, r"options\['controller'\] = 'pid' is unknown"),
    case("safety-range", lambda: odeint(neg, Y0, T, options=dict(safety=2.0)), ValueError,
         r"safety must be in \(0, 1\], got 2\.0"),
    case("min_step-gt-max_step",
         lambda: odeint(neg, Y0, T, options=dict(min_step=1.0, max_step=0.5)), ValueError,
         r"options\['min_step'\] = 1\.0 exceeds max_step = 0\.5"),
    case("jump_t-nan", lambda: odeint(neg, Y0, T, options=dict(jump_t=[float("nan")])),
         ValueError, r"options\['jump_t'\] must be finite"),
    case("scipy-solver-unknown",
         lambda: odeint(neg, Y0, T, method="scipy_solver", options=dict(solver="XYZ")),
         ValueError, r"solver.*'XYZ'"),
    # event arguments of odeint
    case("event_fn-not-callable", lambda: odeint(neg, Y0, T, event_fn=3), ValueError,
         r"event_fn must be callable.*got 3"),
    case("event_per_sample-no-event_fn", lambda: odeint(neg, Y0, T, event_per_sample=True),
         ValueError, r"event_per_sample=True needs an event_fn"),
    case("event_per_sample-str",
         lambda: odeint(neg, YB, T, event_fn=lambda t, y: y[:, 0] - 0.5,
                        event_per_sample="no"),
         ValueError, r"event_per_sample must be True or False, got 'no'"),
    case("event-three-times",
         lambda: odeint(neg, Y0, [0.0, 1.0, 2.0], event_fn=lambda t, y: y[0] - 0.5),
         ValueError, r"with event_fn, t must hold 2 times.*got 3"),
    case("event-fixed-no-step_size",
         lambda: odeint(neg, Y0, T, method="rk4", options=dict(num_steps=4),
                        event_fn=lambda t, y: y[0] - 0.5),
         ValueError, r"needs options\['step_size'\]"),
    # what func returns (checked at every call: shape, dtype, device)
    case("func-returns-none", lambda: odeint(lambda t, y: None, Y0, T), ValueError,
         r"func must return a tensor like y0, got NoneType at t=0\.0"),
    case("func-wrong-shape", lambda: odeint(lambda t, y: y[:1], Y0, T), ValueError,
         r"func's output has shape \(1,\) but the state has shape \(2,\)"),
    case("func-shape-changes-midsolve",
         lambda: odeint(changes_after(3, lambda y: torch.cat([y, y])), Y0, T), ValueError,
         r"func's output has shape \(4,\) but the state has shape \(2,\) \(at t=.*evaluation 4"),
    case("func-dtype-changes-midsolve",
         lambda: odeint(changes_after(5, lambda y: y.float()), Y0, T, method="rk4",
                        options=dict(step_size=0.25)),
         ValueError, r"func's output has dtype torch\.float32 but the state has dtype "
                     r"torch\.float64 \(at t=.*evaluation 6"),
    case("func-device-changes-midsolve",
         lambda: odeint(changes_after(2, lambda y: y.to("meta")), Y0, T), ValueError,
         r"func's output is on meta but the state is on cpu"),
    case("func-tuple-member-count",
         lambda: odeint(lambda t, s: (s[0],), (Y0, Y0), T), ValueError,
         r"func must return a tuple of 2 tensors like y0, got tuple of 1"),
    case("func-implicit-jacobian-dtype",
         lambda: odeint(changes_after(1, lambda y: y.float()), YB, T, method="radauIIA5",
                        options=dict(num_steps=2)),
         ValueError, r"func's output has dtype torch\.float32.*evaluation 2"),
    case("y0-empty-implicit",
         lambda: odeint(neg, torch.empty(0, 2, dtype=F64), T, method="implicit_euler"),
         ValueError, r"y0 is empty \(shape \(0, 2\)\); method 'implicit_euler'"),
    case("func-nan-after-t0",
         lambda: odeint(lambda t, y: y * (float("nan") if t > 0 else -1.0), Y0, T),
         StepSizeUnderflowError, r"step size underflow at t=0\.0.*the vector field or a trial "
                                 r"state became non-finite"),
    case("func-nan-at-t0", lambda: odeint(lambda t, y: y * float("nan"), Y0, T),
         NonFiniteStateError, r"func\(t0, y0\) is not finite \(NaN/inf\) at t0=0\.0"),
]

# norms returning the wrong thing (adaptive solves): the argument is options['norm']
ODEINT_CASES += [
    case("norm-returns-vector", lambda: odeint(neg, Y0, T, options=dict(norm=torch.abs)),
         ValueError, r"options\['norm'\] must return one real number.*shape \(2,\)"),
    case("norm-returns-none", lambda: odeint(neg, Y0, T, options=dict(norm=lambda e: None)),
         ValueError, r"options\['norm'\] must return one real number.*NoneType"),
    case("norm-returns-negative",
         lambda: odeint(neg, Y0, T, options=dict(norm=lambda e: -e.abs().max())), ValueError,
         r"options\['norm'\] returned a negative value"),
    case("norm-returns-nan", lambda: odeint(neg, Y0, T, options=dict(norm=_norm_nan)),
         ValueError, r"options\['norm'\] returned nan for a finite \(scaled\) error at t=0\.0"),
    case("norm-returns-nan-first_step",
         lambda: odeint(neg, Y0, T, options=dict(norm=_norm_nan, first_step=0.1)), ValueError,
         r"options\['norm'\] returned nan"),
]

# ----------------------------------------------------------------------- odeint_adjoint

ADJOINT_CASES = [
    case("func-not-callable", lambda: odeint_adjoint(3, Y0, T, adjoint_params=()),
         ValueError, r"func must be callable.*got int"),
    case("func-no-module-no-params", lambda: odeint_adjoint(neg, Y0, T), ValueError,
         r"func is a function, not an nn\.Module.*adjoint_params"),
    case("adjoint_params-tensor",
         lambda: odeint_adjoint(linear_module(), Y0, T,
                                adjoint_params=torch.zeros(2, 2, dtype=F64)),
         ValueError, r"adjoint_params must be a sequence of tensors, got one tensor of shape "
                     r"\(2, 2\)"),
    case("adjoint_params-weight",
         lambda: (lambda m: odeint_adjoint(m, Y0, T, adjoint_params=m.lin.weight))(Switch()),
         ValueError, r"adjoint_params must be a sequence of tensors, got one tensor"),
    case("adjoint_params-int",
         lambda: odeint_adjoint(linear_module(), Y0, T, adjoint_params=3), ValueError,
         r"adjoint_params must be a sequence of tensors.*got int"),
    case("adjoint_params-floats",
         lambda: odeint_adjoint(linear_module(), Y0, T, adjoint_params=[1.0]), ValueError,
         r"adjoint_params\[0\] must be a tensor, got float"),
    case("adjoint_params-dtype",
         lambda: odeint_adjoint(neg, Y0, T,
                                adjoint_params=(torch.zeros(2, requires_grad=True),)),
         ValueError, r"adjoint_params must share y0's dtype and device.*torch\.float32"),
    case("adjoint_rtol-negative",
         lambda: odeint_adjoint(linear_module(), Y0, T, adjoint_rtol=-1.0), ValueError,
         r"adjoint_rtol must be a finite number >= 0, got -1\.0"),
    case("adjoint_rtol-bool",
         lambda: odeint_adjoint(linear_module(), Y0, T, adjoint_rtol=True), ValueError,
         r"adjoint_rtol must be a float.*got bool"),
    case("adjoint_atol-str",
         lambda: odeint_adjoint(linear_module(), Y0, T, adjoint_atol="1e-9"), ValueError,
         r"adjoint_atol must be a float.*got str"),
    case("adjoint_rtol-tensor",
         lambda: odeint_adjoint(linear_module(), Y0, T,
                                adjoint_rtol=torch.full((2,), 1e-6, dtype=F64)),
         ValueError, r"adjoint_rtol must be a float for the backward solve"),
    case("adjoint_method-unknown",
         lambda: odeint_adjoint(linear_module(), Y0, T, adjoint_method="nope"), ValueError,
         r"adjoint_method='nope' is not a known method"),
    case("adjoint_method-hyper",
         lambda: odeint_adjoint(linear_module(), YB, T, adjoint_method=hyper(),
                                adjoint_options=dict(num_steps=2)),
         ValueError, r"adjoint_method='hyper\(euler\)' is a learned solver"),
    case("method-hyper",
         lambda: odeint_adjoint(linear_module(), YB, T, method=hyper(),
                                options=dict(num_steps=2)),
         ValueError, r"method='hyper\(euler\)' is a learned solver"),
    case("adjoint_options-list",
         lambda: odeint_adjoint(linear_module(), Y0, T, adjoint_options=[("norm", "seminorm")]),
         ValueError, r"adjoint_options must be a dict or None, got list"),
    case("adjoint_options-norm-unknown",
         lambda: odeint_adjoint(linear_module(), Y0, T, adjoint_options=dict(norm="semi")),
         ValueError, r"adjoint_options\['norm'\] = 'semi' is unknown"),
    case("adjoint_options-norm-int",
         lambda: odeint_adjoint(linear_module(), Y0, T, adjoint_options=dict(norm=3)),
         ValueError, r"adjoint_options\['norm'\] must be a name or a callable, got 3"),
    case("adjoint_options-unknown",
         lambda: odeint_adjoint(linear_module(), Y0, T, adjoint_options=dict(foo=1)),
         ValueError, r"adjoint_options: unknown option 'foo'"),
    case("adjoint_options-step_size",
         lambda: odeint_adjoint(linear_module(), Y0, T, adjoint_options=dict(step_size=-1)),
         ValueError, r"adjoint_options\['step_size'\] must be a finite number > 0, got -1"),
    case("adjoint_options-seminorm-fixed",
         lambda: odeint_adjoint(linear_module(), Y0, T, adjoint_method="rk4",
                                adjoint_options=dict(norm="seminorm", step_size=0.5)),
         ValueError, r"adjoint_options\['norm'\] = 'seminorm' has no effect"),
    case("y0-complex",
         lambda: odeint_adjoint(neg, Y0.to(torch.complex128), T, adjoint_params=()),
         ValueError, r"y0 is complex \(torch\.complex128\); odeint_adjoint"),
    case("y0-float16", lambda: odeint_adjoint(neg, Y0.half(), T, adjoint_params=()),
         ValueError, r"y0 has dtype torch\.float16"),
    case("rtol-negative", lambda: odeint_adjoint(linear_module(), Y0, T, rtol=-1.0),
         ValueError, r"rtol must be a finite number >= 0, got -1\.0"),
    case("options-unknown",
         lambda: odeint_adjoint(linear_module(), Y0, T, options=dict(foo=1),
                                adjoint_options={}),
         ValueError, r"unknown option 'foo'"),
    case("t-not-monotonic", lambda: odeint_adjoint(linear_module(), Y0, [0.0, 1.0, 0.5]),
         ValueError, r"t is not strictly monotonic"),
    case("event_per_sample",
         lambda: odeint_adjoint(linear_module(), YB, T, event_fn=lambda t, y: y[:, 0] - 9.0,
                                event_per_sample=True),
         ValueError, r"odeint_adjoint does not support per-sample events"),
    case("backward-func-shape-changes",
         lambda: adjoint_backward_with(lambda out: torch.cat([out, out])), ValueError,
         r"func's output has shape \(4,\) but the state has shape \(2,\).*backward \(adjoint\)"),
    case("backward-func-dtype-changes-t-grad",
         lambda: adjoint_backward_with(lambda out: out.float(), t_grad=True), ValueError,
         r"func's output has dtype torch\.float32.*backward \(adjoint\)"),
]

# ----------------------------------------------------------------------- odeint_event


def _event(**kw):
    kw.setdefault("event_fn", lambda t, y: y[0] - 0.5)
    return odeint_event(kw.pop("func", neg), kw.pop("y0", Y0), kw.pop("t0", T0), **kw)


EVENT_CASES = [
    case("func-not-callable", lambda: _event(func=None), ValueError, r"func must be callable"),
    case("event_fn-none", lambda: _event(event_fn=None), ValueError,
         r"event_fn must be callable.*got None"),
    case("event_fn-int", lambda: _event(event_fn=3), ValueError, r"event_fn must be callable"),
    case("odeint_interface-int", lambda: _event(odeint_interface=3), ValueError,
         r"odeint_interface must be callable.*got 3"),
    case("t0-two-elements", lambda: _event(t0=torch.tensor([0.0, 1.0])), ValueError,
         r"t0 must be a tensor with one element.*shape \(2,\)"),
    case("t0-str", lambda: _event(t0="zero"), ValueError, r"t0 must be a tensor.*'zero'"),
    case("t0-complex", lambda: _event(t0=torch.tensor(0j)), ValueError,
         r"t0 must be real.*complex"),
    case("reverse_time-str", lambda: _event(reverse_time="no"), ValueError,
         r"reverse_time must be True or False, got 'no'"),
    case("event_per_sample-str", lambda: _event(event_per_sample=1), ValueError,
         r"event_per_sample must be True or False, got 1"),
    case("event_per_sample-adjoint",
         lambda: _event(func=linear_module(), y0=YB, event_fn=lambda t, y: y[:, 0] - 9.0,
                        event_per_sample=True, odeint_interface=odeint_adjoint),
         ValueError, r"event_per_sample=True works through hyperode\.odeint only"),
    case("y0-complex", lambda: _event(y0=Y0.to(torch.complex128)), ValueError,
         r"y0 is complex \(torch\.complex128\); odeint_event"),
    case("y0-bfloat16", lambda: _event(y0=Y0.bfloat16()), ValueError,
         r"y0 has dtype torch\.bfloat16"),
    case("event_fn-zero-at-t0", lambda: _event(event_fn=lambda t, y: y[0] - 1.0), ValueError,
         r"event_fn is already 0 at t0=0\.0"),
    case("event_fn-nan-at-t0", lambda: _event(event_fn=lambda t, y: y[0] * float("nan")),
         ValueError, r"event_fn is not finite at t0=0\.0"),
    case("event_fn-returns-none", lambda: _event(event_fn=lambda t, y: None), ValueError,
         r"event_fn must return a tensor, got NoneType"),
    case("event_fn-per-sample-shape",
         lambda: _event(y0=YB, event_fn=lambda t, y: y - 0.5, event_per_sample=True),
         ValueError, r"event_fn\(t, y\) must return shape \[B\] = \(3,\); got \(3, 2\)"),
]

# ----------------------------------------------------------------------- HyperSolver

HYPER_CASES = [
    case("base-unknown", lambda: HyperSolver("dopri6", MLPHyperNet(2)), ValueError,
         r"HyperSolver: base method='dopri6' is not a known method"),
    case("base-int", lambda: HyperSolver(3, MLPHyperNet(2)), ValueError,
         r"HyperSolver: base must be a method name or an explicit.*got int: 3"),
    case("base-implicit", lambda: HyperSolver("implicit_euler", MLPHyperNet(2)), ValueError,
         r"HyperSolver: base 'implicit_euler' is not an explicit Butcher tableau"),
    case("base-adams", lambda: HyperSolver("explicit_adams", MLPHyperNet(2)), ValueError,
         r"base 'explicit_adams' is not an explicit Butcher tableau"),
    case("base-hypersolver", lambda: HyperSolver(hyper(), MLPHyperNet(2)), ValueError,
         r"the base must be a Butcher tableau, not another hypersolver"),
    case("g-function", lambda: HyperEuler(lambda eps, t, y, dy: y), ValueError,
         r"HyperEuler: g must be a torch\.nn\.Module.*got function"),
    case("enabled-str", lambda: HyperEuler(MLPHyperNet(2), enabled="yes"), ValueError,
         r"HyperEuler: enabled must be a bool, got 'yes'"),
    case("with_base-order", lambda: hyper().with_base("rk4"), ValueError,
         r"with_base: 'rk4' has order 4 but g was fitted for order 1"),
    case("forward-rtol", lambda: hyper()(neg, YB, T, num_steps=4, rtol=1e-3), ValueError,
         r"HyperEuler\.forward: unexpected argument\(s\) \['rtol'\].*rtol does not apply"),
    case("forward-no-grid", lambda: hyper()(neg, YB, T), ValueError,
         r"give exactly one of step_size, num_steps, grid_points; got none"),
    case("forward-two-grids", lambda: hyper()(neg, YB, T, num_steps=4, step_size=0.1),
         ValueError, r"give exactly one of.*\['num_steps', 'step_size'\]"),
    case("odeint-rtol",
         lambda: odeint(neg, YB, T, method=hyper(), rtol=1e-3, options=dict(num_steps=4)),
         ValueError, r"rtol=0\.001 does not apply to method 'hyper\(euler\)'"),
    case("odeint-atol-tensor",
         lambda: odeint(neg, YB, T, method=hyper(), atol=torch.tensor(1e-3, dtype=F64),
                        options=dict(num_steps=4)),
         ValueError, r"atol=tensor\(0\.0010.*does not apply to method 'hyper\(euler\)'"),
    case("odeint-adaptive-option",
         lambda: odeint(neg, YB, T, method=hyper(), options=dict(max_step=0.1)), ValueError,
         r"options \['max_step'\] apply only to adaptive solves"),
    case("g-wrong-shape",
         lambda: odeint(neg, YB, T, method=HyperEuler(WrongG(lambda y: y[:1])).double(),
                        options=dict(num_steps=2)),
         ValueError, r"g's output has shape \(1, 2\) but the state has shape \(3, 2\)"),
    case("g-wrong-dtype",
         lambda: odeint(neg, YB, T, method=HyperEuler(WrongG(lambda y: y.float())),
                        options=dict(num_steps=2)),
         ValueError, r"g's output has dtype torch\.float32 but the state has dtype "
                     r"torch\.float64"),
]

# ----------------------------------------------------------------------- fitting

FIT_CASES = [
    case("hyper-not-hypersolver", lambda: fit("euler", neg, YB, progress=False), ValueError,
         r"fit: expected a HyperSolver, got str"),
    case("hyper-disabled",
         lambda: fit_quick(hyper=HyperEuler(MLPHyperNet(2), enabled=False).double()),
         ValueError, r"fit: the hypersolver is disabled"),
    case("field_fn-not-callable", lambda: fit_quick(field_fn=3), ValueError,
         r"fit: field_fn must be callable.*got int"),
    case("initial_states-empty-tensor", lambda: fit_quick(torch.empty(0, 2, dtype=F64)),
         ValueError, r"fit: initial_states is empty \(shapes \[\(0, 2\)\]\)"),
    case("initial_states-0-dim", lambda: fit_quick(torch.tensor(1.0, dtype=F64)), ValueError,
         r"fit: initial_states must be batched along dim 0.*\[\(\)\]"),
    case("initial_states-int", lambda: fit_quick(torch.ones(3, 2, dtype=torch.int64)),
         ValueError, r"fit: initial_states must be float32 or float64, got torch\.int64"),
    case("initial_states-half", lambda: fit_quick(YB.half()), ValueError,
         r"fit: initial_states must be float32 or float64, got torch\.float16"),
    case("initial_states-nan", lambda: fit_quick(YB * float("nan")), ValueError,
         r"fit: initial_states contains non-finite values"),
    case("initial_states-dtype-vs-g", lambda: fit_quick(YB.float()), ValueError,
         r"fit: initial_states is torch\.float32 on cpu but hyper\.g's parameters are "
         r"torch\.float64"),
    case("initial_states-int-scalar", lambda: fit_quick(3), ValueError,
         r"fit: initial_states must be an iterable of z0 batches.*got int"),
    case("initial_states-empty-list", lambda: fit_quick([]), ValueError,
         r"fit: initial_states yielded no \(more\) batches"),
    case("initial_states-strings", lambda: fit_quick(["a"]), ValueError,
         r"fit: initial_states must yield tensors.*got str"),
    case("validation-empty", lambda: fit_quick(validation=torch.empty(0, 2, dtype=F64)),
         ValueError, r"fit: validation is empty"),
    case("validation-element", lambda: fit_quick(validation=[YB, 3]), ValueError,
         r"fit: validation must be a batch of z0 or a list of them.*int"),
    case("validation-not-iterable", lambda: fit_quick(validation=3.0), ValueError,
         r"fit: validation must be a batch of z0.*got float"),
    case("callback-int", lambda: fit_quick(callback=3), ValueError,
         r"fit: callback must be None or callable.*got int: 3"),
    case("progress-str", lambda: fit_quick(progress="yes"), ValueError,
         r"fit: progress must be True or False, got 'yes'"),
    case("config-str", lambda: fit(hyper(), neg, YB, "fast"), ValueError,
         r"fit: config must be a FitConfig or None, got 'fast'"),
    case("override-unknown", lambda: fit_quick(iteration=5), ValueError,
         r"fit: unknown setting\(s\) \['iteration'\]"),
    case("iterations-zero", lambda: FitConfig(iterations=0), ValueError,
         r"FitConfig: iterations must be an int >= 1, got 0"),
    case("num_steps-zero", lambda: FitConfig(num_steps=0), ValueError,
         r"FitConfig: num_steps.*got 0"),
    case("num_steps-empty", lambda: FitConfig(num_steps=()), ValueError,
         r"FitConfig: num_steps must be an int K >= 1 or a non-empty tuple.*\(\)"),
    case("t_span-equal", lambda: FitConfig(t_span=(1.0, 1.0)), ValueError,
         r"FitConfig: t_span must hold two distinct finite numbers"),
    case("weights-zero", lambda: FitConfig(residual_weight=0.0), ValueError,
         r"FitConfig: residual_weight and trajectory_weight are both 0"),
    case("eta_min-gt-lr", lambda: FitConfig(lr=1e-3, eta_min=1e-2), ValueError,
         r"FitConfig: eta_min=0\.01 exceeds lr=0\.001"),
    case("rtol-negative", lambda: FitConfig(rtol=-1.0), ValueError,
         r"FitConfig: rtol must be a finite number >= 0, got -1\.0"),
    case("reference_method-fixed", lambda: FitConfig(reference_method="rk4"), ValueError,
         r"FitConfig: reference_method='rk4' has no error estimate.*rtol/atol would be "
         r"ignored"),
    case("reference_method-unknown", lambda: FitConfig(reference_method="nope"), ValueError,
         r"FitConfig: reference_method: method='nope' is not a known method"),
    case("adversarial-str", lambda: FitConfig(adversarial="yes"), ValueError,
         r"FitConfig: adversarial must be an Adversarial or None, got 'yes'"),
    case("Adversarial-field_lr", lambda: Adversarial(field_lr=0.0), ValueError,
         r"Adversarial: field_lr must be a finite number > 0, got 0\.0"),
    case("prepare_batch-method-fixed",
         lambda: prepare_batch("euler", neg, YB, method="euler"), ValueError,
         r"prepare_batch: method='euler' has no error estimate"),
    case("reference_trajectory-method-fixed",
         lambda: reference_trajectory(neg, YB, [0.0, 1.0], method="rk4"), ValueError,
         r"reference_trajectory: method='rk4' has no error estimate"),
]

FIT_CASES += [
    case("uniform_mesh-num_steps", lambda: uniform_mesh((0.0, 1.0), 0), ValueError,
         r"uniform_mesh: num_steps.*got 0"),
    case("residuals-base", lambda: residuals("implicit_euler", neg, YB[None], [0.0]),
         ValueError, r"residuals: base 'implicit_euler' is not an explicit Butcher tableau"),
]

# ----------------------------------------------------------------------- NeuralODE / SolverConfig

NN_CASES = [
    case("NeuralODE-field-function", lambda: NeuralODE(neg), ValueError,
         r"NeuralODE: vector_field must be a torch\.nn\.Module.*got function"),
    case("NeuralODE-t_span-equal", lambda: NeuralODE(Autonomous(nn.Linear(2, 2)), (1.0, 1.0)),
         ValueError,
         r"NeuralODE: t_span must hold two distinct finite numbers, got \(1\.0, 1\.0\)"),
    case("NeuralODE-t_span-str", lambda: NeuralODE(Autonomous(nn.Linear(2, 2)), "ab"),
         ValueError, r"NeuralODE: t_span must be a pair \(s0, s1\) of numbers, got 'ab'"),
    case("NeuralODE-t_span-nan",
         lambda: NeuralODE(Autonomous(nn.Linear(2, 2)), (0.0, float("nan"))), ValueError,
         r"NeuralODE: t_span must hold two distinct finite numbers"),
    case("NeuralODE-solver-str",
         lambda: NeuralODE(Autonomous(nn.Linear(2, 2)), solver="dopri5"), ValueError,
         r"NeuralODE: solver must be a SolverConfig, got str"),
    case("NeuralODE-sensitivity",
         lambda: NeuralODE(Autonomous(nn.Linear(2, 2)), sensitivity="backprop"), ValueError,
         r"NeuralODE: sensitivity must be one of \('autograd', 'adjoint'\), got 'backprop'"),
    case("NeuralODE-seminorm-str",
         lambda: NeuralODE(Autonomous(nn.Linear(2, 2)), sensitivity="adjoint",
                           seminorm="yes"),
         ValueError, r"NeuralODE: seminorm must be a bool, got 'yes'"),
    case("NeuralODE-seminorm-autograd",
         lambda: NeuralODE(Autonomous(nn.Linear(2, 2)), seminorm=True), ValueError,
         r"NeuralODE: seminorm=True only applies to sensitivity='adjoint'"),
    case("NeuralODE-t_eval-list", lambda: node()(torch.ones(3, 2), [0.0, 1.0]), ValueError,
         r"NeuralODE: t_eval must be a non-empty 1-D tensor, got \[0\.0, 1\.0\]"),
    case("NeuralODE-t_eval-start", lambda: node()(torch.ones(3, 2), torch.tensor([0.5, 1.0])),
         ValueError, r"NeuralODE: t_eval must start at t_span\[0\] = 0\.0, got t_eval\[0\] = 0\.5"),
    case("NeuralODE-control", lambda: node()(torch.ones(3, 2), control=torch.ones(3, 2)),
         ValueError, r"NeuralODE: control was given but the vector field is not DataControlled"),
    case("NeuralODE-z0-half", lambda: node()(torch.ones(3, 2).half()), ValueError,
         r"y0 has dtype torch\.float16: half-precision states are not supported"),
    case("NeuralODE-z0-list", lambda: node()([1.0, 2.0]), ValueError,
         r"y0 must be a torch\.Tensor.*got list"),
    case("NeuralODE-hyper-adjoint",
         lambda: NeuralODE(Autonomous(nn.Linear(2, 2).double()), sensitivity="adjoint",
                           solver=SolverConfig(method=hyper(), num_steps=2))(YB),
         ValueError, r"method='hyper\(euler\)' is a learned solver"),
    case("SolverConfig-rtol-negative", lambda: SolverConfig(rtol=-1.0), ValueError,
         r"SolverConfig: rtol must be a finite number >= 0, got -1\.0"),
    case("SolverConfig-atol-str", lambda: SolverConfig(atol="1e-4"), ValueError,
         r"SolverConfig: atol must be a finite number >= 0, got '1e-4'"),
    case("SolverConfig-adjoint_rtol-nan", lambda: SolverConfig(adjoint_rtol=float("nan")),
         ValueError, r"SolverConfig: adjoint_rtol must be a finite number >= 0, got nan"),
    case("SolverConfig-method-unknown", lambda: SolverConfig(method="nope"), ValueError,
         r"SolverConfig: method='nope' is not a known method"),
    case("SolverConfig-fixed-no-grid", lambda: SolverConfig(method="rk4"), ValueError,
         r"SolverConfig: method='rk4' is fixed-step.*needs step_size=h or num_steps=n"),
    case("SolverConfig-two-grids",
         lambda: SolverConfig(method="rk4", step_size=0.1, num_steps=3), ValueError,
         r"SolverConfig: give only one of step_size, num_steps"),
    case("SolverConfig-step_size-negative", lambda: SolverConfig(method="rk4", step_size=-1.0),
         ValueError, r"SolverConfig: options\['step_size'\] must be a finite number > 0, "
                     r"got -1\.0"),
    case("SolverConfig-step_size-bool", lambda: SolverConfig(method="rk4", step_size=True),
         ValueError, r"SolverConfig: step_size must be a finite number > 0, got True"),
    case("SolverConfig-num_steps-float", lambda: SolverConfig(method="rk4", num_steps=2.5),
         ValueError, r"SolverConfig: options\['num_steps'\] must be an int >= 1, got 2\.5"),
    case("SolverConfig-options-grid-field", lambda: SolverConfig(options={"num_steps": 3}),
         ValueError, r"SolverConfig: give num_steps as the field num_steps=\.\.\."),
    case("SolverConfig-options-unknown", lambda: SolverConfig(options={"foo": 1}), ValueError,
         r"SolverConfig: unknown option 'foo'"),
    case("SolverConfig-options-int", lambda: SolverConfig(options=3), ValueError,
         r"SolverConfig: options must be a dict or a tuple of \(name, value\) pairs, got 3"),
    case("SolverConfig-options-record_steps",
         lambda: SolverConfig(options={"record_steps": "no"}), ValueError,
         r"SolverConfig: options\['record_steps'\] must be True or False, got 'no'"),
    case("SolverConfig-adjoint_norm", lambda: SolverConfig(adjoint_norm="semi"), ValueError,
         r"SolverConfig: adjoint_norm must be None or one of.*got 'semi'"),
    case("SolverConfig-adjoint_method", lambda: SolverConfig(adjoint_method="nope"),
         ValueError, r"SolverConfig: adjoint_method='nope' is not a known method"),
    case("SolverConfig-hyper-rtol",
         lambda: SolverConfig(method=hyper(), num_steps=4, rtol=1e-3), ValueError,
         r"SolverConfig: rtol=0\.001 does not apply to method='hyper\(euler\)'"),
    case("SolverConfig-hyper-no-grid", lambda: SolverConfig(method=hyper()), ValueError,
         r"SolverConfig: method='hyper\(euler\)' is fixed-step.*needs step_size"),
    case("SolverConfig.fixed-no-grid", lambda: SolverConfig.fixed("rk4"), ValueError,
         r"SolverConfig\.fixed: give exactly one of step_size, num_steps; got step_size=None"),
    case("SolverConfig.adaptive-fixed-method", lambda: SolverConfig.adaptive("rk4"),
         ValueError, r"SolverConfig\.adaptive: method='rk4' has no error estimate"),
    case("SolverConfig.replace-unknown", lambda: SolverConfig().replace(stepsize=0.1),
         ValueError, r"SolverConfig\.replace: unknown field\(s\) \['stepsize'\]"),
]

# ----------------------------------------------------------------------- data loaders


def _truncated_idx(tmp_dir: str) -> str:
    path = f"{tmp_dir}/train-images-idx3-ubyte"
    with open(path, "wb") as fh:
        fh.write(b"\x00\x00")
    return path


DATA_CASES = [
    case("spheres-dim", lambda: spheres(dim=1), ValueError,
         r"dim must be an integer >= 2, got 1"),
    case("spheres-n_train", lambda: spheres(n_train=0), ValueError,
         r"n_train must be an integer >= 1, got 0"),
    case("spheres-seed", lambda: spheres(seed=-1), ValueError,
         r"seed must be an integer >= 0, got -1"),
    case("spheres-dim-float", lambda: spheres(dim=2.5), ValueError,
         r"dim must be an integer >= 2, got 2\.5"),
    case("xor-noise", lambda: xor(noise=-0.1), ValueError,
         r"noise must be in \[0, inf\), got -0\.1"),
    case("xor-n_test-str", lambda: xor(n_test="10"), ValueError,
         r"n_test must be an integer >= 1, got '10'"),
    case("sample_density-name", lambda: sample_density("nope", 10), ValueError,
         r"density must be one of .*pinwheel.*got 'nope'"),
    case("sample_density-n", lambda: sample_density("pinwheel", 0), ValueError,
         r"n must be an integer >= 1, got 0"),
    case("density-n_train-bool", lambda: density("rings", n_train=True), ValueError,
         r"n_train must be an integer >= 1, got True"),
    case("digits-test_fraction", lambda: digits(test_fraction=1.5), ValueError,
         r"test_fraction must be in \(0, 1\), got 1\.5"),
    case("digits-seed-str", lambda: digits(seed="0"), ValueError,
         r"seed must be an integer >= 0, got '0'"),
    case("load_task-unknown", lambda: load_task("imagenet"), ValueError,
         r"task must be one of .*got 'imagenet'"),
    case("load_task-mnist-no-dir", lambda: load_task("mnist"), ValueError,
         r"task 'mnist' reads files the user already has: pass data_dir"),
    case("load_task-data_dir-int", lambda: load_task("cifar10", data_dir=3), ValueError,
         r"data_dir must be a folder path \(str or os\.PathLike\), got int: 3"),
    case("load_mnist-missing", lambda: load_mnist("/nonexistent/mnist"), FileNotFoundError,
         r"MNIST file 'train-images-idx3-ubyte' not found \(looked for /nonexistent/mnist"),
    case("load_mnist-none", lambda: load_mnist(None), ValueError,
         r"data_dir must be a folder path.*got NoneType: None"),
    case("load_cifar10-missing", lambda: load_cifar10("/nonexistent/cifar"),
         FileNotFoundError, r"CIFAR-10 batches not found: /nonexistent/cifar lacks data_batch_1"),
    case("load_cifar10-int", lambda: load_cifar10(10), ValueError,
         r"data_dir must be a folder path.*got int: 10"),
    case("subset-too-many", lambda: subset(split(), n_train=10, n_test=None), ValueError,
         r"n_train=10 exceeds the 4 samples available"),
    case("Split-int-x", lambda: split(x_train=torch.zeros(4, 2, dtype=torch.int64)),
         ValueError, r"x_train must be a floating-point tensor \[N, \.\.\.\]"),
    case("Split-labels-negative", lambda: split(y_train=-torch.ones(4, dtype=torch.int64)),
         ValueError, r"labels must be >= 0, got a minimum of -1"),
    case("pendulum-n_times", lambda: pendulum(n_times=1), ValueError,
         r"n_times must be an integer >= 2, got 1"),
    case("irregular_spirals-max_obs", lambda: irregular_spirals(min_obs=5, max_obs=3),
         ValueError, r"max_obs must be an integer >= 5, got 3"),
    case("read_idx-truncated", "read_idx", ValueError,
         r"train-images-idx3-ubyte: truncated: 2 bytes"),
]

ENTRY_POINTS = {  # name: (cases, count in the docstring, prefix of the test ids)
    "odeint / solve": (ODEINT_CASES, 75, "odeint"),
    "odeint_adjoint / solve_adjoint": (ADJOINT_CASES, 28, "adjoint"),
    "odeint_event": (EVENT_CASES, 16, "event"),
    "HyperSolver": (HYPER_CASES, 16, "hyper"),
    "hyper fitting": (FIT_CASES, 34, "fit"),
    "NeuralODE / SolverConfig": (NN_CASES, 34, "nn"),
    "data loaders": (DATA_CASES, 24, "data"),
}


def test_case_counts():
    """The counts in the module docstring are the real ones (at least 120 in all)."""
    for name, (cases, expected, _) in ENTRY_POINTS.items():
        assert len(cases) == expected, f"{name}: {len(cases)} cases, docstring says {expected}"
    assert len(ALL_CASES) == 227
    assert len({c.id for c in ALL_CASES}) == len(ALL_CASES)


ALL_CASES = [pytest.param(*c.values, id=f"{prefix}:{c.id}")
             for cases, _, prefix in ENTRY_POINTS.values() for c in cases]


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize(("fn", "exc", "pattern"), ALL_CASES)
def test_bad_input(fn, exc, pattern, tmp_path):
    if fn == "read_idx":
        path = _truncated_idx(str(tmp_path))
        fn = lambda: read_idx(path, 3)  # noqa: E731
    with pytest.raises(exc) as info:
        fn()
    assert type(info.value) is exc or issubclass(type(info.value), exc)
    message = str(info.value)
    assert re.search(pattern, message, flags=re.S), \
        f"pattern {pattern!r} not found in {type(info.value).__name__}: {message}"


# ----------------------------------------------------------------------- bounded time/memory


def _bounded(fn, exc, pattern, seconds=2.0, megabytes=5.0):
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(exc, match=pattern):
            fn()
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert time.perf_counter() - start < seconds
    assert peak < megabytes * 2**20, f"peak Python allocation {peak / 2**20:.1f} MiB"


@pytest.mark.parametrize("method", ["euler", "dopri5", "implicit_euler"])
def test_tiny_step_size_fails_fast_without_building_the_grid(method):
    """1e9 steps: refused before the first step, with no list of a billion floats."""
    _bounded(lambda: odeint(neg, Y0, T, method=method, options=dict(step_size=1e-9)),
             MaxStepsExceededError, r"the fixed grid has 1000000000 steps, more than "
                                    r"max_num_steps=100000")


def test_huge_num_steps_fails_fast():
    _bounded(lambda: odeint(neg, Y0, T, method="rk4", options=dict(num_steps=10**12)),
             MaxStepsExceededError, r"1000000000000 steps, more than max_num_steps")


def test_unbounded_event_grid_is_bounded_by_max_num_steps():
    """An event solve on a fixed grid has no end; max_num_steps stops it."""
    _bounded(lambda: odeint_event(neg, Y0, T0, event_fn=lambda t, y: y[0] + 1.0,
                                  method="euler", options=dict(step_size=1e-3,
                                                               max_num_steps=200)),
             MaxStepsExceededError, r"the event never fired", seconds=5.0)


# ----------------------------------------------------------------------- half precision


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("entry", ["odeint", "solve", "odeint_adjoint", "solve_adjoint",
                                   "odeint_event", "hyper", "NeuralODE"])
def test_half_precision_is_refused_everywhere(dtype, entry):
    """The policy (README, "Errors and guarantees"): float16/bfloat16 states are refused
    with a ValueError naming y0's dtype, by every entry point, before f is called."""
    calls = []

    def f(t, y):
        calls.append(t)
        return -y

    y0 = YB.to(dtype)
    run = {
        "odeint": lambda: odeint(f, y0, T),
        "solve": lambda: solve(f, y0, T, method="rk4", options=dict(num_steps=2)),
        "odeint_adjoint": lambda: odeint_adjoint(f, y0, T, adjoint_params=()),
        "solve_adjoint": lambda: solve_adjoint(f, y0, T, adjoint_params=()),
        "odeint_event": lambda: odeint_event(f, y0, T0, event_fn=lambda t, y: y.sum() - 9),
        "hyper": lambda: hyper().to(dtype)(f, y0, T, num_steps=2),
        "NeuralODE": lambda: node().to(dtype)(y0),
    }[entry]
    with pytest.raises(ValueError, match=rf"y0 has dtype {re.escape(str(dtype))}: "
                                         r"half-precision states are not supported"):
        run()
    assert calls == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method", ["dopri5", "rk4", "implicit_euler"])
def test_func_output_on_another_device_cuda(method):
    """A state on CUDA and a field that returns a CPU tensor (or the reverse) from its
    third call on: ValueError naming both devices, not a device error from a kernel."""
    y0 = YB.cuda()
    with pytest.raises(ValueError, match=r"func's output is on cpu but the state is on cuda"):
        odeint(changes_after(2, lambda y: y.cpu()), y0, T, method=method,
               options=None if method == "dopri5" else dict(num_steps=4))


def test_numpy_scalars_are_accepted_as_numbers():
    """Not bad input: numpy integers and floats count as ints and floats."""
    a = odeint(neg, Y0, T, method="rk4", options=dict(num_steps=np.int64(4)))
    b = odeint(neg, Y0, T, method="rk4", options=dict(step_size=np.float32(0.25)))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    c = odeint(neg, Y0, T, rtol=np.float32(1e-6), atol=np.float64(1e-8),
               options=dict(max_num_steps=np.int32(1000)))
    torch.testing.assert_close(c[-1], Y0 * np.exp(-1.0), rtol=1e-5, atol=1e-7)


def test_hypersolver_accepts_odeint_default_tolerances():
    """Only tolerances that would be ignored are refused: odeint's defaults, passed
    explicitly (as wrappers such as solve_cost do), and SolverConfig's are fine."""
    h = hyper()
    a = odeint(neg, YB, T, method=h, options=dict(num_steps=4))
    b = odeint(neg, YB, T, method=h, rtol=1e-7, atol=1e-9, options=dict(num_steps=4))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    cfg = SolverConfig(rtol=1e-3, atol=1e-3).replace(method=h, num_steps=4)
    assert (cfg.rtol, cfg.atol) == (1e-4, 1e-4)
    torch.testing.assert_close(solve(neg, YB, T, **cfg.odeint_kwargs()).ys, a, rtol=0, atol=0)


def test_named_fixed_methods_accept_and_ignore_tolerances_like_torchdiffeq():
    a = odeint(neg, Y0, T, method="rk4", options=dict(num_steps=4))
    b = odeint(neg, Y0, T, method="rk4", rtol=1e-3, atol=1e-2, options=dict(num_steps=4))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
