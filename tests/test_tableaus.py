"""Algebraic checks of every Butcher tableau: consistency, order conditions (via rooted
trees), embedded and continuous weights, FSAL flags and construction-time validation."""

from __future__ import annotations

import math
from fractions import Fraction
from functools import cache

import numpy as np
import pytest

import hyperode
from hyperode import METHODS, ButcherTableau, alpha

ALPHAS = (0.3, 0.5, 2 / 3, 1.0, 1.7)
# dopri8 (two error rows, extra dense stages) has its own checks in test_dopri8.py.
TABLEAUS = {**{k: m for k, m in METHODS.items()
               if isinstance(m, ButcherTableau) and k != "dopri8"},
            **{f"alpha({a:.4g})": alpha(a) for a in ALPHAS}}
ADAPTIVE = {k: m for k, m in TABLEAUS.items() if m.adaptive}
DENSE = {k: m for k, m in TABLEAUS.items() if m.dense is not None}

# Declared orders as documented (order, error_order, dense_order); pins METHODS itself.
EXPECTED = {
    "euler": (1, None, None),
    "midpoint": (2, None, None),
    "heun2": (2, None, None),
    "ralston": (2, None, None),
    "heun3": (3, None, None),
    "rk4": (4, None, None),
    "rk4_38": (4, None, None),
    "adaptive_heun": (2, 1, None),
    "fehlberg2": (2, 1, None),
    "bosh3": (3, 2, None),
    "dopri5": (5, 4, 4),
    "tsit5": (5, 4, 4),
    "dopri8": (8, 7, 7),
}
# Not explicit tableaux: tests/test_adams.py, tests/test_implicit_fixed.py and
# tests/test_stiff_adaptive.py.
MULTISTEP = {"explicit_adams", "implicit_adams", "implicit_euler", "implicit_midpoint",
             "trapezoid", "radauIIA3", "radauIIA5", "gl4", "gl6", "sdirk2", "trbdf2",
             "kvaerno3", "kvaerno5", "radau5", "scipy_solver"}
FSAL = {"dopri5", "tsit5", "bosh3"}

TOL = 1e-12  # the published coefficients are given to ~16 digits


def _A(m: ButcherTableau) -> np.ndarray:
    s = m.stages
    A = np.zeros((s, s))
    for i, row in enumerate(m.a):
        A[i, : len(row)] = row
    return A


# --------------------------------------------------------------------------- rooted trees
# A rooted tree is the sorted tuple of its children's trees; () is the single node.


@cache
def trees(order: int) -> tuple[tuple, ...]:
    """All rooted trees with ``order`` nodes (1, 1, 2, 4, 9, 20 for orders 1..6)."""
    if order == 1:
        return ((),)
    out = set()
    for forest in _forests(order - 1, order - 1):
        out.add(tuple(sorted(forest)))
    return tuple(sorted(out))


@cache
def _forests(nodes: int, max_first: int) -> tuple[tuple, ...]:
    """Multisets of trees with ``nodes`` nodes in total, as non-increasing sequences of
    (size, tree) so each multiset appears once."""
    if nodes == 0:
        return ((),)
    out = []
    for size in range(min(nodes, max_first), 0, -1):
        for t in trees(size):
            for rest in _forests(nodes - size, size):
                # keep canonical: within the same size, trees non-increasing
                if rest and _size(rest[0]) == size and rest[0] > t:
                    continue
                out.append((t, *rest))
    return tuple(out)


@cache
def _size(t: tuple) -> int:
    return 1 + sum(_size(c) for c in t)


@cache
def _gamma(t: tuple) -> int:
    """The density gamma(t) = |t| * prod gamma(children)."""
    return _size(t) * math.prod(_gamma(c) for c in t)


def _stage_weights(t: tuple, A: np.ndarray) -> np.ndarray:
    """Phi_i(t) for the stages: 1 for the leaf, prod_k (A Phi(child_k))_i otherwise."""
    out = np.ones(A.shape[0])
    for child in t:
        out = out * (A @ _stage_weights(child, A))
    return out


def order_defects(b: np.ndarray, A: np.ndarray, order: int) -> list[tuple[int, tuple, float]]:
    """``(|t|, t, b . Phi(t) - 1/gamma(t))`` for every tree with up to ``order`` nodes."""
    return [(p, t, float(b @ _stage_weights(t, A)) - 1.0 / _gamma(t))
            for p in range(1, order + 1) for t in trees(p)]


