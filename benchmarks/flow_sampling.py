"""Few-step sampling of flow-matching models: fixed solvers, hypersolvers and a bespoke
learned solver against dopri5, on 2-D densities and the 8x8 digits.

Procedure (CPU, one torch thread, float32):

1. Flows trained with ``hyperode.flow.train_flow``: the linear path with ``sigma_min =
   0`` (rectified flow) and *independent* coupling (I-CFM, the standard recipe; minibatch
   OT would straighten the flows and flatter the few-step fixed solvers). 2-D densities:
   ``TimeMLP(2)`` (3 x 128, SiLU), AdamW 2e-3, batch 256, ``--train-iters`` steps on
   20 000 samples. Digits (pixels mapped to [-1, 1]): ``ConvField(1, width=32, depth=3)``,
   AdamW 2e-3, batch 128, ``--digits-iters`` steps on the 1347 training images, weight EMA
   0.998.
2. Samplers, all through ``hyperode.solve`` from the same prior noise: dopri5 at
   rtol = atol = ``REF_TOL`` (1e-5; the ground truth); Euler, Midpoint and RK4 at 1-16
   NFE; and at 4 NFE the learned ones: ``HyperEuler`` (K = 4) and ``HyperHeun`` (K = 2)
   with ``g`` reading ``[x, f(t, x), eps, t]`` (2-D: ``MLPHyperNet(2, (64, 64))``;
   digits: ``ConvHyperNet(1, (32, 32))``), trajectory-fitted to dopri5 at ``REF_TOL`` on
   fresh prior batches (``fit_flow_hypersolver``); and ``BespokeSolver`` on Midpoint
   (n = 2) and Euler (n = 4), 18 parameters each, fitted to dopri5 end points of
   ``--pairs`` prior samples (``fit_flow_bespoke``).
3. Quality of ``--samples`` samples per sampler against *fresh* data:

   - 2-D: MMD (sqrt of the biased MMD^2, Gaussian kernels with bandwidths 0.05, 0.2, 0.5
     x the data's std), sliced Wasserstein ``SW_2`` (256 directions), mean exact log
     density under the true density (all three densities used have one); floors: a
     second fresh data set against the first.
   - digits: Fréchet distance in the 64 penultimate features of a small classifier
     (``FeatureClassifier``) trained on the same training images (**not** FID: not
     Inception features, not natural images), and k-NN precision/recall (k = 3), all
     against the 450 test images; floor: training images against test images.
   - solver-isolating: mean end-point distance to dopri5's samples from the same noise.
   - wall time: ``--samples`` samples, median of ``--repeats`` runs.

Targets (judged in the .md): at 4 NFE a learned sampler within 10% of dopri5's quality
(2-D: MMD; digits: FD) on every density and on digits; Euler and Midpoint at 4 NFE at
least 2x worse; the learned sampler >= 10x faster than dopri5.

    nice -n 10 .venv/bin/python benchmarks/flow_sampling.py           # ~30 min here
    .venv/bin/python benchmarks/flow_sampling.py --quick              # smoke run, < 30 s

Writes ``flow_sampling.json``, ``flow_sampling.md``, ``flow_sampling_quality.png``
(quality vs NFE) and ``flow_sampling_samples.png`` (sample grids) under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from hyperode.data.densities import sample_density
from hyperode.data.digits import digits
from hyperode.flow import (
    AdaptiveSampler,
    BespokeSolver,
    ConvField,
    FixedSampler,
    TimeMLP,
    bespoke_sampler,
    density_quality,
    evaluate_samplers,
    fit_flow_bespoke,
    fit_flow_hypersolver,
    hypersolver_sampler,
    image_quality,
    train_feature_classifier,
    train_flow,
)
from hyperode.hyper import ConvHyperNet, HyperEuler, HyperHeun, MLPHyperNet

ROOT = Path(__file__).resolve().parent.parent
NAME = "flow_sampling"
DENSITIES = ("8gaussians", "checkerboard", "rings")
REF_TOL = 1e-5
FIXED = {"euler": (1, 2, 4, 8, 16), "midpoint": (2, 4, 8, 16), "rk4": (4, 8, 16)}
LEARNED = ("HyperEuler", "HyperHeun", "bespoke-midpoint", "bespoke-euler")


def settings(quick: bool, args) -> dict:
    if quick:
        return dict(train_iters=100, digits_iters=30, samples=300, pairs=128, bespoke_iters=10,
                    hyper_iters=5, hyper_batch=32, repeats=1, classifier_epochs=1)
    return dict(train_iters=args.train_iters, digits_iters=args.digits_iters,
                samples=args.samples, pairs=args.pairs, bespoke_iters=args.bespoke_iters,
                hyper_iters=args.hyper_iters, hyper_batch=256, repeats=args.repeats,
                classifier_epochs=30)


# ---------------------------------------------------------------------- samplers


def learned_samplers(field, shape: tuple[int, ...], cfg: dict, image: bool, seed: int) -> dict:
    """Fit the 4-NFE learned samplers; returns name -> (sampler, fit record)."""
    out = {}
    for name, cls, nfe in (("HyperEuler", HyperEuler, 4), ("HyperHeun", HyperHeun, 4)):
        torch.manual_seed(seed)
        g = ConvHyperNet(shape[0], (32, 32), time_input=True) if image else \
            MLPHyperNet(shape[0], (64, 64), time_input=True)
        hyper = cls(g)
        start = time.perf_counter()
        batch = cfg["hyper_batch"] // 2 if image else cfg["hyper_batch"]
        hist = fit_flow_hypersolver(hyper, field, (batch, *shape), nfe,
                                    iterations=cfg["hyper_iters"], rtol=REF_TOL, atol=REF_TOL,
                                    lr=5e-3, seed=seed)
        print(f"  fitted {name} in {time.perf_counter() - start:.0f} s", flush=True)
        out[name] = (hypersolver_sampler(hyper, nfe, name),
                     {"seconds": time.perf_counter() - start, "iterations": cfg["hyper_iters"],
                      "final_loss": hist.loss[-1], "g_parameters":
                      sum(p.numel() for p in g.parameters())})
    for name, base, n in (("bespoke-midpoint", "midpoint", 2), ("bespoke-euler", "euler", 4)):
        solver = BespokeSolver(base, n)
        start = time.perf_counter()
        hist = fit_flow_bespoke(solver, field, shape, pairs=cfg["pairs"],
                                iterations=cfg["bespoke_iters"], batch_size=256, lr=2e-2,
                                rtol=REF_TOL, atol=REF_TOL, seed=seed)
        print(f"  fitted {name} in {time.perf_counter() - start:.0f} s", flush=True)
        out[name] = (bespoke_sampler(solver, name),
                     {"seconds": time.perf_counter() - start, "iterations": cfg["bespoke_iters"],
                      "val_before": hist.val_before, "val_after": hist.val_after,
                      "parameters": solver.num_parameters, "grid": solver.grid()})
    return out


def all_samplers(learned: dict) -> dict:
    out = {"dopri5": AdaptiveSampler("dopri5", REF_TOL, REF_TOL)}
    for method, nfes in FIXED.items():
        for nfe in nfes:
            out[f"{method}@{nfe}"] = FixedSampler(method, nfe)
    for name, (sampler, _) in learned.items():
        out[f"{name}@4"] = sampler
    return out


# ---------------------------------------------------------------------- experiments


def density_experiment(density: str, cfg: dict, seed: int) -> tuple[dict, dict]:
    torch.manual_seed(seed)
    data = sample_density(density, 20000, seed=seed)
    fresh = sample_density(density, cfg["samples"], seed=seed + 1)
    field = TimeMLP(2)
    hist = train_flow(field, data, iterations=cfg["train_iters"], lr=2e-3, batch_size=256,
                      seed=seed)
    field.requires_grad_(False)
    print(f"  trained in {hist.seconds:.0f} s", flush=True)
    learned = learned_samplers(field, (2,), cfg, False, seed)
    x0 = torch.randn(cfg["samples"], 2, generator=torch.Generator().manual_seed(seed + 7))
    rows, runs = evaluate_samplers(field, all_samplers(learned), x0,
                                   lambda x: density_quality(x, fresh, density, seed=seed),
                                   repeats=cfg["repeats"])
    floor = density_quality(sample_density(density, cfg["samples"], seed=seed + 2), fresh,
                            density, seed=seed)
    record = {"train": {"seconds": hist.seconds, "final_loss": hist.loss[-1][1]},
              "fits": {k: v[1] for k, v in learned.items()}, "floor": floor, "samplers": rows}
    return record, {k: v[:2000] for k, v in runs.items()}


def digits_experiment(cfg: dict, seed: int) -> tuple[dict, dict]:
    torch.manual_seed(seed)
    split = digits(seed=seed)
    scale = lambda x: 2.0 * x - 1.0  # noqa: E731 - pixels [0, 1] -> [-1, 1]
    x_train, x_test = scale(split.x_train), scale(split.x_test)
    classifier, accuracy = train_feature_classifier(
        x_train, split.y_train, x_test=x_test, y_test=split.y_test,
        epochs=cfg["classifier_epochs"], seed=seed)
    classifier.requires_grad_(False)
    field = ConvField(1, width=32, depth=3)
    hist = train_flow(field, x_train, iterations=cfg["digits_iters"], lr=2e-3, batch_size=128,
                      ema=0.998 if cfg["digits_iters"] > 1000 else 0.0, seed=seed)
    field.requires_grad_(False)
    print(f"  trained in {hist.seconds:.0f} s", flush=True)
    learned = learned_samplers(field, (1, 8, 8), cfg, True, seed)
    n = min(cfg["samples"], 1000)
    x0 = torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed + 7))
    rows, runs = evaluate_samplers(field, all_samplers(learned), x0,
                                   lambda x: image_quality(x, x_test, classifier.features),
                                   repeats=cfg["repeats"])
    idx = torch.randperm(x_train.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
    floor = image_quality(x_train[idx], x_test, classifier.features)
    record = {"train": {"seconds": hist.seconds, "final_loss": hist.loss[-1][1]},
              "classifier_test_accuracy": accuracy,
              "fits": {k: v[1] for k, v in learned.items()}, "floor": floor, "samplers": rows}
    return record, {k: v[:16] for k, v in runs.items()}


# ---------------------------------------------------------------------- judging


def judge(results: dict) -> dict:
    out = {}
    for key, r in results.items():
        metric = "fd" if key == "digits" else "mmd"
        rows = r["samplers"]
        ref = rows["dopri5"][metric]
        learned = {name: rows[f"{name}@4"][metric] / ref for name in LEARNED}
        best = min(learned, key=learned.get)
        speedup = rows["dopri5"]["seconds"] / rows[f"{best}@4"]["seconds"]
        out[key] = {"metric": metric, "dopri5": ref, "learned_ratio": learned, "best": best,
                    "best_within_10pct": learned[best] <= 1.10,
                    "euler_ratio": rows["euler@4"][metric] / ref,
                    "midpoint_ratio": rows["midpoint@4"][metric] / ref,
                    "euler_midpoint_2x_worse": min(rows["euler@4"][metric],
                                                   rows["midpoint@4"][metric]) >= 2 * ref,
                    "best_speedup": speedup, "speedup_10x": speedup >= 10.0,
                    "model_fit": ref / r["floor"][metric]}
        # solver-isolating: end-point distance to dopri5 from the same noise
        err = {name: rows[f"{name}@4"]["endpoint_error"] for name in LEARNED}
        best_err = min(err, key=err.get)
        out[key]["endpoint"] = {
            "learned": err, "best": best_err,
            "euler_over_best": rows["euler@4"]["endpoint_error"] / err[best_err],
            "midpoint_over_best": rows["midpoint@4"]["endpoint_error"] / err[best_err],
            "rk4_over_best": rows["rk4@4"]["endpoint_error"] / err[best_err]}
        if key != "digits":
            out[key]["sw_ratio"] = {name: rows[f"{name}@4"]["sw"] / rows["dopri5"]["sw"]
                                    for name in (*LEARNED, "euler", "midpoint")
                                    if f"{name}@4" in rows}
    return out


def markdown(payload: dict) -> str:
    cfg = payload["config"]
    kind = "quick" if payload["quick"] else "full"
    lines = [f"# Few-step sampling of flow-matching models ({kind})",
             "", f"Command: `{payload['command']}`", "",
             f"CPU, one torch thread, float32; {cfg['samples']} samples per sampler from one "
             f"noise batch; dopri5 at rtol = atol = {REF_TOL:g} is the ground truth. Flows: "
             f"I-CFM (linear path, sigma_min = 0, independent coupling). Wall times are "
             f"medians of {cfg['repeats']} runs on a machine shared with other jobs.", ""]
    for key, r in payload["results"].items():
        digits_ = key == "digits"
        lines += [f"## {key}", ""]
        if digits_:
            lines += [f"Feature classifier test accuracy {r['classifier_test_accuracy']:.3f}. "
                      "FD = Fréchet distance in that classifier's 64 features (**not FID**). "
                      f"Floor (training vs test images): FD {r['floor']['fd']:.3f}, precision "
                      f"{r['floor']['precision']:.3f}, recall {r['floor']['recall']:.3f}.", "",
                      "| sampler | NFE f (+g) | FD | / dopri5 | precision | recall | "
                      "end-point error | time [s] |", "|---|---|---|---|---|---|---|---|"]
        else:
            fl = r["floor"]
            lines += [f"Floor (fresh data vs fresh data): MMD {fl['mmd']:.4f}, SW "
                      f"{fl['sw']:.4f}, log-lik {fl['loglik']:.3f}.", "",
                      "| sampler | NFE f (+g) | MMD | / dopri5 | SW | log-lik | "
                      "end-point error | time [s] |", "|---|---|---|---|---|---|---|---|"]
        ref = r["samplers"]["dopri5"]["fd" if digits_ else "mmd"]
        for name, row in r["samplers"].items():
            nfe = f"{row['nfe']}" + (f" (+{row['nfe_g']})" if row["nfe_g"] else "")
            if digits_:
                lines.append(f"| {name} | {nfe} | {row['fd']:.3f} | {row['fd'] / ref:.2f}x | "
                             f"{row['precision']:.3f} | {row['recall']:.3f} | "
                             f"{row['endpoint_error']:.4f} | {row['seconds']:.4f} |")
            else:
                lines.append(f"| {name} | {nfe} | {row['mmd']:.4f} | {row['mmd'] / ref:.2f}x | "
                             f"{row['sw']:.4f} | {row['loglik']:.3f} | "
                             f"{row['endpoint_error']:.4f} | {row['seconds']:.4f} |")
        fits = ", ".join(f"{k} {v['seconds']:.0f} s" for k, v in r["fits"].items())
        lines += ["", f"Training {r['train']['seconds']:.0f} s; fitting: {fits}.", ""]
    lines += ["## Targets", "", "| | metric | best learned @4 | ratio | within 10% | "
              "Euler@4 | Midpoint@4 | both >= 2x | speed-up | >= 10x |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for key, t in payload["targets"].items():
        lines.append(f"| {key} | {t['metric']} | {t['best']} | "
                     f"{t['learned_ratio'][t['best']]:.3f} | "
                     f"{'yes' if t['best_within_10pct'] else 'no'} | {t['euler_ratio']:.2f}x | "
                     f"{t['midpoint_ratio']:.2f}x | "
                     f"{'yes' if t['euler_midpoint_2x_worse'] else 'no'} | "
                     f"{t['best_speedup']:.0f}x | {'yes' if t['speedup_10x'] else 'no'} |")
    lines += ["", "Learned samplers at 4 NFE, quality / dopri5's (2-D: MMD; digits: FD):", ""]
    for key, t in payload["targets"].items():
        ratios = ", ".join(f"{k} {v:.3f}" for k, v in t["learned_ratio"].items())
        lines.append(f"- {key}: {ratios}")
    lines += ["", "How well the flow itself fits (dopri5's metric / the data floor): " +
              ", ".join(f"{k} {t['model_fit']:.1f}x" for k, t in payload["targets"].items()) +
              ". Where this is large, the model's own error dominates the metric against "
              "fresh data, which then separates solvers only weakly.", "",
              "Solver-isolating view: mean end-point distance to dopri5's samples from the "
              "same noise, at 4 NFE (the plain solvers' distance / the best learned one's):",
              "", "| | best learned | its distance | Euler@4 | Midpoint@4 | RK4@4 |",
              "|---|---|---|---|---|---|"]
    for key, t in payload["targets"].items():
        e = t["endpoint"]
        lines.append(f"| {key} | {e['best']} | {e['learned'][e['best']]:.4f} | "
                     f"{e['euler_over_best']:.1f}x | {e['midpoint_over_best']:.1f}x | "
                     f"{e['rk4_over_best']:.1f}x |")
    lines.append("")
    return "\n".join(lines)


def plot(payload: dict, samples: dict, out: Path, suffix: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(payload["results"])
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.6), squeeze=False)
    for ax, key in zip(axes[0], keys):
        rows = payload["results"][key]["samplers"]
        metric = "fd" if key == "digits" else "mmd"
        for method, nfes in FIXED.items():
            ax.plot(nfes, [rows[f"{method}@{n}"][metric] for n in nfes], "o-", label=method)
        for name, marker in zip(LEARNED, "s^Dv"):
            ax.plot([4], [rows[f"{name}@4"][metric]], marker, ms=8, label=name)
        ax.axhline(rows["dopri5"][metric], color="k", ls="--",
                   label=f"dopri5 ({rows['dopri5']['nfe']} NFE)")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("NFE")
        ax.set_ylabel("FD (classifier features)" if key == "digits" else "MMD to fresh data")
        ax.set_title(key)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / f"{NAME}_quality{suffix}.png", dpi=110)
    plt.close(fig)

    shown = ("dopri5", "euler@4", "midpoint@4", "rk4@4", *(f"{n}@4" for n in LEARNED))
    fig, axes = plt.subplots(len(keys), len(shown), figsize=(2.0 * len(shown), 2.1 * len(keys)),
                             squeeze=False)
    for i, key in enumerate(keys):
        for j, name in enumerate(shown):
            ax = axes[i][j]
            x = samples[key][name]
            if key == "digits":
                imgs = ((x[:16].clamp(-1, 1) + 1) / 2).reshape(4, 4, 8, 8)
                ax.imshow(imgs.permute(0, 2, 1, 3).reshape(32, 32).numpy(), cmap="gray")
            else:
                ax.scatter(x[:, 0].numpy(), x[:, 1].numpy(), s=0.3, alpha=0.5)
                ax.set_xlim(-4.5, 4.5)
                ax.set_ylim(-4.5, 4.5)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=8)
            if j == 0:
                ax.set_ylabel(key, fontsize=8)
    fig.tight_layout()
    fig.savefig(out / f"{NAME}_samples{suffix}.png", dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--densities", nargs="+", default=list(DENSITIES))
    p.add_argument("--no-digits", action="store_true")
    p.add_argument("--train-iters", type=int, default=2000)
    p.add_argument("--digits-iters", type=int, default=1500)
    p.add_argument("--samples", type=int, default=3000)
    p.add_argument("--pairs", type=int, default=2048)
    p.add_argument("--bespoke-iters", type=int, default=300)
    p.add_argument("--hyper-iters", type=int, default=300)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--markdown-only", action="store_true",
                   help="re-judge the saved json and rewrite the .md (no runs, no plots)")
    args = p.parse_args(argv)
    if args.markdown_only:
        path = Path(args.out) / f"{NAME}{'_quick' if args.quick else ''}.json"
        payload = json.loads(path.read_text())
        payload["targets"] = judge(payload["results"])
        path.write_text(json.dumps(payload, indent=1))
        path.with_suffix(".md").write_text(markdown(payload))
        return 0
    torch.set_num_threads(1)
    cfg = settings(args.quick, args)
    densities = args.densities[:1] if args.quick else args.densities
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    suffix = "_quick" if args.quick else ""
    results, samples = {}, {}
    start = time.perf_counter()
    for d in densities:
        print(f"[{d}] training and fitting", flush=True)
        results[d], samples[d] = density_experiment(d, cfg, args.seed)
    if not args.no_digits:
        print("[digits] training and fitting", flush=True)
        results["digits"], samples["digits"] = digits_experiment(cfg, args.seed)
    payload = {"command": " ".join(["benchmarks/flow_sampling.py", *(argv or sys.argv[1:])]),
               "quick": args.quick, "config": {**cfg, "densities": densities,
                                               "ref_tol": REF_TOL, "seed": args.seed},
               "results": results, "targets": judge(results),
               "seconds": time.perf_counter() - start,
               "versions": {"python": platform.python_version(), "torch": torch.__version__,
                            "machine": platform.machine()}}
    (out / f"{NAME}{suffix}.json").write_text(json.dumps(payload, indent=1))
    (out / f"{NAME}{suffix}.md").write_text(markdown(payload))
    plot(payload, samples, out, suffix)
    for key, t in payload["targets"].items():
        print(f"[{key}] best learned {t['best']} {t['learned_ratio'][t['best']]:.3f}x dopri5; "
              f"euler {t['euler_ratio']:.2f}x midpoint {t['midpoint_ratio']:.2f}x; "
              f"speed-up {t['best_speedup']:.0f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
