"""Smoke test of ``benchmarks/odeness.py --paper --quick``: Ott et al.'s spheres-2D setting
(the Conv1d block, Adam 1e-4 constant, no clipping) with step adaptation, run as two
``--seed-list`` commands into one folder; the outputs are checked for content."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from hyperode.experiments.plots import is_png

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "odeness.py"


pytestmark = pytest.mark.usefixtures("one_thread")


def _load():
    spec = importlib.util.spec_from_file_location("benchmark_odeness_paper", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_paper_mode_trains_the_papers_model_and_merges_seed_lists(tmp_path, capsys):
    bench = _load()
    for seeds in ("1", "0"):  # two commands, the second one's seed sorts first
        bench.main(["--paper", "--quick", "--only", "adaptation", "--seed-list", seeds,
                    "--out", str(tmp_path)])
    capsys.readouterr()
    res = json.loads((tmp_path / "odeness_paper.json").read_text())
    assert res["format"] == bench.PAPER_FORMAT
    assert res["config"]["training"] == bench.PAPER_OPTIONS
    assert len(res["commands"]) == 2
    a = res["adaptation"]
    assert a["complete"] and [r["seed"] for r in a["runs"]] == [0, 1]
    iterations = bench.PAPER_QUICK["iterations"]
    window = bench.PAPER_QUICK["window"]
    for r in a["runs"]:
        tr = r["trace"]
        assert tr["iteration_end"] == list(range(window, iterations + 1, window))
        assert all(n > 0 for n in tr["nfe_forward_mean"])
        # the windows' mean forward NFE average to the run's mean (equal windows)
        assert abs(sum(tr["nfe_forward_mean"]) / len(tr["nfe_forward_mean"])
                   - r["nfe_forward_per_iter"]) < 1e-9
        assert [it for it, _ in tr["test"]] == list(range(
            bench.PAPER_QUICK["eval_every"], iterations + 1, bench.PAPER_QUICK["eval_every"]))
        assert r["history"][0]["iteration"] == 50 and 1 <= r["final_num_steps"] <= 500
        assert set(r["reference"]) >= {"rk4_256", "rk4_512", "drop"}
    md = (tmp_path / "odeness_paper.md").read_text()
    assert "paper, Table 1: step adaptation | 100.5 | 98.9 ± 0.6%" in md
    assert "step adaptation (Euler), 60 iterations, 2 seed(s)" in md and "last third" in md
    assert is_png(tmp_path / "odeness_paper_adaptation.png")


def test_paper_mode_grid_seed_lists_pool_into_one_grid(tmp_path, capsys):
    """Two ``--seed-list`` commands of one grid: the second keeps the first's runs and
    the summary and critical values are those of the pooled runs."""
    bench = _load()
    for seeds in ("1", "0"):
        bench.main(["--paper", "--quick", "--only", "rk4", "--seed-list", seeds,
                    "--out", str(tmp_path)])
    capsys.readouterr()
    g = json.loads((tmp_path / "odeness_paper.json").read_text())["rk4"]
    assert g["complete"] and g["config"]["seeds"] == [0, 1]
    assert sorted((r["value"], r["seed"]) for r in g["runs"]) == [
        (v, s) for v in bench.PAPER_QUICK["rk4_steps"] for s in (0, 1)]
    for row in g["summary"]:
        runs = [r for r in g["runs"] if r["value"] == row["value"]]
        assert sorted(row["seeds"]) == [0, 1]
        assert row["worst_drop"] == max(r["max_drop"]["all"] for r in runs)
        assert abs(row["acc_mean"] - sum(r["test_accuracy"] for r in runs) / 2) < 1e-12
        assert row["reference"]["worst_drop"] == max(r["extra"]["drop"] for r in runs)
    summary = bench.summarise_runs(g["config"], g["runs"])
    assert g["critical"]["0.1"] == bench.critical_summary("steps", summary, g["runs"], 0.1)
    assert "seeds [0, 1]" in (tmp_path / "odeness_paper.md").read_text()


def test_paper_mode_mnist_panel_trains_otts_mnist_model_with_sgd(tmp_path, capsys):
    """The MNIST panel (Euler grid and step adaptation) on mnist5k: the paper's 96-channel
    Conv2d block, plain SGD 1e-2, a seeded test subset, the reference solves."""
    bench = _load()
    bench.main(["--paper", "--quick", "--only", "mnist-grid,mnist-adaptation",
                "--out", str(tmp_path)])
    capsys.readouterr()
    res = json.loads((tmp_path / "odeness_paper.json").read_text())
    quick = bench.PAPER_QUICK
    g, a = res["mnist-grid"], res["mnist-adaptation"]
    assert g["complete"] and a["complete"]
    for entry in (g, a):
        assert entry["training"]["optimizer"] == "sgd" and entry["training"]["model"] == "ott"
        assert entry["training"]["n_test"] == quick["mnist_n_test"]
    assert g["config"]["task"] == "mnist5k" and g["config"]["values"] == quick["mnist_steps"]
    assert g["config"]["train_config"]["optimizer"] == "sgd"
    (run,) = g["runs"]
    # accuracies are fractions of the test subset
    n = quick["mnist_n_test"]
    assert abs(run["test_accuracy"] * n - round(run["test_accuracy"] * n)) < 1e-5
    assert set(run["extra"]) >= {"rk4_8", "rk4_16", "drop", "converged"}
    (ad,) = a["runs"]
    assert a["task"] == "mnist5k" and a["iterations"] == quick["mnist_iterations"]
    assert 1 <= ad["final_num_steps"] <= 500 and ad["final_solver"]["method"] == "euler"
    md = (tmp_path / "odeness_paper.md").read_text()
    assert "## MNIST panel" in md and "Euler grid (Fig. 10a)" in md
    assert "Step adaptation, Euler -> midpoint (Fig. 19)" in md
    for png in ("odeness_paper_mnist_grid.png", "odeness_paper_mnist_adaptation.png"):
        assert is_png(tmp_path / png)


def test_paper_mode_names_the_bad_experiment(tmp_path, capsys):
    bench = _load()
    with pytest.raises(SystemExit):
        bench.main(["--paper", "--only", "digits", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert "unknown experiment(s) ['digits']" in err and "adaptation,tolerance" in err
