"""Per-sample step sizes vs the shared-step default vs torchode, on batches whose samples
differ in stiffness.

Run (from the repository root)::

    .venv/bin/python benchmarks/per_sample.py           # full run (a few minutes)
    .venv/bin/python benchmarks/per_sample.py --quick   # smoke run (small batch, ~20 s)

Cases (dopri5 throughout; one torch thread; every library on the same field object, the
same ``y0`` and the same output times, in one process):

* ``vdp`` -- Van der Pol ``x'' = mu (1 - x^2) x' - x`` with ``mu`` log-uniform in
  [0.1, 30] over a batch of 256 (seeded), ``y0 = (2, 0)``, outputs at 11 times in
  [0, 20], float64, rtol = atol = 1e-6. The stiff samples need short steps where their
  relaxation jumps happen, at different times for different ``mu``; a shared step
  sequence pays each sample's hard stretches for the whole batch.
* ``mlp`` -- a Neural-ODE-like field ``y' = s_b * MLP(y)`` (2-512-2, tanh, a damped
  rotation near the origin) with a speed ``s_b`` log-uniform in [0.1, 10] per sample,
  B = 256, t in [0, 5], float32, rtol = atol = 1e-5: the fast samples need many more
  steps than the slow ones all along, and one call of ``f`` costs in proportion to its
  batch -- the case for dropping finished samples.
* ``cnf`` -- the log-density solve of a 2-D continuous normalising flow
  (``hyperode.nn.cnf_mlp(dim=2, hidden=64)``: 3 softplus layers, exact trace) trained
  briefly on the pinwheel density (``--train-iters`` Adam iterations, batch 256, lr 3e-3,
  shared-step dopri5 at 1e-4; 0 leaves it untrained), then 256 test points integrated
  from t = 1 to t = 0 with ``(z, logp)`` as one ``[B, 3]`` state, float32,
  rtol = atol = 1e-5. The flow network reads time through a concatenation that accepts
  a per-sample ``t`` of shape ``[B]`` (``RowTime``).

Rows:

* ``shared`` -- hyperode's default: one step sequence for the batch, RMS error norm over
  all of it.
* ``per-sample`` -- ``options=dict(per_sample_steps=True)``: every sample its own steps,
  the whole batch evaluated on every call with finished samples masked.
* ``per-sample, compact`` -- also ``compact_finished=True``: finished samples dropped
  from the batch. The field may then no longer close over a per-sample tensor, so a
  case's per-sample parameter (``mu``, ``s``) travels in the state as one more column
  with a zero derivative, and the error norm is the RMS over the other columns
  (``options['norm']``): the same steps as ``per-sample``.
* ``torchode`` -- torchode's ``Dopri5`` + ``IntegralController`` (per-sample steps, the
  whole batch evaluated on every call) with the same tolerances.

Columns: NFE (batched calls of ``f``); attempted steps per sample (median and max;
for ``shared`` every sample takes the batch's steps); row evaluations (samples
evaluated, summed over the calls: the work a batched ``f`` does in proportion to its
batch); median wall time of one solve over ``--repeats`` runs (the rows timed
round-robin after a warm-up); max error at the outputs against a reference
(shared-step dopri5 at rtol = atol = 1e-10 in float64 for Van der Pol, 1e-7 in float32 for
the CNF). Each row's error is at its own tolerance: it says the rows solve the same
problem, not that one is more accurate.

Writes ``per_sample.json`` and ``per_sample.md`` (``per_sample_quick.*`` with
``--quick``) under ``--out`` (default ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from hyperode import solve
from hyperode.data.densities import sample_density
from hyperode.nn import SolverConfig, cnf_mlp
from hyperode.nn.cnf import CNF

try:
    import torchode
except ImportError:  # optional (dev/bench extra)
    torchode = None

ROOT = Path(__file__).resolve().parent.parent
NAME = "per_sample"
ROWS = ("shared", "per-sample", "per-sample, compact", "torchode")


@dataclass
class Case:
    name: str
    description: str
    field: Callable[[Tensor, Tensor], Tensor]  # f(t, y) on y [B, N], t scalar or [B]
    y0: Tensor
    t: Tensor
    tol: float
    compact: tuple[Callable, Tensor, int] | None = None
    # (field on the state with the per-sample parameter as its last column, that y0,
    #  the number of columns judged by the error norm)


class RowTime(nn.Module):
    """``net(cat([z, t], 1))`` with ``t`` a scalar or one time per sample (``[B]``)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        tt = torch.as_tensor(t, dtype=z.dtype, device=z.device).reshape(-1, 1)
        return self.net(torch.cat([z, tt.expand(z.shape[0], 1)], dim=1))


