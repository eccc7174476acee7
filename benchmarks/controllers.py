"""Which step-size controller should be the default? Count NFE, not seconds.

Runs dopri5, tsit5 and bosh3 with the I- and the PI-controller on the reference
problems with closed-form solutions and on a random MLP vector field, at three
tolerances, and reports total NFE, rejected steps and the error relative to the
exact (or a tight-tolerance) solution. Deterministic: no timing involved.

    python benchmarks/controllers.py            # writes benchmarks/results/controllers.json
"""

from __future__ import annotations

import json
import pathlib

import torch

import hyperode
from hyperode.experiments.reference_problems import reference_problems

RESULTS = pathlib.Path(__file__).parent / "results"
CONTROLLERS = {
    "i": hyperode.IController(),  # torchdiffeq's rule: no shrink after an accepted step
    "i-shrink": hyperode.IController(shrink_after_accept=True),  # textbook I-controller
    "pi": hyperode.PIController(),
}


def mlp_problem():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 64), torch.nn.Tanh(), torch.nn.Linear(64, 2))
    net = net.double()
    y0 = torch.randn(256, 2, dtype=torch.float64)
    t = torch.linspace(0.0, 5.0, 6, dtype=torch.float64)
    with torch.no_grad():
        ref = hyperode.odeint(lambda t, y: net(y), y0, t, rtol=1e-13, atol=1e-13)
    return "mlp_2_64_2", (lambda t, y: net(y)), y0, t, ref


def main() -> None:
    cases = []
    for p in reference_problems():
        t = torch.linspace(0.0, p.t_end, 11, dtype=torch.float64)
        cases.append((p.name, p.f, p.initial_state(), t, p.exact(t)))
    cases.append(mlp_problem())
    rows = []
    with torch.no_grad():
        for method in ("dopri5", "tsit5", "bosh3"):
            for tol in (1e-3, 1e-6, 1e-9):
                for controller in ("i", "i-shrink", "pi"):
                    nfe = rejected = 0
                    worst = 0.0
                    for _, f, y0, t, ref in cases:
                        sol = hyperode.solve(f, y0, t, rtol=tol, atol=tol, method=method,
                                             options=dict(controller=CONTROLLERS[controller]))
                        nfe += sol.stats.nfe
                        rejected += sol.stats.rejected
                        worst = max(worst, float((sol.ys - ref).abs().max()))
                    rows.append(dict(method=method, tol=tol, controller=controller, nfe=nfe,
                                     rejected=rejected, max_error=worst))
    print(f"{'method':<8}{'tol':>7}{'ctrl':>9}{'NFE':>8}{'rejected':>10}{'max error':>11}")
    for r in rows:
        print(f"{r['method']:<8}{r['tol']:>7.0e}{r['controller']:>9}{r['nfe']:>8}"
              f"{r['rejected']:>10}{r['max_error']:>11.2e}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "controllers.json").write_text(json.dumps(
        {"problems": [c[0] for c in cases], "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
