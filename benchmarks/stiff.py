"""Stiff problems: hyperode's implicit solvers next to scipy, torchdiffeq and dopri5.

Run (from the repository root)::

    .venv/bin/python benchmarks/stiff.py                      # full run (about 15 min)
    .venv/bin/python benchmarks/stiff.py --quick              # smoke run (< 1 min)
    .venv/bin/python benchmarks/stiff.py --torchdiffeq-checkout /path/to/torchdiffeq

Options: ``--repeats N`` (timed runs per setting, default 5; the median is reported),
``--only robertson,vdp,linear,learned,batch,train`` (a subset), ``--out DIR``.

What runs, in one process, one torch thread, float64:

* hyperode ``kvaerno3``, ``kvaerno5``, ``radau5`` (adaptive, exact Jacobians by reverse
  mode, default options: PI controller, ``lu_band=0.2``);
* scipy ``solve_ivp`` ``Radau``, ``BDF``, ``LSODA`` on a numpy version of the same
  field, with scipy's own finite-difference Jacobian (its default) and, for Radau, also
  with the analytic Jacobian (``Radau+jac``) and with hyperode's torch field behind a
  numpy interface (``Radau+torch f``: the same cost per evaluation of ``f`` as hyperode,
  so that what is left of the difference is the solvers' own);
* torchdiffeq's implicit methods (``radauIIA5``, ``sdirk2``, ``trbdf2``), which exist only
  on a fixed grid and only in the current source (the installed torchdiffeq 0.2.5 lacks
  them): with ``--torchdiffeq-checkout PATH`` the checkout is put first on ``sys.path``
  inside this script, and each method runs on a few grids (geometric for Robertson);
* dopri5 with ``max_num_steps`` (default 20 000): it must stop with hyperode's "looks
  stiff" error instead of running for hours; the time to that error is reported.

Problems (``PROBLEMS``): Robertson's chemical kinetics to ``t = 1e5`` (rtol 1e-6, atol
1e-10), Van der Pol with ``mu = 1000`` on ``[0, 3000]`` in MATLAB's ``vdp1000`` form
``y2' = mu (1 - y1^2) y2 - y1`` (two relaxation periods), a linear system ``y' = A (y -
g(t)) + g'(t)`` of dimension 20 with the eigenvalues of ``A`` spread from ``-1`` to
``-1e6`` (exact solution), and a "learned" stiff field: a randomly initialised
``tanh`` MLP (8 -> 32 -> 8) plus a stiff linear decay with rates from 1 to 1e4.

Measured per solver and tolerance: the achieved error (max over the output times after
``t0`` and the components of ``|y - ref| / (|ref| + floor)`` with ``floor = atol / rtol``
of the problem's nominal tolerances, i.e. ``rtol`` times the error in the units the
tolerances ask for; the sweeps keep ``atol / rtol`` fixed), against a float64 reference
(scipy Radau at rtol 1e-12, or the exact solution), NFE, Jacobian evaluations, LU factorisations,
accepted/rejected steps and the median wall time of ``--repeats`` runs (after one
warm-up). Every solver also runs a tolerance sweep, so that the targets compare work
**at equal achieved error**: hyperode's time at scipy Radau's achieved error (at the
problem's tolerance) is interpolated log-log along hyperode's sweep.

Batches: 256 independent samples, as one batched hyperode solve (per-sample ``d x d``
Jacobians, one step sequence for the batch) against a loop of 256 scipy solves (one
timed pass): Robertson with per-sample rate constants, and the learned field with
per-sample initial states. (Van der Pol with per-sample initial states is left out: its
relaxation jumps then happen at different times in different samples, and a shared step
sequence must resolve all of them; see the README.)

Training (``train``): a Neural ODE ``f(y) = -K y + MLP(y)`` with a fixed stiff ``K``
fitted to trajectories of a stiff system, with kvaerno5 + ``odeint_adjoint`` (kvaerno5
backwards too), kvaerno5 + backpropagation, and dopri5 + adjoint: loss, NFE forward /
backward and time per iteration.

Targets: adaptive implicit within 2x of scipy Radau's wall time at equal achieved error
on Robertson and Van der Pol (batch 1); faster than the per-sample scipy loop for the
batch of 256. Output: ``stiff.{json,md}`` in ``--out`` (``stiff_quick.*`` with
``--quick``).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy
import torch
from scipy.integrate import solve_ivp

import hyperode
from hyperode import solve
from hyperode.errors import SolverError

ROOT = Path(__file__).resolve().parent.parent
NAME = "stiff"
F64 = torch.float64
HYPERODE = ("kvaerno3", "kvaerno5", "radau5")
SCIPY = ("Radau", "Radau+jac", "Radau+torch f", "BDF", "LSODA")
TORCHDIFFEQ = ("radauIIA5", "sdirk2", "trbdf2")
RTOL_SWEEP = (1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9)
QUICK_SWEEP = (1e-4, 1e-6)


# --------------------------------------------------------------------------- problems


@dataclass
class Problem:
    """One stiff test problem in torch (batched over leading dims) and numpy form."""

    name: str
    title: str
    y0: list[float]
    t: list[float]
    rtol: float
    atol: float
    floor: float  # the error's floor, atol / rtol: |y - ref| / (|ref| + floor)
    f_torch: Callable
    f_numpy: Callable
    jac_numpy: Callable | None = None
    exact: Callable | None = None  # exact(t_array) -> [T, d]
    sweep_atol_ratio: float = 1.0
    extra: dict = field(default_factory=dict)

    @property
    def d(self) -> int:
        return len(self.y0)


def robertson() -> Problem:
    def f(t, y):
        y1, y2, y3 = y.unbind(-1)
        return torch.stack([-0.04 * y1 + 1e4 * y2 * y3,
                            0.04 * y1 - 1e4 * y2 * y3 - 3e7 * y2 * y2, 3e7 * y2 * y2], -1)

    def fn(t, y):
        y1, y2, y3 = y
        return np.array([-0.04 * y1 + 1e4 * y2 * y3, 0.04 * y1 - 1e4 * y2 * y3 - 3e7 * y2 * y2,
                         3e7 * y2 * y2])

    def jac(t, y):
        _, y2, y3 = y
        return np.array([[-0.04, 1e4 * y3, 1e4 * y2],
                         [0.04, -1e4 * y3 - 6e7 * y2, -1e4 * y2], [0.0, 6e7 * y2, 0.0]])

    t = [0.0, *np.logspace(-4, 5, 10).tolist()]
    return Problem("robertson", "Robertson, t to 1e5", [1.0, 0.0, 0.0], t, 1e-6, 1e-10, 1e-4,
                   f, fn, jac, sweep_atol_ratio=1e-4)


def van_der_pol(mu: float = 1000.0) -> Problem:
    def f(t, y):
        y1, y2 = y.unbind(-1)
        return torch.stack([y2, mu * (1 - y1 * y1) * y2 - y1], -1)

    def fn(t, y):
        return np.array([y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]])

    def jac(t, y):
        return np.array([[0.0, 1.0], [-2 * mu * y[0] * y[1] - 1, mu * (1 - y[0] ** 2)]])

    t = [0.0, 500.0, 1000.0, 1500.0, 2000.0, 2500.0, 3000.0]
    return Problem("vdp", f"Van der Pol, mu = {mu:g}, t in [0, 3000]", [2.0, 0.0], t, 1e-6,
                   1e-6, 1.0, f, fn, jac, sweep_atol_ratio=1.0)


def linear_spread(d: int = 20, decades: float = 6.0) -> Problem:
    """y' = A (y - g(t)) + g'(t), A = -Q diag(lambda) Q^T, lambda from 1 to 10^decades;
    exact: y(t) = g(t) + Q exp(-diag(lambda) t) Q^T (y0 - g(0))."""
    rng = np.random.default_rng(7)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    lam = np.logspace(0, decades, d)
    A = -(q * lam) @ q.T
    v = rng.standard_normal(d)
    y0 = rng.standard_normal(d)
    At = torch.tensor(A, dtype=F64)
    vt = torch.tensor(v, dtype=F64)

    def f(t, y):
        g, dg = torch.sin(t) * vt, torch.cos(t) * vt
        return (y - g) @ At.T + dg

    def fn(t, y):
        return A @ (y - np.sin(t) * v) + np.cos(t) * v

    def jac(t, y):
        return A

    def exact(ts):
        c0 = q.T @ (y0 - 0.0 * v)
        return np.stack([np.sin(s) * v + q @ (np.exp(-lam * s) * c0) for s in ts])

    return Problem("linear", f"linear, d = {d}, eigenvalues -1 .. -1e{decades:g}",
                   y0.tolist(), [0.0, 0.01, 0.1, 1.0, 5.0, 10.0], 1e-6, 1e-9, 1e-3, f, fn, jac,
                   exact=exact, sweep_atol_ratio=1e-3)


def learned_field(d: int = 8, hidden: int = 32) -> Problem:
    """A randomly initialised tanh MLP plus a stiff linear decay (rates 1 .. 1e4)."""
    gen = torch.Generator().manual_seed(3)
    W1 = torch.randn(hidden, d, generator=gen, dtype=F64) / math.sqrt(d)
    b1 = torch.randn(hidden, generator=gen, dtype=F64) * 0.1
    W2 = torch.randn(d, hidden, generator=gen, dtype=F64) / math.sqrt(hidden)
    rates = torch.logspace(0, 4, d, dtype=F64)
    W1n, b1n, W2n, ratesn = (x.numpy() for x in (W1, b1, W2, rates))

    def f(t, y):
        return torch.tanh(y @ W1.T + b1) @ W2.T - rates * y

    def fn(t, y):
        return W2n @ np.tanh(W1n @ y + b1n) - ratesn * y

    def jac(t, y):
        s = 1 - np.tanh(W1n @ y + b1n) ** 2
        return (W2n * s) @ W1n - np.diag(ratesn)

    y0 = torch.randn(d, generator=gen, dtype=F64).tolist()
    return Problem("learned", f"learned field: tanh MLP {d}-{hidden}-{d} + decay 1 .. 1e4",
                   y0, [0.0, 0.1, 1.0, 5.0, 10.0], 1e-6, 1e-9, 1e-3, f, fn, jac,
                   sweep_atol_ratio=1e-3,
                   extra=dict(W1=W1, b1=b1, W2=W2, rates=rates))


PROBLEMS = {"robertson": robertson, "vdp": van_der_pol, "linear": linear_spread,
            "learned": learned_field}


def reference(p: Problem) -> np.ndarray:
    if p.exact is not None:
        return p.exact(np.array(p.t))
    atol = p.atol * 1e-6
    sol = solve_ivp(p.f_numpy, (p.t[0], p.t[-1]), np.array(p.y0), method="Radau",
                    t_eval=p.t, rtol=1e-12, atol=atol, jac=p.jac_numpy)
    assert sol.success, sol.message
    return sol.y.T


def error(ys: np.ndarray, ref: np.ndarray, floor: float) -> float:
    """max over the output times after t0 and the components of |y - ref| / (|ref| + floor)"""
    return float(np.max(np.abs(ys[1:] - ref[1:]) / (np.abs(ref[1:]) + floor)))


# --------------------------------------------------------------------------- runners


def timed(fn: Callable[[], Any], repeats: int) -> tuple[Any, float, list[float]]:
    out = fn()  # warm-up (and the result)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return out, statistics.median(times), times


def run_hyperode(p: Problem, method: str, rtol: float, atol: float, repeats: int,
                 ref: np.ndarray) -> dict:
    y0 = torch.tensor(p.y0, dtype=F64)
    t = torch.tensor(p.t, dtype=F64)

    def go():
        with torch.no_grad():
            return solve(p.f_torch, y0, t, method=method, rtol=rtol, atol=atol)

    try:
        sol, wall, times = timed(go, repeats)
    except SolverError as e:
        return dict(solver=f"hyperode {method}", rtol=rtol, atol=atol, failed=str(e)[:300])
    s = sol.stats
    return dict(solver=f"hyperode {method}", rtol=rtol, atol=atol,
                error=error(sol.ys.numpy(), ref, p.floor), nfe=s.nfe, n_jacobian=s.n_jacobian,
                n_lu=s.n_lu, n_newton=s.n_newton, newton_failures=s.newton_failures,
                accepted=s.accepted, rejected=s.rejected, wall_s=wall, times_s=times)


def torch_field_for_scipy(p: Problem) -> Callable:
    """The torch field behind a numpy interface (scipy with hyperode's own f: the same
    cost per evaluation, so the difference left is the solvers')."""
    def fn(t, y):
        with torch.no_grad():
            return p.f_torch(torch.tensor(t, dtype=F64), torch.from_numpy(y)).numpy()
    return fn


def run_scipy(p: Problem, method: str, rtol: float, atol: float, repeats: int,
              ref: np.ndarray) -> dict:
    base = method.split("+")[0]
    jac = p.jac_numpy if method.endswith("+jac") else None
    fn = torch_field_for_scipy(p) if method.endswith("+torch f") else p.f_numpy

    def go(t_eval=p.t):
        return solve_ivp(fn, (p.t[0], p.t[-1]), np.array(p.y0), method=base, t_eval=t_eval,
                         rtol=rtol, atol=atol, jac=jac)

    sol, wall, times = timed(go, repeats)
    if not sol.success:
        return dict(solver=f"scipy {method}", rtol=rtol, atol=atol, failed=sol.message)
    steps = len(go(None).t) - 1  # untimed: the accepted steps (t_eval hides them)
    return dict(solver=f"scipy {method}", rtol=rtol, atol=atol,
                error=error(sol.y.T, ref, p.floor), nfe=int(sol.nfev), n_jacobian=int(sol.njev),
                n_lu=int(sol.nlu), accepted=steps, wall_s=wall, times_s=times)


def run_torchdiffeq(td: Any, p: Problem, method: str, n: int, repeats: int,
                    ref: np.ndarray) -> dict:
    """A fixed grid of ``n`` steps: geometric from 1e-6 for Robertson (its transient
    lasts ~1e-3 and its span is 1e5), uniform otherwise."""
    y0 = torch.tensor(p.y0, dtype=F64)
    t = torch.tensor(p.t, dtype=F64)
    t_end = p.t[-1]
    if p.name == "robertson":
        grid = torch.cat([torch.zeros(1, dtype=F64),
                          torch.logspace(-6, math.log10(t_end), n, dtype=F64)])
    else:
        grid = torch.linspace(0.0, t_end, n + 1, dtype=F64)
    counter = {"nfe": 0}

    def f(tt, y):
        counter["nfe"] += 1
        return p.f_torch(tt, y)

    def go():
        counter["nfe"] = 0
        with torch.no_grad():
            return td.odeint(f, y0, t, method=method, options=dict(
                grid_constructor=lambda func, yy, tt: grid))

    start = time.perf_counter()
    try:
        ys = go()
    except Exception as e:  # whatever torchdiffeq raises is the result
        return dict(solver=f"torchdiffeq {method}", grid=n, failed=f"{type(e).__name__}: "
                    f"{str(e)[:200]}")
    first = time.perf_counter() - start
    times = [first]
    nfe = counter["nfe"]
    for _ in range(max(0, min(repeats, 2) - 1) if first < 5.0 else 0):  # slow: <= 2 runs
        start = time.perf_counter()
        go()
        times.append(time.perf_counter() - start)
    err = error(ys.numpy(), ref, p.floor)
    return dict(solver=f"torchdiffeq {method}", grid=n, error=err if math.isfinite(err)
                else None, nfe=nfe, accepted=n, wall_s=statistics.median(times),
                times_s=times)


def run_dopri5(p: Problem, max_num_steps: int) -> dict:
    y0 = torch.tensor(p.y0, dtype=F64)
    t = torch.tensor(p.t, dtype=F64)
    start = time.perf_counter()
    try:
        with torch.no_grad():
            sol = solve(p.f_torch, y0, t, method="dopri5", rtol=p.rtol, atol=p.atol,
                        options=dict(max_num_steps=max_num_steps))
    except SolverError as e:
        msg = str(e)
        return dict(solver="hyperode dopri5", max_num_steps=max_num_steps,
                    seconds_to_error=time.perf_counter() - start, error_type=type(e).__name__,
                    looks_stiff="looks stiff" in msg, message=msg)
    return dict(solver="hyperode dopri5", max_num_steps=max_num_steps,
                seconds=time.perf_counter() - start, nfe=sol.stats.nfe, finished=True)


# --------------------------------------------------------------------------- analysis


def time_at_error(rows: list[dict], target: float) -> tuple[float | None, str]:
    """Wall time at achieved error ``target`` by log-log interpolation along a sweep
    (``None`` when the sweep does not reach it; extrapolation is not attempted)."""
    pts = sorted((r["error"], r["wall_s"]) for r in rows
                 if r.get("error") is not None and r["error"] > 0)
    if not pts:
        return None, "no successful run"
    if target < pts[0][0]:
        return None, f"sweep's best error {pts[0][0]:.2g} is above {target:.2g}"
    if target >= pts[-1][0]:
        return pts[-1][1], "loosest run already as accurate"
    for (e0, w0), (e1, w1) in itertools.pairwise(pts):
        if e0 <= target <= e1:
            if e1 == e0:
                return min(w0, w1), "interpolated"
            u = (math.log(target) - math.log(e0)) / (math.log(e1) - math.log(e0))
            return math.exp(math.log(w0) + u * (math.log(w1) - math.log(w0))), "interpolated"
    return None, "not bracketed"


def compare_at_equal_error(result: dict) -> dict:
    """hyperode vs scipy Radau (FD Jacobian, and with the analytic one) at Radau's
    achieved error at the problem's tolerance."""
    nominal = result["nominal"]
    out = {}
    for radau in ("scipy Radau", "scipy Radau+jac", "scipy Radau+torch f"):
        base = next((r for r in nominal if r["solver"] == radau and "error" in r), None)
        if base is None:
            continue
        entry = {"radau_error": base["error"], "radau_wall_s": base["wall_s"], "methods": {}}
        for m in HYPERODE:
            sweep = [r for r in result["sweep"] if r["solver"] == f"hyperode {m}"]
            w, how = time_at_error(sweep, base["error"])
            entry["methods"][m] = dict(wall_s=w, how=how,
                                       ratio=None if w is None else w / base["wall_s"])
        ratios = [v["ratio"] for v in entry["methods"].values() if v["ratio"] is not None]
        entry["best_ratio"] = min(ratios) if ratios else None
        entry["met"] = bool(ratios) and min(ratios) <= 2.0
        out[radau] = entry
    return out


# --------------------------------------------------------------------------- batch


def batch_problem(name: str, B: int, seed: int = 0) -> dict:
    """``B`` independent samples of problem ``name``: torch f on [B, d], one numpy f per
    sample, initial states [B, d]."""
    rng = np.random.default_rng(seed)
    if name == "robertson":
        k = np.stack([0.04 * (1 + 0.5 * rng.uniform(-1, 1, B)),
                      1e4 * (1 + 0.5 * rng.uniform(-1, 1, B)),
                      3e7 * (1 + 0.5 * rng.uniform(-1, 1, B))], 1)
        kt = torch.tensor(k, dtype=F64)

        def f(t, y):
            y1, y2, y3 = y.unbind(-1)
            a = kt[:, 0] * y1
            b = kt[:, 1] * y2 * y3
            c = kt[:, 2] * y2 * y2
            return torch.stack([-a + b, a - b - c, c], -1)

        def fn_for(i):
            k1, k2, k3 = k[i]

            def fn(t, y):
                y1, y2, y3 = y
                return np.array([-k1 * y1 + k2 * y2 * y3, k1 * y1 - k2 * y2 * y3 - k3 * y2 * y2,
                                 k3 * y2 * y2])
            return fn

        y0 = np.tile([1.0, 0.0, 0.0], (B, 1))
        p = robertson()
        return dict(p=p, f=f, fn_for=fn_for, y0=y0, what="per-sample rate constants "
                    "(each within +-50% of Robertson's)")
    if name == "vdp":
        p = van_der_pol()
        y0 = np.stack([2.0 + 0.05 * rng.uniform(-1, 1, B), np.zeros(B)], 1)
        return dict(p=p, f=p.f_torch, fn_for=lambda i: p.f_numpy, y0=y0,
                    what="per-sample initial states y1(0) in 2 +- 0.05")
    p = learned_field()
    y0 = np.array(p.y0) + 0.5 * rng.standard_normal((B, p.d))
    return dict(p=p, f=p.f_torch, fn_for=lambda i: p.f_numpy, y0=y0,
                what="per-sample initial states (y0 + 0.5 N(0, 1))")


def run_batch(name: str, B: int, repeats: int, n_check: int, scipy_methods: tuple[str, ...]
              ) -> dict:
    bp = batch_problem(name, B)
    p: Problem = bp["p"]
    t = torch.tensor(p.t, dtype=F64)
    y0 = torch.tensor(bp["y0"], dtype=F64)
    check = list(range(0, B, max(1, B // n_check)))[:n_check]
    refs = {}
    for i in check:
        sol = solve_ivp(bp["fn_for"](i), (p.t[0], p.t[-1]), bp["y0"][i], method="Radau",
                        t_eval=p.t, rtol=1e-12, atol=p.atol * 1e-6)
        refs[i] = sol.y.T

    def err_of(ys_by_sample: dict[int, np.ndarray]) -> float:
        return max(error(ys_by_sample[i], refs[i], p.floor) for i in check)

    rows = []
    for m in HYPERODE:
        def go(m=m):
            with torch.no_grad():
                return solve(bp["f"], y0, t, method=m, rtol=p.rtol, atol=p.atol)
        try:
            sol, wall, times = timed(go, max(1, repeats // 2))
        except SolverError as e:
            rows.append(dict(solver=f"hyperode {m}", failed=str(e)[:300]))
            continue
        ys = sol.ys.numpy()
        s = sol.stats
        rows.append(dict(solver=f"hyperode {m} (batched)", error=err_of({i: ys[:, i]
                                                                          for i in check}),
                         nfe=s.nfe, n_jacobian=s.n_jacobian, n_lu=s.n_lu, accepted=s.accepted,
                         rejected=s.rejected, wall_s=wall, times_s=times))
    for method in scipy_methods:
        def loop(method=method):
            out, nfe = {}, 0
            for i in range(B):
                sol = solve_ivp(bp["fn_for"](i), (p.t[0], p.t[-1]), bp["y0"][i], method=method,
                                t_eval=p.t, rtol=p.rtol, atol=p.atol)
                nfe += sol.nfev
                if i in refs:
                    out[i] = sol.y.T
            return out, nfe
        start = time.perf_counter()  # one timed pass of B solves (no warm-up)
        ys, nfe = loop()
        wall = time.perf_counter() - start
        times = [wall]
        rows.append(dict(solver=f"scipy {method} (loop of {B})", error=err_of(ys), nfe=nfe,
                         wall_s=wall, times_s=times))
    best_h = min((r["wall_s"] for r in rows if r["solver"].startswith("hyperode")
                  and "wall_s" in r), default=None)
    best_s = min((r["wall_s"] for r in rows if r["solver"].startswith("scipy")), default=None)
    return dict(problem=p.name, title=p.title, batch=B, samples=bp["what"],
                checked_samples=check, rtol=p.rtol, atol=p.atol, rows=rows,
                best_hyperode_s=best_h, best_scipy_loop_s=best_s,
                speedup=None if not (best_h and best_s) else best_s / best_h,
                met=bool(best_h and best_s and best_h < best_s))


# --------------------------------------------------------------------------- training


class StiffNODE(torch.nn.Module):
    """f(t, y) = -K y + MLP(y), K fixed and stiff (diag(stiff, 1)), MLP learned."""

    def __init__(self, d: int, hidden: int, stiff: float, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.net = torch.nn.Sequential(torch.nn.Linear(d, hidden), torch.nn.Tanh(),
                                       torch.nn.Linear(hidden, d)).to(F64)
        k = torch.ones(d, dtype=F64)
        k[0] = stiff
        self.register_buffer("k", k)

    def forward(self, t, y):
        return self.net(y) - self.k * y


def train_measurement(iterations: int, quick: bool) -> dict:
    """Fit StiffNODE to trajectories of y' = -K y + A tanh(y) + c (the same stiff K, a
    fixed rotation A, a constant c): B initial states on [0, 1], with dense outputs (101;
    11 with ``quick``) and with sparse ones (11; 3 with ``quick``). The adjoint's default
    backward pass re-solves y backwards in time, where the stiff mode grows like
    exp(stiff * dt) between outputs: fine at dt = 0.01, it fails at dt = 0.1 (exp(100)).
    The checkpoint backward pass (``adjoint_options=dict(backward="checkpoint")``) re-runs
    the forward solve per output interval and backpropagates through it instead."""
    d, hidden, stiff, B = 2, 16, 1e3 if not quick else 1e2, 16
    dense, sparse = (11, 3) if quick else (101, 11)
    gen = torch.Generator().manual_seed(11)
    A = torch.tensor([[0.0, 2.0], [-2.0, 0.0]], dtype=F64)
    k = torch.tensor([stiff, 1.0], dtype=F64)

    def truth(t, y):
        return torch.tanh(y) @ A.T - k * y + torch.tensor([stiff * 0.5, 0.0], dtype=F64)

    y0 = torch.randn(B, d, generator=gen, dtype=F64)
    out = {"setting": dict(d=d, hidden=hidden, stiff=stiff, batch=B, outputs=[dense, sparse],
                           iterations=iterations, rtol=1e-5, atol=1e-7, lr=1e-2), "runs": {}}
    checkpoint = dict(backward="checkpoint")
    variants = [
        (dense, "kvaerno5 + adjoint (kvaerno5 backwards)", "kvaerno5", "adjoint", None),
        (dense, "kvaerno5 + adjoint (checkpoint)", "kvaerno5", "adjoint", checkpoint),
        (dense, "kvaerno5 + backprop", "kvaerno5", "backprop", None),
        (dense, "dopri5 + adjoint", "dopri5", "adjoint", None),
        (sparse, "kvaerno5 + adjoint (kvaerno5 backwards)", "kvaerno5", "adjoint", None),
        (sparse, "kvaerno5 + adjoint (checkpoint)", "kvaerno5", "adjoint", checkpoint),
        (sparse, "kvaerno5 + backprop", "kvaerno5", "backprop", None),
    ]
    if quick:  # re-solving y backwards over long intervals is the slow row: left out
        variants = [v for v in variants if not (v[0] == sparse and "backwards" in v[1])]
    targets_by_outputs = {}
    for outputs, label, method, how, adjoint_options in variants:
        t = torch.linspace(0.0, 1.0, outputs, dtype=F64)
        if outputs not in targets_by_outputs:
            with torch.no_grad():
                targets_by_outputs[outputs] = solve(truth, y0, t, method="radau5", rtol=1e-9,
                                                    atol=1e-11).ys
        target = targets_by_outputs[outputs]
        model = StiffNODE(d, hidden, stiff, seed=5)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        losses, nfe_f, nfe_b, times = [], [], [], []
        failed = None
        kw = dict(method=method, rtol=1e-5, atol=1e-7, options=dict(max_num_steps=20000))
        for _ in range(iterations):
            start = time.perf_counter()
            opt.zero_grad()
            try:
                if how == "adjoint":
                    sol = hyperode.solve_adjoint(model, y0, t, adjoint_options=adjoint_options,
                                                 **kw)
                else:
                    sol = solve(model, y0, t, **kw)
                loss = ((sol.ys - target) ** 2).mean()
                loss.backward()
            except SolverError as e:
                failed = str(e)[:300]
                break
            opt.step()
            times.append(time.perf_counter() - start)
            losses.append(float(loss.detach()))
            nfe_f.append(sol.stats.nfe)
            nfe_b.append(sol.backward_stats.nfe if how == "adjoint" else None)
        out["runs"][f"{label}, {outputs} outputs"] = dict(
            outputs=outputs, loss_first=losses[0] if losses else None,
            loss_last=losses[-1] if losses else None,
            loss_every_10=losses[::10], nfe_forward_mean=statistics.mean(nfe_f) if nfe_f else
            None, nfe_backward_mean=statistics.mean(nfe_b) if nfe_b and nfe_b[0] is not None
            else None, seconds_per_iteration=statistics.median(times) if times else None,
            iterations_done=len(losses), failed=failed)
    return out


# --------------------------------------------------------------------------- main


def run_problem(p: Problem, args: argparse.Namespace, td: Any, sweep: tuple[float, ...]
                ) -> dict:
    ref = reference(p)
    nominal, rows = [], []
    repeats = args.repeats
    for m in HYPERODE:
        nominal.append(run_hyperode(p, m, p.rtol, p.atol, repeats, ref))
    for m in SCIPY:
        if m.endswith("+jac") and p.jac_numpy is None:
            continue
        nominal.append(run_scipy(p, m, p.rtol, p.atol, repeats, ref))
    for rtol in sweep:
        atol = rtol * p.sweep_atol_ratio
        for m in HYPERODE:
            if m == "kvaerno3" and rtol < 1e-8:
                continue  # third order: far too many steps at 1e-9
            rows.append(run_hyperode(p, m, rtol, atol, max(1, repeats // 2), ref))
        for m in ("Radau", "Radau+jac", "Radau+torch f", "BDF"):
            if m.endswith("+jac") and p.jac_numpy is None:
                continue
            rows.append(run_scipy(p, m, rtol, atol, max(1, repeats // 2), ref))
    result = {"problem": p.name, "title": p.title, "rtol": p.rtol, "atol": p.atol,
              "floor": p.floor, "nominal": nominal, "sweep": rows}
    if td is not None and p.name in ("robertson", "vdp"):
        grids = (200, 1000) if not args.quick else (100,)
        if p.name == "vdp":
            grids = (3000,) if not args.quick else (300,)
        result["torchdiffeq"] = [run_torchdiffeq(td, p, m, n, repeats, ref)
                                 for m in TORCHDIFFEQ for n in grids]
    result["dopri5"] = run_dopri5(p, args.dopri5_max_steps)
    result["equal_error"] = compare_at_equal_error(result)
    return result


def import_torchdiffeq(path: str | None) -> tuple[Any, str | None]:
    if not path:
        return None, None
    sys.path.insert(0, str(Path(path).resolve()))
    for key in [k for k in sys.modules if k == "torchdiffeq" or k.startswith("torchdiffeq.")]:
        del sys.modules[key]
    import torchdiffeq
    from torchdiffeq._impl.odeint import SOLVERS

    if not all(m in SOLVERS for m in TORCHDIFFEQ):
        raise SystemExit(f"{torchdiffeq.__file__} has no implicit methods {TORCHDIFFEQ}")
    commit = None
    with contextlib.suppress(Exception):
        head = (Path(path) / ".git" / "HEAD").read_text().strip()
        commit = (Path(path) / ".git" / head.split()[1]).read_text().strip() \
            if head.startswith("ref:") else head
    return torchdiffeq, commit


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run (< 1 min)")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs (median)")
    ap.add_argument("--only", default=None,
                    help="comma-separated subset of robertson,vdp,linear,learned,batch,train")
    ap.add_argument("--torchdiffeq-checkout", default=None,
                    help="a clone of rtqichen/torchdiffeq with the implicit methods")
    ap.add_argument("--dopri5-max-steps", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=None, help="batch size (default 256)")
    ap.add_argument("--train-iterations", type=int, default=None)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--update", action="store_true",
                    help="with --only: replace only those parts of an existing results file")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 5
    if args.quick:
        args.dopri5_max_steps = min(args.dopri5_max_steps, 3000)
    parts = ("robertson", "vdp", "linear", "learned", "batch", "train") if args.only is None \
        else tuple(x.strip() for x in args.only.split(","))
    td, td_commit = import_torchdiffeq(args.torchdiffeq_checkout)
    start = time.perf_counter()
    data: dict[str, Any] = {
        "command": "python benchmarks/stiff.py" + (
            " " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip(),
        "quick": args.quick, "repeats": args.repeats, "threads": torch.get_num_threads(),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "numpy": np.__version__, "scipy": scipy.__version__,
                     "hyperode": getattr(hyperode, "__version__", None),
                     "torchdiffeq": None if td is None else td.__file__,
                     "torchdiffeq_commit": td_commit},
        "machine": platform.platform(), "problems": {}, "batch": [], "train": None,
    }
    sweep = QUICK_SWEEP if args.quick else RTOL_SWEEP
    for name in ("robertson", "vdp", "linear", "learned"):
        if name not in parts:
            continue
        p = PROBLEMS[name]()
        if args.quick and name == "vdp":
            p.t = [0.0, 300.0, 600.0]
        data["problems"][name] = run_problem(p, args, td, sweep)
    if "batch" in parts:
        B = args.batch or (8 if args.quick else 256)
        names = ("robertson",) if args.quick else ("robertson", "learned")
        methods = ("Radau",) if args.quick else ("Radau", "BDF", "LSODA")
        for name in names:
            data["batch"].append(run_batch(name, B, args.repeats, 4 if args.quick else 8,
                                           methods))
    if "train" in parts:
        iters = args.train_iterations or (3 if args.quick else 60)
        data["train"] = train_measurement(iters, args.quick)
    data["seconds"] = time.perf_counter() - start
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = NAME + ("_quick" if args.quick else "")
    if args.update and (out / f"{name}.json").exists():
        data = merge_update(json.loads((out / f"{name}.json").read_text()), data, parts)
    data["targets"] = targets(data)
    (out / f"{name}.json").write_text(json.dumps(data, indent=2, default=float))
    text = markdown(data)
    (out / f"{name}.md").write_text(text)
    print(text)
    return data


def merge_update(old: dict, new: dict, parts: tuple[str, ...]) -> dict:
    """``old`` with the parts in ``parts`` replaced by ``new``'s; the update's command,
    versions and duration are listed under ``updates``."""
    merged = dict(old)
    for part in parts:
        if part in ("batch", "train"):
            merged[part] = new[part]
        else:
            merged["problems"][part] = new["problems"][part]
    merged.setdefault("updates", []).append(dict(
        parts=list(parts), command=new["command"], seconds=new["seconds"],
        versions=new["versions"], machine=new["machine"]))
    return merged


def targets(data: dict) -> dict:
    out = {}
    for name in ("robertson", "vdp"):
        res = data["problems"].get(name)
        if res is None:
            continue
        eq = res["equal_error"].get("scipy Radau")
        if eq is not None:
            out[f"{name}: within 2x of scipy Radau at equal error"] = dict(
                met=eq["met"], best_ratio=eq["best_ratio"],
                radau_error=eq["radau_error"], radau_wall_s=eq["radau_wall_s"])
        same = res["equal_error"].get("scipy Radau+torch f")
        if same is not None:  # not a target: the same f on both sides
            out[f"({name}: the same within 2x of scipy Radau given hyperode's torch f)"] = dict(
                met=same["met"], best_ratio=same["best_ratio"],
                radau_error=same["radau_error"], radau_wall_s=same["radau_wall_s"])
    for b in data["batch"]:
        out[f"batch {b['batch']} {b['problem']}: faster than the scipy loop"] = dict(
            met=b["met"], speedup=b["speedup"], best_hyperode_s=b["best_hyperode_s"],
            best_scipy_loop_s=b["best_scipy_loop_s"])
    return out


# --------------------------------------------------------------------------- report


def _fmt(x: Any, spec: str = ".3g") -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        return format(x, spec)
    return str(x)


def _row(r: dict) -> str:
    if "failed" in r:
        return f"| {r['solver']} | {_fmt(r.get('rtol'), '.0e')} | failed: {r['failed'][:80]} |" \
               f" | | | | |"
    steps = f"{r.get('accepted', '—')}" + (f"+{r['rejected']}" if r.get("rejected") else "")
    return (f"| {r['solver']} | {_fmt(r.get('rtol'), '.0e')} | {_fmt(r.get('error'), '.2e')} | "
            f"{r.get('nfe', '—')} | {r.get('n_jacobian', '—')} | {r.get('n_lu', '—')} | "
            f"{steps} | {_fmt(r['wall_s'] * 1e3, '.1f')} |")


HEAD = ("| solver | rtol | error | NFE | Jacobians | LUs | steps (acc+rej) | wall ms |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|")


def markdown(data: dict) -> str:
    lines = ["# Stiff solvers", "", f"Command: `{data['command']}`; {data['threads']} torch "
             f"thread, float64, median of {data['repeats']} timed runs after a warm-up "
             f"(sweeps: of {max(1, data['repeats'] // 2)}); {data['machine']}; torch "
             f"{data['versions']['torch']}, scipy {data['versions']['scipy']}; "
             f"{data['seconds']:.0f} s in all."]
    for u in data.get("updates", []):
        lines.append(f"Updated ({', '.join(u['parts'])}): `{u['command']}`, "
                     f"{u['seconds']:.0f} s.")
    lines += ["", "## Targets", ""]
    for key, v in data["targets"].items():
        state = "**met**" if v["met"] else "**missed**"
        detail = ", ".join(f"{k} {_fmt(x)}" for k, x in v.items() if k != "met")
        lines.append(f"- {key}: {state} ({detail})")
    for res in data["problems"].values():
        lines += ["", f"## {res['title']}", "",
                  f"Tolerance rtol {res['rtol']:g}, atol {res['atol']:g}; error = max "
                  f"|y - ref| / (|ref| + {res['floor']:g}) over the outputs.", "", HEAD]
        lines += [_row(r) for r in res["nominal"]]
        eq = res["equal_error"]
        for radau, e in eq.items():
            parts = "; ".join(
                f"{m} {_fmt(v['wall_s'] * 1e3 if v['wall_s'] else None, '.1f')} ms "
                f"(x{_fmt(v['ratio'], '.2f')}, {v['how']})" for m, v in e["methods"].items())
            lines += ["", f"At {radau}'s achieved error {e['radau_error']:.2e} "
                      f"({e['radau_wall_s'] * 1e3:.1f} ms): {parts}."]
        lines += ["", "<details><summary>tolerance sweep</summary>", "", HEAD]
        lines += [_row(r) for r in res["sweep"]]
        lines += ["", "</details>"]
        if res.get("torchdiffeq"):
            lines += ["", "torchdiffeq (checkout; fixed grids, Broyden iterations from the "
                      "identity):", "", "| solver | grid steps | error | NFE | wall ms |",
                      "|---|---:|---:|---:|---:|"]
            for r in res["torchdiffeq"]:
                if "failed" in r:
                    lines.append(f"| {r['solver']} | {r['grid']} | failed: {r['failed']} | | |")
                else:
                    lines.append(f"| {r['solver']} | {r['grid']} | {_fmt(r['error'], '.2e')} | "
                                 f"{r['nfe']} | {r['wall_s'] * 1e3:.0f} |")
        d5 = res["dopri5"]
        if "message" in d5:
            lines += ["", f"dopri5 (max_num_steps={d5['max_num_steps']}): "
                      f"{d5['error_type']} after {d5['seconds_to_error']:.2f} s; "
                      f"'looks stiff' in the message: {d5['looks_stiff']}.", "",
                      f"> {d5['message']}"]
        else:
            lines += ["", f"dopri5 finished: {d5}"]
    for b in data["batch"]:
        lines += ["", f"## Batch of {b['batch']}: {b['title']}", "",
                  f"{b['samples']}; rtol {b['rtol']:g}, atol {b['atol']:g}; errors over "
                  f"samples {b['checked_samples']} against scipy Radau at rtol 1e-12.", "",
                  HEAD]
        lines += [_row(r) for r in b["rows"]]
        lines += ["", f"Speed-up of the fastest hyperode solve over the fastest scipy loop: "
                  f"{_fmt(b['speedup'], '.1f')}x."]
    tr = data.get("train")
    if tr:
        s = tr["setting"]
        lines += ["", "## Training a stiff Neural ODE", "",
                  f"f(y) = -diag({s['stiff']:g}, 1) y + MLP(y) (MLP {s['d']}-{s['hidden']}-"
                  f"{s['d']}, tanh), batch {s['batch']}, "
                  f"{' or '.join(map(str, np.atleast_1d(s['outputs'])))} outputs on [0, 1], "
                  f"Adam lr {s['lr']}, {s['iterations']} iterations, rtol {s['rtol']:g}, "
                  f"atol {s['atol']:g}, float64.", "",
                  "| run | loss first | loss last | NFE forward | NFE backward | s/iteration |"
                  " note |", "|---|---:|---:|---:|---:|---:|---|"]
        for label, r in tr["runs"].items():
            lines.append(f"| {label} | {_fmt(r['loss_first'], '.3e')} | "
                         f"{_fmt(r['loss_last'], '.3e')} | {_fmt(r['nfe_forward_mean'], '.0f')}"
                         f" | {_fmt(r['nfe_backward_mean'], '.0f')} | "
                         f"{_fmt(r['seconds_per_iteration'], '.3f')} | "
                         f"{r['failed'][:120] if r['failed'] else ''} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
