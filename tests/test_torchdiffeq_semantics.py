"""torchdiffeq's behaviours, checked on hyperode without torchdiffeq's own test suite.

Each test compares hyperode with the installed torchdiffeq on the same problem (skipped
where that torchdiffeq lacks the feature) or with a closed form. What is covered, in the
order of torchdiffeq's ``odeint_tests.py``, ``norm_tests.py`` and ``gradient_tests.py``:

* fixed grids: a method with no grid option steps on ``t`` itself; ``step_size`` grids;
  ``grid_constructor(func, y0, t)`` (forward and adjoint backward pass); ``perturb``;
  ``interp="linear"/"cubic"``; hyperode's default of landing on the output times;
* the step callbacks, forward and ``*_adjoint``: where they are called, how often, with
  what arguments; the warning for a callback a method cannot call; exceptions;
* ``method=None``, the ``dtype`` option, unknown options (hyperode raises ``ValueError``
  where torchdiffeq only warns: its deliberate policy);
* ``min_step``/``max_step`` (clamped; a step at ``min_step`` is accepted);
* complex states (explicit methods) and the error for implicit methods;
* norms: the user's forward norm and adjoint norm see torchdiffeq's structures;
  ``adjoint_options=dict(norm="seminorm")``;
* adjoint backward passes where ``f`` ignores ``y`` and/or has no parameters;
* ``jump_t``; one-element tensor tolerances; float32 ``t``; ``t`` as a list.

Name pairs: hyperode's ``rk4`` is the classic RK4, torchdiffeq's ``rk4`` the 3/8 rule
(hyperode's ``rk4_38``). Adaptive step sequences are compared exactly only on problems
without rejected steps: after a rejection hyperode does not let the next accepted step
grow (Hairer's rule), torchdiffeq does, so their step sequences part there.
"""

from __future__ import annotations

import inspect
import math
import warnings
from functools import partial

import pytest
import torch

import hyperode

try:
    import torchdiffeq
    from torchdiffeq._impl.odeint import SOLVERS as TD_SOLVERS
except ImportError:  # pragma: no cover - torchdiffeq is a dev dependency
    torchdiffeq = None
    TD_SOLVERS = {}

F64 = torch.float64
F32 = torch.float32
C128 = torch.complex128
CALLBACKS = ("callback_step", "callback_accept_step", "callback_reject_step")


# --------------------------------------------------------------------------- torchdiffeq features


def _td_init_params(method: str) -> set[str]:
    cls = TD_SOLVERS.get(method)
    if cls is None:
        return set()
    return {name for c in cls.__mro__ if "__init__" in vars(c)
            for name in inspect.signature(c.__init__).parameters}


def _td_has(feature: str) -> bool:
    if torchdiffeq is None:
        return False
    if feature in TD_SOLVERS or feature in hyperode.METHODS:  # a method name
        return feature in TD_SOLVERS
    if feature in ("grid_constructor", "perturb", "interp"):
        return feature in _td_init_params("euler")
    if feature in ("min_step", "max_step", "jump_t", "step_t", "first_step"):
        return feature in _td_init_params("dopri5")
    if feature == "callbacks":
        return hasattr(TD_SOLVERS.get("dopri5"), "valid_callbacks")
    if feature == "event_fn":
        return "event_fn" in inspect.signature(torchdiffeq.odeint).parameters
    raise AssertionError(f"unknown torchdiffeq feature {feature!r}")


def needs_td(*features: str):
    """Skip unless the installed torchdiffeq has every one of ``features``."""
    missing = [f for f in features if not _td_has(f)]
    why = "torchdiffeq is not installed" if torchdiffeq is None else \
        f"the installed torchdiffeq lacks {', '.join(missing)}"
    return pytest.mark.skipif(bool(missing), reason=why)


# hyperode name -> torchdiffeq name, explicit fixed-step methods
FIXED_PAIRS = {"euler": "euler", "midpoint": "midpoint", "rk4_38": "rk4", "heun2": "heun2",
               "heun3": "heun3"}
EXPLICIT_FIXED = ("euler", "midpoint", "rk4", "rk4_38", "heun2", "heun3", "ralston",
                  "explicit_adams", "implicit_adams")
IMPLICIT = ("implicit_euler", "implicit_midpoint", "trapezoid", "radauIIA3", "gl4",
            "radauIIA5", "gl6", "sdirk2", "trbdf2")
ADAPTIVE = ("dopri5", "bosh3", "tsit5", "dopri8", "adaptive_heun", "fehlberg2")



# --------------------------------------------------------------------------- helpers


class Recorder:
    """``f(t, y) = cos(t) y + t`` (non-autonomous, so stage times matter) that records the
    times it is called at."""

    def __init__(self):
        self.ts: list[float] = []

    def __call__(self, t, y):
        self.ts.append(float(t))
        return torch.cos(t) * y + t

    @property
    def nfe(self) -> int:
        return len(self.ts)


def add_callbacks(f, suffix: str = "") -> dict[str, list]:
    """Set the three callbacks (``callback_*<suffix>``) on ``f``; return their call logs
    of ``(t0, y0, dt)`` as given (tensors cloned)."""
    logs: dict[str, list] = {name: [] for name in CALLBACKS}

    def clone(y):
        return tuple(m.detach().clone() for m in y) if isinstance(y, tuple) \
            else y.detach().clone()

    for name in CALLBACKS:
        def callback(t0, y0, dt, _log=logs[name]):
            _log.append((t0.detach().clone(), clone(y0), dt.detach().clone()))
        setattr(f, name + suffix, callback)
    return logs


def t0_dt(log) -> list[tuple[float, float]]:
    return [(float(t0), float(dt)) for t0, _, dt in log]


def assert_pairs_close(a, b, *, rtol, atol):
    """Two lists of (t0, dt) agree in length and values."""
    assert len(a) == len(b)
    torch.testing.assert_close(torch.tensor(a, dtype=F64).reshape(-1, 2),
                               torch.tensor(b, dtype=F64).reshape(-1, 2), rtol=rtol, atol=atol)


class SmallNet(torch.nn.Module):
    """torchdiffeq's ``_NeuralF``: ``tanh(W2 tanh(W1 x + b1) + b2) * sin(k t)``, with
    deterministic weights (torchdiffeq's seed-0 default initialisation when ``td_init``,
    drawn from a private generator otherwise), float64."""

    def __init__(self, width: int = 10, k: float = 20.0, td_init: bool = False):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.linears = torch.nn.Sequential(
                torch.nn.Linear(2, width), torch.nn.Tanh(), torch.nn.Linear(width, 2),
                torch.nn.Tanh())
        self.double()
        if not td_init:
            g = torch.Generator().manual_seed(0)
            with torch.no_grad():
                for p in self.parameters():
                    p.copy_(torch.randn(p.shape, generator=g, dtype=F64))
        self.k = k
        self.nfe = 0

    def forward(self, t, x):
        self.nfe += 1
        return self.linears(x) * torch.sin(self.k * t)


# =========================================================================== fixed grids


NONUNIFORM_T = torch.tensor([0.0, 0.1, 0.35, 0.4, 1.0, 1.7], dtype=F64)
Y0 = torch.tensor([1.0, -0.5], dtype=F64)


