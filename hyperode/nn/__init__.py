"""Continuous-depth models: the Neural ODE module, its solver configuration, vector-field
adapters, augmentation, data control, depth-variant (Galerkin) layers, continuous
normalizing flows and the papers' architectures."""

from .architectures import (
    cnf_mlp,
    cnf_net,
    digits_model,
    hypersolver_cifar_model,
    hypersolver_mnist_model,
    mlp_model,
    ott_cifar_model,
    ott_mnist_model,
    ott_ode_block,
    ott_sphere_model,
)
from .augment import LearnedAugment, ZeroAugment
from .cnf import CNF, CNFModel, standard_normal_log_prob
from .fields import Autonomous, DataControlled, TimeConcat
from .galerkin import (
    DepthVariant,
    DepthVariantSequential,
    GalerkinConv2d,
    GalerkinLinear,
    basis_functions,
)
from .model import ContinuousDepthModel
from .node import NeuralODE
from .solver_config import SolverConfig

__all__ = [
    "CNF",
    "Autonomous",
    "CNFModel",
    "ContinuousDepthModel",
    "DataControlled",
    "DepthVariant",
    "DepthVariantSequential",
    "GalerkinConv2d",
    "GalerkinLinear",
    "LearnedAugment",
    "NeuralODE",
    "SolverConfig",
    "TimeConcat",
    "ZeroAugment",
    "basis_functions",
    "cnf_mlp",
    "cnf_net",
    "digits_model",
    "hypersolver_cifar_model",
    "hypersolver_mnist_model",
    "mlp_model",
    "ott_cifar_model",
    "ott_mnist_model",
    "ott_ode_block",
    "ott_sphere_model",
    "standard_normal_log_prob",
]
