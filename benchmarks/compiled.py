"""Compiled fixed-step solves (``hyperode.hyper.compile_solve``) against eager, for
inference and for training, on the digits Neural ODE.

The model is ``hyperode.nn.architectures.digits_model`` (Conv 1->C, an ODE block with
``f = Conv C->C -> Softplus -> Conv C->C`` (3x3) on the state ``[B, C, 8, 8]``, pool,
linear head), seeded, on a batch of N(0, 1) inputs of shape ``[B, 1, 8, 8]`` (the cost
of every layer is independent of the values). For each fixed-grid method and step count:

- inference: ``hyperode.solve`` (eager, with its checks and statistics), the bare
  fixed-grid module ``FixedGridSolve`` (eager) and ``compile_solve`` (inductor on CPU),
  all under ``torch.no_grad()``, ``z0 -> z(1)``;
- training: forward and backward of a cross-entropy loss through the ODE block
  (input map and head eager), with the block eager (``FixedGridSolve``) or compiled
  (``compile_solve(..., no_grad=False)``: AOTAutograd compiles forward and backward).

Reported: median ms per call (time of this thread, ``time.thread_time``, which a shared
machine's other processes inflate less than the wall clock), the bare ``f`` time x NFE
(what a solver with no overhead of its own would cost), the compile time (the first
call, wall clock), the speed-up over eager, the number of calls after which compiling
has paid for itself, and the largest difference of the compiled output (and gradients)
from eager.

    .venv/bin/python benchmarks/compiled.py            # full: B=128, C=16, K=10 (minutes)
    .venv/bin/python benchmarks/compiled.py --quick    # smoke run: tiny sizes (~1 min)

Writes ``compiled.{json,md}`` under ``--out`` (``compiled_quick.*`` with ``--quick``).
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

import hyperode
from hyperode.hyper import FixedGridSolve, compile_solve
from hyperode.nn.architectures import digits_model

ROOT = Path(__file__).resolve().parent
NFE_PER_STEP = {"euler": 1, "midpoint": 2, "rk4": 4}


def thread_ms(fn: Callable[[], Any], repeats: int, warmup: int = 2) -> float:
    """Median thread CPU time of ``fn()`` in ms after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.thread_time()
        fn()
        times.append(time.thread_time() - start)
    return 1e3 * statistics.median(times)


def first_call_s(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach() - b.detach()).abs().max())


def inference_case(field: nn.Module, z0: torch.Tensor, method: str, steps: int,
                   repeats: int) -> dict[str, Any]:
    t = torch.tensor([0.0, 1.0])
    module = FixedGridSolve(field, method, (0.0, 1.0), steps)
    compiled = compile_solve(field, method, (0.0, 1.0), steps)
    with torch.no_grad():
        eager_out = module(z0)
        compile_s = first_call_s(lambda: compiled(z0))
        t_zero = torch.zeros(())
        row = {
            "solve_ms": thread_ms(lambda: hyperode.odeint(
                field, z0, t, method=method, options=dict(num_steps=steps)), repeats),
            "fixed_grid_ms": thread_ms(lambda: module(z0), repeats),
            "compiled_ms": thread_ms(lambda: compiled(z0), repeats),
            "bare_f_ms": thread_ms(lambda: field(t_zero, z0), 3 * repeats),
            "max_abs_diff": max_diff(compiled(z0), eager_out),
        }
    row["compile_s"] = compile_s
    return row


def training_case(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, method: str,
                  steps: int, repeats: int) -> dict[str, Any]:
    field = model.node.vector_field
    params = list(model.parameters())
    eager_block = FixedGridSolve(field, method, (0.0, 1.0), steps)
    compiled_block = compile_solve(field, method, (0.0, 1.0), steps, no_grad=False)

    def step(block: Callable[[torch.Tensor], torch.Tensor]) -> list[torch.Tensor]:
        for p in params:
            p.grad = None
        logits = model.output_map(block(model.input_map(x)))
        nn.functional.cross_entropy(logits, labels).backward()
        return [p.grad.clone() for p in params]

    eager_grads = step(eager_block)
    compile_s = first_call_s(lambda: step(compiled_block))
    compiled_grads = step(compiled_block)
    rel = max(max_diff(a, b) / max(float(b.abs().max()), 1e-30)
              for a, b in zip(compiled_grads, eager_grads))
    return {
        "eager_ms": thread_ms(lambda: step(eager_block), repeats),
        "compiled_ms": thread_ms(lambda: step(compiled_block), repeats),
        "compile_s": compile_s,
        "max_rel_grad_diff": rel,
    }


def finish(row: dict[str, Any], eager_key: str) -> None:
    """Speed-up and break-even calls (compile time / time saved per call)."""
    eager, compiled = row[eager_key], row["compiled_ms"]
    row["speedup"] = eager / compiled
    saved_s = (eager - compiled) / 1e3
    row["break_even_calls"] = row["compile_s"] / saved_s if saved_s > 0 else None


