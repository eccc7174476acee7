"""CIFAR-10 from the "python version" batches the user already has (no download).

The archive ``cifar-10-python.tar.gz`` unpacks to ``cifar-10-batches-py/`` with
``data_batch_1`` .. ``data_batch_5`` (10000 images each) and ``test_batch``
(10000). Each is a pickled dict with ``b"data"``: uint8 ``[N, 3072]`` (per image
1024 red, then 1024 green, then 1024 blue values, each plane row-major 32x32) and
``b"labels"``: ``N`` integers in 0..9. (``str`` keys are accepted too, for batches
re-saved from Python 3.) Batches are read with ``SafeUnpickler``, which can build
numpy arrays and nothing else, so a tampered file cannot run code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._checks import check_dir
from .safe_pickle import safe_load
from .split import Split

CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILES = ("test_batch",)
#: Folders searched, relative to ``data_dir``.
CIFAR10_SUBDIRS = (".", "cifar-10-batches-py")
_PIXELS = 3 * 32 * 32


def find_cifar10_dir(data_dir: str | Path) -> Path:
    """The folder (``data_dir`` or ``data_dir/cifar-10-batches-py``) holding all six batches.

    Raises ``FileNotFoundError`` naming the missing files when neither holds them all.
    """
    root = check_dir("data_dir", data_dir)
    names = CIFAR10_TRAIN_FILES + CIFAR10_TEST_FILES
    missing_per_dir = []
    for sub in CIFAR10_SUBDIRS:
        folder = root / sub
        missing = [name for name in names if not (folder / name).is_file()]
        if not missing:
            return folder
        missing_per_dir.append(f"{folder} lacks {', '.join(missing)}")
    raise FileNotFoundError(f"CIFAR-10 batches not found: {'; '.join(missing_per_dir)}. "
                            f"--data-dir must hold {', '.join(names)} (the python version, "
                            f"possibly inside cifar-10-batches-py/)")


def _get(batch: dict[Any, Any], key: str) -> Any:
    for k in (key.encode(), key):
        if k in batch:
            return batch[k]
    raise KeyError(key)


def read_cifar_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch: images uint8 ``[N, 3, 32, 32]`` and labels int64 ``[N]``.

    Raises ``ValueError`` naming the file if it is not a dict with ``data`` (uint8,
    ``[N, 3072]``) and ``labels`` (``N`` integers in 0..9), and ``UnsafePickleError``
    if the pickle asks for anything but numpy arrays.
    """
    path = Path(path)
    batch = safe_load(path)
    if not isinstance(batch, dict):
        raise ValueError(f"{path}: expected a pickled dict, got {type(batch).__name__}")
    try:
        data, labels = _get(batch, "data"), _get(batch, "labels")
    except KeyError as err:
        raise ValueError(f"{path}: missing key b{err.args[0]!r} (keys: "
                         f"{sorted(map(repr, batch))})") from None
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != _PIXELS:
        got = (f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray)
               else type(data).__name__)
        raise ValueError(f"{path}: b'data' must be a uint8 array [N, {_PIXELS}], got {got}")
    try:
        y = np.asarray(labels)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: b'labels' is not a list of integers ({err})") from err
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{path}: b'labels' must be a list of integers, got {y.dtype} "
                         f"of shape {y.shape}")
    if len(y) != len(data):
        raise ValueError(f"{path}: {len(data)} images but {len(y)} labels")
    if len(y) and (y.min() < 0 or y.max() > 9):
        raise ValueError(f"{path}: labels must be in 0..9, got range [{y.min()}, {y.max()}]")
    return data.reshape(-1, 3, 32, 32), y.astype(np.int64)


def _read_all(folder: Path, names: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    batches = [read_cifar_batch(folder / name) for name in names]
    x = np.concatenate([b[0] for b in batches]).astype(np.float32) / np.float32(255.0)
    y = np.concatenate([b[1] for b in batches])
    return torch.from_numpy(x), torch.from_numpy(y)


def load_cifar10(data_dir: str | Path) -> Split:
    """The official CIFAR-10 split from the python batches in ``data_dir``.

    Returns:
        ``Split`` with x float32 ``[N, 3, 32, 32]`` in ``[0, 1]`` (byte / 255;
        50000 training and 10000 test images for the real files), y int64 ``[N]``,
        ``num_classes=10``.

    Raises:
        FileNotFoundError: a batch is missing.
        ValueError: a batch is malformed.
        UnsafePickleError: a batch's pickle asks for code other than numpy arrays.
    """
    folder = find_cifar10_dir(data_dir)
    x_tr, y_tr = _read_all(folder, CIFAR10_TRAIN_FILES)
    x_te, y_te = _read_all(folder, CIFAR10_TEST_FILES)
    return Split(x_tr, y_tr, x_te, y_te, num_classes=10)
