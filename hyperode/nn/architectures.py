"""The papers' models as named constructors.

Every constructor takes the ``solver`` (a ``SolverConfig``) and the
``sensitivity``; the solver can be swapped afterwards through ``model.node``.

Hypersolvers (Poli et al. 2020; DiffEqML/diffeqml-research notebooks):
    ``hypersolver_mnist_model``, ``hypersolver_cifar_model``, ``cnf_mlp``.
"ResNet after all?" (Ott et al. 2021): ``ott_ode_block``, ``ott_sphere_model``,
    ``ott_mnist_model``, ``ott_cifar_model``.
Small CPU defaults: ``digits_model`` (8x8 digits), ``mlp_model`` (spheres, XOR).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import TypeVar

from torch import nn

from ..checks import check_positive_int
from .augment import LearnedAugment, ZeroAugment
from .cnf import CNF, CNFModel
from .fields import Autonomous, TimeConcat
from .model import ContinuousDepthModel
from .node import NeuralODE
from .solver_config import SolverConfig

_ACTIVATIONS = {"softplus": nn.Softplus, "tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU}


def _activation(owner: str, name: str) -> nn.Module:
    if name not in _ACTIVATIONS:
        raise ValueError(f"{owner}: activation must be one of {sorted(_ACTIVATIONS)}, "
                         f"got {name!r}")
    return _ACTIVATIONS[name]()


def _conv_field(channels: Sequence[int]) -> nn.Sequential:
    """3x3 convolutions (padding 1) through ``channels`` with Softplus in between."""
    layers: list[nn.Module] = []
    for i, (c_in, c_out) in enumerate(itertools.pairwise(channels)):
        if i:
            layers.append(nn.Softplus())
        layers.append(nn.Conv2d(c_in, c_out, 3, padding=1))
    return nn.Sequential(*layers)


def _mlp(owner: str, widths: Sequence[int], activation: str) -> nn.Sequential:
    """Linear layers through ``widths`` with ``activation`` in between."""
    layers: list[nn.Module] = []
    for i, (w_in, w_out) in enumerate(itertools.pairwise(widths)):
        if i:
            layers.append(_activation(owner, activation))
        layers.append(nn.Linear(w_in, w_out))
    return nn.Sequential(*layers)


def _classifier(pool: int, channels: int, n_classes: int) -> nn.Sequential:
    return nn.Sequential(nn.AdaptiveAvgPool2d(pool), nn.Flatten(),
                         nn.Linear(channels * pool * pool, n_classes))


# ---------------------------------------------------------------------- hypersolver paper


def hypersolver_mnist_model(solver: SolverConfig = SolverConfig(),  # noqa: B008
                            sensitivity: str = "autograd") -> ContinuousDepthModel:
    """The hypersolver paper's MNIST Neural ODE.

    ``[B, 1, 28, 28]`` -> BatchNorm2d(1) -> ``[x, Conv(1->31, 3x3)(x)]`` ``[B, 32, 28, 28]``
    -> ODE with ``f = Conv 32->46->46->32`` (3x3, padding 1, Softplus) over s in [0, 1]
    -> AdaptiveAvgPool2d(1) -> Linear(32, 10) -> ``[B, 10]``.
    """
    input_map = nn.Sequential(nn.BatchNorm2d(1),
                              LearnedAugment(nn.Conv2d(1, 31, 3, padding=1)))
    node = NeuralODE(Autonomous(_conv_field((32, 46, 46, 32))), (0.0, 1.0), solver,
                     sensitivity)
    return ContinuousDepthModel(input_map, node, _classifier(1, 32, 10))


def hypersolver_cifar_model(solver: SolverConfig = SolverConfig(),  # noqa: B008
                            sensitivity: str = "autograd") -> ContinuousDepthModel:
    """The hypersolver paper's CIFAR-10 Neural ODE.

    ``[B, 3, 32, 32]`` -> BatchNorm2d(3) -> Conv(3->20, 3x3) ``[B, 20, 32, 32]`` -> ODE with
    ``f = Conv 20->50->50->20`` (3x3, padding 1, Softplus) -> AdaptiveAvgPool2d(2)
    -> Linear(80, 10) -> ``[B, 10]``.
    """
    input_map = nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 20, 3, padding=1))
    node = NeuralODE(Autonomous(_conv_field((20, 50, 50, 20))), (0.0, 1.0), solver,
                     sensitivity)
    return ContinuousDepthModel(input_map, node, _classifier(2, 20, 10))


def cnf_net(dim: int = 2, hidden: int = 128, n_hidden: int = 3,
            activation: str = "softplus", time_input: bool = True) -> nn.Module:
    """The CNF's flow network ``net(t, z)``, ``[B, dim] -> [B, dim]``: an MLP with
    ``n_hidden`` hidden layers of width ``hidden``; with ``time_input`` it reads
    ``[z, t]`` (``dim + 1`` inputs, ``TimeConcat``), otherwise ``z`` alone."""
    owner = "cnf_net"
    dim = check_positive_int(owner, "dim", dim)
    hidden = check_positive_int(owner, "hidden", hidden)
    n_hidden = check_positive_int(owner, "n_hidden", n_hidden)
    _activation(owner, activation)
    mlp = _mlp(owner, [dim + int(bool(time_input)), *([hidden] * n_hidden), dim], activation)
    return TimeConcat(mlp) if time_input else Autonomous(mlp)


def cnf_mlp(dim: int = 2, hidden: int = 128, n_hidden: int = 3, activation: str = "softplus",
            time_input: bool = True, trace: str = "exact", noise: str = "gaussian",
            t_span: Sequence[float] = (0.0, 1.0),
            solver: SolverConfig = SolverConfig(rtol=1e-5, atol=1e-5),  # noqa: B008
            sensitivity: str = "autograd", seminorm: bool = False) -> CNFModel:
    """A 2-D (or ``dim``-D) FFJORD density model: ``CNFModel(CNF(cnf_net(...)))``.

    The hypersolver paper's density model is 2 -> 128 x 4 -> 2 with Softplus and an
    exact trace, solved at 1e-5; ``n_hidden=3`` follows the paper's "three-layer"."""
    net = cnf_net(dim, hidden, n_hidden, activation, time_input)
    return CNFModel(CNF(net, trace=trace, noise=noise), t_span, solver, sensitivity, seminorm,
                    dim=dim)


