"""hyperode.metrics: MAC counting against hand counts, NFE accounting, MAPE and mesh
errors, accuracy loss, timing and Pareto fronts."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import hyperode
from hyperode.hyper import HyperEuler, MLPHyperNet, mnist_hypernet
from hyperode.metrics import (
    MacCounter,
    accuracy,
    accuracy_loss,
    layer_macs,
    macs_per_call,
    mape,
    mesh_abs_error,
    pareto_front,
    pareto_indices,
    reference_solution,
    solve_cost,
    time_call,
)
from hyperode.nn import Autonomous, GalerkinConv2d, GalerkinLinear, hypersolver_mnist_model

# ---------------------------------------------------------------------- MACs


class SmallNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)                 # [B, 8, 5, 5]
        self.grouped = nn.Conv2d(8, 4, 3, groups=2, bias=False)   # [B, 4, 3, 3]
        self.up = nn.ConvTranspose2d(4, 2, 2, stride=2)           # [B, 2, 6, 6]
        self.conv1d = nn.Conv1d(2, 3, 5)                          # [B, 3, 32]
        self.head = nn.Sequential(nn.Flatten(), nn.ReLU(), nn.Linear(96, 10))

    def forward(self, x):
        y = self.up(self.grouped(torch.relu(self.conv(x))))
        y = self.conv1d(y.reshape(y.shape[0], 2, 36))
        return self.head(y)


def test_mac_counter_matches_hand_counts():
    net = SmallNet()
    x = torch.randn(4, 3, 5, 5)
    hand = {
        "conv": 8 * 5 * 5 * (3 * 3 * 3),           # out elements x in_ch x kernel
        "grouped": 4 * 3 * 3 * (8 // 2 * 3 * 3),   # in_ch / groups
        "up": 4 * 3 * 3 * (2 * 2 * 2),             # transposed: in elements x out_ch x kernel
        "conv1d": 3 * 32 * (2 * 5),
        "linear": 96 * 10,
    }
    assert macs_per_call(net, x) == sum(hand.values())
    with MacCounter(net) as counter:
        net(x)
        net(x)
    assert counter.macs == 2 * 4 * sum(hand.values()) and counter.calls == 10
    assert counter.per_sample(4) == 2 * sum(hand.values())
    out = net.conv(x)
    assert layer_macs(net.conv, (x,), out) == 4 * hand["conv"]
    assert layer_macs(nn.ReLU(), (x,), x) == 0
    with MacCounter(net) as counter:
        pass
    net(x)  # hooks are gone after the block
    assert counter.macs == 0 and not any(m._forward_hooks for m in net.modules())


def test_mac_counter_counts_galerkin_layers():
    lin = GalerkinLinear(3, 4, n_terms=5)
    conv = GalerkinConv2d(2, 6, 3, padding=1, n_terms=2, bias=False)
    x, img = torch.randn(7, 3), torch.randn(7, 2, 5, 5)
    with MacCounter(lin, conv) as counter:
        lin(torch.tensor(0.3), x)
        conv(torch.tensor(0.3), img)
    lin_hand = 7 * 4 * 3 + 5 * (4 * 3 + 4)          # application + weight/bias expansion
    conv_hand = 7 * 6 * 5 * 5 * (2 * 3 * 3) + 2 * (6 * 2 * 3 * 3)
    assert counter.macs == lin_hand + conv_hand and counter.calls == 2


def test_paper_networks_mac_counts():
    model = hypersolver_mnist_model()
    z = torch.randn(2, 32, 28, 28)
    f_macs = macs_per_call(model.node.vector_field, torch.tensor(0.0), z)
    hw = 28 * 28
    assert f_macs == hw * 9 * (32 * 46 + 46 * 46 + 46 * 32)  # ~0.036 GMAC (paper: 0.04)
    g_macs = macs_per_call(mnist_hypernet(), torch.tensor(0.1), torch.tensor(0.0), z, z)
    assert g_macs == hw * 9 * (65 * 32 + 32 * 32 + 32 * 32)  # ~0.029 GMAC (paper: 0.02)


def test_solve_cost_accounts_nfe_and_macs_of_f_and_g():
    torch.manual_seed(0)
    field = Autonomous(nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 2)))
    g = MLPHyperNet(2, (8,))
    hyper = HyperEuler(g)
    z0 = torch.randn(5, 2)
    per_f = 2 * 16 + 16 * 2
    per_g = (2 + 2 + 1) * 8 + 8 * 2
    cost = solve_cost(field, z0, [0.0, 1.0], method=hyper, options=dict(num_steps=6))
    assert (cost.nfe, cost.nfe_correction) == (6, 6)
    assert cost.macs_f == 6 * per_f and cost.macs_g == 6 * per_g
    assert cost.macs == 6 * (per_f + per_g) and cost.as_dict()["macs"] == cost.macs
    plain = solve_cost(field, z0, [0.0, 1.0], method="rk4", options=dict(num_steps=3))
    assert (plain.nfe, plain.nfe_correction, plain.macs_g) == (12, 0, 0)
    assert plain.macs_f == 12 * per_f
    adaptive = solve_cost(field, z0, [0.0, 1.0], rtol=1e-5, atol=1e-5)
    assert adaptive.macs_f == adaptive.nfe * per_f
    fn = solve_cost(lambda t, y: -y, z0, [0.0, 1.0], method="euler", options=dict(num_steps=2))
    assert fn.macs_f == 0 and fn.nfe == 2


# ---------------------------------------------------------------------- accuracy


def test_mape_reductions_and_zero_reference():
    ref = torch.tensor([[[1.0], [2.0]], [[4.0], [-1.0]]])  # [B=2, C=2, 1]
    pred = torch.tensor([[[1.5], [2.0]], [[3.0], [-1.5]]])
    ratios = torch.tensor([[0.5, 0.0], [0.25, 0.5]])
    assert float(mape(pred, ref)) == pytest.approx(float(ratios.mean()))
    assert float(mape(pred, ref, reduction="channel_sum")) == pytest.approx(
        float(ratios.sum(1).mean()))
    assert float(mape((pred, pred), (ref, ref))) == pytest.approx(float(ratios.mean()))
    assert math.isinf(float(mape(torch.tensor([[1.0]]), torch.tensor([[0.0]]))))
    with pytest.raises(ValueError, match="reduction"):
        mape(pred, ref, reduction="sum")
    with pytest.raises(ValueError, match="shape"):
        mape(pred, ref[:1])


def test_mesh_abs_error_and_reference_solution():
    ref = torch.zeros(3, 2, 2)
    pred = torch.tensor([[[0.0, 0.0], [0.0, 0.0]], [[1.0, -1.0], [0.0, 2.0]],
                         [[4.0, 0.0], [0.0, 0.0]]])
    assert mesh_abs_error(pred, ref).tolist() == [0.0, 1.0, 1.0]
    z0 = torch.randn(4, 2, dtype=torch.float64)
    t = torch.linspace(0, 1, 5, dtype=torch.float64)
    ys = reference_solution(lambda s, y: -y, z0, t, rtol=1e-9, atol=1e-9)
    exact = torch.exp(-t)[:, None, None] * z0
    assert float(mesh_abs_error(ys, exact).max()) < 1e-8
    tup = mesh_abs_error((pred, pred), (ref, ref))
    assert tup.tolist() == [0.0, 1.0, 1.0]


def test_accuracy_and_accuracy_loss():
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 1, 1, 1])
    assert accuracy(logits, labels) == 0.75
    assert accuracy_loss(0.9875, 0.9885) == pytest.approx(0.001)
    with pytest.raises(ValueError, match="logits"):
        accuracy(logits[0], labels)
    # one image of 1000 lost is a loss of exactly 0.1%, not "less than 0.1%"
    labels = torch.zeros(1000, dtype=torch.long)
    right = torch.tensor([[1.0, 0.0]]).repeat(1000, 1)
    wrong = right.clone()
    wrong[:153] = torch.tensor([0.0, 1.0])
    one_more = right.clone()
    one_more[:154] = torch.tensor([0.0, 1.0])
    loss = accuracy_loss(accuracy(one_more, labels), accuracy(wrong, labels))
    assert loss >= 0.001 and loss == pytest.approx(0.001, abs=1e-12)


# ---------------------------------------------------------------------- timing, Pareto


def test_time_call_warms_up_and_takes_the_median():
    calls = []
    timing = time_call(lambda x: calls.append(x), 1, warmup=2, repeats=5, sync=False)
    assert len(calls) == 7 and len(timing.times) == 5 and timing.warmup == 2
    assert timing.median == sorted(timing.times)[2] and timing.min <= timing.median
    with pytest.raises(ValueError, match="repeats"):
        time_call(lambda: None, repeats=0)


def test_pareto_front():
    points = [(10, 0.5), (20, 0.1), (5, 0.9), (20, 0.3), (15, 0.5), (30, 0.1),
              (5, 0.9), (40, 0.01), (8, float("nan")), (1, float("inf"))]
    assert pareto_indices(points) == [2, 6, 0, 1, 7]
    assert pareto_front(points) == [(5, 0.9), (5, 0.9), (10, 0.5), (20, 0.1), (40, 0.01)]
    assert pareto_indices([]) == []
    with pytest.raises(ValueError, match="pair"):
        pareto_indices([(1, 2, 3)])


def test_error_vs_nfe_front_of_real_solves():
    z0 = torch.randn(3, 2, dtype=torch.float64)
    rot = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=torch.float64)

    def f(t, y):
        return y @ rot.T

    t = [0.0, 1.0]
    ref = reference_solution(f, z0, t, rtol=1e-10, atol=1e-10)[-1]
    runs = [("euler", 2), ("euler", 8), ("midpoint", 4), ("rk4", 2)]
    points = []
    for method, k in runs:
        cost = solve_cost(f, z0, t, method=method, options=dict(num_steps=k))
        ys = hyperode.odeint(f, z0, t, method=method, options=dict(num_steps=k))
        points.append((cost.nfe, float(mape(ys[-1], ref))))
    front = [runs[i] for i in pareto_indices(points)]
    assert front == [("euler", 2), ("rk4", 2)]  # 8 NFE of RK4 beat 8 of Euler or midpoint
