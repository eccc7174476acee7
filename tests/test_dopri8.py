"""DOP853 (``dopri8``): the tableau, its order conditions (rooted trees and observed
convergence of one step), its continuous extension and its two error estimates, the
last two against scipy's ``DOP853`` on the same single step."""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import pytest
import scipy.integrate
import torch
from torch import Tensor

from hyperode.solvers.methods.dopri8 import dopri8
from hyperode.solvers.step import dense_output, extra_stages, rk_step
from hyperode.solvers.tableau import ButcherTableau

DTYPE = torch.float64


# --------------------------------------------------------------------------- the tableau


def test_tableau_shape_and_flags():
    m = dopri8
    assert isinstance(m, ButcherTableau) and m.name == "dopri8"
    assert m.stages == 13 and len(m.extra_c) == 3 and len(m.dense) == 16
    assert (m.order, m.error_order, m.dense_order) == (8, 7, 7)
    assert m.fsal and m.adaptive and m.b[-1] == 0.0 and m.c[-1] == 1.0
    assert m.a[-1] == m.b[:-1]
    assert m.error_exponent == 1 / 8
    assert [len(r) for r in m.extra_a] == [13, 14, 15]
    # theta = 1 reproduces b, and the extra stages drop out
    np.testing.assert_allclose(m.dense_weights(1.0), [*m.b, 0.0, 0.0, 0.0], rtol=0, atol=1e-13)
    assert m.dense_weights(0.0) == [0.0] * 16
    # constructing it again from its own fields validates it again
    again = ButcherTableau(
        name=m.name, c=m.c, a=m.a, b=m.b, order=m.order, b_error=m.b_error,
        error_order=m.error_order, b_error2=m.b_error2, extra_c=m.extra_c,
        extra_a=m.extra_a, dense=m.dense, dense_order=m.dense_order,
    )
    assert again == m


# --------------------------------------------------------------------------- rooted trees
# A rooted tree is the sorted tuple of its children's trees; () is the single node.


@cache
def _trees(order: int) -> tuple[tuple, ...]:
    if order == 1:
        return ((),)
    return tuple(sorted({tuple(sorted(f)) for f in _forests(order - 1, order - 1)}))


@cache
def _forests(nodes: int, largest: int) -> tuple[tuple, ...]:
    """Multisets (as tuples) of trees with ``nodes`` nodes in all, each at most ``largest``."""
    if nodes == 0:
        return ((),)
    out = []
    for first in range(min(nodes, largest), 0, -1):
        for tree in _trees(first):
            for rest in _forests(nodes - first, first):
                out.append((tree, *rest))
    return tuple(out)


def _size(tree: tuple) -> int:
    return 1 + sum(_size(t) for t in tree)


def _gamma(tree: tuple) -> int:
    return _size(tree) * math.prod(_gamma(t) for t in tree)


def _phi(tree: tuple, A: np.ndarray) -> np.ndarray:
    """Stage vector of the elementary weight: ``b @ _phi(tree)`` is Phi(tree)."""
    out = np.ones(A.shape[0])
    for child in tree:
        out = out * (A @ _phi(child, A))
    return out


def _full_a() -> np.ndarray:
    """The 16 x 16 stage matrix, extra stages included."""
    m = dopri8
    A = np.zeros((16, 16))
    for i, row in enumerate((*m.a, *m.extra_a)):
        A[i, : len(row)] = row
    return A


def test_tree_counts():
    assert [len(_trees(n)) for n in range(1, 9)] == [1, 1, 2, 4, 9, 20, 48, 115]


def test_order_conditions_up_to_8():
    A = _full_a()[:13, :13]
    b = np.array(dopri8.b)
    worst = max(abs(b @ _phi(t, A) * _gamma(t) - 1.0) for n in range(1, 9) for t in _trees(n))
    assert worst < 1e-11
    # and it is not of order 9
    assert max(abs(b @ _phi(t, A) * _gamma(t) - 1.0) for t in _trees(9)) > 1e-6