def test_tree_enumeration_counts():
    assert [len(trees(p)) for p in range(1, 7)] == [1, 1, 2, 4, 9, 20]
    # the familiar densities: 1, 2, {3, 6}, {4, 8, 12, 24}
    assert sorted(_gamma(t) for t in trees(3)) == [3, 6]
    assert sorted(_gamma(t) for t in trees(4)) == [4, 8, 12, 24]
    # sum over trees of order p of p!/(sigma gamma) counts the (p-1)! monotone labellings
    for p in range(1, 7):
        assert sum(Fraction(1, _sigma(t) * _gamma(t)) for t in trees(p)) == Fraction(1, p)


@cache
def _sigma(t: tuple) -> int:
    """Symmetry factor of a tree."""
    out = 1
    for c in set(t):
        k = t.count(c)
        out *= math.factorial(k) * _sigma(c) ** k
    return out


# --------------------------------------------------------------------------- consistency


def test_methods_registry_and_declared_orders():
    assert set(METHODS) == set(EXPECTED) | MULTISTEP
    assert METHODS["dopri8"].fsal
    for name, m in METHODS.items():
        if name in MULTISTEP:
            continue
        assert m.name == name
        assert (m.order, m.error_order, m.dense_order) == EXPECTED[name], name
        assert m.adaptive == (EXPECTED[name][1] is not None)
    assert hyperode.get_method("heun") is METHODS["heun2"]
    assert hyperode.get_method(METHODS["rk4"]) is METHODS["rk4"]


@pytest.mark.parametrize("name", TABLEAUS)
def test_rows_of_a_sum_to_c_and_b_sums_to_one(name):
    m = TABLEAUS[name]
    A = _A(m)
    assert m.c[0] == 0.0
    np.testing.assert_allclose(A.sum(axis=1), m.c, rtol=0, atol=TOL)
    assert np.all(np.triu(A) == 0), "explicit methods are strictly lower triangular"
    assert math.fsum(m.b) == pytest.approx(1.0, abs=TOL)
    assert len(m.b) == m.stages


@pytest.mark.parametrize("name", ADAPTIVE)
def test_b_error_sums_to_zero(name):
    m = ADAPTIVE[name]
    assert len(m.b_error) == m.stages
    assert abs(math.fsum(m.b_error)) < TOL
    assert any(x != 0 for x in m.b_error)


@pytest.mark.parametrize("name", TABLEAUS)
def test_fsal_flags(name):
    m = TABLEAUS[name]
    assert m.fsal == (name in FSAL)
    if m.fsal:  # the last stage is f(t + h, y1)
        assert m.c[-1] == 1.0 and m.b[-1] == 0.0
        np.testing.assert_allclose(m.a[-1], m.b[:-1], rtol=0, atol=TOL)


# --------------------------------------------------------------------------- order conditions


@pytest.mark.parametrize("name", TABLEAUS)
def test_order_conditions_by_hand(name):
    """The classic conditions written out, up to order 4 (and the order-5 quadrature one)."""
    m = TABLEAUS[name]
    b, c, A = np.array(m.b), np.array(m.c), _A(m)
    conditions = {
        1: [(b.sum(), 1.0)],
        2: [(b @ c, 1 / 2)],
        3: [(b @ c**2, 1 / 3), (b @ A @ c, 1 / 6)],
        4: [(b @ c**3, 1 / 4), (b @ (c * (A @ c)), 1 / 8), (b @ A @ c**2, 1 / 12),
            (b @ A @ A @ c, 1 / 24)],
        5: [(b @ c**4, 1 / 5), (b @ (c**2 * (A @ c)), 1 / 10), (b @ ((A @ c) ** 2), 1 / 20),
            (b @ A @ c**3, 1 / 20), (b @ A @ A @ A @ c, 1 / 120)],
    }
    for p in range(1, min(m.order, 5) + 1):
        for got, want in conditions[p]:
            assert got == pytest.approx(want, abs=TOL), f"{name}: order-{p} condition"


@pytest.mark.parametrize("name", TABLEAUS)
def test_all_order_conditions_up_to_declared_order(name):
    m = TABLEAUS[name]
    bad = [(p, t, d) for p, t, d in order_defects(np.array(m.b), _A(m), m.order) if abs(d) > TOL]
    assert not bad, f"{name}: violated order conditions {bad}"


