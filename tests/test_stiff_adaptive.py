"""Adaptive implicit methods (kvaerno3, kvaerno5, radau5), their stability, and the
stiffness diagnostic of explicit solves (``hyperode.solvers.stiffness``)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import hyperode
from hyperode import odeint, odeint_adjoint, solve
from hyperode.errors import MaxStepsExceededError, SolverError, StepSizeUnderflowError
from hyperode.nn import SolverConfig
from hyperode.solvers import stiffness
from hyperode.solvers.methods import get_method
from hyperode.solvers.methods import implicit as imp
from hyperode.solvers.problem import StateLayout, VectorField
from hyperode.solvers.stats import SolverStats
from hyperode.solvers.step import StepMethod, bind

scipy_integrate = pytest.importorskip("scipy.integrate")

F64 = torch.float64
ADAPTIVE = {m.name: m for m in imp.ADAPTIVE_METHODS}
NAMES = list(ADAPTIVE)
ORDERS = {"kvaerno3": (3, 2), "kvaerno5": (5, 4), "radau5": (5, 3)}
ALL_TABLEAUS = (*imp.TABLEAUS, *(m.tableau for m in imp.ADAPTIVE_METHODS))
L_STABLE = {"implicit_euler", "radauIIA3", "radauIIA5", "sdirk2", "trbdf2", "kvaerno3",
            "kvaerno5", "radau5"}  # the others are A-stable with |R(-inf)| = 1


def t64(*xs):
    return torch.tensor(xs, dtype=F64)


# Smooth non-autonomous problem with an exact solution: y1 = 1/(1+t^2), y2 = exp(sin t).
def smooth(t, y):
    return torch.stack([-2 * t * y[..., 0] ** 2, y[..., 1] * torch.cos(t)], -1)


def smooth_exact(t):
    return t64(1 / (1 + t * t), math.exp(math.sin(t)))


def robertson(t, y):
    y1, y2, y3 = y.unbind(-1)
    return torch.stack([-0.04 * y1 + 1e4 * y2 * y3,
                        0.04 * y1 - 1e4 * y2 * y3 - 3e7 * y2 * y2, 3e7 * y2 * y2], -1)


def robertson_np(t, y):
    y1, y2, y3 = y
    return [-0.04 * y1 + 1e4 * y2 * y3, 0.04 * y1 - 1e4 * y2 * y3 - 3e7 * y2 * y2,
            3e7 * y2 * y2]


def vdp(mu):
    def f(t, y):
        y1, y2 = y.unbind(-1)
        return torch.stack([y2, mu * (1 - y1 * y1) * y2 - y1], -1)
    return f


def vdp_np(mu):
    return lambda t, y: [y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]]


def scipy_reference(f, y0, t):
    sol = scipy_integrate.solve_ivp(f, (t[0], t[-1]), y0, method="Radau", t_eval=t,
                                    rtol=1e-12, atol=1e-14)
    assert sol.success
    return torch.tensor(sol.y.T, dtype=F64)


# --------------------------------------------------------------------------- registry


def test_registered_adaptive_with_error_exponents_and_options():
    for name, (p, q) in ORDERS.items():
        m = hyperode.METHODS[name]
        assert m is ADAPTIVE[name] and get_method(name) is m and isinstance(m, StepMethod)
        assert (m.adaptive, m.implicit, m.order, m.tableau.error_order) == (True, True, p, q)
        assert m.error_exponent == pytest.approx(1 / (q + 1))
        assert m.default_controller == "pi"
        assert "lu_band" in m.option_names
        tab = m.tableau
        assert tab.stiffly_accurate and tab.explicit[0]
        assert sum(tab.b_error) == pytest.approx(0.0, abs=1e-14)
        assert hyperode.solvers.config.method_kind(name) == "adaptive"
    assert imp.kvaerno5.tableau.diagonally_implicit and not imp.radau5.tableau.diagonally_implicit
    for m in imp.METHODS:  # the fixed-grid ones are unchanged
        assert m.adaptive is False and "lu_band" not in m.option_names
    with pytest.raises(ValueError, match=r"options\['lu_band'\]=1.5 is invalid"):
        solve(smooth, t64(1.0, 1.0), t64(0.0, 1.0), method="kvaerno5",
              options=dict(lu_band=1.5))
    with pytest.raises(ValueError, match="unknown option 'lu_band'"):
        solve(smooth, t64(1.0, 1.0), t64(0.0, 1.0), method="radauIIA5",
              options=dict(lu_band=0.1))


def test_error_filter_and_dense_validation():
    base = dict(c=(1.0,), a=((1.0,),), b=(1.0,), order=1)
    with pytest.raises(ValueError, match="give dense and dense_order together"):
        imp.ImplicitTableau("x", **base, dense=((1.0,),))
    with pytest.raises(ValueError, match=r"dense\[0\] sums to 0.5"):
        imp.ImplicitTableau("x", **base, dense=((0.5,),), dense_order=1)
    with pytest.raises(ValueError, match="rows of equal, non-zero length"):
        imp.ImplicitTableau("x", **base, dense=((),), dense_order=1)
    assert imp.ImplicitTableau("x", **base, dense=((1.0,),), dense_order=1).dense == ((1.0,),)
    with pytest.raises(ValueError, match="error_filter needs b_error"):
        imp.ImplicitTableau("x", **base, error_filter=0.5)
    with pytest.raises(ValueError, match="error_filter must be a finite number > 0"):
        imp.ImplicitTableau("x", c=(0.0, 1.0), a=((0, 0), (0.5, 0.5)), b=(0.5, 0.5), order=2,
                            b_error=(0.5, -0.5), error_order=1, error_filter=-1.0)


def test_solver_config_neural_ode_and_cli_accept_them():
    for name in NAMES:
        plan = SolverConfig(method=name, rtol=1e-5, atol=1e-7).plan()
        assert plan.kind == "adaptive" and plan.method.name == name
        assert type(plan.adaptive.controller).__name__ == "PIController"
    user = SolverConfig(method="kvaerno5", options=dict(controller="i")).plan()
    assert type(user.adaptive.controller).__name__ == "IController"
    from hyperode.cli import build_parser

    args = build_parser().parse_args(["train", "--task", "spheres", "--method", "kvaerno5"])
    assert args.method == "kvaerno5"
    from hyperode.experiments.config import TrainConfig, build_solver

    assert build_solver(TrainConfig(task="spheres", method="kvaerno5")).method == "kvaerno5"
    class Field(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(),
                                           torch.nn.Linear(8, 2))

        def forward(self, t, z):
            return self.net(z)

    node = hyperode.nn.NeuralODE(Field(),
                                 solver=SolverConfig(method="kvaerno5", rtol=1e-4, atol=1e-6))
    out = node(torch.randn(5, 2))
    assert out.shape == (5, 2) and bool(torch.isfinite(out).all())


# --------------------------------------------------------------------------- orders


@pytest.mark.parametrize("name", NAMES)
def test_convergence_order_fixed_steps(name):
    """Observed global order of fixed-step runs (options num_steps) in float64."""
    p = ORDERS[name][0]
    ns = (40, 80) if p <= 3 else (10, 20)
    errs = []
    for n in ns:
        sol = solve(smooth, t64(1.0, 1.0), t64(0.0, 2.0), method=name,
                    options=dict(num_steps=n, newton_tol=1e-14, max_newton_iters=50))
        errs.append(float((sol.ys[-1] - smooth_exact(2.0)).abs().max()))
    slope = math.log2(errs[0] / errs[1])
    assert abs(slope - p) < 0.3, (name, errs, slope)


@pytest.mark.parametrize("name", NAMES)
def test_embedded_estimate_order(name):
    """One step from the same state with h and h/2: the estimate scales as h^(q+1)."""
    q = ORDERS[name][1]
    m = ADAPTIVE[name].configure(dict(newton_tol=1e-15, max_newton_iters=50), 1e-7, 1e-9)
    y0 = t64(1.0, 1.0)
    sizes = []
    for h in (0.08, 0.04):
        f = VectorField(smooth, StateLayout(y0))
        r = bind(m, f, SolverStats()).step(0.3, y0, h, f(0.3, y0), True)
        sizes.append(float(r.error.abs().max()))
    slope = math.log2(sizes[0] / sizes[1])
    assert abs(slope - (q + 1)) < 0.35, (name, sizes, slope)


# --------------------------------------------------------------------------- stability


def stability(tab, z, b=None):
    """R(z) = 1 + z b^T (I - zA)^{-1} 1 for the linear test equation."""
    A = np.array(tab.a)
    w = np.array(tab.b if b is None else b)
    s = len(w)
    return 1 + z * w @ np.linalg.solve(np.eye(s) - z * A, np.ones(s))


@pytest.mark.parametrize("tab", ALL_TABLEAUS, ids=lambda t: t.name)
def test_a_and_l_stability(tab):
    ys = np.logspace(-3, 6, 300)
    on_axis = max(abs(stability(tab, 1j * y)) for y in ys)
    negative = max(abs(stability(tab, -y)) for y in ys)
    assert on_axis <= 1 + 1e-12 and negative <= 1 + 1e-12, (on_axis, negative)  # A-stable
    far = abs(stability(tab, -1e7))
    if tab.name in L_STABLE:  # R(-inf) = 0: R decays like 1/|z| or faster
        assert far < 1e-5 and abs(stability(tab, -1e8)) < far
    else:
        assert far == pytest.approx(1.0, abs=1e-5)  # |R(-inf)| = 1, approached as 1/|z|


@pytest.mark.parametrize("name", ["kvaerno3", "kvaerno5"])
def test_kvaerno_embedded_methods_are_a_stable(name):
    tab = ADAPTIVE[name].tableau
    bhat = np.array(tab.b) - np.array(tab.b_error)
    ys = np.logspace(-3, 6, 300)
    assert max(abs(stability(tab, 1j * y, bhat)) for y in ys) <= 1 + 1e-12
    assert max(abs(stability(tab, -y, bhat)) for y in ys) <= 1 + 1e-12


def test_radau5_filtered_estimate_stays_bounded_on_stiff_modes():
    """radau5's raw estimate grows like gamma0 * |z| on stiff modes; the filter
    (1 - gamma0 z)^{-1} keeps it O(1) (and leaves it O(z^4) for small z)."""
    tab = imp.RADAU5
    g0 = tab.error_filter

    def estimate(z):
        A, e = np.array(tab.a), np.array(tab.b_error)
        raw = z * e @ np.linalg.solve(np.eye(4) - z * A, np.ones(4))
        return raw, raw / (1 - g0 * z)

    raw, filtered = estimate(-1e6)
    assert abs(raw) > 1e4 and abs(filtered) < 1.5
    small = [abs(estimate(-x)[1]) for x in (1e-2, 5e-3)]
    assert math.log2(small[0] / small[1]) == pytest.approx(4.0, abs=0.1)


# --------------------------------------------------------------------------- accuracy


@pytest.mark.parametrize("name", NAMES)
def test_robertson_against_scipy_radau(name):
    t = [0.0, 0.4, 4.0, 40.0]
    y0 = [1.0, 0.0, 0.0]
    ref = scipy_reference(robertson_np, y0, t)
    rtol, atol = 1e-7, 1e-12
    sol = solve(robertson, t64(*y0), t64(*t), method=name, rtol=rtol, atol=atol)
    rel = ((sol.ys - ref).abs() / (ref.abs() + 1e-10)).max()
    assert float(rel) < 300 * rtol, float(rel)
    assert sol.stats.accepted < (1000 if name == "kvaerno3" else 400)
    assert sol.stats.n_jacobian < sol.stats.accepted / 4


@pytest.mark.parametrize("name", ["kvaerno5", "radau5"])
def test_van_der_pol_mu_1000_against_scipy_radau(name):
    """Through the first relaxation jump (t ~ 807); outputs from the dense output."""
    t = [0.0, 400.0, 806.0, 809.0, 900.0]
    ref = scipy_reference(vdp_np(1000.0), [2.0, 0.0], t)
    sol = solve(vdp(1000.0), t64(2.0, 0.0), t64(*t), method=name, rtol=1e-7, atol=1e-9)
    err = (sol.ys - ref).abs() / (ref.abs() + 1e-3)
    assert float(err[:, 0].max()) < 1e-3, err
    assert sol.stats.accepted < 3000


def test_dense_output_between_steps():
    """The continuous extensions (order 3 or 4: a little less accurate between the steps
    of the fifth-order pairs than at them)."""
    t = torch.linspace(0.0, 2.0, 41, dtype=F64)
    exact = torch.stack([smooth_exact(float(x)) for x in t])
    for name in NAMES:
        sol = solve(smooth, t64(1.0, 1.0), t, method=name, rtol=1e-8, atol=1e-10)
        assert float((sol.ys - exact).abs().max()) < 1e-6, name
        assert float((sol.ys[-1] - exact[-1]).abs().max()) < 1e-7, name
        ends = solve(smooth, t64(1.0, 1.0), t[[0, -1]], method=name, rtol=1e-8, atol=1e-10)
        assert sol.stats.accepted == ends.stats.accepted  # outputs cost no extra steps


@pytest.mark.parametrize("name", NAMES)
def test_continuous_extensions(name):
    """b(theta): every order condition up to dense_order as polynomials in theta,
    b(1) = b, and a dense stability function 1 + z b(theta)^T (I - zA)^{-1} 1 that stays
    bounded by 1 on the negative axis (stiff modes), which Hermite's does not."""
    from test_tableaus import _gamma, _stage_weights, trees

    tab = ADAPTIVE[name].tableau
    A = np.array(tab.a)
    beta = np.array(tab.dense)
    assert tab.dense_order == (4 if name == "kvaerno5" else 3)
    assert np.allclose(beta.sum(1), tab.b, atol=1e-14)
    for theta in (0.2, 0.5, 0.9, 1.0):
        b = beta @ np.array([theta ** (k + 1) for k in range(beta.shape[1])])
        for p in range(1, tab.dense_order + 1):
            for tree in trees(p):
                assert b @ _stage_weights(tree, A) == pytest.approx(
                    theta ** p / _gamma(tree), abs=1e-13), (theta, tree)
        worst = max(abs(stability(tab, -x, b)) for x in np.logspace(-2, 8, 60))
        assert worst <= 1 + 1e-9, (theta, worst)
    if name != "radau5":  # Hermite on the same step: its dense stability grows like |z|
        def hermite(theta, z):
            y1 = stability(tab, z)
            return ((2 * theta**3 - 3 * theta**2 + 1) + y1 * (-2 * theta**3 + 3 * theta**2)
                    + z * (theta**3 - 2 * theta**2 + theta) + z * y1 * (theta**3 - theta**2))
        assert abs(hermite(0.5, -1e6)) > 1e4


