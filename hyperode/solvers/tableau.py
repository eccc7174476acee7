"""Butcher tableaux: an explicit Runge–Kutta method as validated, immutable data.

A method with ``s`` stages advances ``y' = f(t, y)`` from ``(t, y)`` by a step ``h``::

    k_i = f(t + c_i h, y + h * sum_{j<i} a_ij k_j)      i = 1..s
    y1  = y + h * sum_i b_i k_i                         (order ``order``)
    err =     h * sum_i b_error_i k_i                   (= y1 - y1_embedded)

and, when ``dense`` is given, the continuous extension for ``theta`` in [0, 1]::

    y(t + theta h) = y + h * sum_i b_i(theta) k_i,   b_i(theta) = sum_m dense[i][m] theta**(m+1)

Two extensions cover the high-order pairs: a second error row ``b_error2`` (DOP853's
third-order estimate, combined with the first as in Hairer's code), and extra stages
``extra_c``/``extra_a`` that only the continuous extension uses (DOP853's 7th-order
interpolant needs three): they are evaluated once per accepted step that has an output
inside it, and ``dense`` then has a row for each of the ``s + len(extra_c)`` stages.

Every explicit Runge–Kutta method in hyperode, hypersolver bases included, is one of
these run by ``hyperode.solvers.step.rk_step``; adding such a method is adding a tableau.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

_TOL = 1e-12


def _as_tuple(values: Sequence[float]) -> tuple[float, ...]:
    return tuple(float(v) for v in values)


@dataclass(frozen=True)
class ButcherTableau:
    """An explicit Runge–Kutta method.

    Args:
        name: how the method is spelled in ``odeint(..., method=name)``.
        c: stage times, length ``s``; ``c[0]`` must be 0.
        a: the strictly lower-triangular stage matrix given as ``s`` rows, row ``i``
            holding ``i`` entries (``a[0]`` is empty).
        b: solution weights, length ``s``; sum to 1.
        order: order of the solution ``b``.
        b_error: weights of the embedded error estimate ``b - b_hat`` (length ``s``,
            sums to 0), or ``None`` for a fixed-step-only method.
        error_order: order of the embedded solution ``b_hat`` (required with
            ``b_error``); with ``b_error2``, the order the combined estimate controls
            (DOP853: 7, its combination behaving like an order-8 error term).
        dense: optional continuous extension, ``s`` rows of polynomial coefficients
            (``dense[i][m]`` multiplies ``theta**(m+1)``); at ``theta = 1`` it must
            reproduce ``b``.
        dense_order: order of the continuous extension (required with ``dense``).
        b_error2: a second error row (sums to 0), combined with ``b_error`` by the
            adaptive integrator as DOP853 does; ``None`` for one estimate.
        extra_c, extra_a: stages used only by ``dense``: stage ``s + j`` is evaluated at
            ``t + extra_c[j] h`` from ``y + h sum_i extra_a[j][i] k_i`` over the
            ``s + j`` stages before it (row ``j`` of ``extra_a`` holds ``s + j`` entries).

    ``fsal`` (first same as last) is derived: the last stage is evaluated at
    ``(t + h, y1)`` exactly when ``c[-1] == 1`` and the last row of ``a`` equals
    ``b``; its ``f`` value is then the next step's first stage, for free.

    A tableau is a step method (``hyperode.solvers.step.StepMethod``) run by the stage
    loop, so it can stand wherever any method can.
    """

    corrections_per_step: ClassVar[int] = 0  # no learned correction
    implicit: ClassVar[bool] = False

    name: str
    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    order: int
    b_error: tuple[float, ...] | None = None
    error_order: int | None = None
    dense: tuple[tuple[float, ...], ...] | None = None
    dense_order: int | None = None
    b_error2: tuple[float, ...] | None = None
    extra_c: tuple[float, ...] = ()
    extra_a: tuple[tuple[float, ...], ...] = ()
    fsal: bool = field(init=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "c", _as_tuple(self.c))
        set_(self, "a", tuple(_as_tuple(row) for row in self.a))
        set_(self, "b", _as_tuple(self.b))
        if self.b_error is not None:
            set_(self, "b_error", _as_tuple(self.b_error))
        if self.dense is not None:
            set_(self, "dense", tuple(_as_tuple(row) for row in self.dense))
        if self.b_error2 is not None:
            set_(self, "b_error2", _as_tuple(self.b_error2))
        set_(self, "extra_c", _as_tuple(self.extra_c))
        set_(self, "extra_a", tuple(_as_tuple(row) for row in self.extra_a))
        self._validate()
        fsal = (
            self.stages > 1
            and abs(self.c[-1] - 1.0) < _TOL
            and self.b[-1] == 0.0
            and all(abs(x - y) < _TOL for x, y in zip(self.a[-1], self.b))
        )
        set_(self, "fsal", fsal)

    def _validate(self) -> None:
        name, s = self.name, len(self.c)
        if not isinstance(name, str) or not name:
            raise ValueError(f"ButcherTableau: name must be a non-empty string, got {name!r}")
        rows = [("c", self.c), *((f"row {i} of a", r) for i, r in enumerate(self.a)),
                ("b", self.b), ("b_error", self.b_error or ()), ("b_error2", self.b_error2 or ()),
                ("extra_c", self.extra_c),
                *((f"row {i} of extra_a", r) for i, r in enumerate(self.extra_a)),
                *((f"row {i} of dense", r) for i, r in enumerate(self.dense or ()))]
        for where, row in rows:
            bad = [x for x in row if not math.isfinite(x)]
            if bad:
                raise ValueError(f"ButcherTableau {name!r}: {where} must hold finite numbers, "
                                 f"got {bad[0]!r}")
        if s == 0:
            raise ValueError(f"ButcherTableau {name!r}: c must have at least one stage")
        if abs(self.c[0]) > _TOL:
            raise ValueError(f"ButcherTableau {name!r}: c[0] must be 0 (explicit), got {self.c[0]}")
        if len(self.a) != s:
            raise ValueError(f"ButcherTableau {name!r}: a must have {s} rows (one per stage), "
                             f"got {len(self.a)}")
        for i, row in enumerate(self.a):
            if len(row) != i:
                raise ValueError(f"ButcherTableau {name!r}: row {i} of a must hold {i} entries "
                                 f"(explicit, strictly lower-triangular), got {len(row)}")
            if i and abs(math.fsum(row) - self.c[i]) > 1e-10:
                raise ValueError(f"ButcherTableau {name!r}: row {i} of a sums to "
                                 f"{math.fsum(row)!r} but c[{i}] = {self.c[i]!r}")
        if len(self.b) != s:
            raise ValueError(f"ButcherTableau {name!r}: b must have {s} entries, got {len(self.b)}")
        if abs(math.fsum(self.b) - 1.0) > 1e-10:
            raise ValueError(f"ButcherTableau {name!r}: b must sum to 1, "
                             f"sums to {math.fsum(self.b)!r}")
        if not isinstance(self.order, int) or self.order < 1:
            raise ValueError(f"ButcherTableau {name!r}: order must be a positive int, "
                             f"got {self.order!r}")
        if self.b_error is not None:
            if len(self.b_error) != s:
                raise ValueError(f"ButcherTableau {name!r}: b_error must have {s} entries, "
                                 f"got {len(self.b_error)}")
            if abs(math.fsum(self.b_error)) > 1e-10:
                raise ValueError(f"ButcherTableau {name!r}: b_error (= b - b_hat) must sum to 0, "
                                 f"sums to {math.fsum(self.b_error)!r}")
            if not isinstance(self.error_order, int) or self.error_order < 1:
                raise ValueError(f"ButcherTableau {name!r}: error_order (order of the embedded "
                                 f"method) must be a positive int, got {self.error_order!r}")
        elif self.error_order is not None:
            raise ValueError(f"ButcherTableau {name!r}: error_order given without b_error")
        if self.b_error2 is not None:
            if self.b_error is None:
                raise ValueError(f"ButcherTableau {name!r}: b_error2 given without b_error")
            if len(self.b_error2) != s or abs(math.fsum(self.b_error2)) > 1e-10:
                raise ValueError(f"ButcherTableau {name!r}: b_error2 must have {s} entries "
                                 f"summing to 0")
        if len(self.extra_a) != len(self.extra_c):
            raise ValueError(f"ButcherTableau {name!r}: extra_a must have one row per extra_c "
                             f"entry ({len(self.extra_c)}), got {len(self.extra_a)}")
        for j, row in enumerate(self.extra_a):
            if len(row) != s + j:
                raise ValueError(f"ButcherTableau {name!r}: row {j} of extra_a must hold "
                                 f"{s + j} entries, got {len(row)}")
            if abs(math.fsum(row) - self.extra_c[j]) > 1e-10:
                raise ValueError(f"ButcherTableau {name!r}: row {j} of extra_a sums to "
                                 f"{math.fsum(row)!r} but extra_c[{j}] = {self.extra_c[j]!r}")
        if self.extra_c and self.dense is None:
            raise ValueError(f"ButcherTableau {name!r}: extra stages are only used by dense; "
                             f"give dense too")
        if self.dense is not None:
            rows = s + len(self.extra_c)
            if len(self.dense) != rows:
                raise ValueError(f"ButcherTableau {name!r}: dense must have {rows} rows, "
                                 f"got {len(self.dense)}")
            at_one = [math.fsum(row) for row in self.dense]
            weights_at_one = (*self.b, *[0.0] * len(self.extra_c))
            if any(abs(x - y) > 1e-9 for x, y in zip(at_one, weights_at_one)):
                raise ValueError(f"ButcherTableau {name!r}: the dense output at theta=1 must "
                                 f"equal b, got {at_one}")
            if not isinstance(self.dense_order, int) or self.dense_order < 1:
                raise ValueError(f"ButcherTableau {name!r}: dense_order must be a positive int, "
                                 f"got {self.dense_order!r}")

    @property
    def stages(self) -> int:
        return len(self.c)

    @property
    def adaptive(self) -> bool:
        """Whether the method carries an embedded error estimate."""
        return self.b_error is not None

    @property
    def error_exponent(self) -> float:
        """Exponent ``1 / (q + 1)``, ``q = min(order, error_order)``, of step-size control."""
        q = self.order if self.error_order is None else min(self.order, self.error_order)
        return 1.0 / (q + 1)

    def dense_weights(self, theta: float) -> list[float]:
        """``b_i(theta)`` of the continuous extension, as Python floats."""
        if self.dense is None:
            raise ValueError(f"method {self.name!r} has no dense-output coefficients")
        out = []
        for row in self.dense:
            acc = 0.0
            for coef in reversed(row):  # Horner in theta, then one more theta
                acc = acc * theta + coef
            out.append(acc * theta)
        return out

    def __repr__(self) -> str:
        kind = (f"{self.order}({self.error_order})" if self.adaptive else f"order {self.order}")
        return f"ButcherTableau({self.name!r}, {self.stages} stages, {kind}, fsal={self.fsal})"


def dense_from_polynomials(
    polys: Sequence[np.polynomial.Polynomial],
) -> tuple[tuple[float, ...], ...]:
    """Turn ``b_i(theta)`` polynomials (no constant term) into ``ButcherTableau.dense`` rows."""
    rows = []
    degree = max(p.degree() for p in polys)
    for p in polys:
        coef = np.zeros(degree + 1)
        coef[: len(p.coef)] = p.coef
        if abs(coef[0]) > 1e-12:
            raise ValueError("a dense-output polynomial must vanish at theta = 0")
        rows.append(tuple(float(x) for x in coef[1:]))
    return tuple(rows)


def alpha(a: float) -> ButcherTableau:
    """The explicit second-order one-parameter family ``c = (0, a)``, ``a21 = a``,
    ``b = (1 - 1/(2a), 1/(2a))``: ``a = 1/2`` is the midpoint method, ``a = 1`` Heun's,
    ``a = 2/3`` Ralston's (hypersolver paper, Sec. 5.2 — swapping the base across it)."""
    if isinstance(a, bool) or not isinstance(a, (int, float)) or not math.isfinite(a) or a <= 0:
        raise ValueError(f"alpha(a): a must be a finite number > 0, got {a!r}")
    a = float(a)
    return ButcherTableau(
        name=f"alpha({a:g})", c=(0.0, a), a=((), (a,)), b=(1.0 - 1.0 / (2 * a), 1.0 / (2 * a)),
        order=2,
    )
