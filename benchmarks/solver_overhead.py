"""Solver overhead: hyperode vs torchdiffeq vs torchode on small neural-ODE vector fields.

Run (from the repository root)::

    .venv/bin/python benchmarks/solver_overhead.py          # full run (~1.5 s per case and
                                                            # library, ~2 min in all)
    .venv/bin/python benchmarks/solver_overhead.py --quick  # smoke run (~30 s)
    .venv/bin/python benchmarks/solver_overhead.py --grad   # time forward + backward instead

Other options: ``--threads N`` (torch threads, default 1), ``--repeats N`` (fixed
instead of sized to ``--target-s``), ``--fields``/``--methods`` (subsets),
``--torchode-compile`` (extra rows with ``torch.compile(adjoint.solve)``),
``--hyperode-controller``/``--torchode-controller``, ``--device cuda`` (synchronises
before every clock read), ``--out-dir``; see ``--help``.

What it measures. All three libraries run in one process on the same problems: the
same ``MLPField`` object (same seeded weights), the same ``y0`` (float32) and the same
span. Per case and library it reports

* NFE -- evaluations of the vector field in one solve. hyperode: ``solve(...).stats.nfe``;
  torchdiffeq: a counting wrapper module (used only in an untimed run); torchode:
  ``sol.stats["n_f_evals"]`` (per sample, but torchode evaluates the whole batch on every
  call, so every sample has the same count; the maximum is reported).
* steps -- attempted steps as ``accepted/rejected``. torchdiffeq's come from its
  ``callback_accept_step``/``callback_reject_step`` (adaptive) or ``callback_step``
  (fixed grid) hooks on the counting wrapper; torchode's are the per-sample maxima of
  ``n_accepted`` and ``n_steps - n_accepted``.
* median wall time of one solve over ``--repeats`` timed runs after ``--warmup`` runs;
  the libraries are timed round-robin so that load drift hits them alike.
* bare-f time -- the median over many (>= 300) single calls of ``field(t, y0)`` on the
  whole batch (with ``--grad``: one forward + backward of the field), timed in the same
  rounds as the solves so that it sees the same machine load.
* overhead ratio ``wall / (NFE * t_f)``: 1.0 means the solver costs nothing beyond the
  vector-field evaluations.
* speed vs torchdiffeq -- torchdiffeq's median wall time / the library's.
* accuracy sanity -- max |y(T) - y_hyperode(T)| over the batch, and the error against a
  float64 reference (torchdiffeq dopri5, rtol=atol=1e-10 -- 1e-8 with ``--quick`` -- on
  a float64 copy of the field). The sanity flag checks the first against a threshold.

Problems. ``MLPField`` is ``Linear(d, h) -> Tanh -> Linear(h, d)``, autonomous but
called as ``f(t, y)``. Cases: d=2/h=64 with batch 256 and 4096, d=64/h=256 with batch
512. The first layer has PyTorch's default initialisation (seeded); the output layer
is ``(omega*K - decay*I) W1^T / ||W1||_2^2`` with ``K`` a unit rotation generator
(d=2) or a random skew-symmetric matrix of unit spectral norm, and zero bias. Near
the origin the field is a damped rotation, so the state stays in tanh's active range
over the whole span ``t in [0, 5]`` (omega=4, decay=0.1). A plain random MLP
saturates tanh within about one time unit and then drifts in a straight line, which
dopri5 crosses in a handful of steps -- not a realistic step count.

Methods: dopri5 at rtol=atol=1e-3 and 1e-6; a fourth-order RK and Euler with step 0.1.
torchdiffeq's "rk4" is Kutta's 3/8 rule, so hyperode runs "rk4_38" (its "rk4" is the
classic method). torchode 1.0.1 ships Euler, Heun, Dopri5 and Tsit5 but no RK4; the
fourth-order rows give it the same 3/8 tableau through its own ``ExplicitRungeKutta``
class (a user-defined tableau, marked "custom tableau"). torchode's fixed-step solves
use ``FixedStepController`` with ``dt0 = h`` for every sample. torchode controls the
step size per sample (error norm per sample; the loop runs until the slowest sample
is done), whereas hyperode and torchdiffeq take one step sequence for the whole
batch with the RMS norm over all of it: NFE and steps are therefore not the same
quantity for torchode. Its adaptive controller is ``IntegralController`` (as
torchdiffeq's and hyperode's default), or with ``--torchode-controller pi`` a
``PIDController`` whose coefficients reproduce hyperode's ``controller="pi"`` law.

Targets (checked on hyperode's rows of every case; see the markdown output): dopri5
NFE <= torchdiffeq's, dopri5 at least 2x as fast as torchdiffeq and overhead ratio <=
1.15; fixed-step overhead ratio <= 1.08; wall time < torchode's. A ratio target bounds
the speed-up a solver can have over another: at best ``their ratio / 1.0``.

``--profile FILE.json`` profiles hyperode's solves instead of timing them
(``torch.profiler``): the top operators by self CPU time and the operators per step,
the solver's own apart from the vector field's.

Output: a table on stdout, ``benchmarks/results/solver_overhead.json`` (machine
information and every row) and ``benchmarks/results/solver_overhead.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import gc
import importlib
import importlib.util
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import hyperode

try:
    import torchdiffeq
except ImportError:  # pragma: no cover - optional dependency (pip install .[bench])
    torchdiffeq = None
try:
    import torchode
    from torchode.interpolation import LinearInterpolation
    from torchode.single_step_methods.runge_kutta import ButcherTableau, ExplicitRungeKutta
except ImportError:  # pragma: no cover - optional dependency (pip install .[bench])
    torchode = None

ROOT = Path(__file__).resolve().parent
DEFAULT_OUT = ROOT / "results"
COMPILED = "torchode+compile"

# Targets for hyperode (documented in the module docstring and the markdown output).
SPEED_VS_TORCHDIFFEQ = 2.0  # dopri5
OVERHEAD_RATIO_ADAPTIVE = 1.15
OVERHEAD_RATIO_FIXED = 1.08


# --------------------------------------------------------------------------- problems


@dataclass(frozen=True)
class FieldSpec:
    """One vector field and batch: ``MLPField(dim, hidden)`` on ``y0`` of ``[batch, dim]``."""

    dim: int
    hidden: int
    batch: int

    @property
    def name(self) -> str:
        return f"d{self.dim}_h{self.hidden}_b{self.batch}"


FIELDS = (FieldSpec(2, 64, 256), FieldSpec(2, 64, 4096), FieldSpec(64, 256, 512))


@dataclass(frozen=True)
class MethodSpec:
    """A method and its setting: adaptive with ``tol`` (= rtol = atol) or fixed ``step``."""

    key: str  # "dopri5", "rk4" or "euler"
    tol: float | None = None
    step: float | None = None

    @property
    def adaptive(self) -> bool:
        return self.tol is not None

    @property
    def setting(self) -> str:
        return f"tol={self.tol:g}" if self.adaptive else f"h={self.step:g}"


METHODS = (MethodSpec("dopri5", tol=1e-3), MethodSpec("dopri5", tol=1e-6),
           MethodSpec("rk4", step=0.1), MethodSpec("euler", step=0.1))


class MLPField(nn.Module):
    """``f(t, y) = W2 tanh(W1 y + b1) + b2``: autonomous, ``t`` is accepted and ignored."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, dim))

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        return self.net(y)


