"""Loading a finished training run folder: its configuration, rebuilt model, data and
final solver (used by the solver-independence report and hypersolver fitting)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from ..data.split import Split
from ..nn import SolverConfig
from ..nn.odes import set_solver, solver_from_dict
from . import runs
from .config import (
    ConfigError,
    TrainConfig,
    build_solver,
    resolve_config,
)
from .tasks import build_model, load_split_checked


@dataclass
class TrainedRun:
    """A run folder's configuration, rebuilt model (eval mode), data and the solver the
    model ended training with (from the checkpoint: adaptation may have changed it)."""

    run_dir: Path
    config: TrainConfig
    model: nn.Module
    split: Split
    solver: SolverConfig


def load_run(run_dir: str | Path, *, device: str = "cpu", argument: str = "model"
             ) -> TrainedRun:
    """Rebuild the model of ``run_dir`` and load ``model.safetensors``.

    Raises ``ConfigError`` naming ``argument`` for a missing folder or file, an invalid
    configuration or weights that do not fit (``device`` for an unavailable device, the
    data argument for unreadable data files), ``CheckpointError`` naming
    ``checkpoint.pt`` when it is torn, of another format or incomplete.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(argument, f"run folder {str(run_dir)!r} does not exist")
    for name in (runs.CONFIG_FILE, runs.WEIGHTS_FILE):
        if not (run_dir / name).is_file():
            raise ConfigError(argument, f"{str(run_dir)!r} has no {name}; give a finished "
                                        f"training run folder (hyperode train --out DIR)")
    try:
        data = json.loads((run_dir / runs.CONFIG_FILE).read_text())
        if not isinstance(data, dict):
            raise ValueError(f"it holds a JSON {type(data).__name__}, not an object")
        saved = TrainConfig.from_dict(data)
        resolve_config(saved.replace(device="cpu"))
    except (ValueError, TypeError) as e:
        raise ConfigError(argument, f"{str(run_dir / runs.CONFIG_FILE)!r} is not a valid "
                                    f"training configuration ({' '.join(str(e).split())})"
                          ) from None
    cfg = resolve_config(saved.replace(device=device, resume=False, quiet=True))
    split = load_split_checked(cfg)
    solver = build_solver(cfg)
    model = build_model(cfg, split, solver)
    try:
        runs.load_weights(run_dir / runs.WEIGHTS_FILE, model)
    except Exception as e:  # a torn file or another architecture
        raise ConfigError(argument, f"cannot load {str(run_dir / runs.WEIGHTS_FILE)!r} into "
                                    f"the {cfg.task} model ({type(e).__name__}: {e})") from None
    checkpoint = run_dir / runs.CHECKPOINT_FILE
    if checkpoint.is_file():
        payload = runs.load_checkpoint(checkpoint)
        records = runs.check_train_checkpoint(payload, checkpoint)["solvers"]
        try:
            final = solver_from_dict(records[0]) if records else None
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise runs.CheckpointError(f"{str(checkpoint)!r}: its solver record is not valid "
                                       f"({type(e).__name__}: {e})") from None
        if final is not None:
            solver = final
            set_solver(model, solver)
    model.to(device).eval()
    return TrainedRun(run_dir, cfg, model, split, solver)
