"""Smoke tests of the benchmark scripts that are cheap enough to run in the suite: each
runs its ``main`` on a tiny budget into a temporary folder and its outputs are checked
for content, not only existence."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
