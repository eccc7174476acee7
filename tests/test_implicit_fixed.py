"""Fixed-grid implicit Runge–Kutta methods (``hyperode.solvers.methods.implicit``).

Every solve here runs the fixed-grid loop of the step-method protocol directly:
``stepper = bind(method, f, stats)``; per interval ``k1 = previous f1 or f(t, y)``,
``result = stepper.step(t, y, h, k1)``, ``stepper.accept(...)``.
"""

from __future__ import annotations

import itertools
import math
import warnings

import pytest
import torch

from hyperode.errors import SolverError
from hyperode.solvers.methods import get_method
from hyperode.solvers.methods import implicit as imp
from hyperode.solvers.methods.explicit import euler
from hyperode.solvers.problem import StateLayout, VectorField
from hyperode.solvers.stats import SolverStats
from hyperode.solvers.step import StepMethod, bind

F64 = torch.float64
BY_NAME = {m.name: m for m in imp.METHODS}
NAMES = list(BY_NAME)


def solve(method, f, y0, t0, t1, n, stats=None, grid=None):
    """``n`` equal steps (or the given ``grid``) from ``t0`` to ``t1``; returns
    ``(y1, stats, stepper)``."""
    stats = SolverStats() if stats is None else stats
    stepper = bind(method, f, stats)
    grid = [t0 + (t1 - t0) * j / n for j in range(n + 1)] if grid is None else grid
    y, k1 = y0, None
    for ta, tb in itertools.pairwise(grid):
        if k1 is None:
            k1 = f(ta, y)
        result = stepper.step(ta, y, tb - ta, k1)
        stepper.accept(ta, y, tb - ta, result)
        y, k1 = result.y1, result.f1
    stats.accepted += len(grid) - 1
    return y, stats, stepper


def counted(func, y0):
    """``func(t: float, y)`` as the integrators' counting ``VectorField``."""
    return VectorField(lambda t, y: func(float(t), y), StateLayout(y0))


# A smooth non-autonomous problem with an exact solution: y1 = 1/(1+t^2), y2 = exp(sin t).
def smooth(t, y):
    return torch.stack([-2 * t * y[..., 0] ** 2, y[..., 1] * math.cos(t)], -1)


def smooth_exact(t):
    return torch.tensor([1 / (1 + t * t), math.exp(math.sin(t))], dtype=F64)


# --------------------------------------------------------------------------- tableaux


def test_method_set_and_attributes():
    assert NAMES == ["implicit_euler", "implicit_midpoint", "trapezoid", "radauIIA3",
                     "radauIIA5", "gl4", "gl6", "sdirk2", "trbdf2"]
    assert imp.ALIASES == {"gauss_legendre4": "gl4", "gauss_legendre6": "gl6"}
    orders = {"implicit_euler": 1, "implicit_midpoint": 2, "trapezoid": 2, "radauIIA3": 3,
              "radauIIA5": 5, "gl4": 4, "gl6": 6, "sdirk2": 2, "trbdf2": 2}
    stiff = {"implicit_euler", "trapezoid", "radauIIA3", "radauIIA5", "sdirk2", "trbdf2"}
    firk = {"radauIIA3", "radauIIA5", "gl4", "gl6"}
    for m in imp.METHODS:
        assert isinstance(m, StepMethod) and get_method(m) is m  # a well-formed method
        assert (m.adaptive, m.corrections_per_step, m.implicit) == (False, 0, True)
        assert m.order == orders[m.name] == m.tableau.order
        tab = m.tableau
        assert tab.stiffly_accurate == (m.name in stiff)
        assert tab.diagonally_implicit == (m.name not in firk)
        assert tab.explicit[0] == (m.name in {"trapezoid", "trbdf2"})
        for i in range(tab.stages):
            assert sum(tab.a[i]) == pytest.approx(tab.c[i], abs=1e-14)
        assert sum(tab.b) == pytest.approx(1.0, abs=1e-14)


