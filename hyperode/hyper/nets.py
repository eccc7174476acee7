"""Networks ``g(eps, t, y, dy)`` for hypersolvers, and the papers' architectures.

``g`` sees the step ``eps``, the step's start time ``t`` (0-dim tensors), the state
``y`` and its derivative ``dy = f(t, y)`` (the base's first stage) and returns a
correction of ``y``'s shape (``hyperode.hyper.HyperSolver``). Two families:

- ``MLPHyperNet`` for vector states ``[B, D]`` (or tuples of ``[B, ...]`` members, e.g.
  a CNF's ``(z [B, d], logp [B, 1])``): an MLP over the per-sample concatenation
  ``[y, dy, eps, (t), (x)]``.
- ``ConvHyperNet`` for image states ``[B, C, H, W]``: 3x3 convolutions (padding 1) over
  the channel concatenation ``[y, dy, eps * 1]`` (``(t * 1)`` optional), as in the
  paper's notebooks (no ``s`` or ``x`` input there).

The last layer is zero-initialised by default, so an unfitted hypersolver *is* its
base solver, bit for bit (``g`` returns exact zeros), and fitting starts from it.

Conditioning on data ``x`` (eq. 5's ``g(eps, s, x, z)``): a net built with
``x_dim > 0`` reads ``x`` (``[B, x_dim]``) set by ``with net.conditioned(x): ...``;
``hyperode.hyper.fit`` sets it to the batch's initial state, as the reference CNF
HyperHeun does (its ``z0`` plays the role of ``x``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from ..checks import check_positive_int
from ..solvers.problem import State

ACTIVATIONS = {"prelu": nn.PReLU, "relu": nn.ReLU, "softplus": nn.Softplus, "tanh": nn.Tanh,
               "elu": nn.ELU}


def _activation(owner: str, name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"{owner}: activation must be one of {sorted(ACTIVATIONS)}, "
                         f"got {name!r}")
    return ACTIVATIONS[name]()


def _widths(owner: str, hidden: Sequence[int]) -> list[int]:
    try:
        widths = list(hidden)
    except TypeError:
        raise ValueError(f"{owner}: hidden must be a sequence of ints, got {hidden!r}") from None
    for w in widths:
        check_positive_int(owner, "every hidden width", w)
    return widths


def per_sample(state: State) -> Tensor:
    """``[B, n]``: each sample's state flattened (tuple members concatenated in order);
    every member must be batched along dim 0 with the same ``B``."""
    members = state if isinstance(state, tuple) else (state,)
    b = members[0].shape[0] if members[0].ndim else 1
    for m in members:
        if m.ndim == 0 or m.shape[0] != b:
            raise ValueError(f"states must be batched along dim 0 with one batch size; got "
                             f"shapes {[tuple(x.shape) for x in members]}")
    if b == 0:
        raise ValueError(f"states must hold at least one sample (dim 0 >= 1); got shapes "
                         f"{[tuple(x.shape) for x in members]}")
    flat = [m.reshape(b, -1) for m in members]
    return flat[0] if len(flat) == 1 else torch.cat(flat, dim=1)


def from_per_sample(flat: Tensor, like: State) -> State:
    """Inverse of ``per_sample``: ``[B, n]`` back to ``like``'s structure and shapes."""
    if not isinstance(like, tuple):
        return flat.reshape(like.shape)
    sizes = [m[0].numel() for m in like]
    return tuple(p.reshape(m.shape) for p, m in zip(flat.split(sizes, dim=1), like))


class HyperNet(nn.Module):
    """Common ground of the hypersolver networks: optional conditioning on data ``x``
    and the zero-initialised last layer. Subclasses implement ``forward(eps, t, y, dy)``.
    """

    def __init__(self, x_dim: int = 0):
        super().__init__()
        self.x_dim = check_positive_int(type(self).__name__, "x_dim", x_dim, minimum=0)
        self._x: Tensor | None = None

    @property
    def needs_x(self) -> bool:
        """Whether ``forward`` reads conditioning data (set with ``conditioned``)."""
        return self.x_dim > 0

    @contextmanager
    def conditioned(self, x: Tensor) -> Iterator[HyperNet]:
        """Inside the block ``forward`` reads ``x`` (``[B, x_dim]``, or any ``[B, ...]``
        with ``x_dim`` features per sample)."""
        if not isinstance(x, Tensor):
            raise ValueError(f"{type(self).__name__}.conditioned: x must be a tensor, "
                             f"got {type(x).__name__}")
        previous, self._x = self._x, x
        try:
            yield self
        finally:
            self._x = previous

    def _x_features(self, batch: int) -> Tensor:
        owner = type(self).__name__
        if self._x is None:
            raise ValueError(f"{owner} was built with x_dim={self.x_dim} and reads data x: "
                             f"call it inside `with net.conditioned(x): ...`")
        x = self._x.reshape(self._x.shape[0], -1) if self._x.ndim else self._x
        if x.shape != (batch, self.x_dim):
            raise ValueError(f"{owner}: x has {tuple(self._x.shape)} but the state batch is "
                             f"{batch} with x_dim={self.x_dim} features expected")
        return x

    @staticmethod
    def _zero_last(layers: Sequence[nn.Module]) -> None:
        last = [m for m in layers if isinstance(m, (nn.Linear, nn.Conv2d))][-1]
        nn.init.zeros_(last.weight)
        if last.bias is not None:
            nn.init.zeros_(last.bias)