def vdp_case(batch: int, t_end: float, seed: int) -> Case:
    gen = torch.Generator().manual_seed(seed)
    mu = torch.exp(torch.empty(batch, dtype=torch.float64).uniform_(
        math.log(0.1), math.log(30.0), generator=gen))

    def f(t, y):
        x, v = y[:, 0], y[:, 1]
        return torch.stack([v, mu * (1 - x * x) * v - x], dim=1)

    def f_carried(t, y):  # mu in the state: rows may be dropped
        x, v, m = y[:, 0], y[:, 1], y[:, 2]
        return torch.stack([v, m * (1 - x * x) * v - x, torch.zeros_like(m)], dim=1)

    y0 = torch.tensor([2.0, 0.0], dtype=torch.float64).repeat(batch, 1)
    t = torch.linspace(0.0, t_end, 11, dtype=torch.float64)
    return Case("vdp", f"Van der Pol, B={batch}, mu log-uniform in [0.1, 30], t in [0, {t_end:g}]"
                f", float64, dopri5 rtol=atol=1e-6", f, y0, t, 1e-6,
                compact=(f_carried, torch.cat([y0, mu[:, None]], dim=1), 2))


def mlp_case(batch: int, hidden: int, seed: int) -> Case:
    """``y' = s_b * W2 tanh(W1 y + b1)``, a damped rotation near the origin (the output
    layer ``(omega K - decay I) W1^T / ||W1||^2`` as in ``solver_overhead.py``) whose
    speed ``s_b`` is log-uniform in [0.1, 10] per sample."""
    gen = torch.Generator().manual_seed(seed)
    first = nn.Linear(2, hidden)
    with torch.no_grad():
        w1 = torch.randn(hidden, 2, generator=gen) / math.sqrt(2)
        first.weight.copy_(w1)
        first.bias.zero_()
        rot = 4.0 * torch.tensor([[0.0, -1.0], [1.0, 0.0]]) - 0.1 * torch.eye(2)
        w2 = rot @ w1.T / torch.linalg.matrix_norm(w1, 2) ** 2
    speed = torch.exp(torch.empty(batch).uniform_(math.log(0.1), math.log(10.0),
                                                  generator=gen))

    def f(t, y):
        return speed[:, None] * (torch.tanh(first(y)) @ w2.T)

    def f_carried(t, y):
        z, s = y[:, :2], y[:, 2:]
        return torch.cat([s * (torch.tanh(first(z)) @ w2.T), torch.zeros_like(s)], dim=1)

    y0 = 0.5 * torch.randn(batch, 2, generator=gen)
    t = torch.linspace(0.0, 5.0, 11, dtype=torch.float64)
    return Case("mlp", f"MLP field 2-{hidden}-2 (damped rotation) at a speed log-uniform in "
                f"[0.1, 10] per sample, B={batch}, t in [0, 5], float32, dopri5 "
                f"rtol=atol=1e-5", f, y0, t, 1e-5,
                compact=(f_carried, torch.cat([y0, speed[:, None]], dim=1), 2))


