"""End-to-end pipelines behind the ``hyperode`` command (the application layer).

``train`` (with ``TrainConfig``, ``Callback``, ``TrainState``) is the training loop of
every task (``hyperode train``); ``run_grid`` the grid search over training solvers
(``hyperode grid``); ``demo`` solves the reference problems (``hyperode demo``).
``Callback`` and ``TrainState`` are the library's (``hyperode.nn.callbacks``).
"""

from ..nn.callbacks import Callback, CallbackList, TrainState
from .config import ConfigError, TrainConfig, build_solver, resolve_config
from .grid import run_grid
from .runs import CheckpointError, load_checkpoint, read_metrics, save_checkpoint
from .tasks import PRESETS, TASKS, Task, TaskPreset, register
from .train import TrainingDivergedError, TrainResult, train, versions

__all__ = [
    "PRESETS",
    "TASKS",
    "Callback",
    "CallbackList",
    "CheckpointError",
    "ConfigError",
    "Task",
    "TaskPreset",
    "TrainConfig",
    "TrainResult",
    "TrainState",
    "TrainingDivergedError",
    "build_solver",
    "load_checkpoint",
    "read_metrics",
    "register",
    "resolve_config",
    "run_grid",
    "save_checkpoint",
    "train",
    "versions",
]
