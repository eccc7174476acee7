"""Adaptive solves meet their tolerances on the reference problems, tighten with them,
cost nothing extra for dense output, and step exactly like scipy's RK45/RK23 under the
textbook integral controller."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.integrate
import torch
from problems import (
    ALL,
    EASY,
    GAUSSIAN,
    HARMONIC,
    KEPLER,
    LINEAR,
    LOTKA_VOLTERRA,
    RICCATI,
    WARPED_KEPLER,
    Problem,
    numpy_field,
)

import hyperode

F64 = torch.float64
N_OUT = 21  # output times per solve: most of them fall inside steps (dense output)

# Accuracy criterion. With rtol = atol = tol, the error at every output time and component
# must satisfy |y - y_ref| <= FACTOR * (atol + rtol * |y_ref|). The tolerances bound the
# *local* error per step, so the global error may exceed them by what the problem amplifies.
# Observed worst ratios over both tolerances and controllers: <= 17 on the linear, harmonic,
# Gaussian and Riccati problems, <= 35 on Lotka–Volterra, <= 27 on the time-warped orbit.
# The full eccentric (e = 0.6) Kepler period amplifies much more: up to ~640 (PI) / ~1200 (I)
# for dopri5 (with torchdiffeq's embedded estimator; ~840 at tol 1e-6 with Hairer's and the
# textbook controller, where scipy's RK45 makes the same error to round-off, see
# test_integral_controller_matches_scipy: it is the problem, not the solver), 195 / 360 for
# tsit5, 140 / 170 for bosh3. Hence FACTOR = 100, and 3000 for the Kepler orbit.
FACTOR = 100.0
FACTOR_PER_PROBLEM = {"kepler": 3000.0}
# fehlberg2 propagates its 2nd-order solution but estimates the error of its embedded
# 1st-order solution, whose error constant is tiny (1/512): the estimate undershoots the
# propagated error by a near-constant factor (observed 66-350 on these problems, ~1700 on the
# harmonic oscillator, which is therefore left out). torchdiffeq's fehlberg2 behaves the same
# (test_torchdiffeq_agreement). So its factor is 1000.
FACTOR_FEHLBERG2 = 1000.0
# Tightening the tolerance 100x must shrink the error at least 10x (all pairs here are
# roughly tolerance-proportional: observed 23x-540x, mostly ~100x).
MIN_IMPROVEMENT = 10.0

# (method, loose tol, tight tol, problems)
HIGH = [(m, 1e-7, 1e-9, p) for m in ("dopri5", "tsit5") for p in ALL]
MID = [("bosh3", 1e-6, 1e-8, p) for p in ALL]
LOW = [("adaptive_heun", 1e-3, 1e-5, p) for p in EASY]
LOW += [("fehlberg2", 1e-4, 1e-6, p) for p in (LINEAR, GAUSSIAN, RICCATI)]
CASES = HIGH + MID + LOW


def _ids(case):
    method, lo, _, p = case
    return f"{method}-{p.name}-{lo:g}"


def _solve(problem: Problem, method: str, tol: float, controller: str, t: torch.Tensor):
    return hyperode.solve(problem.f, problem.y0, t, rtol=tol, atol=tol, method=method,
                          options=dict(controller=controller))


def _error_ratio(ys: torch.Tensor, ref: np.ndarray, tol: float) -> tuple[float, float]:
    """(max |err| / (atol + rtol |ref|), max |err|)."""
    err = np.abs(ys.detach().numpy() - ref)
    return float((err / (tol + tol * np.abs(ref))).max()), float(err.max())


@pytest.mark.parametrize("controller", ["pi", "i"])
@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_meets_tolerance_and_tightens(case, controller):
    method, loose, tight, problem = case
    t = problem.times(N_OUT)
    ref = problem.reference(t)
    factor = (FACTOR_FEHLBERG2 if method == "fehlberg2"
              else FACTOR_PER_PROBLEM.get(problem.name, FACTOR))
    errors = []
    for tol in (loose, tight):
        sol = _solve(problem, method, tol, controller, t)
        assert sol.ys.shape == (N_OUT, problem.dim)
        assert torch.equal(sol.ys[0], problem.y0)
        ratio, err = _error_ratio(sol.ys, ref, tol)
        assert ratio <= factor, (
            f"{method}/{controller} on {problem.name} at tol={tol:g}: error {err:.3g} is "
            f"{ratio:.3g}x the tolerance scale (allowed {factor:g}x)")
        assert sol.stats.accepted > 0 and sol.stats.steps == sol.stats.accepted + \
            sol.stats.rejected
        errors.append(err)
    assert errors[1] * MIN_IMPROVEMENT <= errors[0], (
        f"{method}/{controller} on {problem.name}: error {errors[0]:.3g} at tol={loose:g} "
        f"only fell to {errors[1]:.3g} at tol={tight:g}")


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "bosh3"])
def test_more_accurate_with_tighter_tolerance_across_a_sweep(method):
    """Error and cost are monotonic over a tolerance sweep on Lotka–Volterra."""
    p = LOTKA_VOLTERRA
    t = p.times(N_OUT)
    ref = p.reference(t)
    errs, nfes = [], []
    for tol in (1e-4, 1e-5, 1e-6, 1e-7):
        sol = _solve(p, method, tol, "pi", t)
        errs.append(_error_ratio(sol.ys, ref, tol)[1])
        nfes.append(sol.stats.nfe)
    assert all(a > b for a, b in itertools.pairwise(errs)), errs
    assert all(a < b for a, b in itertools.pairwise(nfes)), nfes


def test_reference_solutions_agree():
    """The scipy DOP853 reference agrees with the closed forms (sanity of problems.py)."""
    from problems import scipy_reference

    for p in ALL:
        if p.exact is None:
            continue
        t = p.times(9)
        np.testing.assert_allclose(scipy_reference(p, t), p.exact(t.numpy()), rtol=0,
                                   atol=1e-9, err_msg=p.name)
        # and the torch vector field is the derivative of the closed form
        tt = torch.tensor([0.3 * p.t1, 0.7 * p.t1], dtype=F64)
        h = 1e-6
        dy = (p.exact(tt.numpy() + h) - p.exact(tt.numpy() - h)) / (2 * h)
        y = torch.tensor(p.exact(tt.numpy()), dtype=F64)
        for i in range(2):
            np.testing.assert_allclose(p.f(tt[i], y[i]).numpy(), dy[i], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("problem", [HARMONIC, RICCATI, LINEAR], ids=repr)
@pytest.mark.parametrize("method", ["dopri5", "tsit5", "bosh3", "adaptive_heun"])
def test_backward_in_time(method, problem):
    """From the exact state at t1 back to t0, with dense output on the way: same accuracy
    criterion (observed ratios <= 14)."""
    tol = 1e-4 if method == "adaptive_heun" else 1e-7
    t = torch.linspace(problem.t1, problem.t0, 57, dtype=F64)
    ref = problem.reference(t)
    y1 = torch.tensor(ref[0], dtype=F64)
    sol = hyperode.solve(problem.f, y1, t, rtol=tol, atol=tol, method=method)
    ratio, err = _error_ratio(sol.ys, ref, tol)
    assert ratio <= FACTOR, (method, problem.name, err, ratio)
    assert sol.stats.accepted > 5


# --------------------------------------------------------------------------- dense output


@pytest.mark.parametrize("problem", [LOTKA_VOLTERRA, KEPLER, HARMONIC, RICCATI], ids=repr)
@pytest.mark.parametrize("method", ["dopri5", "tsit5", "bosh3"])
def test_dense_output_is_free(method, problem):
    """200 output times cost exactly the NFE and steps of [t0, t_end] and hit the same
    final state; the interpolated values are accurate to the tolerance scale."""
    tol = 1e-7 if method != "bosh3" else 1e-6
    ends = torch.tensor([problem.t0, problem.t1], dtype=F64)
    many = problem.times(200)
    opts = dict(record_steps=True)
    few = hyperode.solve(problem.f, problem.y0, ends, rtol=tol, atol=tol, method=method,
                         options=opts)
    dense = hyperode.solve(problem.f, problem.y0, many, rtol=tol, atol=tol, method=method,
                           options=opts)
    assert dense.stats.nfe == few.stats.nfe
    assert dense.stats.steps == few.stats.steps
    assert dense.stats.accepted == few.stats.accepted
    assert dense.stats.rejected == few.stats.rejected
    assert dense.stats.accepted_ts == few.stats.accepted_ts
    assert torch.equal(dense.ys[-1], few.ys[-1])
    # most requested times fall strictly inside steps
    inside = set(many.tolist()) - set(dense.stats.accepted_ts)
    assert len(inside) > 150
    ref = problem.reference(many)
    factor = FACTOR_PER_PROBLEM.get(problem.name, FACTOR)
    ratio, err = _error_ratio(dense.ys, ref, tol)
    assert ratio <= factor, (method, problem.name, err, ratio)


@pytest.mark.parametrize("method", ["adaptive_heun", "fehlberg2"])
def test_hermite_dense_output_costs_at_most_one_extra_evaluation(method):
    """Non-FSAL pairs without a continuous extension evaluate f(t1, y1) for the Hermite
    interpolant, which is the next step's first stage anyway; only the last step can
    cost one extra evaluation."""
    p = GAUSSIAN
    tol = 1e-5
    few = hyperode.solve(p.f, p.y0, torch.tensor([p.t0, p.t1], dtype=F64), rtol=tol, atol=tol,
                         method=method)
    dense = hyperode.solve(p.f, p.y0, p.times(200), rtol=tol, atol=tol, method=method)
    assert dense.stats.steps == few.stats.steps
    assert few.stats.nfe <= dense.stats.nfe <= few.stats.nfe + 1
    assert torch.equal(dense.ys[-1], few.ys[-1])


@pytest.mark.parametrize("method", ["dopri5", "tsit5"])
def test_dense_output_continuous_across_steps(method):
    """Output just before and just after each accepted step end agree with the step end."""
    p = LOTKA_VOLTERRA
    tol = 1e-6
    base = hyperode.solve(p.f, p.y0, torch.tensor([p.t0, p.t1], dtype=F64), rtol=tol,
                          atol=tol, method=method, options=dict(record_steps=True))
    knots = base.stats.accepted_ts[:-1]
    eps = 1e-9
    t = sorted({p.t0, p.t1, *(k - eps for k in knots), *(k + eps for k in knots)})
    sol = hyperode.solve(p.f, p.y0, torch.tensor(t, dtype=F64), rtol=tol, atol=tol,
                         method=method)
    assert sol.stats.nfe == base.stats.nfe
    ys = sol.ys[1:-1].reshape(len(knots), 2, 2)
    # values on either side of a knot differ by ~ 2 eps |f| only
    assert float((ys[:, 0] - ys[:, 1]).abs().max()) < 1e-7


# --------------------------------------------------------------------------- scipy equivalence


def _dopri5_with_hairers_estimate() -> hyperode.ButcherTableau:
    """dopri5 with the embedded solution of Hairer's DOPRI5 and scipy's RK45 (hyperode's own
    dopri5 may use Dormand & Prince's other 4th-order one, as torchdiffeq does)."""
    m = hyperode.METHODS["dopri5"]
    b_hat = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)
    return hyperode.ButcherTableau(
        name="dopri5_hairer", c=m.c, a=m.a, b=m.b, order=5,
        b_error=tuple(x - y for x, y in zip(m.b, b_hat, strict=True)), error_order=4,
        dense=m.dense, dense_order=m.dense_order)


