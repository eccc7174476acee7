"""Fixed-step explicit Runge–Kutta methods (no embedded error estimate)."""

from ..tableau import ButcherTableau, alpha

euler = ButcherTableau(name="euler", c=(0.0,), a=((),), b=(1.0,), order=1)

midpoint = alpha(0.5)
midpoint = ButcherTableau(name="midpoint", c=midpoint.c, a=midpoint.a, b=midpoint.b, order=2)

heun2 = ButcherTableau(name="heun2", c=(0.0, 1.0), a=((), (1.0,)), b=(0.5, 0.5), order=2)

ralston = ButcherTableau(
    name="ralston", c=(0.0, 2 / 3), a=((), (2 / 3,)), b=(1 / 4, 3 / 4), order=2
)

# Heun's third-order method (torchdiffeq's ``heun3``).
heun3 = ButcherTableau(
    name="heun3",
    c=(0.0, 1 / 3, 2 / 3),
    a=((), (1 / 3,), (0.0, 2 / 3)),
    b=(1 / 4, 0.0, 3 / 4),
    order=3,
)

# The classic fourth-order Runge–Kutta method. (torchdiffeq's ``rk4`` is the 3/8 rule,
# which is ``rk4_38`` here.)
rk4 = ButcherTableau(
    name="rk4",
    c=(0.0, 0.5, 0.5, 1.0),
    a=((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
    b=(1 / 6, 1 / 3, 1 / 3, 1 / 6),
    order=4,
)

rk4_38 = ButcherTableau(
    name="rk4_38",
    c=(0.0, 1 / 3, 2 / 3, 1.0),
    a=((), (1 / 3,), (-1 / 3, 1.0), (1.0, -1.0, 1.0)),
    b=(1 / 8, 3 / 8, 3 / 8, 1 / 8),
    order=4,
)

METHODS = (euler, midpoint, heun2, ralston, heun3, rk4, rk4_38)
