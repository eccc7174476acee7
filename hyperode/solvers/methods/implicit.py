"""Implicit Runge–Kutta methods on fixed grids, under torchdiffeq's names.

For ``y' = f(t, y)`` with ``y`` the solver's flat state (any shape ``S``, ``n``
elements; real floating point), an ``s``-stage implicit Runge–Kutta step of signed size
``h`` from ``(t, y)`` solves for the stage derivatives ``K_1 … K_s`` (each of shape ``S``)::

    G_i(K) = K_i - f(t + c_i h, Y_i) = 0,    Y_i = y + h * sum_j a_ij K_j,
    y1 = y + h * sum_i b_i K_i

with the full ``s x s`` matrix ``A = (a_ij)`` of an ``ImplicitTableau``. The methods:

=====================  ======  ===========  ========================================
name                   order   structure    notes
=====================  ======  ===========  ========================================
``implicit_euler``     1       DIRK, s=1    L-stable, stiffly accurate
``implicit_midpoint``  2       DIRK, s=1    A-stable, symplectic (Gauss, s=1)
``trapezoid``          2       ESDIRK, s=2  explicit first stage (reuses ``k1``)
``radauIIA3``          3       FIRK, s=2    L-stable, stiffly accurate
``radauIIA5``          5       FIRK, s=3    L-stable, stiffly accurate
``gl4``                4       FIRK, s=2    Gauss–Legendre (alias ``gauss_legendre4``)
``gl6``                6       FIRK, s=3    Gauss–Legendre (alias ``gauss_legendre6``)
``sdirk2``             2       SDIRK, s=2   Alexander's, gamma = 1 - 1/sqrt(2), L-stable
``trbdf2``             2       ESDIRK, s=3  TR-BDF2, explicit first stage
=====================  ======  ===========  ========================================

The structure is read from ``A``: lower triangular (DIRK/SDIRK/ESDIRK) tableaux are
solved stage by stage, each implicit stage ``i`` being a system of the size of the
state; any other (FIRK) tableau solves its ``m`` implicit stages together, one system
``m`` times the size of the state. A one-stage method is both (torchdiffeq runs
``implicit_midpoint`` and ``implicit_euler`` as "fully implicit"; the system is the
same ``(I - h a_11 J) dK = -G``). A stage whose row of ``A`` is zero (``c_i = 0``) is
explicit: ``K_i = f(t, y) = k1``, the integrator's first stage (``trapezoid``,
``trbdf2``; an ESDIRK with an error row plugs in the same way).

Newton. Each system is solved by simplified Newton iterations without a graph::

    M dK = -G(K),   K <- K + dK,
    M = I - h a_ii J                       (DIRK stage i: [d, d] per sample)
    M = I - h (A_II ⊗ J)                   (FIRK, implicit stages I: [m d, m d] per sample)

with ``J = df/dy`` at the step's start ``(t, y)`` (``options['jacobian']``:
``torch.func.jacrev``, ``torch.func.jacfwd`` or forward finite differences), ``M``
factorised once by ``torch.linalg.lu_factor`` and only back-substituted per iteration.
The initial guess is ``K_i = k1`` (FIRK) or the previous stage's derivative (DIRK).

Convergence (Hairer & Wanner's rule, Solving ODEs II §IV.8): with ``delta_k =
max |h dK| / (1 + |y|)`` over all elements of the ``k``-th increment and the contraction
rate ``theta_k = delta_k / delta_{k-1}``, the solve stops once ``eta * delta_k <=
newton_tol`` with ``eta = theta_k / (1 - theta_k)`` (on the first iteration ``eta`` is
carried over from the previous solve as ``max(eta, eps)**0.8``, starting at 1). It
fails when ``theta_k >= 1`` (divergence), when ``theta_k**(max_newton_iters - k) /
(1 - theta_k) * delta_k > newton_tol`` (it cannot converge in the iterations left; not
checked on a last attempt), after ``max_newton_iters`` iterations, or on a non-finite
value.

Reuse and refresh (per solve, in the ``Stepper``):

- ``J`` is evaluated on the first step, and again at a step's start when the previous
  step's slowest Newton solve needed more than 3 iterations (``_REFRESH_ITERS``).
- The LU factors are cached per value of ``h * a_ii`` (DIRK) or ``h`` (FIRK) and
  reused while that value is unchanged (relative ``_SAME_H_RTOL = 1e-9``, so the
  rounding of grid differences does not count as a change): a new ``h`` refactorises,
  a new ``J`` drops them all.
- A failed Newton solve counts ``stats.newton_failures`` (recovered ones included) and
  is retried: (1) if ``J`` was not evaluated at this step's ``(t, y)``, it is, and
  Newton starts again; (2) if the iteration was contracting but too slowly, ``J`` is
  evaluated at its last iterate's stage state (DIRK: that stage's ``(t + c_i h, Y_i)``;
  FIRK: the last implicit stage's) and Newton continues from that iterate, this time
  without giving up early. If nothing is left to try, ``SolverError`` is raised naming
  ``t``, ``h``, the reason and what to try. (With ``with_error=True``, the hook for an
  adaptive method, the step instead returns an infinite error so that the adaptive
  integrator rejects it and shrinks the step.)

Batches. For a state ``[B, ...]`` whose samples do not interact, ``J`` is block
diagonal: ``batch_independent`` makes each sample its own ``d x d`` system (``d =
n / B``), so ``J`` is ``[B, d, d]`` and ``M`` ``[B, m d, m d]``, never one ``(B d) x
(B d)`` matrix. The ``B`` blocks come from ``d`` (not ``B d``) derivative passes, each on
the whole batch: ``jacrev`` differentiates ``sum_b f(t, y)_b`` (a ``[d]`` output: row
``p`` of its Jacobian with respect to sample ``b`` is ``sum_c dF_{c,p} / dy_{b,.}``, which
is sample ``b``'s own block when samples are independent), ``jacfwd`` and ``fd`` push
the same tangent ``e_q`` through every sample at once. This is what vmapping
``jacrev`` over the batch computes, with the same work, but ``f`` is always called on
the whole batch (no single-sample call that ``f`` might not support).
``batch_independent="auto"`` (the default) uses that for a state with ``ndim >= 2``
after checking, once per solve on the first Jacobian, that the blocks explain ``f``'s
full derivative: one exact vector-Jacobian product (``jacrev``; a Jacobian-vector
product for ``jacfwd``; one extra evaluation of ``f`` as a finite difference for
``fd``) with a fixed pseudo-random ``[B, d]`` vector ``v`` is compared with
``blocks @ v``; they agree to rounding (``1e3 * eps`` of the magnitudes; ``fd``:
``100 * sqrt(eps)``) exactly when no sample's output depends on another sample's state
(any coupling changes the full product but not the block one; a coupling too weak to
show at that precision is too weak to matter to Newton, and perturbs gradients only in
proportion). Cost: that one product (plus
``d`` derivative passes wasted if the check fails, after which the full ``n x n``
Jacobian is used). ``True`` skips the check (for a coupled ``f`` Newton then runs with
an approximate matrix: it converges more slowly or not at all, and gradients are
approximate); ``False`` always uses the full Jacobian.

Gradients (with respect to ``y`` and anything ``f`` closes over) are exact by the
implicit function theorem: the converged stages ``K*`` solve ``G(K*, y, params) = 0``, so
``dK*/dp = -(dG/dK)^{-1} dG/dp``. After the graph-free Newton solve, one Newton-style
correction is taken *with* a graph::

    K = K*.detach() - M*^{-1} G(K*.detach(); y, params),
    M* = dG/dK at K* = I - h [a_ij J_i]_ij,    J_i = df/dy (t + c_i h, Y_i*)

``M*`` (detached) uses the exact Jacobian at each converged stage, so ``M* = dG/dK``
there and the derivative of ``K`` is ``-M*^{-1} dG/dp`` = the IFT derivative, exactly
(``G(K*) ~ 0`` also makes the forward value a Newton step closer to the solution). A
DIRK applies it stage by stage (``M*_ii = I - h a_ii J_i``, earlier stages entering
``G_i`` with their graph: block forward substitution of the same formula). With the
simplified-Newton ``J`` from the step's start the result would only be approximately
the gradient, hence the stage Jacobians. Cost, only when a graph is recorded (grad
mode on and ``y`` or ``k1`` requiring grad): per step one evaluation of ``f`` and one
Jacobian per implicit stage, and one LU (FIRK) or one per implicit stage (DIRK). A
stiffly accurate method whose last stage is at ``c = 1`` then hands that stage's
Jacobian (at ``(t + h, y1)``) to the next step's Newton solve, and a DIRK its LU too,
when the step is accepted. With ``jacobian="fd"`` the stage Jacobians, hence the
gradients, are finite-difference accurate (about ``sqrt(eps)``).

Each step returns ``StepResult(y1, None, ks=[k1, K_1, …, K_s], f1)`` (``ks[0] = f(t, y)``,
``ks[1 + i]`` stage ``i``; an explicit first stage is ``k1`` itself) with ``f1 = K_s``
when the method is stiffly accurate (``c_s = 1`` and the last row of ``A`` equal to
``b``, so ``Y_s = y1`` and ``K_s = f(t + h, y1)`` up to the Newton tolerance), else
``None``. Dense output is the cubic Hermite interpolant. ``SolverStats`` counts
``n_jacobian`` (Jacobians evaluated), ``n_lu`` (LU factorisations), ``n_newton`` (Newton
iterations of the graph-free solves; the gradient correction is not counted) and
``newton_failures``; ``f``'s own evaluations, Jacobian passes (one per
``jacrev``/``jacfwd`` call, ``d`` or ``n`` for ``fd``) included, are counted by ``f``.

Complex states are refused (``ValueError``). Coefficients: Hairer & Wanner, Solving ODEs
II, §IV.5 (Gauss, Radau IIA) and §IV.6 (SDIRK); Hosea & Shampine (1996) for TR-BDF2.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.func import jacfwd, jacrev, jvp, vjp

from ...errors import SolverError
from ..stats import SolverStats
from ..step import Field, StepResult, combine, hermite

_TOL = 1e-12  # tableau consistency checks
_REFRESH_ITERS = 3  # a Newton solve slower than this refreshes J for the next step
_SAME_H_RTOL = 1e-9  # h * a_ii values this close share an LU
_DEFAULT_RTOL = 1e-7  # odeint's defaults, for a method used without configure()
_DEFAULT_ATOL = 1e-9
_NEWTON_TOL_FACTOR = 0.1  # default newton_tol = this * min(rtol, atol) ...
_NEWTON_TOL_FLOOR = 50.0  # ... but at least this many eps of the state's dtype
_DEFAULT_MAX_NEWTON_ITERS = 10
JACOBIANS = ("jacrev", "jacfwd", "fd")
BATCH_MODES = (True, False, "auto")
_PROBE_SEED = 20240607  # the block-diagonal check's fixed pseudo-random vector


# --------------------------------------------------------------------------- tableau


def _floats(name: str, what: str, values: Any) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError) as e:
        raise ValueError(f"tableau {name!r}: {what} must be a sequence of numbers, "
                         f"got {values!r}") from e
    if not all(math.isfinite(v) for v in out):
        raise ValueError(f"tableau {name!r}: {what} must be finite, got {out}")
    return out


@dataclass(frozen=True)
class ImplicitTableau:
    """Coefficients of an implicit Runge–Kutta method (the module docstring's equations).

    Attributes:
        name: the method's name.
        c: the ``s`` nodes.
        a: the full ``s x s`` matrix, ``a[i][j]`` (rows of ``s`` floats).
        b: the ``s`` weights (sum to 1).
        order: the order ``p`` of ``y1``.
        b_error: optional error row (sums to 0): the error estimate is
            ``h * sum_i b_error_i K_i`` (an embedded pair's ``b - b_hat``), for an
            adaptive method; needs ``error_order``.
        error_order: the order the estimate measures (``q``; error exponent
            ``1 / (q + 1)``).

    Validated: ``s >= 1``, every row and ``b`` of length ``s``, all finite, each row of
    ``A`` summing to its ``c_i`` and ``b`` to 1 (within ``1e-12`` of their sizes), at
    least one implicit stage. Derived: ``stages``; ``diagonally_implicit`` (``A`` lower
    triangular); ``explicit`` (per stage: ``a_ii = 0`` in a DIRK, a zero row otherwise;
    stage 0 explicit means ``K_1 = k1``); ``implicit_stages`` (their indices);
    ``stiffly_accurate`` (``c_s = 1`` and the last row of ``A`` equal to ``b``).
    """

    name: str
    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    order: int
    b_error: tuple[float, ...] | None = None
    error_order: int | None = None
    stages: int = field(init=False, repr=False, compare=False)
    diagonally_implicit: bool = field(init=False, repr=False, compare=False)
    explicit: tuple[bool, ...] = field(init=False, repr=False, compare=False)
    implicit_stages: tuple[int, ...] = field(init=False, repr=False, compare=False)
    stiffly_accurate: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        name = self.name
        if not isinstance(name, str) or not name:
            raise ValueError(f"tableau name must be a non-empty string, got {name!r}")
        set_ = object.__setattr__
        c = _floats(name, "c", self.c)
        s = len(c)
        if s == 0:
            raise ValueError(f"tableau {name!r}: needs at least one stage")
        try:
            rows = list(self.a)
        except TypeError as e:
            raise ValueError(f"tableau {name!r}: a must be a sequence of rows") from e
        if len(rows) != s:
            raise ValueError(f"tableau {name!r}: a has {len(rows)} rows, c has {s} nodes")
        a = tuple(_floats(name, f"a[{i}]", row) for i, row in enumerate(rows))
        for i, row in enumerate(a):
            if len(row) != s:
                raise ValueError(f"tableau {name!r}: a[{i}] has {len(row)} entries, "
                                 f"expected {s} (the full matrix)")
            if abs(sum(row) - c[i]) > _TOL * max(1.0, sum(abs(x) for x in row)):
                raise ValueError(f"tableau {name!r}: row {i} of a sums to {sum(row)!r}, "
                                 f"but c[{i}] = {c[i]!r}")
        b = _floats(name, "b", self.b)
        if len(b) != s:
            raise ValueError(f"tableau {name!r}: b has {len(b)} weights, expected {s}")
        if abs(sum(b) - 1.0) > _TOL * max(1.0, sum(abs(x) for x in b)):
            raise ValueError(f"tableau {name!r}: b sums to {sum(b)!r}, expected 1")
        order = self.order
        if isinstance(order, bool) or not isinstance(order, numbers.Integral) or order < 1:
            raise ValueError(f"tableau {name!r}: order must be an int >= 1, got {order!r}")
        b_error = self.b_error
        if (b_error is None) != (self.error_order is None):
            raise ValueError(f"tableau {name!r}: give b_error and error_order together")
        if b_error is not None:
            b_error = _floats(name, "b_error", b_error)
            if len(b_error) != s:
                raise ValueError(f"tableau {name!r}: b_error has {len(b_error)} entries, "
                                 f"expected {s}")
            if abs(sum(b_error)) > _TOL * max(1.0, sum(abs(x) for x in b_error)):
                raise ValueError(f"tableau {name!r}: b_error sums to {sum(b_error)!r}, "
                                 f"expected 0")
            eo = self.error_order
            if isinstance(eo, bool) or not isinstance(eo, numbers.Integral) or eo < 1:
                raise ValueError(f"tableau {name!r}: error_order must be an int >= 1, "
                                 f"got {eo!r}")
        dirk = all(a[i][j] == 0.0 for i in range(s) for j in range(i + 1, s))
        if dirk:
            explicit = tuple(a[i][i] == 0.0 for i in range(s))
        else:
            explicit = tuple(all(x == 0.0 for x in row) for row in a)
        implicit = tuple(i for i in range(s) if not explicit[i])
        if not implicit:
            raise ValueError(f"tableau {name!r} is explicit; use a hyperode.ButcherTableau")
        if not dirk and any(explicit[i] and c[i] != 0.0 for i in range(s)):
            raise ValueError(f"tableau {name!r}: an explicit stage of a fully implicit "
                             f"tableau must be at c = 0")
        stiff = abs(c[-1] - 1.0) <= _TOL and all(abs(x - y) <= _TOL for x, y in zip(a[-1], b))
        for key, value in (("c", c), ("a", a), ("b", b), ("b_error", b_error),
                           ("order", int(order)), ("stages", s), ("diagonally_implicit", dirk),
                           ("explicit", explicit), ("implicit_stages", implicit),
                           ("stiffly_accurate", stiff)):
            set_(self, key, value)
        if b_error is not None:
            set_(self, "error_order", int(self.error_order))


# --------------------------------------------------------------------------- options


def _check_option(where: str, name: str, value: Any) -> Any:
    """``value`` validated for option ``name``; ``where`` formats the name in messages."""
    label = where.format(name)
    if name == "batch_independent":
        if not (value is True or value is False or value == "auto"):
            raise ValueError(f"{label}={value!r} is invalid; expected True, False or 'auto'")
        return value if isinstance(value, bool) else "auto"
    if name == "jacobian":
        if value not in JACOBIANS:
            raise ValueError(f"{label}={value!r} is invalid; expected one of "
                             f"{', '.join(map(repr, JACOBIANS))}")
        return value
    if name == "newton_tol":
        if value is None:
            return None
        if isinstance(value, Tensor) and value.numel() == 1 and not value.is_complex():
            value = float(value.detach())
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
        if ok:
            value = float(value)
            ok = math.isfinite(value) and value > 0
        if not ok:
            raise ValueError(f"{label}={value!r} is invalid; expected a finite number > 0 "
                             f"(or None for the default tied to rtol/atol)")
        return value
    if name == "max_newton_iters":
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1
        if not ok:
            raise ValueError(f"{label}={value!r} is invalid; expected an integer >= 1")
        return int(value)
    raise AssertionError(name)


def _smallest_positive(x: float | Tensor) -> float:
    if isinstance(x, Tensor):
        pos = x.detach()[x.detach() > 0]
        return float(pos.min()) if pos.numel() else 0.0
    return float(x)


class ImplicitRK:
    """An implicit Runge–Kutta step method: a tableau plus its Newton settings.

    Args (``options[...]`` of a solve; validated, ``ValueError`` naming the option):
        tableau: the ``ImplicitTableau``.
        batch_independent: ``True``, ``False`` or ``"auto"`` (default): whether the
            samples of a ``[B, ...]`` state are independent, so that each is its own
            ``d x d`` Newton system (module docstring, "Batches").
        jacobian: ``"jacrev"`` (default), ``"jacfwd"`` or ``"fd"`` (forward differences,
            ``d`` evaluations of ``f`` per Jacobian, ``n`` without batch independence).
        newton_tol: Newton stops once the estimated error of the stage states is below
            ``newton_tol * (1 + |y|)`` elementwise; default ``max(0.1 * min(rtol, atol),
            50 * eps)`` (``eps`` of the state's dtype; ``min`` over the positive
            tolerances), at least as strict as ``0.1 * (atol + rtol * |y|)``.
        max_newton_iters: Newton iterations per system, default 10.
        rtol, atol: the solve's tolerances (floats or tensors), for the default tolerance.

    Attributes: ``name``, ``order`` (the tableau's), ``adaptive = False`` (no error
    estimate is used yet; a tableau with ``b_error`` already computes one with
    ``with_error=True``), ``corrections_per_step = 0``, ``implicit = True``.
    """

    adaptive = False
    corrections_per_step = 0
    implicit = True
    option_names = frozenset({"batch_independent", "jacobian", "newton_tol",
                              "max_newton_iters"})

    def __init__(self, tableau: ImplicitTableau, *, batch_independent: bool | str = "auto",
                 jacobian: str = "jacrev", newton_tol: float | None = None,
                 max_newton_iters: int = _DEFAULT_MAX_NEWTON_ITERS,
                 rtol: float | Tensor = _DEFAULT_RTOL, atol: float | Tensor = _DEFAULT_ATOL,
                 _where: str = "{}"):
        if not isinstance(tableau, ImplicitTableau):
            raise ValueError(f"tableau must be an ImplicitTableau, got {type(tableau).__name__}")
        self.tableau = tableau
        self.name = tableau.name
        self.order = tableau.order
        self.batch_independent = _check_option(_where, "batch_independent", batch_independent)
        self.jacobian = _check_option(_where, "jacobian", jacobian)
        self.newton_tol = _check_option(_where, "newton_tol", newton_tol)
        self.max_newton_iters = _check_option(_where, "max_newton_iters", max_newton_iters)
        self.rtol = rtol
        self.atol = atol

    @property
    def error_exponent(self) -> float | None:
        """``1 / (q + 1)`` for a tableau with an error row, else ``None``."""
        q = self.tableau.error_order
        return None if q is None else 1.0 / (q + 1)

    def configure(self, options: dict[str, Any], rtol: float | Tensor,
                  atol: float | Tensor) -> ImplicitRK:
        """A new instance with the ``option_names`` present in ``options`` (others are
        ignored: the caller checks names) and the solve's tolerances."""
        kw = {k: options.get(k, getattr(self, k)) for k in self.option_names}
        return type(self)(self.tableau, rtol=rtol, atol=atol, _where="options[{!r}]", **kw)

    def tolerance(self, dtype: torch.dtype) -> float:
        """The Newton tolerance used for a state of ``dtype``."""
        if self.newton_tol is not None:
            return self.newton_tol
        tols = [x for x in (_smallest_positive(self.rtol), _smallest_positive(self.atol))
                if x > 0]
        base = _NEWTON_TOL_FACTOR * min(tols) if tols else 0.0
        return max(base, _NEWTON_TOL_FLOOR * torch.finfo(dtype).eps)

    def stepper(self, f: Field, stats: SolverStats) -> ImplicitStepper:
        return ImplicitStepper(self, f, stats)

    def __repr__(self) -> str:
        return (f"ImplicitRK({self.name!r}, batch_independent={self.batch_independent!r}, "
                f"jacobian={self.jacobian!r}, newton_tol={self.newton_tol!r}, "
                f"max_newton_iters={self.max_newton_iters})")


# --------------------------------------------------------------------------- stepper


class _NewtonFailure(Exception):
    """A Newton solve failed: ``why``, the ``stage`` label for messages and, when the
    iteration was contracting but too slowly, its last iterate ``z`` (else ``None``)."""

    def __init__(self, why: str, stage: str, z: Tensor | None = None):
        super().__init__(why)
        self.why, self.stage, self.z = why, stage, z
        self.done: list[str] = []  # where J was re-evaluated before giving up


class ImplicitStepper:
    """An ``ImplicitRK`` on one solve: the Jacobian, LU factors and Newton statistics.

    Attributes (after the first step): ``systems`` = ``(B, d)``, the number of
    independent Newton systems and the size of each (``(B, n / B)`` with batch
    independence, else ``(1, n)``); ``jacobian_matrix``: the current ``J``,
    ``[B, d, d]`` (detached).
    """

    dense_needs_f1 = True

    def __init__(self, method: ImplicitRK, f: Field, stats: SolverStats):
        self.method = method
        self.tableau = method.tableau
        self.f = f
        self.stats = stats
        self.systems: tuple[int, int] | None = None
        self.jacobian_matrix: Tensor | None = None
        self._shape: torch.Size | None = None
        self._tol = 0.0
        self._eps = 0.0
        self._J_y: Tensor | None = None  # the state J was evaluated at (identity)
        self._y_step: Tensor | None = None  # the current step's starting state
        self._J_stale = False
        self._lu: dict[float, tuple[Tensor, Tensor]] = {}
        self._eta = 1.0
        self._aii: Tensor | None = None  # FIRK: A restricted to the implicit stages
        self._pending: tuple[StepResult, Tensor, float | None, Any] | None = None
        self._f1_cache: tuple[StepResult, Tensor] | None = None
        self._iters = 0  # slowest Newton solve of the current step
        self._auto_pending = False  # batch_independent="auto" not yet checked
        # torch.func cannot trace a field that runs autograd itself (the adjoint's backward
        # dynamics); such a field gets finite differences for the rest of the solve.
        self._how = method.jacobian
        tab = self.tableau
        self._lu_slots = len({tab.a[i][i] for i in tab.implicit_stages}) \
            if tab.diagonally_implicit else 1

    # ------------------------------------------------------------------ set-up

    def _setup(self, y: Tensor) -> None:
        if y.is_complex() or not y.is_floating_point():
            raise ValueError(f"method {self.method.name!r}: implicit methods need a real "
                             f"floating-point state, got dtype {y.dtype} (split a complex "
                             f"state into real and imaginary parts)")
        self._shape = y.shape
        self._tol = self.method.tolerance(y.dtype)
        self._eps = torch.finfo(y.dtype).eps
        mode = self.method.batch_independent
        n = y.numel()
        if mode is True and y.ndim < 2:
            raise ValueError(f"options['batch_independent']=True needs a state with a batch "
                             f"dimension (ndim >= 2, samples along dim 0), got shape "
                             f"{tuple(y.shape)}")
        if mode is False or y.ndim < 2 or y.shape[0] <= 1:
            self.systems = (1, n)
            self._auto_pending = False
        else:
            self.systems = (y.shape[0], n // y.shape[0])
            self._auto_pending = mode == "auto"

    # ------------------------------------------------------------------ Jacobians

    def _jacobian(self, t: float, y: Tensor, fy: Tensor | None) -> Tensor:
        """``df/dy`` at ``(t, y)`` as ``[B, d, d]`` blocks (``y`` detached; ``fy = f(t, y)``
        detached, needed by ``fd``). Counts ``stats.n_jacobian``."""
        self.stats.n_jacobian += 1
        B, d = self.systems
        shape, f = self._shape, self.f
        y2 = y.detach().reshape(B, d)
        how = self._how
        if how != "fd":
            try:
                return self._func_jacobian(how, t, y2)
            except RuntimeError as e:
                if "functorch" not in str(e) and "transform" not in str(e):
                    raise
                self._how = how = "fd"
        with torch.no_grad():
            if fy is None:
                fy = f(t, y2.reshape(shape))
            f0 = fy.detach().reshape(B, d)
            J = torch.empty(B, d, d, dtype=y.dtype, device=y.device)
            root = math.sqrt(self._eps)
            for q in range(d):
                yq = y2.clone()
                col = yq[:, q]
                col.add_(root * torch.clamp(col.abs(), min=1.0))
                dq = (col - y2[:, q]).unsqueeze(1)
                J[:, :, q] = (f(t, yq.reshape(shape)).reshape(B, d) - f0) / dq
            return J

    def _func_jacobian(self, how: str, t: float, y2: Tensor) -> Tensor:
        """``[B, d, d]`` blocks by ``torch.func`` (``jacrev`` or ``jacfwd``)."""
        B, d = self.systems
        shape, f = self._shape, self.f
        with torch.no_grad():
            if how == "jacrev":
                def summed(z: Tensor) -> Tensor:
                    return f(t, z.reshape(shape)).reshape(B, d).sum(0)
                return jacrev(summed)(y2).permute(1, 0, 2).contiguous()

            def shifted(u: Tensor) -> Tensor:
                return f(t, (y2 + u).reshape(shape)).reshape(B, d)
            return jacfwd(shifted)(torch.zeros(d, dtype=y2.dtype, device=y2.device))

    def _block_diagonal(self, t: float, y: Tensor, fy: Tensor, J: Tensor) -> bool:
        """Whether the ``[B, d, d]`` blocks ``J`` (from the collapsed derivative) explain
        ``f``'s full derivative at ``(t, y)``: one product with a fixed pseudo-random
        vector, compared to rounding (module docstring)."""
        B, d = self.systems
        shape, f = self._shape, self.f
        y2 = y.detach().reshape(B, d)
        gen = torch.Generator(device=y.device).manual_seed(_PROBE_SEED)
        v = torch.randn(B, d, generator=gen, dtype=y.dtype, device=y.device)

        def full(z: Tensor) -> Tensor:
            return f(t, z.reshape(shape)).reshape(B, d)

        how = self._how
        with torch.no_grad():
            if how == "jacrev":  # v^T J_full against the blocks' v_b^T J_b
                u = vjp(full, y2)[1](v)[0]
                w = torch.einsum("bpq,bp->bq", J, v)
                mag = torch.einsum("bpq,bp->bq", J.abs(), v.abs())
                rel = 1e3 * self._eps
            else:
                w = torch.einsum("bpq,bq->bp", J, v)
                mag = torch.einsum("bpq,bq->bp", J.abs(), v.abs())
                if how == "jacfwd":
                    u = jvp(full, (y2,), (v,))[1]
                    rel = 1e3 * self._eps
                else:
                    root = math.sqrt(self._eps)
                    step = root * (1.0 + float(y2.abs().max()))
                    u = (full(y2 + step * v) - fy.detach().reshape(B, d)) / step
                    mag = mag + fy.detach().reshape(B, d).abs() / (1.0 + float(y2.abs().max()))
                    rel = 100.0 * root
            err = float((u - w).abs().max())
            scale = float(mag.max()) + float(u.abs().max())
        return err <= rel * scale + torch.finfo(y.dtype).tiny

    def _newton_jacobian(self, t: float, y: Tensor, k1: Tensor) -> None:
        """Evaluate the Newton ``J`` at the step's start ``(t, y)``; drop the LU factors."""
        J = self._jacobian(t, y, k1)
        if self._auto_pending:
            self._auto_pending = False
            if not self._block_diagonal(t, y, k1, J):
                self.systems = (1, y.numel())
                J = self._jacobian(t, y, k1)
        self.jacobian_matrix = J
        self._J_y = y
        self._J_stale = False
        self._lu = {}

    # ------------------------------------------------------------------ linear algebra

    def _factor(self, M: Tensor) -> tuple[Tensor, Tensor]:
        self.stats.n_lu += 1
        LU, piv = torch.linalg.lu_factor(M)
        return LU, piv

    def _lu_for(self, key: float, build: Callable[[], Tensor]) -> tuple[Tensor, Tensor]:
        """The factors of ``build()`` cached under ``key`` (``h * a_ii`` or ``h``); at most
        one entry per distinct diagonal value is kept (the oldest goes), so a changing
        ``h`` does not accumulate factors."""
        cache = self._lu
        for k, lu in cache.items():
            if abs(k - key) <= _SAME_H_RTOL * abs(key):
                return lu
        lu = self._factor(build())
        while len(cache) >= self._lu_slots:
            del cache[next(iter(cache))]
        cache[key] = lu
        return lu

    def _dirk_matrix(self, J: Tensor, ha: float) -> Tensor:
        """``I - h a_ii J``: ``[B, d, d]``."""
        d = J.shape[-1]
        eye = torch.eye(d, dtype=J.dtype, device=J.device)
        return eye - ha * J

    def _firk_matrix(self, Js: Tensor, h: float) -> Tensor:
        """``I - h [a_ij J_i]`` over the implicit stages, ``[B, m d, m d]``; ``Js`` is
        ``[B, d, d]`` (one ``J`` for all stages: ``I - h A_II ⊗ J``) or ``[m, B, d, d]``."""
        A = self._aii
        m = A.shape[0]
        B, d = Js.shape[-3], Js.shape[-1]
        if Js.ndim == 3:
            blocks = torch.einsum("ij,bpq->bipjq", A, Js)
        else:
            blocks = torch.einsum("ij,ibpq->bipjq", A, Js)
        eye = torch.eye(m * d, dtype=Js.dtype, device=Js.device)
        return eye - h * blocks.reshape(B, m * d, m * d)

    @staticmethod
    def _solve(lu: tuple[Tensor, Tensor], r: Tensor) -> Tensor:
        return torch.linalg.lu_solve(lu[0], lu[1], r.unsqueeze(-1)).squeeze(-1)

    # ------------------------------------------------------------------ Newton

    def _newton(self, residual: Callable[[Tensor], Tensor], z: Tensor,
                lu: Callable[[], tuple[Tensor, Tensor]], sc: Tensor, h: float,
                stage: str, patient: bool) -> Tensor:
        """Simplified Newton on ``residual(z) = 0`` for ``z`` ``[B, m, d]`` (no graph);
        ``lu()`` gives the factors of ``M``, ``sc = 1 + |y|`` as ``[B, 1, d]``. Raises
        ``_NewtonFailure``; unless ``patient`` (the last attempt), also as soon as the
        contraction rate says it cannot converge in the iterations left."""
        tol, max_iters, stats = self._tol, self.method.max_newton_iters, self.stats
        factors = lu()
        B, m, d = z.shape
        eta = self._eta
        prev = math.inf
        theta = 0.0
        it = 0
        try:
            for it in range(1, max_iters + 1):
                stats.n_newton += 1
                dz = self._solve(factors, residual(z).reshape(B, m * d)).reshape(B, m, d)
                z = z - dz
                delta = abs(h) * float((dz.abs() / sc).max())
                if not math.isfinite(delta):
                    raise _NewtonFailure("a stage or f became non-finite (NaN/inf)", stage)
                if it > 1:
                    theta = delta / prev
                    if theta >= 1.0:
                        raise _NewtonFailure(f"the iteration diverged at iteration {it} "
                                             f"(contraction rate {theta:.3g} >= 1)", stage)
                    eta = theta / (1.0 - theta)
                if eta * delta <= tol or delta == 0.0:
                    self._eta = max(eta, self._eps) ** 0.8
                    return z
                if not patient and it > 1 and \
                        theta ** (max_iters - it) / (1.0 - theta) * delta > tol:
                    raise _NewtonFailure(
                        f"it would not converge within max_newton_iters={max_iters} "
                        f"(iteration {it}: increment {delta:.3g}, contraction rate "
                        f"{theta:.3g}, tolerance {tol:.3g})", stage, z)
                prev = delta
            raise _NewtonFailure(f"it did not converge in max_newton_iters={max_iters} "
                                 f"iterations (last increment {delta:.3g}, tolerance "
                                 f"{tol:.3g})", stage, z)
        finally:
            self._iters = max(self._iters, it)

    def _with_retry(self, t: float, y: Tensor, k1: Tensor,
                    solve: Callable[[Tensor, bool], Tensor], z0: Tensor,
                    point: Callable[[Tensor], tuple[float, Tensor]]) -> Tensor:
        """``solve(z0, patient)`` (Newton from ``z0`` with the current ``J``; ``patient``
        for the last attempt: no early give-up), retried on failure:

        1. if ``J`` was not evaluated at this step's ``(t, y)``, it is, and Newton starts
           again from ``z0``;
        2. if the (last) failure was a contracting iteration that was too slow, ``J`` is
           evaluated at its last iterate's stage state ``point(z) = (t_i, Y_i)`` and
           Newton continues from there;
        3. otherwise, or if that fails too, the failure propagates, its ``done`` saying
           which of these were tried.

        Every failed solve counts ``stats.newton_failures``."""
        stats = self.stats
        done = []
        try:
            return solve(z0, False)
        except _NewtonFailure as e:
            stats.newton_failures += 1
            failure = e
        if self._J_y is not self._y_step:
            self._newton_jacobian(t, self._y_step, k1)
            done.append("at the step's start")
            try:
                return solve(z0, False)
            except _NewtonFailure as e:
                stats.newton_failures += 1
                failure = e
        if failure.z is not None:
            t_j, y_j = point(failure.z)
            self.jacobian_matrix = self._jacobian(t_j, y_j, None)
            self._J_y = None
            self._lu = {}
            done.append("at the last iterate")
            try:
                return solve(failure.z, True)
            except _NewtonFailure as e:
                stats.newton_failures += 1
                failure = e
        failure.done = done
        raise failure

    def _pack(self, xs: Sequence[Tensor]) -> Tensor:
        B, d = self.systems
        return torch.stack([x.reshape(B, d) for x in xs], 1)

    def _firk_stages(self, t: float, y: Tensor, h: float, k1: Tensor, sc: Tensor
                     ) -> list[Tensor]:
        """All implicit stages of a fully implicit tableau together (no graph)."""
        tab = self.tableau
        c, a, imp, shape = tab.c, tab.a, tab.implicit_stages, self._shape
        f = self.f
        if self._aii is None or self._aii.dtype != y.dtype or self._aii.device != y.device:
            self._aii = torch.tensor([[a[i][j] for j in imp] for i in imp], dtype=y.dtype,
                                     device=y.device)

        def unpack(z: Tensor) -> list[Tensor]:
            ks = [k1] * tab.stages
            for jj, j in enumerate(imp):
                ks[j] = z[:, jj].reshape(shape)
            return ks

        def residual(z: Tensor) -> Tensor:
            ks = unpack(z)
            return z - self._pack([f(t + c[i] * h, combine(y, ks, a[i], h)) for i in imp])

        def lu() -> tuple[Tensor, Tensor]:
            return self._lu_for(h, lambda: self._firk_matrix(self.jacobian_matrix, h))

        def solve(z0: Tensor, patient: bool) -> Tensor:
            return self._newton(residual, z0, lu, sc, h, "", patient)

        def point(z: Tensor) -> tuple[float, Tensor]:  # the last implicit stage
            i = imp[-1]
            return t + c[i] * h, combine(y, unpack(z), a[i], h)

        z0 = self._pack([k1] * len(imp))
        return unpack(self._with_retry(t, y, k1, solve, z0, point))

    def _dirk_stages(self, t: float, y: Tensor, h: float, k1: Tensor, sc: Tensor
                     ) -> list[Tensor]:
        """The stages of a diagonally implicit tableau one by one (no graph)."""
        tab = self.tableau
        c, a, f, shape = tab.c, tab.a, self.f, self._shape
        ks: list[Tensor] = []
        for i in range(tab.stages):
            ti = t + c[i] * h
            if tab.explicit[i]:
                ks.append(k1 if i == 0 else f(ti, combine(y, ks, a[i][:i], h)))
                continue
            base = combine(y, ks, a[i][:i], h) if i else y
            ha = h * a[i][i]

            def state(z: Tensor, base: Tensor = base, ha: float = ha) -> Tensor:
                return torch.add(base, z.reshape(shape), alpha=ha)

            def residual(z: Tensor, state: Callable = state, ti: float = ti) -> Tensor:
                return z - f(ti, state(z)).reshape(z.shape)

            def lu(ha: float = ha) -> tuple[Tensor, Tensor]:
                return self._lu_for(ha, lambda: self._dirk_matrix(self.jacobian_matrix, ha))

            def solve(z0: Tensor, patient: bool, residual: Callable = residual,
                      lu: Callable = lu, i: int = i) -> Tensor:
                return self._newton(residual, z0, lu, sc, h, f" (stage {i + 1})", patient)

            def point(z: Tensor, state: Callable = state, ti: float = ti
                      ) -> tuple[float, Tensor]:
                return ti, state(z)

            z0 = self._pack([ks[-1] if ks else k1])
            ks.append(self._with_retry(t, y, k1, solve, z0, point).reshape(shape))
        return ks

    # ------------------------------------------------------------------ gradient

    def _attach_gradient(self, t: float, y: Tensor, h: float, k1: Tensor, ks: list[Tensor]
                         ) -> tuple[list[Tensor], Any]:
        """The IFT correction ``K = K* - M*^{-1} G(K*)`` with a graph (module docstring);
        returns the stages and what the next step's Newton solve may reuse."""
        tab = self.tableau
        c, a, f, shape = tab.c, tab.a, self.f, self._shape
        imp = tab.implicit_stages
        if tab.diagonally_implicit:
            out: list[Tensor] = []
            handoff = None
            for i in range(tab.stages):
                ti = t + c[i] * h
                if tab.explicit[i]:
                    out.append(k1 if i == 0 else f(ti, combine(y, out, a[i][:i], h)))
                    continue
                star = ks[i]
                yi = combine(y, [*out, star], a[i][: i + 1], h)
                fi = f(ti, yi)
                J = self._jacobian(ti, yi.detach(), fi.detach())
                lu = self._factor(self._dirk_matrix(J, h * a[i][i]))
                g = self._pack([star - fi])[:, 0]
                out.append(star - self._solve(lu, g).reshape(shape))
                handoff = (J, h * a[i][i], lu)
            return out, handoff
        mixed = [k1 if tab.explicit[j] else ks[j] for j in range(tab.stages)]
        ys = [combine(y, mixed, a[i], h) for i in imp]
        fs = [f(t + c[i] * h, yi) for i, yi in zip(imp, ys)]
        Js = torch.stack([self._jacobian(t + c[i] * h, yi.detach(), fi.detach())
                          for i, yi, fi in zip(imp, ys, fs)])
        lu = self._factor(self._firk_matrix(Js, h))
        B, d = self.systems
        m = len(imp)
        g = (self._pack([ks[i] for i in imp]) - self._pack(fs)).reshape(B, m * d)
        z = self._pack([ks[i] for i in imp]) - self._solve(lu, g).reshape(B, m, d)
        out = list(mixed)
        for jj, j in enumerate(imp):
            out[j] = z[:, jj].reshape(shape)
        return out, (Js[-1].clone(), None, None)

    # ------------------------------------------------------------------ protocol

    def step(self, t: float, y: Tensor, h: float, k1: Tensor,
             with_error: bool = False) -> StepResult:
        """Advance the flat state ``y`` (shape ``S``) from ``t`` by ``h`` given
        ``k1 = f(t, y)``; returns ``StepResult(y1, error, [k1, K_1, …, K_s], f1)``
        (module docstring). ``with_error`` needs a tableau with ``b_error``."""
        tab = self.tableau
        if with_error and tab.b_error is None:
            raise ValueError(f"method {self.method.name!r} has no error estimate; run it on "
                             f"a fixed grid")
        if self._shape is None:
            self._setup(y)
        elif y.shape != self._shape:
            raise ValueError(f"method {self.method.name!r}: the state's shape changed from "
                             f"{tuple(self._shape)} to {tuple(y.shape)} within one solve")
        s = tab.stages
        if h == 0.0:
            error = torch.zeros_like(y) if with_error else None
            return StepResult(y, error, [k1] * (s + 1), k1 if tab.stiffly_accurate else None)
        if self.jacobian_matrix is None or self._J_stale:
            self._newton_jacobian(t, y, k1)
        self._iters = 0
        self._y_step = y  # J is "current" when evaluated at this very state
        yd, k1d = y.detach(), k1.detach()
        with torch.no_grad():
            sc = (1.0 + yd.abs()).reshape(self.systems[0], 1, self.systems[1])
            try:
                if tab.diagonally_implicit:
                    ks = self._dirk_stages(t, yd, h, k1d, sc)
                else:
                    ks = self._firk_stages(t, yd, h, k1d, sc)
            except _NewtonFailure as e:
                if with_error:  # an adaptive integrator rejects the step and shrinks h
                    self._J_stale = self._J_y is not y
                    return StepResult(y, torch.full_like(yd, math.inf), [k1] * (s + 1), None)
                raise self._failure(t, h, e) from None
        self._J_stale = self._iters > _REFRESH_ITERS
        handoff = None
        if torch.is_grad_enabled() and (y.requires_grad or k1.requires_grad):
            ks, handoff = self._attach_gradient(t, y, h, k1, ks)
        elif tab.explicit[0]:
            ks[0] = k1
        y1 = combine(y, ks, tab.b, h)
        error = None
        if with_error:
            with torch.no_grad():
                error = combine(None, ks, tab.b_error, h)
        result = StepResult(y1, error, [k1, *ks], ks[-1] if tab.stiffly_accurate else None)
        self._pending = (result, *handoff) if handoff is not None and tab.stiffly_accurate \
            and tab.c[-1] == 1.0 and not tab.explicit[-1] else None
        return result

    def accept(self, t: float, y: Tensor, h: float, result: StepResult) -> None:
        """Hand the last stage's exact Jacobian (and a DIRK's LU) of an accepted step
        with a gradient to the next step's Newton solve (stiffly accurate, ``c_s = 1``)."""
        pending, self._pending = self._pending, None
        if pending is None or pending[0] is not result:
            return
        _, J, key, lu = pending
        self.jacobian_matrix = J
        self._J_y = result.y1
        self._J_stale = False
        self._lu = {} if key is None else {key: lu}

    def dense(self, t: float, y: Tensor, h: float, result: StepResult, theta: float,
              f1: Tensor | None) -> Tensor:
        """``y(t + theta*h)``, ``theta`` in [0, 1]: the cubic Hermite interpolant through
        ``(y, k1)`` and ``(y1, f1)`` (``f1 = result.f1``, else evaluated once per step)."""
        theta = float(theta)
        if theta == 0.0:
            return y
        if theta == 1.0:
            return result.y1
        if f1 is None:
            f1 = result.f1
        if f1 is None:
            cache = self._f1_cache
            if cache is not None and cache[0] is result:
                f1 = cache[1]
            else:
                f1 = self.f(t + h, result.y1)
                self._f1_cache = (result, f1)
        return hermite(y, result.y1, result.ks[0], f1, h, theta)

    def _failure(self, t: float, h: float, e: _NewtonFailure) -> SolverError:
        m = self.method
        fd = " or options['jacobian']='jacrev'/'jacfwd' (exact Jacobians)" \
            if m.jacobian == "fd" else ""
        tried = (f"after re-evaluating the Jacobian {' and '.join(e.done)}" if e.done else
                 "with the Jacobian evaluated at that step's start")
        return SolverError(
            f"{m.name}: Newton's iteration on the implicit stages{e.stage} failed in the step "
            f"from t={t!r} with h={h!r} ({tried}): {e.why}. Try a smaller step "
            f"(options['step_size'] or more grid points near t={t!r}), a larger "
            f"options['max_newton_iters'] (now {m.max_newton_iters}), "
            f"a looser options['newton_tol'] (now {self._tol:.3g}){fd}, or check f for a "
            f"singularity or a discontinuity near t={t!r}"
        )


# --------------------------------------------------------------------------- methods

_S2, _S3, _S6, _S15 = (math.sqrt(x) for x in (2.0, 3.0, 6.0, 15.0))

IMPLICIT_EULER = ImplicitTableau("implicit_euler", c=(1.0,), a=((1.0,),), b=(1.0,), order=1)

IMPLICIT_MIDPOINT = ImplicitTableau("implicit_midpoint", c=(0.5,), a=((0.5,),), b=(1.0,),
                                    order=2)

TRAPEZOID = ImplicitTableau("trapezoid", c=(0.0, 1.0), a=((0.0, 0.0), (0.5, 0.5)),
                            b=(0.5, 0.5), order=2)

RADAU_IIA3 = ImplicitTableau(
    "radauIIA3", c=(1 / 3, 1.0), a=((5 / 12, -1 / 12), (3 / 4, 1 / 4)), b=(3 / 4, 1 / 4),
    order=3,
)

RADAU_IIA5 = ImplicitTableau(
    "radauIIA5",
    c=((4 - _S6) / 10, (4 + _S6) / 10, 1.0),
    a=(
        ((88 - 7 * _S6) / 360, (296 - 169 * _S6) / 1800, (-2 + 3 * _S6) / 225),
        ((296 + 169 * _S6) / 1800, (88 + 7 * _S6) / 360, (-2 - 3 * _S6) / 225),
        ((16 - _S6) / 36, (16 + _S6) / 36, 1 / 9),
    ),
    b=((16 - _S6) / 36, (16 + _S6) / 36, 1 / 9),
    order=5,
)

GL4 = ImplicitTableau(
    "gl4",
    c=(1 / 2 - _S3 / 6, 1 / 2 + _S3 / 6),
    a=((1 / 4, 1 / 4 - _S3 / 6), (1 / 4 + _S3 / 6, 1 / 4)),
    b=(1 / 2, 1 / 2),
    order=4,
)

GL6 = ImplicitTableau(
    "gl6",
    c=(1 / 2 - _S15 / 10, 1 / 2, 1 / 2 + _S15 / 10),
    a=(
        (5 / 36, 2 / 9 - _S15 / 15, 5 / 36 - _S15 / 30),
        (5 / 36 + _S15 / 24, 2 / 9, 5 / 36 - _S15 / 24),
        (5 / 36 + _S15 / 30, 2 / 9 + _S15 / 15, 5 / 36),
    ),
    b=(5 / 18, 4 / 9, 5 / 18),
    order=6,
)

_G = 1 - _S2 / 2  # sdirk2's gamma; also TR-BDF2's gamma/2 (its first stage ends at 2*_G)
SDIRK2 = ImplicitTableau("sdirk2", c=(_G, 1.0), a=((_G, 0.0), (1 - _G, _G)), b=(1 - _G, _G),
                         order=2)

_W = _S2 / 4  # TR-BDF2's weights of the first two stages
TRBDF2 = ImplicitTableau(
    "trbdf2",
    c=(0.0, 2 * _G, 1.0),
    a=((0.0, 0.0, 0.0), (_G, _G, 0.0), (_W, _W, _G)),
    b=(_W, _W, _G),
    order=2,
)

TABLEAUS = (IMPLICIT_EULER, IMPLICIT_MIDPOINT, TRAPEZOID, RADAU_IIA3, RADAU_IIA5, GL4, GL6,
            SDIRK2, TRBDF2)

implicit_euler, implicit_midpoint, trapezoid, radauIIA3, radauIIA5, gl4, gl6, sdirk2, \
    trbdf2 = (ImplicitRK(tab) for tab in TABLEAUS)

METHODS = (implicit_euler, implicit_midpoint, trapezoid, radauIIA3, radauIIA5, gl4, gl6,
           sdirk2, trbdf2)
ALIASES = {"gauss_legendre4": "gl4", "gauss_legendre6": "gl6"}

__all__ = [
    "ALIASES", "BATCH_MODES", "JACOBIANS", "METHODS", "TABLEAUS", "ImplicitRK",
    "ImplicitStepper", "ImplicitTableau", "gl4", "gl6", "implicit_euler",
    "implicit_midpoint", "radauIIA3", "radauIIA5", "sdirk2", "trapezoid", "trbdf2",
]
