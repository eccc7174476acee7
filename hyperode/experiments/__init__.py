"""End-to-end pipelines behind the ``hyperode`` command.

``train`` (with ``TrainConfig``, ``Callback``, ``TrainState``) is the training loop of
every task (``hyperode train``); ``demo`` solves the reference problems
(``hyperode demo``).
"""

from .callbacks import Callback, CallbackList, TrainState
from .config import ConfigError, TrainConfig, build_solver, resolve_config
from .runs import CheckpointError, load_checkpoint, read_metrics, save_checkpoint
from .tasks import PRESETS, TaskPreset
from .train import TrainingDivergedError, TrainResult, train, versions

__all__ = [
    "PRESETS",
    "Callback",
    "CallbackList",
    "CheckpointError",
    "ConfigError",
    "TaskPreset",
    "TrainConfig",
    "TrainResult",
    "TrainState",
    "TrainingDivergedError",
    "build_solver",
    "load_checkpoint",
    "read_metrics",
    "resolve_config",
    "save_checkpoint",
    "train",
    "versions",
]
