"""The training loop, run folders, checkpoints, resume, callbacks, the CLI and DDP.

Every run here is tiny (a few hundred points, fixed-step solvers, tens of iterations)
so that the file takes well under a minute and a half on 2 CPU cores.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import signal
import socket
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file

from hyperode.cli import main
from hyperode.data import TASKS
from hyperode.experiments import (
    Callback,
    CheckpointError,
    ConfigError,
    TrainConfig,
    load_checkpoint,
    read_metrics,
    runs,
    train,
)
from hyperode.experiments.plots import is_png
from hyperode.experiments.train import strip_timing
from hyperode.nn import SolverConfig

REPO = Path(__file__).resolve().parents[1]


def tiny(out: Path, **changes) -> TrainConfig:
    """XOR, 256 points, a 2-D MLP Neural ODE with Euler in 2 steps: ~5 ms per iteration."""
    base = dict(task="xor", n_train=256, n_test=128, method="euler", num_steps=2,
                iterations=30, batch_size=32, lr=1e-2, eval_every=10, checkpoint_every=10,
                quiet=True, plots=False, device="cpu", out=str(out))
    base.update(changes)
    return TrainConfig(**base)


# --------------------------------------------------------------------------- training


def test_training_decreases_loss(tmp_path):
    result = train(tiny(tmp_path / "run", iterations=120, eval_every=120))
    records = read_metrics(tmp_path / "run" / runs.METRICS_FILE)
    first = sum(r["loss"] for r in records[:10]) / 10
    last = sum(r["loss"] for r in records[-10:]) / 10
    assert last < 0.5 * first, (first, last)
    assert result.results["final"]["test_accuracy"] > 0.9


def test_sgd_optimizer_takes_plain_gradient_steps(tmp_path):
    """``optimizer="sgd"`` (Ott et al.'s fixed-step MNIST setting) is plain SGD: at a
    constant learning rate each iteration moves the weights by exactly -lr * grad."""
    from hyperode.experiments.train import _make_optimizer

    cfg = tiny(tmp_path, optimizer="sgd", lr=0.05, lr_min=0.05, weight_decay=0.0)
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = _make_optimizer(cfg, [w])
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["momentum"] == 0
    for _ in range(2):
        opt.zero_grad()
        (w ** 2).sum().backward()
        before, grad = w.detach().clone(), w.grad.clone()
        opt.step()
        assert torch.allclose(w.detach(), before - 0.05 * grad)
    result = train(tiny(tmp_path / "run", optimizer="sgd", lr=0.1, iterations=40))
    losses = [r["loss"] for r in read_metrics(result.run_dir / "metrics.jsonl")
              if "loss" in r]
    assert np.mean(losses[-10:]) < np.mean(losses[:10])


def test_run_folder_contents(tmp_path):
    out = tmp_path / "sph"
    cfg = TrainConfig(task="spheres", model="mlp", n_train=256, n_test=200, method="rk4",
                      num_steps=2, iterations=12, batch_size=64, eval_every=5,
                      quiet=True, device="cpu", out=str(out))
    result = train(cfg)
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "metrics.jsonl", "results.json", "checkpoint.pt",
            "model.safetensors", "training_curves.png", "decision_regions.png"} <= names
    assert not [n for n in names if n.endswith(".tmp")]

    config = json.loads((out / "config.json").read_text())
    assert config["task"] == "spheres" and config["num_steps"] == 2 and config["seed"] == 0
    assert TrainConfig.from_dict(config) == result.state.config

    records = read_metrics(out / "metrics.jsonl")
    assert [r["iteration"] for r in records] == list(range(1, 13))
    for r in records:
        assert {"loss", "accuracy", "nfe_forward", "nfe_backward", "lr", "wall_time",
                "solver", "grad_norm"} <= set(r)
        assert r["nfe_forward"] == 8 and r["nfe_backward"] == 0  # rk4: 4 stages x 2 steps
        assert r["solver"] == "rk4, 2 steps"
    evaluated = [r["iteration"] for r in records if "test_accuracy" in r]
    assert evaluated == [5, 10, 12]  # every eval_every and at the end
    assert records[-1]["test_nfe"] == 8
    assert records[0]["lr"] > records[-1]["lr"]  # cosine annealing

    results = json.loads((out / "results.json").read_text())
    for key in ("task", "final", "best", "nfe", "solver", "wall_time_s", "seed", "device",
                "versions", "config", "plots", "status", "iterations"):
        assert key in results, key
    assert results["status"] == "completed" and results["iterations"] == 12
    assert results["versions"]["torch"] == torch.__version__
    assert results["solver"]["final"]["describe"] == "rk4, 2 steps"
    assert results["final"]["test_accuracy"] == records[-1]["test_accuracy"]
    assert results["final"] == json.loads(json.dumps(result.results["final"]))
    for png in ("training_curves.png", "decision_regions.png"):
        assert is_png(out / png), png

    weights = load_file(str(out / "model.safetensors"))
    state = result.model.state_dict()
    assert weights.keys() == state.keys()
    assert all(torch.equal(weights[k], state[k]) for k in state)
    payload = torch.load(out / "checkpoint.pt", weights_only=True)
    assert payload["iteration"] == 12


def test_density_run_reports_nll_and_plots_density(tmp_path):
    out = tmp_path / "cnf"
    cfg = TrainConfig(task="cnf2d", density="8gaussians", n_train=256, n_test=128,
                      method="rk4", num_steps=2, iterations=6, batch_size=64, eval_every=3,
                      quiet=True, device="cpu", out=str(out))
    result = train(cfg)
    final = result.results["final"]
    assert set(final) >= {"test_nll", "test_bits_per_dim", "test_nfe"}
    assert final["test_bits_per_dim"] == pytest.approx(final["test_nll"] / (2 * 0.6931471805599453))
    records = read_metrics(out / "metrics.jsonl")
    assert all("bits_per_dim" in r and "accuracy" not in r for r in records)
    assert is_png(out / "density.png") and is_png(out / "training_curves.png")


def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write_image_files(task: str, folder: Path) -> None:
    """A few random images in the official file formats (MNIST IDX, CIFAR-10 pickles)."""
    g = np.random.default_rng(0)
    folder.mkdir()
    if task == "mnist":
        for prefix, n in (("train", 16), ("t10k", 8)):
            (folder / f"{prefix}-images-idx3-ubyte").write_bytes(
                _idx(g.integers(0, 256, (n, 28, 28))))
            (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(_idx(g.integers(0, 10, n)))
        return
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        blob = {b"data": g.integers(0, 256, (4, 3072), dtype=np.uint8),
                b"labels": [int(v) for v in g.integers(0, 10, 4)]}
        (folder / name).write_bytes(pickle.dumps(blob, protocol=2))


@pytest.mark.parametrize("task, model", [("mnist", "hypersolver"), ("mnist", "ott"),
                                         ("cifar10", "hypersolver"), ("cifar10", "ott")])
def test_paper_scale_tasks_run_on_their_file_formats(tmp_path, task, model):
    _write_image_files(task, tmp_path / "data")
    cfg = TrainConfig(task=task, model=model, data_dir=str(tmp_path / "data"), method="euler",
                      num_steps=1, iterations=2, batch_size=8, eval_batch_size=8, quiet=True,
                      plots=False, device="cpu", out=str(tmp_path / "run"))
    result = train(cfg)
    assert result.results["iterations"] == 2
    assert result.results["final"]["test_nfe"] == 1
    assert 0.0 <= result.results["final"]["test_accuracy"] <= 1.0


# --------------------------------------------------------------------------- checkpoints


class Interrupt(Callback):
    """Raises KeyboardInterrupt at the end of an iteration, like Ctrl-C at a bad moment."""

    def __init__(self, at: int):
        self.at = at

    def on_iteration_end(self, state):
        if state.iteration == self.at:
            raise KeyboardInterrupt


class SwapOnce(Callback):
    """Switches to Euler with 3 steps at ``at``; remembers that it did (checkpointed)."""

    def __init__(self, at: int):
        self.at, self.swapped = at, False

    def on_iteration_end(self, state):
        if state.iteration >= self.at and not self.swapped:
            state.set_solver(SolverConfig.fixed("euler", num_steps=3))
            self.swapped = True

    def state_dict(self):
        return {"swapped": self.swapped}

    def load_state_dict(self, state):
        self.swapped = state["swapped"]


class GradientNoise(Callback):
    """Draws from torch's, numpy's and Python's global RNGs (like dropout would)."""

    def on_after_backward(self, state):
        for p in state.model.parameters():
            scale = 1e-2 * (1 + np.random.rand() + random.random())  # noqa: NPY002
            p.grad.add_(torch.randn_like(p.grad), alpha=scale)


def test_resume_equals_uninterrupted_bit_for_bit(tmp_path):
    ref = train(tiny(tmp_path / "ref"), callbacks=[SwapOnce(7), GradientNoise()])
    out = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        train(tiny(out), callbacks=[SwapOnce(7), GradientNoise(), Interrupt(15)])
    assert load_checkpoint(out / "checkpoint.pt")["iteration"] == 10
    assert len(read_metrics(out / "metrics.jsonl")) == 14  # 15 never got logged

    resumed = train(tiny(out, resume=True), callbacks=[SwapOnce(7), GradientNoise()])
    assert resumed.results["resumed_from"] == 10
    ref_state, res_state = ref.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(ref_state[k], res_state[k]) for k in ref_state)
    ref_opt = ref.state.optimizer.state_dict()["state"]
    res_opt = resumed.state.optimizer.state_dict()["state"]
    assert all(torch.equal(ref_opt[i][k], res_opt[i][k]) for i in ref_opt for k in ref_opt[i])
    ref_records = [strip_timing(r) for r in read_metrics(tmp_path / "ref" / "metrics.jsonl")]
    res_records = [strip_timing(r) for r in read_metrics(out / "metrics.jsonl")]
    assert res_records == ref_records  # losses, accuracies, NFE, lr, solver: identical
    assert ref_records[7]["solver"] == "euler, 3 steps"  # iteration 8, after the swap
    assert resumed.results["final"] == ref.results["final"]


