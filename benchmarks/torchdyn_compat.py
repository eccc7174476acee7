"""torchdyn front door: does ``hyperode.compat.torchdyn`` cost anything over hyperode?

The call measured is torchcfm's sampling call: a 2-D flow, a 3x64 MLP field of
``(x, t)`` (torchcfm's ``MLP(dim=2, w=64)`` with ``torch_wrapper``),
``NeuralODE(..., solver="dopri5", sensitivity="adjoint", atol=1e-4, rtol=1e-4)`` and
``node.trajectory(x0, t_span=torch.linspace(0, 1, 100))`` on a batch of 1024 under
``torch.no_grad()``. Four ways of making it, each timed 5 times in one run (median):

- ``compat``: that call. Without an interpolator torchdyn cuts its steps at every
  output time; the compat module does the same (``step_t`` = the 98 inner times).
- ``hyperode.odeint, same solve``: ``hyperode.odeint(field, x0, t_span, method="dopri5",
  rtol=1e-4, atol=1e-4, options=dict(step_t=...))``, the identical solve: any time
  difference to ``compat`` is the front door's overhead (signature detection, the
  ``nfe`` counter, argument checks).
- ``compat, interpolator="4th"`` and ``hyperode.odeint, dense output``: the outputs
  come from dopri5's continuous extension and the steps are left alone (hyperode's
  default; torchdyn's ``interpolator="4th"``). Same accuracy class, far fewer steps.

The field has random weights (seed 0): no trained flow is involved, so the step counts
are those of a smooth, mildly nonlinear field, not of a trained model. torchdyn itself
is not installed here and is not measured.

    python benchmarks/torchdyn_compat.py            # ~1-2 min on 2 CPU cores
    python benchmarks/torchdyn_compat.py --quick    # batch 64, 3 repeats

Writes ``benchmarks/results/torchdyn_compat.json`` and ``.md`` (``--out`` for the stem).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

import hyperode
from hyperode.compat.torchdyn import NeuralODE

RESULTS = Path(__file__).resolve().parent / "results"


class TorchWrapper(nn.Module):
    """torchcfm's ``torch_wrapper``: the time appended to the MLP's input."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, t, x, *args, **kwargs):
        return self.model(torch.cat([x, t.repeat(x.shape[0])[:, None]], 1))


def torchcfm_mlp(dim: int = 2, w: int = 64) -> nn.Module:
    """torchcfm's ``MLP``: three hidden layers of width ``w``, SELU."""
    return nn.Sequential(nn.Linear(dim + 1, w), nn.SELU(), nn.Linear(w, w), nn.SELU(),
                         nn.Linear(w, w), nn.SELU(), nn.Linear(w, dim))


class Counted(nn.Module):
    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner, self.nfe = inner, 0

    def forward(self, t, x):
        self.nfe += 1
        return self.inner(t, x)


def timed(fn: Callable[[], Any], repeats: int) -> tuple[list[float], Any]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return times, out