def test_error_rows_measure_orders_5_and_3():
    """``b - b_error`` is a fifth-order, ``b - b_error2`` a third-order solution."""
    A = _full_a()[:13, :13]
    for row, q in ((dopri8.b_error, 5), (dopri8.b_error2, 3)):
        e = np.array(row)
        assert max(abs(e @ _phi(t, A)) for n in range(1, q + 1) for t in _trees(n)) < 1e-12
        assert max(abs(e @ _phi(t, A)) for t in _trees(q + 1)) > 1e-6


def test_dense_order_conditions_up_to_7():
    """``sum_i b_i(theta) Phi_i(tree) = theta**|tree| / gamma(tree)`` for |tree| <= 7,
    coefficient by coefficient in theta."""
    A = _full_a()
    W = np.array(dopri8.dense)  # [16 stages, theta**1 .. theta**7]
    worst = 0.0
    for n in range(1, 8):
        want = np.zeros(W.shape[1])
        want[n - 1] = 1.0
        for t in _trees(n):
            got = W.T @ _phi(t, A) * _gamma(t)
            worst = max(worst, float(np.abs(got - want).max()))
    assert worst < 1e-9


# --------------------------------------------------------------------------- one step


R, Y0 = 3.0, 0.01  # small y: a round-off floor far below the errors measured


def _logistic(t: float, y: Tensor) -> Tensor:
    """``y' = R y (1 - y)``: ``y(t) = 1 / (1 + (1/Y0 - 1) exp(-R t))``."""
    return R * y * (1 - y)


def _logistic_exact(t: float) -> float:
    return 1.0 / (1.0 + (1.0 / Y0 - 1.0) * math.exp(-R * t))


def _one_step(f, t0: float, y0: Tensor, h: float, with_error: bool = False):
    return rk_step(f, dopri8, t0, y0, h, f(t0, y0), with_error=with_error)


def _slopes(hs, errs) -> list[float]:
    return [math.log(e0 / e1) / math.log(h0 / h1)
            for h0, h1, e0, e1 in zip(hs, hs[1:], errs, errs[1:])]


HS = (0.2, 0.15, 0.1, 0.075)


def test_local_error_is_order_9():
    y0 = torch.tensor([Y0], dtype=DTYPE)
    errs = [abs(_one_step(_logistic, 0.0, y0, h).y1.item() - _logistic_exact(h)) for h in HS]
    assert errs[-1] > 1e-16  # ~100 times the round-off in y ~ 0.01
    slopes = _slopes(HS, errs)
    assert all(8.7 < p < 9.3 for p in slopes), (errs, slopes)


@pytest.mark.parametrize("theta", [0.3, 0.7])
def test_dense_local_error_is_order_8(theta):
    y0 = torch.tensor([Y0], dtype=DTYPE)
    errs = []
    for h in HS:
        result = _one_step(_logistic, 0.0, y0, h)
        ks = extra_stages(_logistic, dopri8, 0.0, y0, h, result)
        assert len(ks) == 16
        y = dense_output(dopri8, y0, result.y1, ks, None, h, theta)
        errs.append(abs(y.item() - _logistic_exact(theta * h)))
    assert errs[-1] > 1e-15
    slopes = _slopes(HS, errs)
    assert all(7.6 < p < 8.3 for p in slopes), (errs, slopes)


# --------------------------------------------------------------------------- against scipy

MU, T_VDP, Y_VDP, H_VDP = 1.3, 0.25, (1.5, -0.4), 0.25  # (T + H) - T == H
RTOL, ATOL = 1e-5, 1e-7


def _vdp(t: float, y: Tensor) -> Tensor:
    """A forced Van der Pol oscillator (nonlinear, nonautonomous, two components)."""
    return torch.stack([y[1], MU * (1 - y[0] ** 2) * y[1] - y[0] + 0.5 * math.cos(2 * t)])


def _vdp_np(t: float, y: np.ndarray) -> np.ndarray:
    return _vdp(t, torch.as_tensor(y, dtype=DTYPE)).numpy()


@cache
def _scipy_step():
    solver = scipy.integrate.DOP853(_vdp_np, T_VDP, np.array(Y_VDP), T_VDP + 1.0,
                                    first_step=H_VDP, rtol=RTOL, atol=ATOL)
    solver.step()
    assert solver.status == "running"
    assert solver.h_previous == H_VDP  # the first step was accepted as given
    return solver


