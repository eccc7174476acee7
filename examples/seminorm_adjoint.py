"""Training with the adjoint method, with and without the seminorm.

``odeint_adjoint`` (or a model built with ``sensitivity="adjoint"``) takes gradients
by solving the adjoint system backwards in time, so memory does not grow with the
number of steps. The backward solve's error control normally also judges the
parameter adjoints, which are pure integrals that nothing in the dynamics reads;
the seminorm (Kidger et al.; ``adjoint_options=dict(norm="seminorm")``, or
``seminorm=True`` on a model) leaves them out and takes fewer backward steps.

The same continuous normalizing flow, from the same initial weights and on the
same batches, is trained on a 2-D density twice, and the backward NFE is summed.
The first section shows the call on a plain ``solve_adjoint``.

    python examples/seminorm_adjoint.py
"""

import copy

import torch
from torch import nn

from hyperode import solve_adjoint
from hyperode.data import sample_density
from hyperode.nn import CNF, CNFModel, SolverConfig, TimeConcat

torch.set_num_threads(1)
torch.manual_seed(0)

# 1. The call: gradients of a loss through solve_adjoint, the backward statistics after
#    .backward(). One field and one set of initial states, both norms.
field = nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 2))
func = lambda t, y: field(y)  # noqa: E731
y0 = torch.randn(128, 2)
t = torch.tensor([0.0, 1.0])
grads = {}
for norm in ("default", "seminorm"):
    field.zero_grad()
    sol = solve_adjoint(func, y0, t, rtol=1e-6, atol=1e-8, adjoint_params=tuple(field.parameters()),
                        adjoint_options=dict(norm=norm))
    sol.ys[-1].pow(2).sum().backward()
    grads[norm] = torch.cat([p.grad.flatten() for p in field.parameters()])
    print(f"solve_adjoint norm={norm!r}: backward NFE {sol.backward_stats.nfe}, "
          f"accepted {sol.backward_stats.accepted}, rejected {sol.backward_stats.rejected}")
diff = (grads["default"] - grads["seminorm"]).norm() / grads["default"].norm()
print(f"relative difference of the two gradients: {diff:.1e}")

# 2. Training: a CNF on the 8-Gaussians density, adjoint gradients, dopri5 at 1e-3/1e-6.
data = sample_density("8gaussians", 256 * 14, seed=0)
batches = data.reshape(14, 256, 2)
net = TimeConcat(nn.Sequential(nn.Linear(3, 32), nn.Softplus(), nn.Linear(32, 32),
                               nn.Softplus(), nn.Linear(32, 2)))
solver = SolverConfig.adaptive("dopri5", rtol=1e-3, atol=1e-6)
totals = {}
for seminorm in (False, True):
    model = CNFModel(CNF(copy.deepcopy(net)), solver=solver, sensitivity="adjoint",
                     seminorm=seminorm)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    backward_nfe = 0
    for x in batches:
        loss = -model.log_prob(x).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        backward_nfe += model.node.nfe_backward
    totals[seminorm] = backward_nfe
    name = "seminorm" if seminorm else "default norm"
    print(f"CNF, {name:>12}: NLL after {len(batches)} iterations {loss.item():.3f} nats, "
          f"backward NFE {backward_nfe}")

saving = 1 - totals[True] / totals[False]
print(f"seminorm backward NFE: {totals[True]} vs default {totals[False]} "
      f"({100 * saving:.0f}% fewer)")
