"""Is a trained model still an ODE? Evaluate it with more accurate solvers.

A Neural ODE trained with a solver that is too coarse can become a discrete model
tied to that solver (Ott et al., ICLR 2021): its accuracy changes when the same
weights are integrated more accurately. ``solver_independence_report`` measures
exactly that. Two models of the concentric-spheres task are trained here with the
same loop, one with a single Euler step and one with 3 RK4 steps, and each is
checked with Euler/Midpoint/RK4 at finer and coarser steps.

    python examples/check_odeness.py
"""

import torch

from hyperode.adapt import solver_independence_report
from hyperode.data import spheres
from hyperode.nn import SolverConfig, mlp_model

torch.set_num_threads(1)


def train(solver, split, iterations=400, seed=0):
    """A plain training loop: cross-entropy, Adam, gradient norm clipped at 1, batches of 128."""
    torch.manual_seed(seed)
    model = mlp_model(in_dim=2, hidden=32, augment=2, activation="relu", solver=solver)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(iterations):
        idx = torch.randint(len(split.x_train), (128,), generator=gen)
        loss = torch.nn.functional.cross_entropy(model(split.x_train[idx]), split.y_train[idx])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return model


split = spheres(dim=2, n_train=1000, n_test=1000, seed=0)
for solver in (SolverConfig.fixed("euler", num_steps=1), SolverConfig.fixed("rk4", num_steps=3)):
    model = train(solver, split)
    report = solver_independence_report(model, split, solver, threshold=0.1)
    print(f"\ntrained with {solver.method}, {solver.num_steps} step(s):")
    print(report.table())
    verdict = "still an ODE" if report.is_ode else "NOT an ODE: tied to its training solver"
    print(f"{solver.method} x{solver.num_steps}: train-solver accuracy "
          f"{report.train_accuracy:.3f}, max accuracy gap {report.max_gap:.3f} "
          f"(threshold {report.threshold}) -> {verdict}")
