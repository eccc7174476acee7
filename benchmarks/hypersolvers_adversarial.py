"""Adversarial fitting (hypersolver paper, Sec. 6): the vector field learns to exploit
the solver with dynamics too fast for its step.

``fit(..., adversarial=Adversarial(...))`` alternates gradient *ascent* on the vector
field's parameters ``theta`` (maximise the hypersolver's trajectory error
``sum_k ||z_k - zbar_k||`` against dopri5) with the usual descent on ``g``. The paper
reports that the adversary learns stiff dynamics (eigenvalues of the Jacobian large
against ``1 / eps``). This script measures it:

- Field: ``f(z) = W2 tanh(W1 z + b1) + b2``, 2 -> 32 -> 2 (PyTorch's default init,
  seed 0), autonomous, on s in [0, 1]. HyperEuler with an MLP ``g`` (32, 32, PReLU,
  last layer zero), K = 4 steps (eps = 0.25), trajectory fitting, fresh batches of 64
  initial states from N(0, I) every 10 iterations, AdamW 1e-3 with cosine annealing,
  references by dopri5 at 1e-6.
- Three runs from the same field and ``g``: no adversary (the field stays put), the
  adversary projected to a ball of radius 0.5 ||theta_0|| per parameter tensor, and
  the unconstrained adversary (ascent lr 1e-2, one ascent step per iteration,
  gradient norm clipped at 1).
- Every 25 iterations, on 256 fixed probe states from N(0, I): the Jacobian
  eigenvalues ``lambda`` of ``f``; reported are ``eps * max |lambda|`` (the step is
  small against the field's time scales while this is well below 1; Euler's stability
  needs ``eps |lambda| <= 2`` on the negative real axis), and the most negative and most
  positive real parts (fast decay: stiffness; fast growth: expansion that no fixed step
  follows accurately). Also the trajectory error of the
  HyperEuler and of plain Euler on 256 held-out states, and the steps dopri5 needs at
  rtol = atol = 1e-5 (stiffness makes an explicit adaptive solver take more steps).

    .venv/bin/python benchmarks/hypersolvers_adversarial.py           # ~2-3 min, 1 thread
    .venv/bin/python benchmarks/hypersolvers_adversarial.py --quick   # ~20 s smoke run

Writes ``hypersolvers_adversarial.{json,md,png}`` under ``--out``.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hyperode import solve
from hyperode.hyper import Adversarial, HyperEuler, MLPHyperNet, fit
from hyperode.nn import Autonomous

ROOT = Path(__file__).resolve().parent.parent
NAME = "hypersolvers_adversarial"
STEPS = 4
T_SPAN = (0.0, 1.0)
RUNS: dict[str, Adversarial | None] = {
    "no adversary": None,
    "adversary, radius 0.5": Adversarial(field_lr=1e-2, radius=0.5),
    "adversary, unconstrained": Adversarial(field_lr=1e-2, radius=None),
}


def make_field(seed: int = 0) -> Autonomous:
    """``f(z) = W2 tanh(W1 z + b1) + b2``, 2 -> 32 -> 2, PyTorch default init."""
    torch.manual_seed(seed)
    return Autonomous(nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 2)))


def jacobian_eigenvalues(field: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """Eigenvalues of ``df/dz`` at each row of ``z`` ``[B, 2]`` -> complex ``[B, 2]``."""
    z = z.detach().requires_grad_(True)
    out = field(torch.zeros(()), z)
    rows = [torch.autograd.grad(out[:, i].sum(), z, retain_graph=i == 0)[0] for i in range(2)]
    jac = torch.stack(rows, dim=1)  # [B, out, in]
    return torch.linalg.eigvals(jac.double())


@torch.no_grad()
def trajectory_error(field: nn.Module, method: Any, z0: torch.Tensor) -> float:
    """Mean over samples of ``sum_k ||z_k - zbar_k||`` on the K-step mesh (dopri5 1e-8)."""
    t = torch.linspace(*T_SPAN, STEPS + 1, dtype=torch.float64)
    ref = solve(field, z0, t, method="dopri5", rtol=1e-8, atol=1e-8).ys
    ys = solve(field, z0, t, method=method, options=dict(num_steps=STEPS)).ys
    return float((ys - ref)[1:].norm(dim=-1).sum(0).mean())


@torch.no_grad()
def dopri5_steps(field: nn.Module, z0: torch.Tensor, tol: float = 1e-5) -> int:
    t = torch.tensor(T_SPAN, dtype=torch.float64)
    return solve(field, z0, t, method="dopri5", rtol=tol, atol=tol).stats.accepted


def probe(field: nn.Module, hyper: HyperEuler, probe_z: torch.Tensor,
          val_z: torch.Tensor) -> dict[str, float]:
    """Stiffness and error indicators of ``field`` and ``hyper`` (see the module doc)."""
    eps = (T_SPAN[1] - T_SPAN[0]) / STEPS
    lam = jacobian_eigenvalues(field, probe_z)
    return {"eps_max_abs_lambda": float(eps * lam.abs().max()),
            "min_real_lambda": float(lam.real.min()),
            "max_real_lambda": float(lam.real.max()),
            "error_hypereuler": trajectory_error(field, hyper, val_z),
            "error_euler": trajectory_error(field, "euler", val_z),
            "dopri5_steps_1e-5": dopri5_steps(field, val_z)}


def run(adversarial: Adversarial | None, iterations: int, probe_every: int,
        probe_z: torch.Tensor, val_z: torch.Tensor, seed: int = 0) -> dict[str, Any]:
    field = make_field(seed)
    torch.manual_seed(seed + 1)
    hyper = HyperEuler(MLPHyperNet(2, (32, 32)))
    gen = torch.Generator().manual_seed(seed + 2)

    def batches():
        while True:
            yield torch.randn(64, 2, generator=gen)

    trace = [{"iteration": 0, **probe(field, hyper, probe_z, val_z)}]

    def callback(i: int, loss: float, h: HyperEuler) -> None:
        if (i + 1) % probe_every == 0:
            trace.append({"iteration": i + 1, "loss": loss, **probe(field, h, probe_z, val_z)})

    start = time.perf_counter()
    history = fit(hyper, field, batches(), iterations=iterations, t_span=T_SPAN,
                  num_steps=STEPS, residual_weight=0.0, trajectory_weight=1.0, rtol=1e-6,
                  atol=1e-6, adversarial=copy.deepcopy(adversarial), progress=False,
                  callback=callback)
    return {"adversarial": None if adversarial is None else adversarial.__dict__,
            "trace": trace, "adversarial_loss": history.adversarial_loss,
            "seconds": time.perf_counter() - start}


def markdown(data: dict[str, Any]) -> str:
    md = [f"# Adversarial fitting: the field learns dynamics too fast for the step"
          f"{' — QUICK' if data['quick'] else ''}",
          "", f"Command: `{data['command']}` (CPU, 1 torch thread, float32; "
          f"{data['total_s']:.0f} s).", "",
          f"Field 2 -> 32 (tanh) -> 2, HyperEuler g MLP (32, 32), K = {STEPS} on "
          f"[0, 1] (eps = {1 / STEPS:g}), trajectory fitting, {data['iterations']} "
          "iterations. Probes on 256 fixed states (eigenvalues of df/dz) and 256 held-out "
          "states (trajectory error summed over the mesh, mean over samples, against "
          "dopri5 1e-8; dopri5 accepted steps at 1e-5).", "",
          "| run | iteration | eps max abs(lambda) | min Re lambda | max Re lambda | "
          "HyperEuler error | Euler error | dopri5 steps |",
          "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in data["runs"].items():
        for p in (r["trace"][0], r["trace"][len(r["trace"]) // 2], r["trace"][-1]):
            md.append(f"| {name} | {p['iteration']} | {p['eps_max_abs_lambda']:.3g} | "
                      f"{p['min_real_lambda']:.3g} | {p['max_real_lambda']:.3g} | "
                      f"{p['error_hypereuler']:.3g} | {p['error_euler']:.3g} | "
                      f"{p['dopri5_steps_1e-5']} |")
    md += ["", "## What it shows (generated from the numbers above)", ""]
    base = data["runs"]["no adversary"]["trace"][-1]
    for name, r in data["runs"].items():
        first, last = r["trace"][0], r["trace"][-1]
        md.append(f"- {name}: eps max|lambda| {first['eps_max_abs_lambda']:.3g} -> "
                  f"{last['eps_max_abs_lambda']:.3g}, dopri5 steps "
                  f"{first['dopri5_steps_1e-5']} -> {last['dopri5_steps_1e-5']}, "
                  f"HyperEuler error {first['error_hypereuler']:.3g} -> "
                  f"{last['error_hypereuler']:.3g} (Euler {last['error_euler']:.3g}; "
                  f"without adversary {base['error_hypereuler']:.3g}).")
    md += ["", reading(data), "",
           f"Plot: `{data['plot']}`.", ""]
    return "\n".join(md)


def reading(data: dict[str, Any]) -> str:
    """A verdict drawn from the unconstrained run's first and last probes."""
    r = data["runs"]["adversary, unconstrained"]["trace"]
    first, last = r[0], r[-1]
    grew = last["eps_max_abs_lambda"] > 2 * first["eps_max_abs_lambda"]
    parts = ["Reading: without an adversary the field is fixed and g drives the error down."]
    if not grew:
        parts.append("The adversary did not move the field's eigenvalues much in this run, "
                     "so the run does not show the paper's stiffness effect.")
        return " ".join(parts)
    kind = []
    if last["min_real_lambda"] < 2 * min(first["min_real_lambda"], -1e-12):
        kind.append("fast decaying modes (large negative real parts: stiffness)")
    if last["max_real_lambda"] > max(2 * first["max_real_lambda"], 0.0):
        kind.append("fast growing modes (large positive real parts)")
    parts.append("With an adversary, theta moves towards fields whose Jacobian has large "
                 "eigenvalues (eps max|lambda| grows, dopri5 needs more steps at the same "
                 "tolerance)" + (": " + " and ".join(kind) if kind else "") + ". On such a "
                 "field a fixed step of eps = 0.25 cannot follow the flow, whatever the "
                 "correction: g sees only z, f(z) and eps, and the adversary moves faster "
                 "than g adapts. The projection radius bounds how far it can go.")
    for name, run in data["runs"].items():
        end = run["trace"][-1]
        if run["adversarial"] is not None and end["error_hypereuler"] > end["error_euler"]:
            parts.append(f"In the run '{name}' the final g is *worse* than plain Euler on the "
                         f"final field ({end['error_hypereuler']:.3g} vs "
                         f"{end['error_euler']:.3g}): g was fitted against fields the "
                         f"adversary has since left, so adversarial fitting as implemented "
                         f"here does not harden g; it shows what a field can do to it.")
    return " ".join(parts)