def test_tableau_validation():
    ok = dict(c=(1.0,), a=((1.0,),), b=(1.0,), order=1)
    imp.ImplicitTableau("x", **ok)
    bad = [
        (dict(ok, a=((0.5,),)), "row 0 of a sums to"),
        (dict(ok, b=(0.9,)), "b sums to"),
        (dict(ok, a=((1.0, 0.0),)), r"expected 1 \(the full matrix\)"),
        (dict(ok, c=(float("nan"),)), "must be finite"),
        (dict(ok, order=0), "order must be an int >= 1"),
        (dict(ok, b_error=(0.0,)), "give b_error and error_order together"),
        (dict(c=(0.0,), a=((0.0,),), b=(1.0,), order=1), "is explicit"),
    ]
    for kw, msg in bad:
        with pytest.raises(ValueError, match=msg):
            imp.ImplicitTableau("x", **kw)


# --------------------------------------------------------------------------- accuracy


@pytest.mark.parametrize("name", NAMES)
def test_convergence_order(name):
    """Observed global order on a smooth non-autonomous problem in float64 (Gauss
    methods: 2s; Radau IIA: 2s - 1)."""
    m = BY_NAME[name].configure({"newton_tol": 1e-14, "max_newton_iters": 50}, 1e-7, 1e-9)
    y0 = torch.tensor([1.0, 1.0], dtype=F64)
    ns = (40, 80) if m.order <= 3 else (8, 16)
    errs = [float((solve(m, smooth, y0, 0.0, 2.0, n)[0] - smooth_exact(2.0)).abs().max())
            for n in ns]
    slope = math.log2(errs[0] / errs[1])
    assert abs(slope - m.order) < 0.2, (name, errs, slope)


def test_stiff_linear_problem():
    """y' = -1000 (y - cos t) with h = 0.1: every implicit method is stable and accurate,
    explicit Euler (|1 + h lambda| = 99) blows up."""
    lam = 1000.0

    def f(t, y):
        return -lam * (y - math.cos(t))

    a, b = lam**2 / (lam**2 + 1), lam / (lam**2 + 1)
    exact = a * math.cos(1.0) + b * math.sin(1.0) + (1.0 - a) * math.exp(-lam)
    y0 = torch.tensor([1.0], dtype=F64)
    for m in imp.METHODS:
        y, stats, _ = solve(m, f, y0, 0.0, 1.0, 10)
        assert abs(float(y) - exact) < 2e-4, m.name
        assert stats.newton_failures == 0 and stats.n_jacobian == 1 and stats.n_lu == 1
    y, _, _ = solve(euler, f, y0, 0.0, 1.0, 10)
    assert abs(float(y) - exact) > 1e10


def test_dense_output_and_f1():
    y0 = torch.tensor([1.0, 1.0], dtype=F64)
    for m in imp.METHODS:
        f = counted(smooth, y0)
        stepper = bind(m, f, SolverStats())
        k1 = f(0.0, y0)
        h = 0.05
        r = stepper.step(0.0, y0, h, k1)
        assert len(r.ks) == m.tableau.stages + 1 and r.ks[0] is k1
        if m.tableau.stiffly_accurate:
            assert r.f1 is r.ks[-1]
            assert torch.allclose(r.f1, smooth(h, r.y1), atol=1e-8)
        else:
            assert r.f1 is None
        assert stepper.dense(0.0, y0, h, r, 0.0, None) is y0
        assert stepper.dense(0.0, y0, h, r, 1.0, None) is r.y1
        mid = stepper.dense(0.0, y0, h, r, 0.5, None)
        err_end = float((r.y1 - smooth_exact(h)).abs().max())
        assert float((mid - smooth_exact(h / 2)).abs().max()) < err_end + 1e-6, m.name
        n = f.nfe
        stepper.dense(0.0, y0, h, r, 0.25, None)
        assert f.nfe == n  # f(t + h, y1) at most once per step (f1 or the cache)


def test_zero_step_returns_the_state():
    y0 = torch.tensor([1.0, 2.0], dtype=F64)
    stepper = bind(imp.radauIIA5, smooth, SolverStats())
    r = stepper.step(0.0, y0, 0.0, smooth(0.0, y0))
    assert r.y1 is y0


# --------------------------------------------------------------------------- batches


