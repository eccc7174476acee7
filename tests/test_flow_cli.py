"""Flow matching from the command line: ``hyperode train --task fm2d|fm-digits`` and
``hyperode sample fit|eval``, run in-process through ``hyperode.cli.main``.

- a short fm2d run writes the run folder (config, weights that reload to the same
  field, results with the loss history and finite dopri5 sample quality, plots); the
  flow flags reach the training settings;
- ``sample fit`` writes the fitted sampler (state + construction arguments) and the
  bespoke fit lowers its held-out end-point distance; ``sample eval`` writes
  ``sampling/results.json`` with a finite dopri5 row, the fixed-step rows the NFE list
  allows and each fitted sampler's row, the table on stdout and the plots;
- bad input gives exit status 2 and one line on stderr naming the flag, before anything
  is written.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from hyperode.cli import main
from hyperode.experiments.flow import load_flow_run
from hyperode.experiments.plots import is_png
from hyperode.experiments.sampling import load_fitted

FM2D = ["train", "--task", "fm2d", "--density", "8gaussians", "--n-train", "2000",
        "--n-test", "300", "--iterations", "150", "--batch-size", "128", "--quiet"]


@pytest.fixture(scope="module")
def fm2d_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("flow") / "fm2d"
    assert main([*FM2D, "--out", str(out)]) == 0
    return out


def _fails(argv: list[str], capsys) -> str:
    """The CLI must exit with status 2 and one error line; returns it."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert e.value.code == 2, captured.err
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("hyperode ") and ": error: " in lines[0], lines[0]
    return lines[0]


def _finite(row: dict, keys: tuple[str, ...]) -> None:
    for k in keys:
        assert isinstance(row[k], (int, float)) and math.isfinite(row[k]), (k, row)


def test_fm2d_run_folder(fm2d_run):
    for name in ("config.json", "model.safetensors", "results.json"):
        assert (fm2d_run / name).is_file(), name
    for name in ("samples.png", "training_loss.png"):
        assert is_png(fm2d_run / name), name
    config = json.loads((fm2d_run / "config.json").read_text())
    assert config["kind"] == "flow" and config["task"] == "fm2d"
    assert config["train"]["iterations"] == 150 and config["data"]["n_train"] == 2000
    results = json.loads((fm2d_run / "results.json").read_text())
    assert results["kind"] == "flow" and results["status"] == "finished"
    assert [p[0] for p in results["history"]["loss"]] == [50, 100, 150]
    # the loss falls from its first logging interval to its last
    assert results["history"]["loss"][-1][1] < results["history"]["loss"][0][1]
    _finite(results["dopri5"], ("mmd", "sw", "loglik"))
    _finite(results["floor"], ("mmd", "sw", "loglik"))
    assert results["dopri5"]["nfe"] > 4 and results["dopri5"]["samples"] == 300
    # the weights reload into the same field
    run = load_flow_run(fm2d_run)
    x = torch.randn(7, 2)
    t = torch.full((7,), 0.3)
    from safetensors.torch import load_file
    weights = load_file(str(fm2d_run / "model.safetensors"))
    assert set(weights) == set(run.field.state_dict())
    out = run.field(t, x)
    assert out.shape == (7, 2) and bool(torch.isfinite(out).all())


def test_flow_flags_reach_the_training_settings(tmp_path):
    out = tmp_path / "cos"
    assert main(["train", "--task", "fm2d", "--n-train", "500", "--n-test", "50",
                 "--iterations", "4", "--batch-size", "32", "--path", "cosine",
                 "--coupling", "ot", "--ema", "0.9", "--lr", "1e-3", "--lr-min", "1e-4",
                 "--clip", "0", "--seed", "3", "--quiet", "--no-plots",
                 "--out", str(out)]) == 0
    train = json.loads((out / "config.json").read_text())["train"]
    assert (train["path"], train["coupling"], train["ema"], train["seed"]) == \
        ("cosine", "ot", 0.9, 3)
    assert train["grad_clip"] is None
    assert train["final_lr_fraction"] == pytest.approx(0.1)
    assert not list(out.glob("*.png"))


