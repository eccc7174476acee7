"""The GPU figures in one prepared run (one NVIDIA GPU, under 5 minutes).

Three parts, every library measured in the same process, interleaved:

1. **Solver overhead vs batch size**: the damped-rotation MLP field of
   ``benchmarks/solver_overhead.py`` (``d=2, h=64``) at B = 256 .. 65536, dopri5 at
   rtol = atol = 1e-6 and rk4 (3/8 rule) with h = 0.1, hyperode vs torchdiffeq vs
   torchode (whichever are installed): median ms per solve (CUDA synchronised), NFE,
   one bare ``f`` call, overhead ratio ``wall / (NFE x bare f)``.
2. **Digits hypersolver inference**: ``digits_model`` (C=16) with a HyperEuler
   (``ConvHyperNet(16)``, random weights: the cost of a call does not depend on them)
   at K=10 on batches of 128 and 4096: ``hyperode.odeint`` (eager), ``FixedGridSolve``
   (eager), ``compile_solve`` without and with CUDA graphs, against dopri5 at 1e-4.
3. **Seminorm backward NFE unchanged on the device**: the adjoint of a small MLP Neural
   ODE (float64, dopri5 1e-6) with the default norm and with the seminorm, on the CPU
   and on the device: the backward NFE must be the same on both.

    python benchmarks/gpu.py                 # on a CUDA machine (< 5 min on one GPU)
    python benchmarks/gpu.py --dry-run       # tiny sizes on the CPU, no compiling (seconds)
    python benchmarks/gpu.py --quick         # small sizes, compiling included

Writes ``gpu_<date>.{json,md}`` (``gpu_<date>_dryrun``/``_quick`` for the smoke runs)
under ``--out``, with the device's name. Nothing here needs a GPU to import or to run
with ``--dry-run``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import solver_overhead as so

import hyperode
from hyperode.hyper import ConvHyperNet, FixedGridSolve, HyperEuler, compile_solve
from hyperode.nn import NeuralODE, SolverConfig
from hyperode.nn.architectures import digits_model

ROOT = Path(__file__).resolve().parent


# --------------------------------------------------------------------------- part 1


def overhead_part(device: torch.device, batches: list[int], target_s: float,
                  t_end: float) -> list[dict[str, Any]]:
    """hyperode / torchdiffeq / torchode on the MLP field at each batch size."""
    sync = so.make_sync(device)
    rows = []
    methods = (so.MethodSpec("dopri5", tol=1e-6), so.MethodSpec("rk4", step=0.1))
    for batch in batches:
        spec = so.FieldSpec(2, 64, batch)
        field_, y0 = so.make_problem(spec, seed=0, omega=4.0, decay=0.1, device=device)
        field_.requires_grad_(False)
        t = torch.tensor([0.0, t_end], dtype=torch.float32, device=device)
        t0 = t[0].clone()
        for m in methods:
            runners, stats = [], {}
            for make in (so.hyperode_runner, so.torchdiffeq_runner, so.torchode_runner):
                try:
                    r = make(field_, y0, t, m)
                except so.NotAvailable:
                    continue
                with torch.no_grad():
                    stats[r.library] = r.stats()
                runners.append(r)
            def bare_f(field_: nn.Module = field_, t0: torch.Tensor = t0,
                       y0: torch.Tensor = y0) -> None:
                with torch.no_grad():
                    field_(t0, y0)

            timings = so.time_case(
                runners, bare_f,
                grad=False, params=[], weights=y0, sync=sync, warmup=2, repeats=None,
                target_s=target_s, min_repeats=3, max_repeats=200, min_bare_calls=50)
            t_f = statistics.median(timings.bare_f)
            ref = stats["hyperode"].y_end.double()
            for r in runners:
                med = statistics.median(timings.solves[r.library])
                s = stats[r.library]
                rows.append(dict(batch=batch, method=m.key, setting=m.setting,
                                 library=r.library, nfe=s.nfe, median_ms=1e3 * med,
                                 bare_f_ms=1e3 * t_f,
                                 overhead_ratio=med / (s.nfe * t_f) if s.nfe else None,
                                 max_abs_diff_vs_hyperode=float(
                                     (s.y_end.double() - ref).abs().max())))
            tdq = next((x for x in rows[-len(runners):] if x["library"] == "torchdiffeq"), None)
            for x in rows[-len(runners):]:
                x["speed_vs_torchdiffeq"] = tdq["median_ms"] / x["median_ms"] if tdq else None
            print(f"  overhead B={batch} {m.key}: " + ", ".join(
                f"{x['library']} {x['median_ms']:.2f} ms (ratio {x['overhead_ratio']:.2f})"
                for x in rows[-len(runners):]), flush=True)
    return rows


# --------------------------------------------------------------------------- part 2


def timed_ms(fn: Callable[[], Any], sync: Callable[[], None], repeats: int) -> float:
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        times.append(so.time_call(fn, sync))
    return 1e3 * statistics.median(times)


def hypersolver_part(device: torch.device, batches: list[int], channels: int, steps: int,
                     repeats: int, compile_: bool) -> list[dict[str, Any]]:
    """The digits HyperEuler by every inference path, and dopri5 as the reference."""
    sync = so.make_sync(device)
    torch.manual_seed(0)
    model = digits_model(channels).to(device).eval()
    field = model.node.vector_field
    hyper = HyperEuler(ConvHyperNet(channels, zero_init=False)).to(device)
    rows = []
    t = torch.tensor([0.0, 1.0], device=device)
    for batch in batches:
        x = torch.randn(batch, 1, 8, 8, generator=torch.Generator().manual_seed(1)).to(device)
        with torch.no_grad():
            z0 = model.input_map(x)
            eager = FixedGridSolve(field, hyper, (0.0, 1.0), steps)
            ref = eager(z0)
            sol = hyperode.solve(field, z0, t, method="dopri5", rtol=1e-4, atol=1e-4)
            dopri5 = dict(method="dopri5", rtol=1e-4, atol=1e-4)
            fixed = dict(method=hyper, options=dict(num_steps=steps))
            row: dict[str, Any] = dict(
                batch=batch, steps=steps, dopri5_nfe=sol.stats.nfe,
                dopri5_ms=timed_ms(lambda z0=z0, kw=dopri5: hyperode.odeint(field, z0, t, **kw),
                                   sync, repeats),
                odeint_ms=timed_ms(lambda z0=z0, kw=fixed: hyperode.odeint(field, z0, t, **kw),
                                   sync, repeats),
                fixed_grid_ms=timed_ms(lambda z0=z0, eager=eager: eager(z0), sync, repeats))
        paths = [("compiled", False), ("cuda_graphs", True)] if compile_ else []
        for name, graphs in paths:
            if graphs and device.type != "cuda":
                row[f"{name}_ms"] = None  # CUDA graphs exist only on CUDA devices
                continue
            fn = compile_solve(field, hyper, (0.0, 1.0), steps, cuda_graphs=graphs)
            start = time.perf_counter()
            out = fn(z0)
            sync()
            row[f"{name}_compile_s"] = time.perf_counter() - start
            row[f"{name}_ms"] = timed_ms(lambda fn=fn, z0=z0: fn(z0), sync, repeats)
            row[f"{name}_max_abs_diff"] = float((out - ref).abs().max())
        rows.append(row)
        print(f"  hypersolver B={batch}: " + ", ".join(
            f"{k} {v:.2f}" for k, v in row.items() if k.endswith("_ms") and v is not None),
            flush=True)
    return rows


# --------------------------------------------------------------------------- part 3


def _adjoint_nfe(device: torch.device, norm: str, batch: int) -> dict[str, int]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 2)).double()
    node = NeuralODE(_Autonomous(net), (0.0, 1.0),
                     SolverConfig(method="dopri5", rtol=1e-6, atol=1e-6, adjoint_norm=norm),
                     sensitivity="adjoint").to(device)
    y0 = torch.randn(batch, 2, dtype=torch.float64,
                     generator=torch.Generator().manual_seed(1)).to(device)
    node(y0).square().sum().backward()
    return dict(forward=node.nfe_forward, backward=node.nfe_backward)


class _Autonomous(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(y)


def seminorm_part(device: torch.device, batch: int) -> list[dict[str, Any]]:
    rows = []
    for norm in ("default", "seminorm"):
        cpu = _adjoint_nfe(torch.device("cpu"), norm, batch)
        dev = _adjoint_nfe(device, norm, batch)
        rows.append(dict(norm=norm, cpu_forward=cpu["forward"], cpu_backward=cpu["backward"],
                         device_forward=dev["forward"], device_backward=dev["backward"],
                         unchanged=cpu == dev))
        print(f"  seminorm {norm}: backward NFE cpu {cpu['backward']}, device "
              f"{dev['backward']}", flush=True)
    return rows


# --------------------------------------------------------------------------- output


def _fmt(x: Any, spec: str = ".2f") -> str:
    return "n/a" if x is None else format(x, spec)


def write_markdown(path: Path, payload: dict[str, Any]) -> None:
    info = payload["machine"]
    lines = [f"# GPU figures ({info['device_name']})", "",
             f"Generated by `benchmarks/gpu.py{payload['config']['mode_flag']}` on "
             f"{info['date']} in {payload['elapsed_s']:.0f} s.", "",
             f"- Device: {info['device_name']}; host {info['cpu']}; torch {info['torch']}"
             f" (CUDA {info['cuda']}); torchdiffeq {info['torchdiffeq']}, torchode "
             f"{info['torchode']}", "",
             "## 1. Solver overhead vs batch size (MLP d=2 h=64, t in [0, "
             f"{payload['config']['t_end']:g}], float32, no grad)", "",
             "| B | method | library | NFE | median ms | bare f ms | overhead ratio | "
             "speed vs torchdiffeq | max abs diff vs hyperode |",
             "|---:|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in payload["overhead"]:
        lines.append(f"| {r['batch']} | {r['method']} {r['setting']} | {r['library']} | "
                     f"{r['nfe']} | {r['median_ms']:.3f} | {r['bare_f_ms']:.4f} | "
                     f"{_fmt(r['overhead_ratio'])} | {_fmt(r['speed_vs_torchdiffeq'])}x | "
                     f"{r['max_abs_diff_vs_hyperode']:.1e} |")
    lines += ["", "## 2. Digits HyperEuler inference (ms per call)", "",
              "| B | K | odeint | FixedGridSolve | compiled | CUDA graphs | dopri5 1e-4 (NFE) "
              "| compile s (compiled / graphs) | max abs diff compiled |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in payload["hypersolver"]:
        lines.append(
            f"| {r['batch']} | {r['steps']} | {r['odeint_ms']:.2f} | {r['fixed_grid_ms']:.2f} "
            f"| {_fmt(r.get('compiled_ms'))} | {_fmt(r.get('cuda_graphs_ms'))} | "
            f"{r['dopri5_ms']:.2f} ({r['dopri5_nfe']}) | "
            f"{_fmt(r.get('compiled_compile_s'), '.1f')} / "
            f"{_fmt(r.get('cuda_graphs_compile_s'), '.1f')} | "
            f"{_fmt(r.get('compiled_max_abs_diff'), '.1e')} |")
    lines += ["", "## 3. Adjoint backward NFE, CPU vs device (dopri5 1e-6, float64)", "",
              "| norm | forward NFE cpu / device | backward NFE cpu / device | unchanged |",
              "|---|---:|---:|---|"]
    for r in payload["seminorm"]:
        lines.append(f"| {r['norm']} | {r['cpu_forward']} / {r['device_forward']} | "
                     f"{r['cpu_backward']} / {r['device_backward']} | "
                     f"{'yes' if r['unchanged'] else '**no**'} |")
    path.write_text("\n".join(lines) + "\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true",
                      help="tiny sizes, no compiling; runs on the CPU when there is no GPU")
    mode.add_argument("--quick", action="store_true", help="small sizes, compiling included")
    p.add_argument("--device", default=None, help="default cuda (cpu for --dry-run without one)")
    p.add_argument("--out", type=Path, default=ROOT / "results")
    args = p.parse_args(argv)
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() or not args.dry_run else "cpu"
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("no CUDA device (torch.cuda.is_available() is False); use --dry-run to "
                "exercise the script on the CPU")
    if args.dry_run:
        args.batches, args.hyper_batches, args.target_s = [16], [4], 0.0
        args.channels, args.steps, args.repeats, args.compile = 4, 2, 2, False
    elif args.quick:
        args.batches, args.hyper_batches, args.target_s = [256, 4096], [128], 0.1
        args.channels, args.steps, args.repeats, args.compile = 16, 10, 5, True
    else:
        args.batches = [256, 1024, 4096, 16384, 65536]
        args.hyper_batches, args.target_s = [128, 4096], 0.4
        args.channels, args.steps, args.repeats, args.compile = 16, 10, 20, True
    args.mode_flag = " --dry-run" if args.dry_run else " --quick" if args.quick else ""
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    start = time.perf_counter()
    info = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
            else f"CPU ({platform.processor() or platform.machine()})",
            "cpu": f"{os.cpu_count()} logical CPUs", "torch": torch.__version__,
            "cuda": torch.version.cuda, "torchdiffeq": getattr(so.torchdiffeq, "__version__",
                                                              None),
            "torchode": getattr(so.torchode, "__version__", None)}
    print(f"device {info['device_name']} | torch {info['torch']}", flush=True)
    t_end = 0.5 if args.dry_run else 5.0
    payload = {
        "machine": info,
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        | {"t_end": t_end},
        "overhead": overhead_part(device, args.batches, args.target_s, t_end),
        "hypersolver": hypersolver_part(device, args.hyper_batches, args.channels, args.steps,
                                        args.repeats, args.compile),
        "seminorm": seminorm_part(device, 16 if args.dry_run else 256),
    }
    payload["elapsed_s"] = time.perf_counter() - start
    suffix = "_dryrun" if args.dry_run else "_quick" if args.quick else ""
    stem = f"gpu_{info['date'][:10]}{suffix}"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(payload, indent=2) + "\n")
    write_markdown(args.out / f"{stem}.md", payload)
    print(f"wrote {args.out / stem}.json and .md ({payload['elapsed_s']:.0f} s)")
    bad = [r["norm"] for r in payload["seminorm"] if not r["unchanged"]]
    if bad:
        print(f"WARNING: adjoint NFE differ between CPU and device for {bad}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