def _mlp(W):
    def f(t, y):  # [B, d]: samples independent, coupled within each sample
        return torch.tanh(y @ W.T) * math.cos(t) - y * (1 + 0.5 * y[:, :1] ** 2)
    return f


def test_batch_independent_matches_full_jacobian():
    torch.manual_seed(0)
    B, d = 6, 3
    W = torch.randn(d, d, dtype=F64)
    y0 = torch.randn(B, d, dtype=F64)
    base = _mlp(W)
    for name in ("radauIIA5", "trbdf2"):
        results = {}
        for mode in (True, False, "auto"):
            for jac in imp.JACOBIANS:
                m = BY_NAME[name].configure(dict(batch_independent=mode, jacobian=jac,
                                                 newton_tol=1e-13, max_newton_iters=30),
                                            1e-7, 1e-9)
                f = counted(base, y0)
                y, stats, stepper = solve(m, f, y0, 0.0, 1.0, 5)
                results[mode, jac] = (y, stats, stepper, f.nfe)
        ref = results[False, "jacrev"][0]
        for (mode, jac), (y, _, stepper, _) in results.items():
            tol = 1e-12 if jac != "fd" else 1e-10
            assert float((y - ref).abs().max()) <= tol, (name, mode, jac)
            blocks = (B, d) if mode is not False else (1, B * d)
            assert stepper.systems == blocks
            assert stepper.jacobian_matrix.shape == (blocks[0], blocks[1], blocks[1])
        # the cost: a Jacobian by finite differences takes d evaluations of f, not B*d
        s_ind, s_full = results[True, "fd"], results[False, "fd"]
        assert s_ind[1].n_jacobian == s_full[1].n_jacobian
        per_jacobian_saved = (s_full[3] - s_ind[3]) / s_ind[1].n_jacobian
        assert per_jacobian_saved == B * d - d
        # ... and the auto check costs one extra evaluation (jacrev: one vjp)
        assert results["auto", "jacrev"][3] == results[True, "jacrev"][3] + 1


def test_auto_detects_coupled_samples():
    torch.manual_seed(1)
    B, d = 5, 2
    W = torch.randn(d, d, dtype=F64)
    y0 = torch.randn(B, d, dtype=F64)
    base = _mlp(W)

    def coupled(t, y):  # a weak batch-mean coupling
        return base(t, y) + 1e-3 * y.mean(0, keepdim=True)

    for jac in imp.JACOBIANS:
        m = imp.radauIIA3.configure(dict(jacobian=jac), 1e-7, 1e-9)
        assert solve(m, base, y0, 0.0, 0.5, 2)[2].systems == (B, d), jac
        y, _, stepper = solve(m, coupled, y0, 0.0, 0.5, 2)
        assert stepper.systems == (1, B * d), jac
        full = imp.radauIIA3.configure(dict(jacobian=jac, batch_independent=False), 1e-7, 1e-9)
        assert float((y - solve(full, coupled, y0, 0.0, 0.5, 2)[0]).abs().max()) < 1e-9
    # a state without a batch dimension is one system
    y1d = torch.randn(4, dtype=F64)
    assert solve(imp.gl4, lambda t, y: -y**3, y1d, 0.0, 0.5, 2)[2].systems == (1, 4)


# --------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("name", NAMES)
def test_gradcheck_y0_and_parameter(name):
    torch.manual_seed(2)
    W0 = 0.8 * torch.randn(3, 3, dtype=F64)
    y00 = torch.randn(2, 3, dtype=F64)
    m = BY_NAME[name].configure({"newton_tol": 1e-13, "max_newton_iters": 30}, 1e-7, 1e-9)

    def fn(y0, W):
        def f(t, y):
            return torch.tanh(y @ W.T) * math.cos(t) - 2.0 * y
        return solve(m, f, y0, 0.0, 0.6, 3)[0]

    args = (y00.clone().requires_grad_(), W0.clone().requires_grad_())
    assert torch.autograd.gradcheck(fn, args)


