"""What the command line guarantees when its input is bad or a run goes wrong.

- A damaged run folder (truncated, empty or foreign checkpoint, missing keys, corrupt
  JSON, torn safetensors, another format version) given to ``train --resume``,
  ``hyper fit``, ``hyper eval`` or ``odeness`` ends with exit status 2 and one line on
  stderr naming the file, no traceback, and the folder byte-for-byte untouched.
- Bad flags (each command) give status 2 and one line naming the flag.
- ``--resume`` with nothing to resume is an error.
- Training guards: a NaN loss, a non-finite gradient, an NFE explosion (``--lr 1e8``
  on xor: quick, bounded memory) and the step cap (``--max-steps-per-solve``) stop the
  run with status 1 and one line naming the iteration and what to try, after writing a
  resumable checkpoint of the state the failing iteration started from.
- Stale temporary files of interrupted writes are removed (and reported) on the next
  start, and only then: a damaged folder keeps them.

Most cases call ``hyperode.cli.main`` in-process (fast); a few run ``python -m
hyperode`` to check the whole process: status, stderr and, for ``--lr 1e8``, memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from hyperode.cli import main
from hyperode.experiments import (
    Callback,
    TrainConfig,
    load_checkpoint,
    read_metrics,
    train,
)
from hyperode.experiments.train import TrainingDivergedError, strip_timing

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--n-train", "128", "--n-test", "64", "--method", "euler", "--num-steps", "2",
         "--iterations", "4", "--batch-size", "32", "--quiet", "--no-plots", "--device", "cpu"]


def _train_args(out: Path, *extra: str) -> list[str]:
    return ["train", "--task", "xor", *SMALL, "--out", str(out), *extra]


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (names and contents)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _fails(argv: list[str], capsys, code: int = 2) -> str:
    """Run the CLI in-process; it must exit with ``code`` and print exactly one line on
    stderr (``hyperode <command>: error: ...``). Returns that line."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert e.value.code == code, captured.err
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("hyperode ") and ": error: " in lines[0], lines[0]
    assert "Traceback" not in captured.err
    return lines[0]


def _run(argv: list[str], cwd: Path | None = None, timeout: float = 120
         ) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "hyperode", *argv], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=timeout)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    """A finished tiny xor run with a fitted hypersolver in ``hyp/``."""
    out = tmp_path_factory.mktemp("reliability") / "good"
    assert main(_train_args(out)) == 0
    assert main(["hyper", "fit", "--model", str(out), "--steps", "2", "--iterations", "2",
                 "--batch-size", "16", "--quiet", "--out", str(out / "hyp")]) == 0
    return out


