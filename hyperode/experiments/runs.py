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

A damaged folder (a truncated or foreign checkpoint, missing keys, a corrupt
``config.json`` or ``metrics.jsonl``) raises ``CheckpointError`` naming the file and
what is wrong, before anything in the folder is written. A process killed inside
``atomic_write_bytes`` leaves its temporary file (``.checkpoint.pt.<random>.tmp`` and
the like); ``remove_stale_temp_files`` deletes them when the next run starts there.
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
from typing import Any, cast

import numpy as np
import torch

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
RESULTS_FILE = "results.json"
CHECKPOINT_FILE = "checkpoint.pt"
WEIGHTS_FILE = "model.safetensors"


TRAIN_CHECKPOINT_FORMAT = "hyperode.train/1"

#: Keys of a training checkpoint and their types (JSON text for the ``str`` ones that
#: ``JSON_KEYS`` lists).
TRAIN_CHECKPOINT_KEYS: dict[str, type | tuple[type, ...]] = {
    "format": str, "iteration": int, "config": str, "model": dict, "optimizer": dict,
    "scheduler": dict, "rng": list, "world_size": int, "solvers": str, "callbacks": str,
    "eval_metrics": str, "elapsed": (int, float), "train_time": (int, float),
}
_JSON_KEYS = {"config": dict, "solvers": list, "callbacks": dict, "eval_metrics": dict}
#: Files of a run folder written through ``atomic_write_bytes``: their temporary files
#: are ``.<name>.<random>.tmp``.
ATOMIC_FILES = (CONFIG_FILE, METRICS_FILE, RESULTS_FILE, CHECKPOINT_FILE, WEIGHTS_FILE)


class CheckpointError(RuntimeError):
    """A run folder cannot be used: its checkpoint is missing, torn, not a plain-data
    checkpoint, of another format or lacks keys, or ``config.json`` / ``metrics.jsonl``
    is corrupt or disagrees with it. The message names the file and what is wrong."""


def _first_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__


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
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"checkpoint {str(path)!r} is empty (0 bytes): it was truncated")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError,
            KeyError, IndexError, TypeError) as e:
        raise CheckpointError(
            f"refusing to load checkpoint {str(path)!r}: it is not a plain-data checkpoint "
            f"readable with weights_only=True, or it is truncated ({_first_line(e)})"
        ) from e
    except OSError as e:  # torch reports most truncations as "[Errno 22] Invalid argument"
        raise CheckpointError(
            f"cannot read checkpoint {str(path)!r} ({size} bytes): it is truncated or "
            f"corrupt ({_first_line(e)})") from e
    if not isinstance(payload, dict):
        raise CheckpointError(f"checkpoint {str(path)!r} holds a {type(payload).__name__}, "
                              f"expected a dict")
    return payload


