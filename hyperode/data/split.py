"""``Split``: a dataset's training and test sets, validated on construction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True, eq=False, repr=False)
class Split:
    """Training and test sets of one dataset (CPU tensors).

    Attributes:
        x_train: inputs, floating point, ``[N_train, *input_shape]``.
        y_train: int64 class labels ``[N_train]``, or ``None`` for unlabelled data
            (the 2-D densities).
        x_test: inputs ``[N_test, *input_shape]``, same dtype as ``x_train``.
        y_test: int64 labels ``[N_test]``, or ``None`` exactly when ``y_train`` is.
        num_classes: number of classes (labels lie in ``[0, num_classes)``); ``None``
            for unlabelled data. If omitted for labelled data it is inferred as
            ``max(label) + 1``.

    Train and test never share a sample: generated sets draw them from
    independent random streams, file sets keep the official split.
    """

    x_train: Tensor
    y_train: Tensor | None
    x_test: Tensor
    y_test: Tensor | None
    num_classes: int | None = None

    def __post_init__(self) -> None:
        for name in ("x_train", "x_test"):
            x = getattr(self, name)
            if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() < 2:
                raise ValueError(f"{name} must be a floating-point tensor [N, ...], got "
                                 f"{_describe(x)}")
        if self.x_train.shape[1:] != self.x_test.shape[1:] or \
                self.x_train.dtype != self.x_test.dtype:
            raise ValueError(f"x_train {_describe(self.x_train)} and x_test "
                             f"{_describe(self.x_test)} must have the same sample shape and dtype")
        if (self.y_train is None) != (self.y_test is None):
            raise ValueError("y_train and y_test must both be tensors or both be None, got "
                             f"{_describe(self.y_train)} and {_describe(self.y_test)}")
        if self.y_train is None:
            if self.num_classes is not None:
                raise ValueError(f"num_classes must be None for unlabelled data, got "
                                 f"{self.num_classes!r}")
            return
        for xname, yname in (("x_train", "y_train"), ("x_test", "y_test")):
            x, y = getattr(self, xname), getattr(self, yname)
            if not isinstance(y, Tensor) or y.dtype != torch.int64 or y.dim() != 1 \
                    or len(y) != len(x):
                raise ValueError(f"{yname} must be an int64 tensor [{len(x)}] matching {xname}, "
                                 f"got {_describe(y)}")
        labels = torch.cat([cast(Tensor, self.y_train), cast(Tensor, self.y_test)])  # checked
        if len(labels) and int(labels.min()) < 0:
            raise ValueError(f"labels must be >= 0, got a minimum of {int(labels.min())}")
        top = int(labels.max()) + 1 if len(labels) else 0
        if self.num_classes is None:
            object.__setattr__(self, "num_classes", max(top, 1))
        elif isinstance(self.num_classes, bool) or \
                not isinstance(self.num_classes, int | np.integer) or \
                self.num_classes < max(top, 1):
            raise ValueError(f"num_classes must be an integer > every label (max {top - 1}), "
                             f"got {self.num_classes!r}")
        else:
            object.__setattr__(self, "num_classes", int(self.num_classes))

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample, e.g. ``(2,)`` for 2-D points or ``(1, 28, 28)`` for MNIST."""
        return tuple(self.x_train.shape[1:])

    @property
    def n_train(self) -> int:
        """Number of training samples."""
        return len(self.x_train)

    @property
    def n_test(self) -> int:
        """Number of test samples."""
        return len(self.x_test)

    def __repr__(self) -> str:
        return (f"Split(n_train={self.n_train}, n_test={self.n_test}, "
                f"input_shape={self.input_shape}, dtype={self.x_train.dtype}, "
                f"num_classes={self.num_classes})")


def _describe(t: object) -> str:
    if isinstance(t, Tensor):
        return f"tensor of shape {tuple(t.shape)} and dtype {t.dtype}"
    return repr(t) if t is None else type(t).__name__