def plot(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    keys = [("eps_max_abs_lambda", "eps * max |lambda(df/dz)|"),
            ("dopri5_steps_1e-5", "dopri5 accepted steps at 1e-5"),
            ("error_hypereuler", "HyperEuler trajectory error")]
    for ax, (key, label) in zip(axes, keys):
        for name, r in data["runs"].items():
            ax.plot([p["iteration"] for p in r["trace"]], [p[key] for p in r["trace"]],
                    marker="o", ms=2, label=name)
        ax.set(xlabel="fitting iteration", ylabel=label, yscale="log")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].axhline(2.0, color="grey", ls=":", lw=1)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 40 iterations")
    p.add_argument("--iterations", type=int, default=None, help="fitting iterations (400)")
    p.add_argument("--out", default=str(ROOT / "benchmarks/results"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    iterations = args.iterations or (40 if args.quick else 400)
    probe_every = max(4, iterations // 16)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = NAME + ("_quick" if args.quick else "")
    gen = torch.Generator().manual_seed(123)
    probe_z = torch.randn(256, 2, generator=gen)
    val_z = torch.randn(256, 2, generator=gen)
    start = time.perf_counter()
    runs = {}
    for label, adversarial in RUNS.items():
        runs[label] = run(adversarial, iterations, probe_every, probe_z, val_z)
        print(f"{label}: {runs[label]['seconds']:.0f} s")
    command = "python benchmarks/hypersolvers_adversarial.py" + (
        " " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    data = {"command": command, "quick": args.quick, "iterations": iterations,
            "steps": STEPS, "runs": runs, "total_s": time.perf_counter() - start,
            "plot": f"{name}.png",
            "versions": {"python": platform.python_version(), "torch": torch.__version__}}
    plot(data, out / f"{name}.png")
    (out / f"{name}.json").write_text(json.dumps(data, indent=2))
    md = markdown(data)
    (out / f"{name}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
