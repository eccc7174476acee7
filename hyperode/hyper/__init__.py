"""Hypersolvers (Poli, Massaroli et al., NeurIPS 2020): a base solver plus a learned
correction ``g``, its networks, residual/trajectory/adversarial fitting and a
compiled inference path.

    hyper = HyperEuler(MLPHyperNet(state_dim=2))      # unfitted: equals Euler, bit for bit
    fit(hyper, field, [z0_batch, ...], iterations=500, num_steps=10)
    odeint(field, z0, t, method=hyper, options=dict(num_steps=10))
"""

from .fitting import (
    CLASSIFIER_TOL,
    CNF_TOL,
    Adversarial,
    FitBatch,
    FitConfig,
    FitHistory,
    MeshTargets,
    fit,
    prepare_batch,
    reference_trajectory,
    residual_loss,
    residuals,
    trajectory_loss,
    uniform_mesh,
    validation_loss,
)
from .inference import CompiledSolve, FixedGridSolve, compile_solve
from .nets import (
    ConvHyperNet,
    HyperNet,
    MLPHyperNet,
    cifar_hypernet,
    cnf_hypernet,
    mnist_hypermidpoint_net,
    mnist_hypernet,
)
from .solver import HyperEuler, HyperHeun, HyperMidpoint, HyperSolver

__all__ = [
    "CLASSIFIER_TOL",
    "CNF_TOL",
    "Adversarial",
    "CompiledSolve",
    "ConvHyperNet",
    "FitBatch",
    "FitConfig",
    "FitHistory",
    "FixedGridSolve",
    "HyperEuler",
    "HyperHeun",
    "HyperMidpoint",
    "HyperNet",
    "HyperSolver",
    "MLPHyperNet",
    "MeshTargets",
    "cifar_hypernet",
    "cnf_hypernet",
    "compile_solve",
    "fit",
    "mnist_hypermidpoint_net",
    "mnist_hypernet",
    "prepare_batch",
    "reference_trajectory",
    "residual_loss",
    "residuals",
    "trajectory_loss",
    "uniform_mesh",
    "validation_loss",
]