def write_markdown(path: Path, payload: dict[str, Any]) -> None:
    cfg, info = payload["config"], payload["machine"]
    lines = [
        "# Compiled fixed-step solves vs eager (digits Neural ODE)", "",
        f"Generated by `benchmarks/compiled.py{' --quick' if cfg['quick'] else ''}` on "
        f"{info['date']}.", "",
        f"- Machine: {info['cpu']} ({info['cpus']} logical CPUs), load average at start "
        f"{info['load_start']}, at end {info['load_end']}; torch {info['torch']}, "
        f"torch threads {cfg['threads']}, float32, CPU",
        f"- Model: digits_model(channels={cfg['channels']}), batch {cfg['batch']}, state "
        f"[{cfg['batch']}, {cfg['channels']}, 8, 8], t in [0, 1]; median of {cfg['repeats']} "
        "calls (thread CPU time) after 2 warm-up calls; compile time = first call (wall)",
        "",
        "## Inference (`torch.no_grad()`, z0 -> z(1))", "",
        "| method | K | NFE | solve ms | FixedGridSolve ms | compiled ms | bare f x NFE ms | "
        "compile s | speed-up vs FixedGridSolve | break-even calls | max abs diff |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in payload["inference"]:
        be = f"{r['break_even_calls']:.0f}" if r["break_even_calls"] else "never"
        lines.append(
            f"| {r['method']} | {r['steps']} | {r['nfe']} | {r['solve_ms']:.2f} | "
            f"{r['fixed_grid_ms']:.2f} | {r['compiled_ms']:.2f} | "
            f"{r['bare_f_ms'] * r['nfe']:.2f} | {r['compile_s']:.1f} | {r['speedup']:.2f}x | "
            f"{be} | {r['max_abs_diff']:.1e} |")
    lines += ["", "## Training (forward + backward of a cross-entropy loss)", "",
              "| method | K | eager ms | compiled ms | compile s | speed-up | break-even calls "
              "| max rel grad diff |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in payload["training"]:
        be = f"{r['break_even_calls']:.0f}" if r["break_even_calls"] else "never"
        lines.append(
            f"| {r['method']} | {r['steps']} | {r['eager_ms']:.2f} | {r['compiled_ms']:.2f} | "
            f"{r['compile_s']:.1f} | {r['speedup']:.2f}x | {be} | "
            f"{r['max_rel_grad_diff']:.1e} |")
    lines += ["", "## Reading", ""]
    for r in payload["inference"]:
        floor = r["bare_f_ms"] * r["nfe"]
        lines.append(
            f"- Inference {r['method']} K={r['steps']}: compiled {r['speedup']:.2f}x eager "
            f"FixedGridSolve; the vector field alone (bare f x NFE, {floor:.1f} ms) is "
            f"{floor / r['fixed_grid_ms']:.0%} of the eager time, so compiling the solver "
            f"can at most remove the other {1 - floor / r['fixed_grid_ms']:.0%} unless it "
            "also makes the convolutions faster.")
    lines.append("")
    path.write_text("\n".join(lines) + "\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes, one method (smoke run)")
    p.add_argument("--batch", type=int, default=None, help="default 128 (quick 8)")
    p.add_argument("--channels", type=int, default=None, help="default 16 (quick 4)")
    p.add_argument("--steps", type=int, default=None, help="K, default 10 (quick 2)")
    p.add_argument("--methods", nargs="+", default=None, choices=sorted(NFE_PER_STEP),
                   help="inference methods (default euler rk4; quick euler)")
    p.add_argument("--train-methods", nargs="+", default=None, choices=sorted(NFE_PER_STEP),
                   help="training methods (default rk4; quick euler)")
    p.add_argument("--repeats", type=int, default=None, help="default 9 (quick 3)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=ROOT / "results")
    args = p.parse_args(argv)
    q = args.quick
    args.batch = args.batch or (8 if q else 128)
    args.channels = args.channels or (4 if q else 16)
    args.steps = args.steps or (2 if q else 10)
    args.methods = args.methods or (["euler"] if q else ["euler", "rk4"])
    args.train_methods = args.train_methods or (["euler"] if q else ["rk4"])
    args.repeats = args.repeats or (3 if q else 9)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    info = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "torch": torch.__version__, "load_start": _load()}
    try:
        with open("/proc/cpuinfo") as fh:
            info["cpu"] = next(line.split(":", 1)[1].strip() for line in fh
                               if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    torch.manual_seed(0)
    model = digits_model(args.channels)
    x = torch.randn(args.batch, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    labels = torch.randint(0, 10, (args.batch,), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        z0 = model.input_map(x)
    field = model.node.vector_field
    inference, training = [], []
    for method in args.methods:
        row = {"method": method, "steps": args.steps,
               "nfe": NFE_PER_STEP[method] * args.steps,
               **inference_case(field, z0, method, args.steps, args.repeats)}
        finish(row, "fixed_grid_ms")
        inference.append(row)
        print(f"inference {method} K={args.steps}: eager {row['fixed_grid_ms']:.2f} ms, "
              f"compiled {row['compiled_ms']:.2f} ms ({row['speedup']:.2f}x), "
              f"compile {row['compile_s']:.1f} s", flush=True)
    for method in args.train_methods:
        row = {"method": method, "steps": args.steps,
               **training_case(model, x, labels, method, args.steps, args.repeats)}
        finish(row, "eager_ms")
        training.append(row)
        print(f"training {method} K={args.steps}: eager {row['eager_ms']:.2f} ms, "
              f"compiled {row['compiled_ms']:.2f} ms ({row['speedup']:.2f}x), "
              f"compile {row['compile_s']:.1f} s", flush=True)
    info["load_end"] = _load()
    payload = {"machine": info, "config": {k: str(v) if isinstance(v, Path) else v
                                           for k, v in vars(args).items()},
               "inference": inference, "training": training}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "compiled_quick" if args.quick else "compiled"
    (args.out / f"{stem}.json").write_text(json.dumps(payload, indent=2) + "\n")
    write_markdown(args.out / f"{stem}.md", payload)
    print(f"wrote {args.out / stem}.json and .md")
    return 0


def _load() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") \
        else "n/a"


if __name__ == "__main__":
    sys.exit(main())