@needs_td("callbacks")
@pytest.mark.parametrize("method", FIXED_PAIRS)
def test_no_grid_option_steps_on_t_itself(method):
    """No step_size/grid_constructor: one step per interval of t, as torchdiffeq."""
    fh, ft = Recorder(), Recorder()
    steps_h = add_callbacks(fh)["callback_step"]
    steps_t = add_callbacks(ft)["callback_step"]
    with warnings.catch_warnings():  # accept/reject callbacks on a fixed method
        warnings.simplefilter("ignore")
        yh = hyperode.odeint(fh, Y0, NONUNIFORM_T, method=method)
        yt = torchdiffeq.odeint(ft, Y0, NONUNIFORM_T, method=FIXED_PAIRS[method])
    torch.testing.assert_close(yh, yt, rtol=0, atol=1e-14)
    assert fh.ts == ft.ts  # same evaluations, at the same times
    assert_pairs_close(t0_dt(steps_h), t0_dt(steps_t), rtol=0, atol=1e-15)
    assert [t0 for t0, _ in t0_dt(steps_h)] == NONUNIFORM_T[:-1].tolist()


def test_classic_rk4_steps_on_t_itself():
    """hyperode's rk4 (classic, not torchdiffeq's 3/8 rule), one step per interval of t."""
    f = Recorder()
    ys = hyperode.odeint(f, Y0, NONUNIFORM_T, method="rk4")

    def g(t, y):
        t = torch.tensor(t, dtype=F64)
        return torch.cos(t) * y + t

    y, expected = Y0, [Y0]
    for t0, t1 in zip(NONUNIFORM_T[:-1].tolist(), NONUNIFORM_T[1:].tolist()):
        h = t1 - t0
        k1 = g(t0, y)
        k2 = g(t0 + h / 2, y + h / 2 * k1)
        k3 = g(t0 + h / 2, y + h / 2 * k2)
        k4 = g(t1, y + h * k3)
        y = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        expected.append(y)
    torch.testing.assert_close(ys, torch.stack(expected), rtol=0, atol=1e-14)
    assert f.nfe == 4 * (len(NONUNIFORM_T) - 1)


