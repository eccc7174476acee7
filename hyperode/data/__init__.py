"""Datasets: generated toy problems, scikit-learn's digits, and MNIST/CIFAR-10 file readers.

Everything returns a ``Split`` of CPU tensors (inputs float32, labels int64) and is
a deterministic function of its arguments (seeded ``numpy.random.Generator``
streams; global RNG state is never touched). Nothing is downloaded: MNIST and
CIFAR-10 are read from files the user already has.

=====================  =========================================================
``spheres``            Ott et al.'s concentric spheres in ``R^D`` (labels 0/1/0)
``xor``                four Gaussian clusters at ``(+-1, +-1)``, label = XOR of signs
``sample_density``     2-D CNF targets (``DENSITIES``: FFJORD's toys and the
                       hypersolvers paper's circles-and-curves), ``density`` -> Split
``digits``             sklearn's bundled 8x8 digits, stratified split
``load_mnist``         IDX files (plain or .gz)
``load_cifar10``       python pickle batches, read with a restricted unpickler
``load_task``          task name (``TASKS``) -> Split, as the CLI uses it
=====================  =========================================================
"""

from .cifar import load_cifar10
from .densities import DENSITIES, density, sample_density
from .digits import digits
from .mnist import load_mnist, read_idx
from .safe_pickle import SafeUnpickler, UnsafePickleError, safe_load
from .spheres import spheres
from .split import Split
from .tasks import TASKS, load_task, subset
from .xor import xor

__all__ = [
    "DENSITIES",
    "TASKS",
    "SafeUnpickler",
    "Split",
    "UnsafePickleError",
    "density",
    "digits",
    "load_cifar10",
    "load_mnist",
    "load_task",
    "read_idx",
    "safe_load",
    "sample_density",
    "spheres",
    "subset",
    "xor",
]
