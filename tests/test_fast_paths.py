"""The no-graph fast paths of the explicit Runge–Kutta loop against the plain path.

Without a graph a tableau's stage sums are accumulated in one stacked buffer
(``hyperode.solvers.step.StageSums``) and the default RMS error norm is computed by one
dot product (``adaptive._error_ratio(..., rms=True)``). These tests run the same solves
with autograd on (the graph-recording stage loop, ``rk_step``) and off, and against
torchdiffeq, on the reference problems of ``tests/problems.py``.
"""

from __future__ import annotations

import math
import shutil

import pytest
import torch
from problems import ALL, EASY, HARMONIC, KEPLER, LINEAR

import hyperode
from hyperode.hyper import FixedGridSolve, compile_solve
from hyperode.solvers.adaptive import AdaptiveConfig, _error_ratio, fast_rms
from hyperode.solvers.controllers import IController
from hyperode.solvers.fixed import Grid, integrate_fixed
from hyperode.solvers.methods import get_method
from hyperode.solvers.norms import mixed_norm
from hyperode.solvers.problem import StateLayout, VectorField
from hyperode.solvers.stats import SolverStats
from hyperode.solvers.step import StageSums, StepResult, rk_step

# Tolerances that keep each method to a few hundred steps on these problems.
ADAPTIVE = {"dopri5": 1e-8, "dopri8": 1e-9, "bosh3": 1e-6, "fehlberg2": 1e-5,
            "adaptive_heun": 1e-5}
FIXED = ("rk4", "rk4_38", "midpoint", "heun3", "euler")


def _solve(problem, method, grad: bool, **kw):
    t = problem.times(7)
    with torch.enable_grad() if grad else torch.no_grad():
        return hyperode.solve(problem.f, problem.y0, t, method=method, **kw)


@pytest.mark.parametrize("method", sorted(ADAPTIVE))
@pytest.mark.parametrize("problem", ALL)
def test_adaptive_no_grad_matches_graph_path(problem, method):
    tol = ADAPTIVE[method]
    plain = _solve(problem, method, grad=True, rtol=tol, atol=tol)
    fast = _solve(problem, method, grad=False, rtol=tol, atol=tol)
    # Same step sequence (the ratios differ by rounding only) and the same states to a
    # few ulps of accumulated rounding per step.
    assert fast.stats.nfe == plain.stats.nfe
    assert fast.stats.accepted == plain.stats.accepted
    scale = 1.0 + plain.ys.abs().max().item()
    assert (fast.ys - plain.ys).abs().max().item() <= 1e-12 * scale * plain.stats.accepted


@pytest.mark.parametrize("method", FIXED)
@pytest.mark.parametrize("problem", (*EASY, KEPLER))
def test_fixed_no_grad_matches_graph_path(problem, method):
    opts = dict(step_size=(problem.t1 - problem.t0) / 40)
    plain = _solve(problem, method, grad=True, options=opts)
    fast = _solve(problem, method, grad=False, options=opts)
    assert fast.stats.nfe == plain.stats.nfe
    if method == "euler":  # the same single add: bit for bit
        assert torch.equal(fast.ys, plain.ys)
    else:
        assert (fast.ys - plain.ys).abs().max().item() <= 1e-13 * 40