class SendSigint(Callback):
    def on_iteration_end(self, state):
        if state.iteration == 5:
            os.kill(os.getpid(), signal.SIGINT)


def test_ctrl_c_finishes_the_iteration_checkpoints_and_resumes(tmp_path):
    out = tmp_path / "run"
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN when the suite runs in the background
    stopped = train(tiny(out, iterations=20), callbacks=[SendSigint()], handle_signals=True)
    assert stopped.results["status"] == "interrupted" and stopped.results["iterations"] == 5
    assert load_checkpoint(out / "checkpoint.pt")["iteration"] == 5
    assert signal.getsignal(signal.SIGINT) is before  # the caller's handler restored
    done = train(tiny(out, iterations=20, resume=True))
    assert done.results["status"] == "completed" and done.results["resumed_from"] == 5
    assert [r["iteration"] for r in read_metrics(out / "metrics.jsonl")] == list(range(1, 21))


def test_resume_refuses_a_different_configuration(tmp_path):
    train(tiny(tmp_path / "run", iterations=10))
    with pytest.raises(ConfigError, match="lr"):
        train(tiny(tmp_path / "run", iterations=10, lr=0.5, resume=True))
    with pytest.raises(ConfigError, match="out"):  # an existing run without resume
        train(tiny(tmp_path / "run", iterations=10))