def test_fm_digits_run_folder(tmp_path):
    out = tmp_path / "digits"
    assert main(["train", "--task", "fm-digits", "--iterations", "3", "--ema", "0",
                 "--classifier-epochs", "1", "--quiet", "--out", str(out)]) == 0
    for name in ("model.safetensors", "classifier.safetensors"):
        assert (out / name).is_file()
    assert is_png(out / "samples.png")
    results = json.loads((out / "results.json").read_text())
    _finite(results["dopri5"], ("fd", "precision", "recall"))
    assert results["data"]["shape"] == [1, 8, 8] and results["dopri5"]["samples"] == 450
    # held-out digits are far closer to training digits than 3-iteration samples are
    assert results["floor"]["fd"] < results["dopri5"]["fd"]


def test_sample_fit_and_eval(fm2d_run, capsys):
    assert main(["sample", "fit", "--model", str(fm2d_run), "--sampler", "bespoke-midpoint",
                 "--nfe", "4", "--iterations", "40", "--pairs", "256", "--quiet"]) == 0
    assert main(["sample", "fit", "--model", str(fm2d_run), "--sampler", "hyperheun",
                 "--nfe", "4", "--iterations", "4", "--batch-size", "32",
                 "--hidden", "16,16", "--quiet"]) == 0
    bespoke_dir = fm2d_run / "samplers" / "bespoke-midpoint-nfe4"
    record = json.loads((bespoke_dir / "sampler.json").read_text())
    assert record["construction"] == {"class": "BespokeSolver",
                                      "args": {"base": "midpoint", "num_steps": 2}}
    assert record["fit"]["val_after"] < record["fit"]["val_before"]
    hyper = load_fitted(fm2d_run / "samplers" / "hyperheun-nfe4")
    assert hyper.record["construction"]["net_args"]["hidden"] == [16, 16]
    assert hyper.name == "hyperheun@4"

    capsys.readouterr()
    assert main(["sample", "eval", "--model", str(fm2d_run), "--nfe", "2,4",
                 "--samples", "200"]) == 0
    stdout = capsys.readouterr().out
    results = json.loads((fm2d_run / "sampling" / "results.json").read_text())
    rows = results["rows"]
    assert set(rows) == {"dopri5", "euler@2", "euler@4", "midpoint@2", "midpoint@4",
                         "rk4@4", "bespoke-midpoint@4", "hyperheun@4"}
    assert results["skipped"] == ["rk4@2"]
    for name, row in rows.items():
        _finite(row, ("mmd", "sw", "loglik", "seconds", "endpoint_error", "mmd_over_dopri5"))
        assert name in stdout
    assert rows["dopri5"]["endpoint_error"] == 0 and rows["dopri5"]["mmd_over_dopri5"] == 1
    assert rows["dopri5"]["nfe"] > 4
    assert (rows["hyperheun@4"]["nfe"], rows["hyperheun@4"]["nfe_g"]) == (4, 2)
    assert rows["bespoke-midpoint@4"]["nfe"] == 4
    # the fitted bespoke solver is closer to dopri5 than the Midpoint method it starts from
    assert rows["bespoke-midpoint@4"]["endpoint_error"] < rows["midpoint@4"]["endpoint_error"]
    for name in ("quality_vs_nfe.png", "samples.png"):
        assert is_png(fm2d_run / "sampling" / name)

    # --samplers picks fitted samplers; one not fitted is an error naming the flag
    assert main(["sample", "eval", "--model", str(fm2d_run), "--nfe", "4", "--samples", "50",
                 "--samplers", "hyperheun@4", "--no-plots"]) == 0
    rows = json.loads((fm2d_run / "sampling" / "results.json").read_text())["rows"]
    assert "bespoke-midpoint@4" not in rows and "hyperheun@4" in rows
    line = _fails(["sample", "eval", "--model", str(fm2d_run), "--samplers",
                   "bespoke-rk4@8"], capsys)
    assert "--samplers" in line and "bespoke-rk4@8" in line and "hyperheun@4" in line