# --------------------------------------------------------------------------- batches


def test_batched_per_sample_jacobians(monkeypatch):
    """[B, 2] Van der Pol with a different stiffness per sample: B blocks of 2 x 2, the
    same steps as the full (B*2) x (B*2) Jacobian, and each sample within tolerance of
    its own scipy solution."""
    mus = t64(1.0, 10.0, 100.0, 500.0).unsqueeze(1)

    def f(t, y):
        return torch.stack([y[:, 1], mus[:, 0] * (1 - y[:, 0] ** 2) * y[:, 1] - y[:, 0]], -1)

    y0 = t64(2.0, 0.0).repeat(4, 1)
    t = t64(0.0, 1.0, 3.0)
    sols, steppers = {}, {}
    original = imp.ImplicitRK.stepper
    captured = []

    def stepper(self, field, stats):
        captured.append(original(self, field, stats))
        return captured[-1]

    monkeypatch.setattr(imp.ImplicitRK, "stepper", stepper)
    for mode in ("auto", True, False):
        sols[mode] = solve(f, y0, t, method="kvaerno5", rtol=1e-7, atol=1e-9,
                           options=dict(batch_independent=mode))
        steppers[mode] = captured[-1]
    assert steppers["auto"].systems == (4, 2) == steppers[True].systems
    assert steppers["auto"].jacobian_matrix.shape == (4, 2, 2)
    assert steppers[False].systems == (1, 8)
    assert sols["auto"].stats.accepted == sols[False].stats.accepted
    assert float((sols["auto"].ys - sols[False].ys).abs().max()) < 1e-8
    for b, mu in enumerate(mus[:, 0].tolist()):
        ref = scipy_reference(vdp_np(mu), [2.0, 0.0], t.tolist())
        assert float((sols["auto"].ys[:, b] - ref).abs().max()) < 1e-4, mu