def test_gradcheck_full_jacobian_and_jacfwd():
    torch.manual_seed(3)
    W0 = 0.8 * torch.randn(2, 2, dtype=F64)
    y00 = torch.randn(2, 2, dtype=F64)
    for name, opts in (("radauIIA5", dict(batch_independent=False, jacobian="jacfwd")),
                       ("trbdf2", dict(batch_independent=False)),
                       ("gl6", dict(jacobian="jacfwd"))):
        m = BY_NAME[name].configure(dict(opts, newton_tol=1e-13, max_newton_iters=30),
                                    1e-7, 1e-9)

        def fn(y0, W, m=m):
            return solve(m, lambda t, y: torch.tanh(y @ W.T) - y, y0, 0.0, 0.5, 2)[0]

        assert torch.autograd.gradcheck(
            fn, (y00.clone().requires_grad_(), W0.clone().requires_grad_())), name


def test_fd_gradient_is_close_and_stats_with_graph():
    torch.manual_seed(4)
    W = (0.8 * torch.randn(3, 3, dtype=F64)).requires_grad_()
    y0 = torch.randn(4, 3, dtype=F64)

    def f(t, y):
        return torch.tanh(y @ W.T) - y

    grads, all_stats = {}, {}
    for jac in ("jacrev", "fd"):
        m = imp.radauIIA5.configure(dict(jacobian=jac), 1e-7, 1e-9)
        y, stats, _ = solve(m, f, y0, 0.0, 1.0, 4)
        (grads[jac],) = torch.autograd.grad(y.square().sum(), W)
        all_stats[jac] = stats
    assert torch.allclose(grads["fd"], grads["jacrev"], rtol=1e-5, atol=1e-7)
    # with a graph: the Newton J at the start, then 3 exact stage Jacobians and one LU of
    # the exact (3d x 3d) matrix per step; the last stage's Jacobian is handed on
    stats = all_stats["jacrev"]
    assert stats.n_jacobian == 1 + 3 * 4
    assert stats.n_lu == 1 + 4 + 3  # first Newton LU, 4 exact, 3 re-factorised hand-overs
    with torch.no_grad():
        _, plain, _ = solve(imp.radauIIA5, f, y0, 0.0, 1.0, 4)
    # without one: no stage Jacobians (J refreshed at a step's start only when the
    # previous step's Newton needed more than 3 iterations)
    assert plain.n_jacobian <= 4 and plain.n_lu == plain.n_jacobian


# --------------------------------------------------------------------------- options


def test_option_validation():
    m = imp.radauIIA5
    assert m.option_names == {"batch_independent", "jacobian", "newton_tol",
                              "max_newton_iters"}
    bad = [("batch_independent", "yes", "expected True, False or 'auto'"),
           ("batch_independent", 1, "expected True, False or 'auto'"),
           ("jacobian", "autograd", "expected one of 'jacrev', 'jacfwd', 'fd'"),
           ("newton_tol", 0.0, "expected a finite number > 0"),
           ("newton_tol", float("inf"), "expected a finite number > 0"),
           ("newton_tol", True, "expected a finite number > 0"),
           ("max_newton_iters", 0, "expected an integer >= 1"),
           ("max_newton_iters", 2.5, "expected an integer >= 1")]
    for name, value, msg in bad:
        with pytest.raises(ValueError, match=msg) as info:
            m.configure({name: value}, 1e-7, 1e-9)
        assert f"options['{name}']={value!r}" in str(info.value)
    c = m.configure({"jacobian": "fd", "max_newton_iters": 4, "other": 1}, 1e-3, 1e-6)
    assert (c.jacobian, c.max_newton_iters, c.batch_independent) == ("fd", 4, "auto")
    assert c.tableau is m.tableau and m.jacobian == "jacrev"  # configure copies
    # the default Newton tolerance follows rtol/atol, floored for float32
    assert c.tolerance(F64) == pytest.approx(1e-7)
    assert m.configure({}, 1e-3, 1e-20).tolerance(torch.float32) == \
        pytest.approx(50 * torch.finfo(torch.float32).eps)
    assert m.configure({}, torch.tensor([1e-3, 1e-5]), 0.0).tolerance(F64) == \
        pytest.approx(1e-6)
    assert m.configure({"newton_tol": 1e-4}, 1e-3, 1e-6).tolerance(F64) == 1e-4


