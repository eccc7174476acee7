"""Dormand–Prince 5(4), FSAL, with its fourth-order continuous extension.

Coefficients: Dormand & Prince (1980). Two fourth-order embedded solutions are in
use for the error estimate: Hairer's DOPRI5 (and scipy's RK45) take
``b_hat = (5179/57600, 0, 7571/16695, 393/640, -92097/339200, 187/2100, 1/40)``,
torchdiffeq takes ``(1951/21600, 0, 22642/50085, 451/720, -12231/42400, 649/6300,
1/60)``. Both satisfy every fourth-order condition; the second's estimate is about
2/3 as large, so at equal rtol/atol it takes ~7.5% fewer steps and is
correspondingly less accurate, while at equal achieved error both need the same
NFE (``benchmarks/dopri5_estimators.py``). hyperode uses torchdiffeq's, so that a
user switching from torchdiffeq keeps the step sequence their tolerances were
tuned for; ``DOPRI5_HAIRER_B_HAT`` is kept here for reference.

The dense output is the one of Hairer,
Nørsett & Wanner, Solving ODEs I, §II.6 (their code ``DOPRI5``/``CONTD5``)::

    y(theta) = y0 + theta*(D + (1-theta)*(h k1 - D + theta*(2D - h k1 - h k7
               + (1-theta) * h * sum_i d_i k_i))),        D = y1 - y0

expanded here into per-stage polynomials ``b_i(theta)``.
"""

import numpy as np

from ..tableau import ButcherTableau, dense_from_polynomials

_B = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_B_HAT = (1951 / 21600, 0.0, 22642 / 50085, 451 / 720, -12231 / 42400, 649 / 6300, 1 / 60)
DOPRI5_HAIRER_B_HAT = (
    5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40,
)
_D = (
    -12715105075 / 11282082432,
    0.0,
    87487479700 / 32700410799,
    -10690763975 / 1880347072,
    701980252875 / 199316789632,
    -1453857185 / 822651844,
    69997945 / 29380423,
)


def _dense() -> tuple[tuple[float, ...], ...]:
    P = np.polynomial.Polynomial
    theta = P([0.0, 1.0])
    one_minus = 1 - theta
    polys = []
    for i in range(7):
        e1 = 1.0 if i == 0 else 0.0  # coefficient of k_i in h*k1
        e7 = 1.0 if i == 6 else 0.0  # ... and in h*k7 = h*f(t+h, y1)
        d, r3 = _B[i], e1 - _B[i]
        r4 = d - e7 - r3
        polys.append(theta * (d + one_minus * (r3 + theta * (r4 + one_minus * _D[i]))))
    return dense_from_polynomials(polys)


dopri5 = ButcherTableau(
    name="dopri5",
    c=(0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0),
    a=(
        (),
        (1 / 5,),
        (3 / 40, 9 / 40),
        (44 / 45, -56 / 15, 32 / 9),
        (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
        (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
        _B[:6],
    ),
    b=_B,
    b_error=tuple(x - y for x, y in zip(_B, _B_HAT)),
    order=5,
    error_order=4,
    dense=_dense(),
    dense_order=4,
)