@pytest.mark.parametrize("extra, flag", [
    (["--ema", "1.5"], "--ema"),
    (["--path", "straight"], "--path"),
    (["--coupling", "greedy"], "--coupling"),
    (["--sigma-min", "-0.1"], "--sigma-min"),
    (["--path", "cosine", "--sigma-min", "0.1"], "--sigma-min"),
    (["--lr", "1e-3", "--lr-min", "0.1"], "--lr-min"),
    (["--method", "rk4"], "--method"),
    (["--adjoint"], "--adjoint"),
    (["--classifier-epochs", "2"], "--classifier-epochs"),
])
def test_bad_train_flags(extra, flag, tmp_path, capsys):
    out = tmp_path / "run"
    line = _fails(["train", "--task", "fm2d", "--iterations", "2", "--quiet",
                   "--out", str(out), *extra], capsys)
    assert f"argument {flag}" in line, line
    assert not out.exists()


def test_out_that_is_a_file_or_holds_a_run(fm2d_run, tmp_path, capsys):
    before = (fm2d_run / "config.json").read_bytes()
    line = _fails(["train", "--task", "fm2d", "--iterations", "2", "--out", str(fm2d_run)],
                  capsys)
    assert "argument --out" in line and "already holds a run" in line
    assert (fm2d_run / "config.json").read_bytes() == before
    file = tmp_path / "file"
    file.write_text("x")
    line = _fails(["train", "--task", "fm2d", "--iterations", "2", "--out", str(file)],
                  capsys)
    assert "argument --out" in line and "not a folder" in line


def test_flow_flags_refused_by_other_tasks(tmp_path, capsys):
    line = _fails(["train", "--task", "xor", "--coupling", "ot", "--out",
                   str(tmp_path / "x")], capsys)
    assert "argument --coupling" in line and "xor" in line
    line = _fails(["train", "--task", "fm-digits", "--density", "rings", "--out",
                   str(tmp_path / "d")], capsys)
    assert "argument --density" in line
    line = _fails(["train", "--task", "fm-digits", "--n-train", "100", "--out",
                   str(tmp_path / "d")], capsys)
    assert "argument --n-train" in line


def test_bad_sample_inputs(fm2d_run, tmp_path, capsys):
    foreign = tmp_path / "xor-run"
    foreign.mkdir()
    (foreign / "config.json").write_text(json.dumps({"task": "xor"}))
    model = str(fm2d_run)
    cases = [
        (["sample", "fit", "--model", str(foreign), "--sampler", "hypereuler", "--nfe", "4"],
         "--model", "not a flow-matching run"),
        (["sample", "fit", "--model", str(tmp_path / "missing"), "--sampler", "hypereuler",
          "--nfe", "4"], "--model", "not a run folder"),
        (["sample", "eval", "--model", str(foreign)], "--model", "not a flow-matching run"),
        (["sample", "fit", "--model", model, "--sampler", "dpm", "--nfe", "4"],
         "--sampler", "invalid choice"),
        (["sample", "fit", "--model", model, "--sampler", "hyperheun", "--nfe", "3"],
         "--nfe", "multiple of 2"),
        (["sample", "fit", "--model", model, "--sampler", "bespoke-rk4", "--nfe", "6"],
         "--nfe", "multiple of 4"),
        (["sample", "fit", "--model", model, "--sampler", "bespoke-euler", "--nfe", "0"],
         "--nfe", ">= 1"),
        (["sample", "eval", "--model", model, "--nfe", "4,0"], "--nfe", ">= 1"),
        (["sample", "eval", "--model", model, "--nfe", "128"], "--nfe", "[1, 64]"),
    ]
    for argv, flag, text in cases:
        line = _fails(argv, capsys)
        assert f"argument {flag}" in line and text in line, (argv, line)
    assert not (foreign / "samplers").exists()
    assert not (fm2d_run / "samplers" / "hyperheun-nfe3").exists()
