"""The scripts in examples/ run and print what they claim (a broken example fails CI).

Each script runs in a subprocess, as a user would run it, with a generous timeout
(time is never asserted; the scripts are sized for seconds). The figures they print
are checked against bounds that hold for correct code: errors against closed forms,
a fitted hypersolver beating its base, a verdict consistent with its numbers.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NUMBER = r"([-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?)"


def run_example(name: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(EXAMPLES / name)], capture_output=True,
                          text=True, timeout=300, env=env, cwd=EXAMPLES.parent)
    assert proc.returncode == 0, f"{name} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    return proc.stdout


def figure(output: str, pattern: str) -> float:
    """The number captured by ``pattern`` (with ``{n}`` for the number) in ``output``."""
    match = re.search(pattern.format(n=NUMBER), output)
    assert match, f"no line matching {pattern!r} in:\n{output}"
    return float(match.group(1))


def test_every_example_is_tested():
    scripts = sorted(p.name for p in EXAMPLES.glob("*.py"))
    tested = sorted(name for name in globals() if name.startswith("test_example_"))
    assert [f"test_example_{s[:-3]}" for s in scripts] == tested


def test_example_quickstart_odeint():
    out = run_example("quickstart_odeint.py")
    assert figure(out, r"odeint \(dopri5, default tolerances\).*max error vs exact: {n}") < 1e-5
    assert figure(out, r"solve \(tsit5, rtol=1e-6\).*max error vs exact: {n}") < 1e-4
    assert figure(out, r"solve \(tsit5, rtol=1e-6\): nfe={n}") > 0
    assert figure(out, r"odeint \(rk4, 200 steps\): max error vs exact: {n}") < 1e-5
    assert figure(out, r"gradient d x\(T\) / d x\(0\): max error vs exact: {n}") < 1e-5


def test_example_from_torchdiffeq():
    out = run_example("from_torchdiffeq.py")
    assert "misspelt option -> ValueError: unknown option 'step_sise'" in out
    assert "blow-up -> StepSizeUnderflowError" in out or "blow-up -> NonFiniteStateError" in out
    try:
        import torchdiffeq  # noqa: F401
    except ImportError:
        assert "torchdiffeq is not installed" in out
        return
    # dopri5 at rtol 1e-7: the two libraries agree to about the tolerance.
    assert figure(out, r"max \|hyperode - torchdiffeq\| \(dopri5\): {n}") < 1e-5
    # rk4_38 with linear interpolation is torchdiffeq's rk4, to rounding.
    assert figure(out, r"rk4_38 \+ interp='linear' - torchdiffeq rk4\|: {n}") < 1e-12
    # the classic method landing on outputs is a different, visible computation.
    assert figure(out, r"rk4 \(classic, landing on outputs\) - torchdiffeq rk4\|: {n}") > 1e-6


def test_example_hypersolver_own_model():
    out = run_example("hypersolver_own_model.py")
    before = figure(out, r"residual loss {n} ->")
    after = figure(out, r"residual loss [^ ]+ -> {n}")
    assert after < 0.1 * before
    euler = figure(out, r"euler K=10: terminal error {n}")
    midpoint = figure(out, r"midpoint K=10: terminal error {n}")
    hyper = figure(out, r"hypereuler K=10: terminal error {n}")
    assert hyper < 0.2 * euler
    assert hyper < midpoint  # at half midpoint's evaluations of f
    assert figure(out, r"hypereuler K=10: .*NFE of f +{n}") == 10
    assert figure(out, r"hypereuler K=10: .*NFE of g +{n}") == 10


def test_example_check_odeness():
    out = run_example("check_odeness.py")
    rows = re.findall(r"(\w+) x(\d+): train-solver accuracy " + NUMBER + r", max accuracy gap "
                      + NUMBER + r" \(threshold " + NUMBER + r"\) -> (.*)", out)
    assert len(rows) == 2, out
    verdicts = {}
    for method, steps, acc, gap, threshold, verdict in rows:
        assert float(acc) > 0.9, f"{method} x{steps} did not learn the task: {acc}"
        is_ode = verdict.startswith("still an ODE")
        assert is_ode == (float(gap) <= float(threshold))
        verdicts[method] = is_ode
    # One Euler step over the whole depth gives a model tied to its solver; RK4 at 3
    # steps (error far below the test solvers') stays an ODE.
    assert verdicts == {"euler": False, "rk4": True}


def test_example_seminorm_adjoint():
    out = run_example("seminorm_adjoint.py")
    default = figure(out, r"solve_adjoint norm='default': backward NFE {n}")
    semi = figure(out, r"solve_adjoint norm='seminorm': backward NFE {n}")
    assert semi < default
    assert figure(out, r"relative difference of the two gradients: {n}") < 1e-4
    nll_default = figure(out, r"default norm: NLL after \d+ iterations {n}")
    nll_semi = figure(out, r"seminorm: NLL after \d+ iterations {n}")
    assert abs(nll_default - nll_semi) < 0.05  # same training, fewer backward steps
    cnf_default = figure(out, r"CNF, +default norm: .*backward NFE {n}")
    cnf_semi = figure(out, r"CNF, +seminorm: .*backward NFE {n}")
    assert cnf_semi < cnf_default


def test_example_cnf():
    out = run_example("cnf.py")
    before = figure(out, r"test NLL before training: {n}")
    after = figure(out, r"test NLL after \d+ iterations: {n}")
    assert after < before - 1.0
    assert abs(figure(out, r"integral of the learned density over \[-5, 5\]\^2: {n}") - 1) < 0.05


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.py")))
def test_examples_use_only_the_library(name):
    """Examples are what users copy: they import the library, never the application."""
    text = (EXAMPLES / name).read_text()
    imports = re.findall(r"^\s*(?:from|import) (hyperode[\w.]*)", text, flags=re.M)
    assert imports, f"{name} does not use hyperode"
    for module in imports:
        assert not module.startswith(("hyperode.cli", "hyperode.experiments")), (name, module)
