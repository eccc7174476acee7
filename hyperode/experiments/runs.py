"""Run folders: configuration, metrics log, results, and checkpoints that never run code.

A run folder holds::

    config.json        the resolved TrainConfig (written once, at the start)
    metrics.jsonl      one JSON object per logged iteration, flushed line by line
    results.json       final figures, versions, seed, device, wall time, final solver
    checkpoint.pt      latest training state (weights_only-loadable, written atomically)
    model.safetensors  final weights (safetensors, with the config as metadata)
    *.png              plots

Every file that is replaced during a run (checkpoint, results, weights) is written to a
temporary file in the same folder, fsynced and moved into place with ``os.replace``,
so a run interrupted at any moment leaves either the old file or the new one, never a
torn one.

Checkpoints are plain dictionaries of tensors, numbers, strings, lists and tuples and
are read back with ``torch.load(..., weights_only=True)``: a crafted file cannot run
code when loaded (it fails to load instead).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
RESULTS_FILE = "results.json"
CHECKPOINT_FILE = "checkpoint.pt"
WEIGHTS_FILE = "model.safetensors"


class CheckpointError(RuntimeError):
    """A checkpoint could not be read (missing, torn, or not a plain-data checkpoint)."""


# ----------------------------------------------------------------------- atomic writes


def _fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (POSIX); a no-op where directories can't be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temp file in the same folder, fsync, replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    text = json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n"
    atomic_write_bytes(path, text.encode())


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    if isinstance(obj, torch.Tensor) and obj.numel() == 1:
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return repr(obj)


# ------------------------------------------------------------------------- checkpoints


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """``torch.save`` ``payload`` atomically. It must hold only tensors and plain data."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu"
                    ) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``.

    Raises:
        CheckpointError: the file is missing, truncated, or contains anything other
            than tensors and plain data (for example a pickled object whose
            ``__reduce__`` would run code: it is refused, never executed).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError) as e:
        raise CheckpointError(
            f"refusing to load checkpoint {str(path)!r}: it is not a plain-data checkpoint "
            f"readable with weights_only=True ({type(e).__name__}: {str(e).splitlines()[0]})"
        ) from e
    if not isinstance(payload, dict):
        raise CheckpointError(f"checkpoint {str(path)!r} holds a {type(payload).__name__}, "
                              f"expected a dict")
    return payload


def save_weights(path: str | os.PathLike, module: torch.nn.Module,
                 metadata: dict[str, str] | None = None) -> None:
    """Write ``module``'s state dict as safetensors, atomically (shared tensors are copied)."""
    from safetensors.torch import save

    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in
               module.state_dict().items()}
    atomic_write_bytes(path, save(tensors, metadata=metadata))


def load_weights(path: str | os.PathLike, module: torch.nn.Module) -> None:
    """Load safetensors weights written by ``save_weights`` into ``module`` (strict)."""
    from safetensors.torch import load_file

    module.load_state_dict(load_file(str(path)))


# ------------------------------------------------------------------------- RNG states


def capture_rng_state() -> dict[str, Any]:
    """Every global RNG a training step may draw from, as plain data."""
    np_state = np.random.get_state()  # noqa: NPY002 - the legacy global stream is the point
    py_state = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": str(np_state[0]),
                  "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]),
                  "cached_gaussian": float(np_state[4])},
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of ``capture_rng_state``."""
    torch.set_rng_state(state["torch"].cpu())
    npd = state["numpy"]
    legacy = (npd["name"], npd["keys"].numpy().astype(np.uint32), npd["pos"], npd["has_gauss"],
              npd["cached_gaussian"])
    np.random.set_state(legacy)  # noqa: NPY002 - restores the legacy global stream
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = [s.cpu() for s in state["cuda"]]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy and Python's ``random``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - user code may draw from it
    torch.manual_seed(seed)


# ------------------------------------------------------------------------- run folders


def default_run_dir(task: str, root: str | os.PathLike = "runs") -> Path:
    """``runs/<task>-<YYYYmmdd-HHMMSS>`` (with a numeric suffix if that already exists)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{task}-{stamp}"
    path, k = base, 1
    while path.exists():
        path = base.with_name(f"{base.name}-{k}")
        k += 1
    return path


def latest_run_dir(task: str, root: str | os.PathLike = "runs") -> Path | None:
    """The most recently modified ``runs/<task>-*`` folder holding a checkpoint, if any."""
    root = Path(root)
    if not root.is_dir():
        return None
    candidates = [p for p in root.glob(f"{task}-*") if (p / CHECKPOINT_FILE).is_file()]
    if not candidates:
        return None
    return max(candidates, key=lambda p: (p / CHECKPOINT_FILE).stat().st_mtime)


class MetricsLog:
    """Append-only JSON-lines log, flushed after every line."""

    def __init__(self, path: Path, *, keep_up_to: int | None = None) -> None:
        """Open ``path`` for appending; with ``keep_up_to``, first drop every line whose
        ``iteration`` exceeds it (lines logged after the checkpoint a run resumes from)."""
        self.path = path
        if keep_up_to is not None and path.exists():
            kept = [line for line in path.read_text().splitlines()
                    if line.strip() and _iteration_of(line) <= keep_up_to]
            atomic_write_bytes(path, "".join(line + "\n" for line in kept).encode())
        elif keep_up_to is None and path.exists():
            path.unlink()
        self._file = open(path, "a")

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record, default=_json_default) + "\n")
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()


def _iteration_of(line: str) -> int:
    try:
        return int(json.loads(line).get("iteration", 0))
    except (ValueError, AttributeError):
        return 0


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Every record of a ``metrics.jsonl`` file, in order."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