DOPRI5_HAIRER = _dopri5_with_hairers_estimate()


@pytest.mark.parametrize("problem", [LINEAR, RICCATI, LOTKA_VOLTERRA, KEPLER, WARPED_KEPLER],
                         ids=repr)
@pytest.mark.parametrize("method, scipy_method", [("dopri5", "RK45"), ("bosh3", "RK23")])
@pytest.mark.parametrize("tol", [1e-5, 1e-8])
def test_integral_controller_matches_scipy(method, scipy_method, problem, tol):
    """With the textbook integral controller (which, unlike the default torchdiffeq-style
    one, may also shrink the step after an accepted step) hyperode runs the same algorithm
    as scipy's RK45/RK23 (Hairer's starting step, safety 0.9, factors in [0.2, 10], RMS
    norm): the same evaluations (up to one step, from a different rule for the last step)
    and the same solution to round-off."""
    t = problem.times(11)
    controller = hyperode.IController(shrink_after_accept=True)
    tableau = DOPRI5_HAIRER if method == "dopri5" else hyperode.METHODS[method]
    ours = hyperode.solve(problem.f, problem.y0, t, rtol=tol, atol=tol, method=tableau,
                          options=dict(controller=controller))
    ref = scipy.integrate.solve_ivp(numpy_field(problem), (problem.t0, problem.t1),
                                    problem.y0.numpy(), method=scipy_method, t_eval=t.numpy(),
                                    rtol=tol, atol=tol)
    assert ref.success
    stages = hyperode.METHODS[method].stages
    assert abs(ours.stats.nfe - ref.nfev) <= stages - 1, (ours.stats.nfe, ref.nfev)
    np.testing.assert_allclose(ours.ys.numpy(), ref.y.T, rtol=0, atol=1e-2 * tol)