class MLPHyperNet(HyperNet):
    """``g`` for vector states: an MLP over ``[y, dy, eps, (t), (x)]`` per sample.

    Args:
        state_dim: features per sample ``n`` (``D`` for ``[B, D]``; the sum over a tuple
            state's members, e.g. ``d + 1`` for a CNF's ``(z, logp)``).
        hidden: hidden widths (``(64, 64)``: ``Linear(in, 64) -> act -> Linear(64, 64)
            -> act -> Linear(64, n)``).
        activation: ``"prelu"`` (default, as the papers' g), ``"relu"``, ``"softplus"``,
            ``"tanh"``, ``"elu"``.
        time_input: also read ``t`` (needed when ``f`` depends on depth, e.g. Galerkin
            layers).
        x_dim: features of conditioning data ``x`` (0: none); see ``HyperNet``.
        zero_init: zero the last layer (an unfitted hypersolver equals its base).

    Shapes: ``y``, ``dy``: ``[B, ...]`` (or tuples of such) with ``state_dim`` features
    per sample; input width ``2 * state_dim + 1 + time_input + x_dim``; returns ``y``'s
    structure.
    """

    def __init__(self, state_dim: int, hidden: Sequence[int] = (64, 64),
                 activation: str = "prelu", *, time_input: bool = False, x_dim: int = 0,
                 zero_init: bool = True):
        super().__init__(x_dim)
        owner = "MLPHyperNet"
        self.state_dim = check_positive_int(owner, "state_dim", state_dim)
        self.time_input = bool(time_input)
        _activation(owner, activation)
        in_dim = 2 * state_dim + 1 + int(self.time_input) + self.x_dim
        widths = [in_dim, *_widths(owner, hidden), state_dim]
        layers: list[nn.Module] = []
        for i, (w_in, w_out) in enumerate(itertools.pairwise(widths)):
            if i:
                layers.append(_activation(owner, activation))
            layers.append(nn.Linear(w_in, w_out))
        if zero_init:
            self._zero_last(layers)
        self.net = nn.Sequential(*layers)

    def forward(self, eps: Tensor, t: Tensor, y: State, dy: State) -> State:
        z, dz = per_sample(y), per_sample(dy)
        if z.shape[1] != self.state_dim:
            raise ValueError(f"MLPHyperNet was built for state_dim={self.state_dim} but the "
                             f"state has {z.shape[1]} features per sample")
        b = z.shape[0]
        parts = [z, dz, eps.reshape(1, 1).expand(b, 1)]
        if self.time_input:
            parts.append(t.reshape(1, 1).expand(b, 1))
        if self.x_dim:
            parts.append(self._x_features(b).to(z.dtype))
        return from_per_sample(self.net(torch.cat(parts, dim=1)), y)


