"""Hooks into a training loop of continuous-depth models, and the state they see.

The library defines the hooks; ``hyperode.experiments.train`` is the loop that calls
them (re-exported there as ``hyperode.experiments.Callback``), and the ODE-ness
adaptation callbacks of ``hyperode.adapt`` are built on them. A loop of your own can
call them too: build a ``TrainState`` and call the hooks at the points below.

A callback subclasses ``Callback`` and overrides any of::

    on_train_start(state)            after set-up (and after loading a checkpoint)
    on_after_backward(state)         gradients are ready, the optimiser has not stepped
    on_iteration_end(state)          the optimiser has stepped; state.metrics is this
                                     iteration's record
    on_evaluate(state, metrics)      after each evaluation on the test split
    on_train_end(state)              after the last iteration (also when stopped early)

Between iterations a callback may change the solver of the model's Neural ODEs with
``state.set_solver(cfg)``; the next iteration trains with it, and every record in
``metrics.jsonl`` names the solver its iteration used. ``state.evaluate(batch, solver)``
measures loss/accuracy (or NLL) and NFE on a batch with any solver, without gradients
and without disturbing the model's solver, mode or the training RNG streams — the
solver-independence check of Ott et al. is ``state.evaluate(state.batch, test_solver)``.

Callbacks that keep state across iterations (counters, the current step size) return
it from ``state_dict()`` as JSON-compatible data; it is stored in the checkpoint and
handed back to ``load_state_dict`` on resume.

Under ``torchrun`` callbacks run on every rank. ``state.evaluate`` averages over all
ranks, so decisions taken from it agree; after ``on_iteration_end`` the solver of rank
0 is copied to the others, so that the ranks never integrate with different solvers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .odes import current_solver, set_solver
from .solver_config import SolverConfig

Batch = tuple[Tensor, Tensor | None]


@dataclass
class TrainState:
    """What the training loop exposes to callbacks.

    Attributes:
        config: the run's resolved configuration (``hyperode.experiments.TrainConfig``
            in ``hyperode.experiments.train``; callbacks read ``config.iterations``).
        model: the model being trained (never the DDP wrapper).
        optimizer, scheduler: the optimiser and learning-rate schedule.
        iteration: number of completed optimiser steps.
        epoch: epoch of the current batch (0-based).
        batch: ``(x, y)`` of the current iteration on this rank (``y`` is ``None`` for
            densities).
        metrics: the record of the last completed iteration (as in ``metrics.jsonl``).
        eval_metrics: the last evaluation on the test split.
        run_dir: the run folder (``None`` when nothing is written).
        device: the training device.
        dist: this process's place in the process group (``rank``, ``world_size``;
            ``hyperode.experiments.distributed.DistContext`` in the training loop).
        stop_training: set it to ``True`` to end training after this iteration.
    """

    config: Any
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    device: torch.device
    dist: Any
    run_dir: Path | None
    evaluate_fn: Callable[[Batch, SolverConfig | None], dict[str, float]]
    evaluate_test_fn: Callable[[SolverConfig | None], dict[str, float]]
    iteration: int = 0
    epoch: int = 0
    batch: Batch | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    eval_metrics: dict[str, Any] = field(default_factory=dict)
    stop_training: bool = False

    @property
    def solver(self) -> SolverConfig | None:
        """The solver the model's Neural ODEs use now (``None`` if the model has none)."""
        return current_solver(self.model)

    def set_solver(self, solver: SolverConfig) -> None:
        """Use ``solver`` for every Neural ODE of the model from the next iteration on."""
        set_solver(self.model, solver)

    def evaluate(self, batch: Batch | None = None, solver: SolverConfig | None = None
                 ) -> dict[str, float]:
        """Metrics of the model on ``batch`` (default: the current training batch) with
        ``solver`` (default: the current one): ``loss``, ``accuracy`` (classification) or
        ``nll``/``bits_per_dim`` (densities), and ``nfe`` (forward evaluations)."""
        batch = self.batch if batch is None else batch
        if batch is None:
            raise ValueError("state.evaluate: batch is None and there is no current batch yet")
        return self.evaluate_fn(batch, solver)

    def evaluate_test(self, solver: SolverConfig | None = None) -> dict[str, float]:
        """Metrics on this rank's share of the whole test split (averaged over ranks)."""
        return self.evaluate_test_fn(solver)


class Callback:
    """Base class: every hook does nothing. Override what you need."""

    def on_train_start(self, state: TrainState) -> None:
        """Called once, before the first iteration of this session."""

    def on_after_backward(self, state: TrainState) -> None:
        """Called after ``loss.backward()``, before gradient clipping and the optimiser
        step; ``state.iteration`` still counts the steps completed before this one and
        ``state.batch`` is this iteration's batch (where Ott et al.'s check runs)."""

    def on_iteration_end(self, state: TrainState) -> None:
        """Called after the optimiser and scheduler stepped and the record was made."""

    def on_evaluate(self, state: TrainState, metrics: dict[str, Any]) -> None:
        """Called after each evaluation on the test split."""

    def on_train_end(self, state: TrainState) -> None:
        """Called once, after the last iteration."""

    def state_dict(self) -> dict[str, Any]:
        """JSON-compatible state to store in checkpoints."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""


class CallbackList(Callback):
    """Runs several callbacks in order; checkpoints their states under their index."""

    def __init__(self, callbacks: Iterable[Callback] = ()) -> None:
        self.callbacks: list[Callback] = list(callbacks)
        for i, cb in enumerate(self.callbacks):
            if not isinstance(cb, Callback):
                raise ValueError(f"callbacks[{i}] must be a hyperode.experiments.Callback, got "
                                 f"{type(cb).__name__}")

    def __len__(self) -> int:
        return len(self.callbacks)

    def on_train_start(self, state: TrainState) -> None:
        for cb in self.callbacks:
            cb.on_train_start(state)

    def on_after_backward(self, state: TrainState) -> None:
        for cb in self.callbacks:
            cb.on_after_backward(state)

    def on_iteration_end(self, state: TrainState) -> None:
        for cb in self.callbacks:
            cb.on_iteration_end(state)

    def on_evaluate(self, state: TrainState, metrics: dict[str, Any]) -> None:
        for cb in self.callbacks:
            cb.on_evaluate(state, metrics)

    def on_train_end(self, state: TrainState) -> None:
        for cb in self.callbacks:
            cb.on_train_end(state)

    def state_dict(self) -> dict[str, Any]:
        return {str(i): cb.state_dict() for i, cb in enumerate(self.callbacks)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for i, cb in enumerate(self.callbacks):
            if str(i) in state:
                cb.load_state_dict(state[str(i)])


def as_callback_list(callbacks: Sequence[Callback] | Callback | None) -> CallbackList:
    """Normalise the ``callbacks`` argument of ``train``."""
    if callbacks is None:
        return CallbackList()
    if isinstance(callbacks, CallbackList):
        return callbacks
    if isinstance(callbacks, Callback):
        return CallbackList([callbacks])
    return CallbackList(callbacks)
