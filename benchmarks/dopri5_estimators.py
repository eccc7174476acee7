"""dopri5's two embedded error estimators: same work at equal error, different calibration.

Runs dopri5 with torchdiffeq's embedded weights (hyperode's default) and with
Hairer's DOPRI5 weights at 16 tolerances from 1e-3 to 1e-10.5 on the reference
problems with closed-form solutions and two MLP vector fields, and reports per
problem (a) NFE(torchdiffeq weights) / NFE(Hairer weights) at the same tolerance
and (b) the same ratio at the same achieved error (log-log interpolation).
Deterministic: counts, not seconds.

    python benchmarks/dopri5_estimators.py   # writes benchmarks/results/dopri5_estimators.json
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import torch

import hyperode
from hyperode import METHODS, ButcherTableau
from hyperode.experiments.reference_problems import reference_problems
from hyperode.solvers.methods.dopri5 import DOPRI5_HAIRER_B_HAT

RESULTS = pathlib.Path(__file__).parent / "results"


def hairer_dopri5() -> ButcherTableau:
    d5 = METHODS["dopri5"]
    return ButcherTableau(
        name="dopri5_hairer", c=d5.c, a=d5.a, b=d5.b,
        b_error=[b - bh for b, bh in zip(d5.b, DOPRI5_HAIRER_B_HAT)], order=5, error_order=4,
        dense=d5.dense, dense_order=d5.dense_order,
    )


def mlp_case(dim: int, hidden: int, batch: int):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.Tanh(),
                              torch.nn.Linear(hidden, dim)).double()
    with torch.no_grad():  # a damped rotation through the tanh layer: many steps, no blow-up
        k = torch.randn(dim, dim, dtype=torch.float64)
        k = (k - k.T) / torch.linalg.matrix_norm(k - k.T, 2)
        w1 = net[0].weight
        net[2].weight.copy_((4 * k - 0.1 * torch.eye(dim, dtype=torch.float64)) @ w1.T
                            / torch.linalg.matrix_norm(w1, 2) ** 2)
    y0 = torch.randn(batch, dim, dtype=torch.float64)
    t = torch.linspace(0.0, 5.0, 6, dtype=torch.float64)
    f = lambda t, y: net(y)  # noqa: E731
    with torch.no_grad():
        ref = hyperode.odeint(f, y0, t, rtol=1e-13, atol=1e-13)
    return f"mlp_d{dim}_h{hidden}", f, y0, t, ref


def main() -> None:
    cases = []
    for p in reference_problems():
        t = torch.linspace(0.0, p.t_end, 11, dtype=torch.float64)
        cases.append((p.name, p.f, p.initial_state(), t, p.exact(t)))
    cases += [mlp_case(2, 64, 256), mlp_case(16, 64, 64)]
    methods = {"torchdiffeq_weights": METHODS["dopri5"], "hairer_weights": hairer_dopri5()}
    tols = (10.0 ** -np.arange(3, 11, 0.5)).tolist()
    out = []
    print(f"{'problem':<16}{'NFE ratio, same tol':>22}{'NFE ratio, same error':>24}")
    with torch.no_grad():
        for name, f, y0, t, ref in cases:
            curves = {}
            for key, m in methods.items():
                curves[key] = [
                    (s.stats.nfe, float((s.ys - ref).abs().max()))
                    for s in (hyperode.solve(f, y0, t, rtol=tol, atol=tol, method=m)
                              for tol in tols)
                ]
            a, b = np.array(curves["hairer_weights"]), np.array(curves["torchdiffeq_weights"])
            same_tol = float(np.median(b[:, 0] / a[:, 0]))
            order = np.argsort(b[:, 1])
            same_err = float(np.median([
                np.exp(np.interp(np.log(err), np.log(b[order, 1]), np.log(b[order, 0]))) / nfe
                for nfe, err in a
            ]))
            print(f"{name:<16}{same_tol:>22.3f}{same_err:>24.3f}")
            out.append(dict(problem=name, nfe_ratio_same_tol=same_tol,
                            nfe_ratio_same_error=same_err, tolerances=tols, curves=curves))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "dopri5_estimators.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
