"""Which g, fitted how, and run how? HyperEuler variants on the demo's digits model.

The demo's HyperEuler (``g`` = Conv 33->16 -> PReLU -> 16->16, 3x3, fitted at K=10)
costs 1.5x an evaluation of ``f`` in MACs and, fitted on one mesh, loses accuracy at
step counts above its K. This script measures three levers on the same trained model
(``runs/demo/train``, trained with the demo's settings when missing):

1. **Multi-step-size fitting**: the same ``g`` fitted on the meshes K = 5, 10, 20 at
   once (``fit_hypersolver(steps=[5, 10, 20])``, each iteration averages the residual
   losses of the three meshes) against the single-mesh fit at K = 10.
2. **Cheaper g**: hidden width 8 with 3x3 kernels, and width 32 with 1x1 kernels
   (pointwise: no spatial mixing), both fitted at K = 10, against the default; MACs of
   ``f`` and ``g`` per sample are counted by hooks (``hyperode.metrics.MacCounter``).
3. **Compiled inference** of the default HyperEuler at K = 5 (the demo's fewest steps
   under 0.1% accuracy loss) and K = 10: ``hyperode.solve`` (eager), the fixed-grid
   module ``FixedGridSolve`` (eager) and ``compile_solve`` (``torch.compile``, inductor
   on CPU), with dopri5 at 1e-4 as the speedup reference; the compiled output is checked
   against eager.

Every variant is fitted with the demo's schedule (AdamW 1e-3, cosine, batch 64, first
batch for 10 iterations then a new batch every 10, 3000 iterations, dopri5 1e-4
residual targets, training-split initial states, seed 0) and evaluated on the 450 test
samples: terminal MAPE and mean relative L2 error against dopri5 at 1e-7, test accuracy
(accuracy loss against dopri5 at 1e-4), NFE of f and g, MACs per sample. Times: median
of 7 calls after 2 warm-up ones (compiled: after compiling) on a test batch of 128,
solve plus output map, one torch thread.

    .venv/bin/python benchmarks/hypersolvers_variants.py            # ~12 min
    .venv/bin/python benchmarks/hypersolvers_variants.py --quick    # ~1.5 min smoke run

Writes ``hypersolvers_variants.{json,md,png}`` under ``--out`` (``_quick`` suffix for
``--quick``); the fits go to ``--fit-root`` (default ``runs/hypersolvers_variants``).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

from hyperode import solve
from hyperode.experiments.hyper import (
    ensure_demo_model,
    fit_hypersolver,
    load_hypersolver,
    load_trained_model,
)
from hyperode.hyper import FixedGridSolve, compile_solve
from hyperode.metrics import MacCounter, accuracy, mape, time_call

ROOT = Path(__file__).resolve().parent.parent
NAME = "hypersolvers_variants"
#: name -> (fitted step counts, hidden widths of g, kernel size of g)
VARIANTS: dict[str, tuple[list[int], list[int], int]] = {
    "g16x3, K=10": ([10], [16], 3),
    "g16x3, K=5,10,20": ([5, 10, 20], [16], 3),
    "g8x3, K=10": ([10], [8], 3),
    "g32x1, K=10": ([10], [32], 1),
}
DEFAULT = "g16x3, K=10"
EVAL_STEPS = (2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32)
QUICK_STEPS = (5, 10, 20)
COMPILED_STEPS = (5, 10)
TOL, TIGHT_TOL = 1e-4, 1e-7


def _slug(name: str) -> str:
    return name.replace(", K=", "-K").replace(",", "-")


def fit_variants(train_dir: Path, fit_root: Path, iterations: int) -> dict[str, Any]:
    """Fit every variant (deterministic: seed 0) into ``fit_root/<slug>``."""
    fits = {}
    for name, (steps, hidden, kernel) in VARIANTS.items():
        out = fit_root / _slug(name)
        t0 = time.perf_counter()
        fit_hypersolver(train_dir, "euler", steps if len(steps) > 1 else steps[0],
                        iterations=iterations, hidden=hidden, kernel_size=kernel, out=out,
                        progress=False, verbose=False)
        results = json.loads((out / "results.json").read_text())
        fits[name] = {"dir": str(out), "steps": steps, "hidden": hidden, "kernel_size": kernel,
                      "fit_s": time.perf_counter() - t0,
                      "num_parameters_g": results["num_parameters_g"],
                      "validation": results["validation"]["per_steps"]}
        print(f"fitted {name}: {fits[name]['fit_s']:.0f} s")
    return fits


@torch.no_grad()
def evaluate(loaded, methods: dict[str, Any], steps: tuple[int, ...]) -> dict[str, Any]:
    """Terminal MAPE / rel L2 / accuracy / NFE / MACs of every method at every K."""
    field, model = loaded.field, loaded.model
    z0 = loaded.initial_states(loaded.split.x_test)
    y = loaded.split.y_test
    t = torch.tensor(loaded.t_span, dtype=torch.float64)
    ref = solve(field, z0, t, method="dopri5", rtol=TIGHT_TOL, atol=TIGHT_TOL).ys[-1]
    acc_ref_sol = solve(field, z0, t, method="dopri5", rtol=TOL, atol=TOL)
    acc_ref = accuracy(model.output_map(acc_ref_sol.ys[-1]), y)
    ref_norm = ref.flatten(1).norm(dim=1)
    rows = []
    for name, method in methods.items():
        for k in steps:
            g = [method] if isinstance(method, torch.nn.Module) else []
            with MacCounter(field) as cf, MacCounter(*g) as cg:
                sol = solve(field, z0, t, method=method, options=dict(num_steps=k))
            z = sol.ys[-1]
            acc = accuracy(model.output_map(z), y)
            rel = ((z - ref).flatten(1).norm(dim=1) / ref_norm).mean()
            rows.append({"method": name, "steps": k, "nfe": sol.stats.nfe,
                         "nfe_g": sol.stats.nfe_correction,
                         "macs_f": cf.macs / len(z0), "macs_g": cg.macs / len(z0),
                         "mape": float(mape(z, ref)), "rel_l2": float(rel),
                         "accuracy": acc, "accuracy_loss": acc_ref - acc})
    return {"test_samples": len(z0), "accuracy_dopri5": acc_ref,
            "nfe_dopri5": acc_ref_sol.stats.nfe, "rows": rows}


@torch.no_grad()
def time_paths(loaded, hyper, steps: tuple[int, ...], batch: int = 128) -> dict[str, Any]:
    """Median seconds per test batch: dopri5 1e-4, and the hypersolver through
    ``solve``, ``FixedGridSolve`` and ``compile_solve`` (with the compile time)."""
    field, out_map = loaded.field, loaded.model.output_map
    z0 = loaded.initial_states(loaded.split.x_test)[:batch].contiguous()
    t = torch.tensor(loaded.t_span, dtype=torch.float64)
    timed: dict[str, Any] = {"batch": len(z0)}

    def dopri5() -> torch.Tensor:
        return out_map(solve(field, z0, t, method="dopri5", rtol=TOL, atol=TOL).ys[-1])

    timed["dopri5"] = time_call(dopri5, warmup=2, repeats=7).median
    for k in steps:
        def eager(k: int = k) -> torch.Tensor:
            return out_map(solve(field, z0, t, method=hyper,
                                 options=dict(num_steps=k)).ys[-1])

        module = FixedGridSolve(field, hyper, loaded.t_span, k)
        compiled = compile_solve(field, hyper, loaded.t_span, k)
        t0 = time.perf_counter()
        z_compiled = compiled(z0)
        compile_s = time.perf_counter() - t0
        z_eager = solve(field, z0, t, method=hyper, options=dict(num_steps=k)).ys[-1]
        row = {"solve": time_call(eager, warmup=2, repeats=7).median,
               "fixed_grid_module": time_call(lambda m=module: out_map(m(z0)), warmup=2,
                                              repeats=7).median,
               "compiled": time_call(lambda c=compiled: out_map(c(z0)), warmup=2,
                                     repeats=7).median,
               "compile_s": compile_s,
               "max_abs_diff_compiled_vs_eager": float((z_compiled - z_eager).abs().max())}
        row["speedup_vs_dopri5"] = {p: timed["dopri5"] / row[p]
                                    for p in ("solve", "fixed_grid_module", "compiled")}
        timed[f"K={k}"] = row
    return timed


def _row(rows, method, k):
    return next((r for r in rows if r["method"] == method and r["steps"] == k), None)


def markdown(data: dict[str, Any]) -> str:
    ev, rows = data["evaluation"], data["evaluation"]["rows"]
    steps = data["eval_steps"]
    md = [f"# HyperEuler variants on the digits model{' — QUICK' if data['quick'] else ''}",
          "", f"Command: `{data['command']}` (CPU, 1 torch thread, float32; total "
          f"{data['timings_s']['total_s']:.0f} s).", "",
          f"Model: `{data['train_dir']}` (the demo's dopri5-trained digits Neural ODE). "
          f"Every g fitted on Euler by residual fitting, {data['fit_iterations']} iterations "
          f"(demo schedule). Test split: {ev['test_samples']} samples; dopri5 1e-4 accuracy "
          f"{100 * ev['accuracy_dopri5']:.2f}% ({ev['nfe_dopri5']} NFE). MAPE and rel L2 "
          f"against dopri5 1e-7.", "", "## Variants", "",
          "| variant | fitted K | g params | MACs g / MACs f per step | fit s |",
          "|---|---|---:|---:|---:|"]
    for name, f in data["fits"].items():
        r = _row(rows, name, 10) or _row(rows, name, steps[0])
        ratio = r["macs_g"] / r["macs_f"]
        md.append(f"| {name} | {','.join(map(str, f['steps']))} | {f['num_parameters_g']} | "
                  f"{ratio:.2f} | {f['fit_s']:.0f} |")
    md += ["", "## Terminal MAPE by step count (rel L2 in parentheses)", "",
           "| K | " + " | ".join(data["methods"]) + " |",
           "|---:|" + "---:|" * len(data["methods"])]
    for k in steps:
        cells = []
        for m in data["methods"]:
            r = _row(rows, m, k)
            cells.append(f"{r['mape']:.3g} ({r['rel_l2']:.2g})")
        md.append(f"| {k} | " + " | ".join(cells) + " |")
    md += ["", "## Test accuracy by step count", "",
           "| K | " + " | ".join(data["methods"]) + " |",
           "|---:|" + "---:|" * len(data["methods"])]
    for k in steps:
        md.append(f"| {k} | " + " | ".join(f"{100 * _row(rows, m, k)['accuracy']:.2f}%"
                                           for m in data["methods"]) + " |")
    md += ["", "## Error per MAC", "", "MACs per sample (f + g) and terminal MAPE; a variant "
           "is on the front when no other row (any method, any K) has both fewer MACs and "
           "lower MAPE.", "", "| method | K | MACs (M) | MAPE | on front |", "|---|---:|---:|"
           "---:|:---:|"]
    pts = [(r["macs_f"] + r["macs_g"], r["mape"]) for r in rows]
    for r, (c, e) in zip(rows, pts):
        if r["method"] == "euler":
            continue
        front = not any(c2 <= c and e2 <= e and (c2, e2) != (c, e) for c2, e2 in pts)
        if r["steps"] in (4, 5, 8, 10, 16, 20) or front:
            md.append(f"| {r['method']} | {r['steps']} | {c / 1e6:.2f} | {r['mape']:.3g} | "
                      f"{'yes' if front else ''} |")
    tp = data["timing"]
    md += ["", "## Inference paths (default HyperEuler)", "",
           f"Batch {tp['batch']}; dopri5 1e-4: {1e3 * tp['dopri5']:.1f} ms.", "",
           "| K | solve ms | FixedGridSolve ms | compiled ms | compile s | "
           "speedup vs dopri5 (solve / compiled) | max abs diff compiled vs eager |",
           "|---:|---:|---:|---:|---:|---:|---:|"]
    for k in data["compiled_steps"]:
        r = tp[f"K={k}"]
        s = r["speedup_vs_dopri5"]
        md.append(f"| {k} | {1e3 * r['solve']:.2f} | {1e3 * r['fixed_grid_module']:.2f} | "
                  f"{1e3 * r['compiled']:.2f} | {r['compile_s']:.1f} | "
                  f"{s['solve']:.1f}x / {s['compiled']:.1f}x | "
                  f"{r['max_abs_diff_compiled_vs_eager']:.1e} |")
    md += ["", "## Findings (generated from the numbers above)", "", *findings(data)]
    md += ["", f"Plot: `{data['plot']}`.", ""]
    return "\n".join(md)


def findings(data: dict[str, Any]) -> list[str]:
    rows, out = data["evaluation"]["rows"], []
    multi, single = "g16x3, K=5,10,20", DEFAULT
    ks = [k for k in data["eval_steps"] if _row(rows, multi, k) and _row(rows, single, k)]
    wins = [k for k in ks if _row(rows, multi, k)["rel_l2"] < _row(rows, single, k)["rel_l2"]]
    out.append(f"- Multi-K fit (5, 10, 20) has lower rel L2 than the K=10 fit at K = "
               f"{', '.join(map(str, wins)) or 'none'} of {', '.join(map(str, ks))}.")
    for k in (10,):
        m, s = _row(rows, multi, k), _row(rows, single, k)
        if m and s:
            out.append(f"- At K=10: multi-K MAPE {m['mape']:.3g} vs single {s['mape']:.3g} "
                       f"(rel L2 {m['rel_l2']:.3g} vs {s['rel_l2']:.3g}).")
    for name in ("g8x3, K=10", "g32x1, K=10"):
        r, d, e = _row(rows, name, 10), _row(rows, single, 10), _row(rows, "euler", 10)
        if r and d and e:
            out.append(f"- {name}: g costs {r['macs_g'] / r['macs_f']:.2f}x f per step "
                       f"(default {d['macs_g'] / d['macs_f']:.2f}x); MAPE at K=10 "
                       f"{r['mape']:.3g} (default {d['mape']:.3g}, Euler {e['mape']:.3g}: "
                       f"{e['mape'] / r['mape']:.1f}x lower than Euler).")
    tp = data["timing"]
    for k in data["compiled_steps"]:
        r = tp[f"K={k}"]
        out.append(f"- Compiled path at K={k}: {r['solve'] / r['compiled']:.2f}x the eager "
                   f"`solve` speed ({1e3 * r['solve']:.1f} -> {1e3 * r['compiled']:.1f} ms); "
                   f"{r['speedup_vs_dopri5']['compiled']:.1f}x faster than dopri5 1e-4.")
    return out


def plot(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = data["evaluation"]["rows"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for m in data["methods"]:
        rs = [r for r in rows if r["method"] == m]
        style = "--" if m in ("euler", "rk4") else "-"
        ax1.plot([r["steps"] for r in rs], [r["rel_l2"] for r in rs], style, marker="o",
                 ms=3, label=m)
        ax2.plot([(r["macs_f"] + r["macs_g"]) / 1e6 for r in rs], [r["mape"] for r in rs],
                 style, marker="o", ms=3, label=m)
    ax1.set(xscale="log", yscale="log", xlabel="steps K", ylabel="rel L2 error vs dopri5 1e-7",
            title="error vs K (fitted: K=10, or 5/10/20)")
    ticks = [k for k in data["eval_steps"] if k in (2, 4, 5, 8, 10, 16, 20, 32)]
    ax1.set_xticks(ticks, [str(k) for k in ticks])
    ax1.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax2.set(xscale="log", yscale="log", xlabel="MACs per sample (M, f + g)",
            ylabel="terminal MAPE", title="error vs MACs")
    for ax in (ax1, ax2):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 100 fit iterations")
    p.add_argument("--iterations", type=int, default=None, help="fit iterations (3000)")
    p.add_argument("--train-dir", default=str(ROOT / "runs/demo/train"))
    p.add_argument("--fit-root", default=None,
                   help="folder of the fits (default runs/hypersolvers_variants[-quick])")
    p.add_argument("--out", default=str(ROOT / "benchmarks/results"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    iterations = args.iterations or (100 if args.quick else 3000)
    fit_root = Path(args.fit_root or ROOT / f"runs/{NAME}{'-quick' if args.quick else ''}")
    name = NAME + ("_quick" if args.quick else "")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    timings: dict[str, float] = {}
    train_dir = Path(args.train_dir)
    reused = ensure_demo_model(train_dir)

    t0 = time.perf_counter()
    fits = fit_variants(train_dir, fit_root, iterations)
    timings["fit_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    loaded = load_trained_model(train_dir)
    hypers = {n: load_hypersolver(f["dir"])[0] for n, f in fits.items()}
    methods: dict[str, Any] = {"euler": "euler", "rk4": "rk4", **hypers}
    steps = QUICK_STEPS if args.quick else EVAL_STEPS
    evaluation = evaluate(loaded, methods, steps)
    timings["evaluate_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    compiled_steps = COMPILED_STEPS[:1] if args.quick else COMPILED_STEPS
    timing = time_paths(loaded, hypers[DEFAULT], compiled_steps)
    timings["timing_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - start

    command = "python benchmarks/hypersolvers_variants.py" + (
        " " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    data = {"command": command, "quick": args.quick, "train_dir": str(train_dir),
            "train_reused": reused, "fit_iterations": iterations, "fits": fits,
            "methods": list(methods), "eval_steps": list(steps),
            "compiled_steps": list(compiled_steps), "evaluation": evaluation,
            "timing": timing, "timings_s": timings, "plot": f"{name}.png",
            "reference": {"error": f"dopri5 {TIGHT_TOL:g}", "accuracy": f"dopri5 {TOL:g}"},
            "versions": {"python": platform.python_version(), "torch": torch.__version__},
            "threads": torch.get_num_threads()}
    plot(data, out / f"{name}.png")
    (out / f"{name}.json").write_text(json.dumps(data, indent=2))
    md = markdown(data)
    (out / f"{name}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
