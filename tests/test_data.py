"""hyperode.data: generated sets (shapes, statistics, determinism, disjoint splits), the
MNIST/CIFAR-10 readers on tiny files written here, the restricted unpickler, bad arguments."""

from __future__ import annotations

import gzip
import math
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.spatial import cKDTree

from hyperode.data import (
    DENSITIES,
    TASKS,
    SafeUnpickler,
    Split,
    UnsafePickleError,
    density,
    digits,
    load_cifar10,
    load_mnist,
    load_task,
    sample_density,
    spheres,
    xor,
)
from hyperode.data import densities as densities_module
from hyperode.data.spheres import SHELLS


def _rows(x: torch.Tensor) -> set[bytes]:
    return {row.tobytes() for row in x.reshape(len(x), -1).numpy()}


def _assert_disjoint(split: Split) -> None:
    train, test = _rows(split.x_train), _rows(split.x_test)
    assert not train & test, f"{len(train & test)} samples in both train and test"


def _assert_same(a: Split, b: Split) -> None:
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.x_test, b.x_test)
    if a.y_train is None:
        assert b.y_train is None and b.y_test is None
    else:
        assert torch.equal(a.y_train, b.y_train) and torch.equal(a.y_test, b.y_test)


# --------------------------------------------------------------------------- Split


def test_split_validates_and_infers_num_classes():
    x, y = torch.zeros(4, 3), torch.tensor([0, 2, 1, 0])
    split = Split(x, y, torch.zeros(2, 3), torch.tensor([1, 1]))
    assert split.num_classes == 3 and split.input_shape == (3,)
    assert (split.n_train, split.n_test) == (4, 2)
    assert "n_train=4" in repr(split) and "tensor(" not in repr(split)
    with pytest.raises(ValueError, match=r"x_train.*x_test"):
        Split(x, y, torch.zeros(2, 4), torch.tensor([1, 1]))
    with pytest.raises(ValueError, match="y_train and y_test"):
        Split(x, y, torch.zeros(2, 3), None)
    with pytest.raises(ValueError, match="y_test"):
        Split(x, y, torch.zeros(2, 3), torch.tensor([1, 1, 1]))
    with pytest.raises(ValueError, match="y_train"):
        Split(x, y.float(), torch.zeros(2, 3), torch.tensor([1, 1]))
    with pytest.raises(ValueError, match="num_classes"):
        Split(x, y, torch.zeros(2, 3), torch.tensor([1, 1]), num_classes=2)
    with pytest.raises(ValueError, match="num_classes"):
        Split(x, None, torch.zeros(2, 3), None, num_classes=2)
    with pytest.raises(ValueError, match=">= 0"):
        Split(x, y - 1, torch.zeros(2, 3), torch.tensor([1, 1]))
    with pytest.raises(ValueError, match="x_train"):
        Split(torch.zeros(4, 3, dtype=torch.long), y, torch.zeros(2, 3), torch.tensor([1, 1]))
    with pytest.raises(AttributeError):
        split.num_classes = 5  # frozen


# --------------------------------------------------------------------------- spheres