def make_problem(spec: FieldSpec, *, seed: int, omega: float, decay: float,
                 device: torch.device) -> tuple[MLPField, Tensor]:
    """The seeded field (float32) and ``y0 ~ N(0, 1)`` of shape ``[batch, dim]``."""
    torch.manual_seed(seed)
    field_ = MLPField(spec.dim, spec.hidden)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        w1 = field_.net[0].weight
        if spec.dim == 2:
            k = torch.tensor([[0.0, -1.0], [1.0, 0.0]])
        else:
            a = torch.randn(spec.dim, spec.dim, generator=gen)
            k = a - a.T
            k /= torch.linalg.matrix_norm(k, 2)
        m = omega * k - decay * torch.eye(spec.dim)
        field_.net[2].weight.copy_(m @ w1.T / torch.linalg.matrix_norm(w1, 2) ** 2)
        field_.net[2].bias.zero_()
    y0 = torch.randn(spec.batch, spec.dim, generator=gen)
    return field_.to(device), y0.to(device)


# --------------------------------------------------------------------------- runners


@dataclass
class Stats:
    """Counts from one untimed solve."""

    nfe: int | None
    accepted: int | None
    rejected: int | None
    y_end: Tensor
    note: str = ""

    @property
    def steps(self) -> int | None:
        if self.accepted is None:
            return None
        return self.accepted + (self.rejected or 0)


@dataclass
class Runner:
    """How one library solves one case: ``solve()`` is what gets timed (forward only,
    returns ``y(T)``); ``stats()`` is one untimed instrumented solve."""

    library: str
    impl: str
    solve: Callable[[], Tensor]
    stats: Callable[[], Stats]
    warmup_extra: int = 0


class NotAvailable(Exception):
    """The library does not offer this method (the row reports ``n/a``)."""


BASELINE = "hyperode@baseline"