def test_state_errors():
    stepper = bind(imp.gl4, lambda t, y: -y, SolverStats())
    yc = torch.ones(2, dtype=torch.complex128)
    with pytest.raises(ValueError, match="real floating-point state"):
        stepper.step(0.0, yc, 0.1, -yc)
    m = imp.gl4.configure({"batch_independent": True}, 1e-7, 1e-9)
    y = torch.ones(3, dtype=F64)
    with pytest.raises(ValueError, match=r"options\['batch_independent'\]=True needs"):
        bind(m, lambda t, y: -y, SolverStats()).step(0.0, y, 0.1, -y)
    with pytest.raises(ValueError, match="no error estimate"):
        bind(imp.gl4, lambda t, y: -y, SolverStats()).step(0.0, y, 0.1, -y, True)


def test_float32_solve():
    y0 = torch.tensor([1.0, 1.0])
    for m in imp.METHODS:
        y, stats, _ = solve(m, smooth, y0, 0.0, 1.0, 20)
        assert y.dtype == torch.float32
        ref = solve(m, smooth, y0.double(), 0.0, 1.0, 20)[0]
        # the float32 Newton tolerance is 50 eps (6e-6) per step
        assert float((y.double() - ref).abs().max()) < 1e-4, m.name
        assert stats.newton_failures == 0
    lam = 1000.0
    y0 = torch.tensor([1.0])
    for m in imp.METHODS:  # stiff, in float32
        y, stats, _ = solve(m, lambda t, y: -lam * (y - math.cos(t)), y0, 0.0, 1.0, 10)
        assert abs(float(y) - math.cos(1.0)) < 2e-3 and stats.newton_failures == 0, m.name


# --------------------------------------------------------------------------- Newton


def test_newton_failure_raises_solver_error():
    m = imp.radauIIA5.configure({"max_newton_iters": 1}, 1e-7, 1e-9)
    stats = SolverStats()
    y0 = torch.tensor([1.0, 1.0], dtype=F64)
    with pytest.raises(SolverError) as info:
        solve(m, smooth, y0, 0.0, 1.0, 2, stats)
    msg = str(info.value)
    for part in ("radauIIA5", "t=0.0", "h=0.5", "options['max_newton_iters'] (now 1)",
                 "options['newton_tol']", "smaller step"):
        assert part in msg, part
    # the first step's J is current: no re-evaluation at the start, one at the last
    # iterate, then the (patient) retry fails too
    assert "after re-evaluating the Jacobian at the last iterate" in msg
    assert (stats.newton_failures, stats.n_jacobian) == (2, 2)


def test_newton_divergence_refreshes_a_stale_jacobian():
    """The stiffness jumps at t = 0.4: the Jacobian kept from t = 0 makes Newton diverge
    in the step from 0.4; re-evaluated there, it converges (one failure, two Jacobians)."""

    def f(t, y):
        lam = 1.0 if t < 0.4 - 1e-9 else 1e4
        return -lam * y

    y0 = torch.tensor([1.0, 2.0], dtype=F64)
    y, stats, _ = solve(imp.implicit_midpoint, f, y0, 0.0, 1.0, 10)
    assert stats.newton_failures == 1 and stats.n_jacobian == 2
    expect = y0 * (1 - 0.05) ** 4 / (1 + 0.05) ** 4 * ((1 - 500) / (1 + 500)) ** 6
    assert torch.allclose(y, expect, rtol=1e-9)


def test_jacobian_and_lu_reuse_counts():
    A = torch.tensor([[-2.0, 1.0], [1.0, -3.0]], dtype=F64)
    y0 = torch.tensor([1.0, 0.5], dtype=F64)

    def f(t, y):
        return y @ A.T

    for m in imp.METHODS:
        stats = SolverStats()
        solve(m, f, y0, 0.0, 1.0, 10, stats)
        # linear: one Jacobian and one LU per distinct h*a_ii (or h) for the whole solve
        assert (stats.n_jacobian, stats.n_lu, stats.newton_failures) == (1, 1, 0), m.name
        implicit_solves = 10 * (len(m.tableau.implicit_stages)
                                if m.tableau.diagonally_implicit else 1)
        assert implicit_solves <= stats.n_newton <= 2 * implicit_solves
        # a different last step refactorises once
        stats = SolverStats()
        solve(m, f, y0, 0.0, 1.0, 0, stats, grid=[0.0, 0.3, 0.6, 0.9, 1.0])
        assert (stats.n_jacobian, stats.n_lu) == (1, 2), m.name