def test_atomic_write_keeps_the_old_file_when_interrupted(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    runs.save_checkpoint(path, {"iteration": 1, "w": torch.ones(3)})

    def crash(src, dst):
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(runs.os, "replace", crash)
    with pytest.raises(OSError, match="simulated"):
        runs.save_checkpoint(path, {"iteration": 2, "w": torch.zeros(3)})
    monkeypatch.undo()
    payload = load_checkpoint(path)
    assert payload["iteration"] == 1 and torch.equal(payload["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temp file left


class _Evil:
    """Unpickling this would create the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_malicious_checkpoint_is_refused_without_running_code(tmp_path, writer):
    marker = tmp_path / "pwned"
    run = tmp_path / "run"
    run.mkdir()
    ckpt = run / "checkpoint.pt"
    payload = {"format": "hyperode.train/1", "iteration": 1, "model": _Evil(marker)}
    if writer == "torch.save":
        torch.save(payload, ckpt)
    else:
        with open(ckpt, "wb") as f:
            pickle.dump(payload, f, protocol=2)
    with pytest.raises(CheckpointError, match="refusing"):
        load_checkpoint(ckpt)
    with pytest.raises(CheckpointError):
        train(tiny(run, resume=True))
    assert not marker.exists()
    # The control: the file really is malicious, an unrestricted load runs its code.
    if writer == "torch.save":
        torch.load(ckpt, weights_only=False)
    else:
        with open(ckpt, "rb") as f:
            pickle.load(f)  # deliberately unrestricted: proves the file is malicious
    assert marker.exists()


# --------------------------------------------------------------------------- callbacks


class Recorder(Callback):
    def __init__(self):
        self.calls: dict[str, int] = {}
        self.probe: dict | None = None

    def _hit(self, name):
        self.calls[name] = self.calls.get(name, 0) + 1

    def on_train_start(self, state):
        self._hit("start")
        assert state.iteration == 0 and state.model is not None

    def on_after_backward(self, state):
        self._hit("after_backward")
        assert all(p.grad is not None for p in state.model.parameters())

    def on_iteration_end(self, state):
        self._hit("iteration_end")
        assert state.metrics["iteration"] == state.iteration
        assert state.batch is not None and len(state.batch[0]) == 32
        if state.iteration == 4:
            before = state.solver
            self.probe = state.evaluate(state.batch, SolverConfig.fixed("rk4", num_steps=5))
            assert state.solver == before  # evaluating with another solver changes nothing
            state.set_solver(SolverConfig.fixed("midpoint", num_steps=3))

    def on_evaluate(self, state, metrics):
        self._hit("evaluate")
        assert {"loss", "accuracy", "nfe"} <= set(metrics)

    def on_train_end(self, state):
        self._hit("end")


def test_callbacks_are_called_and_can_swap_the_solver(tmp_path):
    rec = Recorder()
    result = train(tiny(tmp_path / "run", iterations=10, eval_every=5), callbacks=[rec])
    assert rec.calls == {"start": 1, "after_backward": 10, "iteration_end": 10,
                         "evaluate": 2, "end": 1}
    assert rec.probe["nfe"] == 20  # rk4 x 5 steps on the probe batch
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["solver"] for r in records[:4]] == ["euler, 2 steps"] * 4
    assert [r["solver"] for r in records[4:]] == ["midpoint, 3 steps"] * 6
    assert [r["nfe_forward"] for r in records] == [2] * 4 + [6] * 6
    assert records[-1]["test_nfe"] == 6
    assert result.results["solver"]["final"]["describe"] == "midpoint, 3 steps"


def test_adjoint_training_logs_backward_nfe(tmp_path):
    train(tiny(tmp_path / "run", iterations=3, method="dopri5", num_steps=None, rtol=1e-3,
               atol=1e-3, adjoint=True, seminorm=True))
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert all(r["nfe_backward"] > 0 and r["nfe_forward"] > 0 for r in records)
    assert "seminorm" in records[0]["solver"]


# --------------------------------------------------------------------------- CLI


def test_cli_help_lists_the_tasks(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for task in TASKS:
        assert f"  {task} " in text
    assert "examples:" in text and "--resume" in text


@pytest.mark.parametrize("args, flag", [
    (["--task", "spheres", "--step-size", "-0.1"], "--step-size"),
    (["--task", "spheres", "--method", "euler", "--step-size", "0"], "--step-size"),
    (["--task", "cnf2d", "--density", "nope"], "--density"),
    (["--task", "mnist"], "--data-dir"),
    (["--task", "spheres", "--method", "euler"], "--method"),
    (["--task", "spheres", "--method", "rk4", "--num-steps", "4", "--rtol", "1e-3"], "--rtol"),
    (["--task", "spheres", "--step-size", "0.1", "--num-steps", "4"], "--num-steps"),
    (["--task", "spheres", "--seminorm"], "--seminorm"),
    (["--task", "spheres", "--batch-size", "0"], "--batch-size"),
    (["--task", "spheres", "--optimizer", "rmsprop"], "--optimizer"),
    (["--task", "spheres", "--lr", "nan"], "--lr"),
    (["--task", "spheres", "--method", "dopri6"], "--method"),
    (["--task", "nope"], "--task"),
])
def test_cli_bad_arguments_exit_2_naming_the_argument(capsys, args, flag):
    with pytest.raises(SystemExit) as e:
        main(["train", *args])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("hyperode train: error: argument ") and flag in err[-1], err
    assert len(err) <= 2  # the short usage line and the one-line error


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cli_cuda_without_cuda(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--task", "xor", "--device", "cuda"])
    assert e.value.code == 2 and "argument --device" in capsys.readouterr().err


def test_cli_trains_and_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["train", "--task", "xor", "--n-train", "128", "--n-test", "64", "--method",
            "euler", "--num-steps", "2", "--iterations", "4", "--batch-size", "32",
            "--quiet", "--no-plots", "--device", "cpu", "--out", str(out)]
    assert main(argv) == 0
    assert json.loads((out / "results.json").read_text())["iterations"] == 4
    assert capsys.readouterr().out == ""  # --quiet prints nothing
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and "argument --out" in capsys.readouterr().err
    assert main([*argv, "--resume"]) == 0  # already complete: nothing to do, still fine


# --------------------------------------------------------------------------- DDP


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                    reason="torch.distributed with the gloo backend is not available")
def test_ddp_two_processes_match_one(tmp_path):
    """2 ranks x 16 samples per batch = the single-process batch of 32: same weights."""
    common = ["--task", "xor", "--n-train", "256", "--n-test", "128", "--method", "euler",
              "--num-steps", "2", "--iterations", "20", "--batch-size", "32",
              "--eval-every", "10", "--checkpoint-every", "10", "--quiet", "--no-plots",
              "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           "-m", "hyperode", "train", *common, "--out", str(tmp_path / "ddp")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert main(["train", *common, "--out", str(tmp_path / "one")]) == 0

    ddp = json.loads((tmp_path / "ddp" / "results.json").read_text())
    assert ddp["world_size"] == 2 and ddp["iterations"] == 20
    records = read_metrics(tmp_path / "ddp" / "metrics.jsonl")
    assert [r["iteration"] for r in records] == list(range(1, 21))  # rank 0 alone logs
    w_ddp = load_file(str(tmp_path / "ddp" / "model.safetensors"))
    w_one = load_file(str(tmp_path / "one" / "model.safetensors"))
    for k in w_one:
        torch.testing.assert_close(w_ddp[k], w_one[k], rtol=1e-4, atol=1e-5)
    one = read_metrics(tmp_path / "one" / "metrics.jsonl")
    for a, b in zip(records, one):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-6)
