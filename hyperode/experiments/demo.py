"""``hyperode demo``: every method on every reference problem, against the exact solution.

Fixed-step methods run with ``num_steps`` equal steps; adaptive ones at
``rtol``/``atol``. Implicit methods are for stiff problems, which these are not (on
the orbits their Newton iteration needs smaller steps than explicit methods do):
they are left out here. The table shows the maximum absolute error over the output
times, the number of vector-field evaluations and the steps taken.
"""

from __future__ import annotations

import torch

from ..odeint import solve
from ..solvers.config import method_kind
from ..solvers.methods import METHODS
from .reference_problems import reference_problems


def run_demo(*, num_steps: int = 100, rtol: float = 1e-6, atol: float = 1e-9,
             outputs: int = 11) -> list[dict]:
    """Solve every reference problem with every method; return one row per solve."""
    rows = []
    for problem in reference_problems():
        ts = torch.linspace(0.0, problem.t_end, outputs, dtype=torch.float64)
        exact = problem.exact(ts)
        for tableau in METHODS.values():
            if getattr(tableau, "implicit", False):
                continue
            if method_kind(tableau) != "fixed":
                sol = solve(problem.f, problem.initial_state(), ts, rtol=rtol, atol=atol,
                            method=tableau)
                setting = f"rtol={rtol:g}"
            else:
                sol = solve(problem.f, problem.initial_state(), ts, method=tableau,
                            options=dict(num_steps=num_steps))
                setting = f"{num_steps} steps"
            rows.append({
                "problem": problem.name, "method": tableau.name, "setting": setting,
                "max_error": float((sol.ys - exact).abs().max()), "nfe": sol.stats.nfe,
                "accepted": sol.stats.accepted, "rejected": sol.stats.rejected,
            })
    return rows


def format_table(rows: list[dict]) -> str:
    head = f"{'problem':<15}{'method':<15}{'setting':<13}{'max error':>11}{'NFE':>7}" \
           f"{'steps (acc/rej)':>17}"
    lines = [head, "-" * len(head)]
    last = None
    for r in rows:
        if last is not None and r["problem"] != last:
            lines.append("")
        last = r["problem"]
        steps = f"{r['accepted']}/{r['rejected']}"
        lines.append(f"{r['problem']:<15}{r['method']:<15}{r['setting']:<13}"
                     f"{r['max_error']:>11.2e}{r['nfe']:>7}{steps:>17}")
    return "\n".join(lines)
