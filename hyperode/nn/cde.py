"""Neural controlled differential equations (Kidger, Morrill, Foster & Lyons, 2020).

A time series ``((t_0, x_0), ..., (t_{n-1}, x_{n-1}))`` becomes a continuous path
``X : [s_0, s_{n-1}] -> R^C`` (here a natural cubic spline through the
observations), and the hidden state solves the controlled differential equation

    z(s) = z(s_0) + int_{s_0}^{s} g_theta(z(u)) dX(u),     g_theta(z) in R^{H x C},

which, because ``X`` is differentiable, is the ordinary differential equation

    dz/ds = g_theta(z(s)) dX/ds(s)                 (the "CDE-as-ODE" reduction)

solved by any ODE solver (``hyperode.odeint`` / ``odeint_adjoint``). ``z(s_0)`` is a
learnt map of ``X(s_0)`` and the prediction a learnt map of ``z(s_{n-1})``.

Pieces:

- ``NaturalCubicSpline(knots, values)``: the interpolating path, with ``evaluate``
  and ``derivative`` at a scalar time;
- ``CDEFunc(hidden, channels, width, depth)``: the MLP ``g_theta : [B, H] -> [B, H, C]``
  with ``tanh`` on its output (bounded, as the paper recommends);
- ``CDEVectorField(func, spline)``: the ODE vector field ``f(s, z) = g(z) dX/ds(s)``;
- ``NeuralCDE``: initial map, field and readout for classification/regression.

**Irregular sampling.** Each series may be observed at its own times ``t_i``; a
batch needs one integration variable. Following Kidger et al., the observation
*time* becomes a channel of the path, ``X(s_i) = (t_i, x_i)``, and the spline is
parameterised by the *observation index* ``s_i = i`` (``index_knots``), shared by
the whole batch. Nothing is lost: the CDE is invariant to reparameterising the
control path, and including ``t`` as a channel keeps the spacing of the
observations (the model sees how much time passed, not just how many
observations), which is what makes irregular sampling work. Series with fewer
observations are padded by repeating their last observation (time and value), so
``dX/ds`` is (nearly: a cubic spline rings slightly beyond the last genuine knot,
decaying by a factor ~0.27 per knot) zero there and ``z`` stays where it ended.
``observation_path(times, values, lengths)`` builds these channels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from ..odeint import odeint

_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU, "tanh": nn.Tanh, "softplus": nn.Softplus, "elu": nn.ELU,
}


class NaturalCubicSpline:
    """Natural cubic spline through ``(knots[i], values[:, i, :])``, batched over ``B``.

    On each interval ``[t_i, t_{i+1}]`` (``h_i = t_{i+1} - t_i``, ``u = t - t_i``)::

        X(t) = a_i + b_i u + c_i u^2 + d_i u^3,
        a_i = y_i,  c_i = M_i / 2,  d_i = (M_{i+1} - M_i) / (6 h_i),
        b_i = (y_{i+1} - y_i) / h_i - h_i (2 M_i + M_{i+1}) / 6,

    where the second derivatives ``M_i = X''(t_i)`` solve the tridiagonal system
    (continuity of ``X'`` at the interior knots)::

        h_{i-1} M_{i-1} + 2 (h_{i-1} + h_i) M_i + h_i M_{i+1}
            = 6 ((y_{i+1} - y_i) / h_i - (y_i - y_{i-1}) / h_{i-1}),   i = 1..n-2,

    with the natural boundary conditions ``M_0 = M_{n-1} = 0``. The system is solved
    once, on construction, by the Thomas algorithm (strictly diagonally dominant,
    so no pivoting is needed). ``X``, ``X'`` and ``X''`` are continuous; outside
    ``[t_0, t_{n-1}]`` the end cubics are extended.

    Args:
        knots: strictly increasing times ``[n]``, ``n >= 2`` (shared by the batch).
        values: ``[B, n, C]`` observations (floating point).

    ``evaluate(t)`` and ``derivative(t)`` take a scalar time (0-dim tensor or float)
    and return ``[B, C]``.
    """

    def __init__(self, knots: Tensor, values: Tensor):
        if not isinstance(knots, Tensor) or knots.dim() != 1 or len(knots) < 2:
            raise ValueError(f"knots must be a 1-D tensor of >= 2 times, got "
                             f"{_describe(knots)}")
        if not isinstance(values, Tensor) or values.dim() != 3 or \
                values.shape[1] != len(knots) or not values.is_floating_point():
            raise ValueError(f"values must be a floating-point tensor [B, {len(knots)}, C] "
                             f"matching knots, got {_describe(values)}")
        knots = knots.to(dtype=values.dtype, device=values.device)
        h = knots.diff()
        if not bool((h > 0).all()):
            raise ValueError("knots must be strictly increasing")
        if not bool(torch.isfinite(values).all()):
            raise ValueError("values must be finite (pad short series by repeating their "
                             "last observation rather than with NaN)")
        self.knots = knots
        slopes = values.diff(dim=1) / h[:, None]                       # [B, n-1, C]
        m = _natural_second_derivatives(h, slopes)                     # [B, n, C]
        h3 = h[:, None]
        self._a = values[:, :-1]
        self._b = slopes - h3 * (2 * m[:, :-1] + m[:, 1:]) / 6
        self._c = m[:, :-1] / 2
        self._d = (m[:, 1:] - m[:, :-1]) / (6 * h3)
        self._inner = knots[1:-1].contiguous()

    @property
    def batch_size(self) -> int:
        return self._a.shape[0]

    @property
    def channels(self) -> int:
        return self._a.shape[2]

    @property
    def interval(self) -> tuple[float, float]:
        """``(t_0, t_{n-1})`` as Python floats."""
        return float(self.knots[0]), float(self.knots[-1])

    def _locate(self, t: Tensor | float) -> tuple[Tensor, Tensor]:
        t = torch.as_tensor(t, dtype=self.knots.dtype, device=self.knots.device)
        if t.dim() != 0:
            raise ValueError(f"t must be a scalar time, got shape {tuple(t.shape)}")
        # Number of interior knots <= t: the interval index in [0, n-2].
        index = torch.bucketize(t, self._inner, right=True).reshape(1)
        u = t - self.knots.index_select(0, index)
        return index, u

    def _coef(self, coef: Tensor, index: Tensor) -> Tensor:
        return coef.index_select(1, index).squeeze(1)

    def evaluate(self, t: Tensor | float) -> Tensor:
        """``X(t)``: ``[B, C]``."""
        i, u = self._locate(t)
        a, b, c, d = (self._coef(x, i) for x in (self._a, self._b, self._c, self._d))
        return a + u * (b + u * (c + u * d))

    def derivative(self, t: Tensor | float) -> Tensor:
        """``dX/dt(t)``: ``[B, C]``."""
        i, u = self._locate(t)
        b, c, d = (self._coef(x, i) for x in (self._b, self._c, self._d))
        return b + u * (2 * c + u * (3 * d))

    def second_derivative(self, t: Tensor | float) -> Tensor:
        """``d^2X/dt^2(t)``: ``[B, C]``."""
        i, u = self._locate(t)
        c, d = (self._coef(x, i) for x in (self._c, self._d))
        return 2 * c + 6 * u * d

    def select(self, index: Tensor | Sequence[int]) -> NaturalCubicSpline:
        """The spline of a subset of the batch (no re-solve): e.g. one minibatch of a
        dataset whose spline was computed once."""
        index = torch.as_tensor(index, dtype=torch.long, device=self._a.device)
        out = object.__new__(NaturalCubicSpline)
        out.knots, out._inner = self.knots, self._inner
        out._a, out._b, out._c, out._d = (x.index_select(0, index)
                                          for x in (self._a, self._b, self._c, self._d))
        return out

    def to(self, *args, **kwargs) -> NaturalCubicSpline:
        """A copy with every tensor moved/cast like ``Tensor.to``."""
        out = object.__new__(NaturalCubicSpline)
        out.knots, out._inner, out._a, out._b, out._c, out._d = (
            x.to(*args, **kwargs)
            for x in (self.knots, self._inner, self._a, self._b, self._c, self._d))
        return out


def _natural_second_derivatives(h: Tensor, slopes: Tensor) -> Tensor:
    """Second derivatives ``[B, n, C]`` at the knots (``M_0 = M_{n-1} = 0``)."""
    batch, n_int, ch = slopes.shape
    n = n_int + 1
    m = slopes.new_zeros(batch, n, ch)
    if n == 2:
        return m
    # Unknowns M_1..M_{n-2}; row i (0-based, knot i+1): sub h[i], diag 2(h[i]+h[i+1]),
    # super h[i+1], rhs 6 (slopes[i+1] - slopes[i]).
    rhs = 6 * (slopes[:, 1:] - slopes[:, :-1])                          # [B, n-2, C]
    diag = 2 * (h[:-1] + h[1:])
    sub, sup = h[:-1], h[1:]
    k = n - 2
    c_prime: list[Tensor] = [sup[0]] * k  # every entry is set below
    d_prime: list[Tensor] = [rhs[:, 0]] * k
    c_prime[0] = sup[0] / diag[0]
    d_prime[0] = rhs[:, 0] / diag[0]
    for i in range(1, k):
        denom = diag[i] - sub[i] * c_prime[i - 1]
        c_prime[i] = sup[i] / denom
        d_prime[i] = (rhs[:, i] - sub[i] * d_prime[i - 1]) / denom
    sol: list[Tensor] = [d_prime[-1]] * k
    for i in range(k - 2, -1, -1):
        sol[i] = d_prime[i] - c_prime[i] * sol[i + 1]
    m[:, 1:-1] = torch.stack(sol, dim=1)
    return m


def index_knots(n: int, *, dtype: torch.dtype = torch.float32,
                device: torch.device | str | None = None) -> Tensor:
    """``[0, 1, ..., n-1]``: the observation-index parameterisation (module docstring)."""
    return torch.arange(n, dtype=dtype, device=device)


def observation_path(times: Tensor, values: Tensor, lengths: Tensor | None = None, *,
                     time_scale: float = 1.0) -> Tensor:
    """Channels ``[B, L, 1 + C]`` = ``(t / time_scale, x)`` of irregularly sampled series.

    Args:
        times: ``[B, L]`` observation times, sorted within each row.
        values: ``[B, L, C]`` observations.
        lengths: ``[B]`` number of genuine observations per row (``None``: all ``L``);
            entries past a row's length are replaced by its last genuine observation
            (fill-forward, so the path is flat there).
        time_scale: divides the time channel (e.g. the series' time span, to keep the
            channel's scale comparable with the values').

    Use with ``NaturalCubicSpline(index_knots(L), observation_path(...))``.
    """
    if times.dim() != 2 or values.dim() != 3 or values.shape[:2] != times.shape:
        raise ValueError(f"times [B, L] and values [B, L, C] must match, got "
                         f"{tuple(times.shape)} and {tuple(values.shape)}")
    path = torch.cat([(times / time_scale).unsqueeze(-1).to(values.dtype), values], dim=-1)
    if lengths is not None:
        lengths = torch.as_tensor(lengths, device=path.device)
        n = path.shape[1]
        if lengths.shape != times.shape[:1] or int(lengths.min()) < 1 or int(lengths.max()) > n:
            raise ValueError(f"lengths must be [B] integers in [1, {n}], got {lengths!r}")
        pos = torch.arange(n, device=path.device)
        last = torch.minimum(pos[None, :], (lengths - 1)[:, None])       # [B, L]
        path = path.gather(1, last.unsqueeze(-1).expand_as(path))
    return path


class CDEFunc(nn.Module):
    """``g_theta(z)``: an MLP ``[B, hidden] -> [B, hidden, channels]`` with ``tanh`` output.

    ``depth`` hidden layers of ``width`` units with ``activation`` between them
    (``"relu"`` as in the paper's App. B.1; ``"tanh"``, ``"softplus"``, ``"elu"``),
    then a linear layer to ``hidden * channels`` and ``tanh``.
    """

    def __init__(self, hidden: int, channels: int, width: int = 64, depth: int = 2,
                 activation: str = "relu"):
        super().__init__()
        for name, value in (("hidden", hidden), ("channels", channels), ("width", width),
                            ("depth", depth)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"CDEFunc: {name} must be a positive int, got {value!r}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"CDEFunc: activation must be one of {', '.join(_ACTIVATIONS)}, "
                             f"got {activation!r}")
        self.hidden, self.channels = hidden, channels
        layers: list[nn.Module] = []
        size = hidden
        for _ in range(depth):
            layers += [nn.Linear(size, width), _ACTIVATIONS[activation]()]
            size = width
        layers += [nn.Linear(size, hidden * channels), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).view(*z.shape[:-1], self.hidden, self.channels)


class CDEVectorField(nn.Module):
    """``f(s, z) = g(z) dX/ds(s)``: ``[B, H, C] @ [B, C] -> [B, H]``.

    Args:
        func: ``g``, any module ``z [B, H] -> [B, H, C]`` (e.g. ``CDEFunc``).
        spline: the control path ``X`` (batch ``B``, ``C`` channels); not a parameter,
            so ``parameters()`` are ``func``'s (what ``odeint_adjoint`` differentiates).
    """

    def __init__(self, func: nn.Module, spline: NaturalCubicSpline):
        super().__init__()
        if not isinstance(spline, NaturalCubicSpline):
            raise ValueError(f"spline must be a NaturalCubicSpline, got "
                             f"{type(spline).__name__}")
        self.func = func
        self.spline = spline

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        g = self.func(z)
        dx = self.spline.derivative(t)
        if g.shape[:-2] != dx.shape[:-1] or g.shape[-1] != dx.shape[-1]:
            raise ValueError(f"g(z) has shape {tuple(g.shape)} but dX/ds has shape "
                             f"{tuple(dx.shape)}: expected [B, H, C] and [B, C]")
        return torch.matmul(g, dx.unsqueeze(-1)).squeeze(-1)


class NeuralCDE(nn.Module):
    """Initial map ``z(s_0) = W_0 X(s_0) + b_0``, field ``g`` and readout ``W_1 z(s_end)``.

    ``forward(spline, solver=hyperode.odeint, **solver_kwargs)`` returns ``[B, out]``;
    pass ``solver=hyperode.odeint_adjoint`` (and ``adjoint_options=...``) for the
    adjoint. For finer control use ``initial``, ``field`` and ``readout`` directly.
    """

    def __init__(self, channels: int, hidden: int, out: int, width: int = 64, depth: int = 2,
                 activation: str = "relu"):
        super().__init__()
        self.initial = nn.Linear(channels, hidden)
        self.func = CDEFunc(hidden, channels, width, depth, activation)
        self.readout = nn.Linear(hidden, out)

    def field(self, spline: NaturalCubicSpline) -> CDEVectorField:
        return CDEVectorField(self.func, spline)

    def z0(self, spline: NaturalCubicSpline) -> Tensor:
        return self.initial(spline.evaluate(spline.knots[0]))

    def forward(self, spline: NaturalCubicSpline, solver: Callable | None = None,
                **solver_kwargs) -> Tensor:
        if solver is None:
            solver = odeint
        s = spline.knots[[0, -1]]
        zs = solver(self.field(spline), self.z0(spline), s, **solver_kwargs)
        return self.readout(zs[-1])


def _describe(x: object) -> str:
    if isinstance(x, Tensor):
        return f"tensor of shape {tuple(x.shape)} and dtype {x.dtype}"
    return type(x).__name__
