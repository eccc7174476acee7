"""SIGKILL a training run at random points, resume it each time: the end is bit-identical.

``python -m hyperode train`` runs in a subprocess that is killed with SIGKILL (no
handler runs, nothing is flushed or cleaned up) five times:

1. during start-up, after a random delay;
2. when ``metrics.jsonl`` reaches a random iteration;
3. inside the checkpoint write, between the complete temporary file and the
   ``os.replace`` that publishes it (the one window where a stale
   ``.checkpoint.pt.*.tmp`` is left behind);
4. at another random iteration;
5. inside the final write of ``model.safetensors``, after the last checkpoint.

Windows 3 and 5 are hit deterministically without any hook in the library: the child
process is a tiny launcher (``CHILD`` below) that wraps ``os.replace`` before running
the CLI and kills itself on the N-th replace of the named file. After every kill the
run is started again (``--resume`` when a checkpoint exists); the final weights,
optimiser state, every metrics record (less wall-clock fields) and the result figures
must equal those of an uninterrupted run bit for bit, the checkpoint must always be
loadable, and the stale temporary files must be removed (and reported) by the next start.

Fixed seeds, a fixed-step solver (rk4, 4 steps) on CPU with one thread; about 30 s.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hyperode.experiments import load_checkpoint, read_metrics
from hyperode.experiments.train import strip_timing

REPO = Path(__file__).resolve().parents[1]
ITERATIONS = 600
ARGS = ["train", "--task", "xor", "--n-train", "512", "--n-test", "256", "--method", "rk4",
        "--num-steps", "4", "--iterations", str(ITERATIONS), "--batch-size", "64",
        "--eval-every", "100", "--checkpoint-every", "50", "--quiet", "--no-plots",
        "--device", "cpu", "--threads", "1"]

#: The launcher: ``HYPERODE_TEST_KILL_AT_REPLACE=NAME:N`` kills this process with SIGKILL
#: at the N-th ``os.replace`` onto a file called NAME, after its temporary file is
#: complete and fsynced; then runs ``python -m hyperode`` with the arguments.
CHILD = r"""
import os, signal, sys
hook = os.environ.get("HYPERODE_TEST_KILL_AT_REPLACE")
if hook:
    name, n = hook.rsplit(":", 1)
    real_replace, seen = os.replace, [0]

    def replace(src, dst, *args, **kwargs):
        if os.path.basename(os.fspath(dst)) == name:
            seen[0] += 1
            if seen[0] == int(n):
                os.kill(os.getpid(), signal.SIGKILL)
        return real_replace(src, dst, *args, **kwargs)

    os.replace = replace
from hyperode.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _env(kill_at: str | None = None) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    env.pop("HYPERODE_TEST_KILL_AT_REPLACE", None)
    if kill_at is not None:
        env["HYPERODE_TEST_KILL_AT_REPLACE"] = kill_at
    return env


def _start(out: Path, kill_at: str | None = None) -> subprocess.Popen:
    resume = ["--resume"] if (out / "checkpoint.pt").exists() else []
    return subprocess.Popen([sys.executable, "-c", CHILD, *ARGS, "--out", str(out), *resume],
                            env=_env(kill_at), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 60.0) -> str:
    """SIGKILL ``proc`` as soon as ``ready()`` holds; returns its stderr."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"the run ended (status {proc.returncode}) before it could be killed:"
                        f"\n{proc.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("timed out waiting for the kill point")
        time.sleep(0.003)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    return err


def _killed_by_hook(proc: subprocess.Popen) -> str:
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, err[-2000:]
    return err


def _checkpoint_is_whole(out: Path) -> int | None:
    """The iteration of the run's checkpoint (it must load), ``None`` without one."""
    if not (out / "checkpoint.pt").exists():
        return None
    return int(load_checkpoint(out / "checkpoint.pt")["iteration"])


def test_sigkill_at_random_points_then_resume_is_bit_identical(tmp_path):
    rng = random.Random(20240611)
    ref_dir, out = tmp_path / "reference", tmp_path / "killed"
    reference = subprocess.Popen([sys.executable, "-m", "hyperode", *ARGS, "--out",
                                  str(ref_dir)], env=_env(), stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
    metrics = out / "metrics.jsonl"
    stderr: list[str] = []

    # 1. start-up: a random moment in the first second (imports, data, first iterations)
    proc = _start(out)
    until = time.monotonic() + rng.uniform(0.3, 1.0)
    stderr.append(_kill_when(proc, lambda: time.monotonic() >= until))
    _checkpoint_is_whole(out)

    # 2. a random iteration
    target = rng.randrange(60, 200)
    proc = _start(out)
    stderr.append(_kill_when(proc, lambda: _lines(metrics) >= target))
    at = _checkpoint_is_whole(out)
    assert at is not None and at <= _lines(metrics)

    # 3. inside the checkpoint write: the temporary file is complete, not yet renamed
    proc = _start(out, kill_at="checkpoint.pt:2")
    stderr.append(_killed_by_hook(proc))
    stale = sorted(p.name for p in out.glob(".checkpoint.pt.*.tmp"))
    assert len(stale) == 1, stale
    assert _checkpoint_is_whole(out) == at + 50  # the first write of the session survived
    at += 50

    # 4. another random iteration; this start removes the stale file and says so
    target = rng.randrange(at + 60, at + 200)
    proc = _start(out)
    err = _kill_when(proc, lambda: _lines(metrics) >= target)
    stderr.append(err)
    assert f"removed 1 stale temporary file(s) left in {out}" in err and stale[0] in err, err
    assert not list(out.glob(".checkpoint.pt.*.tmp"))
    _checkpoint_is_whole(out)

    # 5. inside the final write of the weights (after the last checkpoint)
    proc = _start(out, kill_at="model.safetensors:1")
    stderr.append(_killed_by_hook(proc))
    assert _checkpoint_is_whole(out) == ITERATIONS
    assert len(list(out.glob(".model.safetensors.*.tmp"))) == 1

    # 6. the last start finishes the run
    proc = _start(out)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    assert "removed 1 stale temporary file(s)" in err and ".model.safetensors." in err
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    _, ref_err = reference.communicate(timeout=120)
    assert reference.returncode == 0, ref_err[-3000:]
    assert not any("Traceback" in e for e in stderr)

    # bit-identical: weights, optimiser, every record, the figures
    w_ref, w_out = load_file(str(ref_dir / "model.safetensors")), \
        load_file(str(out / "model.safetensors"))
    assert w_ref.keys() == w_out.keys()
    assert all(torch.equal(w_ref[k], w_out[k]) for k in w_ref)
    c_ref, c_out = load_checkpoint(ref_dir / "checkpoint.pt"), load_checkpoint(
        out / "checkpoint.pt")
    assert c_ref["iteration"] == c_out["iteration"] == ITERATIONS
    assert all(torch.equal(c_ref["model"][k], c_out["model"][k]) for k in c_ref["model"])
    o_ref, o_out = c_ref["optimizer"]["state"], c_out["optimizer"]["state"]
    assert all(torch.equal(o_ref[i][k], o_out[i][k]) for i in o_ref for k in o_ref[i])
    assert [strip_timing(r) for r in read_metrics(out / "metrics.jsonl")] == \
        [strip_timing(r) for r in read_metrics(ref_dir / "metrics.jsonl")]
    r_ref = json.loads((ref_dir / "results.json").read_text())
    r_out = json.loads((out / "results.json").read_text())
    for key in ("status", "iterations", "final", "best", "train_last_50", "nfe"):
        assert r_out[key] == r_ref[key], key
    assert r_out["resumed_from"] == ITERATIONS
