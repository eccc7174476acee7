"""Adjoint gradients against backprop-through-solver, central differences and gradcheck;
the norm choices; backward statistics; bad input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import hyperode
from hyperode import odeint, odeint_adjoint, solve_adjoint

TOL = dict(rtol=1e-10, atol=1e-10)
NORMS = ["default", "seminorm", "state_seminorm"]


class Field(nn.Module):
    """A small non-autonomous MLP field: f(t, y) = W2 tanh(W1 y + b1) * (1 + 0.3 t)."""

    def __init__(self, dim: int = 2, hidden: int = 8, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, dim))
        self.double()

    def forward(self, t, y):
        return self.net(y) * (1 + 0.3 * t)


class TupleField(nn.Module):
    """(x, v) with x' = v, v' = -k x - c v * tanh(w . x): a tuple state with coupling."""

    def __init__(self):
        super().__init__()
        self.k = nn.Parameter(torch.tensor(1.3, dtype=torch.float64))
        self.c = nn.Parameter(torch.tensor(0.2, dtype=torch.float64))
        self.w = nn.Parameter(torch.tensor([0.5, -0.4], dtype=torch.float64))

    def forward(self, t, state):
        x, v = state
        return v, -self.k * x - self.c * v * torch.tanh(x @ self.w).unsqueeze(-1)


def _loss(ys):
    if isinstance(ys, tuple):
        return sum(_loss(y) for y in ys)
    return (ys[1:] ** 2).sum() + torch.sin(ys[-1]).sum()


def _grads(solver, func, y0, t, **kw):
    inputs = (*(y0 if isinstance(y0, tuple) else (y0,)), t, *func.parameters())
    return torch.autograd.grad(_loss(solver(func, y0, t, **kw)), inputs)


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


PROBLEMS = {
    "mlp_3_outputs": lambda: (Field(), torch.randn(4, 2, dtype=torch.float64),
                              torch.tensor([0.0, 0.4, 1.1], dtype=torch.float64)),
    "mlp_decreasing_t": lambda: (Field(seed=1), torch.randn(3, 2, dtype=torch.float64),
                                 torch.tensor([1.0, 0.3, -0.5], dtype=torch.float64)),
    "tuple_state": lambda: (TupleField(), (torch.randn(3, 2, dtype=torch.float64),
                                           torch.randn(3, 2, dtype=torch.float64)),
                            torch.tensor([0.0, 0.5, 1.0, 2.0], dtype=torch.float64)),
}


def _make(name):
    func, y0, t = PROBLEMS[name]()
    y0 = tuple(m.requires_grad_() for m in y0) if isinstance(y0, tuple) else y0.requires_grad_()
    return func, y0, t.requires_grad_()


@pytest.mark.parametrize("problem", list(PROBLEMS))
@pytest.mark.parametrize("norm", NORMS)
def test_adjoint_matches_backprop_through_solver(problem, norm):
    func, y0, t = _make(problem)
    adj = _grads(odeint_adjoint, func, y0, t, adjoint_options=dict(norm=norm), **TOL)
    bps = _grads(odeint, func, y0, t, **TOL)
    for a, b in zip(adj, bps, strict=True):
        assert _rel(a, b) <= 1e-6


@pytest.mark.parametrize("problem", list(PROBLEMS))
def test_adjoint_matches_central_differences(problem):
    """Central differences of the same (tight-tolerance) solve, step 1e-6: truncation
    ~1e-12 and rounding ~1e-10 relative, far below the 1e-6 asserted."""
    func, y0, t = _make(problem)
    adj = _grads(odeint_adjoint, func, y0, t, adjoint_options=dict(norm="seminorm"), **TOL)
    inputs = (*(y0 if isinstance(y0, tuple) else (y0,)), t, *func.parameters())
    eps = 1e-6
    with torch.no_grad():
        for x, g in zip(inputs, adj, strict=True):
            flat, gflat = x.view(-1), g.reshape(-1)
            for j in range(0, flat.numel(), max(1, flat.numel() // 4)):
                old = float(flat[j])
                flat[j] = old + eps
                up = float(_loss(odeint(func, y0, t, **TOL)))
                flat[j] = old - eps
                down = float(_loss(odeint(func, y0, t, **TOL)))
                flat[j] = old
                fd = (up - down) / (2 * eps)
                assert abs(fd - float(gflat[j])) <= 1e-6 * max(1.0, abs(fd))


def test_gradcheck_tiny_problem():
    a = torch.tensor([[-0.3, 1.0], [-1.0, -0.2]], dtype=torch.float64, requires_grad=True)

    def f(t, y):
        return torch.tanh(y @ a.T)

    def fn(y0, a_):
        return odeint_adjoint(f, y0, torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64),
                              adjoint_params=(a_,), **TOL)

    y0 = torch.tensor([[0.7, -0.4]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(fn, (y0, a), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_seminorms_take_fewer_backward_steps_and_stats_are_recorded():
    func, y0, t = _make("mlp_3_outputs")
    nfe = {}
    for norm in NORMS:
        sol = solve_adjoint(func, y0, t, rtol=1e-7, atol=1e-9,
                            adjoint_options=dict(norm=norm, record_steps=True))
        assert sol.backward_stats.nfe == 0  # nothing until backward runs
        _loss(sol.ys).backward()
        st = sol.backward_stats
        assert st.accepted > 0 and st.nfe > 0
        assert len(st.accepted_ts) == st.accepted and len(st.rejected_ts) == st.rejected
        nfe[norm] = st.nfe
    assert nfe["seminorm"] < nfe["default"]
    assert nfe["state_seminorm"] <= nfe["seminorm"]


def test_forward_keeps_no_graph_of_the_steps():
    """Memory independent of the number of steps: the tensors autograd saves in the
    forward pass do not grow when the solver takes more steps."""
    func, y0, t = _make("mlp_3_outputs")
    t = t.detach()

    def saved(solver, rtol):
        count = [0]

        def pack(x):
            count[0] += 1
            return x

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
            sol = solver(func, y0, t, rtol=rtol, atol=rtol)
        return count[0], sol.stats.nfe

    (loose, nfe_loose), (tight, nfe_tight) = saved(solve_adjoint, 1e-3), saved(solve_adjoint, 1e-9)
    assert nfe_tight > 2 * nfe_loose and tight == loose
    (bp_loose, _), (bp_tight, _) = saved(hyperode.solve, 1e-3), saved(hyperode.solve, 1e-9)
    assert bp_tight > bp_loose  # backprop through the solver does grow


def test_forward_norm_excluding_a_member_applies_to_the_adjoint():
    """A CNF-like (z, logp) state: a forward norm over z only also drops logp and a_logp
    from the backward norm, which can only reduce the backward work."""
    net = Field(dim=2, hidden=8, seed=3)

    class Flow(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, t, state):
            z, _ = state
            dz = self.net(t, z)
            return dz, -(z * dz).sum(-1, keepdim=True)  # logp' reads z only: a pure integral

    flow = Flow()
    z0 = torch.randn(8, 2, dtype=torch.float64)
    state = (z0, torch.zeros(8, 1, dtype=torch.float64))
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    results = {}
    for key, options in {"all": None, "z_only": dict(norm=hyperode.member_norm([0]))}.items():
        sol = solve_adjoint(flow, state, t, rtol=1e-6, atol=1e-8, options=options,
                            adjoint_options=dict(norm="seminorm"))
        (sol.ys[0][-1].sum() + sol.ys[1][-1].sum()).backward()
        results[key] = sol.backward_stats.nfe
    assert results["z_only"] <= results["all"]


def test_fixed_grid_adjoint_matches_backprop():
    func, y0, t = _make("mlp_3_outputs")
    kw = dict(method="rk4", options=dict(step_size=0.01))
    adj = _grads(odeint_adjoint, func, y0, t, **kw)
    bps = _grads(odeint, func, y0, t, **kw)
    # the backward rk4 solve discretises the adjoint system, not the forward steps:
    # the two agree to the O(h^4) discretisation error, not to round-off
    for a, b in zip(adj, bps, strict=True):
        assert _rel(a, b) <= 1e-6


# ------------------------------------------------------------------------- bad input


def test_plain_function_without_adjoint_params():
    with pytest.raises(ValueError, match=r"not an nn\.Module.*adjoint_params"):
        odeint_adjoint(lambda t, y: -y, torch.ones(2), torch.tensor([0.0, 1.0]))


def test_plain_function_with_adjoint_params_works():
    k = torch.tensor(0.7, requires_grad=True)
    ys = odeint_adjoint(lambda t, y: -k * y, torch.ones(2, dtype=torch.float32),
                        torch.tensor([0.0, 1.0]), adjoint_params=(k,))
    ys[-1].sum().backward()
    assert k.grad is not None and abs(float(k.grad) + 2 * torch.exp(torch.tensor(-0.7))) < 1e-4


@pytest.mark.parametrize(("adjoint_options", "adjoint_method", "match"), [
    (dict(norm="semi"), None, "unknown; use one of default, seminorm, state_seminorm"),
    (dict(norm=3), None, "must be a name or a callable"),
    (dict(step_size=0.1, norm="seminorm"), "rk4",
     "no effect on a backward solve without error control"),
    (dict(bogus=1), None, "unknown option 'bogus'"),
    (dict(step_size=-1.0), "rk4", "step_size"),
    ("seminorm", None, "adjoint_options must be a dict"),
])
def test_bad_adjoint_options(adjoint_options, adjoint_method, match):
    func, y0, t = _make("mlp_3_outputs")
    with pytest.raises(ValueError, match=match):
        odeint_adjoint(func, y0, t, adjoint_options=adjoint_options,
                       adjoint_method=adjoint_method)


def test_tensor_tolerance_needs_float_adjoint_tolerance():
    func, y0, t = _make("mlp_3_outputs")
    with pytest.raises(ValueError, match="adjoint_rtol must be a float"):
        odeint_adjoint(func, y0, t, rtol=torch.full((4, 2), 1e-6, dtype=torch.float64))
    ys = odeint_adjoint(func, y0, t, rtol=torch.full((4, 2), 1e-6, dtype=torch.float64),
                        adjoint_rtol=1e-6)
    assert ys.shape == (3, 4, 2)


def test_parameter_dtype_mismatch_is_named():
    func = Field().float()
    with pytest.raises(ValueError, match="adjoint_params must share y0's dtype"):
        odeint_adjoint(func, torch.ones(2, 2, dtype=torch.float64), torch.tensor([0.0, 1.0]))


def test_time_gradients_of_a_field_that_differentiates_its_state():
    """Regression: dL/dt_i evaluates f at the stored output; that tensor must be a fresh
    leaf, or a field that takes d/dz inside (a CNF's trace) fails or returns zeros."""
    from hyperode.nn import CNF, TimeConcat

    torch.manual_seed(0)
    net = TimeConcat(nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2))).double()
    state = (torch.randn(5, 2, dtype=torch.float64), torch.zeros(5, 1, dtype=torch.float64))
    grads = []
    for solver in (odeint_adjoint, odeint):
        t = torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64, requires_grad=True)
        ys = solver(CNF(net), state, t, **TOL)
        (ys[0][1:].sum() + ys[1][1:].sum()).backward()
        grads.append(t.grad)
    assert grads[0].abs().min() > 1e-3
    assert _rel(grads[0], grads[1]) <= 1e-6