def _our_step():
    y0 = torch.tensor(Y_VDP, dtype=DTYPE)
    return y0, _one_step(_vdp, T_VDP, y0, H_VDP, with_error=True)


def test_step_matches_scipy():
    solver = _scipy_step()
    _, result = _our_step()
    np.testing.assert_allclose(result.y1.numpy(), solver.y, rtol=1e-14, atol=0)
    # the FSAL stage is scipy's f(t + h, y1)
    np.testing.assert_allclose(result.f1.numpy(), solver.K[-1], rtol=1e-13, atol=0)


def test_dense_output_matches_scipy():
    solver = _scipy_step()
    sol = solver.dense_output()
    y0, result = _our_step()
    ks = extra_stages(_vdp, dopri8, T_VDP, y0, H_VDP, result)
    for theta in np.linspace(0.0, 1.0, 11):
        ours = dense_output(dopri8, y0, result.y1, ks, None, H_VDP, theta).numpy()
        theirs = sol(T_VDP + theta * H_VDP)
        np.testing.assert_allclose(ours, theirs, rtol=1e-13, atol=0, err_msg=f"{theta=}")


def _rms(x: Tensor) -> float:
    return float(x.pow(2).mean().sqrt())


def _ratio(n5: float, n3: float) -> float:
    """The integrator's combination of the two estimates (Hairer's)."""
    if n5 == 0.0 and n3 == 0.0:
        return 0.0
    return n5**2 / math.sqrt(n5**2 + 0.01 * n3**2)


def test_error_estimates_match_scipy():
    solver = _scipy_step()
    y0, result = _our_step()
    assert result.error is not None and result.error2 is not None
    # each estimate alone, h K^T E5 and h K^T E3 in scipy's terms, to round-off (the
    # estimates are orders of magnitude below the terms they are summed from)
    K = solver.K  # the 13 stages of the accepted step, the FSAL one last
    for ours, E in ((result.error, solver.E5), (result.error2, solver.E3)):
        ulp = np.finfo(float).eps * H_VDP * (np.abs(K).T @ np.abs(E))
        np.testing.assert_array_less(np.abs(ours.numpy() - H_VDP * (K.T @ E)), 8 * ulp)
        assert np.all(np.abs(ours.numpy()) > 1e5 * ulp)
    # combined with the RMS norm as the integrator does: scipy's (= Hairer's) err
    scale = ATOL + RTOL * torch.maximum(y0.abs(), result.y1.abs())
    ratio = _ratio(_rms(result.error / scale), _rms(result.error2 / scale))
    theirs = solver._estimate_error_norm(
        K, H_VDP, ATOL + RTOL * np.maximum(np.abs(np.array(Y_VDP)), np.abs(solver.y)))
    assert 0.0 < theirs < 1.0
    # err5 is ~1e-7 of the terms summed for it: summation order alone moves it ~1e-9
    assert ratio == pytest.approx(theirs, rel=5e-8, abs=0)


def test_combined_ratio_is_hairers_err():
    """``n5**2 / sqrt(n5**2 + 0.01 n3**2)`` with RMS norms is Hairer's
    ``|h| E5 / sqrt(n (E5 + 0.01 E3))``, ``E5, E3`` the sums of squares of the
    estimates without their factor ``h``; any dimension, any sign of ``h``."""
    gen = np.random.default_rng(0)
    for n in (1, 2, 7):
        for h in (0.3, -0.01):
            e5, e3, sc = gen.normal(size=n), gen.normal(size=n), gen.uniform(0.5, 2.0, size=n)
            E5, E3 = float(np.sum((e5 / sc) ** 2)), float(np.sum((e3 / sc) ** 2))
            hairer = abs(h) * E5 / math.sqrt(n * (E5 + 0.01 * E3))
            n5 = _rms(torch.as_tensor(h * e5 / sc))
            n3 = _rms(torch.as_tensor(h * e3 / sc))
            assert _ratio(n5, n3) == pytest.approx(hairer, rel=1e-13, abs=0)
    assert _ratio(0.0, 0.0) == 0.0