def check_train_checkpoint(payload: dict[str, Any], path: str | os.PathLike
                           ) -> dict[str, Any]:
    """Check that ``payload`` (from ``path``) is a complete training checkpoint of
    ``TRAIN_CHECKPOINT_FORMAT`` and return its JSON fields parsed (``config``,
    ``solvers``, ``callbacks``, ``eval_metrics``).

    Raises:
        CheckpointError: naming ``path`` and the wrong format, missing keys, a key of
            the wrong type or a JSON field that does not parse.
    """
    where = repr(str(path))
    fmt = payload.get("format")
    if fmt != TRAIN_CHECKPOINT_FORMAT:
        raise CheckpointError(f"{where} is not a hyperode training checkpoint of format "
                              f"{TRAIN_CHECKPOINT_FORMAT!r} (its format is {fmt!r})")
    missing = [k for k in TRAIN_CHECKPOINT_KEYS if k not in payload]
    if missing:
        raise CheckpointError(f"{where} lacks the key(s) {', '.join(missing)}: it is not a "
                              f"complete training checkpoint")
    for key, kind in TRAIN_CHECKPOINT_KEYS.items():
        value = payload[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise CheckpointError(f"{where}: key {key!r} holds a {type(value).__name__}, "
                                  f"not a valid training checkpoint")
    parsed: dict[str, Any] = {}
    for key, kind in _JSON_KEYS.items():
        try:
            parsed[key] = json.loads(payload[key])
        except ValueError as e:
            raise CheckpointError(f"{where}: key {key!r} is not valid JSON ({e})") from None
        if not isinstance(parsed[key], kind):
            raise CheckpointError(f"{where}: key {key!r} holds JSON "
                                  f"{type(parsed[key]).__name__}, expected {kind.__name__}")
    if payload["iteration"] < 0:
        raise CheckpointError(f"{where}: iteration {payload['iteration']} is negative")
    if "guard" in payload:
        try:
            guard = json.loads(payload["guard"])
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{where}: key 'guard' is not valid JSON ({e})") from None
        if not isinstance(guard, dict):
            raise CheckpointError(f"{where}: key 'guard' holds {type(guard).__name__}, "
                                  f"expected an object")
        parsed["guard"] = guard
    return parsed


def remove_stale_temp_files(folder: str | os.PathLike,
                            names: tuple[str, ...] = ATOMIC_FILES) -> list[str]:
    """Delete the temporary files ``.<name>.<random>.tmp`` of ``atomic_write_bytes`` that
    a killed process left in ``folder`` (for each of ``names``); return their names.

    Call it only when no other process writes to ``folder`` (a run's own start)."""
    folder = Path(folder)
    removed: list[str] = []
    if not folder.is_dir():
        return removed
    for name in names:
        for tmp in sorted(folder.glob(f".{name}.*.tmp")):
            if tmp.is_file() and not tmp.is_symlink():
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
                    removed.append(tmp.name)
    return removed


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
    # the legacy global stream is the point; legacy=True (the default) gives the tuple
    np_state = cast(tuple, np.random.get_state())  # noqa: NPY002
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
        ``iteration`` exceeds it (lines logged after the checkpoint a run resumes from;
        ``check_metrics_log`` has vetted the file)."""
        self.path = path
        if keep_up_to is not None and path.exists():
            kept = check_metrics_log(path, keep_up_to)
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


def check_metrics_log(path: str | os.PathLike, keep_up_to: int) -> list[str]:
    """The lines of a run's ``metrics.jsonl`` up to iteration ``keep_up_to`` (the
    checkpoint a run resumes from), checked: every line a JSON object with an integer
    ``iteration``, those up to ``keep_up_to`` exactly ``1 .. keep_up_to``. A last line
    without its newline that does not parse was torn by a kill and is dropped.

    Raises:
        CheckpointError: naming the file and the first bad line.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{str(path)!r} is missing: the run folder is incomplete (the "
                              f"checkpoint has {keep_up_to} iterations of metrics)")
    try:
        text = path.read_bytes().decode()
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{str(path)!r} is not UTF-8 text ({e})") from None
    lines = text.split("\n")
    torn = lines.pop()  # text after the last newline ("" when the file ends with one)
    kept: list[str] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        iteration = _iteration_of(line)
        if iteration is None:
            raise CheckpointError(f"{str(path)!r}: line {number} is not a JSON record with an "
                                  f"integer 'iteration' ({line[:60]!r})")
        if iteration <= keep_up_to:
            kept.append(line)
    torn_iteration = _iteration_of(torn) if torn.strip() else None
    if torn_iteration is not None and torn_iteration <= keep_up_to:
        kept.append(torn)  # a complete record whose newline was lost
    found = [_iteration_of(line) for line in kept]
    if found != list(range(1, keep_up_to + 1)):
        raise CheckpointError(
            f"{str(path)!r} does not match the checkpoint: it should hold iterations 1 to "
            f"{keep_up_to}, it holds {_ranges(found)}")
    return kept


def _ranges(values: list[Any]) -> str:
    if not values:
        return "none"
    if values == list(range(values[0], values[0] + len(values))):
        return f"{values[0]} to {values[-1]}"
    return f"{len(values)} records ({', '.join(map(str, values[:5]))}, ...)"


def _iteration_of(line: str) -> int | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    value = record.get("iteration") if isinstance(record, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Every record of a ``metrics.jsonl`` file, in order."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