# ---------------------------------------------------------------------- Ott et al.


_ModuleT = TypeVar("_ModuleT", bound=nn.Module)


def _kaiming(module: _ModuleT) -> _ModuleT:
    """Kaiming-normal (fan-in) weights and zero biases for every conv and linear layer."""
    for m in module.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


def ott_ode_block(channels: int, conv: str = "1d", in_channels: int = 1) -> nn.Sequential:
    """Ott et al.'s ODE block (a plain module ``z -> dz/ds``, wrap with ``Autonomous``).

    Conv(in->c, k=1) -> ReLU -> Conv(c->c, k=3, padding 1) -> ReLU -> Conv(c->in, k=1),
    Kaiming-normal weights, zero biases. ``conv="1d"``: ``[B, in, D]`` states;
    ``"2d"``: ``[B, in, H, W]``.
    """
    channels = check_positive_int("ott_ode_block", "channels", channels)
    in_channels = check_positive_int("ott_ode_block", "in_channels", in_channels)
    if conv not in ("1d", "2d"):
        raise ValueError(f"ott_ode_block: conv must be '1d' or '2d', got {conv!r}")
    layer = nn.Conv1d if conv == "1d" else nn.Conv2d
    block = nn.Sequential(layer(in_channels, channels, 1), nn.ReLU(),
                          layer(channels, channels, 3, padding=1), nn.ReLU(),
                          layer(channels, in_channels, 1))
    return _kaiming(block)


def _ott_model(block: nn.Module, features: int, n_classes: int, solver: SolverConfig,
               sensitivity: str, input_map: nn.Module | None = None) -> ContinuousDepthModel:
    node = NeuralODE(Autonomous(block), (0.0, 1.0), solver, sensitivity)
    head = _kaiming(nn.Sequential(nn.Flatten(), nn.Linear(features, n_classes)))
    return ContinuousDepthModel(input_map or nn.Identity(), node, head)


