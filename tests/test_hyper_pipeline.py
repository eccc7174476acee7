"""The hypersolver pipeline end to end on tiny runs: train -> fit -> evaluate -> replot,
its files and JSON keys, and the ``hyperode hyper`` / ``hyperode demo`` command lines."""

from __future__ import annotations

import json
import math

import pytest
import torch

from hyperode.cli import main
from hyperode.experiments import TrainConfig, train
from hyperode.experiments.config import ConfigError
from hyperode.experiments.hyper import (
    PARETO_PLOTS,
    best_under_loss,
    evaluate_hypersolver,
    fit_hypersolver,
    load_hypersolver,
    replot,
    summary_steps,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _train(tmp_path_factory, task: str, **kw) -> str:
    out = tmp_path_factory.mktemp(f"{task}-run")
    train(TrainConfig(task=task, iterations=3, quiet=True, plots=False, out=str(out),
                      eval_every=3, checkpoint_every=3, **kw))
    return str(out)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    return _train(tmp_path_factory, "digits", method="rk4", num_steps=2, batch_size=16)


@pytest.fixture(scope="module")
def digits_hyper(digits_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("hyper")
    return fit_hypersolver(digits_run, "euler", 4, iterations=4, batch_size=8, out=out,
                           validation_size=16, progress=False, verbose=False)


def test_fit_writes_folder(digits_hyper):
    for name in ("config.json", "hyper.safetensors", "results.json", "fitting_curve.png"):
        assert (digits_hyper / name).is_file(), name
    config = json.loads((digits_hyper / "config.json").read_text())
    assert config["base"] == "euler" and config["steps"] == 4
    assert config["net"]["kind"] == "conv" and config["net"]["channels"] == 16
    results = json.loads((digits_hyper / "results.json").read_text())
    assert len(results["history"]["loss"]) == 4
    assert {"mape_base", "mape_hyper"} <= set(results["validation"])
    hyper, cfg = load_hypersolver(digits_hyper)
    assert hyper.order == 1 and cfg["format"] == "hyperode.hyper/1"


def test_evaluate_writes_results(digits_run, digits_hyper, tmp_path):
    out = tmp_path / "eval"
    results = evaluate_hypersolver(digits_run, digits_hyper, out=out, steps=(2, 4),
                                   methods=("euler", "rk4"), tight_tol=1e-5, warmup=0,
                                   repeats=1, timing_batch=32, verbose=False)
    saved = json.loads((out / "results.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(results["rows"]))
    for key in ("reference", "error_reference", "rows", "pareto", "best_under_accuracy_loss",
                "summary", "hypersolver", "versions"):
        assert key in saved, key
    methods = [(r["method"], r["steps"]) for r in saved["rows"]]
    assert methods == [("dopri5", None), ("dopri5", None), ("euler", 2), ("euler", 4),
                       ("rk4", 2), ("rk4", 4), ("hypereuler", 2), ("hypereuler", 4)]
    for r in saved["rows"]:
        for key in ("nfe", "nfe_correction", "macs_f", "macs_g", "macs", "mape", "rel_l2",
                    "accuracy", "accuracy_loss", "time_s"):
            assert key in r, key
    by = {(r["method"], r["steps"]): r for r in saved["rows"]}
    assert by[("euler", 4)]["nfe"] == 4 and by[("rk4", 4)]["nfe"] == 16
    h = by[("hypereuler", 4)]
    assert h["nfe"] == 4 and h["nfe_correction"] == 4
    assert h["macs_f"] == pytest.approx(by[("euler", 4)]["macs_f"]) and h["macs_g"] > 0
    assert saved["rows"][1]["mape"] == 0.0  # the tight reference against itself
    assert set(saved["pareto"]) == set(PARETO_PLOTS)
    assert saved["plots"] == list(PARETO_PLOTS.values())
    for name in PARETO_PLOTS.values():
        assert (out / name).is_file()
    # replot from results.json into another folder
    made = replot(out / "results.json", tmp_path / "again")
    assert sorted(made) == sorted(PARETO_PLOTS.values())


def test_vector_state_uses_mlp(tmp_path_factory):
    run = _train(tmp_path_factory, "spheres", method="euler", num_steps=2, n_train=64,
                 n_test=32, batch_size=16)
    out = fit_hypersolver(run, "midpoint", 2, iterations=2, batch_size=8, validation_size=8,
                          progress=False, verbose=False)
    assert out.name == "hyper-midpoint-K2"
    assert json.loads((out / "config.json").read_text())["net"]["kind"] == "mlp"


def test_multi_step_fit_and_kernel_size(digits_run, tmp_path):
    out = fit_hypersolver(digits_run, "euler", [4, 2, 8], iterations=3, batch_size=8,
                          hidden=[4], kernel_size=1, validation_size=8, out=tmp_path / "h",
                          progress=False, verbose=False)
    config = json.loads((out / "config.json").read_text())
    assert config["steps"] == [2, 4, 8] and config["fit"]["num_steps"] == [2, 4, 8]
    assert config["net"]["hidden"] == [4] and config["net"]["kernel_size"] == 1
    validation = json.loads((out / "results.json").read_text())["validation"]
    assert [r["steps"] for r in validation["per_steps"]] == [2, 4, 8]
    assert validation["steps"] == summary_steps([2, 4, 8]) == 4
    hyper, _ = load_hypersolver(out)
    convs = [m for m in hyper.g.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(1, 1), (1, 1)]
    assert convs[0].in_channels == 33 and convs[0].out_channels == 4
    results = evaluate_hypersolver(digits_run, out, out=tmp_path / "eval", steps=(4,),
                                   methods=("euler",), tight_tol=1e-5, warmup=0, repeats=1,
                                   timing_batch=8, verbose=False)
    assert results["hypersolver"]["fitted_steps"] == [2, 4, 8]
    assert results["hypersolver"]["summary_steps"] == 4
    assert "mape_ratio_euler_over_hyper_at_fitted_steps" in results["summary"]


def test_summary_steps_is_the_middle_count():
    assert summary_steps(10) == 10
    assert summary_steps([20, 5, 10]) == 10
    assert summary_steps([5, 10, 20, 40]) == 10


def test_best_under_loss_picks_fewest_steps():
    ref = {"time_s": 1.0}
    rows = [{"method": "euler", "steps": k, "nfe": k, "nfe_correction": 0, "macs": k,
             "accuracy_loss": loss, "mape": 0.1, "time_s": 0.1 * k}
            for k, loss in ((2, 0.05), (4, 0.0005), (8, 0.0))]
    best = best_under_loss(rows, ref)
    assert best["euler"]["steps"] == 4
    assert math.isclose(best["euler"]["speedup_vs_dopri5"], 2.5)


def test_bad_arguments(digits_run, tmp_path):
    with pytest.raises(ConfigError, match="model"):
        fit_hypersolver(tmp_path / "missing", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"config\.json"):
        fit_hypersolver(tmp_path / "empty", progress=False)
    with pytest.raises(ConfigError, match="base"):
        fit_hypersolver(digits_run, "nope", progress=False)
    with pytest.raises(ConfigError, match="steps"):
        fit_hypersolver(digits_run, "euler", 0, progress=False)
    with pytest.raises(ConfigError, match="distinct"):
        fit_hypersolver(digits_run, "euler", [4, 4], progress=False)
    with pytest.raises(ConfigError, match="steps"):
        fit_hypersolver(digits_run, "euler", [], progress=False)
    with pytest.raises(ConfigError, match="kernel_size"):
        fit_hypersolver(digits_run, "euler", 4, kernel_size=2, progress=False)
    with pytest.raises(ConfigError, match="hidden"):
        fit_hypersolver(digits_run, "euler", 4, hidden=[8, 0], progress=False)
    with pytest.raises(ConfigError, match="hyper"):
        evaluate_hypersolver(digits_run, tmp_path / "empty", verbose=False)


@pytest.mark.parametrize("argv", [["hyper", "--help"], ["hyper", "fit", "--help"],
                                  ["hyper", "eval", "--help"], ["hyper", "pareto", "--help"],
                                  ["demo", "--help"]])
def test_cli_help(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0
    assert "usage: hyperode" in capsys.readouterr().out


@pytest.mark.parametrize("argv, flag", [
    (["hyper", "fit", "--model", "/no/such/run"], "--model"),
    (["hyper", "fit", "--model", "RUN", "--steps", "0"], "--steps"),
    (["hyper", "fit", "--model", "RUN", "--steps", ","], "--steps"),
    (["hyper", "fit", "--model", "RUN", "--steps", "2,2"], "--steps"),
    (["hyper", "fit", "--model", "RUN", "--kernel-size", "2"], "--kernel-size"),
    (["hyper", "fit", "--model", "RUN", "--hidden", "8,x"], "--hidden"),
    (["hyper", "fit", "--model", "RUN", "--base", "nope"], "--base"),
    (["hyper", "eval", "--model", "RUN", "--hyper", "/no/such/hyper"], "--hyper"),
    (["hyper", "eval", "--model", "RUN", "--hyper", "H", "--steps", "2,x"], "--steps"),
    (["hyper", "pareto", "--results", "/no/such/results.json"], "--results"),
    (["hyper", "fit"], "--model"),
])
def test_cli_bad_arguments(argv, flag, digits_run, capsys):
    argv = [digits_run if a == "RUN" else a for a in argv]
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("hyperode hyper") and flag in err


def test_cli_fit_eval_pareto(digits_run, tmp_path, capsys):
    hyper = tmp_path / "h"
    assert main(["hyper", "fit", "--model", digits_run, "--steps", "2,3", "--iterations", "2",
                 "--batch-size", "8", "--hidden", "4", "--kernel-size", "1", "--out",
                 str(hyper), "--quiet"]) == 0
    assert (hyper / "hyper.safetensors").is_file()
    config = json.loads((hyper / "config.json").read_text())
    assert config["steps"] == [2, 3] and config["net"]["kernel_size"] == 1
    assert main(["hyper", "eval", "--model", digits_run, "--hyper", str(hyper), "--steps",
                 "2", "--methods", "euler", "--tight-tol", "1e-5", "--out",
                 str(tmp_path / "e")]) == 0
    assert (tmp_path / "e" / "results.json").is_file()
    assert main(["hyper", "pareto", "--results", str(tmp_path / "e"), "--out",
                 str(tmp_path / "p")]) == 0
    assert "pareto" in capsys.readouterr().out
    assert (tmp_path / "p" / PARETO_PLOTS["error_vs_nfe"]).is_file()


def test_cli_solvers_demo(capsys):
    assert main(["solvers-demo", "--steps", "10"]) == 0
    assert "kepler" in capsys.readouterr().out.lower()
