"""Trajectory tracking with a Galerkin Neural ODE: the hypersolver paper's Fig. 8 claim.

Poli, Massaroli et al. (NeurIPS 2020), App. C.1 / Fig. 8: a depth-varying (Galerkin)
Neural ODE is trained so that its trajectory tracks a periodic signal over
``s in [0, 1]``; a HyperEuler fitted to it by *trajectory fitting* is then more
accurate than Midpoint and RK4 at equal NFE in the 10-25 NFE range.

The paper fixes only the architecture of ``g`` (three hidden layers of 64) and the
loss; every other constant below is chosen here (see ``CONSTANTS`` and the .md).

Procedure (CPU, one torch thread, **float64** throughout: the states are 2-D, so
double precision costs nothing and keeps the 1e-7 reference far below every error
measured):

1. Signal ``beta(s) = (sin 2 pi s, cos 2 pi s)``, ``s in [0, 1]``. Model
   ``dz/ds = f(s, z)`` with ``f = GalerkinLinear(2, 32) -> tanh -> GalerkinLinear(32, 2)``,
   Fourier basis of period 1 with 5 terms (constant + 2 harmonics) for every weight
   and bias. Initial states: ``beta(0) = (0, 1)`` plus Gaussian perturbations
   (``SIGMA`` = 0.05) — a fresh batch of ``NODE_BATCH`` = 32 every iteration (the
   nominal state always included), so the field learns to pull nearby states onto
   the signal rather than only to pass through one trajectory. Loss: mean over the
   batch and over ``TRACK_POINTS`` = 100 uniform points of ``(0, 1]`` of
   ``||z(s) - beta(s)||^2`` (the integral loss by the rectangle rule). Solver:
   dopri5 at rtol = atol = 1e-6, backpropagation through the solver; Adam, lr 1e-2
   with cosine decay to 1e-4.
2. Reference: hyperode's dopri5 at rtol = atol = 1e-7 at every solver's mesh points.
3. HyperEuler ``g = MLPHyperNet(2, (64, 64, 64), "tanh", time_input=True)``: input
   ``[z, f(s, z), eps, s]`` (6 features), last layer zero-initialised (unfitted =
   Euler). Fitted by pure trajectory fitting (``FitConfig(residual_weight=0,
   trajectory_weight=1)``) on eight meshes at once, ``num_steps = (10, 12, ..., 24)``
   (one ``g`` for the whole target range; a ``g`` fitted on K = 10, 15, 20, 25 only
   was accurate on those meshes and several times worse on the K between them),
   against dopri5 at 1e-7; AdamW lr 5e-3, cosine to 1e-4, gradient clip 1, 800
   iterations; a new batch of 64 perturbed initial states (seed ``fit_seed``) every
   10 iterations.
4. Evaluation on 256 *other* perturbed initial states (seed ``EVAL_SEED``; train,
   fit and evaluation draws come from three different generators) plus the nominal
   state: Euler, Midpoint, RK4, HyperEuler and HyperEuler with ``g`` switched off
   (``hyper.disabled()``), over step counts giving 4-40 NFE. Error = mean over the
   mesh points ``s_1..s_K`` (and over samples and the two coordinates) of
   ``|z_k - z_ref(s_k)|``; terminal error = the same at ``s = 1`` only. NFE counts
   evaluations of ``f``; ``g`` evaluations are reported separately. MACs per sample:
   ``g`` by ``hyperode.metrics.MacCounter``; ``f`` analytically (the counter hooks
   ``nn.Linear``/conv modules only, and ``GalerkinLinear`` calls ``F.linear``).
   Wall time: median of repeated solves (after warm-up) of the 256-sample batch.

    .venv/bin/python benchmarks/hypersolvers_tracking.py            # ~5 min
    .venv/bin/python benchmarks/hypersolvers_tracking.py --quick    # < 30 s smoke run

Writes ``hypersolvers_tracking.json`` (config, versions, every number),
``hypersolvers_tracking.md`` (command, constants, table, targets) and
``hypersolvers_tracking.png`` (left: z(s) against beta(s); right: error vs NFE)
under ``--out`` (``*_quick.*`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from hyperode import solve
from hyperode.hyper import FitConfig, HyperEuler, MLPHyperNet, fit
from hyperode.metrics import MacCounter, mesh_abs_error, pareto_indices, time_call
from hyperode.nn import DepthVariantSequential, GalerkinLinear, NeuralODE, SolverConfig

ROOT = Path(__file__).resolve().parent.parent
NAME = "hypersolvers_tracking"
DTYPE = torch.float64

CONSTANTS = {
    "hidden": 32,                 # width of f's hidden layer
    "basis": "fourier",
    "n_terms": 5,                 # constant + 2 harmonics of period 1
    "sigma": 0.05,                # std of the initial-state perturbations around beta(0)
    "node_batch": 32,             # initial states per training iteration (nominal included)
    "track_points": 100,          # uniform points of (0, 1] in the tracking loss
    "train_tol": 1e-6,            # dopri5 rtol = atol while training the Neural ODE
    "train_iterations": 600,
    "train_lr": 1e-2,
    "train_lr_min": 1e-4,
    "ref_tol": 1e-7,              # dopri5 rtol = atol of every reference
    "g_hidden": (64, 64, 64),
    "g_activation": "tanh",       # smooth g: PReLU plateaued at a ~3x higher error floor
    "fit_steps": (10, 12, 14, 16, 18, 20, 22, 24),
    "fit_iterations": 800,
    "fit_lr": 5e-3,
    "fit_lr_min": 1e-4,
    "fit_batch": 64,
    "fit_new_batch_every": 10,
    "eval_batch": 256,            # perturbed evaluation states (+ the nominal one)
    "timing_repeats": 7,
    "train_seed": 0,
    "fit_seed": 1,
    "eval_seed": 2,
    "model_seed": 0,
}
QUICK = {"train_iterations": 40, "fit_iterations": 25, "fit_steps": (10, 20),
         "eval_batch": 32, "timing_repeats": 1}

# step counts K per method: NFE = K * stages (Euler/HyperEuler 1, Midpoint 2, RK4 4)
STEPS = {
    "euler": (4, 5, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 25, 28, 32, 36, 40),
    "midpoint": (2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 18, 20),
    "rk4": (1, 2, 3, 4, 5, 6, 7, 8, 9, 10),
}
STEPS["hypereuler"] = STEPS["euler"]
STEPS["hypereuler_g_off"] = STEPS["euler"]
QUICK_STEPS = {"euler": (5, 10, 20), "midpoint": (5, 10), "rk4": (3, 5),
               "hypereuler": (5, 10, 20), "hypereuler_g_off": (10,)}
STAGES = {"euler": 1, "midpoint": 2, "rk4": 4, "hypereuler": 1, "hypereuler_g_off": 1}
TARGET_NFE = (10, 25)
LABELS = {"euler": "Euler", "midpoint": "Midpoint", "rk4": "RK4", "hypereuler": "HyperEuler",
          "hypereuler_g_off": "HyperEuler, g off"}


# ---------------------------------------------------------------------- problem, model


def signal(s: Tensor) -> Tensor:
    """``beta(s) = (sin 2 pi s, cos 2 pi s)``: ``s`` ``[T]`` -> ``[T, 2]``."""
    return torch.stack([torch.sin(2 * math.pi * s), torch.cos(2 * math.pi * s)], dim=-1)


def build_field(cfg: dict) -> DepthVariantSequential:
    """``f(s, z)``: ``GalerkinLinear(2, h) -> tanh -> GalerkinLinear(h, 2)``, float64;
    ``z`` ``[B, 2]`` -> ``[B, 2]``."""
    torch.manual_seed(cfg["model_seed"])
    kw = dict(basis=cfg["basis"], n_terms=cfg["n_terms"], period=1.0)
    return DepthVariantSequential(GalerkinLinear(2, cfg["hidden"], **kw), nn.Tanh(),
                                  GalerkinLinear(cfg["hidden"], 2, **kw)).to(DTYPE)


def initial_states(n: int, sigma: float, generator: torch.Generator, *,
                   nominal: bool = True) -> Tensor:
    """``[n, 2]`` states ``beta(0) + sigma * N(0, I)``; row 0 is ``beta(0)`` exactly when
    ``nominal``."""
    z0 = signal(torch.zeros(1, dtype=DTYPE)).expand(n, 2).clone()
    z0 += sigma * torch.randn(n, 2, generator=generator, dtype=DTYPE)
    if nominal:
        z0[0] = signal(torch.zeros((), dtype=DTYPE))
    return z0


def track_times(cfg: dict) -> Tensor:
    """``[P + 1]`` times ``0, 1/P, ..., 1`` (``P = track_points``)."""
    return torch.linspace(0, 1, cfg["track_points"] + 1, dtype=DTYPE)


def tracking_loss(z: Tensor, t: Tensor) -> Tensor:
    """``mean_{k >= 1, b} ||z(s_k)[b] - beta(s_k)||^2``; ``z`` ``[T, B, 2]``."""
    return (z[1:] - signal(t[1:])[:, None]).pow(2).sum(-1).mean()


def train_node(field: nn.Module, cfg: dict) -> dict:
    """Fit ``field`` so that its trajectories track ``beta``; returns the history."""
    node = NeuralODE(field, solver=SolverConfig(method="dopri5", rtol=cfg["train_tol"],
                                                atol=cfg["train_tol"]))
    t = track_times(cfg)
    gen = torch.Generator().manual_seed(cfg["train_seed"])
    opt = torch.optim.Adam(field.parameters(), lr=cfg["train_lr"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg["train_iterations"],
                                                       eta_min=cfg["train_lr_min"])
    losses, nfe = [], []
    start = time.perf_counter()
    for _ in range(cfg["train_iterations"]):
        z0 = initial_states(cfg["node_batch"], cfg["sigma"], gen)
        loss = tracking_loss(node(z0, t), t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        nfe.append(node.nfe_forward)
    return {"loss": losses, "forward_nfe": nfe, "seconds": time.perf_counter() - start}


@torch.no_grad()
def tracking_report(field: nn.Module, z0: Tensor, cfg: dict) -> dict:
    """Tracking error of the trained model (dopri5 at ``ref_tol``): mean squared error
    over the track points (the training loss), max distance, for the nominal state
    (row 0) and the whole batch; also the nominal trajectory for the plot."""
    t = track_times(cfg)
    z = solve(field, z0, t, method="dopri5", rtol=cfg["ref_tol"], atol=cfg["ref_tol"]).ys
    d = (z - signal(t)[:, None]).norm(dim=-1)  # [T, B]
    return {"mse_nominal": float(d[1:, 0].pow(2).mean()), "max_dist_nominal": float(d[:, 0].max()),
            "mse_batch": float(d[1:].pow(2).mean()), "max_dist_batch": float(d.max()),
            "terminal_dist_nominal": float(d[-1, 0]),
            "trajectory": {"s": t.tolist(), "z_nominal": z[:, 0].tolist(),
                           "z_perturbed": z[:, 1:6].permute(1, 0, 2).tolist()}}


# ---------------------------------------------------------------------- hypersolver


def fit_batches(cfg: dict) -> Iterator[Tensor]:
    """Endless perturbed initial-state batches ``[fit_batch, 2]`` (fit generator)."""
    gen = torch.Generator().manual_seed(cfg["fit_seed"])
    while True:
        yield initial_states(cfg["fit_batch"], cfg["sigma"], gen)


def fit_hyper(field: nn.Module, cfg: dict) -> tuple[HyperEuler, dict]:
    """HyperEuler with ``g`` over ``[z, f, eps, s]``, fitted by trajectory fitting."""
    torch.manual_seed(cfg["model_seed"] + 1)
    g = MLPHyperNet(2, cfg["g_hidden"], cfg["g_activation"], time_input=True).to(DTYPE)
    hyper = HyperEuler(g)
    fcfg = FitConfig(iterations=cfg["fit_iterations"], num_steps=tuple(cfg["fit_steps"]),
                     residual_weight=0.0, trajectory_weight=1.0, lr=cfg["fit_lr"],
                     eta_min=cfg["fit_lr_min"], grad_clip=1.0,
                     first_batch_iterations=cfg["fit_new_batch_every"],
                     new_batch_every=cfg["fit_new_batch_every"], rtol=cfg["ref_tol"],
                     atol=cfg["ref_tol"])
    for p in field.parameters():
        p.requires_grad_(False)
    history = fit(hyper, field, fit_batches(cfg), fcfg, progress=False)
    h = history.as_dict()
    return hyper, {"config": h["config"], "loss_first": h["loss"][:10],
                   "loss_last": h["loss"][-10:], "loss_every_50": h["loss"][::50],
                   "batches": h["batches"], "reference_nfe": h["reference_nfe"],
                   "seconds": h["seconds"]}


# ---------------------------------------------------------------------- evaluation


def f_macs(field: nn.Module, batch: int) -> dict:
    """MACs of one ``f`` call by ``hyperode.metrics.MacCounter`` (which counts Galerkin
    layers: the products by the assembled weights per sample, plus assembling
    ``W(s) = sum_n W_n phi_n(s)`` and ``b(s)`` once per call): ``per_sample`` at
    ``batch`` samples per call, and the batch-independent ``per_sample_unbatched``
    (the products alone: the per-sample count of a very large batch)."""
    z = torch.zeros(batch, 2, dtype=DTYPE)
    with MacCounter(field) as one, torch.no_grad():
        field(torch.zeros((), dtype=DTYPE), z)
    with MacCounter(field) as two, torch.no_grad():
        field(torch.zeros((), dtype=DTYPE), torch.zeros(2 * batch, 2, dtype=DTYPE))
    products = (two.macs - one.macs) / batch  # the assembly cost cancels
    return {"per_sample": one.per_sample(batch), "per_sample_unbatched": products,
            "weight_assembly_per_call": one.macs - products * batch}


def method_for(name: str, hyper: HyperEuler):
    return {"euler": "euler", "midpoint": "midpoint", "rk4": "rk4", "hypereuler": hyper,
            "hypereuler_g_off": hyper}[name]


@torch.no_grad()
def run_solver(field: nn.Module, hyper: HyperEuler, name: str, z0: Tensor, k: int):
    """Solve on the uniform K-step mesh; returns ``(Solution, mesh [K + 1])``."""
    method = method_for(name, hyper)
    mesh = torch.linspace(0, 1, k + 1, dtype=torch.float64)
    if name == "hypereuler_g_off":
        with hyper.disabled():
            return solve(field, z0, mesh, method=method, options=dict(num_steps=k)), mesh
    return solve(field, z0, mesh, method=method, options=dict(num_steps=k)), mesh


@torch.no_grad()
def evaluate(field: nn.Module, hyper: HyperEuler, z0: Tensor, steps: dict, cfg: dict) -> list:
    """One row per (method, K): NFE of f and g, mesh/terminal error against dopri5 at
    ``ref_tol`` on the same mesh, MACs per sample, median wall time."""
    fm = f_macs(field, z0.shape[0])
    rows = []
    refs: dict[int, Tensor] = {}
    for name, ks in steps.items():
        for k in ks:
            sol, mesh = run_solver(field, hyper, name, z0, k)
            if k not in refs:
                refs[k] = solve(field, z0, mesh, method="dopri5", rtol=cfg["ref_tol"],
                                atol=cfg["ref_tol"]).ys
            err = mesh_abs_error(sol.ys, refs[k])  # [K + 1]; point 0 is exact
            with MacCounter(hyper.g) as cg:
                run_solver(field, hyper, name, z0, k)
            timing = time_call(run_solver, field, hyper, name, z0, k, warmup=1,
                               repeats=cfg["timing_repeats"])
            nfe, nfe_g = sol.stats.nfe, sol.stats.nfe_correction
            rows.append({
                "method": name, "steps": k, "nfe": nfe, "nfe_g": nfe_g,
                "fitted": name == "hypereuler" and k in cfg["fit_steps"],
                "mesh_error": float(err[1:].mean()), "terminal_error": float(err[-1]),
                "max_mesh_error": float(err.max()),
                "macs_f_per_sample": nfe * fm["per_sample"],
                "macs_g_per_sample": cg.per_sample(z0.shape[0]),
                "macs_per_sample": nfe * fm["per_sample"] + cg.per_sample(z0.shape[0]),
                "time_ms": timing.median * 1e3,
            })
    return rows


@torch.no_grad()
def sanity(field: nn.Module, hyper: HyperEuler, z0: Tensor, k: int = 10) -> dict:
    """HyperEuler with an unfitted (zero last layer) ``g`` and the fitted one switched
    off must both reproduce Euler exactly."""
    mesh = torch.linspace(0, 1, k + 1, dtype=torch.float64)
    euler = solve(field, z0, mesh, method="euler", options=dict(num_steps=k)).ys
    fresh = HyperEuler(MLPHyperNet(2, (64, 64, 64), time_input=True).to(DTYPE))
    unfitted = solve(field, z0, mesh, method=fresh, options=dict(num_steps=k))
    with hyper.disabled():
        off = solve(field, z0, mesh, method=hyper, options=dict(num_steps=k))
    return {"steps": k,
            "unfitted_max_abs_diff": float((unfitted.ys - euler).abs().max()),
            "unfitted_equals_euler": bool(torch.equal(unfitted.ys, euler)),
            "unfitted_nfe_g": unfitted.stats.nfe_correction,
            "g_off_max_abs_diff": float((off.ys - euler).abs().max()),
            "g_off_equals_euler": bool(torch.equal(off.ys, euler)),
            "g_off_nfe_g": off.stats.nfe_correction}


def judge(rows: list, key: str, lo: int = TARGET_NFE[0], hi: int = TARGET_NFE[1]) -> dict:
    """HyperEuler vs Midpoint / RK4 at every NFE in ``[lo, hi]`` where both have a point."""
    hyper = {r["nfe"]: r[key] for r in rows if r["method"] == "hypereuler"}
    out = {}
    for other in ("midpoint", "rk4"):
        comps = []
        for r in rows:
            if r["method"] == other and lo <= r["nfe"] <= hi and r["nfe"] in hyper:
                comps.append({"nfe": r["nfe"], "hypereuler": hyper[r["nfe"]], other: r[key],
                              "ratio": r[key] / max(hyper[r["nfe"]], 1e-300)})
        out[other] = {"comparisons": comps, "met": bool(comps) and all(
            c["hypereuler"] < c[other] for c in comps),
            "lost_at_nfe": [c["nfe"] for c in comps if c["hypereuler"] >= c[other]]}
    out["met"] = out["midpoint"]["met"] and out["rk4"]["met"]
    return out


def fronts(rows: list, key: str) -> list:
    """Methods and step counts on the error-vs-NFE Pareto front (all methods pooled,
    the g-off duplicate of Euler excluded)."""
    pool = [r for r in rows if r["method"] != "hypereuler_g_off"]
    idx = pareto_indices([(r["nfe"], r[key]) for r in pool])
    return [(pool[i]["method"], pool[i]["steps"], pool[i]["nfe"]) for i in idx]


# ---------------------------------------------------------------------- outputs


def plot(track: dict, rows: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.4))
    s = np.array(track["trajectory"]["s"])
    z = np.array(track["trajectory"]["z_nominal"])
    beta = np.stack([np.sin(2 * np.pi * s), np.cos(2 * np.pi * s)], -1)
    for i, c in enumerate(("C0", "C1")):
        ax1.plot(s, beta[:, i], "--", color="k", lw=1.0,
                 label="beta(s)" if i == 0 else None)
        ax1.plot(s, z[:, i], color=c, lw=1.8, label=f"z_{i + 1}(s), z(0) = beta(0)")
        for j, zp in enumerate(track["trajectory"]["z_perturbed"]):
            zp = np.array(zp)
            ax1.plot(s, zp[:, i], color=c, lw=0.6, alpha=0.5,
                     label="perturbed z(0)" if i == 0 and j == 0 else None)
    ax1.set(xlabel="depth s", ylabel="state", title="tracking beta(s) = (sin 2πs, cos 2πs)")
    ax1.legend(fontsize=8, loc="lower left")
    styles = {"euler": ("C3", "s--"), "midpoint": ("C2", "^--"), "rk4": ("C4", "D--"),
              "hypereuler": ("C0", "o-")}
    for name, (c, st) in styles.items():
        pts = [(r["nfe"], r["mesh_error"]) for r in rows if r["method"] == name]
        ax2.plot(*zip(*pts), st, color=c, label=LABELS[name], ms=4)
    ax2.axvspan(*TARGET_NFE, color="grey", alpha=0.12, label="target range 10-25 NFE")
    ax2.set(xscale="log", yscale="log", xlabel="NFE (evaluations of f)",
            ylabel="mean |z - z_ref| over mesh points",
            title="error vs NFE (dopri5 1e-7 reference)")
    ax2.grid(True, which="both", alpha=0.3)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def table(rows: list) -> str:
    out = ["| method | K | NFE f | NFE g | mesh error | terminal error | MACs/sample (f + g) "
           "| ms/solve | g fitted on K |", "|---|---:|---:|---:|---:|---:|---:|---:|:---:|"]
    order = ("euler", "midpoint", "rk4", "hypereuler", "hypereuler_g_off")
    for name in order:
        for r in (r for r in rows if r["method"] == name):
            bold = "**" if name == "hypereuler" else ""
            out.append(f"| {bold}{LABELS[name]}{bold} | {r['steps']} | {r['nfe']} | "
                       f"{r['nfe_g']} | {r['mesh_error']:.3e} | {r['terminal_error']:.3e} | "
                       f"{r['macs_f_per_sample']:,.0f} + {r['macs_g_per_sample']:,.0f} | "
                       f"{r['time_ms']:.2f} | {'yes' if r['fitted'] else ''} |")
    return "\n".join(out)


def verdict_lines(verdicts: dict) -> list:
    lines = []
    for key, label in (("mesh_error", "mesh error"), ("terminal_error", "terminal error")):
        v = verdicts[key]
        for other in ("midpoint", "rk4"):
            o = v[other]
            ratios = ", ".join(f"{c['nfe']}: {c['ratio']:.1f}x" for c in o["comparisons"])
            state = "met" if o["met"] else "NOT met"
            lost = "" if o["met"] else f" (HyperEuler not lower at NFE {o['lost_at_nfe']})"
            lines.append(f"- HyperEuler below {LABELS[other]} in {label} at equal NFE over "
                         f"{TARGET_NFE[0]}-{TARGET_NFE[1]} NFE: **{state}**{lost}; "
                         f"{LABELS[other]} / HyperEuler by NFE: {ratios or 'no common NFE'}.")
    return lines


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run (< 30 s)")
    p.add_argument("--train-iterations", type=int, default=None)
    p.add_argument("--fit-iterations", type=int, default=None)
    p.add_argument("--out", default=str(ROOT / "benchmarks/results"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    cfg = dict(CONSTANTS)
    if args.quick:
        cfg.update(QUICK)
    if args.train_iterations:
        cfg["train_iterations"] = args.train_iterations
    if args.fit_iterations:
        cfg["fit_iterations"] = args.fit_iterations
    steps = QUICK_STEPS if args.quick else STEPS
    name = NAME + ("_quick" if args.quick else "")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    timings = {}

    field = build_field(cfg)
    train_hist = train_node(field, cfg)
    timings["train_s"] = train_hist["seconds"]
    eval_z0 = initial_states(cfg["eval_batch"] + 1, cfg["sigma"],
                             torch.Generator().manual_seed(cfg["eval_seed"]))
    track = tracking_report(field, eval_z0, cfg)

    hyper, fit_info = fit_hyper(field, cfg)
    timings["fit_s"] = fit_info["seconds"]

    t0 = time.perf_counter()
    rows = evaluate(field, hyper, eval_z0, steps, cfg)
    checks = sanity(field, hyper, eval_z0)
    timings["evaluate_s"] = time.perf_counter() - t0
    verdicts = {key: judge(rows, key) for key in ("mesh_error", "terminal_error")}
    front = {key: fronts(rows, key) for key in ("mesh_error", "terminal_error")}
    g_macs = macs_g_call(hyper)
    timings["total_s"] = time.perf_counter() - start

    command = "python benchmarks/hypersolvers_tracking.py" + (
        " " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    data = {
        "command": command, "quick": args.quick, "config": {
            **{k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()},
            "dtype": "float64", "signal": "beta(s) = (sin 2 pi s, cos 2 pi s), s in [0, 1]",
            "field": f"GalerkinLinear(2, {cfg['hidden']}) -> tanh -> "
                     f"GalerkinLinear({cfg['hidden']}, 2), {cfg['basis']} basis, "
                     f"{cfg['n_terms']} terms, period 1",
            "g": f"MLPHyperNet(2, {tuple(cfg['g_hidden'])}, {cfg['g_activation']!r}, "
                 f"time_input=True): input [z, f, eps, s]",
            "steps": {k: list(v) for k, v in steps.items()},
            "target_nfe": list(TARGET_NFE)},
        "training": {"loss_first": train_hist["loss"][:5], "loss_last": train_hist["loss"][-5:],
                     "loss_every_25": train_hist["loss"][::25],
                     "forward_nfe_last": train_hist["forward_nfe"][-1],
                     "seconds": train_hist["seconds"]},
        "tracking": track, "fit": fit_info,
        "macs": {"f": f_macs(field, cfg["eval_batch"] + 1), "g_per_sample_per_call": g_macs,
                 "f_counted_by": "hyperode.metrics.MacCounter (Galerkin layers included)",
                 "g_counted_by": "hyperode.metrics.MacCounter"},
        "results": rows, "sanity": checks, "targets": verdicts, "pareto_front": front,
        "timings_s": timings,
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "numpy": np.__version__},
        "threads": torch.get_num_threads(),
    }
    (out / f"{name}.json").write_text(json.dumps(data, indent=2))
    plot(track, rows, out / f"{name}.png")
    (out / f"{name}.md").write_text(markdown(data, cfg, name))
    print(markdown(data, cfg, name))
    return data


def macs_g_call(hyper: HyperEuler) -> float:
    """MACs per sample of one ``g`` call (by the layer hooks)."""
    z = torch.zeros(4, 2, dtype=DTYPE)
    one = torch.ones((), dtype=DTYPE)
    with MacCounter(hyper.g) as c:
        hyper.g(one, one, z, z)
    return c.per_sample(4)


def markdown(data: dict, cfg: dict, name: str) -> str:
    tr, fi, tm = data["tracking"], data["fit"], data["timings_s"]
    v = data["targets"]
    met = v["mesh_error"]["met"]
    fm = data["macs"]["f"]
    title = "# Hypersolver trajectory tracking, Galerkin Neural ODE (paper Fig. 8)"
    md = [title + (" — QUICK (smoke run)" if data["quick"] else ""), "",
          f"Command: `{data['command']}` (CPU, 1 torch thread, float64); "
          f"{tm['total_s']:.0f} s in all (train {tm['train_s']:.0f} s, fit {tm['fit_s']:.0f} s, "
          f"evaluation {tm['evaluate_s']:.0f} s).", "",
          "## Setup and the constants chosen (the paper gives only the loss and g's widths)",
          "",
          f"- Signal beta(s) = (sin 2πs, cos 2πs) on s in [0, 1]; z(0) = beta(0) = (0, 1) "
          f"plus N(0, {cfg['sigma']}^2 I) perturbations (a fresh batch of "
          f"{cfg['node_batch']} per iteration, nominal state included), so that the field "
          f"pulls neighbouring states onto the signal instead of being fitted to one curve.",
          f"- f = {data['config']['field']}: every weight and bias is "
          f"Σ_n coeff_n φ_n(s) with φ = (1, cos 2πs, sin 2πs, cos 4πs, sin 4πs).",
          f"- Training: mean over {cfg['track_points']} uniform points of (0, 1] of "
          f"||z(s) - beta(s)||^2 (rectangle rule for the integral loss), dopri5 at "
          f"{cfg['train_tol']:g} with backpropagation through the solver, Adam "
          f"{cfg['train_lr']:g} cosine to {cfg['train_lr_min']:g}, "
          f"{cfg['train_iterations']} iterations (last forward NFE "
          f"{data['training']['forward_nfe_last']}).",
          f"- Reference: dopri5 at rtol = atol = {cfg['ref_tol']:g} on every mesh.",
          f"- g = {data['config']['g']} (6 inputs, last layer zero-initialised). Trajectory "
          f"fitting on the meshes K = {tuple(cfg['fit_steps'])} at once (one g for the "
          f"target range), AdamW {cfg['fit_lr']:g} cosine to {cfg['fit_lr_min']:g}, clip 1, "
          f"{cfg['fit_iterations']} iterations, a new batch of {cfg['fit_batch']} perturbed "
          f"states every {cfg['fit_new_batch_every']} iterations (seed {cfg['fit_seed']}).",
          f"- Evaluation: {cfg['eval_batch']} perturbed states from a separate generator "
          f"(seed {cfg['eval_seed']}; training used seed {cfg['train_seed']}, fitting seed "
          f"{cfg['fit_seed']}) plus the nominal state. Mesh error = mean over s_1..s_K, "
          f"samples and both coordinates of |z_k - z_ref(s_k)|; terminal error = the same "
          f"at s = 1.", "",
          "## Tracking", "",
          f"Trained model against beta (dopri5 at {cfg['ref_tol']:g}): nominal z(0) — mean "
          f"squared distance {tr['mse_nominal']:.2e}, max distance "
          f"{tr['max_dist_nominal']:.3f}, at s = 1 {tr['terminal_dist_nominal']:.3f}; over "
          f"the {cfg['eval_batch'] + 1} evaluation states — mean squared distance "
          f"{tr['mse_batch']:.2e}, max {tr['max_dist_batch']:.3f} (the perturbation itself "
          f"is ~{cfg['sigma'] * math.sqrt(2):.2f} at s = 0). Training loss "
          f"{data['training']['loss_first'][0]:.3f} -> {data['training']['loss_last'][-1]:.2e}.",
          "", f"Hypersolver fit: trajectory loss {fi['loss_first'][0]:.3g} -> "
          f"{fi['loss_last'][-1]:.3g} ({fi['batches']} batches, {fi['seconds']:.0f} s).", "",
          "## Error vs NFE", "",
          f"MACs per sample (MacCounter): f = {fm['per_sample']:,.1f} per call at this batch "
          f"({fm['per_sample_unbatched']:,.0f} for the products by W(s), plus "
          f"{fm['weight_assembly_per_call']:,.0f} per call, shared by the batch, to assemble "
          f"W(s) and b(s)), g = {data['macs']['g_per_sample_per_call']:,.0f}"
          f" per call (MacCounter). ms/solve: median of {cfg['timing_repeats']} solves of the "
          f"{cfg['eval_batch'] + 1}-state batch after one warm-up.", "",
          table(data["results"]), "",
          "Sanity: HyperEuler with an unfitted g "
          f"{'equals' if data['sanity']['unfitted_equals_euler'] else 'DIFFERS FROM'} Euler "
          f"bit for bit (max |diff| {data['sanity']['unfitted_max_abs_diff']:.1e}); the fitted "
          f"g switched off {'equals' if data['sanity']['g_off_equals_euler'] else 'DIFFERS FROM'}"
          f" Euler (max |diff| {data['sanity']['g_off_max_abs_diff']:.1e}, "
          f"{data['sanity']['g_off_nfe_g']} g calls).", "",
          "Pareto front (mesh error vs NFE of f): "
          + ", ".join(f"{LABELS[m]} K={k} ({n})" for m, k, n in data["pareto_front"]["mesh_error"])
          + ".", "",
          "## Targets (generated from the numbers above)", "",
          f"Overall (mesh error, the paper's global error on the mesh): "
          f"**{'met' if met else 'NOT met'}**.", "",
          *verdict_lines(v), "", *caveats(data, cfg), "",
          f"Plot: `{name}.png` (left: z(s) against beta(s); right: mesh error vs NFE).", ""]
    return "\n".join(md)


def caveats(data: dict, cfg: dict) -> list:
    rows = data["results"]
    fm = data["macs"]["f"]["per_sample"]
    gm = data["macs"]["g_per_sample_per_call"]
    hyp = {r["steps"]: r for r in rows if r["method"] == "hypereuler"}
    eul = {r["steps"]: r for r in rows if r["method"] == "euler"}
    gains = ", ".join(f"K={k}: {eul[k]['mesh_error'] / max(hyp[k]['mesh_error'], 1e-300):.0f}x"
                      for k in sorted(hyp) if k in eul)
    outside = [k for k in sorted(hyp) if not TARGET_NFE[0] <= k <= TARGET_NFE[1]]
    lines = ["Caveats:", "",
             f"- Cost beyond NFE: one g call is {gm:,.0f} MACs per sample against {fm:,.1f} for "
             f"f ({gm / fm:.0f}x), so in MACs (and in wall time for this tiny f) HyperEuler "
             f"is far from the front; the paper's Fig. 8 compares NFE only. The target is "
             f"judged in NFE of f, as in the paper; g calls are listed separately.",
             f"- HyperEuler over Euler, mesh error, by K: {gains}.",
             f"- g was fitted on K = {tuple(cfg['fit_steps'])}; K = {outside} lie outside "
             f"the fitted step sizes (extrapolation in eps).",
             "- Choices made while setting this up (numbers from those trial runs, not "
             "regenerated here): a PReLU g (fitted on K = 10, 15, 20, 25, 1200 iterations) "
             "levelled off at a mesh error of ~2.5e-3 for every K >= 18 and lost to RK4 at "
             "24 NFE (1.8e-3); a tanh g on the same four meshes reached 1.5-2.6e-3 on them "
             "but 4e-3-2e-2 at K = 12, 24 (trajectory fitting lets it tune to the exact "
             "meshes it sees), hence tanh and every even K of the target range.",
             "- One model, one seed, one fit: no error bars."]
    return lines


if __name__ == "__main__":
    main()