def test_nonlinear_refresh_rule():
    """A Newton solve needing more than 3 iterations re-evaluates J at the next step."""
    y0 = torch.tensor([1.0, 1.0], dtype=F64)
    m = imp.gl4.configure({"newton_tol": 1e-13, "max_newton_iters": 40}, 1e-7, 1e-9)
    _, stats, _ = solve(m, smooth, y0, 0.0, 2.0, 8)
    assert 1 < stats.n_jacobian <= 8
    assert stats.n_lu == stats.n_jacobian


def test_error_hook_for_an_adaptive_esdirk():
    """A tableau with an error row makes an adaptive method that returns h*sum b_error_i
    K_i with ``with_error=True``; a Newton failure then returns an error the adaptive loop
    reads as a ratio of 2**(q+1) (so it halves the step) instead of raising."""
    g = 1 - math.sqrt(2) / 2
    tab = imp.ImplicitTableau("sdirk2_err", c=(g, 1.0), a=((g, 0.0), (1 - g, g)),
                              b=(1 - g, g), order=2, b_error=(-g, g), error_order=1)
    m = imp.ImplicitRK(tab)
    assert m.error_exponent == 0.5 and m.adaptive is True
    y0 = torch.tensor([1.0, 1.0], dtype=F64)
    stepper = bind(m, smooth, SolverStats())
    k1 = smooth(0.0, y0)
    r1 = stepper.step(0.5, y0, 0.02, k1, True)
    r2 = stepper.step(0.5, y0, 0.01, k1, True)
    e1, e2 = float(r1.error.abs().max()), float(r2.error.abs().max())
    assert 0 < e2 < e1 and math.log2(e1 / e2) == pytest.approx(2.0, abs=0.3)
    stats = SolverStats()
    failing = bind(imp.ImplicitRK(tab, max_newton_iters=1), smooth, stats)
    r = failing.step(0.0, y0, 0.5, k1, True)
    assert r.y1 is y0 and stats.newton_failures >= 1
    assert torch.allclose(r.error, (y0.abs() * 1e-7 + 1e-9) * 4.0)  # 2**(q+1), q = 1


# --------------------------------------------------------------------------- torchdiffeq


def _torchdiffeq_solvers():
    torchdiffeq = pytest.importorskip("torchdiffeq")
    try:
        from torchdiffeq._impl.odeint import SOLVERS
    except ImportError:  # pragma: no cover
        pytest.skip("torchdiffeq's solver table is not where expected")
    return torchdiffeq, SOLVERS


def vdp(t, y):  # autonomous (torchdiffeq's gl4 evaluates its second stage at the wrong time)
    return torch.stack([y[..., 1], (1 - y[..., 0] ** 2) * y[..., 1] - y[..., 0]], -1)


@pytest.mark.parametrize("name", NAMES)
def test_agrees_with_torchdiffeq(name):
    torchdiffeq, solvers = _torchdiffeq_solvers()
    if name not in solvers:
        pytest.skip(f"the installed torchdiffeq has no {name!r}")
    m = BY_NAME[name]
    y0 = torch.tensor([[2.0, 0.0], [1.0, 0.5]], dtype=F64)
    n, T = 20, 1.0
    ours = solve(m, vdp, y0, 0.0, T, n)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torchdiffeq warns when its iteration fails
        ref = torchdiffeq.odeint(lambda t, y: vdp(float(t), y), y0,
                                 torch.tensor([0.0, T], dtype=F64), method=name,
                                 options=dict(step_size=T / n))[-1]
    # torchdiffeq stops its Broyden iteration at ||residual||_2 < 1e-8
    assert float((ours - ref).abs().max()) < 1e-7
