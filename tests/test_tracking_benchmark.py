"""Smoke test of ``benchmarks/hypersolvers_tracking.py``: its ``--quick`` run writes the
JSON, markdown and plot with the expected keys, and HyperEuler with an unfitted (or
switched-off) ``g`` reproduces Euler exactly."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "hypersolvers_tracking.py"


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _load_script():
    spec = importlib.util.spec_from_file_location("hypersolvers_tracking", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_run_writes_results(tmp_path):
    bench = _load_script()
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


def test_unfitted_hypereuler_is_euler():
    bench = _load_script()
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