@pytest.mark.parametrize("name", TABLEAUS)
def test_declared_order_is_sharp(name):
    """Some condition of order ``order + 1`` fails (the declared order is not understated)."""
    m = TABLEAUS[name]
    defects = [d for p, _, d in order_defects(np.array(m.b), _A(m), m.order + 1)
               if p == m.order + 1]
    assert max(abs(d) for d in defects) > 1e-6


@pytest.mark.parametrize("name", ADAPTIVE)
def test_embedded_weights_order(name):
    m = ADAPTIVE[name]
    b_hat = np.array(m.b) - np.array(m.b_error)
    defects = order_defects(b_hat, _A(m), m.error_order + 1)
    bad = [(p, t, d) for p, t, d in defects if p <= m.error_order and abs(d) > TOL]
    assert not bad, f"{name}: embedded solution violates {bad}"
    sharp = [abs(d) for p, _, d in defects if p == m.error_order + 1]
    assert max(sharp) > 1e-6, f"{name}: embedded solution has a higher order than declared"


def test_known_embedded_weights():
    """Spot values from the literature (b_hat = b - b_error)."""
    def b_hat(name):
        m = METHODS[name]
        return np.array(m.b) - np.array(m.b_error)

    np.testing.assert_allclose(b_hat("bosh3"), [7 / 24, 1 / 4, 1 / 3, 1 / 8], atol=1e-15)
    # dopri5: either of the two published 4th-order embedded solutions, Hairer's (DOPRI5,
    # scipy's RK45) or Dormand & Prince's other one (torchdiffeq's)
    hairer = [5179 / 57600, 0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40]
    torchdiffeq = [1951 / 21600, 0, 22642 / 50085, 451 / 720, -12231 / 42400, 649 / 6300,
                   1 / 60]
    assert any(np.allclose(b_hat("dopri5"), ref, rtol=0, atol=1e-15)
               for ref in (hairer, torchdiffeq)), b_hat("dopri5")
    np.testing.assert_allclose(b_hat("adaptive_heun"), [1.0, 0.0], atol=1e-15)
    np.testing.assert_allclose(b_hat("fehlberg2"), [1 / 256, 255 / 256, 0.0], atol=1e-15)
    assert b_hat("tsit5")[-1] == pytest.approx(1 / 66, abs=1e-15)


@pytest.mark.parametrize("name", ADAPTIVE)
def test_error_exponent(name):
    m = ADAPTIVE[name]
    assert m.error_exponent == pytest.approx(1.0 / (min(m.order, m.error_order) + 1))


# --------------------------------------------------------------------------- dense output


@pytest.mark.parametrize("name", DENSE)
def test_dense_output_endpoints(name):
    m = DENSE[name]
    np.testing.assert_allclose(m.dense_weights(1.0), m.b, rtol=0, atol=1e-14)
    np.testing.assert_array_equal(m.dense_weights(0.0), np.zeros(m.stages))


@pytest.mark.parametrize("name", DENSE)
@pytest.mark.parametrize("theta", [0.1, 0.3, 0.5, 0.77, 0.95])
def test_dense_output_order_conditions(name, theta):
    """A continuous extension of order q satisfies sum_i b_i(theta) Phi_i(t) =
    theta^|t| / gamma(t) for every tree with |t| <= q."""
    m = DENSE[name]
    bt, A = np.array(m.dense_weights(theta)), _A(m)
    for p in range(1, m.dense_order + 1):
        for t in trees(p):
            got = bt @ _stage_weights(t, A)
            assert got == pytest.approx(theta**p / _gamma(t), abs=1e-12), (name, theta, t)


@pytest.mark.parametrize("name", DENSE)
def test_dense_output_order_is_sharp(name):
    m = DENSE[name]
    bt, A = np.array(m.dense_weights(0.5)), _A(m)
    p = m.dense_order + 1
    worst = max(abs(bt @ _stage_weights(t, A) - 0.5**p / _gamma(t)) for t in trees(p))
    assert worst > 1e-8


def test_methods_without_dense_output_refuse_dense_weights():
    with pytest.raises(ValueError, match="no dense-output"):
        METHODS["bosh3"].dense_weights(0.5)


# --------------------------------------------------------------------------- alpha family