# --------------------------------------------------------------------------- gradients


class Stiff(torch.nn.Module):
    """y' = -k (y - sin(w t)) - a y^3 with a per-component k (one of them stiff)."""

    def __init__(self):
        super().__init__()
        self.k = torch.nn.Parameter(t64(200.0, 3.0))
        self.w = torch.nn.Parameter(t64(2.0))
        self.a = torch.nn.Parameter(t64(0.5))

    def forward(self, t, y):
        return -self.k * (y - torch.sin(self.w * t)) - self.a * y ** 3


def _loss(ys):
    return (ys[-1] ** 2).sum() + ys[1].sum()


def _central_differences(fn, tensors, eps=1e-6):
    grads = []
    for x in tensors:
        g = torch.zeros_like(x)
        flat = x.data.view(-1)
        for i in range(flat.numel()):
            old = float(flat[i])
            flat[i] = old + eps
            up = fn()
            flat[i] = old - eps
            down = fn()
            flat[i] = old
            g.view(-1)[i] = (up - down) / (2 * eps)
        grads.append(g)
    return grads


@pytest.mark.parametrize("how", ["backprop", "adjoint"])
def test_gradients_match_central_differences(how):
    """float64, kvaerno5 (forward and, for the adjoint, backward). The adjoint's backward
    pass re-solves y backwards in time, which amplifies errors by about exp(k dt) over an
    output interval dt (a property of the method on dissipative stiff problems, not of
    the solver): dense output times keep that bounded."""
    func = Stiff()
    y0 = t64(1.0, -0.5).requires_grad_(True)
    t = torch.linspace(0.0, 1.0, 11 if how == "backprop" else 41, dtype=F64)
    params = list(func.parameters())
    kw = dict(method="kvaerno5", rtol=1e-10, atol=1e-12)
    if how == "adjoint":
        ys = odeint_adjoint(func, y0, t, adjoint_method="kvaerno5", **kw)
    else:
        ys = odeint(func, y0, t, **kw)
    grads = torch.autograd.grad(_loss(ys), [*params, y0])

    def value():
        with torch.no_grad():
            return float(_loss(odeint(func, y0.detach(), t, **kw)))

    fd = _central_differences(value, [*params, y0])
    for g, r in zip(grads, fd):
        assert torch.allclose(g, r, rtol=1e-5, atol=1e-7), (how, g, r)


