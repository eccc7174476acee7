"""Task presets: the data, model, solver and optimiser settings behind ``hyperode train``.

Each preset is sized so that the default run finishes quickly on a 2-core CPU and
still shows what the task is for (measured figures in ``docs/training.md``); MNIST and
CIFAR-10 use the papers' architectures and epoch counts and are meant for a GPU
(``--device cuda``), though they run anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..data import Split, load_task
from ..nn import SolverConfig, architectures
from .config import ConfigError, TrainConfig

CLASSIFICATION = "classification"
DENSITY = "density"


@dataclass(frozen=True)
class TaskPreset:
    """Defaults of one task; field names match ``TrainConfig``'s."""

    kind: str
    models: tuple[str, ...]
    solver: SolverConfig
    iterations: int
    batch_size: int
    lr: float
    lr_min: float
    optimizer: str
    weight_decay: float
    clip: float
    eval_every: int
    eval_batch_size: int
    checkpoint_every: int
    threads: int | None = None
    needs_data_dir: bool = False
    summary: str = ""


PRESETS: dict[str, TaskPreset] = {
    "spheres": TaskPreset(
        kind=CLASSIFICATION, models=("mlp", "ott"),
        solver=SolverConfig.adaptive("dopri5", rtol=1e-3, atol=1e-3),
        iterations=600, batch_size=128, lr=1e-2, lr_min=1e-4, optimizer="adam",
        weight_decay=0.0, clip=1.0, eval_every=100, eval_batch_size=1000,
        checkpoint_every=100,
        threads=1,
        summary="concentric spheres in R^D (Ott et al.); mlp: ReLU MLP field on [x, 0, 0], "
                "ott: the paper's Conv1d block on x",
    ),
    "xor": TaskPreset(
        kind=CLASSIFICATION, models=("mlp",),
        solver=SolverConfig.adaptive("dopri5", rtol=1e-3, atol=1e-3),
        iterations=500, batch_size=128, lr=1e-2, lr_min=1e-4, optimizer="adam",
        weight_decay=0.0, clip=1.0, eval_every=100, eval_batch_size=1000,
        checkpoint_every=100,
        threads=1, summary="XOR of four Gaussian clusters, tanh MLP Neural ODE on the 2-D point",
    ),
    "digits": TaskPreset(
        kind=CLASSIFICATION, models=("conv", "ott"),
        solver=SolverConfig.fixed("rk4", num_steps=4),
        iterations=1000, batch_size=64, lr=3e-3, lr_min=1e-4, optimizer="adam",
        weight_decay=0.0, clip=1.0, eval_every=100, eval_batch_size=500,
        checkpoint_every=100,
        threads=1, summary="scikit-learn 8x8 digits, convolutional Neural ODE (16 channels)",
    ),
    "mnist": TaskPreset(
        kind=CLASSIFICATION, models=("hypersolver", "ott"),
        solver=SolverConfig.adaptive("dopri5", rtol=1e-4, atol=1e-4),
        iterations=37500, batch_size=32, lr=3e-3, lr_min=1e-4, optimizer="adam",
        weight_decay=0.0, clip=1.0, eval_every=1875, eval_batch_size=500,
        checkpoint_every=500, needs_data_dir=True,
        summary="MNIST, the hypersolver paper's Neural ODE (20 epochs, batch 32)",
    ),
    "cifar10": TaskPreset(
        kind=CLASSIFICATION, models=("hypersolver", "ott"),
        solver=SolverConfig.adaptive("dopri5", rtol=1e-4, atol=1e-4),
        iterations=31250, batch_size=32, lr=3e-3, lr_min=1e-4, optimizer="adam",
        weight_decay=0.0, clip=1.0, eval_every=1563, eval_batch_size=500,
        checkpoint_every=500, needs_data_dir=True,
        summary="CIFAR-10, the hypersolver paper's Neural ODE (20 epochs, batch 32)",
    ),
    "cnf2d": TaskPreset(
        kind=DENSITY, models=("mlp",),
        solver=SolverConfig.adaptive("dopri5", rtol=1e-4, atol=1e-4),
        iterations=1500, batch_size=256, lr=3e-3, lr_min=1e-4, optimizer="adamw",
        weight_decay=1e-6, clip=0.5, eval_every=250, eval_batch_size=2000,
        checkpoint_every=100,
        threads=1, summary="2-D density (FFJORD toys), continuous normalising flow, exact trace",
    ),
}


def load_split(cfg: TrainConfig) -> Split:
    """The task's data (``hyperode.data.load_task``)."""
    return load_task(cfg.task, dim=cfg.dim, density=cfg.density, data_dir=cfg.data_dir,
                     n_train=cfg.n_train, n_test=cfg.n_test, seed=cfg.data_seed)


def load_split_checked(cfg: TrainConfig) -> Split:
    """The task's data; a file that cannot be read or an impossible size is a
    ``ConfigError`` naming the argument (``data_dir`` for the file tasks)."""
    try:
        return load_split(cfg)
    except (OSError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        message = " ".join(str(e).split()) or type(e).__name__
        if PRESETS[cfg.task].needs_data_dir and (isinstance(e, OSError)
                                                 or str(cfg.data_dir) in str(e)):
            raise ConfigError("data_dir", message) from None
        head = message.replace("=", " ").split(" ", 1)[0]
        field = head if head in TrainConfig.__dataclass_fields__ else "task"
        raise ConfigError(field, message) from None


def build_model(cfg: TrainConfig, split: Split, solver: SolverConfig) -> nn.Module:
    """The task's model (``cfg.model`` picks the variant) with ``solver``.

    ``cfg.adjoint`` selects adjoint sensitivities; the seminorm travels in
    ``solver.adjoint_norm`` (``build_solver`` sets it).
    """
    sensitivity = "adjoint" if cfg.adjoint else "autograd"
    task, variant = cfg.task, cfg.model
    n_classes = split.num_classes or 2
    if task in ("spheres", "xor"):
        dim = split.input_shape[-1]
        if variant == "ott":
            return architectures.ott_sphere_model(dim, solver=solver, sensitivity=sensitivity)
        if task == "spheres":  # 2 zero channels: concentric shells need room to move
            return architectures.mlp_model(dim, hidden=64, out_dim=n_classes, augment=2,
                                           activation="relu", solver=solver,
                                           sensitivity=sensitivity)
        return architectures.mlp_model(dim, hidden=32, out_dim=n_classes, solver=solver,
                                       sensitivity=sensitivity)
    if task == "digits":
        if variant == "ott":
            return architectures.ott_mnist_model(solver=solver, sensitivity=sensitivity,
                                                 image_size=split.input_shape[-1])
        return architectures.digits_model(16, solver=solver, sensitivity=sensitivity,
                                          n_classes=n_classes)
    if task == "mnist":
        if variant == "ott":
            return architectures.ott_mnist_model(solver=solver, sensitivity=sensitivity)
        return architectures.hypersolver_mnist_model(solver=solver, sensitivity=sensitivity)
    if task == "cifar10":
        if variant == "ott":
            return architectures.ott_cifar_model(solver=solver, sensitivity=sensitivity)
        return architectures.hypersolver_cifar_model(solver=solver, sensitivity=sensitivity)
    if task == "cnf2d":
        return architectures.cnf_mlp(dim=split.input_shape[-1], hidden=64, solver=solver,
                                     sensitivity=sensitivity)
    raise ValueError(f"task must be one of {', '.join(PRESETS)}, got {task!r}")
