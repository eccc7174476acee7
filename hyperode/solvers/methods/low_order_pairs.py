"""Low-order embedded pairs: adaptive Heun 2(1), Fehlberg 2(1), Bogacki–Shampine 3(2).

None of them carries its own continuous extension; output between steps uses the
cubic Hermite interpolant through ``(y0, f0, y1, f1)`` (``hyperode.solvers.step``).
"""

from ..tableau import ButcherTableau

# Heun's method with Euler as the embedded first-order estimate.
adaptive_heun = ButcherTableau(
    name="adaptive_heun",
    c=(0.0, 1.0),
    a=((), (1.0,)),
    b=(0.5, 0.5),
    b_error=(0.5 - 1.0, 0.5),
    order=2,
    error_order=1,
)

# Fehlberg's RKF1(2) pair, propagating the second-order solution (as torchdiffeq does).
fehlberg2 = ButcherTableau(
    name="fehlberg2",
    c=(0.0, 0.5, 1.0),
    a=((), (0.5,), (1 / 256, 255 / 256)),
    b=(1 / 512, 255 / 256, 1 / 512),
    b_error=(1 / 512 - 1 / 256, 0.0, 1 / 512),
    order=2,
    error_order=1,
)

# Bogacki & Shampine (1989), FSAL.
bosh3 = ButcherTableau(
    name="bosh3",
    c=(0.0, 0.5, 0.75, 1.0),
    a=((), (0.5,), (0.0, 0.75), (2 / 9, 1 / 3, 4 / 9)),
    b=(2 / 9, 1 / 3, 4 / 9, 0.0),
    b_error=(2 / 9 - 7 / 24, 1 / 3 - 1 / 4, 4 / 9 - 1 / 3, -1 / 8),
    order=3,
    error_order=2,
)

METHODS = (adaptive_heun, fehlberg2, bosh3)