def test_backprop_gradients_radau5_and_kvaerno3():
    func = Stiff()
    y0 = t64(1.0, -0.5).requires_grad_(True)
    t = t64(0.0, 0.3)
    for name, rtol in (("radau5", 1e-9), ("kvaerno3", 1e-7)):
        kw = dict(method=name, rtol=rtol, atol=rtol * 1e-2)
        (gk,) = torch.autograd.grad(_loss(odeint(func, y0, t, **kw)), [func.k])

        def value(kw=kw):
            with torch.no_grad():
                return float(_loss(odeint(func, y0.detach(), t, **kw)))

        (fd,) = _central_differences(value, [func.k])
        assert torch.allclose(gk, fd, rtol=3e-4, atol=1e-7), (name, gk, fd)


# --------------------------------------------------------------------------- statistics


def test_adjoint_backward_stats_count_implicit_work():
    """The backward pass runs one implicit solve per output interval: its statistics are
    the sum of all of them, Jacobians, LU factorisations and Newton iterations included."""
    from hyperode.adjoint import solve_adjoint

    func = Stiff()
    y0 = t64(1.0, -0.5).requires_grad_(True)
    t = torch.linspace(0.0, 1.0, 11, dtype=F64)
    sol = solve_adjoint(func, y0, t, method="kvaerno5", rtol=1e-8, atol=1e-10,
                        adjoint_method="kvaerno5")
    _loss(sol.ys).backward()
    back = sol.backward_stats
    assert back.nfe > 0 and back.accepted >= 4
    assert back.n_jacobian >= 1 and back.n_lu >= back.n_jacobian
    assert back.n_newton >= back.accepted
    assert back.newton_failures <= back.rejected