def run(batch: int, repeats: int, seed: int) -> dict[str, Any]:
    torch.manual_seed(seed)
    field = TorchWrapper(torchcfm_mlp())
    x0 = torch.randn(batch, 2)
    t_span = torch.linspace(0, 1, 100)
    inner = t_span[1:-1].tolist()
    tol = dict(atol=1e-4, rtol=1e-4)
    landing = NeuralODE(field, solver="dopri5", sensitivity="adjoint", **tol)
    dense = NeuralODE(field, solver="dopri5", sensitivity="adjoint", interpolator="4th", **tol)
    counted = Counted(field)

    def hyperode_call(options: dict | None) -> Callable[[], torch.Tensor]:
        def call() -> torch.Tensor:
            counted.nfe = 0
            return hyperode.odeint(counted, x0, t_span, method="dopri5", options=options, **tol)
        return call

    cases: dict[str, tuple[Callable[[], torch.Tensor], Callable[[], int]]] = {
        "compat": (lambda: landing.trajectory(x0, t_span=t_span),
                   lambda: landing.last_stats.nfe),
        "hyperode.odeint, same solve": (hyperode_call(dict(step_t=inner)), lambda: counted.nfe),
        'compat, interpolator="4th"': (lambda: dense.trajectory(x0, t_span=t_span),
                                       lambda: dense.last_stats.nfe),
        "hyperode.odeint, dense output": (hyperode_call(None), lambda: counted.nfe),
    }
    results: dict[str, Any] = {}
    outputs = {}
    with torch.no_grad():
        for fn, _ in cases.values():  # warm-up, untimed
            fn()
        # interleave the cases so that each sees the same machine load, reversing the
        # order every other round so that no case always runs after the same one
        samples: dict[str, list[float]] = {name: [] for name in cases}
        for r in range(repeats):
            order = list(cases.items())
            for name, (fn, nfe) in (order if r % 2 == 0 else order[::-1]):
                times, out = timed(fn, 1)
                samples[name].extend(times)
                outputs[name] = out
                results[name] = {"nfe": nfe()}
        reference = hyperode.odeint(field, x0, t_span, method="dopri5", rtol=1e-8, atol=1e-8)
    for name, times in samples.items():
        results[name].update(median_s=statistics.median(times), times_s=times,
                             max_abs_error=float((outputs[name] - reference).abs().max()))
    base = results["hyperode.odeint, same solve"]
    results["compat"]["time_ratio_vs_same_solve"] = results["compat"]["median_s"] / \
        base["median_s"]
    results["compat"]["identical_to_same_solve"] = bool(
        torch.equal(outputs["compat"], outputs["hyperode.odeint, same solve"]))
    dense_base = results["hyperode.odeint, dense output"]
    results['compat, interpolator="4th"']["time_ratio_vs_same_solve"] = \
        results['compat, interpolator="4th"']["median_s"] / dense_base["median_s"]
    results['compat, interpolator="4th"']["identical_to_same_solve"] = bool(
        torch.equal(outputs['compat, interpolator="4th"'],
                    outputs["hyperode.odeint, dense output"]))
    return results


def markdown(result: dict[str, Any]) -> str:
    cfg = result["config"]
    lines = [
        "# torchdyn front door: torchcfm's sampling call",
        "",
        f"2-D flow, 3x64 SELU MLP of (x, t) with random weights, batch {cfg['batch']}, "
        f"100 output times on [0, 1], dopri5 at atol = rtol = 1e-4, `torch.no_grad()`; "
        f"median of {cfg['repeats']} interleaved runs (order reversed every other round), "
        f"{cfg['threads']} torch thread(s), "
        f"{cfg['machine']}. Error: max |x - x_ref| over all outputs against dopri5 at 1e-8.",
        "",
        "| call | NFE | median ms | ratio to the same hyperode.odeint solve | "
        "identical output | max error |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in result["cases"].items():
        ratio = r.get("time_ratio_vs_same_solve")
        same = r.get("identical_to_same_solve")
        lines.append(f"| {name} | {r['nfe']} | {1e3 * r['median_s']:.1f} | "
                     f"{'' if ratio is None else f'{ratio:.3f}'} | "
                     f"{'' if same is None else ('yes' if same else 'no')} | "
                     f"{r['max_abs_error']:.2e} |")
    c = result["cases"]
    landing, dense = c["compat"], c['compat, interpolator="4th"']
    lines += [
        "",
        f"The torchdyn-style call (steps cut at every output time, torchdyn's default without "
        f"an interpolator) costs {landing['nfe']} NFE; with `interpolator=\"4th\"` (hyperode's "
        f"default dense output) the same samples cost {dense['nfe']} NFE, "
        f"{landing['median_s'] / dense['median_s']:.1f}x less time. The front door itself "
        f"runs the identical solve (ratio {landing['time_ratio_vs_same_solve']:.3f}; "
        f"rows 1-2 and 3-4 are pairs).",
        "",
        "Rerun: `python benchmarks/torchdyn_compat.py`.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="batch 64, 3 repeats")
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(RESULTS / "torchdyn_compat"))
    args = ap.parse_args(argv)
    if args.quick:
        args.batch, args.repeats = 64, 3
    torch.set_num_threads(args.threads)
    cases = run(args.batch, args.repeats, args.seed)
    result = {
        "config": dict(batch=args.batch, repeats=args.repeats, threads=args.threads,
                       seed=args.seed, output_times=100, rtol=1e-4, atol=1e-4,
                       machine=f"{platform.processor() or platform.machine()}, "
                               f"torch {torch.__version__}"),
        "cases": cases,
    }
    stem = Path(args.out)
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    md = markdown(result)
    stem.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
