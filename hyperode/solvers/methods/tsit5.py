"""Tsitouras 5(4), FSAL, with its fourth-order continuous extension.

Coefficients from Ch. Tsitouras, "Runge–Kutta pairs of order 5(4) satisfying only
the first column simplifying assumption", Comput. Math. Appl. 62 (2011) 770–775,
Table 1 and the interpolant of its Section 4 (written in factored form below).
"""

import numpy as np

from ..tableau import ButcherTableau, dense_from_polynomials

_B = (
    0.09646076681806523,
    0.01,
    0.4798896504144996,
    1.379008574103742,
    -3.290069515436081,
    2.324710524099774,
    0.0,
)
_B_HAT = (
    0.09468075576583945,
    0.009183565540343254,
    0.4877705284247616,
    1.234297566930479,
    -2.7077123499835256,
    1.866628418170587,
    1 / 66,
)


def _dense() -> tuple[tuple[float, ...], ...]:
    P = np.polynomial.Polynomial
    t = P([0.0, 1.0])
    polys = [
        -1.0530884977290216 * t * (t - 1.3299890189751412)
        * (t**2 - 1.4364028541716351 * t + 0.7139816917074209),
        0.1017 * t**2 * (t**2 - 2.1966568338249754 * t + 1.2949852507374631),
        2.490627285651252793 * t**2 * (t**2 - 2.38535645472061657 * t + 1.57803468208092486),
        -16.54810288924490272 * (t - 1.21712927295533244) * (t - 0.61620406037800089) * t**2,
        47.37952196281928122 * (t - 1.203071208372362603) * (t - 0.658047292653547382) * t**2,
        -34.87065786149660974 * (t - 1.2) * (t - 0.666666666666666667) * t**2,
        2.5 * (t - 1) * (t - 0.6) * t**2,
    ]
    rows = dense_from_polynomials(polys)
    # The published factors are rounded to ~17 digits; make b_i(1) = b_i exact so that
    # the interpolant is continuous across steps to machine precision.
    return tuple(
        (*row[:-1], row[-1] + (b - sum(row))) for row, b in zip(rows, _B)
    )


tsit5 = ButcherTableau(
    name="tsit5",
    c=(0.0, 0.161, 0.327, 0.9, 0.9800255409045097, 1.0, 1.0),
    a=(
        (),
        (0.161,),
        (-0.008480655492356989, 0.335480655492357),
        (2.897153057105493, -6.359448489975075, 4.3622954328695815),
        (5.325864828439257, -11.748883564062828, 7.4955393428898365, -0.09249506636175525),
        (5.86145544294642, -12.92096931784711, 8.159367898576159, -0.071584973281401,
         -0.028269050394068383),
        _B[:6],
    ),
    b=_B,
    b_error=tuple(x - y for x, y in zip(_B, _B_HAT)),
    order=5,
    error_order=4,
    dense=_dense(),
    dense_order=4,
)
