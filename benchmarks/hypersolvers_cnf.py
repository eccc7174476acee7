"""HyperHeun CNF sampling at 2 NFE: the hypersolver paper's Fig. 7 claim on 2-D densities.

Poli, Massaroli et al. (NeurIPS 2020), Sec. 5.3 / Fig. 7: a HyperHeun with a single
step (K = 1, eps = 1; two evaluations of the flow ``f`` plus one of ``g``) draws CNF
samples of about the quality of dopri5, while plain Heun at the same 2 NFE does not.

Procedure (CPU, one torch thread, float32), per density:

1. A 2-D CNF trained by the pipeline's own ``train(TrainConfig(task="cnf2d", ...))``
   with the task's defaults (cnf_mlp hidden 64, exact trace, dopri5 at 1e-4, AdamW
   3e-3, batch 256, 1500 iterations; ``--train-iters`` overrides the count). An existing run folder
   ``<runs-dir>/<density>/model.safetensors`` is reused as is.
2. A HyperHeun fitted on the **sampling direction**, exactly as ``CNFModel.sample``
   integrates: ``z0 ~ N(0, I)`` at ``t = 0`` pushed to the data at ``t = 1`` through the
   flow network alone (``model.cnf.net``; state ``z`` only, no log-density: sampling
   does not need the trace, and the NFE then counts only ``f``). ``g`` =
   ``MLPHyperNet(2, (64, 64), "prelu")``: ``Linear(5 -> 64) -> PReLU -> Linear(64 -> 64)
   -> PReLU -> Linear(64 -> 2)`` over ``[z, f(z), eps]``, last layer zero-initialised
   (unfitted = plain Heun). Fitted with ``hyperode.hyper.fit`` at ``num_steps=1``
   (residual fitting; with K = 1 it equals trajectory fitting up to the ``eps**3 = 1``
   scaling) against dopri5 at rtol = atol = ``FIT_TOL`` (1e-6), on 256 *fresh* prior
   samples every iteration (``first_batch_iterations = new_batch_every = 1``);
   AdamW 5e-3, wd 1e-6, cosine to 5e-4, clip 0.5 (the REPRODUCTION.md recipe),
   ``--fit-iters`` iterations (default 1000; the recipe's 3000 did not fit the budget).
3. 10 000 samples from one fixed batch of prior draws by dopri5 at rtol = atol = 1e-5
   (``CNF_TOL``, the reference), HyperHeun K=1 and Heun K=1. Metrics:

   - ``MMD`` (square root of the biased V-statistic MMD^2, a sum of Gaussian kernels
     with bandwidths ``BANDWIDTHS`` x the test data's std) between 2000 samples of each
     method and 2000 held-out *test* points; the floor row is 2000 *training* points
     against the same test points (sampling noise alone).
   - ``MMD to dopri5``: the same between each method's samples and dopri5's.
   - ``terminal error``: mean ``||x_method - x_dopri5||`` (same prior draws).
   - ``log-lik``: mean and median ``model.log_prob`` of 2000 samples under the dopri5 flow
     (dopri5 at 1e-5, exact trace); higher is better.
   - ``time``: wall time for 10 000 samples, median of ``--repeats`` runs; NFE of ``f``.

Targets (judged and written to the .md), with "sample quality" measured two ways:

- solver-isolating (primary): MMD to dopri5's samples; dopri5's own value (its samples
  from *other* prior draws) is the floor. (a) HyperHeun <= 1.10 x that floor on every
  density, (b) plain Heun >= 1.5 x it (clearly worse);
- against held-out data (secondary; includes the model's own error, so it is blunt
  when the trained flow is poor): the same ratios of the MMD to the test data;
- (c) HyperHeun samples 10k points >= 20x faster than dopri5 (best of ``solve`` and the
  bookkeeping-free ``FixedGridSolve``).

    .venv/bin/python benchmarks/hypersolvers_cnf.py                  # ~15 min, 4 densities
    .venv/bin/python benchmarks/hypersolvers_cnf.py --quick          # smoke run
    .venv/bin/python benchmarks/hypersolvers_cnf.py --densities pinwheel rings

Writes ``hypersolvers_cnf.json`` (config, every number), ``hypersolvers_cnf.md``
(tables, command, targets) and ``hypersolvers_cnf.png`` (samples per density: data,
dopri5, HyperHeun, Heun) under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from hyperode import solve
from hyperode.hyper import FixedGridSolve, HyperHeun, MLPHyperNet, fit
from hyperode.hyper.fitting import FitConfig
from hyperode.nn import SolverConfig

ROOT = Path(__file__).resolve().parent.parent
NAME = "hypersolvers_cnf"
DEFAULT_DENSITIES = ("pinwheel", "rings", "checkerboard", "circles_curves")
REF_TOL = 1e-5
FIT_TOL = 1e-6
BANDWIDTHS = (0.05, 0.2, 0.5)
N_METRIC = 2000
FIT_BATCH = 256
METHODS = ("dopri5", "HyperHeun", "Heun")


# ---------------------------------------------------------------------- stages


def ensure_trained(run_dir: Path, density: str, iterations: int) -> bool:
    """Reuse ``run_dir`` when it holds ``model.safetensors``; else train it. Returns
    whether it was reused."""
    if (run_dir / "model.safetensors").is_file():
        return True
    from hyperode.experiments.config import TrainConfig, resolve_config
    from hyperode.experiments.train import train

    print(f"[{density}] training the cnf2d model ({iterations} iterations) into {run_dir}",
          flush=True)
    train(resolve_config(TrainConfig(task="cnf2d", density=density, iterations=iterations,
                                     out=str(run_dir), quiet=True, plots=False,
                                     device="cpu", threads=1)))
    return False


def prior_stream(seed: int, batch: int = FIT_BATCH):
    """Endless fresh ``N(0, I)`` batches (a new batch every fitting iteration)."""
    gen = torch.Generator().manual_seed(seed)
    while True:
        yield torch.randn(batch, 2, generator=gen)


def fit_hyperheun(net, run_dir: Path, iterations: int, seed: int, refit: bool):
    """HyperHeun K=1 on ``net`` over t: 0 -> 1; reuses ``hyperheun_g.pt`` when it was
    fitted with the same number of iterations (unless ``refit``)."""
    torch.manual_seed(seed)
    hyper = HyperHeun(MLPHyperNet(2, (64, 64), "prelu"))
    path, meta_path = run_dir / "hyperheun_g.pt", run_dir / "hyperheun_g.json"
    if not refit and path.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("iterations") == iterations:
            hyper.g.load_state_dict(torch.load(path, weights_only=True))
            return hyper, meta
    cfg = FitConfig(iterations=iterations, t_span=(0.0, 1.0), num_steps=1, lr=5e-3,
                    weight_decay=1e-6, eta_min=5e-4, grad_clip=0.5,
                    first_batch_iterations=1, new_batch_every=1, rtol=FIT_TOL,
                    atol=FIT_TOL)
    hist = fit(hyper, net, prior_stream(seed + 1), cfg, progress=False)
    k = max(1, len(hist.loss) // 20)
    meta = {"iterations": iterations, "seconds": hist.seconds, "batches": hist.batches,
            "reference_nfe": hist.reference_nfe,
            "loss_first": statistics.fmean(hist.loss[:k]),
            "loss_last": statistics.fmean(hist.loss[-k:])}
    torch.save(hyper.g.state_dict(), path)
    meta_path.write_text(json.dumps(meta, indent=2))
    return hyper, meta


@torch.no_grad()
def sample(net, z0, method, hyper=None):
    """Push ``z0`` from t=0 to t=1; returns (samples, nfe)."""
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    if method == "dopri5":
        sol = solve(net, z0, t, method="dopri5", rtol=REF_TOL, atol=REF_TOL)
    elif method == "HyperHeun":
        sol = solve(net, z0, t, method=hyper, options=dict(num_steps=1))
    else:
        sol = solve(net, z0, t, method="heun", options=dict(num_steps=1))
    return sol.ys[-1], int(sol.stats.nfe)


def mmd(x: torch.Tensor, y: torch.Tensor, scale: float) -> float:
    """sqrt of the biased MMD^2 with a sum of Gaussian kernels (bandwidths x scale)."""
    x, y = x.double(), y.double()
    xx, yy, xy = torch.cdist(x, x) ** 2, torch.cdist(y, y) ** 2, torch.cdist(x, y) ** 2
    total = 0.0
    for b in BANDWIDTHS:
        h = 2 * (b * scale) ** 2
        total += float((-xx / h).exp().mean() + (-yy / h).exp().mean()
                       - 2 * (-xy / h).exp().mean())
    return max(total, 0.0) ** 0.5


def evaluate(model, split, hyper, n_samples: int, repeats: int, seed: int) -> dict:
    net = model.cnf.net
    gen = torch.Generator().manual_seed(seed)
    z0 = torch.randn(n_samples, 2, generator=gen)
    test = split.x_test[:N_METRIC].float()
    train_sub = split.x_train[:N_METRIC].float()
    scale = float(test.std())
    samples, out = {}, {"floor_mmd_train_vs_test": mmd(train_sub, test, scale)}
    model.solver = SolverConfig.adaptive("dopri5", rtol=REF_TOL, atol=REF_TOL)
    for m in METHODS:
        x, nfe = sample(net, z0, m, hyper)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            sample(net, z0, m, hyper)
            times.append(time.perf_counter() - t0)
        samples[m] = x
        finite = bool(torch.isfinite(x).all())
        with torch.no_grad():
            ll = model.log_prob(x[:N_METRIC]) if finite else torch.tensor(float("nan"))
        out[m] = {"nfe": nfe, "nfe_g": 1 if m == "HyperHeun" else 0,
                  "time_s": statistics.median(times), "times_s": times,
                  "mmd_test": mmd(x[:N_METRIC], test, scale),
                  "loglik_mean": float(ll.mean()), "loglik_median": float(ll.median()),
                  "finite": finite}
    # dopri5's comparison set: its samples from *other* prior draws when there are enough
    other = samples["dopri5"][N_METRIC:2 * N_METRIC]
    if len(other) < N_METRIC:
        other = samples["dopri5"][-N_METRIC:]
    for m in METHODS:
        out[m]["mmd_dopri5"] = mmd(samples[m][:N_METRIC], other, scale)
        out[m]["terminal_error"] = float((samples[m] - samples["dopri5"]).norm(dim=1).mean())
        out[m]["speedup"] = out["dopri5"]["time_s"] / out[m]["time_s"]
    # the same HyperHeun solve without solve()'s bookkeeping (FixedGridSolve, eager)
    fast = FixedGridSolve(net, hyper, (0.0, 1.0), 1)
    with torch.no_grad():
        xf = fast(z0)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fast(z0)
            times.append(time.perf_counter() - t0)
    out["HyperHeun"]["time_fixedgrid_s"] = statistics.median(times)
    out["HyperHeun"]["speedup_fixedgrid"] = out["dopri5"]["time_s"] / statistics.median(times)
    out["HyperHeun"]["fixedgrid_max_abs_diff"] = float((xf - samples["HyperHeun"]).abs().max())
    return out, samples, test


# ---------------------------------------------------------------------- reporting


def targets(results: dict) -> dict:
    rows = {}
    for d, r in results.items():
        e = r["eval"]
        ref = e["dopri5"]["mmd_test"]
        floor = e["dopri5"]["mmd_dopri5"]
        rows[d] = {"hyper_ratio": e["HyperHeun"]["mmd_test"] / ref,
                   "heun_ratio": e["Heun"]["mmd_test"] / ref,
                   "hyper_ratio_ref": e["HyperHeun"]["mmd_dopri5"] / floor,
                   "heun_ratio_ref": e["Heun"]["mmd_dopri5"] / floor,
                   "speedup": e["HyperHeun"]["speedup"],
                   "speedup_fixedgrid": e["HyperHeun"]["speedup_fixedgrid"]}
    return {"per_density": rows,
            "hyper_within_10pct": all(v["hyper_ratio_ref"] <= 1.10 for v in rows.values()),
            "heun_clearly_worse": all(v["heun_ratio_ref"] >= 1.5 for v in rows.values()),
            "hyper_within_10pct_data": all(v["hyper_ratio"] <= 1.10 for v in rows.values()),
            "heun_clearly_worse_data": all(v["heun_ratio"] >= 1.5 for v in rows.values()),
            "speedup_20x": all(max(v["speedup"], v["speedup_fixedgrid"]) >= 20
                               for v in rows.values())}


def markdown(payload: dict) -> str:
    res, tg = payload["results"], payload["targets"]
    lines = [f"# CNF sampling with HyperHeun at 2 NFE ({NAME})", "",
             f"Command: `{payload['command']}`", "",
             "Paper claim (Poli et al. 2020, Fig. 7): HyperHeun with K = 1 (2 NFE of f + 1 of "
             "g) samples 2-D CNFs at about dopri5's quality; plain Heun at 2 NFE does not.",
             "", "Setup: " + payload["setup"], "",
             "## Sample quality and speed (10 000 samples; metrics on 2000)", "",
             "MMD: sqrt of biased MMD^2, Gaussian kernels with bandwidths "
             f"{BANDWIDTHS} x test-data std. Lower is better. log-lik: mean log p(x) of the "
             "samples under the dopri5 flow (higher = samples in denser regions).", ""]
    for d, r in res.items():
        lines += [f"### {d}", "",
                  f"Model: {r['run']['dir']} ({'reused' if r['run']['reused'] else 'trained'}"
                  f"); HyperHeun fit: {r['fit']['iterations']} it, "
                  f"{r['fit']['seconds']:.0f} s, residual loss "
                  f"{r['fit']['loss_first']:.3g} -> {r['fit']['loss_last']:.3g}. "
                  f"MMD floor (train vs test data): {r['eval']['floor_mmd_train_vs_test']:.4f}.",
                  "",
                  "| method | NFE f (+g) | MMD to test data | / dopri5 | MMD to dopri5 "
                  "samples | mean terminal error | log-lik mean / median | time 10k (s) | "
                  "speed-up |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        ref = r["eval"]["dopri5"]["mmd_test"]
        for m in METHODS:
            e = r["eval"][m]
            nfe = f"{e['nfe']}" + (f" (+{e['nfe_g']})" if e["nfe_g"] else "")
            lines.append(f"| {m} | {nfe} | {e['mmd_test']:.4f} | {e['mmd_test'] / ref:.2f}x | "
                         f"{e['mmd_dopri5']:.4f} | {e['terminal_error']:.4f} | "
                         f"{e['loglik_mean']:.3f} / {e['loglik_median']:.3f} | "
                         f"{e['time_s']:.4f} | {e['speedup']:.1f}x |")
        lines.append("")
    yes = {True: "MET", False: "NOT MET"}
    pd = tg["per_density"]
    lines += ["## Targets", "",
              "Ratios: MMD to dopri5's samples / dopri5's own floor (primary), and MMD to "
              "test data / dopri5's (secondary).", "",
              "| density | HyperHeun vs ref (<= 1.10) | Heun vs ref (>= 1.5) | "
              "HyperHeun vs data (<= 1.10) | Heun vs data (>= 1.5) | "
              "HyperHeun speed-up, solve / FixedGridSolve (>= 20x) |",
              "|---|---:|---:|---:|---:|---:|"]
    for d, v in pd.items():
        lines.append(f"| {d} | {v['hyper_ratio_ref']:.2f} | {v['heun_ratio_ref']:.2f} | "
                     f"{v['hyper_ratio']:.2f} | {v['heun_ratio']:.2f} | "
                     f"{v['speedup']:.1f}x / {v['speedup_fixedgrid']:.1f}x |")
    lines += ["",
              f"- HyperHeun within 10% of dopri5 on every density: "
              f"**{yes[tg['hyper_within_10pct']]}** (vs data: "
              f"{yes[tg['hyper_within_10pct_data']]})",
              f"- plain Heun at 2 NFE clearly worse (>= 1.5x) on every density: "
              f"**{yes[tg['heun_clearly_worse']]}** (vs data: "
              f"{yes[tg['heun_clearly_worse_data']]})",
              f"- HyperHeun sampling >= 20x faster than dopri5 on every density: "
              f"**{yes[tg['speedup_20x']]}**", "",
              f"Figure: `{NAME}.png`. Total wall time {payload['seconds']:.0f} s.", "",
              "## Caveats", ""]
    for d, r in res.items():
        e = r["eval"]
        fit_ratio = e["dopri5"]["mmd_test"] / e["floor_mmd_train_vs_test"]
        poor = (" - it has not learned the density, so this row tests a near-Gaussian, "
                "easy flow") if fit_ratio > 1.6 else ""
        lines.append(f"- {d}: the trained flow's own fit (dopri5 MMD to test / data floor) "
                     f"is {fit_ratio:.2f}x{poor}; "
                     f"dopri5 needed {e['dopri5']['nfe']} NFE, so the speed-up is bounded "
                     f"by about {e['dopri5']['nfe'] / 2:.0f}x.")
    lines += ["- Mean log-likelihoods are dominated by a few off-support samples; the "
              "median is the robust one.", ""]
    return "\n".join(lines)


def plot(all_samples: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = ("data", *METHODS)
    fig, axes = plt.subplots(len(all_samples), 4, figsize=(12, 3 * len(all_samples)),
                             squeeze=False)
    for i, (d, s) in enumerate(all_samples.items()):
        lim = float(s["data"].abs().max()) * 1.1
        for j, c in enumerate(cols):
            x = s[c].numpy()
            ax = axes[i, j]
            ax.hist2d(x[:, 0], x[:, 1], bins=150, range=[[-lim, lim], [-lim, lim]],
                      cmap="inferno")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title({"data": "data (test)", "dopri5": "dopri5 (ref)",
                              "HyperHeun": "HyperHeun K=1 (2 NFE)",
                              "Heun": "Heun K=1 (2 NFE)"}[c])
            if j == 0:
                ax.set_ylabel(d)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------- main


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--densities", nargs="+", default=list(DEFAULT_DENSITIES))
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 150 train it, 100 fit it, 2000 samples, 2 repeats "
                        "(separate run folder)")
    p.add_argument("--train-iters", type=int, default=None)
    p.add_argument("--fit-iters", type=int, default=None)
    p.add_argument("--n-samples", type=int, default=None)
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--runs-dir", default=None)
    p.add_argument("--refit", action="store_true", help="refit g even if saved")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    q = a.quick
    train_iters = a.train_iters or (150 if q else 1500)
    fit_iters = a.fit_iters or (100 if q else 1000)
    n_samples = a.n_samples or (4000 if q else 10_000)
    repeats = a.repeats or (2 if q else 5)
    runs_dir = Path(a.runs_dir or ROOT / "runs" / (NAME + ("-quick" if q else "")))
    from hyperode.experiments.trained import load_run

    start = time.perf_counter()
    results, all_samples = {}, {}
    for d in a.densities:
        run_dir = runs_dir / d
        reused = ensure_trained(run_dir, d, train_iters)
        loaded = load_run(run_dir, device="cpu")
        model = loaded.model
        for prm in model.parameters():
            prm.requires_grad_(False)
        print(f"[{d}] fitting HyperHeun ({fit_iters} it)", flush=True)
        hyper, meta = fit_hyperheun(model.cnf.net, run_dir, fit_iters, a.seed, a.refit)
        hyper.eval()
        ev, samples, test = evaluate(model, loaded.split, hyper, n_samples, repeats, a.seed)
        results[d] = {"run": {"dir": str(run_dir.relative_to(ROOT)) if run_dir.is_relative_to(
            ROOT) else str(run_dir), "reused": reused,
            "train_iterations": loaded.config.iterations}, "fit": meta, "eval": ev}
        all_samples[d] = {"data": test, **{m: samples[m][:N_METRIC] for m in METHODS}}
        print(f"[{d}] " + ", ".join(f"{m}: mmd {ev[m]['mmd_test']:.4f} ll "
                                    f"{ev[m]['loglik_mean']:.3f} t {ev[m]['time_s']:.4f}s"
                                    for m in METHODS), flush=True)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    setup = (f"cnf2d defaults, {train_iters} training iterations (new runs); HyperHeun g "
             f"MLP 5->64->64->2 PReLU zero-init last layer, state z only, t: 0 -> 1 "
             f"(CNFModel.sample's direction), residual fitting K=1 vs dopri5 {FIT_TOL:g}, "
             f"{fit_iters} iterations x {FIT_BATCH} fresh prior samples, AdamW 5e-3 cosine "
             f"-> 5e-4, wd 1e-6, clip 0.5; reference sampler dopri5 rtol=atol={REF_TOL:g}; "
             f"{n_samples} samples, timing median of {repeats}; CPU, 1 thread, float32")
    payload = {"command": "python benchmarks/hypersolvers_cnf.py " + " ".join(
                   sys.argv[1:] if argv is None else argv),
               "setup": setup, "config": {**vars(a), "train_iters": train_iters,
                                          "fit_iters": fit_iters, "n_samples": n_samples,
                                          "repeats": repeats, "bandwidths": BANDWIDTHS,
                                          "ref_tol": REF_TOL, "fit_tol": FIT_TOL},
               "platform": {"python": platform.python_version(), "torch": torch.__version__,
                            "machine": platform.machine()},
               "results": results, "targets": targets(results),
               "seconds": time.perf_counter() - start}
    (out / f"{NAME}.json").write_text(json.dumps(payload, indent=2))
    (out / f"{NAME}.md").write_text(markdown(payload))
    plot(all_samples, out / f"{NAME}.png")
    print(markdown(payload))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
