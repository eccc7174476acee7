"""A hypersolver on your own model: fit HyperEuler's correction g to a vector field.

Any ``f(t, z)`` works; here a small MLP field standing in for a trained Neural ODE.
``fit`` learns ``g`` by residual fitting against dopri5 on a mesh of K steps; the
fitted hypersolver then runs wherever a method name does (``odeint``, ``solve``,
``SolverConfig``) at the cost of Euler plus one small network per step.

    python examples/hypersolver_own_model.py
"""

import torch
from torch import nn

from hyperode import odeint, solve
from hyperode.hyper import HyperEuler, MLPHyperNet, fit
from hyperode.nn import Autonomous

torch.set_num_threads(1)
torch.manual_seed(0)
K = 10  # steps over t in [0, 1]

# Your model's vector field: here an untrained MLP with a rotation and a contraction.
net = nn.Sequential(nn.Linear(2, 64), nn.Tanh(), nn.Linear(64, 2))
with torch.no_grad():
    net[2].weight.mul_(3.0)
field = Autonomous(net)
for p in field.parameters():
    p.requires_grad_(False)  # the field is given; only g is fitted


def initial_states(n):
    """Where the model's trajectories start (for a classifier: input_map(x_train))."""
    return 2 * torch.rand(n, 2) - 1


hyper = HyperEuler(MLPHyperNet(state_dim=2, hidden=(32, 32)))
history = fit(hyper, field, [initial_states(256) for _ in range(8)], iterations=300,
              num_steps=K, lr=3e-3, progress=False)
print(f"fitted g: residual loss {history.loss[0]:.3g} -> {history.loss[-1]:.3g} "
      f"in {len(history.loss)} iterations")

# Evaluate on fresh initial states: the mean distance at t = 1 to a tight dopri5 solve.
z0 = initial_states(1000)
t = torch.tensor([0.0, 1.0])
with torch.no_grad():
    reference = odeint(field, z0, t, rtol=1e-8, atol=1e-8)[-1]
    rows = {}
    for name, method in [("euler", "euler"), ("midpoint", "midpoint"), ("hypereuler", hyper)]:
        sol = solve(field, z0, t, method=method, options=dict(num_steps=K))
        rows[name] = ((sol.ys[-1] - reference).norm(dim=1).mean().item(), sol.stats.nfe,
                      sol.stats.nfe_correction)

for name, (err, nfe, nfe_g) in rows.items():
    print(f"{name:>10} K={K}: terminal error {err:.3e}  NFE of f {nfe:3d}  NFE of g {nfe_g:3d}")
print(f"HyperEuler error / Euler error: {rows['hypereuler'][0] / rows['euler'][0]:.3f}")