def ott_sphere_model(dim: int, solver: SolverConfig = SolverConfig(),  # noqa: B008
                     sensitivity: str = "autograd") -> ContinuousDepthModel:
    """Ott et al.'s spheres classifier: data ``[B, dim]`` viewed as the state
    ``[B, 1, dim]`` (no learned input map), ODE block with Conv1d and 32 channels,
    Flatten -> Linear(dim, 2) -> ``[B, 2]``."""
    dim = check_positive_int("ott_sphere_model", "dim", dim)
    return _ott_model(ott_ode_block(32, "1d"), dim, 2, solver, sensitivity,
                      input_map=nn.Unflatten(1, (1, dim)))


def ott_mnist_model(solver: SolverConfig = SolverConfig(),  # noqa: B008
                    sensitivity: str = "autograd", image_size: int = 28
                    ) -> ContinuousDepthModel:
    """Ott et al.'s MNIST model: state ``[B, 1, 28, 28]``, ODE block with Conv2d and 96
    channels, Flatten -> Linear(784, 10). ``image_size=8`` fits the 8x8 digits."""
    size = check_positive_int("ott_mnist_model", "image_size", image_size)
    return _ott_model(ott_ode_block(96, "2d"), size * size, 10, solver, sensitivity)


def ott_cifar_model(solver: SolverConfig = SolverConfig(),  # noqa: B008
                    sensitivity: str = "autograd") -> ContinuousDepthModel:
    """Ott et al.'s CIFAR-10 model: state ``[B, 3, 32, 32]``, ODE block with Conv2d
    (3 -> 128 -> 128 -> 3 channels), Flatten -> Linear(3072, 10)."""
    return _ott_model(ott_ode_block(128, "2d", in_channels=3), 3 * 32 * 32, 10, solver,
                      sensitivity)


# ---------------------------------------------------------------------- small CPU models


def digits_model(channels: int = 16, solver: SolverConfig = SolverConfig(),  # noqa: B008
                 sensitivity: str = "autograd", n_classes: int = 10) -> ContinuousDepthModel:
    """A small convolutional Neural ODE for scikit-learn's 8x8 digits.

    ``[B, 1, 8, 8]`` -> Conv(1->C, 3x3) ``[B, C, 8, 8]`` -> ODE with
    ``f = Conv C->C->C`` (3x3, padding 1, Softplus) -> AdaptiveAvgPool2d(2)
    -> Linear(4C, n_classes). Pooling to 2x2 keeps coarse position, which the
    8x8 digits need (a global average loses it).
    """
    c = check_positive_int("digits_model", "channels", channels)
    n_classes = check_positive_int("digits_model", "n_classes", n_classes)
    node = NeuralODE(Autonomous(_conv_field((c, c, c))), (0.0, 1.0), solver, sensitivity)
    return ContinuousDepthModel(nn.Conv2d(1, c, 3, padding=1), node,
                                _classifier(2, c, n_classes))


def mlp_model(in_dim: int, hidden: int = 32, out_dim: int = 2, augment: int = 0,
              n_layers: int = 2, activation: str = "tanh",
              solver: SolverConfig = SolverConfig(),  # noqa: B008
              sensitivity: str = "autograd", time_input: bool = False) -> ContinuousDepthModel:
    """A vector-state Neural ODE classifier (spheres, XOR).

    ``[B, in_dim]`` (or ``[B, 1, in_dim]``, flattened) -> ``[x, 0]`` with ``augment``
    zeros ``[B, d]``, ``d = in_dim + augment`` -> ODE with an MLP field
    ``d -> hidden (x n_layers) -> d`` -> Linear(d, out_dim).
    """
    owner = "mlp_model"
    in_dim = check_positive_int(owner, "in_dim", in_dim)
    hidden = check_positive_int(owner, "hidden", hidden)
    out_dim = check_positive_int(owner, "out_dim", out_dim)
    n_layers = check_positive_int(owner, "n_layers", n_layers)
    if isinstance(augment, bool) or not isinstance(augment, int) or augment < 0:
        raise ValueError(f"{owner}: augment must be an int >= 0, got {augment!r}")
    _activation(owner, activation)
    d = in_dim + augment
    mlp = _mlp(owner, [d + int(bool(time_input)), *([hidden] * n_layers), d], activation)
    field = TimeConcat(mlp) if time_input else Autonomous(mlp)
    input_map = nn.Sequential(nn.Flatten(), ZeroAugment(augment)) if augment else nn.Flatten()
    node = NeuralODE(field, (0.0, 1.0), solver, sensitivity)
    return ContinuousDepthModel(input_map, node, nn.Linear(d, out_dim))