def load_baseline(root: Path) -> Any:
    """The ``hyperode`` package of another checkout (e.g. ``git worktree add /tmp/old
    HEAD~3``) imported as the separate module ``hyperode_baseline``, so that two
    versions run interleaved in one process (``--baseline``)."""
    init = Path(root) / "hyperode" / "__init__.py"
    if not init.is_file():
        raise SystemExit(f"--baseline: no hyperode package at {root} ({init} is missing)")
    spec = importlib.util.spec_from_file_location(
        "hyperode_baseline", init, submodule_search_locations=[str(init.parent)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["hyperode_baseline"] = module
    spec.loader.exec_module(module)
    return module


def hyperode_runner(field_: nn.Module, y0: Tensor, t: Tensor, m: MethodSpec, *,
                    controller: str = "default", lib: Any = None) -> Runner:
    lib = hyperode if lib is None else lib
    name = {"dopri5": "dopri5", "rk4": "rk4_38", "euler": "euler"}[m.key]
    if m.adaptive:
        kwargs: dict[str, Any] = dict(method=name, rtol=m.tol, atol=m.tol)
        if controller == "default":
            default = getattr(importlib.import_module("hyperode.odeint"), "DEFAULT_CONTROLLER", "?")
            impl = f"odeint(method='{name}'), default controller ('{default}')"
        else:
            kwargs["options"] = {"controller": controller}
            impl = f"odeint(method='{name}', controller='{controller}')"
    else:
        kwargs = dict(method=name, options={"step_size": m.step})
        impl = f"odeint(method='{name}', step_size={m.step:g})"

    def solve() -> Tensor:
        return lib.odeint(field_, y0, t, **kwargs)[-1]

    def stats() -> Stats:
        sol = lib.solve(field_, y0, t, **kwargs)
        s = sol.stats
        return Stats(s.nfe, s.accepted, s.rejected, sol.ys[-1])

    return Runner("hyperode" if lib is hyperode else BASELINE, impl, solve, stats)


class _CountingField(nn.Module):
    """Counts torchdiffeq's calls and steps (via its callback hooks); untimed runs only."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.nfe = 0
        self.steps = 0

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        self.nfe += 1
        return self.inner(t, y)

    def callback_step(self, t0: Tensor, y0: Tensor, dt: Tensor) -> None:
        self.steps += 1


class _CountingAdaptiveField(_CountingField):
    """Also counts accepted and rejected steps (hooks that only adaptive solvers accept)."""

    def __init__(self, inner: nn.Module):
        super().__init__(inner)
        self.accepted = 0
        self.rejected = 0

    def callback_accept_step(self, t0: Tensor, y0: Tensor, dt: Tensor) -> None:
        self.accepted += 1

    def callback_reject_step(self, t0: Tensor, y0: Tensor, dt: Tensor) -> None:
        self.rejected += 1


def torchdiffeq_runner(field_: nn.Module, y0: Tensor, t: Tensor, m: MethodSpec) -> Runner:
    if torchdiffeq is None:
        raise NotAvailable("torchdiffeq is not installed")
    name = {"dopri5": "dopri5", "rk4": "rk4", "euler": "euler"}[m.key]
    if m.adaptive:
        kwargs: dict[str, Any] = dict(method=name, rtol=m.tol, atol=m.tol)
        impl = f"odeint(method='{name}')"
    else:
        kwargs = dict(method=name, options={"step_size": m.step})
        impl = f"odeint(method='{name}', step_size={m.step:g})"
        if name == "rk4":
            impl += " (3/8 rule)"

    def solve() -> Tensor:
        return torchdiffeq.odeint(field_, y0, t, **kwargs)[-1]

    def stats() -> Stats:
        counter = _CountingAdaptiveField(field_) if m.adaptive else _CountingField(field_)
        y_end = torchdiffeq.odeint(counter, y0, t, **kwargs)[-1]
        if m.adaptive:
            return Stats(counter.nfe, counter.accepted, counter.rejected, y_end)
        return Stats(counter.nfe, counter.steps, 0, y_end)

    return Runner("torchdiffeq", impl, solve, stats)


if torchode is not None:

    class TorchodeRK4_38(ExplicitRungeKutta):
        """Kutta's 3/8 rule (torchdiffeq's "rk4") on torchode's generic explicit RK
        stepper; torchode does not ship an RK4. No error estimate (``b_err = 0``): use
        with ``FixedStepController``. Outputs between steps are linear interpolants,
        which is exact at step ends (the only output here is ``t_end``)."""

        TABLEAU = ButcherTableau.from_lists(
            c=[0.0, 1 / 3, 2 / 3, 1.0],
            a=[[], [1 / 3], [-1 / 3, 1.0], [1.0, -1.0, 1.0]],
            b=[1 / 8, 3 / 8, 3 / 8, 1 / 8],
            b_err=[0.0, 0.0, 0.0, 0.0],
        )

        def __init__(self, term: Any = None):
            super().__init__(term, TorchodeRK4_38.TABLEAU)

        def convergence_order(self) -> int:
            return 4

        def build_interpolation(self, data: Any) -> Any:
            return LinearInterpolation(data.t0, data.dt, data.y0, data.y1)


def torchode_runner(field_: nn.Module, y0: Tensor, t: Tensor, m: MethodSpec, *,
                    controller: str = "integral", compile_: bool = False) -> Runner:
    if torchode is None:
        raise NotAvailable("torchode is not installed")
    term = torchode.ODETerm(field_)
    dt0 = None
    if m.key == "dopri5":
        step_method = torchode.Dopri5(term=term)
        if controller == "pi":
            # factor = safety * r**-(kI+kP) * r_prev**kP with k = coeff/5: hyperode's
            # controller="pi" law r**-0.17 * r_prev**0.04 (exponent 1/5, beta 0.04).
            ctrl = torchode.PIDController(atol=m.tol, rtol=m.tol, pcoeff=0.2, icoeff=0.65,
                                          dcoeff=0.0, term=term)
            impl = "Dopri5 + PIDController(p=0.2, i=0.65)"
        else:
            ctrl = torchode.IntegralController(atol=m.tol, rtol=m.tol, term=term)
            impl = "Dopri5 + IntegralController"
    else:
        if m.key == "euler":
            step_method = torchode.Euler(term=term)
            impl = "Euler + FixedStepController"
        else:
            step_method = TorchodeRK4_38(term=term)
            impl = "rk4 3/8 (custom tableau) + FixedStepController"
        ctrl = torchode.FixedStepController()
        dt0 = torch.full((y0.shape[0],), m.step, dtype=t.dtype, device=y0.device)
    adjoint = torchode.AutoDiffAdjoint(step_method, ctrl)
    solve_fn = adjoint.solve
    if compile_:
        # torch.compile(adjoint) would compile only forward(); solve() is what runs.
        solve_fn = torch.compile(adjoint.solve)
        impl += ", torch.compile(solve)"
    t_eval = t.expand(y0.shape[0], t.shape[0]).contiguous()  # per-sample evaluation times

    def run() -> Any:
        return solve_fn(torchode.InitialValueProblem(y0=y0, t_eval=t_eval), dt0=dt0)

    def solve() -> Tensor:
        return run().ys[:, -1]

    def stats() -> Stats:
        sol = run()
        st = sol.stats
        n_steps, n_acc = st["n_steps"].cpu(), st["n_accepted"].cpu()
        bad = int((sol.status != 0).sum())
        note = "per-sample max" + (f"; {bad} samples failed (status != 0)" if bad else "")
        return Stats(int(st["n_f_evals"].max()), int(n_acc.max()),
                     int((n_steps - n_acc).max()), sol.ys[:, -1], note)

    return Runner(COMPILED if compile_ else "torchode", impl, solve, stats,
                  warmup_extra=3 if compile_ else 0)


# --------------------------------------------------------------------------- timing


def make_sync(device: torch.device) -> Callable[[], None]:
    """What to call before reading the clock: wait for queued CUDA work, or nothing."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def run_once(fn: Callable[[], Any], grad: bool, params: list[Tensor], weights: Tensor) -> None:
    """One solve; with ``grad`` also a backward pass of ``sum(y(T) * weights)``."""
    if not grad:
        with torch.no_grad():
            fn()
        return
    for p in params:
        p.grad = None
    with torch.enable_grad():
        (fn() * weights).sum().backward()


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Collect once, then keep the cyclic garbage collector out of the timings."""
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


# The clock of every timing: wall (time.perf_counter, the default) or, with
# --clock thread, this thread's CPU time (time.thread_time: on a machine shared with
# other processes it leaves out the time this process waits for a core; CPU runs with
# one torch thread only, since it does not count other threads' work).
CLOCK: list[Callable[[], float]] = [time.perf_counter]


def time_call(fn: Callable[[], Any], sync: Callable[[], None]) -> float:
    """Seconds taken by one call of ``fn``, with the device synchronised at both ends."""
    sync()
    start = CLOCK[0]()
    fn()
    sync()
    return CLOCK[0]() - start


@dataclass
class Timings:
    """Per-run seconds of each library's solves, and of single bare ``f`` calls."""

    solves: dict[str, list[float]]
    bare_f: list[float]


def time_case(runners: list[Runner], bare_f: Callable[[], None], *, grad: bool,
              params: list[Tensor], weights: Tensor, sync: Callable[[], None], warmup: int,
              repeats: int | None, target_s: float, min_repeats: int, max_repeats: int,
              min_bare_calls: int = 300) -> Timings:
    """Time one case round-robin, so that load drift hits every library alike.

    Each runner is warmed up, its number of timed runs is sized to ``target_s``
    seconds (unless ``repeats`` is given), then the runs are interleaved, the order
    rotating from round to round; every round
    also times a few single calls of the bare field, so that ``t_f`` is measured under
    the same conditions as the solves.
    """
    calls = {r.library: (lambda r=r: run_once(r.solve, grad, params, weights)) for r in runners}
    out = Timings({r.library: [] for r in runners}, [])
    for _ in range(20):
        bare_f()
    counts = {}
    with gc_paused():
        for r in runners:
            for _ in range(warmup + r.warmup_extra):
                calls[r.library]()
            first = time_call(calls[r.library], sync)
            out.solves[r.library].append(first)
            counts[r.library] = repeats if repeats is not None else max(
                min_repeats, min(max_repeats, math.ceil(target_s / first)))
        rounds = max(counts.values(), default=1)
        bare_per_round = max(5, math.ceil(min_bare_calls / rounds))
        for i in range(rounds):
            # Each round starts with the next library: the one timed first in a round
            # (right after the previous round's last, often torchode's large allocations)
            # was measured up to 8% slow with --grad at B=4096.
            shift = i % max(len(runners), 1)
            for r in runners[shift:] + runners[:shift]:
                if 0 < i < counts[r.library]:
                    out.solves[r.library].append(time_call(calls[r.library], sync))
            out.bare_f.extend(time_call(bare_f, sync) for _ in range(bare_per_round))
    return out


# --------------------------------------------------------------------------- reference


def reference_solution(field_: nn.Module, y0: Tensor, t_end: float, tol: float) -> Tensor | None:
    """``y(t_end)`` from torchdiffeq dopri5 in float64 on a float64 copy of the field."""
    if torchdiffeq is None:
        return None
    f64 = copy.deepcopy(field_).double()
    t = torch.tensor([0.0, t_end], dtype=torch.float64, device=y0.device)
    with torch.no_grad():
        return torchdiffeq.odeint(f64, y0.double(), t, rtol=tol, atol=tol)[-1]


def sanity_threshold(m: MethodSpec, scale: float) -> float:
    """Largest acceptable |y_lib(T) - y_hyperode(T)|.

    Fixed-step rows run the same tableau on the same grid, so they agree to float32
    rounding. Adaptive rows take different step sequences, so they agree only to the
    global error, which over the ~3 turns of these spirals reaches ~50 tol (torchdiffeq
    and torchode at tol=1e-3); 100 tol still separates a different problem (error ~1).
    """
    if m.adaptive:
        return 100 * m.tol * (1 + scale)
    return 1e-4 * (1 + scale)


# --------------------------------------------------------------------------- rows


@dataclass
class Row:
    case: str
    dim: int
    hidden: int
    batch: int
    method: str
    setting: str
    library: str
    tol: float | None = None
    step: float | None = None
    impl: str = ""
    status: str = "ok"
    nfe: int | None = None
    steps: int | None = None
    accepted: int | None = None
    rejected: int | None = None
    steps_note: str = ""
    median_ms: float | None = None
    min_ms: float | None = None
    p25_ms: float | None = None
    p75_ms: float | None = None
    repeats: int = 0
    bare_f_ms: float | None = None
    bare_f_calls: int = 0
    overhead_ratio: float | None = None
    speed_vs_torchdiffeq: float | None = None
    max_abs_diff_vs_hyperode: float | None = None
    err_vs_reference: float | None = None
    sanity_threshold: float | None = None
    sanity_ok: bool | None = None
    targets: list[dict[str, Any]] = field(default_factory=list)


def quantile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    pos = q * (len(s) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def add_targets(rows: list[Row], spec: FieldSpec, m: MethodSpec) -> None:
    """Check hyperode's targets on its row of one case (results on ``row.targets``)."""
    by_lib = {r.library: r for r in rows if r.status == "ok"}
    hyp, tdq, tode = by_lib.get("hyperode"), by_lib.get("torchdiffeq"), by_lib.get("torchode")
    if hyp is None:
        return
    if m.key == "dopri5" and tdq is not None:
        hyp.targets.append(dict(target="NFE <= torchdiffeq", value=hyp.nfe, bound=tdq.nfe,
                                met=hyp.nfe <= tdq.nfe, detail=f"{hyp.nfe} vs {tdq.nfe}"))
    if m.key == "dopri5" and tdq is not None:
        speed = tdq.median_ms / hyp.median_ms
        hyp.targets.append(dict(target=f"speed >= {SPEED_VS_TORCHDIFFEQ:g}x torchdiffeq",
                                value=round(speed, 3), bound=SPEED_VS_TORCHDIFFEQ,
                                met=speed >= SPEED_VS_TORCHDIFFEQ, detail=f"{speed:.2f}x"))
    if hyp.overhead_ratio is not None:
        bound = OVERHEAD_RATIO_ADAPTIVE if m.adaptive else OVERHEAD_RATIO_FIXED
        hyp.targets.append(dict(target=f"overhead ratio <= {bound}",
                                value=round(hyp.overhead_ratio, 3), bound=bound,
                                met=hyp.overhead_ratio <= bound,
                                detail=f"{hyp.overhead_ratio:.2f}"))
    if tode is not None:
        rel = hyp.median_ms / tode.median_ms
        hyp.targets.append(dict(target="wall < torchode", value=round(rel, 3), bound=1.0,
                                met=rel < 1.0, detail=f"{rel:.2f}x"))


def run_case(spec: FieldSpec, m: MethodSpec, field_: nn.Module, y0: Tensor, t: Tensor,
             ref: Tensor | None, args: argparse.Namespace,
             sync: Callable[[], None]) -> list[Row]:
    """All libraries on one (field, method) case."""
    factories: list[tuple[str, Callable[[], Runner]]] = [
        ("hyperode", lambda: hyperode_runner(field_, y0, t, m,
                                             controller=args.hyperode_controller)),
        ("torchdiffeq", lambda: torchdiffeq_runner(field_, y0, t, m)),
        ("torchode", lambda: torchode_runner(field_, y0, t, m,
                                             controller=args.torchode_controller)),
    ]
    if args.baseline_module is not None:
        factories.insert(1, (BASELINE, lambda: hyperode_runner(
            field_, y0, t, m, controller=args.hyperode_controller, lib=args.baseline_module)))
    if args.torchode_compile:
        factories.append((COMPILED, lambda: torchode_runner(
            field_, y0, t, m, controller=args.torchode_controller, compile_=True)))
    rows, runners, stats = [], [], {}
    for lib, make in factories:
        row = Row(spec.name, spec.dim, spec.hidden, spec.batch, m.key, m.setting, lib,
                  tol=m.tol, step=m.step)
        rows.append(row)
        try:
            runner = make()
            row.impl = runner.impl
            with torch.no_grad():
                stats[lib] = runner.stats()
            runners.append(runner)
        except NotAvailable as e:
            row.status = f"n/a: {e}"
        except Exception as e:  # a failing library must not stop the benchmark
            row.status = f"error: {type(e).__name__}: {e}"
    params = list(field_.parameters())
    weights = torch.ones_like(y0)
    t0 = t[0].clone()

    def bare_f() -> None:
        run_once(lambda: field_(t0, y0), args.grad, params, weights)

    try:
        timings = time_case(runners, bare_f, grad=args.grad, params=params, weights=weights,
                            sync=sync, warmup=args.warmup, repeats=args.repeats,
                            target_s=args.target_s, min_repeats=args.min_repeats,
                            max_repeats=args.max_repeats)
    except Exception as e:
        timings = Timings({}, [])
        for row in rows:
            if row.status == "ok":
                row.status = f"error while timing: {type(e).__name__}: {e}"
    t_f = statistics.median(timings.bare_f) if timings.bare_f else None

    hyp_end = stats["hyperode"].y_end if "hyperode" in stats else None
    scale = float(ref.abs().max()) if ref is not None else float(y0.abs().max())
    for row in rows:
        if row.status != "ok" or row.library not in timings.solves:
            continue
        s, ts = stats[row.library], timings.solves[row.library]
        row.nfe, row.accepted, row.rejected, row.steps = s.nfe, s.accepted, s.rejected, s.steps
        row.steps_note = s.note
        row.repeats = len(ts)
        row.median_ms = statistics.median(ts) * 1e3
        row.min_ms = min(ts) * 1e3
        row.p25_ms, row.p75_ms = quantile(ts, 0.25) * 1e3, quantile(ts, 0.75) * 1e3
        if t_f is not None:
            row.bare_f_ms, row.bare_f_calls = t_f * 1e3, len(timings.bare_f)
            if s.nfe:
                row.overhead_ratio = statistics.median(ts) / (s.nfe * t_f)
        y_end = s.y_end.detach().to(torch.float64)
        if hyp_end is not None:
            row.max_abs_diff_vs_hyperode = float((y_end - hyp_end.to(torch.float64)).abs().max())
            row.sanity_threshold = sanity_threshold(m, scale)
            row.sanity_ok = (math.isfinite(row.max_abs_diff_vs_hyperode)
                             and row.max_abs_diff_vs_hyperode <= row.sanity_threshold)
        if ref is not None:
            row.err_vs_reference = float((y_end - ref).abs().max())
    tdq = next((r for r in rows if r.library == "torchdiffeq" and r.median_ms), None)
    for row in rows:
        if tdq is not None and row.median_ms:
            row.speed_vs_torchdiffeq = tdq.median_ms / row.median_ms
    add_targets(rows, spec, m)
    return rows


# --------------------------------------------------------------------------- profile


def _op_counts(fn: Callable[[], Any], runs: int) -> tuple[Any, float]:
    """``torch.profiler`` key averages of ``runs`` calls of ``fn`` (no grad), and the
    profiled wall seconds per call."""
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad():
        for _ in range(3):
            fn()
        start = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(runs):
                fn()
        per_call = (time.perf_counter() - start) / runs
    return prof.key_averages(), per_call


# Operators that only make views or read metadata (no kernel over the data): counted
# apart from the kernels in --profile.
VIEW_OPS = frozenset(f"aten::{name}" for name in (
    "as_strided", "select", "slice", "t", "transpose", "expand", "unbind", "view",
    "reshape", "_reshape_alias", "resolve_conj", "resolve_neg", "alias", "unsqueeze",
    "squeeze", "detach", "permute", "split", "split_with_sizes", "lift_fresh", "numpy_T",
    "_unsafe_view", "empty", "empty_strided", "empty_like"))


def profile_case(spec: FieldSpec, m: MethodSpec, field_: nn.Module, y0: Tensor, t: Tensor,
                 runs: int, top: int = 8) -> dict[str, Any]:
    """Where hyperode's time goes on one case: the profiler's top operators by self CPU
    time, as calls and microseconds per attempted step, and the operators per step
    that are the solver's own (all of them minus NFE/step x those of one bare f call),
    also counting only kernels (no views, no allocations: ``VIEW_OPS``).

    Counts are exact whatever the machine's load; the microseconds include the
    profiler's own cost per operator, so compare them only within one table."""
    runner = hyperode_runner(field_, y0, t, m)
    with torch.no_grad():
        st = runner.stats()
    steps = st.steps or 1
    solve_events, per_call = _op_counts(runner.solve, runs)
    t0 = t[0].clone()
    f_events, _ = _op_counts(lambda: field_(t0, y0), 50)
    f_ops = sum(e.count for e in f_events) / 50
    total_ops = sum(e.count for e in solve_events) / (runs * steps)
    f_kernels = sum(e.count for e in f_events if e.key not in VIEW_OPS) / 50
    kernels = sum(e.count for e in solve_events if e.key not in VIEW_OPS) / (runs * steps)
    ranked = sorted(solve_events, key=lambda e: e.self_cpu_time_total, reverse=True)
    return {
        "case": spec.name, "method": m.key, "setting": m.setting, "steps": steps,
        "nfe": st.nfe, "profiled_ms_per_solve": 1e3 * per_call,
        "ops_per_step": total_ops,
        "solver_ops_per_step": total_ops - f_ops * st.nfe / steps,
        "solver_kernels_per_step": kernels - f_kernels * st.nfe / steps,
        "top": [{"name": e.key, "calls_per_step": e.count / (runs * steps),
                 "self_us_per_step": e.self_cpu_time_total / (runs * steps)}
                for e in ranked[:top]],
    }


def print_profile(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        print(f"\n{r['case']} {r['method']} {r['setting']}: {r['steps']} steps, {r['nfe']} NFE, "
              f"{r['ops_per_step']:.1f} operators per step of which the solver's own "
              f"{r['solver_ops_per_step']:.1f} ({r['solver_kernels_per_step']:.1f} kernels, "
              f"the rest views and allocations); profiled {r['profiled_ms_per_solve']:.2f} ms")
        print("| operator | calls/step | self us/step |\n|---|---:|---:|")
        for e in r["top"]:
            print(f"| {e['name']} | {e['calls_per_step']:.2f} | {e['self_us_per_step']:.1f} |")


# --------------------------------------------------------------------------- reporting


def machine_info(args: argparse.Namespace) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT,
                                capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu_model": cpu,
        "logical_cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchdiffeq": getattr(torchdiffeq, "__version__", None),
        "torchode": getattr(torchode, "__version__", None),
        "hyperode": hyperode.__version__,
        "git": commit,
        "threads": torch.get_num_threads(),
        "device": args.device,
        "load_average_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    if args.device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(torch.device(args.device))
    return info


def _fmt(x: float | int | None, spec: str = "") -> str:
    if x is None:
        return "-"
    return format(x, spec)


def _steps(r: Row) -> str:
    if r.accepted is None:
        return "-"
    return f"{r.accepted}/{r.rejected}" + ("*" if r.library.startswith("torchode") else "")


def _targets(r: Row) -> str:
    if not r.targets:
        return ""
    return " ".join(("ok" if t["met"] else "MISS") + f"[{t['target']}]" for t in r.targets)


def print_table(rows: list[Row], grad: bool) -> None:
    f_col = "f+b ms" if grad else "f ms"
    head = (f"{'case':<14} {'method':<6} {'setting':<9} {'library':<16} {'NFE':>5} "
            f"{'acc/rej':>8} {'median ms':>10} {f_col:>7} {'ratio':>6} {'vs tdq':>7} "
            f"{'diff hyp':>9} {'err ref':>9}  targets")
    print(head)
    print("-" * len(head))
    last = None
    for r in rows:
        if last is not None and (r.case, r.method, r.setting) != last:
            print()
        last = (r.case, r.method, r.setting)
        if r.status != "ok":
            print(f"{r.case:<14} {r.method:<6} {r.setting:<9} {r.library:<16} {r.status}")
            continue
        sanity = "" if r.sanity_ok in (None, True) else " (!)"
        print(f"{r.case:<14} {r.method:<6} {r.setting:<9} {r.library:<16} {_fmt(r.nfe):>5} "
              f"{_steps(r):>8} {_fmt(r.median_ms, '.3f'):>10} {_fmt(r.bare_f_ms, '.4f'):>7} "
              f"{_fmt(r.overhead_ratio, '.2f'):>6} {_fmt(r.speed_vs_torchdiffeq, '.2f'):>6}x "
              f"{_fmt(r.max_abs_diff_vs_hyperode, '.1e'):>9}{sanity} "
              f"{_fmt(r.err_vs_reference, '.1e'):>9}  {_targets(r)}")
    print("\n* torchode: per-sample maxima (it controls the step size per sample). "
          "ratio = wall / (NFE x bare-f); vs tdq = torchdiffeq wall / this wall; "
          "(!) = disagrees with hyperode beyond the sanity threshold.")


def write_markdown(path: Path, info: dict[str, Any], config: dict[str, Any],
                   rows: list[Row]) -> None:
    grad = config["grad"]
    mode = "forward + backward" if grad else "forward only, torch.no_grad()"
    lines = [
        "# Solver overhead: hyperode vs torchdiffeq vs torchode",
        "",
    ]
    if config["quick"]:
        lines += ["**Quick smoke run (`--quick`): few repeats, figures are indicative only.**", ""]
    lines += [
        f"Generated by `benchmarks/solver_overhead.py` on {info['date']}.",
        "",
        f"- Machine: {info['cpu_model']} ({info['logical_cpus']} logical CPUs), "
        f"{info['platform']}; load average at start "
        f"{_fmt_load(info.get('load_average_start'))}, at end "
        f"{_fmt_load(info.get('load_average_end'))}",
        f"- Versions: torch {info['torch']}, torchdiffeq {info['torchdiffeq']}, "
        f"torchode {info['torchode']}, hyperode {info['hyperode']} ({info['git']}), "
        f"Python {info['python']}",
        f"- Device {info['device']}, torch threads {info['threads']}, float32, {mode}",
        f"- Problems: `Linear(d,h)-Tanh-Linear(h,d)` damped-rotation MLP field "
        f"(omega={config['omega']}, decay={config['decay']}, seed={config['seed']}), "
        f"t in [0, {config['t_end']}], y0 ~ N(0, 1) of shape [batch, d]",
        f"- Timing: median of the timed runs after {config['warmup']} warm-up run(s), "
        + ("clock: this thread's CPU time (`--clock thread`), " if config.get("clock") ==
           "thread" else "wall clock, ")
        + "libraries interleaved; repeats "
        + (f"fixed at {config['repeats']}" if config["repeats"] else
           f"sized to ~{config['target_s']} s per case and library "
           f"({config['min_repeats']}..{config['max_repeats']})"),
        "",
        "Columns: *NFE* = vector-field evaluations per solve; *steps* = accepted/rejected "
        "(torchode: per-sample maxima, marked \\*); *bare-f* = median time of one "
        + ("forward + backward of the field" if grad else "field call")
        + " on the whole batch; *overhead ratio* = median / (NFE x bare-f); "
        "*vs torchdiffeq* = torchdiffeq's median / this median; *diff vs hyperode* = "
        "max |y(T) - y_hyperode(T)|; *err vs ref* = max |y(T) - y_ref(T)| against a "
        f"float64 torchdiffeq dopri5 solve at rtol=atol={config['reference_tol']:g}.",
        "",
        "| case | method | tol/step | library | NFE | steps | median ms | bare-f ms | "
        "overhead ratio | speed vs torchdiffeq | diff vs hyperode | err vs ref | sanity | "
        "targets |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        if r.status != "ok":
            lines.append(f"| {r.case} | {r.method} | {r.setting} | {r.library} | "
                         f"{r.status} | | | | | | | | | |")
            continue
        steps = _steps(r).replace("*", "\\*")
        sanity = {None: "", True: "ok", False: "**FAIL**"}[r.sanity_ok]
        targets = "<br>".join(("met" if t["met"] else "**not met**") + f": {t['target']} "
                              f"({t['detail']})" for t in r.targets)
        speed = f"{r.speed_vs_torchdiffeq:.2f}x" if r.speed_vs_torchdiffeq else "-"
        lines.append(
            f"| {r.case} | {r.method} | {r.setting} | {r.library} | {_fmt(r.nfe)} | {steps} | "
            f"{r.median_ms:.3f} | {r.bare_f_ms:.4f} | {_fmt(r.overhead_ratio, '.2f')} | "
            f"{speed} | {_fmt(r.max_abs_diff_vs_hyperode, '.1e')} | "
            f"{_fmt(r.err_vs_reference, '.1e')} | {sanity} | {targets} |")
    checks = [t for r in rows for t in r.targets]
    met = sum(t["met"] for t in checks)
    lines += [
        "",
        "## Targets (hyperode)",
        "",
        "Every case: dopri5 NFE <= torchdiffeq's and speed >= "
        f"{SPEED_VS_TORCHDIFFEQ:g}x torchdiffeq's; overhead ratio <= {OVERHEAD_RATIO_ADAPTIVE} "
        f"(dopri5) and <= {OVERHEAD_RATIO_FIXED} (fixed step); wall < torchode's (value = "
        "hyperode / torchode). A speed-up over torchdiffeq is bounded by torchdiffeq's own "
        "overhead ratio (a solver with ratio 1.0 is at most that much faster).",
        "",
        f"{met} of {len(checks)} checks met" + (" (timing targets are for forward solves; "
                                                 "this run timed forward + backward)." if grad
                                                 else "."),
        "",
        "## Notes",
        "",
        "- hyperode runs `rk4_38` in the rk4 rows: torchdiffeq's `rk4` is Kutta's 3/8 rule "
        "(hyperode's `rk4` is the classic method). torchode 1.0.1 ships no RK4; its rows "
        "use the 3/8 tableau on torchode's own `ExplicitRungeKutta` (a user-defined tableau) "
        "with `FixedStepController`.",
        "- torchode controls the step size per sample (error norm per sample, the loop runs "
        "until the slowest sample finishes); hyperode and torchdiffeq take one step sequence "
        "for the whole batch with the RMS norm over all of it. NFE and steps are therefore "
        "not the same quantity for torchode, and its final states differ by the global "
        "error. Its adaptive controller here: "
        + ("`PIDController(pcoeff=0.2, icoeff=0.65)` (hyperode's `controller='pi'` law)."
           if config["torchode_controller"] == "pi" else "`IntegralController`.")
        + " torchode runs without torch.compile/TorchScript"
        + (" (rows `torchode+compile` use `torch.compile(adjoint.solve)`)."
           if config["torchode_compile"] else "."),
        "- torchdiffeq's NFE and steps come from an untimed run with a counting wrapper "
        "(its `callback_*` hooks); its timed runs use the bare field.",
        *_observed_notes(rows, config),
        "- Sanity: fixed-step rows must agree with hyperode to 1e-4 x (1 + max|y|); "
        "adaptive rows to 100 x tol x (1 + max|y|) (different step sequences agree only to "
        "the global error).",
    ]
    path.write_text("\n".join(lines) + "\n")


def _observed_notes(rows: list[Row], config: dict[str, Any]) -> list[str]:
    """Notes that depend on what this run saw."""
    notes = []
    hyp = next((r for r in rows if r.library == "hyperode" and r.tol is not None and r.impl),
               None)
    if hyp is not None:
        notes.append(f"- hyperode's adaptive rows: `{hyp.impl}`.")
    extra = [r for r in rows if r.library.startswith("torchode") and r.step and r.accepted
             and r.accepted > math.ceil(config["t_end"] / r.step - 1e-9)]
    if extra:
        seen = ", ".join(sorted({f"{r.method} {r.setting}: {r.accepted}" for r in extra}))
        grid = sorted({math.ceil(config["t_end"] / r.step - 1e-9) for r in extra})
        notes.append(
            f"- torchode's fixed-step solves took more steps than the grid's "
            f"{'/'.join(map(str, grid))} ({seen}): it accumulates t in the time dtype "
            f"(float32 here, from t_eval), falls just short of t_end after the last full "
            f"step and adds a sliver step (one more step's worth of NFE).")
    return notes


def _fmt_load(load: list[float] | None) -> str:
    return "n/a" if not load else " / ".join(f"{x:.2f}" for x in load)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 1 warm-up, ~0.1 s of repeats per case and library (>= 3)")
    p.add_argument("--grad", action="store_true",
                   help="time forward + backward (sum of y(T)) through the solver")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda[:i]")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed runs per case and library (default: sized to --target-s)")
    p.add_argument("--target-s", type=float, default=None,
                   help="seconds of timed runs per case and library (default 1.5; quick 0.1)")
    p.add_argument("--min-repeats", type=int, default=None, help="default 5 (quick 3)")
    p.add_argument("--max-repeats", type=int, default=1000)
    p.add_argument("--warmup", type=int, default=None, help="warm-up runs (default 2; quick 1)")
    p.add_argument("--fields", nargs="+", choices=[f.name for f in FIELDS],
                   default=[f.name for f in FIELDS], help="cases to run (default all)")
    p.add_argument("--methods", nargs="+", choices=["dopri5", "rk4", "euler"],
                   default=["dopri5", "rk4", "euler"], help="methods to run (default all)")
    p.add_argument("--t-end", type=float, default=5.0, help="span is [0, t_end] (default 5)")
    p.add_argument("--omega", type=float, default=4.0, help="rotation rate of the field")
    p.add_argument("--decay", type=float, default=0.1, help="damping of the field")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hyperode-controller", choices=["default", "i", "pi"], default="default",
                   help="hyperode's adaptive controller (default: hyperode's own default)")
    p.add_argument("--torchode-controller", choices=["integral", "pi"], default="integral",
                   help="torchode's adaptive controller (default integral, like torchdiffeq)")
    p.add_argument("--torchode-compile", action="store_true",
                   help="also time torchode with torch.compile(adjoint.solve)")
    p.add_argument("--no-reference", action="store_true",
                   help="skip the float64 reference solves (err vs ref column)")
    p.add_argument("--clock", choices=["wall", "thread"], default="wall",
                   help="wall clock (default) or this thread's CPU time (a loaded shared "
                        "machine; CPU with --threads 1 only)")
    p.add_argument("--baseline", type=Path, default=None, metavar="CHECKOUT",
                   help="also time the hyperode package of another checkout (rows "
                        f"'{BASELINE}'), interleaved with the others: a before/after A/B")
    p.add_argument("--profile", type=Path, default=None, metavar="JSON",
                   help="instead of timing, profile hyperode's solves (torch.profiler: top "
                        "operators and operators per step) and write them to JSON")
    p.add_argument("--out-dir", type=Path, default=DEFAULT_OUT,
                   help=f"where the JSON and markdown go (default {DEFAULT_OUT})")
    args = p.parse_args(argv)
    args.baseline_module = load_baseline(args.baseline) if args.baseline else None
    if args.clock == "thread" and (args.threads != 1 or args.device != "cpu"):
        p.error("--clock thread measures one CPU thread: use it with --threads 1 on the CPU")
    CLOCK[0] = time.thread_time if args.clock == "thread" else time.perf_counter
    quick = args.quick
    if args.target_s is None:
        args.target_s = 0.1 if quick else 1.5
    if args.min_repeats is None:
        args.min_repeats = 3 if quick else 5
    if args.warmup is None:
        args.warmup = 1 if quick else 2
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda requested but torch.cuda.is_available() is False")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = make_sync(device)
    info = machine_info(args)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
              if k != "baseline_module"}
    config["t_span"] = [0.0, args.t_end]
    config["reference_tol"] = 1e-8 if args.quick else 1e-10
    print(f"{info['cpu_model']} | torch {info['torch']} | torchdiffeq {info['torchdiffeq']} | "
          f"torchode {info['torchode']} | threads {info['threads']} | device {args.device} | "
          f"{'forward+backward' if args.grad else 'forward, no_grad'} | t in [0, {args.t_end}]"
          f"{' | QUICK' if args.quick else ''}\n")

    methods = [m for m in METHODS if m.key in args.methods]
    if args.profile is not None:
        profiles = []
        for spec in (f for f in FIELDS if f.name in args.fields):
            field_, y0 = make_problem(spec, seed=args.seed, omega=args.omega,
                                      decay=args.decay, device=device)
            field_.requires_grad_(False)
            t = torch.tensor([0.0, args.t_end], dtype=torch.float32, device=device)
            profiles.extend(profile_case(spec, m, field_, y0, t, runs=3 if args.quick else 10)
                            for m in methods)
        print_profile(profiles)
        args.profile.parent.mkdir(parents=True, exist_ok=True)
        args.profile.write_text(json.dumps({"machine": info, "hyperode": hyperode.__file__,
                                            "profiles": profiles}, indent=2) + "\n")
        return 0
    rows: list[Row] = []
    for spec in (f for f in FIELDS if f.name in args.fields):
        field_, y0 = make_problem(spec, seed=args.seed, omega=args.omega, decay=args.decay,
                                  device=device)
        field_.requires_grad_(args.grad)
        t = torch.tensor([0.0, args.t_end], dtype=torch.float32, device=device)
        ref = None if args.no_reference else reference_solution(
            field_, y0, args.t_end, config["reference_tol"])
        for m in methods:
            case_rows = run_case(spec, m, field_, y0, t, ref, args, sync)
            rows.extend(case_rows)
            done = ", ".join(f"{r.library} " + (f"{r.median_ms:.2f} ms" if r.median_ms
                                                 else r.status.split(":")[0])
                             for r in case_rows)
            print(f"  {spec.name} {m.key} {m.setting}: {done}", flush=True)

    info["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    print()
    print_table(rows, args.grad)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = "solver_overhead_grad" if args.grad else "solver_overhead"
    json_path = args.out_dir / f"{stem}.json"
    md_path = args.out_dir / f"{stem}.md"
    payload = {"machine": info, "config": config,
               "rows": [{k: v for k, v in vars(r).items()} for r in rows]}
    json_path.write_text(json.dumps(payload, indent=2) + "\n")
    write_markdown(md_path, info, config, rows)
    print(f"\nwrote {json_path} and {md_path}")
    failed = [r for r in rows if r.sanity_ok is False]
    if failed:
        print(f"WARNING: {len(failed)} rows disagree with hyperode beyond the sanity threshold",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
