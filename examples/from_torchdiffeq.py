"""Switching from torchdiffeq: the same call, and the few things that differ.

The only change to torchdiffeq code is the import. This script runs the same
``odeint`` calls through both libraries when torchdiffeq is installed (it is in
hyperode's dev extra; the library itself never imports it) and shows the
deliberate differences.

    python examples/from_torchdiffeq.py
"""

import torch
from torch import nn

from hyperode import SolverError, odeint  # was: from torchdiffeq import odeint

try:
    import torchdiffeq
except ImportError:  # the comparison is optional; the hyperode half always runs
    torchdiffeq = None

torch.set_num_threads(1)
torch.manual_seed(0)


class Field(nn.Module):
    """A small time-dependent MLP field, f(t, y) with y [B, 2]."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 32), nn.Tanh(), nn.Linear(32, 2))

    def forward(self, t, y):
        return self.net(torch.cat([y, t.expand(y.shape[0], 1)], dim=1))


func = Field().double()
y0 = torch.randn(16, 2, dtype=torch.float64)
t = torch.linspace(0.0, 2.0, 9, dtype=torch.float64)

# The same call, the same defaults (dopri5, rtol=1e-7, atol=1e-9), the same output shape.
ours = odeint(func, y0, t)
print(f"hyperode dopri5: ys {tuple(ours.shape)}")
if torchdiffeq is not None:
    theirs = torchdiffeq.odeint(func, y0, t)
    # Equal step sequences until a step is rejected (hyperode then does not let the next
    # step grow), so the two agree to about the tolerance, not to rounding.
    print(f"max |hyperode - torchdiffeq| (dopri5): {(ours - theirs).abs().max():.2e}")

    # Difference 1: torchdiffeq's "rk4" is the 3/8 rule; hyperode's "rk4" is the classic
    # method and "rk4_38" is torchdiffeq's. Difference 2: on a fixed grid hyperode lands
    # on every output time, torchdiffeq interpolates linearly inside a step;
    # interp="linear" asks hyperode for torchdiffeq's behaviour.
    opts = dict(step_size=0.3)
    theirs_rk4 = torchdiffeq.odeint(func, y0, t, method="rk4", options=opts)
    same = odeint(func, y0, t, method="rk4_38", options=dict(opts, interp="linear"))
    print(f"max |hyperode rk4_38 + interp='linear' - torchdiffeq rk4|: "
          f"{(same - theirs_rk4).abs().max():.2e}")
    landed = odeint(func, y0, t, method="rk4", options=opts)
    print(f"max |hyperode rk4 (classic, landing on outputs) - torchdiffeq rk4|: "
          f"{(landed - theirs_rk4).abs().max():.2e} (a different method and grid)")
else:
    print("torchdiffeq is not installed: skipping the side-by-side comparison")

# Difference 3: an unknown or inapplicable option is an error, not a warning.
try:
    odeint(func, y0, t, method="dopri5", options=dict(step_sise=0.1))
except ValueError as error:
    print(f"misspelt option -> ValueError: {str(error).splitlines()[0]}")

# Difference 4: a failed solve raises a hyperode.SolverError naming the time, instead of
# an assertion. Here the state blows up in finite time (y' = y^2, y(0) = 1, at t = 1).
try:
    odeint(lambda t, y: y**2, torch.ones(1, dtype=torch.float64), torch.tensor([0.0, 2.0]))
except SolverError as error:
    print(f"blow-up -> {type(error).__name__}: {str(error).splitlines()[0][:100]}")
