"""``TrainConfig``: everything a training run depends on, validated, with task presets.

Fields left at ``None`` take the task's preset (``hyperode.experiments.tasks``);
``resolve_config`` fills them in and validates every field, raising ``ConfigError``
(a ``ValueError``) that names the field and the offending value. The CLI turns the
field name into its flag (``step_size`` -> ``--step-size``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, fields
from typing import Any, cast

import torch

from ..errors import ConfigError
from ..nn import SolverConfig
from ..solvers.config import method_kind
from ..solvers.methods import METHODS
from .tasks import get_task

OPTIMIZERS = ("adam", "adamw", "sgd")
DEVICES = ("cpu", "cuda")

#: Fields a resumed run may change; any other difference from the saved run is an error.
RESUME_OVERRIDABLE = frozenset({"quiet", "eval_every", "checkpoint_every", "plots", "out",
                                "resume", "device", "eval_batch_size", "threads",
                                "max_steps_per_solve"})

#: Divergence guard of training solves (``max_steps_per_solve=None``): a solve may take
#: at most ``min(MAX_STEPS_PER_SOLVE, max(NFE_EXPLOSION_FLOOR, NFE_EXPLOSION_FACTOR x the
#: most steps any earlier iteration's adaptive solve took))`` steps; before the first
#: iteration, and for fixed grids, ``MAX_STEPS_PER_SOLVE``.
MAX_STEPS_PER_SOLVE = 10_000
NFE_EXPLOSION_FACTOR = 50
NFE_EXPLOSION_FLOOR = 100


@dataclass(frozen=True)
class TrainConfig:
    """One training run. ``None`` means "the task's preset".

    Data:
        task: a registered task (``hyperode.experiments.tasks.TASKS``).
        dim: dimension of the spheres task.
        density: 2-D density of the cnf2d task (``hyperode.data.DENSITIES``).
        data_dir: folder with the MNIST / CIFAR-10 files (required for those tasks).
        n_train, n_test: sizes (generated tasks) or seeded subsets (file tasks).
        data_seed: seed of the data generator / subset (independent of ``seed``).
        model: architecture variant of the task (see ``tasks.TASKS[task].models``).
    Solver:
        method: a name in ``hyperode.METHODS``; with ``step_size`` or ``num_steps`` the
            solve runs on that fixed grid (allowed for adaptive methods too),
            otherwise adaptive methods use ``rtol``/``atol``.
        adjoint: train with the adjoint method instead of backpropagating through the
            solver; ``seminorm``: the seminorm for the adjoint's error control.
    Optimisation:
        iterations, batch_size (global, split evenly over processes), lr, lr_min (end
        of the cosine schedule), optimizer (adam, adamw, or sgd: plain SGD without
        momentum, as Ott et al. train their fixed-step MNIST models), weight_decay, clip (maximum
        gradient norm; 0 disables), seed (model initialisation, data order).
    Run:
        device (cpu, cuda; default cuda when available), threads (CPU threads of this
        process; the small tasks' presets use 1, which is several times faster than 2
        for their tiny tensors on a busy 2-core machine; ``None`` = torch's default),
        out (run folder), resume, quiet, eval_every, eval_batch_size, checkpoint_every,
        plots.
    Guards:
        max_steps_per_solve: the most steps (attempted, as ``max_num_steps`` counts
            them) one solve may take while training (forward, adjoint backward, test
            evaluation). ``None`` (default): ``MAX_STEPS_PER_SOLVE`` = 10 000, and a
            training solve of an adaptive method may also take at most
            ``NFE_EXPLOSION_FACTOR`` = 50 times the steps of the longest solve of the
            earlier iterations (at least ``NFE_EXPLOSION_FLOOR`` = 100): a diverging
            model whose NFE explodes stops within one iteration. An integer sets one
            fixed cap instead. Exceeding it stops the run (``TrainingDivergedError``)
            after writing a checkpoint of the state the failing iteration started from.
            A resumed run may change it.
    """

    task: str = "spheres"
    dim: int = 2
    density: str = "pinwheel"
    data_dir: str | None = None
    n_train: int | None = None
    n_test: int | None = None
    data_seed: int = 0
    model: str | None = None
    method: str | None = None
    step_size: float | None = None
    num_steps: int | None = None
    rtol: float | None = None
    atol: float | None = None
    adjoint: bool = False
    seminorm: bool = False
    iterations: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    lr_min: float | None = None
    optimizer: str | None = None
    weight_decay: float | None = None
    clip: float | None = None
    seed: int = 0
    device: str | None = None
    threads: int | None = None
    out: str | None = None
    resume: bool = False
    quiet: bool = False
    eval_every: int | None = None
    eval_batch_size: int | None = None
    checkpoint_every: int | None = None
    plots: bool = True
    max_steps_per_solve: int | None = None

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` applied (not re-validated; call ``resolve_config``)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of ``to_dict``; unknown keys are an error."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(unknown[0], f"unknown TrainConfig field(s) {unknown}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


# --------------------------------------------------------------------------- validation


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _require_int(cfg: TrainConfig, name: str, minimum: int) -> None:
    value = getattr(cfg, name)
    if not _is_int(value) or value < minimum:
        raise ConfigError(name, f"must be an integer >= {minimum}, got {value!r}")


def _require_real(cfg: TrainConfig, name: str, *, positive: bool) -> None:
    value = getattr(cfg, name)
    if not _is_real(value) or (value <= 0 if positive else value < 0):
        raise ConfigError(name, f"must be a finite number {'> 0' if positive else '>= 0'}, "
                                f"got {value!r}")


def resolve_config(config: TrainConfig) -> TrainConfig:
    """Fill ``None`` fields from the task's preset and validate every field.

    Raises:
        ConfigError: naming the first bad field, e.g. ``step_size: must be a finite
            number > 0, got -0.1``.
    """
    return resolve_run(config)[0]


def resolve_run(config: TrainConfig) -> tuple[TrainConfig, SolverConfig]:
    """``resolve_config`` and the training solver it validated (``build_solver`` of the
    resolved configuration), for callers that need both without building it again."""
    if not isinstance(config, TrainConfig):
        raise ValueError(f"config must be a TrainConfig, got {type(config).__name__}")
    task = get_task(config.task)
    preset = task.defaults
    filled = {f.name: getattr(preset, f.name) for f in fields(config)
              if getattr(config, f.name) is None and hasattr(preset, f.name)
              and f.name not in ("method", "step_size", "num_steps", "rtol", "atol")}
    cfg = config.replace(**filled)
    if cfg.model is None:
        cfg = cfg.replace(model=preset.models[0])

    if cfg.model not in preset.models:
        raise ConfigError("model", f"task {cfg.task!r} has models {', '.join(preset.models)}; "
                                   f"got {cfg.model!r}")
    _require_int(cfg, "dim", task.min_dim)
    if task.densities is not None and cfg.density not in task.densities:
        raise ConfigError("density", f"must be one of {', '.join(task.densities)}, got "
                                     f"{cfg.density!r}")
    if task.needs_data_dir and cfg.data_dir is None:
        raise ConfigError("data_dir", f"task {cfg.task!r} reads the dataset from files you "
                                      f"already have (nothing is downloaded): give the folder "
                                      f"holding them")
    for name in ("n_train", "n_test"):
        if getattr(cfg, name) is not None:
            _require_int(cfg, name, 1)
    for name in ("data_seed", "seed"):
        _require_int(cfg, name, 0)
    for name in ("iterations", "batch_size", "eval_every", "eval_batch_size",
                 "checkpoint_every"):
        _require_int(cfg, name, 1)
    if cfg.threads is not None:
        _require_int(cfg, "threads", 1)
    if cfg.max_steps_per_solve is not None:
        _require_int(cfg, "max_steps_per_solve", 1)
    _require_real(cfg, "lr", positive=True)
    _require_real(cfg, "lr_min", positive=False)
    if cast(float, cfg.lr_min) > cast(float, cfg.lr):  # both checked real just above
        raise ConfigError("lr_min", f"must not exceed lr={cfg.lr!r}, got {cfg.lr_min!r}")
    if cfg.optimizer not in OPTIMIZERS:
        raise ConfigError("optimizer", f"must be one of {', '.join(OPTIMIZERS)}, got "
                                       f"{cfg.optimizer!r}")
    _require_real(cfg, "weight_decay", positive=False)
    _require_real(cfg, "clip", positive=False)
    cfg = cfg.replace(device=_resolve_device(cfg.device))
    if cfg.seminorm and not cfg.adjoint:
        raise ConfigError("seminorm", "applies only to the adjoint's backward solve: set "
                                      "adjoint=True (--adjoint)")
    return cfg, build_solver(cfg)  # the solver validates method / grid / tolerances


def _resolve_device(device: str | None) -> str:
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in DEVICES:
        raise ConfigError("device", f"must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", "is 'cuda' but torch.cuda.is_available() is False (no GPU "
                                    "or a CPU-only torch build); use cpu")
    return device


def build_solver(cfg: TrainConfig) -> SolverConfig:
    """The training solver: the preset's, with the config's solver fields applied.

    - ``method`` given: the grid comes only from ``step_size`` / ``num_steps`` (a fixed
      method needs one; an adaptive one without them runs adaptively at ``rtol`` /
      ``atol``, default the preset's tolerances).
    - ``method`` not given: the preset's method, its grid unless ``step_size`` /
      ``num_steps`` replace it, its tolerances unless ``rtol`` / ``atol`` do.
    - ``adjoint`` with ``seminorm``: ``adjoint_norm="seminorm"``.
    """
    preset: SolverConfig = get_task(cfg.task).preset.solver
    if cfg.step_size is not None and cfg.num_steps is not None:
        raise ConfigError("num_steps", f"give step_size or num_steps, not both (got "
                                       f"step_size={cfg.step_size!r}, num_steps="
                                       f"{cfg.num_steps!r})")
    if cfg.step_size is not None and (not _is_real(cfg.step_size) or cfg.step_size <= 0):
        raise ConfigError("step_size", f"must be a finite number > 0, got {cfg.step_size!r}")
    if cfg.num_steps is not None and (not _is_int(cfg.num_steps) or cfg.num_steps < 1):
        raise ConfigError("num_steps", f"must be an integer >= 1, got {cfg.num_steps!r}")
    for name in ("rtol", "atol"):
        value = getattr(cfg, name)
        if value is not None and (not _is_real(value) or value <= 0):
            raise ConfigError(name, f"must be a finite number > 0, got {value!r}")
    if cfg.method is not None:
        if cfg.method not in METHODS:
            raise ConfigError("method", f"must be one of {', '.join(METHODS)}, got "
                                        f"{cfg.method!r}")
        if method_kind(cfg.method) == "fixed" and cfg.step_size is None \
                and cfg.num_steps is None:
            raise ConfigError("method", f"{cfg.method!r} is a fixed-step method: give "
                                        f"step_size (--step-size) or num_steps (--num-steps)")
        grid = {"step_size": cfg.step_size, "num_steps": cfg.num_steps}
        method = cfg.method
    else:
        method = preset.method
        if cfg.step_size is not None or cfg.num_steps is not None:
            grid = {"step_size": cfg.step_size, "num_steps": cfg.num_steps}
        else:
            grid = {"step_size": preset.step_size, "num_steps": preset.num_steps}
    fixed = grid["step_size"] is not None or grid["num_steps"] is not None
    for name in ("rtol", "atol"):
        if fixed and getattr(cfg, name) is not None:
            on = ", ".join(f"{k}={v}" for k, v in grid.items() if v is not None)
            raise ConfigError(name, f"applies to adaptive solves, but this one runs on a fixed "
                                    f"grid ({method}, {on})")
    try:
        return SolverConfig(
            method=method,
            rtol=preset.rtol if cfg.rtol is None else cfg.rtol,
            atol=preset.atol if cfg.atol is None else cfg.atol,
            step_size=grid["step_size"], num_steps=grid["num_steps"],
            adjoint_norm="seminorm" if cfg.seminorm else None,
        )
    except ValueError as e:
        raise ConfigError("method", str(e)) from None


def check_resume_compatible(saved: TrainConfig, requested: TrainConfig) -> TrainConfig:
    """The configuration a resumed run continues with.

    Fields of ``requested`` left at their defaults take the saved values; fields in
    ``RESUME_OVERRIDABLE`` may change; any other difference is a ``ConfigError``
    (resuming continues the saved run; start a new one to change it).
    """
    defaults = TrainConfig()
    merged = saved.to_dict()
    if requested.task != saved.task:
        raise ConfigError("task", f"is {requested.task!r} but the run being resumed trained "
                                  f"{saved.task!r}")
    for f in fields(TrainConfig):
        value = getattr(requested, f.name)
        if value == getattr(defaults, f.name) or value == merged[f.name]:
            continue
        if f.name in RESUME_OVERRIDABLE:
            merged[f.name] = value
            continue
        raise ConfigError(f.name, f"is {value!r} but the run being resumed used "
                                  f"{merged[f.name]!r}; a resumed run continues its saved "
                                  f"configuration (start a new run to change it)")
    merged["resume"] = True
    return TrainConfig.from_dict(merged)