def test_batched_float32_no_grad_matches_graph_path():
    """A batched float32 MLP field (the benchmark's shape of problem)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    y0 = torch.randn(64, 3)
    t = torch.linspace(0.0, 2.0, 5)
    field = lambda t, y: net(y)  # noqa: E731
    for method, kw in (("dopri5", dict(rtol=1e-5, atol=1e-5)),
                       ("rk4", dict(options=dict(step_size=0.05)))):
        with torch.enable_grad():
            plain = hyperode.solve(field, y0, t, method=method, **kw)
        with torch.no_grad():
            fast = hyperode.solve(field, y0, t, method=method, **kw)
        assert fast.stats.nfe == plain.stats.nfe
        torch.testing.assert_close(fast.ys, plain.ys.detach(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("problem", (LINEAR, HARMONIC, KEPLER))
def test_no_grad_fast_path_matches_torchdiffeq(problem):
    torchdiffeq = pytest.importorskip("torchdiffeq")
    t = problem.times(9)
    step = (problem.t1 - problem.t0) / 800  # every output time on the grid
    with torch.no_grad():
        ours = hyperode.odeint(problem.f, problem.y0, t, method="dopri5", rtol=1e-9, atol=1e-9)
        theirs = torchdiffeq.odeint(problem.f, problem.y0, t, method="dopri5", rtol=1e-9,
                                    atol=1e-9)
        fixed = hyperode.odeint(problem.f, problem.y0, t, method="rk4_38",
                                options=dict(step_size=step))
        fixed_ref = torchdiffeq.odeint(problem.f, problem.y0, t, method="rk4",
                                       options=dict(step_size=step))
    # Both libraries' global errors are ~1e-8 here; the fixed grids are the same up to
    # the rounding of the grid times.
    assert (ours - theirs).abs().max().item() < 1e-7
    assert (fixed - fixed_ref).abs().max().item() < 1e-10
    exact = torch.as_tensor(problem.reference(t))
    assert (ours - exact).abs().max().item() < 1e-6


@pytest.mark.parametrize("name", ("dopri5", "dopri8", "rk4", "bosh3", "fehlberg2"))
def test_stage_sums_equal_rk_step(name):
    """One step, every output of ``StageSums`` against ``rk_step`` (float64)."""
    tableau = get_method(name)
    gen = torch.Generator().manual_seed(1)
    m = torch.randn(4, 4, generator=gen, dtype=torch.float64)
    f = lambda t, y: torch.tanh(y @ m) * (1.0 + t)  # noqa: E731
    y = torch.randn(5, 4, generator=gen, dtype=torch.float64)
    with_error = tableau.b_error is not None
    with torch.no_grad():
        ref = rk_step(f, tableau, 0.3, y, 0.05, f(0.3, y), with_error)
        got = StageSums(tableau, with_error, y).step(f, 0.3, y, 0.05, f(0.3, y))
    torch.testing.assert_close(got.y1, ref.y1, rtol=0, atol=1e-15)
    assert len(got.ks) == len(ref.ks)
    for k_got, k_ref in zip(got.ks, ref.ks):
        torch.testing.assert_close(k_got, k_ref, rtol=0, atol=1e-15)
    for e_got, e_ref in ((got.error, ref.error), (got.error2, ref.error2)):
        assert (e_got is None) == (e_ref is None)
        if e_ref is not None:
            torch.testing.assert_close(e_got, e_ref, rtol=1e-12, atol=1e-18)
    assert (got.f1 is None) == (ref.f1 is None)


def test_stage_sums_field_returning_its_input():
    """``f(t, y) = y`` hands back a row of the buffer itself: no in-place overlap error,
    and the exact solution ``exp(t)``."""
    y0 = torch.tensor([1.0, 2.0], dtype=torch.float64)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    with torch.no_grad():
        for method in ("dopri5", "rk4"):
            y = hyperode.odeint(lambda t, y: y, y0, t, method=method, rtol=1e-10, atol=1e-10,
                                **({} if method == "dopri5" else dict(options=dict(
                                    step_size=0.01))))
            torch.testing.assert_close(y[-1], y0 * math.e, rtol=1e-8, atol=0)


def test_complex_state_no_grad_matches_graph_path():
    lam = torch.tensor(-0.3 + 2.0j, dtype=torch.complex128)
    y0 = torch.tensor([1.0 + 0.5j, -0.2j], dtype=torch.complex128)
    t = torch.linspace(0.0, 2.0, 4, dtype=torch.float64)
    f = lambda t, y: lam * y  # noqa: E731
    with torch.enable_grad():
        plain = hyperode.solve(f, y0, t, method="dopri5", rtol=1e-9, atol=1e-9)
    with torch.no_grad():
        fast = hyperode.solve(f, y0, t, method="dopri5", rtol=1e-9, atol=1e-9)
    assert fast.stats.nfe == plain.stats.nfe
    torch.testing.assert_close(fast.ys, plain.ys, rtol=1e-12, atol=1e-14)
    exact = y0 * torch.exp(lam * t[:, None])
    torch.testing.assert_close(fast.ys, exact, rtol=1e-7, atol=1e-8)


def test_outputs_do_not_hold_the_stage_buffer():
    """Each output of the loop is its own tensor, not a row of a step's stacked buffer
    (which would keep the whole buffer alive and be overwritten by nothing, but cost
    memory)."""
    y0 = HARMONIC.y0
    f = VectorField(HARMONIC.f, StateLayout(y0))
    t_out = [0.0, 0.5, 1.0]
    with torch.no_grad():
        ys = integrate_fixed(f, get_method("rk4"), y0, t_out, Grid(0.0, 1.0, step_size=0.1),
                             SolverStats())
    assert len(ys) == 3
    for y in ys[1:]:
        assert y._base is None
    ref = hyperode.odeint(HARMONIC.f, y0, torch.tensor(t_out, dtype=torch.float64),
                          method="rk4", options=dict(step_size=0.1))
    torch.testing.assert_close(torch.stack(ys), ref, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("dtype", (torch.float32, torch.float64))
def test_fast_rms_ratio_equals_the_norm(dtype):
    gen = torch.Generator().manual_seed(3)
    y0 = torch.randn(300, 2, generator=gen).to(dtype)
    y1 = y0 + 0.01 * torch.randn(300, 2, generator=gen).to(dtype)
    err = 1e-4 * torch.randn(300, 2, generator=gen).to(dtype)
    cfg = AdaptiveConfig(rtol=1e-3, atol=1e-4, norm=mixed_norm, controller=IController())
    assert fast_rms(cfg, y0)
    plain = _error_ratio(StepResult(y1, err.clone(), []), y0.abs(), y1.abs(), cfg, rms=False)
    fast = _error_ratio(StepResult(y1, err.clone(), []), y0.abs(), y1.abs(), cfg, rms=True)
    eps = torch.finfo(dtype).eps
    assert fast == pytest.approx(plain, rel=50 * eps)
    scale = 1e-4 + 1e-3 * torch.maximum(y0.abs(), y1.abs())
    expected = float(((err.double() / scale.double()) ** 2).mean().sqrt())
    assert fast == pytest.approx(expected, rel=50 * eps)


def test_fast_rms_not_used_for_other_norms_or_vanishing_atol():
    y = torch.zeros(3)
    assert not fast_rms(AdaptiveConfig(rtol=1e-3, atol=0.0, norm=mixed_norm,
                                       controller=IController()), y)
    assert not fast_rms(AdaptiveConfig(rtol=1e-3, atol=1e-6, norm=lambda x: x.abs().max(),
                                       controller=IController()), y)
    assert not fast_rms(AdaptiveConfig(rtol=1e-3, atol=1e-6, norm=mixed_norm,
                                       controller=IController()),
                        torch.zeros(3, dtype=torch.cfloat))


# ---------------------------------------------------------------------- compiled solves


def _compile_available() -> None:
    if not hasattr(torch, "compile"):
        pytest.skip("torch.compile is not available in this PyTorch")
    if shutil.which("c++") is None and shutil.which("g++") is None:
        pytest.skip("torch.compile's CPU backend needs a C++ compiler; none on PATH")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit, inside torch.compile
def test_compiled_solve_matches_eager_for_inference_and_training():
    """``compile_solve`` of an rk4 grid: the no-graph stage sums trace into one graph
    (``fullgraph``) and equal eager; with ``no_grad=False`` the compiled forward and
    backward give eager's loss gradients (traced by AOTAutograd with the ``aot_eager``
    backend, which skips inductor's C++ build to keep the test cheap;
    ``benchmarks/compiled.py`` runs the training path through inductor and reports its
    gradients' difference from eager)."""
    _compile_available()
    torch.manual_seed(0)
    field = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    vf = lambda t, z: field(z)  # noqa: E731
    z0 = torch.randn(16, 3)
    eager = FixedGridSolve(vf, "rk4", (0.0, 1.0), 2)
    with torch.no_grad():
        ref = eager(z0)
    compiled = compile_solve(vf, "rk4", (0.0, 1.0), 2, fullgraph=True)
    torch.testing.assert_close(compiled(z0), ref, rtol=1e-5, atol=1e-6)

    train = compile_solve(vf, "rk4", (0.0, 1.0), 2, no_grad=False, backend="aot_eager")
    grads = []
    for block in (eager, train):
        field.zero_grad()
        block(z0).square().sum().backward()
        grads.append([p.grad.clone() for p in field.parameters()])
    for g_compiled, g_eager in zip(grads[1], grads[0]):
        torch.testing.assert_close(g_compiled, g_eager, rtol=1e-4, atol=1e-6)