def train_cnf(iterations: int, seed: int) -> nn.Module:
    """``cnf_mlp(dim=2, hidden=64)`` after ``iterations`` Adam steps on pinwheel."""
    torch.manual_seed(seed)
    model = cnf_mlp(dim=2, hidden=64, solver=SolverConfig.adaptive("dopri5", rtol=1e-4,
                                                                   atol=1e-4))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    data = sample_density("pinwheel", 256 * max(iterations, 1), seed=seed)
    for i in range(iterations):
        loss = -model.log_prob(data[256 * i:256 * (i + 1)]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (i + 1) % 25 == 0:
            print(f"  cnf training {i + 1}/{iterations}: loss {float(loss.detach()):.3f}",
                  flush=True)
    return model


def cnf_case(batch: int, train_iters: int, seed: int) -> tuple[Case, dict]:
    start = time.perf_counter()
    model = train_cnf(train_iters, seed)
    trained_s = time.perf_counter() - start
    x = sample_density("pinwheel", batch, seed=seed + 1)
    with torch.no_grad():
        nll = float(-model.log_prob(x).mean())
    cnf = CNF(RowTime(model.cnf.net.net), trace="exact")

    def f(t, y):
        dz, dlogp = cnf(t, (y[:, :2], y[:, 2:]))
        return torch.cat([dz, dlogp], dim=1)

    y0 = torch.cat([x, torch.zeros(batch, 1)], dim=1)
    t = torch.tensor([1.0, 0.0], dtype=torch.float64)
    info = {"train_iters": train_iters, "train_s": round(trained_s, 1),
            "test_nll_nats": round(nll, 4)}
    return Case("cnf", f"2-D CNF (cnf_mlp hidden 64, exact trace, {train_iters} training "
                f"iterations on pinwheel), B={batch}, log-density solve t: 1 -> 0, float32, "
                f"dopri5 rtol=atol=1e-5", f, y0, t, 1e-5), info


# ---------------------------------------------------------------------- runners


@dataclass
class Result:
    ys: Tensor  # [T, B, N]
    nfe: int
    steps_per_sample: list[int]
    rows: int


def run_hyperode(case: Case, mode: str) -> Callable[[], Result]:
    b = case.y0.shape[0]
    if mode == "shared":
        def run() -> Result:
            sol = solve(case.field, case.y0, case.t, rtol=case.tol, atol=case.tol)
            return Result(sol.ys, sol.stats.nfe, [sol.stats.steps] * b, sol.stats.nfe * b)
        return run
    compact = mode == "per-sample, compact"
    options = dict(per_sample_steps=True, compact_finished=compact)
    field, y0, judged = case.field, case.y0, None
    if compact and case.compact is not None:
        field, y0, judged = case.compact
        root = math.sqrt(judged)
        options["norm"] = lambda e: torch.linalg.vector_norm(e[:, :judged], dim=1) / root

    def run_ps() -> Result:
        sol = solve(field, y0, case.t, rtol=case.tol, atol=case.tol, options=options)
        st = sol.stats
        steps = (st.accepted_per_sample + st.rejected_per_sample).tolist()
        ys = sol.ys if judged is None else sol.ys[..., :judged]
        return Result(ys, st.nfe, steps, st.row_evaluations)

    return run_ps


def run_torchode(case: Case) -> Callable[[], Result]:
    term = torchode.ODETerm(case.field)
    ctrl = torchode.IntegralController(atol=case.tol, rtol=case.tol, term=term)
    adjoint = torchode.AutoDiffAdjoint(torchode.Dopri5(term=term), ctrl)
    b = case.y0.shape[0]
    t_eval = case.t.to(case.y0.dtype).expand(b, -1).contiguous()

    def run() -> Result:
        sol = adjoint.solve(torchode.InitialValueProblem(y0=case.y0, t_eval=t_eval))
        if bool((sol.status != 0).any()):
            raise RuntimeError(f"torchode failed on {int((sol.status != 0).sum())} samples")
        nfe = int(sol.stats["n_f_evals"].max())
        return Result(sol.ys.transpose(0, 1), nfe, sol.stats["n_steps"].tolist(), nfe * b)

    return run


def reference(case: Case) -> Tensor:
    """Shared-step dopri5 far tighter than the rows: rtol = atol = 1e-10 for a float64
    case, 1e-7 for a float32 one (whose field runs in float32)."""
    tol = 1e-10 if case.y0.dtype == torch.float64 else 1e-7
    with torch.no_grad():
        return solve(case.field, case.y0, case.t, rtol=tol, atol=tol).ys.double()


def measure(case: Case, repeats: int) -> dict:
    runners = {row: run_hyperode(case, row) for row in ROWS[:3]}
    if torchode is not None:
        runners["torchode"] = run_torchode(case)
    ref = reference(case)
    with torch.no_grad():
        first = {row: run() for row, run in runners.items()}  # warm-up and statistics
        times: dict[str, list[float]] = {row: [] for row in runners}
        for _ in range(repeats):
            for row, run in runners.items():
                start = time.perf_counter()
                run()
                times[row].append(time.perf_counter() - start)
    out = {}
    for row, res in first.items():
        steps = res.steps_per_sample
        out[row] = {
            "nfe": res.nfe, "steps_median": statistics.median(steps), "steps_max": max(steps),
            "steps_min": min(steps), "row_evaluations": res.rows,
            "wall_s_median": statistics.median(times[row]), "wall_s_all": times[row],
            "max_error": float((res.ys.double() - ref).abs().max()),
        }
    base = out["shared"]["wall_s_median"]
    for row in out:
        out[row]["speed_vs_shared"] = base / out[row]["wall_s_median"]
    return out


# ---------------------------------------------------------------------- report


def markdown(payload: dict) -> str:
    lines = [f"# Per-sample step sizes ({payload['mode']})", "",
             f"Command: `{payload['command']}`  ", f"Machine: {payload['machine']}, "
             f"torch {payload['torch']}, torchode {payload['torchode']}; medians of "
             f"{payload['repeats']} round-robin runs.", ""]
    for name, case in payload["cases"].items():
        lines += [f"## {name}: {case['description']}", ""]
        if "cnf" in case:
            c = case["cnf"]
            lines += [f"Training: {c['train_iters']} iterations in {c['train_s']} s; test "
                      f"NLL {c['test_nll_nats']} nats.", ""]
        lines += ["| row | NFE | steps/sample median (min-max) | row evaluations | "
                  "wall [s] median | speed vs shared | max error |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for row, r in case["rows"].items():
            lines.append(f"| {row} | {r['nfe']} | {r['steps_median']:g} ({r['steps_min']}-"
                         f"{r['steps_max']}) | {r['row_evaluations']} | "
                         f"{r['wall_s_median']:.3f} | {r['speed_vs_shared']:.2f}x | "
                         f"{r['max_error']:.2e} |")
        lines.append("")
    lines += ["NFE counts batched calls of f; row evaluations the samples those calls "
              "evaluated (NFE x B without compaction). Errors are each row's at its own "
              "tolerance against shared-step dopri5 at 1e-10 (float64, vdp) or 1e-7 "
              "(float32, mlp and cnf).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: small batches, 1 repeat")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--train-iters", type=int, default=None,
                   help="CNF training iterations (default 100; --quick 0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    batch = 16 if args.quick else 256
    repeats = args.repeats or (1 if args.quick else 5)
    train_iters = args.train_iters if args.train_iters is not None else (0 if args.quick
                                                                          else 100)
    cases = [vdp_case(batch, 5.0 if args.quick else 20.0, args.seed),
             mlp_case(batch, 32 if args.quick else 512, args.seed)]
    cnf, cnf_info = cnf_case(batch, train_iters, args.seed)
    cases.append(cnf)
    payload = {
        "mode": "quick" if args.quick else "full",
        "command": "python benchmarks/per_sample.py" + (" " + " ".join(argv or sys.argv[1:])
                                                        if (argv or sys.argv[1:]) else ""),
        "machine": f"{platform.processor() or platform.machine()}, "
                   f"{torch.get_num_threads()} torch thread",
        "torch": torch.__version__,
        "torchode": getattr(torchode, "__version__", None),
        "repeats": repeats, "cases": {},
    }
    for case in cases:
        print(f"[{case.name}] {case.description}", flush=True)
        rows = measure(case, repeats)
        entry = {"description": case.description, "rows": rows}
        if case.name == "cnf":
            entry["cnf"] = cnf_info
        payload["cases"][case.name] = entry
        for row, r in rows.items():
            print(f"  {row:22s} nfe {r['nfe']:6d}  steps/sample {r['steps_median']:8g} "
                  f"(max {r['steps_max']})  rows {r['row_evaluations']:9d}  "
                  f"{r['wall_s_median']:.3f} s  x{r['speed_vs_shared']:.2f}  "
                  f"err {r['max_error']:.1e}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = NAME + ("_quick" if args.quick else "")
    (args.out / f"{stem}.json").write_text(json.dumps(payload, indent=2))
    (args.out / f"{stem}.md").write_text(markdown(payload))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
