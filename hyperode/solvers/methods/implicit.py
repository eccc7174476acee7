"""Implicit Runge–Kutta methods: torchdiffeq's fixed-grid ones and adaptive pairs.

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
``kvaerno3``           3(2)    ESDIRK, s=4  adaptive; Kværnø's, L-stable, stiffly accurate
``kvaerno5``           5(4)    ESDIRK, s=7  adaptive; Kværnø's, L-stable, stiffly accurate
``radau5``             5(3)    FIRK, s=3+1  adaptive; Radau IIA5 with Hairer's estimate
=====================  ======  ===========  ========================================

The first nine run on fixed grids (no error estimate). ``kvaerno3`` and ``kvaerno5``
(Kværnø 2004, "Singly diagonally implicit Runge–Kutta methods with an explicit first
stage", BIT 44) carry an embedded solution: the stage at ``c = 1`` before the last one,
so that ``b_error = b - a_{s-1}`` (orders 2 and 4; the embedded methods are A-stable, not
L-stable). ``radau5`` is the Radau IIA5 step (with an explicit stage 0 at ``c = 0`` that
is only ``k1``) and the estimate of Hairer & Wanner (Solving ODEs II, §IV.8):
``err = (I - h gamma0 J)^{-1} h (gamma0 k1 + sum_i e_i K_i)``, ``gamma0`` the inverse of
the real eigenvalue of ``A^{-1}``, ``e`` from the third-order embedded quadrature through
``c = (0, c_1, c_2, c_3)``; the filter ``(I - h gamma0 J)^{-1}`` (``ImplicitTableau.
error_filter``) damps the estimate's stiff components, which would otherwise grow like
``gamma0 |h lambda|`` (one solve per step with the factors of that matrix).
``radauIIA5`` stays torchdiffeq's fixed-grid method.

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

with ``J = df/dy`` at the step's start ``(t, y)`` (``options['jacobian']``: reverse mode
``"jacrev"``, one recorded evaluation of ``f`` and one batched backward pass
``torch.autograd.grad(..., is_grads_batched=True)``, falling back to
``torch.func.jacrev``; ``torch.func.jacfwd``; or forward finite differences), ``M``
factorised once by ``torch.linalg.lu_factor`` and only back-substituted per iteration
(adaptive solves: ``M^{-1}`` is formed from the factors for systems of up to 64
unknowns, so an iteration is one batched matrix-vector product). A non-finite ``J`` or
a singular ``M`` is reported, not iterated on. The initial guess is ``K_i = k1`` (FIRK)
or the previous stage's derivative (DIRK); the adaptive methods instead start each stage
from the polynomial through the (at most 3) already known stage derivatives nearest in
time, this step's and the previous accepted step's (for ``radau5`` the extrapolated
collocation polynomial, as in Hairer's RADAU5).

Convergence (Hairer & Wanner's rule, Solving ODEs II §IV.8): with ``delta_k =
max |h dK| / sc`` over all elements of the ``k``-th increment and the contraction
rate ``theta_k = delta_k / delta_{k-1}``, the solve stops once ``eta * delta_k <= tol``
with ``eta = theta_k / (1 - theta_k)`` (on the first iteration ``eta`` is carried over
from the previous solve as ``max(eta, eps)**0.8``, starting at 1). On a fixed grid (or
with ``options['newton_tol']`` given) ``sc = 1 + |y|`` and ``tol = newton_tol``; in an
adaptive solve by default ``sc = atol + rtol |y|``, the error control's own scale, and
``tol = _KAPPA = 0.1`` (Newton's error a tenth of what the step may make; never below
``50 eps (1 + |y|)``). It fails when ``theta_k >= 1`` (divergence), when
``theta_k**(max_newton_iters - k) / (1 - theta_k) * delta_k > tol`` (it cannot converge
in the iterations left; not checked on a last attempt), after ``max_newton_iters``
iterations, or on a non-finite value.

Reuse and refresh (per solve, in the ``Stepper``):

- ``J`` is evaluated on the first step, and again at a step's start when the previous
  step's slowest Newton solve needed more than 3 iterations (``_REFRESH_ITERS``) with
  an LU made for its own ``h`` (see the band below; a slow solve with a borrowed LU
  only drops the LUs).
- The LU factors are cached per value of ``h * a_ii`` (DIRK) or ``h`` (FIRK) and
  reused while that value is unchanged (relative ``_SAME_H_RTOL = 1e-9``, so the
  rounding of grid differences does not count as a change): a new ``h`` refactorises,
  a new ``J`` drops them all. In an adaptive solve an LU is also reused while
  ``|h / h_LU - 1| <= options['lu_band']`` (default 0.2; 0 refactorises whenever ``h``
  changes): Hairer's codes keep ``h`` itself unchanged in such a band to keep their LU;
  here the controller's ``h`` is taken and Newton runs with the slightly different
  matrix, which costs its contraction at most about ``|h / h_LU - 1|`` per iteration
  (measured on Van der Pol, mu = 1000: the band cuts the LUs 2-3x for 1-2% more ``f``).
- A failed Newton solve counts ``stats.newton_failures`` (recovered ones included) and
  is retried: (0) in an adaptive solve, if it used a borrowed LU, with the LU for this
  ``h``; (1) if ``J`` was not evaluated at this step's ``(t, y)``, it is, and Newton
  starts again; (2) on a fixed grid, if the iteration was contracting but too slowly,
  ``J`` is evaluated at its last iterate's stage state (DIRK: that stage's ``(t + c_i h,
  Y_i)``; FIRK: the last implicit stage's) and Newton continues from that iterate, this
  time without giving up early. If nothing is left to try, ``SolverError`` is raised
  naming ``t``, ``h``, the reason and what to try. In an adaptive solve
  (``with_error=True``) the step instead returns ``y1 = y`` and the error ``2**(q+1)
  (atol + rtol |y|)``, which the adaptive loop reads as the error ratio ``2**(q+1)``: it
  rejects the step and its controller halves ``h`` (about ``0.45 h`` at safety 0.9), the
  response of Hairer's codes to a Newton failure. ``batch_independent=True`` is checked
  once after a first failure: a coupled ``f`` is then a ``ValueError``.

Adaptive solves (``kvaerno3``, ``kvaerno5``, ``radau5``; ``ImplicitRK.adaptive`` is
``True`` for any tableau with ``b_error``) run in ``hyperode.solvers.adaptive``'s loop
with the PI controller by default (``default_controller = "pi"``: on Van der Pol it
rejects half as many steps as the I-controller) and FSAL (``f1 = K_s``). Their dense
output is a continuous extension ``y + h sum_i b_i(theta) K_i`` from the step's own
stages (no extra evaluations): radau5's collocation polynomial (order 3, Hairer's), and
for kvaerno3/5 extensions of order 3 and 4 derived here (``_KVAERNO_DENSE_NOTE``) that
also stay bounded on stiff modes. The cubic Hermite interpolant through ``(y, k1)`` and
``(y1, f1)``, which the fixed-grid methods use, is neither: on a stiff mode its ``h k1``
term grows like ``|h lambda|`` between the step's ends (measured: kvaerno5's outputs on
a smooth problem at rtol 1e-8 were 2.7e-6 off with it, 2.6e-7 with the extension; on
the 1e6-stiff linear problem of ``benchmarks/stiff.py`` at t = 0.01, 1.8e-5 and 1e-6).

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

Each step returns ``StepResult(y1, error, ks=[k1, K_1, …, K_s], f1)`` (``error`` only
with ``with_error=True``; ``ks[0] = f(t, y)``,
``ks[1 + i]`` stage ``i``; an explicit first stage is ``k1`` itself) with ``f1 = K_s``
when the method is stiffly accurate (``c_s = 1`` and the last row of ``A`` equal to
``b``, so ``Y_s = y1`` and ``K_s = f(t + h, y1)`` up to the Newton tolerance), else
``None``. Dense output is the cubic Hermite interpolant. ``SolverStats`` counts
``n_jacobian`` (Jacobians evaluated), ``n_lu`` (LU factorisations), ``n_newton`` (Newton
iterations of the graph-free solves; the gradient correction is not counted) and
``newton_failures``; ``f``'s own evaluations, Jacobian passes (one per
``jacrev``/``jacfwd`` call, ``d`` or ``n`` for ``fd``) included, are counted by ``f``.

Complex states are refused (``ValueError``). Coefficients: Hairer & Wanner, Solving ODEs
II, §IV.5 (Gauss, Radau IIA), §IV.6 (SDIRK) and §IV.8 (radau5's estimate); Hosea &
Shampine (1996) for TR-BDF2; Kværnø (2004) for kvaerno3 (written in terms of its
``gamma``, the root 0.4358665215084597 of ``6g^3 - 18g^2 + 9g - 1``) and kvaerno5
(``gamma = 0.26``, coefficients to 17 digits).
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import Tensor
from torch.func import jacfwd, jacrev, jvp, vjp

from ...errors import SolverError
from ..stats import SolverStats
from ..step import Field, HermiteDense, StepResult, combine

_TOL = 1e-12  # tableau consistency checks
_REFRESH_ITERS = 3  # a Newton solve slower than this refreshes J for the next step
_SAME_H_RTOL = 1e-9  # h * a_ii values this close share an LU
_DEFAULT_RTOL = 1e-7  # odeint's defaults, for a method used without configure()
_DEFAULT_ATOL = 1e-9
_NEWTON_TOL_FACTOR = 0.1  # default newton_tol = this * min(rtol, atol) ...
_NEWTON_TOL_FLOOR = 50.0  # ... but at least this many eps of the state's dtype
_DEFAULT_MAX_NEWTON_ITERS = 10
_KAPPA = 0.1  # adaptive solves: Newton's error at most this fraction of atol + rtol |y|
_DEFAULT_LU_BAND = 0.2  # adaptive solves: an LU serves steps with |h/h_LU - 1| <= this
_INVERSE_MAX = 64  # adaptive solves: systems up to this size are solved by M^{-1}
_PREDICTOR_NODES = 3  # Newton's starting guesses: polynomials through this many stages
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
        error_filter: optional ``g > 0``: the estimate is then ``(I - h g J)^{-1}``
            times the above (radau5's filter, Hairer & Wanner §IV.8); needs ``b_error``.
        dense: optional continuous extension, one row per stage of polynomial
            coefficients ``(beta_i1, ..., beta_iP)``: ``y(t + theta h) = y + h sum_i
            b_i(theta) K_i`` with ``b_i(theta) = sum_k beta_ik theta^k``; each row must sum
            to ``b_i`` (so that ``theta = 1`` gives ``y1``); needs ``dense_order`` (the
            order of the interpolant). Without it the dense output is the cubic Hermite
            interpolant.

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
    error_filter: float | None = None
    dense: tuple[tuple[float, ...], ...] | None = None
    dense_order: int | None = None
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
            set_(self, "error_order", int(cast(int, self.error_order)))
        dense = self.dense
        if (dense is None) != (self.dense_order is None):
            raise ValueError(f"tableau {name!r}: give dense and dense_order together")
        if dense is not None:
            try:
                rows = [_floats(name, f"dense[{i}]", row) for i, row in enumerate(dense)]
            except TypeError as e:
                raise ValueError(f"tableau {name!r}: dense must be rows of numbers") from e
            if len(rows) != s or len({len(r) for r in rows}) != 1 or not rows[0]:
                raise ValueError(f"tableau {name!r}: dense must have {s} rows of equal, "
                                 f"non-zero length")
            for i, row in enumerate(rows):
                if abs(sum(row) - b[i]) > 1e-12 * max(1.0, sum(abs(x) for x in row)):
                    raise ValueError(f"tableau {name!r}: dense[{i}] sums to {sum(row)!r}, "
                                     f"but b[{i}] = {b[i]!r} (the extension must end at y1)")
            do = self.dense_order
            if isinstance(do, bool) or not isinstance(do, numbers.Integral) or do < 1:
                raise ValueError(f"tableau {name!r}: dense_order must be an int >= 1, "
                                 f"got {do!r}")
            set_(self, "dense", tuple(rows))
            set_(self, "dense_order", int(do))
        gf = self.error_filter
        if gf is not None:
            if b_error is None:
                raise ValueError(f"tableau {name!r}: error_filter needs b_error")
            ok = isinstance(gf, numbers.Real) and not isinstance(gf, bool)
            if not ok or not (math.isfinite(gf) and gf > 0):
                raise ValueError(f"tableau {name!r}: error_filter must be a finite number "
                                 f"> 0, got {gf!r}")
            set_(self, "error_filter", float(gf))


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
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool) and \
            cast(int, value) >= 1
        if not ok:
            raise ValueError(f"{label}={value!r} is invalid; expected an integer >= 1")
        return int(value)
    if name == "lu_band":
        if isinstance(value, Tensor) and value.numel() == 1 and not value.is_complex():
            value = float(value.detach())
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
        if ok:
            value = float(value)
            ok = 0.0 <= value < 1.0
        if not ok:
            raise ValueError(f"{label}={value!r} is invalid; expected a number in [0, 1) (0: "
                             f"a new LU whenever h changes)")
        return value
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
        lu_band: adaptive methods only: an LU factorisation serves the steps with
            ``|h / h_LU - 1| <= lu_band`` (default 0.2; 0: a new LU whenever ``h``
            changes), see the module docstring.
        rtol, atol: the solve's tolerances (floats or tensors), for the default tolerance
            and (adaptive solves) the scale of the Newton test.

    Attributes: ``name``, ``order`` (the tableau's), ``adaptive`` (``True`` exactly when
    the tableau has ``b_error``; then also ``error_exponent = 1 / (q + 1)``,
    ``default_controller = "pi"`` and ``lu_band`` among the ``option_names``),
    ``corrections_per_step = 0``, ``implicit = True``.
    """

    adaptive = False
    corrections_per_step = 0
    implicit = True
    complex_states = False  # refused up front by odeint (also when no step is taken)
    option_names = frozenset({"batch_independent", "jacobian", "newton_tol",
                              "max_newton_iters"})

    def __init__(self, tableau: ImplicitTableau, *, batch_independent: bool | str = "auto",
                 jacobian: str = "jacrev", newton_tol: float | None = None,
                 max_newton_iters: int = _DEFAULT_MAX_NEWTON_ITERS,
                 lu_band: float = _DEFAULT_LU_BAND,
                 rtol: float | Tensor = _DEFAULT_RTOL, atol: float | Tensor = _DEFAULT_ATOL,
                 _where: str = "{}"):
        if not isinstance(tableau, ImplicitTableau):
            raise ValueError(f"tableau must be an ImplicitTableau, got {type(tableau).__name__}")
        self.tableau = tableau
        self.name = tableau.name
        self.order = tableau.order
        self.adaptive = tableau.b_error is not None
        if self.adaptive:  # options of adaptive solves only; the PI controller by default
            self.option_names = ImplicitRK.option_names | {"lu_band"}
            self.default_controller = "pi"
        self.batch_independent = _check_option(_where, "batch_independent", batch_independent)
        self.jacobian = _check_option(_where, "jacobian", jacobian)
        self.newton_tol = _check_option(_where, "newton_tol", newton_tol)
        self.max_newton_iters = _check_option(_where, "max_newton_iters", max_newton_iters)
        self.lu_band = _check_option(_where, "lu_band", lu_band)
        self.rtol = rtol
        self.atol = atol
        self.min_step = 0.0  # the adaptive solve's options['min_step'] (set by resolve)

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