@pytest.fixture
def run_copy(good, tmp_path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(good, dst)
    return dst


def _truncate(rel: str, size: int | None = None):
    def damage(d: Path) -> None:
        data = (d / rel).read_bytes()
        (d / rel).write_bytes(data[:len(data) // 2 if size is None else size])
    return damage


def _write(rel: str, text: str):
    def damage(d: Path) -> None:
        (d / rel).write_text(text)
    return damage


def _edit_checkpoint(change):
    def damage(d: Path) -> None:
        payload = torch.load(d / "checkpoint.pt", weights_only=True)
        change(payload)
        torch.save(payload, d / "checkpoint.pt")
    return damage


def _drop(key: str):
    return _edit_checkpoint(lambda p: p.pop(key))


def _set(key: str, value):
    return _edit_checkpoint(lambda p: p.__setitem__(key, value))


CHECKPOINT_DAMAGE = {
    "truncated": (_truncate("checkpoint.pt"), "truncated"),
    "truncated-header": (_truncate("checkpoint.pt", 100), "truncated"),
    "empty": (_truncate("checkpoint.pt", 0), "empty"),
    "garbage": (_write("checkpoint.pt", "not a checkpoint"), "checkpoint.pt"),
    "missing-optimizer": (_drop("optimizer"), "lacks the key(s) optimizer"),
    "missing-solvers": (_drop("solvers"), "lacks the key(s) solvers"),
    "format-version": (_set("format", "hyperode.train/99"), "hyperode.train/99"),
    "not-a-dict": (lambda d: torch.save([1, 2, 3], d / "checkpoint.pt"), "expected a dict"),
    "config-not-json": (_set("config", "{oops"), "'config' is not valid JSON"),
    "solvers-wrong-type": (_set("solvers", 7), "'solvers' holds a int"),
}

RUN_COMMANDS = {
    "train": lambda d: _train_args(d, "--resume"),
    "fit": lambda d: ["hyper", "fit", "--model", str(d), "--steps", "2", "--iterations", "2",
                      "--quiet", "--out", str(d / "hyp2")],
    "odeness": lambda d: ["odeness", "--model", str(d)],
    "eval": lambda d: ["hyper", "eval", "--model", str(d), "--hyper", str(d / "hyp"),
                       "--steps", "2"],
}


# --------------------------------------------------------------------------- damaged folders


@pytest.mark.parametrize("command", list(RUN_COMMANDS))
@pytest.mark.parametrize("case", list(CHECKPOINT_DAMAGE))
def test_damaged_checkpoint_is_named_and_left_alone(command, case, run_copy, capsys):
    damage, expected = CHECKPOINT_DAMAGE[case]
    damage(run_copy)
    (run_copy / ".checkpoint.pt.stale1.tmp").write_bytes(b"half a checkpoint")
    before = _snapshot(run_copy)
    line = _fails(RUN_COMMANDS[command](run_copy), capsys)
    assert "checkpoint.pt" in line and expected in line, line
    assert _snapshot(run_copy) == before  # nothing written, nothing deleted (not even .tmp)


@pytest.mark.parametrize("command, rel, damage, expected", [
    *[(c, "config.json", _write("config.json", '{"task": '), "config.json")
      for c in ("train", "fit", "odeness", "eval")],
    *[(c, "config.json", _write("config.json", "[1, 2]"), "not an object")
      for c in ("train", "fit", "odeness", "eval")],
    ("train", "config.json", lambda d: (d / "config.json").write_text(json.dumps(
        {**json.loads((d / "config.json").read_text()), "lr": 0.5})), "disagrees"),
    ("train", "config.json", lambda d: (d / "config.json").unlink(), "missing"),
    *[(c, "model.safetensors", _truncate("model.safetensors"), "model.safetensors")
      for c in ("fit", "odeness", "eval")],
    ("train", "metrics.jsonl", _write("metrics.jsonl", '{"iteration": 1}\ngarbage\n'),
     "line 2"),
    ("train", "metrics.jsonl", _write("metrics.jsonl", '{"iteration": 1}\n'),
     "should hold iterations 1 to 4"),
    ("train", "metrics.jsonl", lambda d: (d / "metrics.jsonl").unlink(), "missing"),
    ("eval", "hyp/config.json", _write("hyp/config.json", "{oops"), "not valid JSON"),
    ("eval", "hyp/config.json", _write("hyp/config.json", '{"format": "hyperode.hyper/1"}'),
     "lacks the key(s) base, net, steps"),
    ("eval", "hyp/config.json", _write("hyp/config.json", '{"format": "hyperode.hyper/0"}'),
     "not a hypersolver configuration"),
    ("eval", "hyp/hyper.safetensors", _truncate("hyp/hyper.safetensors"), "SafetensorError"),
    ("eval", "hyp/hyper.safetensors", _truncate("hyp/hyper.safetensors", 0),
     "SafetensorError"),
])
def test_damaged_files_are_named_and_left_alone(command, rel, damage, expected, run_copy,
                                                capsys):
    damage(run_copy)
    before = _snapshot(run_copy)
    line = _fails(RUN_COMMANDS[command](run_copy), capsys)
    assert Path(rel).name in line and expected in line, line
    if command == "fit" or command == "odeness" or command == "eval":
        flag = "--hyper" if rel.startswith("hyp/") else "--model"
        assert f"argument {flag}" in line, line
    assert _snapshot(run_copy) == before


def test_damaged_folder_reported_by_the_process(run_copy):
    """The same guarantee end to end: ``python -m hyperode``, status, one stderr line."""
    _truncate("checkpoint.pt")(run_copy)
    before = _snapshot(run_copy)
    proc = _run(_train_args(run_copy, "--resume"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "checkpoint.pt" in proc.stderr and "truncated" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert _snapshot(run_copy) == before


def test_truncated_mnist_file_names_the_file_and_the_flag(tmp_path, capsys):
    data = tmp_path / "mnist"
    data.mkdir()
    g = np.random.default_rng(0)
    for prefix, n in (("train", 16), ("t10k", 8)):
        for kind, shape in (("images-idx3", (n, 28, 28)), ("labels-idx1", (n,))):
            array = g.integers(0, 10 if kind.startswith("labels") else 256, shape)
            header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I",
                                                                     *array.shape)
            (data / f"{prefix}-{kind}-ubyte").write_bytes(header + array.astype(np.uint8)
                                                          .tobytes())
    _truncate("train-images-idx3-ubyte", 5000)(data)
    before = _snapshot(data)
    line = _fails(["train", "--task", "mnist", "--data-dir", str(data), "--method", "euler",
                   "--num-steps", "1", "--iterations", "1", "--batch-size", "8", "--quiet",
                   "--no-plots", "--device", "cpu", "--out", str(tmp_path / "run")], capsys)
    assert "argument --data-dir" in line and "train-images-idx3-ubyte" in line
    assert "truncated" in line
    assert _snapshot(data) == before
    line = _fails(["train", "--task", "mnist", "--data-dir", str(tmp_path / "none"),
                   "--iterations", "1", "--quiet", "--out", str(tmp_path / "r2")], capsys)
    assert "argument --data-dir" in line and "not found" in line


# --------------------------------------------------------------------------- bad flags


@pytest.mark.parametrize("argv, flag", [
    (["train", "--task", "spheres", "--dim", "1"], "--dim"),
    (["train", "--task", "spheres", "--dim", "0"], "--dim"),
    (["train", "--task", "xor", "--max-steps-per-solve", "0"], "--max-steps-per-solve"),
    (["train", "--task", "xor", "--max-steps-per-solve", "many"], "--max-steps-per-solve"),
    (["train", "--task", "xor", "--threads", "0"], "--threads"),
    (["train", "--task", "xor", "--eval-every", "0"], "--eval-every"),
    (["train", "--task", "xor", "--lr", "inf"], "--lr"),
    (["train", "--task", "xor", "--model", "nope"], "--model"),
    (["train", "--task", "digits", "--n-train", "100000"], "--n-train"),
    (["train"], "--task"),
    (["adapt", "--task", "xor", "--adapt", "step", "--max-steps-per-solve", "-3"],
     "--max-steps-per-solve"),
    (["adapt", "--task", "spheres", "--dim", "1", "--adapt", "step"], "--dim"),
    (["grid", "--task", "spheres", "--solver", "euler", "--steps", "1", "--dim", "1"],
     "--dim"),
    (["hyper", "fit", "--model", "RUN", "--lr", "-1"], "--lr"),
    (["hyper", "fit", "--model", "RUN", "--tol", "nan"], "--tol"),
    (["hyper", "eval", "--model", "RUN", "--hyper", "RUN/hyp", "--tol", "0"], "--tol"),
    (["hyper", "eval", "--model", "RUN", "--hyper", "RUN/nope"], "--hyper"),
    (["hyper", "pareto", "--results", "RUN/results.json"], "--results"),
    (["odeness", "--model", "RUN/nope"], "--model"),
    (["odeness", "--model", "RUN", "--batch-size", "0"], "--batch-size"),
    (["demo", "--solvers", "--steps", "0"], "--steps"),
    (["solvers-demo", "--rtol", "-1"], "--rtol"),
])
def test_bad_flags_give_one_line_naming_the_flag(argv, flag, run_copy, tmp_path, capsys,
                                                 monkeypatch):
    monkeypatch.chdir(tmp_path)  # default run folders (runs/...) land here
    argv = [a.replace("RUN", str(run_copy)) for a in argv]
    before = _snapshot(run_copy)
    line = _fails(argv, capsys)
    assert f"argument {flag}" in line or f"required: {flag}" in line, line
    assert _snapshot(run_copy) == before
    assert not (tmp_path / "runs").exists()  # refused before anything was created


@pytest.mark.parametrize("argv", [
    ["train", "--task", "xor", *SMALL, "--out", "FILE"],
    ["grid", "--task", "xor", "--solver", "euler", "--steps", "1", "--iterations", "1",
     "--out", "FILE"],
    ["odeness", "--model", "RUN", "--out", "FILE"],
    ["hyper", "fit", "--model", "RUN", "--steps", "2", "--iterations", "1", "--quiet",
     "--out", "FILE"],
    ["hyper", "eval", "--model", "RUN", "--hyper", "RUN/hyp", "--steps", "2", "--out", "FILE"],
    ["demo", "--out", "FILE", "--train-iterations", "1", "--fit-iterations", "1", "--quiet"],
])
def test_out_that_is_a_file(argv, run_copy, tmp_path, capsys):
    target = tmp_path / "a-file"
    target.write_text("keep me")
    argv = [a.replace("FILE", str(target)).replace("RUN", str(run_copy)) for a in argv]
    line = _fails(argv, capsys)
    assert "argument --out" in line and "a-file" in line, line
    assert target.read_text() == "keep me"


def test_resume_with_nothing_to_resume_is_an_error(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = _fails(_train_args(tmp_path / "missing", "--resume"), capsys)
    assert "argument --resume" in line and "nothing to resume" in line
    assert not (tmp_path / "missing").exists()

    started = tmp_path / "started"  # a run killed before its first checkpoint
    started.mkdir()
    (started / "config.json").write_text("{}")
    before = _snapshot(started)
    line = _fails(_train_args(started, "--resume"), capsys)
    assert "holds no checkpoint.pt" in line
    assert _snapshot(started) == before

    line = _fails(["train", "--task", "xor", *SMALL, "--resume"], capsys)  # no --out
    assert "argument --resume" in line and "runs/xor-*" in line
    assert not (tmp_path / "runs").exists()

    line = _fails(["adapt", "--task", "xor", "--method", "euler", "--adapt", "step",
                   "--iterations", "2", "--quiet", "--out", str(tmp_path / "a"), "--resume"],
                  capsys)
    assert "argument --resume" in line


# --------------------------------------------------------------------------- stale files


def test_stale_temporary_files_are_removed_and_reported(run_copy, capsys):
    stale = [".checkpoint.pt.k2j3.tmp", ".metrics.jsonl.a1.tmp", ".results.json.b2.tmp",
             ".model.safetensors.c3.tmp", ".config.json.d4.tmp"]
    keep = [".notes.tmp", "checkpoint.pt.tmp", ".checkpoint.pt.bak"]
    for name in stale + keep:
        (run_copy / name).write_bytes(b"partial")
    capsys.readouterr()
    assert main(_train_args(run_copy, "--resume")) == 0
    err = capsys.readouterr().err
    assert f"removed {len(stale)} stale temporary file(s) left in {run_copy}" in err
    assert all(name in err for name in stale)
    assert not any((run_copy / name).exists() for name in stale)
    assert all((run_copy / name).read_bytes() == b"partial" for name in keep)
    capsys.readouterr()
    assert main(_train_args(run_copy, "--resume")) == 0  # nothing left: nothing said
    assert "stale" not in capsys.readouterr().err


def test_torn_last_metrics_line_is_dropped_on_resume(tmp_path):
    cfg = dict(task="xor", n_train=128, n_test=64, method="euler", num_steps=2,
               iterations=10, batch_size=32, eval_every=5, checkpoint_every=5, quiet=True,
               plots=False, device="cpu")
    train(TrainConfig(**cfg, out=str(tmp_path / "ref")))
    ref_lines = (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()
    out = tmp_path / "run"
    train(TrainConfig(**cfg, out=str(out)), callbacks=[_StopAt(5)])
    # what a SIGKILL while writing line 7 leaves: checkpoint 5, line 6, half of line 7
    with open(out / "metrics.jsonl", "a") as f:
        f.write(ref_lines[5] + "\n" + ref_lines[6][:25])
    result = train(TrainConfig(**cfg, out=str(out), resume=True))
    assert result.results["resumed_from"] == 5
    assert [strip_timing(r) for r in read_metrics(out / "metrics.jsonl")] == \
        [strip_timing(r) for r in read_metrics(tmp_path / "ref" / "metrics.jsonl")]


class _StopAt(Callback):
    def __init__(self, at: int):
        self.at = at

    def on_iteration_end(self, state):
        if state.iteration == self.at:
            state.stop_training = True


# --------------------------------------------------------------------------- guards


def test_nan_loss_stops_with_a_resumable_checkpoint(tmp_path, capsys):
    out = tmp_path / "nan"
    argv = ["train", "--task", "xor", *SMALL, "--iterations", "20", "--lr", "1e30", "--clip",
            "0", "--out", str(out)]
    line = _fails(argv, capsys, code=1)
    assert "iteration 2" in line and "loss became nan" in line and "--lr" in line, line
    assert "checkpoint.pt" in line and "--resume" in line
    payload = load_checkpoint(out / "checkpoint.pt")
    assert payload["iteration"] == 1  # the state iteration 2 started from
    assert all(torch.isfinite(v).all() for v in payload["model"].values())
    assert len(read_metrics(out / "metrics.jsonl")) == 1
    again = _fails([*argv, "--resume"], capsys, code=1)  # resumable: the same stop
    assert again == line
    assert load_checkpoint(out / "checkpoint.pt")["iteration"] == 1


class _Counter(Callback):
    """Counts backward passes (checkpointed) and draws from every RNG; with ``poison_at``
    it makes a gradient NaN at that iteration (1-based), after counting it."""

    def __init__(self, poison_at: int | None = None):
        self.count, self.poison_at = 0, poison_at

    def on_after_backward(self, state):
        self.count += 1
        for p in state.model.parameters():
            p.grad.add_(torch.randn_like(p.grad), alpha=1e-3 * (1 + np.random.rand()))  # noqa: NPY002
        if self.poison_at is not None and state.iteration + 1 == self.poison_at:
            next(iter(state.model.parameters())).grad.fill_(float("nan"))
            state.set_solver(state.solver.replace(num_steps=3))  # undone by the failure

    def state_dict(self):
        return {"count": self.count}

    def load_state_dict(self, state):
        self.count = state["count"]


def test_non_finite_gradient_checkpoints_the_exact_state_before(tmp_path):
    cfg = dict(task="xor", n_train=128, n_test=64, method="euler", num_steps=2,
               iterations=12, batch_size=32, eval_every=4, checkpoint_every=4, quiet=True,
               plots=False, device="cpu")
    ref = train(TrainConfig(**cfg, out=str(tmp_path / "ref")), callbacks=[_Counter()])
    out = tmp_path / "run"
    with pytest.raises(TrainingDivergedError, match="iteration 7: the gradient norm became"):
        train(TrainConfig(**cfg, out=str(out)), callbacks=[_Counter(poison_at=7)])
    payload = load_checkpoint(out / "checkpoint.pt")
    assert payload["iteration"] == 6
    assert json.loads(payload["callbacks"]) == {"0": {"count": 6}}  # as iteration 7 began
    assert "2 steps" in payload["solvers"]
    done = train(TrainConfig(**cfg, out=str(out), resume=True), callbacks=[_Counter()])
    assert done.results["resumed_from"] == 6
    a, b = ref.model.state_dict(), done.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [strip_timing(r) for r in read_metrics(out / "metrics.jsonl")] == \
        [strip_timing(r) for r in read_metrics(tmp_path / "ref" / "metrics.jsonl")]


def _peak_rss(proc: subprocess.Popen) -> list[int]:
    """Sample the child's resident memory (Linux /proc) until it exits."""
    peak = [0]

    def watch() -> None:
        status = Path(f"/proc/{proc.pid}/status")
        while proc.poll() is None:
            try:
                for line in status.read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        peak[0] = max(peak[0], int(line.split()[1]) * 1024)
            except (OSError, ValueError):
                pass
            time.sleep(0.05)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return peak


def test_nfe_explosion_lr_1e8_stops_fast_with_bounded_memory(tmp_path):
    """Before the guard this run kept the graph of an ever longer adaptive solve: 47 s
    for iteration 3 alone and over 8 GB by iteration 4 (23 GB reported)."""
    out = tmp_path / "lr1e8"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "hyperode", "train", "--task", "xor",
                             "--lr", "1e8", "--quiet", "--no-plots", "--device", "cpu",
                             "--out", str(out)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    peak = _peak_rss(proc)
    _, err = proc.communicate(timeout=120)
    elapsed = time.monotonic() - start
    assert proc.returncode == 1, err[-3000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    assert "iteration 2" in lines[0] and "NFE exploded" in lines[0], lines[0]
    assert "--lr" in lines[0] and "--max-steps-per-solve" in lines[0]
    assert elapsed < 60
    if Path("/proc/self/status").exists():
        assert 0 < peak[0] < 2 * 2**30, peak[0]  # measured: about 0.4 GB
    assert load_checkpoint(out / "checkpoint.pt")["iteration"] == 1
    # resumable, and the cap may change on resume: an explicit cap stops it there instead
    proc = _run(["train", "--task", "xor", "--lr", "1e8", "--quiet", "--no-plots",
                 "--device", "cpu", "--out", str(out), "--resume", "--max-steps-per-solve",
                 "300"])
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "--max-steps-per-solve 300 steps" in proc.stderr
    assert "iteration 2" in proc.stderr or "iteration 3" in proc.stderr


def test_step_cap_stops_and_a_larger_cap_resumes_to_the_same_result(tmp_path, capsys):
    base = ["train", "--task", "xor", "--n-train", "128", "--n-test", "64", "--iterations",
            "6", "--batch-size", "32", "--rtol", "1e-8", "--atol", "1e-8", "--quiet",
            "--no-plots", "--device", "cpu", "--eval-every", "3", "--checkpoint-every", "3"]
    out = tmp_path / "capped"
    line = _fails([*base, "--out", str(out), "--max-steps-per-solve", "4"], capsys, code=1)
    assert "iteration 1" in line and "--max-steps-per-solve 4 steps" in line, line
    assert load_checkpoint(out / "checkpoint.pt")["iteration"] == 0
    assert main([*base, "--out", str(out), "--resume", "--max-steps-per-solve", "1000"]) == 0
    assert main([*base, "--out", str(tmp_path / "free")]) == 0
    # the cap changes nothing but the limit: the same weights and records as without it
    a = load_checkpoint(out / "checkpoint.pt")["model"]
    b = load_checkpoint(tmp_path / "free" / "checkpoint.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [strip_timing(r) for r in read_metrics(out / "metrics.jsonl")] == \
        [strip_timing(r) for r in read_metrics(tmp_path / "free" / "metrics.jsonl")]


@pytest.mark.parametrize("grid, cap, expected", [
    (["--num-steps", "20000"], None, "more than 10000 steps, the default cap per solve"),
    (["--step-size", "1e-4"], "500", "more than --max-steps-per-solve 500 steps"),
])
def test_step_cap_on_fixed_grids(grid, cap, expected, tmp_path, capsys):
    argv = ["train", "--task", "xor", "--n-train", "64", "--n-test", "32", "--method",
            "euler", *grid, "--iterations", "2", "--batch-size", "16", "--quiet",
            "--no-plots", "--device", "cpu", "--out", str(tmp_path / "run")]
    line = _fails(argv + ([] if cap is None else ["--max-steps-per-solve", cap]), capsys,
                  code=1)
    assert "iteration 1" in line and expected in line, line


def test_training_api_raises_training_diverged_error(tmp_path):
    cfg = TrainConfig(task="xor", n_train=64, n_test=32, method="dopri5", rtol=1e-7,
                      atol=1e-7, iterations=2, batch_size=16, quiet=True, plots=False,
                      device="cpu", out=str(tmp_path / "run"), max_steps_per_solve=2)
    with pytest.raises(TrainingDivergedError) as e:
        train(cfg)
    assert e.value.iteration == 1 and e.value.checkpoint == tmp_path / "run" / "checkpoint.pt"