@pytest.mark.parametrize("a", ALPHAS)
def test_alpha_family_coefficients(a):
    m = alpha(a)
    assert m.c == (0.0, a)
    assert m.a == ((), (a,))
    assert m.b == pytest.approx((1 - 1 / (2 * a), 1 / (2 * a)))
    assert m.order == 2 and not m.adaptive and not m.fsal


def test_alpha_family_named_members():
    for a, name in ((0.5, "midpoint"), (1.0, "heun2"), (2 / 3, "ralston")):
        m, ref = alpha(a), METHODS[name]
        np.testing.assert_allclose(m.b, ref.b, atol=1e-15)
        np.testing.assert_allclose(m.c, ref.c, atol=1e-15)
        np.testing.assert_allclose(m.a[1], ref.a[1], atol=1e-15)


@pytest.mark.parametrize("a", [0, 0.0, -1, -0.5, float("nan"), float("inf"), -float("inf"),
                               True, "0.5", None])
def test_alpha_rejects_bad_parameter(a):
    with pytest.raises(ValueError, match="alpha"):
        alpha(a)


# --------------------------------------------------------------------------- validation

GOOD = dict(name="mine", c=(0.0, 0.5), a=((), (0.5,)), b=(0.0, 1.0), order=2)


def test_valid_user_tableau_is_accepted():
    m = ButcherTableau(**GOOD)
    assert m.stages == 2 and m.order == 2 and not m.adaptive and not m.fsal


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(a=((), (0.4,))), r"row 1 of a sums to 0\.4.*c\[1\] = 0\.5"),
        (dict(b=(0.2, 0.9)), r"b must sum to 1"),
        (dict(a=((), (0.5, 0.0))), r"row 1 of a must hold 1 entries.*explicit"),
        (dict(a=((0.0,), (0.5,))), r"row 0 of a must hold 0 entries.*explicit"),
        (dict(a=((0.0, 0.0), (0.5, 0.0))), r"row 0 of a must hold 0 entries"),
        (dict(c=(0.1, 0.5)), r"c\[0\] must be 0"),
        (dict(a=((),)), r"a must have 2 rows"),
        (dict(b=(1.0,)), r"b must have 2 entries"),
        (dict(c=(), a=(), b=()), r"at least one stage"),
        (dict(name=""), r"name must be a non-empty string"),
        (dict(order=0), r"order must be a positive int"),
        (dict(order=2.0), r"order must be a positive int"),
        (dict(b_error=(0.1, 0.1), error_order=1), r"b_error .*must sum to 0"),
        (dict(b_error=(0.1, -0.1, 0.0), error_order=1), r"b_error must have 2 entries"),
        (dict(b_error=(0.1, -0.1)), r"error_order"),
        (dict(error_order=1), r"error_order given without b_error"),
        (dict(dense=((0.5,), (0.5,)), dense_order=1), r"theta=1 must equal b"),
        (dict(dense=((0.0,),), dense_order=1), r"dense must have 2 rows"),
        (dict(dense=((0.0,), (1.0,)), b=(0.0, 1.0)), r"dense_order"),
    ],
)
def test_invalid_tableau_raises(change, match):
    with pytest.raises(ValueError, match=match):
        ButcherTableau(**{**GOOD, **change})


def test_tableau_is_immutable_and_normalised():
    m = ButcherTableau(name="lists", c=[0, 1], a=[[], [1]], b=[0.5, 0.5], order=2)
    assert m.c == (0.0, 1.0) and m.a == ((), (1.0,)) and isinstance(m.b, tuple)
    with pytest.raises(AttributeError):
        m.order = 3  # type: ignore[misc]


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(a=((), (NAN,))), r"row 1 of a"),  # also does not sum to c[1] = 0.5
        (dict(c=(0.0, NAN), a=((), (NAN,))), r"c|row 1 of a"),
        (dict(c=(0.0, INF), a=((), (INF,))), r"c|row 1 of a"),
        (dict(b=(NAN, 1.0)), r"\bb\b"),
        (dict(b=(INF, -INF)), r"\bb\b"),
        (dict(b_error=(NAN, 0.0), error_order=1), r"b_error"),
        (dict(dense=((NAN,), (1.0,)), dense_order=1), r"dense"),
    ],
    ids=["a-nan", "c-and-a-nan", "c-and-a-inf", "b-nan", "b-inf", "b_error-nan", "dense-nan"],
)
def test_non_finite_coefficients_are_rejected(change, match):
    with pytest.raises(ValueError, match=match):
        ButcherTableau(**{**GOOD, **change})