def test_backsolve_blowup_names_checkpoint_and_checkpoint_matches_differences():
    """Over a long output interval the backward re-solve of y grows the stiff mode like
    exp(200 * 0.25): it fails, saying why and what to use; the checkpoint backward pass
    (forward re-run per interval, backpropagated) gives the finite-difference gradient."""
    func = Stiff()
    y0 = t64(1.0, -0.5).requires_grad_(True)
    t = torch.linspace(0.0, 1.0, 5, dtype=F64)
    kw = dict(method="kvaerno5", rtol=1e-10, atol=1e-12)
    with pytest.raises(StepSizeUnderflowError, match=r"backward \(adjoint\) pass.*checkpoint"):
        _loss(odeint_adjoint(func, y0, t, **kw)).backward()
    params = list(func.parameters())
    ys = odeint_adjoint(func, y0, t, adjoint_options=dict(backward="checkpoint"), **kw)
    grads = torch.autograd.grad(_loss(ys), [*params, y0])

    def value():
        with torch.no_grad():
            return float(_loss(odeint(func, y0.detach(), t, **kw)))

    for g, r in zip(grads, _central_differences(value, [*params, y0])):
        assert torch.allclose(g, r, rtol=1e-5, atol=1e-7), (g, r)


def test_checkpoint_time_gradients_and_tuple_state_match_differences():
    class Field(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(t64(1.3))

        def forward(self, t, y):
            a, b = y
            return (-self.w * b + torch.sin(t), a - 0.1 * b ** 3)

    func = Field()
    y0 = (t64(1.0), t64(0.5))
    t = t64(0.0, 0.4, 1.1, 1.5).requires_grad_(True)
    kw = dict(method="dopri5", rtol=1e-11, atol=1e-12)

    def loss(ys):
        return (ys[0] * torch.arange(1.0, 5.0, dtype=F64)).sum() + (ys[1][1:] ** 2).sum()

    ys = odeint_adjoint(func, y0, t, adjoint_options=dict(backward="checkpoint"), **kw)
    g_t, g_w = torch.autograd.grad(loss(ys), [t, func.w])

    t_values = t.detach().clone()  # perturbed in place by the differences

    def value():
        with torch.no_grad():
            return float(loss(odeint(func, y0, t_values, **kw)))

    fd_t, fd_w = _central_differences(value, [t_values, func.w])
    assert torch.allclose(g_t, fd_t, rtol=1e-6, atol=1e-8), (g_t, fd_t)
    assert torch.allclose(g_w, fd_w, rtol=1e-6, atol=1e-8), (g_w, fd_w)


def test_checkpoint_bad_options():
    func = Stiff()
    y0, t = t64(1.0, -0.5), t64(0.0, 0.1)
    with pytest.raises(ValueError, match=r"adjoint_options\['backward'\] = 'fwd' is unknown"):
        odeint_adjoint(func, y0, t, adjoint_options=dict(backward="fwd"))
    with pytest.raises(ValueError, match=r"adjoint_rtol, adjoint_options\['norm'\] has no"):
        odeint_adjoint(func, y0, t, adjoint_rtol=1e-3,
                       adjoint_options=dict(backward="checkpoint", norm="seminorm"))


def test_stats_and_lu_band():
    y0, t = t64(2.0, 0.0), t64(0.0, 200.0)
    sol = solve(vdp(100.0), y0, t, method="kvaerno5", rtol=1e-6, atol=1e-8)
    s = sol.stats
    assert s.accepted > 0 and s.n_jacobian >= 1 and s.n_newton >= 6 * s.accepted
    assert 1 <= s.n_lu < s.steps  # the band lets several steps share an LU
    d = s.as_dict()
    assert {"n_jacobian", "n_lu", "n_newton", "newton_failures"} <= set(d)
    strict = solve(vdp(100.0), y0, t, method="kvaerno5", rtol=1e-6, atol=1e-8,
                   options=dict(lu_band=0.0)).stats
    assert strict.n_lu > s.n_lu
    # Newton failures (one iteration allowed) are counted and shrink the step, the solve
    # still succeeds
    tight = solve(vdp(100.0), y0, t64(0.0, 20.0), method="kvaerno5", rtol=1e-6, atol=1e-8,
                  options=dict(max_newton_iters=2))
    ref = solve(vdp(100.0), y0, t64(0.0, 20.0), method="kvaerno5", rtol=1e-9, atol=1e-11)
    assert tight.stats.newton_failures > 0 and tight.stats.rejected > 0
    assert float((tight.ys[-1] - ref.ys[-1]).abs().max()) < 1e-3


def test_newton_failure_halves_the_step():
    """A failed Newton solve is reported as an error ratio of 2**(q+1): the I-controller
    then cuts h to 0.9 * 2**-1 = 0.45 h (not to dfactor * h = 0.2 h)."""
    attempts = []
    f = vdp(1000.0)
    f.callback_step = lambda t0, y0, dt: attempts.append(float(dt))
    sol = solve(f, t64(2.0, 0.0), t64(0.0, 1.0), method="kvaerno5",
                options=dict(first_step=0.5, max_newton_iters=1, controller="i"))
    assert sol.stats.newton_failures >= 1 and sol.stats.rejected >= 1
    assert attempts[0] == 0.5 and attempts[1] == pytest.approx(0.45 * 0.5, rel=1e-12)


def test_newton_failure_at_min_step_raises_instead_of_accepting_no_progress():
    """A step at options['min_step'] is accepted whatever its error (torchdiffeq), so a
    failed Newton solve there would advance t with y unchanged: it raises instead."""
    def f(t, y):
        out = -1000.0 * (y - torch.cos(t))
        return torch.where(t > 0.5, torch.full_like(out, float("nan")), out)

    with pytest.raises(SolverError, match=r"at options\['min_step'\] = 0\.01") as e:
        solve(f, t64(1.0), t64(0.0, 1.0), method="kvaerno5", options=dict(min_step=0.01))
    assert "non-finite" in str(e.value)
    # where Newton converges, min_step is honoured as before
    sol = solve(lambda t, y: -1000.0 * (y - torch.cos(t)), t64(1.0), t64(0.0, 1.0),
                method="kvaerno5", options=dict(min_step=1e-6))
    assert float(sol.ys[-1]) == pytest.approx(math.cos(1.0), abs=1e-3)


# --------------------------------------------------------------------------- diagnostics


def test_dopri5_on_a_stiff_problem_says_it_looks_stiff():
    with pytest.raises(MaxStepsExceededError) as e:
        odeint(vdp(1e4), t64(2.0, 0.0), t64(0.0, 3e4), method="dopri5", rtol=1e-6, atol=1e-8,
               options=dict(max_num_steps=1500))
    msg = str(e.value)
    assert "looks stiff" in msg and "kvaerno5" in msg and "radau5" in msg
    assert "dominant eigenvalue of about -" in msg


def test_no_stiffness_claim_for_a_non_stiff_problem():
    def osc(t, y):
        return torch.stack([y[1], -y[0]])

    with pytest.raises(MaxStepsExceededError) as e:
        odeint(osc, t64(1.0, 0.0), t64(0.0, 1e4), options=dict(max_num_steps=200))
    assert "looks stiff" not in str(e.value)


def test_dominant_eigenvalue_and_diagnose():
    A = torch.diag(t64(-5e4, -1.0, -2.0))
    f = VectorField(lambda t, y: A @ y, StateLayout(t64(1.0, 1.0, 1.0)))
    rho, re = stiffness.dominant_eigenvalue(f, 0.0, t64(1.0, 1.0, 1.0))
    assert rho == pytest.approx(5e4, rel=1e-3) and re == pytest.approx(-5e4, rel=1e-3)
    dopri5 = hyperode.METHODS["dopri5"]
    stats = SolverStats(accepted=100)
    hint = stiffness.diagnose(f, dopri5, 1.0, t64(1.0, 1.0, 1.0), 6e-5, 0.0, 10.0, stats)
    assert "looks stiff" in hint
    assert stiffness.diagnose(f, dopri5, 1.0, t64(1.0, 1.0, 1.0), 1e-9, 0.0, 10.0, stats) == ""
    broken = VectorField(lambda t, y: y / 0.0 * 0.0, StateLayout(t64(1.0)))
    assert stiffness.diagnose(broken, dopri5, 1.0, t64(1.0), 1e-3, 0.0, 1.0, stats) == ""
    failed = SolverStats(newton_failures=3)
    assert "3 of kvaerno5's Newton solves failed" in stiffness.diagnose(
        f, imp.kvaerno5, 1.0, t64(1.0, 1.0, 1.0), 1e-3, 0.0, 2.0, failed)


# --------------------------------------------------------------------------- bad input


def test_non_finite_jacobian_is_named():
    with pytest.raises(SolverError, match=r"Jacobian df/dy at t=0\.0 has non-finite entries"):
        solve(lambda t, y: -torch.sqrt(y), t64(0.0), t64(0.0, 1.0), method="kvaerno5")


def test_singular_newton_matrix():
    """y' = 10 y with implicit Euler at h = 0.1: I - h J = 0. The fixed grid raises,
    naming it; an adaptive method rejects the step and goes on with another h."""
    with pytest.raises(SolverError, match="singular"):
        solve(lambda t, y: 10.0 * y, t64(1.0), t64(0.0, 1.0), method="implicit_euler",
              options=dict(step_size=0.1))
    gamma = imp.KVAERNO3.a[1][1]
    sol = solve(lambda t, y: 10.0 * y, t64(1.0), t64(0.0, 1.0), method="kvaerno3",
                rtol=1e-8, atol=1e-10, options=dict(first_step=0.1 / gamma))
    assert float(sol.ys[-1]) == pytest.approx(math.exp(10.0), rel=1e-6)


def test_nan_inside_newton_is_reported():
    def f(t, y):
        out = -1000.0 * (y - torch.cos(t))
        return torch.where(t > 0.5, torch.full_like(out, float("nan")), out)

    with pytest.raises(StepSizeUnderflowError) as e:
        solve(f, t64(1.0), t64(0.0, 1.0), method="kvaerno5")
    msg = str(e.value)
    assert "Newton solves failed" in msg and "non-finite" in msg and "t=0.5" in msg[:60]


def test_coupled_batch_declared_independent():
    """f mixes the samples (a function written for one unbatched state): declared
    batch_independent=True it is refused with a clear error after the first Newton
    failure; "auto" finds the coupling and solves it with the full Jacobian."""
    def f(t, y):  # [4, 2]: each sample driven by its neighbour
        return -1000.0 * (y + torch.roll(y, 1, dims=0))

    y0 = torch.arange(8, dtype=F64).reshape(4, 2) / 8
    with pytest.raises(ValueError, match=r"batch_independent'\]=True declares the 4 samples"):
        solve(f, y0, t64(0.0, 1.0), method="kvaerno5",
              options=dict(batch_independent=True))
    sol = solve(f, y0, t64(0.0, 1.0), method="kvaerno5", rtol=1e-8, atol=1e-10)
    exact = torch.linalg.matrix_exp(-1000.0 * (torch.eye(4, dtype=F64)
                                               + torch.roll(torch.eye(4, dtype=F64), 1, 0)))
    assert float((sol.ys[-1] - exact @ y0).abs().max()) < 1e-7
