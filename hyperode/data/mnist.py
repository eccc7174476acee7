"""MNIST from the standard IDX files the user already has (nothing is downloaded).

IDX format (LeCun et al.): a 4-byte magic number ``00 00 TT NN`` -- two zero
bytes, the element type ``TT`` (``0x08`` = unsigned byte, the only type MNIST uses)
and the number of dimensions ``NN`` -- then ``NN`` big-endian uint32 sizes, then
the elements in C order. Images are ``[N, rows, cols]`` (magic ``0x00000803``),
labels ``[N]`` (magic ``0x00000801``). Files may be gzip-compressed (detected
from their content, whatever their name). The same reader serves the drop-in
MNIST replacements (Fashion-MNIST, KMNIST) that use these file names.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from ._checks import check_dir
from .split import Split

#: The four standard file names (each may also carry a ``.gz`` suffix).
MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
#: Folders searched, relative to ``data_dir`` (the second is torchvision's layout).
MNIST_SUBDIRS = (".", "MNIST/raw")

_UBYTE = 0x08
_GZIP_MAGIC = b"\x1f\x8b"


def find_mnist_file(data_dir: str | Path, name: str) -> Path:
    """The path of ``name`` or ``name.gz`` in ``data_dir`` (or ``data_dir/MNIST/raw``).

    Raises ``FileNotFoundError`` listing every path looked for.
    """
    root = check_dir("data_dir", data_dir)
    looked = []
    for sub in MNIST_SUBDIRS:
        for candidate in (name, name + ".gz"):
            path = root / sub / candidate
            if path.is_file():
                return path
            looked.append(str(path))
    raise FileNotFoundError(f"MNIST file {name!r} not found (looked for {', '.join(looked)}); "
                            f"--data-dir must hold the IDX files "
                            f"{', '.join(MNIST_FILES.values())} (plain or .gz)")


def _read_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as err:
        raise ValueError(f"{path}: corrupt or truncated gzip data ({err})") from err


def read_idx(path: str | Path, ndim: int) -> np.ndarray:
    """Read an unsigned-byte IDX file of ``ndim`` dimensions: uint8 array of its shape.

    Raises ``ValueError`` naming the file for a wrong magic number (not IDX, not
    unsigned bytes, other number of dimensions), a truncated header or body, a
    zero size, or bytes after the data.
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise ValueError(f"{path}: truncated: {len(raw)} bytes, too short for the IDX magic number")
    magic = raw[:4]
    expected = bytes([0, 0, _UBYTE, ndim])
    if magic != expected:
        if magic[:2] != b"\x00\x00":
            why = "not an IDX file (its first two bytes must be zero)"
        elif magic[2] != _UBYTE:
            why = f"element type 0x{magic[2]:02x} is not unsigned byte (0x08)"
        else:
            why = f"{magic[3]} dimensions, expected {ndim}"
        raise ValueError(f"{path}: bad magic number 0x{magic.hex()} (expected 0x{expected.hex()}): "
                         f"{why}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated header: {len(raw)} bytes, need {header} for "
                         f"{ndim} dimension sizes")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    if 0 in shape:
        raise ValueError(f"{path}: empty: header gives shape {shape}")
    size = math.prod(shape)
    body = len(raw) - header
    if body < size:
        raise ValueError(f"{path}: truncated: header gives shape {shape} = {size} bytes of "
                         f"data but only {body} follow")
    if body > size:
        raise ValueError(f"{path}: {body - size} unexpected bytes after the {size} bytes of "
                         f"data for shape {shape}")
    return np.frombuffer(raw, dtype=np.uint8, count=size, offset=header).reshape(shape)


def _load_pair(data_dir: str | Path, images_key: str, labels_key: str) -> tuple[np.ndarray, ...]:
    images_path = find_mnist_file(data_dir, MNIST_FILES[images_key])
    labels_path = find_mnist_file(data_dir, MNIST_FILES[labels_key])
    images = read_idx(images_path, 3)
    labels = read_idx(labels_path, 1)
    if len(images) != len(labels):
        raise ValueError(f"{images_path} holds {len(images)} images but {labels_path} holds "
                         f"{len(labels)} labels")
    return images, labels


def load_mnist(data_dir: str | Path) -> Split:
    """The official MNIST split from IDX files in ``data_dir``.

    Looks in ``data_dir`` and ``data_dir/MNIST/raw`` for ``train-images-idx3-ubyte``,
    ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``,
    each plain or ``.gz``.

    Returns:
        ``Split`` with x float32 ``[N, 1, rows, cols]`` in ``[0, 1]`` (byte / 255;
        ``[60000, 1, 28, 28]`` and ``[10000, 1, 28, 28]`` for MNIST), y int64 ``[N]``,
        ``num_classes = max(10, largest label + 1)``.

    Raises:
        FileNotFoundError: a file is missing (the message lists the paths tried).
        ValueError: a file is malformed, counts of images and labels differ, or the
            training and test images differ in size.
    """
    x_tr, y_tr = _load_pair(data_dir, "train_images", "train_labels")
    x_te, y_te = _load_pair(data_dir, "test_images", "test_labels")
    if x_tr.shape[1:] != x_te.shape[1:]:
        raise ValueError(f"MNIST training images are {x_tr.shape[1]}x{x_tr.shape[2]} but test "
                         f"images are {x_te.shape[1]}x{x_te.shape[2]} (in {data_dir})")
    num_classes = max(10, int(max(y_tr.max(), y_te.max())) + 1)
    return Split(_images(x_tr), _labels(y_tr), _images(x_te), _labels(y_te),
                 num_classes=num_classes)


def _images(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x[:, None, :, :].astype(np.float32) / np.float32(255.0))


def _labels(y: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(y.astype(np.int64))
