"""The test-solver rule of Ott et al. (ICLR 2021, "ResNet After All?", §3 and App. B).

A Neural ODE trained with a solver is checked by evaluating it with a *test solver*
whose global error is markedly smaller. This module picks that solver:
``checking_solver`` (the paper's name, ``test_solver``, is an alias) and its step rule
``checking_step_size`` (alias ``test_step_size``).

Fixed-step solvers
------------------
A method of order ``p`` run with step ``h`` has a global error ``E(h) ~ C h^p``. Ott et
al. ask the test solver (order ``q >= p``) to be ``factor`` (their ``acc_fact``,
default 50) times more accurate, treating the constants ``C`` as equal (the span is
taken as is; the paper's models integrate over ``[0, 1]``)::

    h_test^q <= h^p / factor.

If the training step already satisfies it (``h^q <= h^p / factor``, i.e.
``h^(q-p) <= 1/factor``, only possible for ``q > p``) the test solver runs with the
same ``h``; otherwise with the largest step that does::

    h_test = (h^p / factor)^(1/q)        (< h, since h^(q-p) > 1/factor there).

With ``factor = 50`` this gives the reference code's rules (REPRODUCTION.md, B):
Euler -> midpoint: same ``h`` if ``1/h >= 50``, else ``sqrt(h/50)``; midpoint -> rk4:
same ``h`` if ``1/h^2 >= 50``, else ``(h^2/50)^(1/4)``; Euler -> rk4: same ``h`` if
``1/h^3 >= 50``, else ``(h/50)^(1/4)``. For ``q == p`` (rk4 -> rk4) the formula gives
``h / factor^(1/p)``. (The comparison at the boundary is ``>=`` here, ``>`` in the
reference code; it only matters when ``h^(q-p)`` equals ``1/factor`` exactly.)

Adaptive solvers
----------------
Tolerances do not map to errors by a formula; the reference code uses
fehlberg2 -> dopri5 at ``tol/5`` and dopri5 -> dopri5 at ``tol/10`` (``rtol`` and
``atol`` both scaled). Other adaptive methods get dopri5 at ``tol/10``.
"""

from __future__ import annotations

from ..nn import SolverConfig
from ..solvers.methods import get_method

#: Default test method of each fixed-step training method (Ott et al.).
DEFAULT_TEST_METHOD: dict[str, str] = {"euler": "midpoint", "midpoint": "rk4", "rk4": "rk4"}
#: Adaptive pairs: training method -> (test method, tolerance divisor).
ADAPTIVE_TEST: dict[str, tuple[str, float]] = {"fehlberg2": ("dopri5", 5.0),
                                                "dopri5": ("dopri5", 10.0)}


def method_order(method: str) -> int:
    """The order of accuracy of a named method (``ValueError`` for an unknown name)."""
    return int(get_method(method).order)


def checking_step_size(h: float, train_order: int, test_order: int, factor: float = 50.0) -> float:
    """The test solver's step: ``h`` if ``h^(q-p) <= 1/factor``, else
    ``(h^p/factor)^(1/q)`` (``p`` = ``train_order``, ``q`` = ``test_order``); see the
    module docstring for the derivation."""
    if not (isinstance(h, (int, float)) and h > 0 and h == h and h != float("inf")):
        raise ValueError(f"test_step_size: h must be a finite number > 0, got {h!r}")
    if train_order < 1 or test_order < train_order:
        raise ValueError(f"test_step_size: need 1 <= train_order <= test_order, got "
                         f"train_order={train_order}, test_order={test_order}")
    if factor <= 1:
        raise ValueError(f"test_step_size: factor must be > 1, got {factor!r}")
    p, q = train_order, test_order
    if q > p and h ** (q - p) <= 1.0 / factor:
        return float(h)
    return float((h ** p / factor) ** (1.0 / q))


def step_of(solver: SolverConfig, span: float = 1.0) -> float:
    """The step ``h`` of a fixed-grid solver (``span/num_steps`` when given as a count)."""
    if solver.step_size is not None:
        return float(solver.step_size)
    if solver.num_steps is not None:
        return abs(span) / solver.num_steps
    raise ValueError(f"solver {solver.describe()!r} has no fixed step (step_size or "
                     f"num_steps)")


def checking_solver(train: SolverConfig, *, factor: float = 50.0, test_method: str | None = None,
                span: float = 1.0) -> SolverConfig:
    """The test solver for the training solver ``train``.

    Args:
        train: the training solver; a fixed grid (``step_size`` or ``num_steps``) or an
            adaptive solve (fehlberg2, dopri5, other adaptive methods -> dopri5 at tol/10).
        factor: how many times smaller the test solver's global error must be
            (fixed-step rule only).
        test_method: override the test method of a fixed-step training solver
            (default: Euler -> midpoint, midpoint -> rk4, rk4 -> rk4); its order must
            be at least the training method's.
        span: length of the integration interval (to turn ``num_steps`` into ``h``).

    Returns:
        A fixed-grid ``SolverConfig`` with ``step_size=h_test`` or an adaptive one with
        scaled tolerances.
    """
    name = train.method_name
    if not train.is_fixed:
        method, divisor = ADAPTIVE_TEST.get(name, ("dopri5", 10.0))
        return SolverConfig(method=method, rtol=train.rtol / divisor, atol=train.atol / divisor)
    method = test_method or DEFAULT_TEST_METHOD.get(name)
    if method is None:
        raise ValueError(f"test_solver: no default test method for {name!r}; pass "
                         f"test_method= (one of order >= {train.tableau.order})")
    p, q = method_order(name), method_order(method)
    if q < p:
        raise ValueError(f"test_solver: test_method={method!r} (order {q}) is less accurate "
                         f"than the training method {name!r} (order {p})")
    h = step_of(train, span)
    return SolverConfig(method=method, step_size=checking_step_size(h, p, q, factor))


#: The paper's names (the "test solver" of a training solver), kept as aliases.
test_solver = checking_solver
test_step_size = checking_step_size
# pytest would collect these names as tests in a user's test module that imports them;
# ``__test__ = False`` tells it not to (the aliases are the same function objects).
checking_solver.__dict__["__test__"] = False
checking_step_size.__dict__["__test__"] = False