@needs_td("callbacks")
@pytest.mark.parametrize("direction", [1.0, -1.0], ids=["forward", "backward"])
@pytest.mark.parametrize("step_size", [0.3, 0.1, 0.25, 0.07])
@pytest.mark.parametrize("method", ["euler", "rk4_38"])
def test_step_size_grid_is_torchdiffeqs(method, step_size, direction):
    """Uniform steps from t[0], the last one cut at t[-1]: the same grid points."""
    t = torch.tensor([0.0, 1.3], dtype=F64) * direction + 0.2
    fh, ft = Recorder(), Recorder()
    steps_h = add_callbacks(fh)["callback_step"]
    steps_t = add_callbacks(ft)["callback_step"]
    opts = dict(step_size=step_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yh = hyperode.odeint(fh, Y0, t, method=method, options=opts)
        yt = torchdiffeq.odeint(ft, Y0, t, method=FIXED_PAIRS[method], options=opts)
    torch.testing.assert_close(yh, yt, rtol=0, atol=1e-13)
    assert fh.nfe == ft.nfe
    assert len(steps_h) == len(steps_t) == math.ceil(1.3 / step_size - 1e-9)
    # grid points (torchdiffeq passes |dt| for a decreasing t: compare the times only)
    assert [t0 for t0, _ in t0_dt(steps_h)] == \
        pytest.approx([t0 for t0, _ in t0_dt(steps_t)], abs=1e-14)
    if direction > 0:
        assert_pairs_close(t0_dt(steps_h), t0_dt(steps_t), rtol=0, atol=1e-14)


@pytest.mark.parametrize("adjoint", [False, True], ids=["odeint", "adjoint"])
def test_grid_constructor_forward_and_adjoint(adjoint):
    """torchdiffeq's TestGridConstructor: called with t, and by the backward pass with
    the reversed t, for which it returns a decreasing grid."""
    calls = []

    def grid_constructor(func, y0, t):
        calls.append(t.tolist())
        assert t.shape == (2,)
        if t[0] < t[1]:
            return torch.linspace(0, 1, 11, dtype=F64)
        return torch.linspace(1, 0, 11, dtype=F64)

    x0 = torch.tensor(1.0, dtype=F64, requires_grad=True)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    solver = partial(hyperode.odeint_adjoint, adjoint_params=()) if adjoint else hyperode.odeint
    xs = solver(lambda t, x: x, x0, t, method="euler",
                options=dict(grid_constructor=grid_constructor))
    torch.testing.assert_close(xs[1], x0.detach() * 1.1**10, rtol=1e-14, atol=0)
    assert calls == [[0.0, 1.0]]
    if adjoint:
        xs[1].backward()
        assert calls == [[0.0, 1.0], [1.0, 0.0]]
        # the Euler scheme's exact gradient: the backward Euler steps of a' = -a
        torch.testing.assert_close(x0.grad, torch.tensor(1.1**10, dtype=F64), rtol=1e-14,
                                   atol=0)


@needs_td("grid_constructor")
def test_grid_constructor_called_with_torchdiffeqs_times():
    """Once forward with t, then once per output interval backward, latest first."""
    seen = {}
    for lib in (hyperode, torchdiffeq):
        calls = seen[lib.__name__] = []

        def grid_constructor(func, y0, t, _calls=calls):
            _calls.append(t.tolist())
            func(t[0], y0)  # func evaluates the (forward or backward) field at y0
            return torch.linspace(float(t[0]), float(t[-1]), 9, dtype=F64)

        x0 = torch.tensor([1.0, 2.0], dtype=F64, requires_grad=True)
        t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
        xs = lib.odeint_adjoint(lambda t, x: -x, x0, t, method="euler", adjoint_params=(),
                                options=dict(grid_constructor=grid_constructor))
        xs.sum().backward()
    assert seen["hyperode"] == seen["torchdiffeq"] == \
        [[0.0, 0.5, 1.0], [1.0, 0.5], [0.5, 0.0]]


def test_grid_constructor_y0_is_a_tensor_in_the_adjoint_backward_pass():
    def grid_constructor(func, y0, t):  # the usual way to write one
        return torch.linspace(float(t[0]), float(t[-1]), 11, dtype=y0.dtype, device=y0.device)

    x0 = torch.tensor([1.0, 2.0], dtype=F64, requires_grad=True)
    xs = hyperode.odeint_adjoint(lambda t, x: -x, x0, torch.tensor([0.0, 1.0], dtype=F64),
                                 method="euler", adjoint_params=(),
                                 options=dict(grid_constructor=grid_constructor))
    xs.sum().backward()
    # xs[0] is x0 itself (gradient 1); xs[1] contributes 0.9**10 (Euler on the adjoint)
    torch.testing.assert_close(x0.grad, torch.full((2,), 1 + 0.9**10, dtype=F64))


def _perturb_run(method, dtype, adjoint, perturb, extra=None):
    """torchdiffeq's test_odeint_perturb: step_size 0.5 on [0, 1]; the times f sees
    forward and (adjoint) backward."""
    forward, backward = [], []
    seen = forward

    def f(t, x):
        seen.append(t.item())
        return -x

    x0 = torch.tensor([1.0, 2.0], dtype=dtype, requires_grad=True)
    t = torch.tensor([0.0, 1.0])
    opts = dict(step_size=0.5, perturb=perturb, **(extra or {}))
    solver = partial(hyperode.odeint_adjoint, adjoint_params=()) if adjoint else hyperode.odeint
    with warnings.catch_warnings():  # Adams correctors may report slow convergence
        warnings.simplefilter("ignore")
        xs = solver(f, x0, t, method=method, options=opts)
        if adjoint:
            seen = backward
            xs.sum().backward()
    return forward, backward


def _check_perturb(method, dtype, adjoint, extra=None):
    forward, backward = _perturb_run(method, dtype, adjoint, True, extra)
    assert forward and 0.0 not in forward and 0.5 not in forward and 1.0 not in forward
    assert all(0.0 < t < 1.0 for t in forward)
    if adjoint:
        assert backward and 1.0 not in backward and 0.5 not in backward \
            and 0.0 not in backward
    forward, backward = _perturb_run(method, dtype, adjoint, False, extra)
    assert 0.0 in forward and 0.5 in forward
    if adjoint:
        assert 1.0 in backward and 0.5 in backward


@pytest.mark.parametrize("adjoint", [False, True], ids=["odeint", "adjoint"])
@pytest.mark.parametrize("dtype", [F32, F64], ids=["f32", "f64"])
@pytest.mark.parametrize("method", EXPLICIT_FIXED)
def test_perturb_never_evaluates_on_grid_points(method, dtype, adjoint):
    _check_perturb(method, dtype, adjoint)


@pytest.mark.parametrize("adjoint", [False, True], ids=["odeint", "adjoint"])
@pytest.mark.parametrize("method", IMPLICIT)
def test_perturb_never_evaluates_on_grid_points_implicit(method, adjoint):
    _check_perturb(method, F64, adjoint)


@pytest.mark.parametrize("jacobian", ["jacrev", "jacfwd", "fd"])
@pytest.mark.parametrize("method", ["implicit_euler", "radauIIA5"])
def test_perturb_implicit_adjoint_any_jacobian(method, jacobian):
    _check_perturb(method, F64, True, extra=dict(jacobian=jacobian))


@needs_td("perturb")
@pytest.mark.parametrize("t", [[0.0, 1.0], [1.0, 0.0]], ids=["forward", "backward"])
@pytest.mark.parametrize("method", FIXED_PAIRS)
def test_perturb_evaluates_where_torchdiffeq_does(method, t):
    seen = []
    for lib, name in ((hyperode, method), (torchdiffeq, FIXED_PAIRS[method])):
        f = Recorder()
        ys = lib.odeint(f, Y0, torch.tensor(t, dtype=F64), method=name,
                        options=dict(step_size=0.25, perturb=True))
        seen.append((f.ts, ys))
    (ts_h, ys_h), (ts_t, ys_t) = seen
    assert ts_h == ts_t
    torch.testing.assert_close(ys_h, ys_t, rtol=0, atol=1e-14)


OFF_GRID_T = torch.tensor([0.0, 0.1, 0.6, 0.65, 1.0], dtype=F64)  # 0.6 and 0.65: one step


@needs_td("interp")
@pytest.mark.parametrize("direction", [1.0, -1.0], ids=["forward", "backward"])
@pytest.mark.parametrize("interp", ["linear", "cubic"])
@pytest.mark.parametrize("method", ["euler", "midpoint", "rk4_38"])
def test_interp_matches_torchdiffeq_off_the_grid(method, interp, direction):
    fh, ft = Recorder(), Recorder()
    opts = dict(step_size=0.25, interp=interp)
    t = OFF_GRID_T if direction > 0 else 1.0 - OFF_GRID_T  # 0.4 and 0.35 share a step
    yh = hyperode.odeint(fh, Y0, t, method=method, options=opts)
    yt = torchdiffeq.odeint(ft, Y0, t, method=FIXED_PAIRS[method], options=opts)
    torch.testing.assert_close(yh, yt, rtol=0, atol=1e-14)
    stages = {"euler": 1, "midpoint": 2, "rk4_38": 4}[method]
    assert ft.nfe - 4 * stages == (0 if interp == "linear" else 4)  # one f(t1) per output
    # hyperode: one f(t1, y1) per step holding outputs (0.6 and 0.65 share one)
    assert fh.nfe - 4 * stages == (0 if interp == "linear" else 3)


@needs_td("grid_constructor")
@pytest.mark.parametrize("method", ["euler", "midpoint", "rk4_38"])
def test_default_lands_on_the_output_times(method):
    """No interp: the outputs are merged into the grid and stepped onto: torchdiffeq on
    that merged grid gives the same values and evaluations."""
    fh, ft = Recorder(), Recorder()
    yh = hyperode.odeint(fh, Y0, OFF_GRID_T, method=method, options=dict(step_size=0.25))
    merged = torch.tensor([0.0, 0.1, 0.25, 0.5, 0.6, 0.65, 0.75, 1.0], dtype=F64)
    yt = torchdiffeq.odeint(ft, Y0, OFF_GRID_T, method=FIXED_PAIRS[method],
                            options=dict(grid_constructor=lambda f, y0, t: merged))
    torch.testing.assert_close(yh, yt, rtol=0, atol=1e-14)
    assert fh.ts == ft.ts
    # and not torchdiffeq's default (linear interpolation on the plain grid)
    ylin = torchdiffeq.odeint(Recorder(), Y0, OFF_GRID_T, method=FIXED_PAIRS[method],
                              options=dict(step_size=0.25))
    assert not torch.allclose(yh, ylin, rtol=0, atol=1e-6)


# =========================================================================== callbacks


@needs_td("callbacks")
@pytest.mark.parametrize("tuple_state", [False, True], ids=["tensor", "tuple"])
@pytest.mark.parametrize("method", ["euler", "rk4_38"])
def test_fixed_grid_callback_step_per_step(method, tuple_state):
    """torchdiffeq's test_steps: step_size 0.1 on [0, 1] -> 10 calls, before each step,
    with 0-dim tensors t0, dt and y0 in the user's structure."""
    def field(t, y):
        if tuple_state:
            return -y[0], y[1] * torch.cos(t)
        return -y

    y0 = (torch.tensor(1.0, dtype=F64), torch.ones(2, 2, dtype=F64)) if tuple_state else Y0
    t = torch.tensor([0.0, 1.0], dtype=F64)
    logs = {}
    for lib, name in ((hyperode, method), (torchdiffeq, FIXED_PAIRS[method])):
        def f(t, y):
            return field(t, y)
        log = logs[lib.__name__] = add_callbacks(f)
        del f.callback_accept_step, f.callback_reject_step  # a fixed method warns on them
        lib.odeint(f, y0, t, method=name, options=dict(step_size=0.1))
        assert len(log["callback_step"]) == 10
    for (th, yh, dh), (tt, yt, dt) in zip(logs["hyperode"]["callback_step"],
                                          logs["torchdiffeq"]["callback_step"]):
        assert th.shape == dh.shape == () and isinstance(th, torch.Tensor)
        torch.testing.assert_close((float(th), float(dh)), (float(tt), float(dt)))
        if tuple_state:
            assert isinstance(yh, tuple) and [m.shape for m in yh] == [(), (2, 2)]
        else:
            assert isinstance(yh, torch.Tensor) and yh.shape == Y0.shape
        torch.testing.assert_close(yh, yt, rtol=0, atol=1e-14)


@needs_td("callbacks")
@pytest.mark.parametrize("tuple_state", [False, True], ids=["tensor", "tuple"])
def test_adaptive_callbacks_match_torchdiffeq_without_rejections(tuple_state):
    """dopri5 on y' = -y: no rejected step, so hyperode and torchdiffeq take the same
    steps (the last one excepted: hyperode lands on t[-1], torchdiffeq overshoots)."""
    def f(t, y):
        return tuple(-m for m in y) if tuple_state else -y

    y0 = (torch.tensor(1.0, dtype=F64), torch.tensor([[0.5, 2.0]], dtype=F64)) \
        if tuple_state else torch.tensor([1.0, 2.0], dtype=F64)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    logs = {}
    for lib in (hyperode, torchdiffeq):
        def g(t, y):
            return f(t, y)
        logs[lib.__name__] = add_callbacks(g)
        lib.odeint(g, y0, t, method="dopri5")
    h, td = logs["hyperode"], logs["torchdiffeq"]
    for name in CALLBACKS:
        assert len(h[name]) == len(td[name]), name
    assert not h["callback_reject_step"] and len(h["callback_step"]) > 3
    assert t0_dt(h["callback_step"]) == t0_dt(h["callback_accept_step"])
    assert_pairs_close(t0_dt(h["callback_step"])[:-1], t0_dt(td["callback_step"])[:-1],
                       rtol=1e-9, atol=1e-15)  # step sizes: round-off in their arithmetic
    assert float(h["callback_step"][-1][0] + h["callback_step"][-1][2]) == 1.0
    for (th, yh, dh), (_, yt, _) in zip(h["callback_step"], td["callback_step"]):
        assert th.shape == dh.shape == ()
        assert type(yh) is type(yt)
        torch.testing.assert_close(yh, yt, rtol=1e-9, atol=1e-14)


@pytest.mark.parametrize("method", ["dopri5", "bosh3", "tsit5", "dopri8", "fehlberg2"])
def test_adaptive_callbacks_on_every_attempt(method):
    """callback_step before every attempt, then exactly one of accept/reject, with the
    attempt's (t0, y0, dt): the counts are the solver's accepted + rejected steps."""
    f = SmallNet()
    logs = add_callbacks(f)
    sol = hyperode.solve(f, torch.tensor([1.0, 2.0], dtype=F64),
                         torch.tensor([0.0, 1.0], dtype=F64), method=method,
                         options=dict(record_steps=True))
    steps, accepted, rejected = (t0_dt(logs[n]) for n in CALLBACKS)
    assert rejected, "the problem must reject some steps"
    assert len(steps) == len(accepted) + len(rejected) == sol.stats.steps
    assert len(accepted) == sol.stats.accepted and len(rejected) == sol.stats.rejected
    assert sorted(accepted + rejected) == sorted(steps)
    assert [t0 + dt for t0, dt in accepted] == pytest.approx(sol.stats.accepted_ts,
                                                             rel=1e-15, abs=1e-15)
    assert [t0 for t0, _ in rejected] == sol.stats.rejected_ts
    for t0, _, dt in logs["callback_step"]:
        assert isinstance(t0, torch.Tensor) and t0.shape == dt.shape == ()


@needs_td("callbacks")
def test_adaptive_callback_invariants_hold_in_torchdiffeq_too():
    """Same problem in both libraries: steps = accepted + rejected; the same steps up to
    the first rejection."""
    counts = {}
    for lib in (hyperode, torchdiffeq):
        f = SmallNet()
        logs = add_callbacks(f)
        lib.odeint(f, torch.tensor([1.0, 2.0], dtype=F64), torch.tensor([0.0, 1.0], dtype=F64))
        steps, accepted, rejected = (t0_dt(logs[n]) for n in CALLBACKS)
        assert len(steps) == len(accepted) + len(rejected) and rejected
        counts[lib.__name__] = steps, rejected
    (steps_h, rej_h), (steps_t, rej_t) = counts["hyperode"], counts["torchdiffeq"]
    first = steps_t.index(rej_t[0])
    assert steps_h.index(rej_h[0]) == first
    assert_pairs_close(steps_h[:first + 2], steps_t[:first + 2], rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize(("method", "options"), [
    ("euler", dict(step_size=0.1)), ("rk4", dict(step_size=0.1)), ("dopri5", None),
    ("bosh3", None)], ids=["euler", "rk4", "dopri5", "bosh3"])
def test_adjoint_callbacks_in_the_backward_pass(method, options):
    """callback_*_adjoint are called by the backward solve only, callback_* by the
    forward solve only (torchdiffeq's test_steps)."""
    f = SmallNet(k=2.0)
    fwd = add_callbacks(f)
    adj = add_callbacks(f, "_adjoint")
    fixed = options is not None
    if fixed:
        for name in ("callback_accept_step", "callback_reject_step"):
            delattr(f, name)
            delattr(f, name + "_adjoint")
    sol = hyperode.solve_adjoint(f, torch.tensor([1.0, 2.0], dtype=F64),
                                 torch.tensor([0.0, 1.0], dtype=F64), method=method,
                                 options=options)
    n_forward = {n: len(v) for n, v in fwd.items()}
    assert not any(adj.values())
    sol.ys.sum().backward()
    assert {n: len(v) for n, v in fwd.items()} == n_forward
    if fixed:
        assert n_forward["callback_step"] == 10 and len(adj["callback_step"]) == 10
        return
    assert n_forward["callback_step"] == sol.stats.steps
    back = sol.backward_stats  # (hyperode's dt is signed; torchdiffeq's is |dt| here)
    assert len(adj["callback_step"]) == back.steps > 0
    assert len(adj["callback_accept_step"]) == back.accepted
    assert len(adj["callback_reject_step"]) == back.rejected
    assert len(adj["callback_step"]) == \
        len(adj["callback_accept_step"]) + len(adj["callback_reject_step"])
    assert float(adj["callback_step"][0][0]) == 1.0 and float(adj["callback_step"][0][2]) < 0


@needs_td("callbacks")
def test_adjoint_callbacks_receive_torchdiffeqs_backward_state():
    w = torch.tensor([0.5, -1.0], dtype=F64, requires_grad=True)
    first = {}
    for lib in (hyperode, torchdiffeq):
        def f(t, y):
            return -w * y
        log = add_callbacks(f, "_adjoint")["callback_step"]
        y0 = torch.tensor([1.0, 2.0], dtype=F64, requires_grad=True)
        ys = lib.odeint_adjoint(f, y0, torch.tensor([0.0, 1.0], dtype=F64), adjoint_params=(w,))
        ys[-1].sum().backward()
        first[lib.__name__] = log[0][1]
    h, td = first["hyperode"], first["torchdiffeq"]
    assert isinstance(h, tuple) and [m.shape for m in h] == [m.shape for m in td]
    for a, b in zip(h, td):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("callback", ["callback_accept_step", "callback_reject_step"])
@pytest.mark.parametrize("method", EXPLICIT_FIXED + IMPLICIT)
def test_warning_for_a_callback_a_fixed_method_cannot_call(method, callback):
    """torchdiffeq's test_wrong_callback."""
    def f(t, y):
        return -y

    setattr(f, callback, lambda t0, y0, dt: None)
    with pytest.warns(UserWarning, match=callback):
        hyperode.odeint(f, Y0, torch.tensor([0.0, 1.0], dtype=F64), method=method)


@pytest.mark.skipif("scipy_solver" not in hyperode.METHODS, reason="no scipy_solver")
@pytest.mark.parametrize("callback", CALLBACKS)
def test_warning_for_any_callback_with_scipy_solver(callback):
    def f(t, y):
        return -y

    setattr(f, callback, lambda t0, y0, dt: None)
    with pytest.warns(UserWarning, match=callback):
        hyperode.odeint(f, Y0, torch.tensor([0.0, 1.0], dtype=F64), method="scipy_solver")


@needs_td("callbacks")
def test_torchdiffeq_warns_too():
    def f(t, y):
        return -y

    f.callback_accept_step = lambda t0, y0, dt: None
    with pytest.warns(UserWarning):
        torchdiffeq.odeint(f, Y0, torch.tensor([0.0, 1.0], dtype=F64), method="euler")


def test_no_warning_for_callbacks_an_adaptive_method_calls():
    def f(t, y):
        return -y

    add_callbacks(f)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hyperode.odeint(f, Y0, torch.tensor([0.0, 1.0], dtype=F64))
        hyperode.odeint(f, Y0, torch.tensor([0.0, 1.0], dtype=F64), method="bosh3")


def test_warning_for_an_adjoint_callback_a_fixed_backward_solve_cannot_call():
    def f(t, y):
        return -y

    f.callback_reject_step_adjoint = lambda t0, y0, dt: None
    y0 = Y0.clone().requires_grad_(True)
    with pytest.warns(UserWarning, match="callback_reject_step"):
        ys = hyperode.odeint_adjoint(f, y0, torch.tensor([0.0, 1.0], dtype=F64),
                                     method="euler", adjoint_params=())
        ys.sum().backward()


class CallbackError(Exception):
    pass


def _raise(t0, y0, dt):
    raise CallbackError("from the callback")


@pytest.mark.parametrize(("callback", "method", "options"), [
    ("callback_step", "euler", None),
    ("callback_step", "rk4", dict(step_size=0.25)),
    ("callback_step", "dopri5", None),
    ("callback_accept_step", "dopri5", None),
    ("callback_reject_step", "dopri5", dict(first_step=1.0)),  # the first step is rejected
    ("callback_step_adjoint", "dopri5", None),
    ("callback_accept_step_adjoint", "tsit5", None),
    ("callback_step_adjoint", "rk4", dict(step_size=0.25)),
])
def test_a_raising_callback_propagates_its_exception(callback, method, options):
    def f(t, y):
        return -y * torch.cos(5 * t)

    setattr(f, callback, _raise)
    y0 = Y0.clone().requires_grad_(True)
    with pytest.raises(CallbackError, match="from the callback"):
        ys = hyperode.odeint_adjoint(f, y0, torch.tensor([0.0, 1.0], dtype=F64),
                                     method=method, options=options, adjoint_params=())
        ys.sum().backward()


# =========================================================================== options


def test_method_none_is_dopri5():
    f = SmallNet(k=2.0)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    default = hyperode.solve(f, Y0, t)
    dopri5 = hyperode.solve(f, Y0, t, method="dopri5")
    assert torch.equal(default.ys, dopri5.ys)
    assert default.stats == dopri5.stats
    if torchdiffeq is not None:
        torch.testing.assert_close(default.ys, torchdiffeq.odeint(f, Y0, t), rtol=0, atol=1e-6)


@pytest.mark.parametrize(("method", "options"), [
    ("dopri5", {}), ("tsit5", {}), ("euler", {}), ("rk4", dict(step_size=0.1)),
    ("implicit_euler", dict(step_size=0.25)), ("implicit_adams", dict(step_size=0.1))])
def test_dtype_option_accepted(method, options):
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    plain = hyperode.odeint(Recorder(), Y0, t, method=method, options=options)
    typed = hyperode.odeint(Recorder(), Y0, t, method=method,
                            options=dict(options, dtype=torch.float64))
    assert torch.equal(plain, typed)


@pytest.mark.parametrize("dtype", [torch.int64, torch.complex128, "float64", None, F64.__class__])
@pytest.mark.parametrize("method", ["dopri5", "euler"])
def test_bad_dtype_option_rejected(method, dtype):
    with pytest.raises(ValueError, match="dtype"):
        hyperode.odeint(Recorder(), Y0, torch.tensor([0.0, 1.0], dtype=F64), method=method,
                        options=dict(dtype=dtype))


@pytest.mark.parametrize("option", ["rtoll", "step_sise", "foo"])
@pytest.mark.parametrize("method", ["dopri5", "tsit5", "euler", "explicit_adams",
                                    "implicit_euler"])
def test_unknown_option_raises_naming_option_and_method(method, option):
    with pytest.raises(ValueError) as info:
        hyperode.odeint(Recorder(), Y0, torch.tensor([0.0, 1.0], dtype=F64), method=method,
                        options={option: 1})
    assert repr(option) in str(info.value) and repr(method) in str(info.value)


@needs_td("callbacks")
def test_unknown_option_torchdiffeq_only_warns():
    """The policy difference: torchdiffeq warns and solves."""
    with pytest.warns(UserWarning, match="rtoll"):
        torchdiffeq.odeint(Recorder(), Y0, torch.tensor([0.0, 1.0], dtype=F64),
                           options=dict(rtoll=1))


# =========================================================================== min/max step


class LinearODE:
    """torchdiffeq's ``LinearODE`` (problems.py): y' = A y, A skew-symmetric, dim 10."""

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        u = torch.randn(10, 10, generator=g, dtype=F64) * 0.1
        self.A = u - u.T
        self.nfe = 0

    def __call__(self, t, y):
        self.nfe += 1
        return self.A @ y

    def exact(self, t):
        y0 = torch.ones(10, dtype=F64)
        return torch.stack([torch.linalg.matrix_exp(self.A * (ti - t[0])) @ y0 for ti in t])


@pytest.mark.parametrize("max_step", [math.inf, 5.0])
@pytest.mark.parametrize("min_step", [0.0, 2.0])
@pytest.mark.parametrize("lib", [
    "hyperode", pytest.param("torchdiffeq", marks=needs_td("min_step", "callbacks"))])
def test_min_step_cuts_nfe(lib, min_step, max_step):
    """torchdiffeq's TestMinMaxStep: steps at min_step are accepted whatever their error,
    so min_step = 2 on t in [1, 8] takes a handful of steps."""
    f = LinearODE()
    logs = add_callbacks(f)
    t = torch.linspace(1, 8, 10, dtype=F64)
    ys = (hyperode if lib == "hyperode" else torchdiffeq).odeint(
        f, torch.ones(10, dtype=F64), t, method="dopri5",
        options=dict(min_step=min_step, max_step=max_step))
    if min_step > 0:
        assert f.nfe < 50
        assert not logs["callback_reject_step"]
        dts = [dt for _, dt in t0_dt(logs["callback_step"])]
        assert all(dt == min_step for dt in dts[:-1])  # clamped up to min_step
        assert dts[-1] <= min_step  # hyperode: landing on t[-1]; torchdiffeq: min_step
        torch.testing.assert_close(ys, f.exact(t), rtol=0, atol=0.1)
    else:
        assert f.nfe > 100
        torch.testing.assert_close(ys, f.exact(t), rtol=0, atol=1e-6)


@needs_td("min_step", "callbacks")
def test_min_step_same_steps_as_torchdiffeq():
    dts = {}
    for lib in (hyperode, torchdiffeq):
        f = LinearODE()
        log = add_callbacks(f)["callback_step"]
        lib.odeint(f, torch.ones(10, dtype=F64), torch.linspace(1, 8, 10, dtype=F64),
                   options=dict(min_step=2.0))
        dts[lib.__name__] = (t0_dt(log), f.nfe)
    (h, nfe_h), (td, nfe_t) = dts["hyperode"], dts["torchdiffeq"]
    assert nfe_h == nfe_t and len(h) == len(td)
    assert_pairs_close(h[:-1], td[:-1], rtol=1e-12, atol=0)
    assert h[-1][0] == pytest.approx(td[-1][0], rel=1e-12) and h[-1][0] + h[-1][1] == 8.0


@pytest.mark.parametrize("lib", [
    "hyperode", pytest.param("torchdiffeq", marks=needs_td("max_step", "callbacks"))])
def test_max_step_clamps_every_step(lib):
    f = LinearODE()
    logs = add_callbacks(f)
    t = torch.linspace(1, 8, 10, dtype=F64)
    ys = (hyperode if lib == "hyperode" else torchdiffeq).odeint(
        f, torch.ones(10, dtype=F64), t, method="dopri5", options=dict(max_step=0.05))
    dts = [dt for _, dt in t0_dt(logs["callback_step"])]
    assert max(dts) <= 0.05 and len(dts) >= 7 / 0.05
    assert not logs["callback_reject_step"]
    torch.testing.assert_close(ys, f.exact(t), rtol=0, atol=1e-8)


# =========================================================================== complex states


OMEGA = 2.0
Y0_COMPLEX = torch.tensor([1 + 0.5j, -0.3 + 2j], dtype=C128)
T_COMPLEX = torch.linspace(0, 2, 5, dtype=F64)


def rotation(t, y):
    assert not t.is_complex() and t.dtype == F64
    return 1j * OMEGA * y


def rotation_exact(t):
    return Y0_COMPLEX * torch.exp(1j * OMEGA * t)[:, None]


@pytest.mark.parametrize("method", ADAPTIVE)
def test_complex_state_adaptive_closed_form(method):
    low_order = method in ("adaptive_heun", "fehlberg2", "bosh3")
    tol = 1e-6 if low_order else 1e-9
    ys = hyperode.odeint(rotation, Y0_COMPLEX, T_COMPLEX, method=method, rtol=tol,
                         atol=tol / 100)
    assert ys.dtype == C128 and ys.shape == (5, 2)
    # fehlberg2's global error is ~500 rtol on this problem (torchdiffeq's too)
    atol = 1e-3 if method == "fehlberg2" else 1e-4 if low_order else 2e-8
    torch.testing.assert_close(ys, rotation_exact(T_COMPLEX), rtol=0, atol=atol)


@pytest.mark.parametrize(("method", "atol"), [
    ("euler", 0.2), ("midpoint", 2e-3), ("heun2", 2e-3), ("ralston", 2e-3), ("heun3", 2e-5),
    ("rk4", 1e-7), ("rk4_38", 1e-7), ("implicit_adams", 1e-8)])
def test_complex_state_fixed_closed_form(method, atol):
    ys = hyperode.odeint(rotation, Y0_COMPLEX, T_COMPLEX, method=method,
                         options=dict(step_size=1 / 64))
    assert ys.dtype == C128
    torch.testing.assert_close(ys, rotation_exact(T_COMPLEX), rtol=0, atol=atol)


@needs_td("explicit_adams")
@pytest.mark.parametrize("method", [*FIXED_PAIRS, "explicit_adams", "implicit_adams"])
def test_complex_state_fixed_matches_torchdiffeq(method):
    t = torch.linspace(0, 0.5, 3, dtype=F64)  # explicit Adams is unstable on longer spans
    opts = dict(step_size=1 / 64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yh = hyperode.odeint(rotation, Y0_COMPLEX, t, method=method, options=opts)
        yt = torchdiffeq.odeint(rotation, Y0_COMPLEX, t, method=FIXED_PAIRS.get(method, method),
                                options=opts)
    torch.testing.assert_close(yh, yt, rtol=0, atol=1e-12)


@pytest.mark.parametrize("method", IMPLICIT)
def test_complex_state_implicit_method_raises(method):
    with pytest.raises(ValueError, match="complex"):
        hyperode.odeint(rotation, Y0_COMPLEX, T_COMPLEX, method=method,
                        options=dict(step_size=0.25))


# =========================================================================== norms


TUPLE_Y0 = (torch.tensor(1.0, dtype=F64), torch.tensor([[0.5, 0.5], [0.1, 0.1]], dtype=F64))


@pytest.mark.parametrize("lib", [
    "hyperode", pytest.param("torchdiffeq", marks=needs_td("dopri5"))])
@pytest.mark.parametrize("y0", [TUPLE_Y0[0], TUPLE_Y0[:1], TUPLE_Y0, torch.ones(2, 3, dtype=F64)],
                         ids=["0dim", "tuple1", "tuple2", "2x3"])
def test_user_norm_receives_the_states_structure(lib, y0):
    """torchdiffeq's test_norm: a tensor of the state's shape, or a tuple of the members
    with their shapes."""
    seen = []

    def norm(x):
        seen.append(tuple(m.shape for m in x) if isinstance(x, tuple) else x.shape)
        return (x[0] if isinstance(x, tuple) else x).pow(2).mean().sqrt()

    def f(t, y):
        return y

    solver = hyperode if lib == "hyperode" else torchdiffeq
    solver.odeint(f, y0, torch.tensor([0.0, 1.0], dtype=F64), options=dict(norm=norm))
    expected = tuple(m.shape for m in y0) if isinstance(y0, tuple) else y0.shape
    assert seen and set(seen) == {expected}


ADJ_RTOL = ADJ_ATOL = 1e-3


def _adjoint_norm_calls(lib, y0, t_grad):
    """The calls of a user adjoint norm on f = y with two unused parameters
    (torchdiffeq's test_adjoint_norm), gradient 1 on member 0 and 2 on member 1."""
    g = torch.Generator().manual_seed(0)
    params = (torch.rand(7, generator=g, dtype=F64).requires_grad_(),
              torch.rand((), generator=g, dtype=F64).requires_grad_())
    calls = []

    def adjoint_norm(x):
        calls.append(tuple(m.detach().clone() for m in x))
        return max(m.abs().max() for m in x)

    def f(t, y):
        return tuple(y) if isinstance(y, tuple) else y

    y0 = tuple(m.clone().requires_grad_() for m in y0) if isinstance(y0, tuple) \
        else y0.clone().requires_grad_()
    t = torch.tensor([0.0, 1.0], dtype=F64, requires_grad=t_grad)
    ys = lib.odeint_adjoint(f, y0, t, rtol=ADJ_RTOL, atol=ADJ_ATOL, adjoint_params=params,
                            adjoint_options=dict(norm=adjoint_norm))
    if isinstance(ys, tuple):
        (ys[0].sum() + 2 * ys[1].sum()).backward()
    else:
        ys.sum().backward()
    return calls


@pytest.mark.parametrize("t_grad", [False, True], ids=["t", "t_grad"])
@pytest.mark.parametrize("y0", [torch.tensor(1.0, dtype=F64), torch.ones(1, dtype=F64),
                                torch.full((2, 2), 1.0, dtype=F64), TUPLE_Y0],
                         ids=["0dim", "1", "2x2", "tuple"])
def test_adjoint_user_norm_gets_torchdiffeqs_tuple(y0, t_grad):
    """(a_t, *y, *a_y, *a_params) in the user's shapes; the first call is the starting
    step's norm of state / (atol + rtol |state|): a_y members 1/(atol+rtol) and
    2/(atol+2 rtol), a_params 0, a_t 0 when t needs no gradient."""
    libs = [hyperode] + ([torchdiffeq] if _td_has("dopri5") else [])
    members = y0 if isinstance(y0, tuple) else (y0,)
    shapes = [(), *(m.shape for m in members), *(m.shape for m in members), (7,), ()]
    for lib in libs:
        calls = _adjoint_norm_calls(lib, y0, t_grad)
        assert calls, lib.__name__
        assert {tuple(tuple(m.shape) for m in c) for c in calls} == \
            {tuple(tuple(s) for s in shapes)}, lib.__name__
        first = calls[0]
        n = len(members)
        a_y = first[1 + n:1 + 2 * n]
        for i, a in enumerate(a_y):
            g = 1.0 if i == 0 else 2.0
            torch.testing.assert_close(a, torch.full_like(a, g / (ADJ_ATOL + ADJ_RTOL * g)))
        assert all(float(p.abs().max()) == 0 for p in first[-2:])
        if not t_grad:
            assert float(first[0]) == 0.0


@pytest.mark.parametrize("method", ["dopri5", "bosh3", "tsit5", "dopri8"])
def test_seminorm_backward_nfe_not_more_than_default(method):
    """torchdiffeq's test_seminorm (width 1024, its seed-0 initialisation, tol 1e-8)."""
    f = SmallNet(width=1024, k=2.0, td_init=True)
    x0 = torch.tensor([1.0, 2.0], dtype=F64)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    nfe = {}
    for norm in ("default", "seminorm"):
        sol = hyperode.solve_adjoint(f, x0, t, rtol=1e-8, atol=1e-8, method=method,
                                     adjoint_options=dict(norm=norm))
        f.nfe = 0
        sol.ys.sum().backward()
        assert f.nfe == sol.backward_stats.nfe
        nfe[norm] = f.nfe
    assert nfe["seminorm"] <= nfe["default"]


# =========================================================================== adjoint regressions


W = torch.tensor([0.5, -1.0], dtype=F64)


def _gradients(solver, f, params, method, options, t_grad, tuple_state):
    y0 = (torch.tensor([1.0, 2.0], dtype=F64, requires_grad=True),
          torch.tensor(0.5, dtype=F64, requires_grad=True)) if tuple_state else \
        torch.tensor([1.0, 2.0], dtype=F64, requires_grad=True)
    t = torch.tensor([0.0, 0.5, 1.5], dtype=F64, requires_grad=t_grad)
    for p in params:
        p.grad = None
    ys = solver(f, y0, t, method=method, options=options, rtol=1e-10, atol=1e-12)
    weights = torch.tensor([[1.0, 1.0], [0.5, -1.0], [2.0, 3.0]], dtype=F64)
    if tuple_state:
        loss = (ys[0] * weights).sum() + (ys[1] * torch.tensor([1.0, -2.0, 3.0],
                                                                dtype=F64)).sum()
    else:
        loss = (ys * weights).sum()
    loss.backward()
    inputs = [*(y0 if tuple_state else (y0,)), *params, *([t] if t_grad else [])]
    return [torch.zeros_like(x) if x.grad is None else x.grad for x in inputs]


def _fields(w):
    def no_y(t, y):  # depends on t and a parameter, not on y
        if isinstance(y, tuple):
            return -t * w * torch.ones_like(y[0]), torch.ones_like(y[1])
        return -t * w * torch.ones_like(y)

    def no_y_no_param(t, y):
        if isinstance(y, tuple):
            return -t * torch.ones_like(y[0]), 2 * t * torch.ones_like(y[1])
        return -t * torch.ones_like(y)

    def constant(t, y):  # depends on nothing at all
        if isinstance(y, tuple):
            return torch.ones_like(y[0]), torch.zeros_like(y[1])
        return torch.ones_like(y)

    def no_param(t, y):
        if isinstance(y, tuple):
            return -y[0] * torch.cos(t), y[1] * y[0].sum()
        return -y * torch.cos(t)

    return {"no_y": (no_y, (w,)), "no_y_no_param": (no_y_no_param, ()),
            "constant": (constant, ()), "no_param": (no_param, ()),
            "unused_param": (no_param, (w,))}


@pytest.mark.parametrize("tuple_state", [False, True], ids=["tensor", "tuple"])
@pytest.mark.parametrize("t_grad", [False, True], ids=["t", "t_grad"])
@pytest.mark.parametrize(("method", "options"), [
    ("dopri5", None), ("rk4", dict(step_size=1 / 128))], ids=["dopri5", "rk4"])
@pytest.mark.parametrize("case", ["no_y", "no_y_no_param", "constant", "no_param",
                                  "unused_param"])
def test_adjoint_backward_when_f_ignores_y_or_parameters(case, method, options, t_grad,
                                                         tuple_state):
    w = W.clone().requires_grad_(True)
    f, params = _fields(w)[case]
    adjoint = _gradients(partial(hyperode.odeint_adjoint, adjoint_params=params), f, params,
                         method, options, t_grad, tuple_state)
    backprop = _gradients(hyperode.odeint, f, params, method, options, t_grad, tuple_state)
    for a, b in zip(adjoint, backprop):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8)


# =========================================================================== jump_t


class JumpF:
    """torchdiffeq's ``_JumpF``: -x/2 before t = 0.5, x**2 after."""

    def __init__(self):
        self.nfe = 0

    def __call__(self, t, x):
        self.nfe += 1
        return -0.5 * x if t < 0.5 else x**2


@pytest.mark.parametrize("dtype", [F32, F64], ids=["f32", "f64"])
@pytest.mark.parametrize(("method", "adjoint"), [
    *((m, False) for m in ADAPTIVE), *((m, True) for m in ADAPTIVE if m != "adaptive_heun")])
def test_jump_t_fewer_nfe(method, adjoint, dtype):
    """torchdiffeq's TestDiscontinuities (it skips dopri8; hyperode need not)."""
    x0 = torch.tensor([1.0, 2.0], dtype=dtype, requires_grad=True)
    t = torch.tensor([0.0, 1.0])
    solver = partial(hyperode.odeint_adjoint, adjoint_params=()) if adjoint else hyperode.odeint
    simple_f, better_f = JumpF(), JumpF()
    simple = solver(simple_f, x0, t, atol=1e-6, method=method)
    better = solver(better_f, x0, t, rtol=1e-6, atol=1e-6, method=method,
                    options=dict(jump_t=torch.tensor([0.5])))
    assert better_f.nfe < simple_f.nfe
    half = x0.detach().double() * math.exp(-0.25)  # x(0.5)
    exact = half / (1 - 0.5 * half)  # x' = x^2 from t = 0.5 to 1
    # fehlberg2's global error is ~1000 rtol here, torchdiffeq's too
    torch.testing.assert_close(better[-1].double(), exact,
                               rtol=3e-3 if method == "fehlberg2" else 1e-4, atol=0)
    if adjoint:
        simple_f.nfe = better_f.nfe = 0
        simple.sum().backward()
        better.sum().backward()
        assert better_f.nfe < simple_f.nfe


@needs_td("jump_t")
@pytest.mark.parametrize("method", ["dopri5", "bosh3", "dopri8"])
def test_jump_t_decreasing_time(method):
    """jump_t on a backward-in-time solve: fewer NFE, torchdiffeq's solution."""
    def make():
        calls = []

        def f(t, x):
            calls.append(1)
            return -0.5 * x if t > 0.5 else 0.1 * x**2
        return f, calls

    t = torch.tensor([1.0, 0.0], dtype=F64)
    opts = dict(jump_t=torch.tensor([0.5], dtype=F64))
    (f1, n1), (f2, n2), (f3, _) = make(), make(), make()
    with_jump = hyperode.odeint(f1, Y0, t, method=method, rtol=1e-8, atol=1e-8, options=opts)
    without = hyperode.odeint(f2, Y0, t, method=method, rtol=1e-8, atol=1e-8)
    assert len(n1) < len(n2)
    half = Y0 * math.exp(0.25)  # x(0.5), then x' = x^2 / 10 back to 0
    exact = torch.stack([Y0, 1 / (1 / half + 0.05)])
    torch.testing.assert_close(with_jump, exact, rtol=0, atol=1e-7)
    torch.testing.assert_close(without, exact, rtol=0, atol=1e-5)
    if _td_has(method):  # (torchdiffeq's bosh3 interpolates the end point coarsely)
        td = torchdiffeq.odeint(f3, Y0, t, method=method, rtol=1e-8, atol=1e-8, options=opts)
        torch.testing.assert_close(with_jump, td, rtol=0, atol=1e-5)


# =========================================================================== inputs


def _decay(t, y):
    return -y * torch.cos(t)


def _tuple_decay(t, y):
    return -y[0] * torch.cos(t), 0.3 * y[1]


@pytest.mark.parametrize("tuple_state", [False, True], ids=["tensor", "tuple"])
@pytest.mark.parametrize("method", ["dopri5", "bosh3", "tsit5"])
def test_one_element_tensor_tolerances(method, tuple_state):
    f, y0 = (_tuple_decay, TUPLE_Y0) if tuple_state else (_decay, Y0)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    ref = hyperode.solve(f, y0, t, rtol=1e-6, atol=1e-8, method=method)
    for rtol, atol in [(torch.tensor([1e-6], dtype=F64), torch.tensor(1e-8, dtype=F64)),
                       (torch.tensor(1e-6, dtype=F64), torch.tensor([[1e-8]], dtype=F64))]:
        sol = hyperode.solve(f, y0, t, rtol=rtol, atol=atol, method=method)
        assert sol.stats == ref.stats
        for a, b in zip(sol.ys if tuple_state else (sol.ys,), ref.ys if tuple_state else
                        (ref.ys,)):
            assert torch.equal(a, b)
    # float32 tensors are their float32 values (as torchdiffeq reads them)
    rtol32, atol32 = torch.tensor([1e-6]), torch.tensor(1e-8)
    a = hyperode.odeint(f, y0, t, rtol=rtol32, atol=atol32, method=method)
    b = hyperode.odeint(f, y0, t, rtol=float(rtol32), atol=float(atol32), method=method)
    for x, y in zip(a if tuple_state else (a,), b if tuple_state else (b,)):
        assert torch.equal(x, y)
    if not tuple_state and _td_has(method):  # (torchdiffeq: 0-dim tolerances for tuples)
        td = torchdiffeq.odeint(f, y0, t, rtol=rtol32, atol=atol32, method=method)
        torch.testing.assert_close(a, td, rtol=0, atol=1e-3 if method == "bosh3" else 1e-5)


def test_one_element_tensor_tolerances_adjoint():
    grads = []
    for rtol, atol in [(1e-6, 1e-8), (torch.tensor([1e-6], dtype=F64),
                                      torch.tensor(1e-8, dtype=F64))]:
        y0 = Y0.clone().requires_grad_(True)
        ys = hyperode.odeint_adjoint(_decay, y0, torch.tensor([0.0, 1.0], dtype=F64),
                                     rtol=rtol, atol=atol, adjoint_params=())
        ys.sum().backward()
        grads.append(y0.grad)
    assert torch.equal(*grads)


@pytest.mark.parametrize(("method", "options"), [
    ("dopri5", None), ("euler", None), ("rk4", dict(step_size=0.25)),
    ("rk4", dict(step_size=0.25, interp="cubic"))], ids=["dopri5", "euler", "rk4", "cubic"])
def test_float32_t(method, options):
    """Times are read as the float64 values of the float32 ones; f gets t in the state's
    dtype; the solution keeps the state's dtype."""
    t32 = torch.tensor([0.0, 0.1, 0.5, 1.0], dtype=F32)
    seen = set()

    def f(t, y):
        seen.add(t.dtype)
        return _decay(t, y)

    ys = hyperode.odeint(f, Y0, t32, method=method, options=options)
    assert ys.dtype == F64 and seen == {F64}
    assert torch.equal(ys, hyperode.odeint(_decay, Y0, t32.double(), method=method,
                                           options=options))
    if method == "dopri5":
        exact = torch.exp(-torch.sin(t32.double()))[:, None] * Y0
        torch.testing.assert_close(ys, exact, rtol=0, atol=1e-6)
        if torchdiffeq is not None:
            torch.testing.assert_close(ys, torchdiffeq.odeint(_decay, Y0, t32), rtol=0,
                                       atol=1e-7)
    y32 = hyperode.odeint(_decay, Y0.float(), t32, method=method, options=options)
    assert y32.dtype == F32


@pytest.mark.parametrize(("method", "options"), [
    ("dopri5", None), ("euler", None), ("rk4", dict(step_size=0.25))])
def test_t_on_a_list(method, options):
    as_list = hyperode.odeint(_decay, Y0, [0.0, 0.1, 0.5, 1.0], method=method, options=options)
    as_tensor = hyperode.odeint(_decay, Y0, torch.tensor([0.0, 0.1, 0.5, 1.0], dtype=F64),
                                method=method, options=options)
    assert torch.equal(as_list, as_tensor)
    grads = []
    for t in ([0.0, 0.5, 1.0], torch.tensor([0.0, 0.5, 1.0], dtype=F64)):
        y0 = Y0.clone().requires_grad_(True)
        ys = hyperode.odeint_adjoint(_decay, y0, t, method=method, options=options,
                                     adjoint_params=())
        ys.sum().backward()
        grads.append(y0.grad)
    assert torch.equal(*grads)