@pytest.mark.parametrize("dim", [2, 3, 10, 900])
def test_spheres_shapes_balance_and_radii(dim):
    split = spheres(dim=dim, n_train=2000, n_test=1000, seed=0)
    assert split.input_shape == (dim,) and split.num_classes == 2
    for x, y, n in ((split.x_train, split.y_train, 2000), (split.x_test, split.y_test, 1000)):
        assert x.shape == (n, dim) and x.dtype == torch.float32
        assert y.shape == (n,) and y.dtype == torch.int64
        r = x.double().norm(dim=1)
        counts = []
        for r_min, r_max, label in SHELLS:
            in_shell = (r > r_min - 1e-5) & (r < r_max + 1e-5)
            assert torch.all(y[in_shell] == label)
            counts.append(int(in_shell.sum()))
        assert counts == [n // 4, n // 2, n // 4]  # every point in exactly one shell
        assert y[:40].unique().numel() == 2, "not shuffled"
    _assert_disjoint(split)


@pytest.mark.parametrize("dim", [2, 3, 10])
def test_spheres_radius_and_direction_distribution(dim):
    split = spheres(dim=dim, n_train=20000, n_test=1, seed=3)
    x = split.x_train.double()
    r = x.norm(dim=1)
    for r_min, r_max, _ in SHELLS:
        rs = r[(r > r_min - 1e-5) & (r < r_max + 1e-5)].numpy()
        s = np.clip((rs - r_min) / (r_max - r_min), 0.0, 1.0)
        # Recipe: r = r_min + (r_max - r_min) * u**(1/D), so s**D ~ U(0, 1) ...
        assert stats.kstest(s**dim, "uniform").pvalue > 1e-3
        # ... which a radius uniform in [r_min, r_max] would not pass.
        assert stats.kstest(s, "uniform").pvalue < 1e-6
        assert np.quantile(s**dim, [0.1, 0.5, 0.9]) == pytest.approx([0.1, 0.5, 0.9], abs=0.03)
    directions = (x / r[:, None]).numpy()
    assert np.abs(directions.mean(axis=0)).max() < 0.05
    np.testing.assert_allclose(directions.T @ directions / len(x), np.eye(dim) / dim, atol=0.02)


@pytest.mark.parametrize("n, counts", [(1, (0, 1, 0)), (7, (1, 5, 1)), (2001, (500, 1001, 500))])
def test_spheres_counts_when_not_divisible_by_four(n, counts):
    split = spheres(n_train=n, n_test=n, seed=1)
    for y in (split.y_train, split.y_test):
        assert len(y) == n and int((y == 1).sum()) == counts[1]
    r = split.x_train.norm(dim=1)
    assert int((r < 0.2).sum()) == counts[0] and int((r > 0.35).sum()) == counts[2]


@pytest.mark.parametrize("make", [
    lambda n, seed: spheres(dim=3, n_train=n, n_test=n, seed=seed),
    lambda n, seed: xor(n_train=n, n_test=n, seed=seed),
    lambda n, seed: density("checkerboard", n_train=n, n_test=n, seed=seed),
], ids=["spheres", "xor", "density"])
def test_generated_determinism_and_independent_streams(make):
    _assert_same(make(200, 5), make(200, 5))
    a, b = make(200, 5), make(200, 6)
    assert not torch.equal(a.x_train, b.x_train)
    _assert_disjoint(a)  # equal sizes: train and test must still come from different streams
    # The test set of one seed is not the training set of the next.
    assert not _rows(a.x_test) & _rows(b.x_train)


@pytest.mark.parametrize("kwargs, name", [
    (dict(dim=1), "dim"), (dict(dim=0), "dim"), (dict(dim=2.5), "dim"), (dict(dim=True), "dim"),
    (dict(n_train=0), "n_train"), (dict(n_test=-3), "n_test"), (dict(n_train=10.0), "n_train"),
    (dict(seed=-1), "seed"), (dict(seed="0"), "seed"),
])
def test_spheres_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        spheres(**kwargs)


# --------------------------------------------------------------------------- xor


def test_xor_clusters_labels_noise():
    split = xor(n_train=4000, n_test=1002, seed=2, noise=0.1)
    assert split.num_classes == 2 and split.input_shape == (2,)
    for x, y in ((split.x_train, split.y_train), (split.x_test, split.y_test)):
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert torch.equal(y, ((x[:, 0] > 0) ^ (x[:, 1] > 0)).long())
        quadrant = (x[:, 0] > 0).long() * 2 + (x[:, 1] > 0).long()
        counts = torch.bincount(quadrant, minlength=4)
        assert int(counts.max() - counts.min()) <= 1
        assert y[:40].unique().numel() == 2, "not shuffled"
        deviation = x.double() - x.double().sign()
        assert deviation.std(dim=0).numpy() == pytest.approx([0.1, 0.1], rel=0.1)
        assert deviation.mean(dim=0).abs().max() < 0.02
    _assert_disjoint(split)
    _assert_same(xor(seed=2), xor(seed=2))
    assert not torch.equal(xor(seed=2).x_train, xor(seed=3).x_train)
    corners = xor(n_train=8, n_test=4, noise=0.0).x_train
    assert _rows(corners) == _rows(torch.tensor([[-1.0, -1], [1, 1], [-1, 1], [1, -1]]))


@pytest.mark.parametrize("kwargs, name", [
    (dict(noise=-0.1), "noise"), (dict(noise=math.nan), "noise"), (dict(noise="big"), "noise"),
    (dict(n_train=0), "n_train"), (dict(n_test=0), "n_test"), (dict(seed=-2), "seed"),
])
def test_xor_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        xor(**kwargs)


# --------------------------------------------------------------------------- 2-D densities


@pytest.mark.parametrize("name", DENSITIES)
def test_density_common_contract(name):
    x = sample_density(name, 1003, seed=4)
    assert x.shape == (1003, 2) and x.dtype == torch.float32 and torch.isfinite(x).all()
    assert torch.equal(x, sample_density(name, 1003, seed=4))
    assert not torch.equal(x, sample_density(name, 1003, seed=5))
    assert sample_density(name, 1).shape == (1, 2)
    split = density(name, n_train=500, n_test=300, seed=4)
    assert split.y_train is None and split.y_test is None and split.num_classes is None
    assert split.x_train.shape == (500, 2) and split.x_test.shape == (300, 2)
    assert torch.equal(split.x_train, sample_density(name, 500, seed=4))
    _assert_disjoint(split)


def test_density_bad_arguments():
    with pytest.raises(ValueError, match="moons") as info:
        sample_density("moons", 10)
    for name in DENSITIES:
        assert name in str(info.value)
    with pytest.raises(ValueError, match="density"):
        density("swissroll")
    with pytest.raises(ValueError, match="n"):
        sample_density("rings", 0)
    with pytest.raises(ValueError, match="n_test"):
        density("rings", n_test=0)
    with pytest.raises(ValueError, match="seed"):
        sample_density("rings", 10, seed=-1)


def test_pinwheel_has_five_arms():
    x = sample_density("pinwheel", 20000).double().numpy()
    r, phi = np.hypot(x[:, 0], x[:, 1]), np.arctan2(x[:, 1], x[:, 0])
    assert r.mean() == pytest.approx(2.1, abs=0.1)
    # Undo the arm's twist (angle 2 pi k/5 + 0.25 exp(radial), radial ~ r/2, applied as a
    # rotation by minus that angle): what is left clusters at multiples of 2 pi / 5.
    psi = phi + 0.25 * np.exp(r / 2)
    for arms in (3, 4, 6, 7):
        assert abs(np.exp(1j * arms * psi).mean()) < 0.05
    five = np.exp(5j * psi).mean()
    assert abs(five) > 0.75 and abs(np.angle(five)) < 0.1
    assert abs(np.exp(5j * (phi - 0.25 * np.exp(r / 2))).mean()) < 0.3  # twist has a direction


def test_rings_radii_and_counts():
    x = sample_density("rings", 4002).double()
    r = x.norm(dim=1).numpy()
    radii = np.array([0.75, 1.5, 2.25, 3.0])
    nearest = np.abs(r[:, None] - radii).argmin(axis=1)
    assert np.bincount(nearest).tolist() == [1002, 1000, 1000, 1000]
    assert np.abs(r - radii[nearest]).max() < 0.4
    assert (r - radii[nearest]).std() == pytest.approx(0.08, rel=0.1)


def test_checkerboard_cells():
    x = sample_density("checkerboard", 16000).double()
    assert x.min() >= -4 and x.max() < 4
    cells = torch.floor(x / 2).long()
    assert torch.all((cells[:, 0] + cells[:, 1]) % 2 == 0)
    counts = torch.bincount((cells[:, 0] + 2) * 4 + (cells[:, 1] + 2), minlength=16)
    assert int((counts > 0).sum()) == 8
    assert counts[counts > 0].float().div(16000).sub(1 / 8).abs().max() < 0.015


def test_circles_radii():
    r = sample_density("circles", 10000).double().norm(dim=1).numpy()
    outer = r > 2.25
    assert outer.mean() == pytest.approx(0.5, abs=0.01)
    assert np.median(r[outer]) == pytest.approx(3.0, abs=0.05)
    assert np.median(r[~outer]) == pytest.approx(1.5, abs=0.05)
    assert (r[outer] - 3.0).std() == pytest.approx(0.24, rel=0.15)


def test_eight_gaussians_centres():
    x = sample_density("8gaussians", 16000).double().numpy()
    angle = np.arange(8) * np.pi / 4
    centres = 4 / 1.414 * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    d = np.linalg.norm(x[:, None, :] - centres[None], axis=2)
    nearest = d.argmin(axis=1)
    assert np.abs(np.bincount(nearest, minlength=8) / len(x) - 1 / 8).max() < 0.015
    offsets = x - centres[nearest]
    assert offsets.std(axis=0) == pytest.approx([0.5 / 1.414] * 2, rel=0.05)
    for k in range(8):
        assert np.abs(offsets[nearest == k].mean(axis=0)).max() < 0.03  # centred on 4 c / 1.414


def test_circles_curves_geometry():
    points = densities_module.curve_points()
    per_spiral = densities_module.CURVES_POINTS_PER_SPIRAL
    assert points.shape == (3 * per_spiral + densities_module.CURVES_POINTS_ON_CIRCLE, 2)
    assert not points.flags.writeable and densities_module.curve_points() is points  # cached
    # The field is r' = r (1 - r^2), theta' = 1: r(t)^2 = 1 / (1 + (1/r0^2 - 1) e^{-2t}).
    t = np.linspace(0.0, densities_module.CURVES_T_END, per_spiral)
    for k, (x0, y0) in enumerate(densities_module.CURVES_STARTS):
        spiral = points[k * per_spiral:(k + 1) * per_spiral]
        r0 = math.hypot(x0, y0)
        r_exact = 1.0 / np.sqrt(1.0 + (1.0 / r0**2 - 1.0) * np.exp(-2.0 * t))
        theta_exact = math.atan2(y0, x0) + t
        exact = r_exact[:, None] * np.stack([np.cos(theta_exact), np.sin(theta_exact)], axis=1)
        np.testing.assert_allclose(spiral, exact, atol=1e-7)
    circle = points[3 * per_spiral:]
    np.testing.assert_allclose(np.linalg.norm(circle, axis=1), 2.0)

    x = sample_density("circles_curves", 20000, seed=1).double().numpy()
    distance, index = cKDTree(points).query(x)
    assert np.all(distance < 6 * densities_module.CURVES_BANDWIDTH)
    r = np.linalg.norm(x, axis=1)
    assert r.min() > 0.9 and r.max() < 2.1
    on_circle = np.mean(index >= 3 * per_spiral)
    assert 0.33 < on_circle < 0.47  # 2/5 of the mass, blurred where spirals start on it


# --------------------------------------------------------------------------- digits


def test_digits_split():
    from sklearn.datasets import load_digits

    split = digits(test_fraction=0.25, seed=0)
    assert split.x_train.shape == (1347, 1, 8, 8) and split.x_test.shape == (450, 1, 8, 8)
    assert split.x_train.dtype == torch.float32 and split.y_train.dtype == torch.int64
    assert split.num_classes == 10 and split.input_shape == (1, 8, 8)
    both = torch.cat([split.x_train, split.x_test])
    assert both.min() == 0 and both.max() == 1
    full = load_digits()
    everything = torch.from_numpy(full.images.astype(np.float32) / 16).unsqueeze(1)
    key = lambda x: sorted(row.tobytes() for row in x.reshape(len(x), -1).numpy())  # noqa: E731
    assert key(both) == key(everything)  # a partition of the 1797 images
    per_class = np.bincount(full.target, minlength=10)
    test_counts = torch.bincount(split.y_test, minlength=10).numpy()
    assert np.all(np.abs(test_counts - 0.25 * per_class) <= 1)  # stratified
    _assert_same(digits(seed=0), split)
    assert not torch.equal(digits(seed=1).y_test, split.y_test)
    assert digits(test_fraction=0.5).n_test in (898, 899)
    for bad in (0, 1, 1.5, -0.2, math.nan, "a"):
        with pytest.raises(ValueError, match="test_fraction"):
            digits(test_fraction=bad)
    with pytest.raises(ValueError, match="seed"):
        digits(seed=-1)


# --------------------------------------------------------------------------- MNIST (IDX)

MNIST_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
               "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _idx(array: np.ndarray, *, type_code: int = 0x08) -> bytes:
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _mnist_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    g = np.random.default_rng(seed)
    return {  # 4x5 images so that a rows/cols mix-up shows
        MNIST_NAMES[0]: g.integers(0, 256, (6, 4, 5)), MNIST_NAMES[1]: g.integers(0, 10, 6),
        MNIST_NAMES[2]: g.integers(0, 256, (3, 4, 5)), MNIST_NAMES[3]: g.integers(0, 10, 3),
    }


def _write_mnist(folder: Path, arrays: dict[str, np.ndarray], gz: tuple[bool, ...]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for (name, array), zipped in zip(arrays.items(), gz):
        blob = _idx(array)
        if zipped:
            (folder / (name + ".gz")).write_bytes(gzip.compress(blob))
        else:
            (folder / name).write_bytes(blob)


@pytest.mark.parametrize("gz", [(False,) * 4, (True,) * 4, (True, False, False, True)])
@pytest.mark.parametrize("sub", [".", "MNIST/raw"])
def test_mnist_reads_idx(tmp_path, gz, sub):
    arrays = _mnist_arrays()
    _write_mnist(tmp_path / sub, arrays, gz)
    split = load_mnist(tmp_path)
    images, labels = arrays[MNIST_NAMES[0]], arrays[MNIST_NAMES[1]]
    assert split.x_train.shape == (6, 1, 4, 5) and split.x_train.dtype == torch.float32
    assert split.x_test.shape == (3, 1, 4, 5) and split.num_classes == 10
    np.testing.assert_allclose(split.x_train[:, 0].numpy(), images / 255, rtol=1e-6)
    np.testing.assert_allclose(split.x_test[:, 0].numpy(), arrays[MNIST_NAMES[2]] / 255, rtol=1e-6)
    assert split.y_train.dtype == torch.int64
    assert split.y_train.tolist() == labels.tolist()
    assert split.y_test.tolist() == arrays[MNIST_NAMES[3]].tolist()
    assert 0 <= float(split.x_train.min()) and float(split.x_train.max()) <= 1


def test_mnist_missing_file(tmp_path):
    arrays = _mnist_arrays()
    _write_mnist(tmp_path, arrays, (False,) * 4)
    (tmp_path / MNIST_NAMES[2]).unlink()
    with pytest.raises(FileNotFoundError, match=MNIST_NAMES[2]) as info:
        load_mnist(tmp_path)
    for name in MNIST_NAMES:
        assert name in str(info.value)  # tells the user which files the folder must hold
    assert "t10k-images-idx3-ubyte.gz" in str(info.value)


def _break(tmp_path: Path, name: str, blob: bytes) -> None:
    _write_mnist(tmp_path, _mnist_arrays(), (False,) * 4)
    (tmp_path / name).write_bytes(blob)


@pytest.mark.parametrize("name, blob, message", [
    (MNIST_NAMES[0], _idx(np.zeros((2, 3, 4, 5))), "magic.*4 dimensions, expected 3"),
    (MNIST_NAMES[0], _idx(np.zeros((6, 4, 5)), type_code=0x0B), "magic.*element type 0x0b"),
    (MNIST_NAMES[1], b"\x12\x34" + _idx(np.zeros(6))[2:], "magic.*not an IDX"),
    (MNIST_NAMES[1], b"\x00\x00", "truncated"),
    (MNIST_NAMES[0], _idx(np.zeros((6, 4, 5)))[:10], "truncated header"),
    (MNIST_NAMES[0], _idx(np.zeros((6, 4, 5)))[:-1], "truncated.*119 follow"),
    (MNIST_NAMES[3], _idx(np.zeros(3)) + b"\x00", "1 unexpected bytes"),
    (MNIST_NAMES[0], gzip.compress(_idx(np.zeros((6, 4, 5))))[:-12], "gzip"),
    (MNIST_NAMES[0], _idx(np.zeros((0, 4, 5))), "empty"),
])
def test_mnist_malformed_file(tmp_path, name, blob, message):
    _break(tmp_path, name, blob)
    with pytest.raises(ValueError, match=message) as info:
        load_mnist(tmp_path)
    assert name in str(info.value)


def test_mnist_mismatched_counts_and_sizes(tmp_path):
    _break(tmp_path, MNIST_NAMES[1], _idx(np.zeros(5)))
    with pytest.raises(ValueError, match=r"6 images.*5 labels") as info:
        load_mnist(tmp_path)
    assert MNIST_NAMES[0] in str(info.value) and MNIST_NAMES[1] in str(info.value)
    _break(tmp_path, MNIST_NAMES[2], _idx(np.zeros((3, 5, 4))))
    with pytest.raises(ValueError, match=r"4x5.*5x4"):
        load_mnist(tmp_path)


# --------------------------------------------------------------------------- CIFAR-10 (pickle)

CIFAR_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]


def _batch(n: int, start: int) -> tuple[np.ndarray, list[int]]:
    data = np.random.default_rng(start).integers(0, 256, (n, 3072), dtype=np.uint8)
    return data, [(start + i) % 10 for i in range(n)]


def _write_cifar(folder: Path, protocol: int, n: int = 4, labels_as_array: bool = False) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for k, name in enumerate([*CIFAR_TRAIN, "test_batch"]):
        data, labels = _batch(3 if name == "test_batch" else n, 10 * k)
        labels_out = np.array(labels) if labels_as_array else labels
        blob = {b"batch_label": b"batch", b"data": data, b"labels": labels_out,
                b"filenames": [b"f.png"] * len(labels)}
        (folder / name).write_bytes(pickle.dumps(blob, protocol=protocol))
        written[name] = (data, labels)
    return written


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
@pytest.mark.parametrize("sub", [".", "cifar-10-batches-py"])
def test_cifar_reads_batches(tmp_path, protocol, sub):
    written = _write_cifar(tmp_path / sub, protocol, labels_as_array=sub == ".")
    split = load_cifar10(tmp_path)
    assert split.x_train.shape == (20, 3, 32, 32) and split.x_test.shape == (3, 3, 32, 32)
    assert split.x_train.dtype == torch.float32 and split.y_train.dtype == torch.int64
    assert split.num_classes == 10
    data = np.concatenate([written[name][0] for name in CIFAR_TRAIN])
    expected = data.reshape(20, 3, 32, 32) / 255
    np.testing.assert_allclose(split.x_train.numpy(), expected, rtol=1e-6)
    # Channel planes: the first 1024 bytes of a row are red, row-major 32x32.
    assert split.x_train[1, 0, 0, 1] == pytest.approx(data[1, 1] / 255)
    assert split.x_train[1, 1, 2, 0] == pytest.approx(data[1, 1024 + 64] / 255)
    labels = [label for name in CIFAR_TRAIN for label in written[name][1]]
    assert split.y_train.tolist() == labels
    assert split.y_test.tolist() == written["test_batch"][1]


def _py2_batch_pickle(data: np.ndarray, labels: list[int]) -> bytes:
    """A batch as Python 2's cPickle (protocol 2) wrote CIFAR-10: byte strings as
    BINSTRING, numpy 1's module names, the dtype state's byte order as a str."""

    def s(b: bytes) -> bytes:
        return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<i", len(b)) + b

    def i(v: int) -> bytes:
        return b"K" + bytes([v]) if 0 <= v < 256 else b"J" + struct.pack("<i", v)

    dtype = (b"cnumpy\ndtype\n" + s(b"u1") + i(0) + i(1) + b"\x87R"
             + b"(" + i(3) + s(b"|") + b"NNN" + i(-1) + i(-1) + i(0) + b"tb")
    array = (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + i(0) + b"\x85"
             + s(b"b") + b"\x87R" + b"(" + i(1) + b"(" + i(data.shape[0]) + i(3072) + b"t"
             + dtype + b"\x89" + s(data.tobytes()) + b"tb")
    items = s(b"data") + array + s(b"labels") + b"](" + b"".join(map(i, labels)) + b"e"
    return b"\x80\x02}(" + items + b"u."


def test_cifar_reads_python2_style_batches(tmp_path):
    written = {}
    for k, name in enumerate([*CIFAR_TRAIN, "test_batch"]):
        data, labels = _batch(2, 10 * k)
        (tmp_path / name).write_bytes(_py2_batch_pickle(data, labels))
        written[name] = (data, labels)
    split = load_cifar10(tmp_path)
    np.testing.assert_allclose(split.x_test.numpy(),
                               written["test_batch"][0].reshape(2, 3, 32, 32) / 255, rtol=1e-6)
    assert split.y_train.tolist() == [label for n in CIFAR_TRAIN for label in written[n][1]]


def test_cifar_numpy1_module_names(tmp_path):
    _write_cifar(tmp_path, protocol=2)
    for name in ("test_batch", "data_batch_2"):
        blob = (tmp_path / name).read_bytes()
        assert b"numpy._core.multiarray" in blob
        (tmp_path / name).write_bytes(blob.replace(b"numpy._core.multiarray",
                                                   b"numpy.core.multiarray"))
    assert load_cifar10(tmp_path).n_test == 3


class _Payload:
    """Unpickling this would run ``func(*args)``."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
@pytest.mark.parametrize("where", ["top", "labels"])
def test_cifar_refuses_malicious_pickle(tmp_path, protocol, where):
    _write_cifar(tmp_path, protocol=2)
    marker = tmp_path / "pwned"
    evil = _Payload(os.system, f"touch '{marker}'")
    data, _ = _batch(4, 0)
    blob = evil if where == "top" else {b"data": data, b"labels": evil}
    (tmp_path / "data_batch_3").write_bytes(pickle.dumps(blob, protocol=protocol))
    with pytest.raises(UnsafePickleError, match=r"data_batch_3.*refusing.*system"):
        load_cifar10(tmp_path)
    assert not marker.exists()


@pytest.mark.parametrize("payload", [
    _Payload(eval, "1 + 1"),
    _Payload(np.load, "x.npy"),  # numpy, but not an array constructor
    _Payload(__import__, "os"),
    _Payload(__import__("codecs").encode, "x", "rot13"),  # same global as a bytes object
])
def test_safe_unpickler_refuses_other_globals(payload, tmp_path):
    path = tmp_path / "p.pkl"
    path.write_bytes(pickle.dumps(payload, protocol=2))
    with path.open("rb") as f, pytest.raises(UnsafePickleError, match="refusing"):
        SafeUnpickler(f).load()


@pytest.mark.parametrize("content, message", [
    (pickle.dumps([1, 2, 3]), "expected a pickled dict"),
    (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)}), "missing key b'labels'"),
    (pickle.dumps({b"data": np.zeros((2, 3071), np.uint8), b"labels": [0, 1]}), r"\[N, 3072\]"),
    (pickle.dumps({b"data": np.zeros((2, 3072)), b"labels": [0, 1]}), "uint8"),
    (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}), "2 images but 1"),
    (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}), "0..9"),
    (pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": ["a", "b"]}), "integers"),
    (b"this is not a pickle", "not a valid pickle"),
    (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]})[:-30],
     "not a valid pickle"),
])
def test_cifar_malformed_batch(tmp_path, content, message):
    _write_cifar(tmp_path, protocol=2)
    (tmp_path / "test_batch").write_bytes(content)
    with pytest.raises(ValueError, match=message) as info:
        load_cifar10(tmp_path)
    assert "test_batch" in str(info.value)


def test_cifar_missing_batch(tmp_path):
    _write_cifar(tmp_path / "cifar-10-batches-py", protocol=2)
    (tmp_path / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(FileNotFoundError, match="lacks test_batch") as info:
        load_cifar10(tmp_path)
    assert "data-dir" in str(info.value)


# --------------------------------------------------------------------------- load_task


def test_load_task_generated_and_bundled():
    assert TASKS == ("spheres", "xor", "digits", "mnist", "cifar10", "cnf2d")
    _assert_same(load_task("spheres", dim=3, seed=1), spheres(dim=3, seed=1))
    assert load_task("spheres").x_train.shape == (2000, 2)
    _assert_same(load_task("xor", n_train=10, n_test=5), xor(n_train=10, n_test=5))
    cnf = load_task("cnf2d", density="rings", n_train=64, n_test=32, seed=2)
    _assert_same(cnf, density("rings", n_train=64, n_test=32, seed=2))
    assert load_task("cnf2d").x_train.shape == (10_000, 2)
    full = digits(seed=3)
    _assert_same(load_task("digits", seed=3), full)
    small = load_task("digits", n_train=100, n_test=40, seed=3)
    assert (small.n_train, small.n_test, small.num_classes) == (100, 40, 10)
    assert _rows(small.x_train) <= _rows(full.x_train)
    assert _rows(small.x_test) <= _rows(full.x_test)
    _assert_same(small, load_task("digits", n_train=100, n_test=40, seed=3))


def test_load_task_files(tmp_path):
    _write_mnist(tmp_path / "mnist", _mnist_arrays(), (True,) * 4)
    split = load_task("mnist", data_dir=str(tmp_path / "mnist"), n_train=4)
    assert (split.n_train, split.n_test, split.input_shape) == (4, 3, (1, 4, 5))
    _write_cifar(tmp_path / "cifar", protocol=2)
    assert load_task("cifar10", data_dir=tmp_path / "cifar").input_shape == (3, 32, 32)


@pytest.mark.parametrize("task, kwargs, name", [
    ("mnist", {}, "--data-dir"), ("cifar10", {}, "--data-dir"), ("imagenet", {}, "task"),
    ("spheres", dict(dim=1), "dim"), ("spheres", dict(n_train=0), "n_train"),
    ("xor", dict(n_test=-1), "n_test"), ("cnf2d", dict(density="moons"), "density"),
    ("digits", dict(n_train=5000), "n_train=5000 exceeds"), ("digits", dict(seed=-1), "seed"),
])
def test_load_task_bad_arguments(task, kwargs, name):
    with pytest.raises(ValueError, match=name):
        load_task(task, **kwargs)


def test_global_rng_state_untouched():
    np.random.seed(123)  # noqa: NPY002 - the legacy global state is what is checked
    torch.manual_seed(123)
    np_state = np.random.get_state()[1].copy()  # noqa: NPY002
    torch_state = torch.get_rng_state().clone()
    spheres(dim=3), xor(), digits(), [sample_density(name, 10) for name in DENSITIES]
    assert np.array_equal(np.random.get_state()[1], np_state)  # noqa: NPY002
    assert torch.equal(torch.get_rng_state(), torch_state)