def _lagrange(nodes: Sequence[float], x: float) -> list[float]:
    """Weights ``w`` with ``p(x) = sum_i w_i p(nodes_i)`` for every polynomial ``p`` of
    degree ``< len(nodes)`` (distinct nodes)."""
    out = []
    for i, xi in enumerate(nodes):
        w = 1.0
        for j, xj in enumerate(nodes):
            if j != i:
                w *= (x - xj) / (xi - xj)
        out.append(w)
    return out


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
        self._lu: dict[float, tuple[Tensor, ...]] = {}
        self._eta = 1.0
        self._aii: Tensor | None = None  # FIRK: A restricted to the implicit stages
        self._pending: tuple[StepResult, Tensor, float | None, Any] | None = None
        self._hermite = HermiteDense(f)  # dense output of tableaux without their own
        self._iters = 0  # slowest Newton solve of the current step
        self._step_tol = 0.0  # the current step's Newton tolerance (on the scale ``sc``)
        self._adaptive = False  # the current step has an error estimate (adaptive solve)
        self._band = method.lu_band  # adaptive: reuse an LU while |h/h_LU - 1| <= this
        self._lu_inexact = False  # the current step used an LU factorised for another h
        self._filter_lu: tuple[float, tuple[Tensor, ...]] | None = None  # error_filter's
        self._auto_pending = False  # batch_independent="auto" not yet checked
        # torch.func cannot trace a field that runs autograd itself (the adjoint's backward
        # dynamics); such a field gets finite differences for the rest of the solve.
        self._how = method.jacobian
        self._batched_grad = True  # try _reverse_jacobian for "jacrev"
        # trailing flat elements that f declares pure integrals (``integral_tail`` on the
        # user's function: odeint_adjoint's a_t and a_theta): zero Jacobian columns
        inner = getattr(f, "f", f)
        tail = getattr(getattr(inner, "func", None), "integral_tail", 0)
        self._integral_tail = tail if isinstance(tail, int) and tail >= 0 else 0
        self._claim_checked = False  # batch_independent=True verified after a failure
        self.last_newton_failure: str | None = None  # for error messages
        tab = self.tableau
        # Newton's starting guesses from the stages already known (tableaux with an error
        # estimate): the previous accepted step's, ``(t_p, h_p, ks_p)``, and this step's.
        self._predict = tab.b_error is not None
        self._previous: tuple[float, float, list[Tensor]] | None = None
        self._known: list[tuple[float, Tensor]] = []  # (node in units of h from t, K)
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
        B, d = cast("tuple[int, int]", self.systems)
        shape, f = cast(torch.Size, self._shape), self.f
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
            J = torch.zeros(B, d, d, dtype=y.dtype, device=y.device)
            root = math.sqrt(self._eps)
            for q in range(d - (min(self._integral_tail, d) if B == 1 else 0)):
                yq = y2.clone()
                col = yq[:, q]
                col.add_(root * torch.clamp(col.abs(), min=1.0))
                dq = (col - y2[:, q]).unsqueeze(1)
                J[:, :, q] = (f(t, yq.reshape(shape)).reshape(B, d) - f0) / dq
            return J

    def _func_jacobian(self, how: str, t: float, y2: Tensor) -> Tensor:
        """``[B, d, d]`` blocks by ``torch.func`` (``jacrev`` or ``jacfwd``)."""
        B, d = cast("tuple[int, int]", self.systems)
        shape, f = cast(torch.Size, self._shape), self.f
        with torch.no_grad():
            if how == "jacrev":
                J = self._reverse_jacobian(t, y2) if self._batched_grad else None
                if J is not None:
                    return J

                def summed(z: Tensor) -> Tensor:
                    return f(t, z.reshape(shape)).reshape(B, d).sum(0)
                return jacrev(summed)(y2).permute(1, 0, 2).contiguous()

            def shifted(u: Tensor) -> Tensor:
                return f(t, (y2 + u).reshape(shape)).reshape(B, d)
            return jacfwd(shifted)(torch.zeros(d, dtype=y2.dtype, device=y2.device))

    def _reverse_jacobian(self, t: float, y2: Tensor) -> Tensor | None:
        """The ``jacrev`` blocks by one recorded evaluation of ``f`` and one batched
        backward pass (``torch.autograd.grad(..., is_grads_batched=True)``, ``d``
        cotangents at once): the same reverse-mode derivatives as ``torch.func.jacrev``
        at about half its cost. ``None`` when ``f``'s output has no graph to ``y`` (a
        field that detaches, e.g. one that runs autograd itself) or the batched backward
        is not supported: ``jacrev`` (and its fallback) decide then, and this path is
        not tried again in this solve."""
        B, d = cast("tuple[int, int]", self.systems)
        z = y2.detach().requires_grad_(True)
        try:
            with torch.enable_grad():
                out = self.f(t, z.reshape(cast(torch.Size, self._shape))).reshape(B, d).sum(0)
            if not out.requires_grad:
                raise RuntimeError("no graph")
            eye = torch.eye(d, dtype=y2.dtype, device=y2.device)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # vmap's "performance drop" notes
                (J,) = torch.autograd.grad(out, z, eye, is_grads_batched=True)
        except RuntimeError:
            self._batched_grad = False
            return None
        return J.permute(1, 0, 2).contiguous()

    def _block_diagonal(self, t: float, y: Tensor, fy: Tensor, J: Tensor) -> bool:
        """Whether the ``[B, d, d]`` blocks ``J`` (from the collapsed derivative) explain
        ``f``'s full derivative at ``(t, y)``: one product with a fixed pseudo-random
        vector, compared to rounding (module docstring)."""
        B, d = cast("tuple[int, int]", self.systems)
        shape, f = cast(torch.Size, self._shape), self.f
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
        if not bool(torch.isfinite(J).all()):  # one check per Jacobian
            raise SolverError(
                f"{self.method.name}: the Jacobian df/dy at t={t!r} has non-finite entries "
                f"(NaN/inf): f is not differentiable at that state (e.g. sqrt or abs at 0, a "
                f"division by zero) or returns NaN/inf near it; make f smooth there or use "
                f"options['jacobian']='fd' (finite differences)")
        self.jacobian_matrix = J
        self._J_y = y
        self._J_stale = False
        self._lu = {}
        self._filter_lu = None

    # ------------------------------------------------------------------ linear algebra

    def _factor(self, M: Tensor, inverse: bool = False) -> tuple[Tensor, ...]:
        """``(LU, pivots)`` of ``M``; with ``inverse`` (adaptive solves, systems of at most
        ``_INVERSE_MAX`` unknowns) also ``M^{-1}`` from them, so that each Newton
        iteration is one batched matrix-vector product instead of two triangular solves
        (the same factorisation: counted once in ``stats.n_lu``)."""
        self.stats.n_lu += 1
        LU, piv, info = torch.linalg.lu_factor_ex(M)
        n = M.shape[-1]
        if not bool(torch.isfinite(LU).all() & (info == 0).all()):  # one check per LU
            raise _NewtonFailure("the Newton matrix I - h*a*J is singular or not finite", "")
        if inverse and n <= _INVERSE_MAX:
            eye = torch.eye(n, dtype=M.dtype, device=M.device).expand(M.shape)
            return LU, piv, torch.linalg.lu_solve(LU, piv, eye)
        return LU, piv

    def _lu_for(self, key: float, build: Callable[[], Tensor]) -> tuple[Tensor, ...]:
        """The factors of ``build()`` cached under ``key`` (``h * a_ii`` or ``h``); at most
        one entry per distinct diagonal value is kept (the oldest goes), so a changing
        ``h`` does not accumulate factors."""
        cache = self._lu
        band = self._band if self._adaptive else 0.0
        for k, lu in cache.items():
            if abs(k - key) <= _SAME_H_RTOL * abs(key):
                return lu
            if abs(k - key) <= band * abs(k):
                self._lu_inexact = True
                return lu
        lu = self._factor(build(), self._adaptive)
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
        A = cast(Tensor, self._aii)  # set with the first FIRK step's matrices
        m = A.shape[0]
        B, d = Js.shape[-3], Js.shape[-1]
        if Js.ndim == 3:
            blocks = torch.einsum("ij,bpq->bipjq", A, Js)
        else:
            blocks = torch.einsum("ij,ibpq->bipjq", A, Js)
        eye = torch.eye(m * d, dtype=Js.dtype, device=Js.device)
        return eye - h * blocks.reshape(B, m * d, m * d)

    @staticmethod
    def _solve(lu: tuple[Tensor, ...], r: Tensor) -> Tensor:
        if len(lu) == 3:
            return torch.bmm(lu[2], r.unsqueeze(-1)).squeeze(-1)
        return torch.linalg.lu_solve(lu[0], lu[1], r.unsqueeze(-1)).squeeze(-1)

    # ------------------------------------------------------------------ Newton

    def _newton(self, prepare: Callable[[], Callable[[Tensor], Tensor]], z: Tensor,
                sc: Tensor, h: float, stage: str, patient: bool) -> Tensor:
        """Simplified Newton on a system in the unknowns ``z`` (no graph). ``prepare()``
        fetches the factors of ``M`` and returns ``correction(z) = M^{-1} G(z)``; ``sc``
        (broadcastable to ``z``) scales the test ``|h| max |dz| / sc``. Raises
        ``_NewtonFailure``; unless ``patient`` (the last attempt), also as soon as the
        contraction rate says it cannot converge in the iterations left."""
        tol, max_iters, stats = self._step_tol, self.method.max_newton_iters, self.stats
        correction = prepare()
        eta = self._eta
        prev = math.inf
        theta = 0.0
        it = 0
        ah = abs(h)
        try:
            for it in range(1, max_iters + 1):
                stats.n_newton += 1
                dz = correction(z)
                z = z - dz
                delta = ah * float(torch.linalg.vector_norm(dz / sc, math.inf))
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
        if self._adaptive and self._lu_inexact:  # first the LU for this very h
            self._lu_inexact = False
            band, self._band = self._band, 0.0
            try:
                return solve(z0, False)
            except _NewtonFailure as e:
                stats.newton_failures += 1
                failure = e
            finally:
                self._band = band
        if self._J_y is not self._y_step:
            self._newton_jacobian(t, cast(Tensor, self._y_step), k1)
            done.append("at the step's start")
            try:
                return solve(z0, False)
            except _NewtonFailure as e:
                stats.newton_failures += 1
                failure = e
        if failure.z is not None and not self._adaptive:
            t_j, y_j = point(failure.z)
            self.jacobian_matrix = self._jacobian(t_j, y_j, None)
            self._J_y = None
            self._lu = {}
            self._filter_lu = None
            done.append("at the last iterate")
            try:
                return solve(failure.z, True)
            except _NewtonFailure as e:
                stats.newton_failures += 1
                failure = e
        failure.done = done
        raise failure

    def _start_history(self, t: float, h: float, k1: Tensor) -> None:
        """The stages Newton's starting guesses are built from (``_guess``): ``k1`` at this
        step's start and, when the previous accepted step ended here, its stages."""
        known = self._known = [(0.0, k1)]
        prev = self._previous
        if prev is None:
            return
        tp, hp, ksp = prev
        if abs(tp + hp - t) > 1e-12 * (abs(t) + abs(hp)):  # not contiguous (a jump, ...)
            return
        r = hp / h
        c = self.tableau.c
        for i in range(self.tableau.stages):
            u = (c[i] - 1.0) * r
            if abs(u) > 1e-9:  # the stage at the previous step's end is k1 (FSAL)
                known.append((u, ksp[i + 1]))

    def _guess(self, c_i: float) -> Tensor:
        """Newton's starting guess for the stage at ``t + c_i h``: the polynomial through
        the (at most ``_PREDICTOR_NODES``) known stage derivatives nearest in time (this
        step's and the previous step's; Lagrange weights in units of ``h``), evaluated
        there; a stage at the node of a known one starts from it (the latest such)."""
        known = self._known
        order = sorted([(abs(u - c_i), -j) for j, (u, _) in enumerate(known)])
        if order[0][0] <= 1e-9:
            return known[-order[0][1]][1]
        nodes: list[float] = []
        ks: list[Tensor] = []
        for _, j in order:
            u, k = known[-j]
            if any(abs(u - v) <= 1e-9 for v in nodes):
                continue
            nodes.append(u)
            ks.append(k)
            if len(nodes) == _PREDICTOR_NODES:
                break
        return combine(None, ks, _lagrange(nodes, c_i), 1.0)

    def _pack(self, xs: Sequence[Tensor]) -> Tensor:
        B, d = cast("tuple[int, int]", self.systems)
        return torch.stack([x.reshape(B, d) for x in xs], 1)

    def _firk_stages(self, t: float, y: Tensor, h: float, k1: Tensor, sc: Tensor
                     ) -> list[Tensor]:
        """All implicit stages of a fully implicit tableau together (no graph)."""
        tab = self.tableau
        c, a, imp, shape = tab.c, tab.a, tab.implicit_stages, cast(torch.Size, self._shape)
        f = self.f
        if self._aii is None or self._aii.dtype != y.dtype or self._aii.device != y.device:
            self._aii = torch.tensor([[a[i][j] for j in imp] for i in imp], dtype=y.dtype,
                                     device=y.device)

        def unpack(z: Tensor) -> list[Tensor]:
            ks = [k1] * tab.stages
            for jj, j in enumerate(imp):
                ks[j] = z[:, jj].reshape(shape)
            return ks

        B, d = cast("tuple[int, int]", self.systems)
        m = len(imp)
        # Y_I = y + h a_{I,0} k1 (an explicit first stage) + h A_II z, all stages at once
        base = self._pack([combine(y, [k1], a[i][:1], h) if tab.explicit[0] else y
                           for i in imp])
        Ah = self._aii * h
        times = [t + c[i] * h for i in imp]

        def residual(z: Tensor) -> Tensor:
            states = torch.matmul(Ah, z).add_(base).unbind(1)
            return z - torch.stack([f(ti, yi.reshape(shape)).reshape(B, d)
                                    for ti, yi in zip(times, states)], 1)

        def prepare() -> Callable[[Tensor], Tensor]:
            factors = self._lu_for(
                h, lambda: self._firk_matrix(cast(Tensor, self.jacobian_matrix), h))

            def correction(z: Tensor) -> Tensor:
                return self._solve(factors, residual(z).reshape(B, m * d)).reshape(B, m, d)
            return correction

        def solve(z0: Tensor, patient: bool) -> Tensor:
            return self._newton(prepare, z0, sc, h, "", patient)

        def point(z: Tensor) -> tuple[float, Tensor]:  # the last implicit stage
            i = imp[-1]
            return t + c[i] * h, combine(y, unpack(z), a[i], h)

        z0 = self._pack([self._guess(c[i]) for i in imp] if self._predict else
                        [k1] * len(imp))
        return unpack(self._with_retry(t, y, k1, solve, z0, point))

    def _dirk_stages(self, t: float, y: Tensor, h: float, k1: Tensor, sc: Tensor
                     ) -> list[Tensor]:
        """The stages of a diagonally implicit tableau one by one (no graph)."""
        tab = self.tableau
        c, a, f, shape = tab.c, tab.a, self.f, cast(torch.Size, self._shape)
        B, d = cast("tuple[int, int]", self.systems)
        scs = sc.reshape(shape)
        ks: list[Tensor] = []
        for i in range(tab.stages):
            ti = t + c[i] * h
            if tab.explicit[i]:
                ks.append(k1 if i == 0 else f(ti, combine(y, ks, a[i][:i], h)))
                if self._predict:
                    self._known.append((c[i], ks[-1]))
                continue
            base = combine(y, ks, a[i][:i], h) if i else y
            ha = h * a[i][i]

            def state(z: Tensor, base: Tensor = base, ha: float = ha) -> Tensor:
                return torch.add(base, z, alpha=ha)

            def prepare(ha: float = ha, ti: float = ti, state: Callable = state
                        ) -> Callable[[Tensor], Tensor]:
                factors = self._lu_for(
                    ha, lambda: self._dirk_matrix(cast(Tensor, self.jacobian_matrix), ha))
                inv = factors[2] if len(factors) == 3 else None

                def correction(z: Tensor) -> Tensor:
                    r = (z - f(ti, state(z))).reshape(B, d, 1)
                    if inv is not None:
                        return torch.bmm(inv, r).reshape(shape)
                    return torch.linalg.lu_solve(factors[0], factors[1], r).reshape(shape)
                return correction

            def solve(z0: Tensor, patient: bool, prepare: Callable = prepare,
                      i: int = i) -> Tensor:
                return self._newton(prepare, z0, scs, h, f" (stage {i + 1})", patient)

            def point(z: Tensor, state: Callable = state, ti: float = ti
                      ) -> tuple[float, Tensor]:
                return ti, state(z)

            z0 = self._guess(c[i]) if self._predict else ks[-1] if ks else k1
            ks.append(self._with_retry(t, y, k1, solve, z0, point))
            if self._predict:
                self._known.append((c[i], ks[-1]))
        return ks

    # ------------------------------------------------------------------ gradient

    def _attach_gradient(self, t: float, y: Tensor, h: float, k1: Tensor, ks: list[Tensor]
                         ) -> tuple[list[Tensor], Any]:
        """The IFT correction ``K = K* - M*^{-1} G(K*)`` with a graph (module docstring);
        returns the stages and what the next step's Newton solve may reuse."""
        tab = self.tableau
        c, a, f, shape = tab.c, tab.a, self.f, cast(torch.Size, self._shape)
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
        B, d = cast("tuple[int, int]", self.systems)
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
        self._adaptive = with_error
        self._lu_inexact = False
        yd, k1d = y.detach(), k1.detach()
        if self._predict:
            self._start_history(t, h, k1d)
        with torch.no_grad():
            sc = self._scale(yd, with_error)
            try:
                if tab.diagonally_implicit:
                    ks = self._dirk_stages(t, yd, h, k1d, sc)
                else:
                    ks = self._firk_stages(t, yd, h, k1d, sc)
            except _NewtonFailure as e:
                self._check_batch_claim(t, yd, k1d)
                self.last_newton_failure = f"at t={t!r} with h={h!r}: {e.why}"
                # An adaptive integrator rejects the step and shrinks h, but accepts a
                # step at options['min_step'] whatever its error: failing there is final.
                if with_error and abs(h) > self.method.min_step:
                    self._J_stale = self._J_y is not y
                    return StepResult(y, self._failed_error(yd), [k1] * (s + 1), None)
                raise self._failure(t, h, e) from None
        if self._iters > _REFRESH_ITERS:
            if self._lu_inexact:  # slow because of the LU's h: refactorise, keep J
                self._lu = {}
            else:
                self._J_stale = True
        handoff = None
        if torch.is_grad_enabled() and (y.requires_grad or k1.requires_grad):
            try:
                ks, handoff = self._attach_gradient(t, y, h, k1, ks)
            except _NewtonFailure as e:  # a singular M* at the converged stages
                raise self._failure(t, h, e) from None
        elif tab.explicit[0]:
            ks[0] = k1
        y1 = combine(y, ks, tab.b, h)
        error = None
        if with_error:
            with torch.no_grad():
                error = combine(None, ks, cast("tuple[float, ...]", tab.b_error), h)
                if tab.error_filter is not None:
                    try:
                        error = self._filtered(error, h * tab.error_filter)
                    except _NewtonFailure:  # a singular filter matrix: the raw estimate
                        pass
        result = StepResult(y1, error, [k1, *ks], ks[-1] if tab.stiffly_accurate else None)
        self._pending = (result, *handoff) if handoff is not None and tab.stiffly_accurate \
            and tab.c[-1] == 1.0 and not tab.explicit[-1] else None
        return result

    def accept(self, t: float, y: Tensor, h: float, result: StepResult) -> None:
        """Keep an accepted step's stages for the next step's Newton guesses (tableaux
        with an error estimate); hand the last stage's exact Jacobian (and a DIRK's LU)
        of an accepted step with a gradient to the next step's Newton solve (stiffly
        accurate, ``c_s = 1``)."""
        if self._predict:
            self._previous = (t, h, [k.detach() for k in result.ks])
        pending, self._pending = self._pending, None
        if pending is None or pending[0] is not result:
            return
        _, J, key, lu = pending
        self.jacobian_matrix = J
        self._J_y = result.y1
        self._J_stale = False
        self._lu = {} if key is None else {key: lu}
        self._filter_lu = None

    def dense(self, t: float, y: Tensor, h: float, result: StepResult, theta: float,
              f1: Tensor | None) -> Tensor:
        """``y(t + theta*h)``, ``theta`` in [0, 1]: the tableau's continuous extension
        ``y + h sum_i b_i(theta) K_i`` when it has one (the adaptive methods: no extra
        evaluations), else the cubic Hermite interpolant through ``(y, k1)`` and
        ``(y1, f1)`` (``f1 = result.f1``, else evaluated once per step)."""
        theta = float(theta)
        if theta == 0.0:
            return y
        if theta == 1.0:
            return result.y1
        dense = self.tableau.dense
        if dense is not None:
            weights = [sum(beta * theta ** (k + 1) for k, beta in enumerate(row))
                       for row in dense]
            return combine(y, result.ks[1:], weights, h)
        return self._hermite(t, y, h, result, theta, f1)

    def _filtered(self, error: Tensor, hg: float) -> Tensor:
        """``(I - hg J)^{-1} error`` (the tableau's ``error_filter``); its factors are kept
        apart from the stages' and reused as theirs are."""
        B, d = cast("tuple[int, int]", self.systems)
        key, factors = self._filter_lu if self._filter_lu is not None else (None, None)
        if key is None or abs(key - hg) > max(_SAME_H_RTOL * abs(hg),
                                              self._band * abs(key)):
            J = cast(Tensor, self.jacobian_matrix)
            factors = self._factor(self._dirk_matrix(J, hg), True)
            self._filter_lu = (hg, factors)
        factors = cast("tuple[Tensor, ...]", factors)
        return self._solve(factors, error.reshape(B, d)).reshape(error.shape)

    def _check_batch_claim(self, t: float, y: Tensor, k1: Tensor) -> None:
        """After a Newton failure under ``batch_independent=True`` (declared, not checked):
        if ``f`` in fact couples the samples, say so (``ValueError``) instead of letting
        Newton fail on with the wrong matrix. One product with ``f``'s full derivative,
        once per solve and only on this failure path."""
        if self.method.batch_independent is not True or self._claim_checked:
            return
        self._claim_checked = True
        if self.jacobian_matrix is not None and cast("tuple[int, int]", self.systems)[0] > 1 and \
                not self._block_diagonal(t, y, k1, self._jacobian(t, y, k1)):
            B, d = cast("tuple[int, int]", self.systems)
            shape = tuple(cast(torch.Size, self._shape))
            raise ValueError(
                f"{self.method.name}: options['batch_independent']=True declares the {B} "
                f"samples along dim 0 of the state {shape} independent, but f "
                f"couples them (its derivative is not block diagonal in {d} x {d} blocks; "
                f"found at t={t!r} after a Newton failure): use batch_independent='auto' (the "
                f"default, which checks) or False, or make f act on each sample separately")

    def _failed_error(self, y: Tensor) -> Tensor:
        """The error a step whose Newton solve failed reports to the adaptive loop:
        ``2**(q+1) * (atol + rtol |y|)``, which the loop's norms read as an error ratio of
        ``2**(q+1)``, so that its controller halves the step (about ``0.45 h`` with the
        default safety 0.9) as Hairer's codes do after a Newton failure, rather than
        cutting it to ``dfactor * h`` as for a non-finite error."""
        m = self.method
        return (y.abs() * m.rtol + m.atol) * 2.0 ** (cast(int, self.tableau.error_order) + 1)

    def _scale(self, y: Tensor, adaptive: bool) -> Tensor:
        """The elementwise scale ``sc`` ``[B, 1, d]`` of the Newton test ``max |h dK| / sc
        <= tol`` for this step (sets ``_step_tol``): ``1 + |y|`` with ``newton_tol`` on a
        fixed grid or when given; in an adaptive solve by default the error control's own
        ``atol + rtol |y|`` with ``tol = _KAPPA`` (never below the fixed-grid floor of
        ``50 eps (1 + |y|)``)."""
        B, d = cast("tuple[int, int]", self.systems)
        a = y.abs()
        if not adaptive or self.method.newton_tol is not None:
            self._step_tol = self._tol
            return (1.0 + a).reshape(B, 1, d)
        self._step_tol = _KAPPA
        m = self.method
        sc = torch.mul(a, m.rtol).add_(m.atol)  # rtol, atol: floats or flat tensors
        floor = (1.0 + a).mul_(_NEWTON_TOL_FLOOR * self._eps / _KAPPA)
        return torch.maximum(sc.reshape(B, 1, d), floor.reshape(B, 1, d))

    def _failure(self, t: float, h: float, e: _NewtonFailure) -> SolverError:
        m = self.method
        fd = " or options['jacobian']='jacrev'/'jacfwd' (exact Jacobians)" \
            if m.jacobian == "fd" else ""
        tried = (f"after re-evaluating the Jacobian {' and '.join(e.done)}" if e.done else
                 "with the Jacobian evaluated at that step's start")
        at_min = (f" at options['min_step'] = {m.min_step!r} (the shortest step, which the "
                  f"integrator would accept without progress)" if abs(h) <= m.min_step else "")
        return SolverError(
            f"{m.name}: Newton's iteration on the implicit stages{e.stage} failed in the step "
            f"from t={t!r} with h={h!r}{at_min} ({tried}): {e.why}. Try a smaller step "
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

_GK3 = 0.43586652150845967
KVAERNO3 = ImplicitTableau(
    "kvaerno3",
    c=(0.0, 2 * _GK3, 1.0, 1.0),
    a=((0.0, 0.0, 0.0, 0.0), (_GK3, _GK3, 0.0, 0.0),
       ((-4 * _GK3**2 + 6 * _GK3 - 1) / (4 * _GK3), (1 - 2 * _GK3) / (4 * _GK3), _GK3, 0.0),
       ((6 * _GK3 - 1) / (12 * _GK3), -1 / ((24 * _GK3 - 12) * _GK3),
        (-6 * _GK3**2 + 6 * _GK3 - 1) / (6 * _GK3 - 3), _GK3)),
    b=((6 * _GK3 - 1) / (12 * _GK3), -1 / ((24 * _GK3 - 12) * _GK3),
       (-6 * _GK3**2 + 6 * _GK3 - 1) / (6 * _GK3 - 3), _GK3),
    order=3,
    b_error=((6 * _GK3 - 1) / (12 * _GK3) - (-4 * _GK3**2 + 6 * _GK3 - 1) / (4 * _GK3),
             -1 / ((24 * _GK3 - 12) * _GK3) - (1 - 2 * _GK3) / (4 * _GK3),
             (-6 * _GK3**2 + 6 * _GK3 - 1) / (6 * _GK3 - 3) - _GK3, _GK3),
    error_order=2,
    dense=((1.0, -1.073570090069758, 0.38238006004650316),  # see _KVAERNO_DENSE_NOTE
           (0.0, 4.471690165265363, -2.9811267768435643),
           (1.0452602553351138, -5.796240150391189, 3.5157400151490785),
           (-1.0452602553351096, 2.3981200751955822, -0.9169932983520162)),
    dense_order=3,
)
_K5 = (
    (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0),
    (0.26, 0.26, 0.0, 0.0, 0.0, 0.0, 0.0),
    (0.13, 0.84033320996790809, 0.26, 0.0, 0.0, 0.0, 0.0),
    (0.22371961478320505, 0.47675532319799699, -0.06470895363112615, 0.26, 0.0, 0.0, 0.0),
    (0.16648564323248321, 0.10450018841591720, 0.03631482272098715, -0.13090704451073998,
     0.26, 0.0, 0.0),
    (0.13855640231268224, 0.0, -0.04245337201752043, 0.02446657898003141,
     0.61943039072480676, 0.26, 0.0),
    (0.13659751177640291, 0.0, -0.05496908796538376, -0.04118626728321046,
     0.62993304899016403, 0.06962479448202728, 0.26),
)
KVAERNO5 = ImplicitTableau(
    "kvaerno5", c=tuple(sum(r) for r in _K5), a=_K5, b=_K5[-1], order=5,
    b_error=tuple(x - y for x, y in zip(_K5[-1], _K5[-2])), error_order=4,
    dense=((0.9888012503792553, -2.075471302344394, 1.729126065959425, -0.5058585022178841),
           (0.0, 0.0, 0.0, 0.0),
           (-0.07155089405385436, 0.8207856846019643, -1.6583136850728293,
            0.8541098065593352),
           (-0.37532969483199297, -0.781667727440513, 2.4641568856121845,
            -1.3483457306228885),
           (0.060042477151048275, 3.2753387864295993, -4.201406848777659,
            1.495958634187175),
           (0.2480128247861564, -0.5742905436928295, 0.507832906315072,
            -0.11193039292637302),
           (0.15002403656939156, -0.6646948975538303, 1.1586046759638,
            -0.38393381497936024)),
    dense_order=4)
# _KVAERNO_DENSE_NOTE. The continuous extensions of kvaerno3/5 are hyperode's own (Kværnø
# gives none): b(theta) of degree 3 (kvaerno3) / 4 (kvaerno5) satisfying every order
# condition of its order up to 3 / 4 as polynomials in theta (sum_i b_i(theta) Phi_i(t) =
# theta^|t| / gamma(t) for each rooted tree t), continuity b(1) = b, and boundedness on
# stiff modes: b(theta)^T x = 0 with x = lim_{z -> -inf} (I - z A)^{-1} 1 (x_1 = 1,
# x_i = -sum_{j<i} a_ij x_j / gamma), which keeps the dense stability function
# 1 + z b(theta)^T (I - zA)^{-1} 1 bounded (|.| <= 1 on the negative axis) where the
# plain cubic Hermite interpolant, or an extension without that condition, grows like
# |z| (the explicit first stage's k1 = lambda y0); the minimum-norm solution of these
# linear conditions (numpy lstsq), printed to 16 digits. tests/test_stiff_adaptive.py
# checks all three properties.

def _collocation_extension(nodes: Sequence[float], *, explicit_first: bool
                           ) -> tuple[tuple[float, ...], ...]:
    """The continuous extension of a collocation method with ``nodes``: ``b_i(theta) =
    integral_0^theta l_i(s) ds`` with ``l_i`` the Lagrange basis over the nodes, so that
    ``y + h sum_i b_i(theta) K_i`` is the collocation polynomial (Hairer's dense output
    of RADAU5). Rows of coefficients of ``theta^1 .. theta^m``; with ``explicit_first`` a
    zero row first (radau5's stage 0)."""
    m = len(nodes)
    rows = [] if not explicit_first else [(0.0,) * m]
    for i, ci in enumerate(nodes):
        poly = [1.0]  # coefficients of l_i(s), lowest power first
        for j, cj in enumerate(nodes):
            if j != i:
                poly = [(poly[k - 1] if k else 0.0) / (ci - cj)
                        - (poly[k] if k < len(poly) else 0.0) * cj / (ci - cj)
                        for k in range(len(poly) + 1)]
        rows.append(tuple(coef / (k + 1) for k, coef in enumerate(poly)))
    return tuple(rows)


_RA = RADAU_IIA5.a
_G0 = 0.27488882959567734  # 1 / (the real eigenvalue of A^{-1}) of Radau IIA5
RADAU5 = ImplicitTableau(
    "radau5",
    c=(0.0, *RADAU_IIA5.c),
    a=((0.0, 0.0, 0.0, 0.0), *((0.0, *row) for row in _RA)),
    b=(0.0, *RADAU_IIA5.b),
    order=5,
    b_error=(_G0, -(13 + 7 * _S6) / 3 * _G0 * _RA[0][0] + (-13 + 7 * _S6) / 3 * _G0 * _RA[1][0]
             - _G0 / 3 * _RA[2][0],
             -(13 + 7 * _S6) / 3 * _G0 * _RA[0][1] + (-13 + 7 * _S6) / 3 * _G0 * _RA[1][1]
             - _G0 / 3 * _RA[2][1],
             -(13 + 7 * _S6) / 3 * _G0 * _RA[0][2] + (-13 + 7 * _S6) / 3 * _G0 * _RA[1][2]
             - _G0 / 3 * _RA[2][2]),
    error_order=3,
    error_filter=_G0,
    dense=_collocation_extension(RADAU_IIA5.c, explicit_first=True),
    dense_order=3,
)

TABLEAUS = (IMPLICIT_EULER, IMPLICIT_MIDPOINT, TRAPEZOID, RADAU_IIA3, RADAU_IIA5, GL4, GL6,
            SDIRK2, TRBDF2)

implicit_euler, implicit_midpoint, trapezoid, radauIIA3, radauIIA5, gl4, gl6, sdirk2, \
    trbdf2 = (ImplicitRK(tab) for tab in TABLEAUS)

METHODS = (implicit_euler, implicit_midpoint, trapezoid, radauIIA3, radauIIA5, gl4, gl6,
           sdirk2, trbdf2)
kvaerno3, kvaerno5, radau5 = ImplicitRK(KVAERNO3), ImplicitRK(KVAERNO5), ImplicitRK(RADAU5)
ADAPTIVE_METHODS = (kvaerno3, kvaerno5, radau5)
ALIASES = {"gauss_legendre4": "gl4", "gauss_legendre6": "gl6"}

__all__ = [
    "ALIASES", "BATCH_MODES", "JACOBIANS", "METHODS", "TABLEAUS", "ImplicitRK",
    "ImplicitStepper", "ImplicitTableau", "gl4", "gl6", "implicit_euler",
    "implicit_midpoint", "radauIIA3", "radauIIA5", "sdirk2", "trapezoid", "trbdf2",
]
