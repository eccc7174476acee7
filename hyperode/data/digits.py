"""scikit-learn's bundled 8x8 handwritten digits (UCI; no download needed).

1797 greyscale images of the digits 0-9, 8x8 pixels with integer values 0-16,
about 180 per class. A small, always-available stand-in for MNIST.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ._checks import check_real, check_seed, rng
from .split import Split


def digits(test_fraction: float = 0.25, seed: int = 0) -> Split:
    """The 8x8 digits with a stratified, seeded train/test split.

    Args:
        test_fraction: share of the images (strictly between 0 and 1) in the test set,
            taken per class (``sklearn.model_selection.train_test_split`` with
            ``stratify``), so class proportions match in both sets.
        seed: non-negative integer choosing the split.

    Returns:
        ``Split`` with x float32 ``[N, 1, 8, 8]`` in ``[0, 1]`` (pixel / 16), y int64
        ``[N]`` in 0..9, ``num_classes=10``. With the default fraction,
        1347 training and 450 test images.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    test_fraction = check_real("test_fraction", test_fraction, low=0.0, high=1.0,
                               low_open=True, high_open=True)
    seed = check_seed(seed)
    split_state = int(rng(seed, "digits").integers(0, 2**32))  # any seed, not just < 2**32
    bunch: Any = load_digits()  # a Bunch (the stubs also allow a tuple)
    x = (bunch.images.astype(np.float32) / np.float32(16.0))[:, None, :, :]
    y = bunch.target.astype(np.int64)
    try:
        x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_fraction, stratify=y,
                                                  random_state=split_state)
    except ValueError as err:  # e.g. a fraction leaving fewer test images than classes
        raise ValueError(f"test_fraction={test_fraction!r} cannot be stratified over the "
                         f"10 classes of {len(y)} images: {err}") from err
    return Split(torch.from_numpy(np.ascontiguousarray(x_tr)), torch.from_numpy(y_tr),
                 torch.from_numpy(np.ascontiguousarray(x_te)), torch.from_numpy(y_te),
                 num_classes=10)
