"""Quickstart: solve an ODE, read the statistics, take a gradient.

A batch of damped harmonic oscillators ``x'' = -x - 2 zeta x'`` has a closed-form
solution, so every figure printed below is an error against the exact answer.

    python examples/quickstart_odeint.py
"""

import math

import torch

from hyperode import odeint, solve

torch.set_num_threads(1)
torch.manual_seed(0)
zeta = 0.1  # damping ratio; the oscillators are underdamped
omega = math.sqrt(1 - zeta**2)


def field(t, y):
    """dy/dt for y = [x, v] of shape [B, 2] (t is a 0-dim tensor, unused here)."""
    x, v = y[:, 0], y[:, 1]
    return torch.stack([v, -x - 2 * zeta * v], dim=1)


def exact(t, y0):
    """The closed-form solution at times t [T] for initial states y0 [B, 2] -> [T, B, 2]."""
    x0, v0 = y0[:, 0], y0[:, 1]
    t = t[:, None]
    decay = torch.exp(-zeta * t)
    a, b = x0, (v0 + zeta * x0) / omega
    x = decay * (a * torch.cos(omega * t) + b * torch.sin(omega * t))
    v = decay * ((b * omega - zeta * a) * torch.cos(omega * t)
                 - (a * omega + zeta * b) * torch.sin(omega * t))
    return torch.stack([x, v], dim=2)


y0 = torch.randn(64, 2, dtype=torch.float64)
t = torch.linspace(0.0, 10.0, 21, dtype=torch.float64)
reference = exact(t, y0)

# 1. torchdiffeq's call: the default method is dopri5 with rtol=1e-7, atol=1e-9.
ys = odeint(field, y0, t)
print(f"odeint (dopri5, default tolerances): ys {tuple(ys.shape)}, "
      f"max error vs exact: {(ys - reference).abs().max():.2e}")

# 2. solve() returns the same states plus the solver's statistics.
sol = solve(field, y0, t, method="tsit5", rtol=1e-6, atol=1e-8)
s = sol.stats
print(f"solve (tsit5, rtol=1e-6): nfe={s.nfe} accepted={s.accepted} rejected={s.rejected}, "
      f"max error vs exact: {(sol.ys - reference).abs().max():.2e}")

# 3. A fixed grid: classic RK4 with 200 equal steps (outputs are landed on exactly).
ys_rk4 = odeint(field, y0, t, method="rk4", options=dict(num_steps=200))
print(f"odeint (rk4, 200 steps): max error vs exact: {(ys_rk4 - reference).abs().max():.2e}")

# 4. Gradients flow through the solver: d x(T) / d x(0), summed over the batch,
#    against the derivative of the closed form.
y0_leaf = y0.clone().requires_grad_(True)
x_end = odeint(field, y0_leaf, t)[-1, :, 0].sum()
(grad,) = torch.autograd.grad(x_end, y0_leaf)
T = t[-1]
dxT_dx0 = math.exp(-zeta * T) * (math.cos(omega * T) + zeta / omega * math.sin(omega * T))
print(f"gradient d x(T) / d x(0): max error vs exact: {(grad[:, 0] - dxT_dx0).abs().max():.2e}")