class ConvHyperNet(HyperNet):
    """``g`` for image states: convolutions over ``[y, dy, eps * 1, (t * 1)]``.

    Args:
        channels: state channels ``C`` (input ``2C + 1`` channels, ``+1`` with
            ``time_input``; output ``C``).
        hidden: hidden channel widths; ``(32, 32)`` gives ``Conv(2C+1 -> 32) -> act ->
            Conv(32 -> 32) -> act -> Conv(32 -> C)``.
        activation: as for ``MLPHyperNet`` (default ``"prelu"``).
        kernel_size: odd kernel size (default 3; padding keeps ``H x W``).
        time_input, zero_init: as for ``MLPHyperNet``.

    Shapes: ``y``, ``dy``: ``[B, C, H, W]`` -> ``[B, C, H, W]``.
    """

    def __init__(self, channels: int, hidden: Sequence[int] = (32, 32),
                 activation: str = "prelu", *, kernel_size: int = 3, time_input: bool = False,
                 zero_init: bool = True):
        super().__init__(0)
        owner = "ConvHyperNet"
        self.channels = check_positive_int(owner, "channels", channels)
        k = check_positive_int(owner, "kernel_size", kernel_size)
        if k % 2 == 0:
            raise ValueError(f"ConvHyperNet: kernel_size must be odd (same-size padding), "
                             f"got {k}")
        self.time_input = bool(time_input)
        _activation(owner, activation)
        widths = [2 * channels + 1 + int(self.time_input), *_widths(owner, hidden), channels]
        layers: list[nn.Module] = []
        for i, (c_in, c_out) in enumerate(itertools.pairwise(widths)):
            if i:
                layers.append(_activation(owner, activation))
            layers.append(nn.Conv2d(c_in, c_out, k, padding=k // 2))
        if zero_init:
            self._zero_last(layers)
        self.net = nn.Sequential(*layers)

    def forward(self, eps: Tensor, t: Tensor, y: Tensor, dy: Tensor) -> Tensor:
        if not isinstance(y, Tensor) or y.ndim != 4 or y.shape[1] != self.channels:
            shape = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
            raise ValueError(f"ConvHyperNet expects states [B, {self.channels}, H, W], "
                             f"got {shape}")
        b, _, h, w = y.shape
        parts = [y, dy, eps.reshape(1, 1, 1, 1).expand(b, 1, h, w)]
        if self.time_input:
            parts.append(t.reshape(1, 1, 1, 1).expand(b, 1, h, w))
        return self.net(torch.cat(parts, dim=1))


# ---------------------------------------------------------------------- the papers' g


def mnist_hypernet() -> ConvHyperNet:
    """The paper's MNIST HyperEuler g (state ``[B, 32, 28, 28]``): Conv 65->32 -> PReLU
    -> 32->32 -> PReLU -> 32->32, 3x3, padding 1; input ``[z (32), dz (32), eps (1)]``."""
    return ConvHyperNet(32, (32, 32), "prelu")


def mnist_hypernet_two_layer() -> ConvHyperNet:
    """The paper's text's MNIST HyperEuler g ("a two-layer CNN with PReLU") with the
    widths of its code (state ``[B, 32, 28, 28]``): Conv 65->32 -> PReLU -> 32->32, 3x3,
    padding 1; input ``[z (32), dz (32), eps (1)]``.

    Per 28x28 sample and call: 784 * 9 * (65 * 32 + 32 * 32) = 21.9M MACs, 0.61x the
    35.7M of ``hypersolver_mnist_model``'s ``f`` -- the paper's stated 0.02 and 0.04 GMAC
    after rounding. ``mnist_hypernet`` (the notebook's three layers) costs 29.1M, 0.82x.
    """
    return ConvHyperNet(32, (32,), "prelu")


def cifar_hypernet() -> ConvHyperNet:
    """The paper's CIFAR-10 HyperEuler g (state ``[B, 20, 32, 32]``): Conv 41->32 ->
    PReLU -> 32->32 -> PReLU -> 32->20; input ``[z (20), dz (20), eps (1)]``."""
    return ConvHyperNet(20, (32, 32), "prelu")


def mnist_hypermidpoint_net() -> ConvHyperNet:
    """The MNIST HyperMidpoint g of ``hypermidpoint_mnist.ipynb``: Conv 65->92 -> ReLU
    -> 92->32 (3x3, padding 1)."""
    return ConvHyperNet(32, (92,), "relu")


def cnf_hypernet(dim: int = 2, hidden: int = 64, x_input: bool = True) -> MLPHyperNet:
    """The CNF HyperHeun g, adapted to hyperode's CNF state ``(z [B, dim], logp [B, 1])``.

    ``Linear(in -> 64) -> PReLU -> Linear(64 -> 64) -> PReLU -> Linear(64 -> dim + 1)``,
    last layer zero-initialised. Inputs per sample: ``[z, logp]`` (``dim + 1``), their
    derivatives ``[dz, dlogp]`` (``dim + 1``), ``eps`` (1) and, with ``x_input``, the
    initial state ``[z0, logp0]`` (``dim + 1``; ``fit`` sets it): 10 inputs for
    ``dim = 2``. The reference (DiffEqML ``density_estimation``, state ``(logp, z)``)
    has 13 inputs: it also feeds Heun's second stage ``k2``, which hyperode's
    ``g(eps, t, y, dy)`` does not receive (only the first stage is reused, so ``g``
    adds no ``f`` evaluation and works with any base).
    """
    dim = check_positive_int("cnf_hypernet", "dim", dim)
    hidden = check_positive_int("cnf_hypernet", "hidden", hidden)
    return MLPHyperNet(dim + 1, (hidden, hidden), "prelu",
                       x_dim=(dim + 1) if x_input else 0)
