"""hyperode.adapt: test-solver rule, step/tolerance adaptation, starting step, the
solver-independence report, trajectory crossing and the CLI (Ott et al., ICLR 2021)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest
import torch

from hyperode.adapt import (
    StepAdaptation,
    StepRule,
    ToleranceAdaptation,
    ToleranceRule,
    candidate_solvers,
    critical_steps,
    critical_tolerance,
    find_crossings,
    plot_crossings,
    solver_independence_report,
    starting_step,
)
from hyperode.adapt import test_solver as make_test_solver
from hyperode.adapt import test_step_size as step_rule
from hyperode.adapt.crossing import segments_intersect
from hyperode.adapt.grid import critical_summary
from hyperode.adapt.report import _more_accurate
from hyperode.cli import adapt as adapt_cli
from hyperode.cli import grid as grid_cli
from hyperode.cli import odeness as odeness_cli
from hyperode.experiments import TrainConfig, read_metrics, resolve_config, run_grid, runs, train
from hyperode.experiments.plots import is_png
from hyperode.experiments.tasks import load_split
from hyperode.experiments.trained import load_run
from hyperode.nn import SolverConfig

pytest_plugins = ["pytester"]  # runs a user's test module that imports the aliases

torch.set_num_threads(1)


def tiny(out: Path, **changes) -> TrainConfig:
    """XOR, a 2-D MLP Neural ODE, Euler in 2 steps (a few ms per iteration)."""
    base = dict(task="xor", n_train=256, n_test=128, method="euler", num_steps=2,
                iterations=20, batch_size=32, lr=1e-2, eval_every=1000, checkpoint_every=1000,
                quiet=True, plots=False, device="cpu", out=str(out))
    base.update(changes)
    return TrainConfig(**base)


# --------------------------------------------------------------------------- test solver


@pytest.mark.parametrize("h, p, q, expected", [
    (0.01, 1, 2, 0.01),                        # Euler->midpoint: 1/h = 100 >= 50, same h
    (0.02, 1, 2, 0.02),                        # boundary h = 1/50: same h
    (0.1, 1, 2, math.sqrt(0.1 / 50)),          # sqrt(h/50) = 0.0447...
    (0.1, 2, 4, 0.1),                          # midpoint->rk4: h^2 = 0.01 <= 1/50
    (0.25, 2, 4, (0.25 ** 2 / 50) ** 0.25),    # (h^2/50)^(1/4) = 0.1880...
    (0.25, 1, 4, 0.25),                        # Euler->rk4: h^3 = 1/64 <= 1/50
    (0.5, 1, 4, (0.5 / 50) ** 0.25),           # (h/50)^(1/4) = 0.3162...
    (0.5, 4, 4, 0.5 / 50 ** 0.25),             # rk4->rk4: h / 50^(1/4)
])
def test_test_step_rule_hand_values(h, p, q, expected):
    assert step_rule(h, p, q) == pytest.approx(expected, rel=1e-12)
    h_test = step_rule(h, p, q)
    assert h_test <= h
    # the defining inequality: the test solver's error proxy is >= 50x smaller
    assert h_test ** q <= h ** p / 50 * (1 + 1e-12)


def test_test_step_rule_values_by_hand():
    assert step_rule(0.1, 1, 2) == pytest.approx(0.04472135955, rel=1e-9)
    assert step_rule(0.25, 2, 4) == pytest.approx(0.18803015465, rel=1e-9)
    assert step_rule(0.5, 1, 4) == pytest.approx(0.31622776602, rel=1e-9)
    assert step_rule(0.1, 1, 2, factor=10) == pytest.approx(0.1)  # 1/h = 10 >= 10


def test_test_solver_pairs():
    euler = SolverConfig(method="euler", num_steps=10)
    t = make_test_solver(euler)
    assert (t.method_name, t.step_size) == ("midpoint", pytest.approx(math.sqrt(0.1 / 50)))
    t = make_test_solver(euler, test_method="rk4")  # h^3 = 1e-3 <= 1/50: same h
    assert (t.method_name, t.step_size) == ("rk4", pytest.approx(0.1))
    t = make_test_solver(SolverConfig(method="euler", num_steps=2), test_method="rk4")
    assert (t.method_name, t.step_size) == ("rk4", pytest.approx((0.5 / 50) ** 0.25))
    t = make_test_solver(SolverConfig(method="midpoint", step_size=0.25))
    assert (t.method_name, t.step_size) == ("rk4", pytest.approx((0.25 ** 2 / 50) ** 0.25))
    t = make_test_solver(SolverConfig(method="fehlberg2", rtol=1e-3, atol=1e-3))
    assert (t.method_name, t.rtol, t.atol, t.is_fixed) == ("dopri5", 2e-4, 2e-4, False)
    t = make_test_solver(SolverConfig(method="dopri5", rtol=1e-4, atol=1e-6))
    assert (t.method_name, t.rtol, t.atol) == ("dopri5", 1e-5, 1e-7)
    with pytest.raises(ValueError, match="test_method"):
        make_test_solver(SolverConfig(method="rk4", step_size=0.1), test_method="midpoint")
    with pytest.raises(ValueError, match="h must be"):
        step_rule(0.0, 1, 2)
    with pytest.raises(ValueError, match="factor"):
        step_rule(0.1, 1, 2, factor=1.0)


def test_paper_named_aliases_are_not_collected_as_tests(pytester):
    assert make_test_solver.__test__ is False and step_rule.__test__ is False
    pytester.makepyfile(test_uses_aliases="""
        from hyperode.adapt import test_solver, test_step_size

        def test_alias_rule():
            assert test_step_size(0.1, 1, 2, factor=10) > 0
        """)
    result = pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)  # only the module's own test, not the two aliases


# --------------------------------------------------------------------------- step rule


class StubAccuracy:
    """``accuracy_at`` that returns queued values and records the steps asked for."""

    def __init__(self) -> None:
        self.queue: list[float] = []
        self.asked: list[float] = []

    def __call__(self, h: float) -> float:
        assert self.queue, f"unexpected re-check at h={h}"
        self.asked.append(h)
        return self.queue.pop(0)


def test_step_rule_follows_a_stub_accuracy_sequence_exactly():
    rule = StepRule(span=1.0, threshold=0.1, max_steps=500)
    stub = StubAccuracy()
    # (acc_train, acc_test, re-check accuracy or None, expected h, expected action)
    script = [
        (0.90, 0.70, None, 0.25, "halve"),             # gap 0.2: 0.5 -> 0.25
        (0.90, 0.85, 0.88, 0.275, "grow"),             # pass, 1.1h re-checks fine
        (0.90, 0.85, 0.60, 0.275, "reject_growth"),    # pass, but 1.1h disagrees
        (0.90, 0.95, 0.95, 0.3025, "grow"),
        (0.50, 0.70, None, 0.15125, "halve"),
    ]
    h, seen = 0.5, []
    for acc_train, acc_test, recheck, _, _ in script:
        if recheck is not None:
            stub.queue.append(recheck)
        d = rule.decide(h, acc_train, acc_test, stub)
        seen.append((d.h, d.action))
        h = d.h
    assert [a for _, a in seen] == [s[4] for s in script]
    assert [x for x, _ in seen] == pytest.approx([s[3] for s in script], rel=1e-12)
    assert stub.asked == pytest.approx([0.275, 0.3025, 0.3025], rel=1e-12)
    assert not stub.queue


def test_step_rule_caps_growth_at_the_span_and_steps_at_max_steps():
    rule = StepRule(span=1.0, threshold=0.1, max_steps=10)
    stub = StubAccuracy()
    stub.queue.append(0.9)
    d = rule.decide(0.95, 0.9, 0.9, stub)           # 1.045 capped at T = 1
    assert (d.h, d.action, stub.asked) == (1.0, "grow", [1.0])
    d = rule.decide(1.0, 0.9, 0.9, stub)            # already T: nothing to re-check
    assert (d.h, d.action) == (1.0, "at_span")
    d = rule.decide(0.4, 0.9, 0.5, stub)            # 2.5 -> 5 steps <= 10: halve
    assert (d.h, d.action) == (0.2, "halve")
    d = rule.decide(0.15, 0.9, 0.5, stub)           # 6.67 steps; 2n > 10 -> (6.67 + 10)/2
    assert d.action == "halve_to_cap"
    assert d.h == pytest.approx(1 / ((1 / 0.15 + 10) / 2), rel=1e-12)
    assert d.h == pytest.approx(0.12, rel=1e-12)
    d = rule.decide(0.1, 0.9, 0.5, stub)            # at 10 steps: keep
    assert (d.h, d.action) == (0.1, "at_max_steps")
    # the reference code's formula for T = 1, max 500: h <- 2h/(500h + 1)
    d = StepRule(max_steps=500).decide(0.003, 0.9, 0.5, stub)
    assert d.h == pytest.approx(2 * 0.003 / (500 * 0.003 + 1), rel=1e-12)
    assert not stub.asked[1:]
    with pytest.raises(ValueError, match="max_steps"):
        StepRule(max_steps=0)


def test_tolerance_rule_follows_a_stub_sequence_exactly():
    rule = ToleranceRule()
    calls: list[float] = []
    answers = [(0.9, 3), (0.5, 3), (0.9, 1)]

    def check_at(tol):
        calls.append(tol)
        return answers.pop(0)

    tol, seen = 1e-6, []
    for acc_train, acc_test in [(0.9, 0.7), (0.9, 0.9), (0.9, 0.9), (0.9, 0.9)]:
        d = rule.decide(tol, acc_train, acc_test, check_at)
        seen.append((d.tol, d.action))
        tol = d.tol
    assert [a for _, a in seen] == ["halve", "grow", "reject_growth", "too_few_steps"]
    assert [t for t, _ in seen] == pytest.approx([5e-7, 5.5e-7, 5.5e-7, 5.5e-7], rel=1e-12)
    assert calls == pytest.approx([5.5e-7, 6.05e-7, 6.05e-7], rel=1e-12)


# --------------------------------------------------------------------------- starting step


def test_starting_step_matches_hand_computation():
    y = torch.tensor([1.0], dtype=torch.float64)
    # f = y, p = 1: d0 = d1 = 1, h0 = 0.01, d2 = |1.01 - 1|/0.01 = 1, h1 = (0.01)^(1/2)
    assert starting_step(lambda t, z: z, 0.0, y, 1) == pytest.approx(0.1, rel=1e-12)
    # f = 2y, y0 = (3, 4), p = 2: d0 = rms = sqrt(12.5), d1 = 2 d0, h0 = 0.005,
    # d2 = ||2 (2 h0 y0)|| / h0 = 4 d0, h1 = (0.01 / (4 d0))^(1/3) < 100 h0 = 0.5
    y = torch.tensor([3.0, 4.0], dtype=torch.float64)
    d0 = math.sqrt(12.5)
    assert starting_step(lambda t, z: 2 * z, 0.0, y, 2) == pytest.approx(
        (0.01 / (4 * d0)) ** (1 / 3), rel=1e-12)
    # y0 = 0: d0 < 1e-5 -> h0 = 1e-6; d2 = 1, h1 = 0.1, result min(100 h0, h1) = 1e-4
    y = torch.zeros(1, dtype=torch.float64)
    assert starting_step(lambda t, z: z + 1, 0.0, y, 1) == pytest.approx(1e-4, rel=1e-9)
    # capped at max_step; weights atol + rtol|y0| scale d0, d1 alike (h0 unchanged)
    assert starting_step(lambda t, z: 1e-3 * z, 0.0, torch.ones(1, dtype=torch.float64), 1,
                         max_step=1.0) == 1.0
    with pytest.raises(ValueError, match="order"):
        starting_step(lambda t, z: z, 0.0, y, 0)


# --------------------------------------------------------------------------- crossing


def test_segment_intersection_cases():
    P = lambda *xy: torch.tensor(xy, dtype=torch.float64)  # noqa: E731
    assert segments_intersect(P(0, 0), P(1, 1), P(0, 1), P(1, 0))        # an X
    assert not segments_intersect(P(0, 0), P(1, 0), P(0, 1), P(1, 1))    # parallel
    assert segments_intersect(P(0, 0), P(1, 0), P(1, 0), P(1, 1))        # touching end
    assert segments_intersect(P(0, 0), P(2, 0), P(1, 0), P(3, 0))        # collinear overlap
    assert not segments_intersect(P(0, 0), P(1, 0), P(2, 0), P(3, 0))    # collinear apart
    assert not segments_intersect(P(0, 0), P(1, 1), P(0, 1), P(0.4, 0.6 + 1e-9))  # near miss


def test_find_crossings_on_constructed_trajectories(tmp_path):
    s = torch.linspace(0, 1, 6)
    rising = torch.stack([s, s], -1)
    falling = torch.stack([s, 0.9 - s], -1)
    above = torch.stack([s, s + 2], -1)
    res = find_crossings(torch.stack([rising, above, falling], dim=1))
    assert res.crossed and res.pairs == [(0, 2)]
    i, k, j, ll = res.segments[0]
    assert (i, j) == (0, 2) and (k, ll) == (2, 2)     # both meet at (0.45, 0.45) in [0.4, 0.6]
    res = find_crossings(torch.stack([rising, above, rising + torch.tensor([0.0, 0.5])], dim=1))
    assert not res.crossed and res.pairs == [] and res.segments == []
    # circles of radii 1 and 2 (an ODE's flow): no crossing; a coarse spiral of the
    # inner one that escapes outward does cross
    th = torch.linspace(0, 2 * math.pi, 40)
    circle = torch.stack([th.cos(), th.sin()], -1)
    assert not find_crossings(torch.stack([circle, 2 * circle], 1)).crossed
    spiral = circle * torch.linspace(1, 3, 40)[:, None]
    assert find_crossings(torch.stack([spiral, 2 * circle], 1)).pairs == [(0, 1)]
    # 3-D states: project to the first two coordinates
    lift = lambda z, c: torch.cat([z, torch.full_like(z[:, :1], c)], -1)  # noqa: E731
    res = find_crossings(torch.stack([lift(rising, 0.0), lift(falling, 5.0)], 1),
                         projection="first")
    assert res.pairs == [(0, 1)]
    path = plot_crossings(torch.stack([rising, falling], 1), tmp_path / "x.png")
    assert is_png(path)
    with pytest.raises(ValueError, match="T, B, d"):
        find_crossings(torch.zeros(3, 2))


# --------------------------------------------------------------------------- report


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("odeness") / "run"
    result = train(tiny(out, iterations=30))
    return out, result


def test_report_table_on_a_tiny_trained_model(trained_run, tmp_path):
    out, result = trained_run
    split = load_split(resolve_config(tiny(out)))
    train_solver = SolverConfig(method="euler", num_steps=2)
    rep = solver_independence_report(result.model, split, train_solver, out_dir=tmp_path)
    rows = rep.rows
    methods = [r["method"] for r in rows]
    assert methods == ["euler"] * 5 + ["midpoint"] * 5 + ["rk4"] * 5
    assert [r["step"] for r in rows[:5]] == pytest.approx([0.5, 0.25, 0.375, 0.75, 1.0])
    assert [r["steps"] for r in rows[:5]] == [2, 4, 3, 2, 1]
    per_step = {"euler": 1, "midpoint": 2, "rk4": 4}
    for r in rows:  # forward NFE of a fixed grid: stages x steps
        assert r["nfe"] == per_step[r["method"]] * r["steps"]
    assert rows[0]["is_train"] and rows[0]["changed"] == 0.0
    assert sum(r["is_train"] for r in rows) == 1
    # the training row's accuracy is the model's own test accuracy with its solver
    with torch.no_grad():
        acc = (result.model(split.x_test).argmax(-1) == split.y_test).float().mean()
    assert rows[0]["accuracy"] == pytest.approx(float(acc))
    # "changed" and the verdict agree with the rows
    assert all(r["changed"] >= abs(r["accuracy"] - rows[0]["accuracy"]) - 1e-12 for r in rows)
    gaps = [abs(r["accuracy"] - rep.train_accuracy) for r in rows if r["more_accurate"]]
    assert rep.max_gap == pytest.approx(max(gaps)) and rep.is_ode == (max(gaps) <= 0.1)
    assert [r["more_accurate"] for r in rows[:5]] == [False, True, True, False, False]
    assert is_png(tmp_path / "odeness.png")
    saved = json.loads((tmp_path / "odeness.json").read_text())
    assert saved["is_ode"] == rep.is_ode and len(saved["rows"]) == 15
    assert "Verdict" in rep.table() and rep.table().count("\n| ") == 15


class _Exploding(torch.nn.Module):
    """A classifier around z' = a z on [0, 1]: finite with Euler at one step (z (1 + a)),
    overflowing float32 under a fine solve (z e^a, a = 200)."""

    def __init__(self, a: float = 200.0):
        super().__init__()
        from hyperode.nn import Autonomous, NeuralODE

        self.scale = torch.nn.Parameter(torch.tensor(a))
        self.node = NeuralODE(Autonomous(_Scale(self.scale)),
                              solver=SolverConfig(method="euler", num_steps=1))

    def forward(self, x):
        return self.node(x)


class _Scale(torch.nn.Module):
    def __init__(self, scale):
        super().__init__()
        self.scale = scale

    def forward(self, z):
        return self.scale * z


def test_report_reference_row_and_overflow_count_as_failures():
    from hyperode.data.split import Split

    x = torch.tensor([[1.0, -1.0], [-1.0, 1.0], [2.0, 0.5], [0.1, 0.3]])
    y = x.argmax(-1)
    split = Split(x_train=x, y_train=y, x_test=x, y_test=y)
    model = _Exploding()
    train_solver = SolverConfig(method="euler", num_steps=1)
    rep = solver_independence_report(model, split, train_solver,
                                     reference=SolverConfig(method="rk4", num_steps=64))
    assert rep.rows[0]["accuracy"] == 1.0 and rep.rows[0]["nonfinite"] == 0.0
    ref = rep.rows[-1]
    assert ref["is_reference"] and ref["more_accurate"] and not ref["is_train"]
    # e^200 overflows float32: every prediction fails, none is counted as a class
    assert ref["nonfinite"] == 1.0 and ref["accuracy"] == 0.0 and ref["changed"] == 1.0
    assert "NonFiniteStateError" in ref["error"] and math.isnan(ref["nfe"])
    assert not rep.is_ode and rep.max_gap == 1.0
    assert "(reference)" in rep.table() and "non-finite" in rep.table()
    saved = json.loads(json.dumps(rep.to_dict(), allow_nan=False))  # strict JSON
    assert saved["rows"][-1]["nfe"] is None and saved["rows"][-1]["steps"] == 64
    with pytest.raises(ValueError, match="reference"):
        solver_independence_report(model, split, train_solver, reference="rk4:64")


def test_report_solvers_for_adaptive_and_rk4():
    names = [(s.method_name, s.rtol) for s in
             candidate_solvers(SolverConfig(method="fehlberg2", rtol=1e-3, atol=1e-3))]
    assert names == [("fehlberg2", 1e-3), ("fehlberg2", pytest.approx(1e-4)),
                     ("fehlberg2", pytest.approx(1e-2)), ("dopri5", pytest.approx(1e-4)),
                     ("dopri5", 1e-3), ("dopri5", pytest.approx(1e-2))]
    assert len(candidate_solvers(SolverConfig(method="dopri5", rtol=1e-3, atol=1e-3))) == 3
    rk4 = candidate_solvers(SolverConfig(method="rk4", step_size=0.25))
    assert {s.method_name for s in rk4} == {"rk4"} and len(rk4) == 5
    euler = SolverConfig(method="euler", step_size=0.5)
    assert _more_accurate(SolverConfig(method="midpoint", step_size=0.5), euler, 1.0)
    assert not _more_accurate(SolverConfig(method="midpoint", step_size=1.0), euler, 1.0)
    with pytest.raises(ValueError, match="fixed-step training method"):
        candidate_solvers(SolverConfig(method="heun", step_size=0.5))


# --------------------------------------------------------------------------- callbacks


def test_training_with_step_adaptation_changes_the_step(tmp_path):
    cb = StepAdaptation(every=5, initial_step="config")
    train(tiny(tmp_path / "run", iterations=21), callbacks=[cb])  # no check on the last one
    records = read_metrics(tmp_path / "run" / runs.METRICS_FILE)
    assert records[0]["adapt_action"] == "start" and records[0]["adapt_step"] == 0.5
    checks = [r for r in records if "adapt_acc_test" in r]
    assert [r["iteration"] for r in checks] == [5, 10, 15, 20]
    assert [h["adapt_step"] for h in cb.history] == [r["adapt_step"] for r in checks]
    assert len({r["adapt_step"] for r in checks} | {0.5}) > 1   # the step changed
    by_iter = {r["iteration"]: r for r in records}
    for check in checks[:-1]:  # the next iteration trains with the decided step
        nxt = by_iter[check["iteration"] + 1]
        assert nxt["solver"] == f"euler, h={check['adapt_step']:g}"
        assert nxt["nfe_forward"] == math.ceil(1 / check["adapt_step"] - 1e-9)
        assert check["adapt_nfe"] > 0 and check["adapt_test_solver"].startswith("midpoint")
    assert checks[-1]["adapt_nfe_total"] == pytest.approx(sum(r["adapt_nfe"] for r in checks))
    assert cb.state_dict()["h"] == checks[-1]["adapt_step"]


def test_step_adaptation_starts_from_hairers_step(tmp_path):
    cb = StepAdaptation(every=1000)
    train(tiny(tmp_path / "run", iterations=3), callbacks=[cb])
    records = read_metrics(tmp_path / "run" / runs.METRICS_FILE)
    h0 = records[0]["adapt_step"]
    assert records[0]["solver"] == "euler, 2 steps"   # iteration 1: the configured solver
    assert 1 / 500 <= h0 <= 1.0 and h0 != 0.5
    assert records[1]["solver"] == f"euler, h={h0:g}" and cb.h == h0
    with pytest.raises(ValueError, match="fixed-step training solver"):
        train(tiny(tmp_path / "run2", method="dopri5", num_steps=None, iterations=2),
              callbacks=[StepAdaptation()])


def test_training_with_tolerance_adaptation(tmp_path):
    cb = ToleranceAdaptation(every=3, initial_tol=1e-3)
    train(tiny(tmp_path / "run", method="dopri5", num_steps=None, iterations=7),
          callbacks=[cb])
    records = read_metrics(tmp_path / "run" / runs.METRICS_FILE)
    assert records[0]["solver"] == "dopri5, rtol=1e-03, atol=1e-03"
    checks = [r for r in records if "adapt_acc_test" in r]
    assert [r["iteration"] for r in checks] == [3, 6]
    for c in checks:
        assert c["adapt_action"] in ("halve", "grow", "reject_growth", "too_few_steps")
        # dopri5 at tol/10, tightened by 10 while it takes no more NFE than training
        method, rtol = c["adapt_test_solver"].split(", ")[:2]
        assert method == "dopri5" and float(rtol.split("=")[1]) <= 1.1e-4 * (1 + 1e-9)
        assert c["adapt_nfe"] > 0
    assert records[3]["solver"] == (f"dopri5, rtol={checks[0]['adapt_tol']:.0e}, "
                                    f"atol={checks[0]['adapt_tol']:.0e}")
    assert cb.tol == checks[-1]["adapt_tol"]


# --------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hyperode")
    sub = p.add_subparsers(dest="command", required=True)
    for command in (odeness_cli, adapt_cli, grid_cli):
        command.add_parser(sub)
    return p


def test_cli_odeness_and_adapt(trained_run, tmp_path, capsys):
    out, _ = trained_run
    loaded = load_run(out)
    assert (loaded.solver.method_name, loaded.solver.num_steps) == ("euler", 2)
    args = _parser().parse_args(["odeness", "--model", str(out), "--out", str(tmp_path / "o"),
                                 "--reference", "rk4:64"])
    assert args.run(args) == 0
    printed = capsys.readouterr().out
    assert "Verdict" in printed and "(reference)" in printed
    assert is_png(tmp_path / "o" / "odeness.png")
    saved = json.loads((tmp_path / "o" / "odeness.json").read_text())
    assert saved["rows"][-1]["is_reference"] and saved["rows"][-1]["steps"] == 64
    args = _parser().parse_args(["adapt", "--task", "xor", "--method", "euler", "--adapt",
                                 "step", "--adapt-every", "2", "--iterations", "5",
                                 "--n-train", "64", "--n-test", "32", "--batch-size", "16",
                                 "--quiet", "--no-plots", "--out", str(tmp_path / "a")])
    assert args.run(args) == 0
    records = read_metrics(tmp_path / "a" / runs.METRICS_FILE)
    assert sum("adapt_acc_test" in r for r in records) == 2


@pytest.mark.parametrize("argv, flag", [
    (["odeness", "--model", "/nonexistent/run"], "argument --model"),
    (["adapt", "--task", "xor", "--method", "dopri5", "--adapt", "step"], "argument --method"),
    (["adapt", "--task", "xor", "--method", "euler", "--num-steps", "2", "--adapt",
      "tolerance"], "argument --method"),
    (["adapt", "--task", "xor", "--adapt", "step", "--adapt-every", "0"],
     "argument --adapt-every"),
    (["adapt", "--task", "xor", "--adapt", "step", "--threshold", "2"], "argument --threshold"),
    (["odeness", "--model", "RUN", "--reference", "rk4"], "argument --reference"),
    (["odeness", "--model", "RUN", "--reference", "nope:8"], "argument --reference"),
    (["odeness", "--model", "RUN", "--reference", "rk4:0"], "argument --reference"),
    (["odeness", "--model", "RUN", "--reference", "dopri5:5"], "argument --reference"),
])
def test_cli_errors_name_the_argument(argv, flag, capsys):
    with pytest.raises(SystemExit) as e:
        args = _parser().parse_args(argv)
        args.run(args)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert flag in err


def test_no_check_on_the_last_iteration(tmp_path):
    """A change on the last iteration would only reach the final evaluation, which must
    use the solver the model was trained with."""
    cb = StepAdaptation(every=5, initial_step="config")
    train(tiny(tmp_path / "run", iterations=10), callbacks=[cb])
    checks = [r for r in read_metrics(tmp_path / "run" / runs.METRICS_FILE)
              if "adapt_acc_test" in r]
    assert [r["iteration"] for r in checks] == [5]


def test_candidate_solvers_do_not_repeat_a_one_step_solve():
    """With h equal to the span, factors 1.5 and 2 would label the same 1-step solve
    as h=1.5 and h=2: they collapse into the h=span row."""
    from hyperode.adapt import candidate_solvers
    from hyperode.nn import SolverConfig

    rows = candidate_solvers(SolverConfig.fixed("euler", num_steps=1), span=1.0)
    steps = [(r.method_name, r.step_size) for r in rows]
    assert len(steps) == len(set(steps))
    assert all(r.step_size <= 1.0 for r in rows)
    assert ("rk4", 1.0) in steps and ("euler", 0.5) in steps


# --------------------------------------------------------------------------- grid


@pytest.mark.parametrize("counts, valid, expected", [
    ([1, 2, 4, 8, 16], [False, False, False, True, True], 8),
    ([1, 2, 4, 8, 16], [True, True, True, True, True], 1),
    ([1, 2, 4, 8, 16], [False, True, False, True, True], 8),   # 2 valid, 4 not: no
    ([1, 2, 4, 8, 16], [True, True, True, True, False], None),  # the finest is invalid
    ([16, 4, 1, 8, 2], [True, False, False, True, True], 8),    # any order
    ([32], [True], 32),
])
def test_critical_steps_on_hand_made_tables(counts, valid, expected):
    assert critical_steps(counts, valid) == expected


@pytest.mark.parametrize("tols, valid, expected", [
    ([1e-1, 1e-2, 1e-3, 1e-4], [False, False, True, True], 1e-3),
    ([1e-1, 1e-2, 1e-3, 1e-4], [True, False, True, True], 1e-3),  # 1e-1 valid, 1e-2 not
    ([1e-4, 1e-1, 1e-3, 1e-2], [True, True, True, True], 1e-1),   # any order
    ([1e-1, 1e-2, 1e-3], [True, True, False], None),
])
def test_critical_tolerance_on_hand_made_tables(tols, valid, expected):
    assert critical_tolerance(tols, valid) == expected


def test_critical_values_reject_bad_tables():
    with pytest.raises(ValueError, match="same length"):
        critical_steps([1, 2], [True])
    with pytest.raises(ValueError, match="distinct"):
        critical_steps([2, 2], [True, True])
    with pytest.raises(ValueError, match="integers >= 1"):
        critical_steps([0, 2], [True, True])
    with pytest.raises(ValueError, match="finite numbers > 0"):
        critical_tolerance([1e-3, -1.0], [True, True])


def test_critical_summary_uses_the_worst_seed():
    summary = [{"value": v, "worst_drop": d, "acc_mean": 0.9, "acc_std": 0.0,
                "nfe_forward_per_iter": float(v)}
               for v, d in [(1, 0.5), (2, 0.05), (4, 0.2), (8, 0.01), (16, 0.0)]]
    runs_ = [{"value": v, "test_accuracy": 0.9} for v in (1, 2, 4, 8, 16)]
    c = critical_summary("steps", summary, runs_, 0.1)
    assert c["critical"] == 8 and c["last_invalid"] == 4 and c["next_after"] == 16
    assert c["valid"] == {"1": False, "2": True, "4": False, "8": True, "16": True}
    assert critical_summary("steps", summary, runs_, 0.3)["critical"] == 2


def test_cli_grid_on_a_tiny_run(tmp_path, capsys):
    out = tmp_path / "grid"
    args = _parser().parse_args(["grid", "--task", "spheres", "--solver", "euler", "--steps",
                                 "2,4", "--seeds", "0", "--iterations", "20", "--n-train",
                                 "256", "--n-test", "200", "--out", str(out)])
    assert args.run(args) == 0
    printed = capsys.readouterr().out
    assert "critical step count" in printed.lower() and "| 2 |" in printed
    res = json.loads((out / "results.json").read_text())
    assert [(r["value"], r["seed"]) for r in res["runs"]] == [(2, 0), (4, 0)]
    for r in res["runs"]:
        assert r["nfe_forward_per_iter"] == r["value"] and r["nfe_backward_per_iter"] == 0
        assert [x["method"] for x in r["rows"]][:1] == ["euler"] and len(r["rows"]) == 15
        drop = max([r["rows"][0]["accuracy"] - x["accuracy"] for x in r["rows"]
                    if x["more_accurate"]] + [0.0])
        assert r["max_drop"]["all"] == pytest.approx(drop)
    crit = res["critical"]["0.1"]
    valid = [crit["valid"][k] for k in ("2", "4")]
    assert crit["critical"] == critical_steps([2, 4], valid)
    assert json.loads((out / "config.json").read_text())["values"] == [2, 4]
    assert is_png(out / "grid.png") and "| steps |" in (out / "grid.md").read_text()
    # a second run into the same folder is refused, naming --out
    with pytest.raises(SystemExit):
        args.run(args)
    assert "argument --out" in capsys.readouterr().err


@pytest.mark.parametrize("argv, flag", [
    (["--solver", "euler", "--steps", "1,0"], "argument --steps: must be an integer >= 1"),
    (["--solver", "euler", "--steps", "2,2"], "argument --steps: step counts must be distinct"),
    (["--solver", "euler", "--tolerances", "1e-3"], "argument --tolerances"),
    (["--solver", "dopri5", "--steps", "4"], "argument --steps"),
    (["--solver", "dopri5", "--tolerances", "1e-2,2"], "argument --tolerances"),
    (["--solver", "heun", "--steps", "4"], "argument --solver"),
    (["--solver", "euler", "--seeds", "0,-1"], "argument --seeds"),
    (["--solver", "euler", "--threshold", "1.5"], "argument --threshold"),
    (["--solver", "euler", "--iterations", "0"], "argument --iterations"),
    (["--solver", "euler", "--model", "nope", "--iterations", "2"], "argument --model"),
])
def test_cli_grid_errors_name_the_argument(argv, flag, capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        args = _parser().parse_args(["grid", "--task", "spheres", "--out",
                                     str(tmp_path / "g"), *argv])
        args.run(args)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert flag in err


def test_run_grid_over_tolerances(tmp_path):
    res = run_grid("xor", "fehlberg2", tolerances=[1e-2, 1e-1], seeds=[0], iterations=5,
                   train_options={"n_train": 64, "n_test": 64, "batch_size": 32}, log=None)
    assert res.kind == "tolerance" and res.config["values"] == [1e-1, 1e-2]  # loose first
    assert res.out is None and not any(tmp_path.iterdir())
    for r in res.runs:
        methods = [x["method"] for x in r["rows"]]
        assert methods == ["fehlberg2"] * 3 + ["dopri5"] * 3
        assert r["nfe_forward_per_iter"] > 0 and r["nfe_backward_per_iter"] == 0
    assert [s["value"] for s in res.summary] == [1e-1, 1e-2]
    valid = [res.critical["0.1"]["valid"][k] for k in ("1e-01", "1e-02")]
    assert res.critical["0.1"]["critical"] == critical_tolerance([1e-1, 1e-2], valid)
    assert "| tol |" in res.table()
    with pytest.raises(ValueError, match="steps: apply to fixed-step"):
        run_grid("xor", "dopri5", steps=[2])
    with pytest.raises(ValueError, match="train_options"):
        run_grid("xor", "euler", steps=[2], train_options={"seed": 1})


# =========================================================================== crossing field
# (appendix A, eq. 6) and resuming a run with step / tolerance adaptation


def _crossing_euler(z0, h, span=2.0):
    from hyperode import odeint
    from hyperode.adapt import CrossingField

    t = torch.linspace(0.0, span, round(span / h) + 1, dtype=torch.float64)
    return odeint(CrossingField(), z0, t, method="euler", options=dict(step_size=h))


@pytest.mark.parametrize("x, v", [
    (0.0, (1.0, 0.0)), (1.0, (1.0, 0.0)),          # outside (1, 2]; x = 1 is outside
    (1.1, (0.8, 0.2)), (1.25, (0.5, 0.5)),         # (1, 1.25]: (1 - 2(x-1), 2(x-1))
    (1.5, (0.5, 0.5)), (1.75, (0.5, 0.5)),         # (1.25, 1.75]: (0.5, 0.5)
    (1.8, (0.6, 0.4)), (2.0, (1.0, 0.0)),          # (1.75, 2]: (0.5 + 2u, 0.5 - 2u)
    (2.5, (1.0, 0.0)),
])
def test_crossing_field_values_on_each_piece(x, v):
    from hyperode.adapt import CrossingField

    f = CrossingField()
    z = torch.tensor([[x, 0.1], [x, 2.0]], dtype=torch.float64)
    expected = torch.tensor(v, dtype=torch.float64)
    assert torch.allclose(f(0.0, z), z[:, 1:] * expected, atol=1e-12)   # f = y * v(x)
    # v is continuous: no jump at the breakpoints
    eps = torch.tensor([x - 1e-9, x + 1e-9], dtype=torch.float64)
    assert torch.allclose(f.direction(eps), expected.expand(2, 2), atol=1e-7)


def test_crossing_field_rejects_bad_input():
    from hyperode.adapt import CrossingField

    f = CrossingField()
    with pytest.raises(ValueError, match=r"z must be a \[\.\.\., 2\]"):
        f(0.0, torch.zeros(3, 3))
    with pytest.raises(ValueError, match=r"y_min must be .* >= 0\.1"):
        f.initial_states(y_min=0.05)
    with pytest.raises(ValueError, match="n must be an int >= 1, got 0"):
        f.initial_states(0)
    with pytest.raises(ValueError, match="x0 must be"):
        f.initial_states(x0=-1.0)


def test_crossing_field_euler_crosses_at_half_only():
    """Fig. 7: from x0 = 0 (y0 = 0.1..1), Euler at h = 1 does not cross, at h = 1/2 it
    does, at h = 2^-5 it no longer does; the IVPs from x0 = 1.4 (text) or 1.5 (caption)
    make h = 1 cross too."""
    from hyperode.adapt import CrossingField

    blue = CrossingField.initial_states()
    assert [find_crossings(_crossing_euler(blue, h)).crossed
            for h in (1.0, 0.5, 2.0 ** -5)] == [False, True, False]
    for x0 in (1.4, 1.5):
        both = torch.cat([blue, CrossingField.initial_states(4, x0=x0)])
        assert find_crossings(_crossing_euler(both, 1.0)).crossed


def test_crossing_field_exact_solution_never_crosses():
    from hyperode import odeint
    from hyperode.adapt import CrossingField

    f = CrossingField()
    z0 = torch.cat([f.initial_states(), f.initial_states(4, x0=1.4)])
    t = torch.linspace(0.0, 2.0, 81, dtype=torch.float64)
    sol = odeint(f, z0, t, method="dopri5", rtol=1e-10, atol=1e-10)
    assert not find_crossings(sol).crossed
    for i in range(z0.shape[0]):  # on the closed-form phase curve y = y0 + G(x) - G(x0)
        exact = f.phase_curve(sol[:, i, 0], float(z0[i, 0]), float(z0[i, 1]))
        assert torch.allclose(sol[:, i, 1], exact, atol=1e-6)
    assert float(f.rise(torch.tensor(3.0))) == pytest.approx(math.log(2.0))


def _interrupt_at(at: int):
    from hyperode.experiments import Callback

    class Interrupt(Callback):
        """Ctrl-C at the end of iteration ``at``, after the checkpoint of an earlier one."""

        def on_iteration_end(self, state):
            if state.iteration == at:
                raise KeyboardInterrupt

    return Interrupt()


def _adaptation(kind: str, **changes):
    if kind == "step":
        return StepAdaptation(**{"every": 3, **changes})
    return ToleranceAdaptation(**{"every": 3, "initial_tol": 0.3, **changes})


@pytest.mark.parametrize("kind", ["step", "tolerance"])
def test_resume_with_adaptation_is_bit_for_bit(tmp_path, kind):
    """Interrupted at iteration 13 (last checkpoint 10) and resumed: weights, the
    metrics (solver per iteration, adapt_* figures) and the adaptation history equal
    an uninterrupted run's."""
    from hyperode.experiments.train import strip_timing

    solver = {} if kind == "step" else dict(method="dopri5", num_steps=None)
    cfg = dict(iterations=20, checkpoint_every=10, **solver)
    ref_cb = _adaptation(kind)
    ref = train(tiny(tmp_path / "ref", **cfg), callbacks=[ref_cb])
    with pytest.raises(KeyboardInterrupt):
        train(tiny(tmp_path / "cut", **cfg), callbacks=[_adaptation(kind), _interrupt_at(13)])
    cb = _adaptation(kind)
    resumed = train(tiny(tmp_path / "cut", resume=True, **cfg), callbacks=[cb])
    assert resumed.results["resumed_from"] == 10
    a, b = ref.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    ref_records = [strip_timing(r) for r in read_metrics(tmp_path / "ref" / runs.METRICS_FILE)]
    res_records = [strip_timing(r) for r in read_metrics(tmp_path / "cut" / runs.METRICS_FILE)]
    assert res_records == ref_records
    assert cb.history == ref_cb.history and cb.state_dict() == ref_cb.state_dict()
    assert [h["iteration"] for h in cb.history] == [3, 6, 9, 12, 15, 18]
    key = "adapt_step" if kind == "step" else "adapt_tol"
    values = [h[key] for h in cb.history]
    assert len(set(values)) > 1                            # the solver did adapt
    if kind == "step":  # both directions (XOR under dopri5 only ever grows its tolerance)
        assert {"halve", "grow"} <= {h["adapt_action"] for h in cb.history}
    # the first resumed iteration (11) trains with what check 9 decided before the cut
    at_9 = cb.history[2][key]
    assert res_records[10]["solver"] == (f"euler, h={at_9:g}" if kind == "step" else
                                         f"dopri5, rtol={at_9:.0e}, atol={at_9:.0e}")
    assert resumed.results["final"] == ref.results["final"]


def test_resume_with_other_adaptation_settings_is_refused(tmp_path):
    from hyperode.experiments import ConfigError

    out = tmp_path / "run"
    train(tiny(out, iterations=10), callbacks=[StepAdaptation(every=3)])
    with pytest.raises(ConfigError, match="every: is 5 but the run being resumed adapted "
                                          "with every=3"):
        train(tiny(out, iterations=10, resume=True), callbacks=[StepAdaptation(every=5)])
