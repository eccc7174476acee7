"""One training loop for every task: classification and density estimation.

    from hyperode.experiments import TrainConfig, train
    result = train(TrainConfig(task="spheres", iterations=300, out="runs/sph"))
    result.results["final"]["test_accuracy"]

Per iteration: a batch that depends only on ``(seed, iteration)``, forward through
the objective (cross-entropy or NLL), backward, optional gradient clipping, an
Adam/AdamW step and a cosine-annealing step. Every iteration is logged to
``metrics.jsonl``: loss, accuracy (or NLL and bits/dim), forward and backward NFE
summed over the model's Neural ODEs, learning rate, gradient norm, the solver in use,
and times. Every ``eval_every`` iterations (and at the end) the model is evaluated on
the test split, in batches and without gradients, and the figures join that
iteration's record. Checkpoints are written atomically every ``checkpoint_every``
iterations and at the end; ``resume=True`` continues from the last one and reaches
the same weights and metrics as an uninterrupted run. Under ``torchrun`` the model is
wrapped in ``DistributedDataParallel`` and rank 0 alone writes files.

Guards: every solve of a training run is capped (``TrainConfig.max_steps_per_solve``;
by default 10 000 steps, and 50x the longest earlier adaptive training solve). A
non-finite loss or gradient, a solver failure or a solve over its cap stops the run
with ``TrainingDivergedError`` naming the iteration and what to try, after writing a
checkpoint of the state that iteration started from (the bad optimiser step is never
taken), so ``resume=True`` continues from there. A damaged run folder raises
``CheckpointError`` before anything in it is written; stale temporary files of
interrupted writes are removed when a run starts in its folder.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast, overload

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from .. import __version__
from ..data import Split
from ..errors import MaxStepsExceededError, SolverError
from ..nn import SolverConfig
from ..nn.callbacks import Callback, TrainState, as_callback_list
from ..nn.odes import (
    current_solver,
    neural_odes,
    nfe_counts,
    set_solver,
    solver_from_dict,
    solver_to_dict,
)
from . import runs
from .config import (
    NFE_EXPLOSION_FACTOR,
    RESUME_OVERRIDABLE,
    ConfigError,
    TrainConfig,
    check_resume_compatible,
    resolve_config,
    resolve_run,
)
from .distributed import (
    BatchPlan,
    DistContext,
    setup_distributed,
    teardown_distributed,
)
from .evaluation import Evaluator, reduce_sum
from .guards import SolveGuard
from .objective import Objective, summarise
from .results import draw_plots, print_summary, run_results
from .results import versions as versions
from .tasks import CLASSIFICATION, DENSITY, TASKS, build_model, load_split_checked

CHECKPOINT_FORMAT = runs.TRAIN_CHECKPOINT_FORMAT
_TIMING_KEYS = ("iter_time", "wall_time", "eval_time")


class TrainingDivergedError(RuntimeError):
    """Training stopped: a non-finite loss or gradient, a failed solve or a solve over
    its step cap (``TrainConfig.max_steps_per_solve``). The message names the iteration,
    what happened, the checkpoint written (``checkpoint``: the state the failing
    iteration started from, or ``None``) and what to try."""

    def __init__(self, message: str, *, iteration: int, checkpoint: Path | None) -> None:
        super().__init__(message)
        self.iteration = iteration
        self.checkpoint = checkpoint


@dataclass
class TrainResult:
    """What ``train`` returns.

    Attributes:
        model: the trained model (unwrapped, on the training device).
        results: the contents of ``results.json``.
        run_dir: the run folder.
        state: the final ``TrainState`` (optimiser, scheduler, last metrics).
    """

    model: nn.Module
    results: dict[str, Any]
    run_dir: Path
    state: TrainState


def train(config: TrainConfig, callbacks: Sequence[Callback] | Callback | None = None, *,
          model: nn.Module | None = None, split: Split | None = None,
          handle_signals: bool = False) -> TrainResult:
    """Train ``config.task`` and write a run folder; see the module docstring.

    Args:
        config: the run (``None`` fields take the task's preset).
        callbacks: hooks called by the loop (``hyperode.experiments.Callback``).
        model: train this model instead of the task's (it must contain the Neural ODEs
            whose solver the config describes; their solver is set to it). It must be
            built identically on resume (the checkpoint holds only its weights).
        split: train on this data instead of the task's.
        handle_signals: on SIGINT/SIGTERM finish the current iteration, write a
            checkpoint and return (a second Ctrl-C aborts at once). The CLI sets it.

    Raises:
        ConfigError: a bad configuration value (names the field), also a data set that
            cannot be read (``data_dir``) or ``resume`` with nothing to resume.
        hyperode.experiments.runs.CheckpointError: a damaged run folder: an unreadable,
            unsafe or incomplete checkpoint, a corrupt ``config.json`` or
            ``metrics.jsonl`` (nothing in the folder is written or deleted then).
        TrainingDivergedError: a non-finite loss or gradient, a failed solve or a solve
            over its step cap; a checkpoint of the state before the failing iteration
            has been written.
    """
    requested = config
    cfg, solver = resolve_run(requested)
    threads = torch.get_num_threads()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    ctx, device = setup_distributed(cast(str, cfg.device))  # resolve_run sets it
    try:
        trainer = _Trainer(cfg, solver, requested, ctx, device, as_callback_list(callbacks),
                           model, split)
        with _signal_flag(handle_signals and not ctx.enabled) as stop_flag:
            trainer.stop_flag = stop_flag
            return trainer.run()
    finally:
        teardown_distributed(ctx)
        torch.set_num_threads(threads)


# --------------------------------------------------------------------------- signals


class _StopFlag:
    def __init__(self) -> None:
        self.requested = False
        self.signal_name: str | None = None


@contextlib.contextmanager
def _signal_flag(enabled: bool) -> Iterator[_StopFlag]:
    """Turn the first SIGINT/SIGTERM into a flag the loop checks between iterations."""
    flag = _StopFlag()
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum: int, frame: Any) -> None:
        if flag.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        flag.requested, flag.signal_name = True, signal.Signals(signum).name
        print(f"\n{flag.signal_name}: finishing this iteration and writing a checkpoint "
              f"(Ctrl-C again to abort at once)", file=sys.stderr)

    for s in previous:
        signal.signal(s, handler)
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


# --------------------------------------------------------------------------- the trainer


class _Trainer:
    """One session of a (possibly resumed) run: set-up, the loop, checkpoints, results.

    Its parts with one job each: the run folder (``_choose_run_dir``), the solve caps
    (``guards.SolveGuard``), evaluation (``evaluation.Evaluator``), the checkpoint
    (``_checkpoint_payload`` / ``_restore``), one iteration (``_step``) and what is
    written at the end (``results``)."""

    stop_flag: _StopFlag

    def __init__(self, cfg: TrainConfig, solver: SolverConfig, requested: TrainConfig,
                 ctx: DistContext, device: torch.device, callbacks: Any,
                 model: nn.Module | None, split: Split | None) -> None:
        self.ctx, self.device, self.callbacks = ctx, device, callbacks
        self.stop_flag = _StopFlag()
        self.run_dir, checkpoint_path, created = _choose_run_dir(cfg, ctx)
        try:
            payload, self.parsed = None, {}
            if checkpoint_path is not None:
                payload, self.parsed, cfg, solver = self._read_checkpoint(
                    checkpoint_path, cfg, requested)
            self._set_up(cfg, solver, model, split)
            self._start_state(payload, checkpoint_path)
        except BaseException:
            _remove_dirs(created)
            raise

    def _read_checkpoint(self, path: Path, cfg: TrainConfig, requested: TrainConfig
                         ) -> tuple[dict[str, Any], dict[str, Any], TrainConfig, SolverConfig]:
        """The checkpoint of the run being resumed, vetted with its folder, and the
        configuration (and solver) the session continues with."""
        payload = runs.load_checkpoint(path, map_location="cpu")
        parsed = runs.check_train_checkpoint(payload, path)
        saved = _saved_config(parsed["config"], path)
        if self.ctx.is_main:
            _check_config_file(self.run_dir / runs.CONFIG_FILE, saved)
            runs.check_metrics_log(self.run_dir / runs.METRICS_FILE, int(payload["iteration"]))
        cfg, solver = resolve_run(check_resume_compatible(saved, requested)
                                  .replace(device=cfg.device, out=str(self.run_dir)))
        return payload, parsed, cfg, solver

    def _set_up(self, cfg: TrainConfig, solver: SolverConfig, model: nn.Module | None,
                split: Split | None) -> None:
        """Data, model, objective, optimiser, schedule and the callbacks' state."""
        ctx, device = self.ctx, self.device
        self.checkpoint_path = self.run_dir / runs.CHECKPOINT_FILE
        self.cfg = cfg.replace(out=str(self.run_dir))
        self.show = ctx.is_main and not cfg.quiet
        self.kind = TASKS[cfg.task].kind if split is None else (
            DENSITY if split.y_train is None else CLASSIFICATION)
        self.custom_model = model is not None

        runs.seed_everything(cfg.seed)
        self.split = load_split_checked(cfg) if split is None else split
        self.features = int(np.prod(self.split.input_shape))
        self.model = build_model(cfg, self.split, solver) if model is None else model
        if not neural_odes(self.model):
            raise ValueError(f"the model ({type(self.model).__name__}) contains no "
                             f"hyperode.nn.NeuralODE")
        if model is not None:
            set_solver(self.model, solver)
            for node in neural_odes(self.model):
                node.sensitivity = "adjoint" if cfg.adjoint else "autograd"
        self.model.to(device)
        self.nodes = neural_odes(self.model)
        self.guard = SolveGuard(self.nodes, cfg.max_steps_per_solve)
        self.objective = Objective(self.model, self.kind)
        self.train_objective: nn.Module = self.objective
        if ctx.enabled:
            self.train_objective = DistributedDataParallel(
                self.objective, device_ids=[device] if device.type == "cuda" else None)
        self.evaluator = Evaluator(self.model, self.objective, self.kind, self.features,
                                   batch_size=cast(int, cfg.eval_batch_size), seed=cfg.seed,
                                   device=device, ctx=ctx, guard=self.guard, show=self.show)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = _make_optimizer(cfg, self.params)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.optimizer, T_max=cast(int, cfg.iterations), eta_min=cast(float, cfg.lr_min))
        self.plan = BatchPlan(self.split.n_train, cast(int, cfg.batch_size), cfg.seed, ctx)
        self.data = _to_device(self.split, device)
        self.state = TrainState(
            config=self.cfg, model=self.model, optimizer=self.optimizer,
            scheduler=self.scheduler, device=device, dist=ctx, run_dir=self.run_dir,
            evaluate_fn=self.evaluator.batch, evaluate_test_fn=self._evaluate_test,
        )
        self.initial_solver = solver
        self.elapsed_before = 0.0
        self.train_time_before = 0.0

    def _start_state(self, payload: dict[str, Any] | None, checkpoint_path: Path | None
                     ) -> None:
        """Restore the checkpoint (or seed the training streams of a new run) and clean
        the vetted folder of interrupted writes."""
        ctx, cfg = self.ctx, self.cfg
        if payload is not None:
            try:
                self._restore(payload)
            except ConfigError:
                raise  # a callback refusing other settings: the caller's argument
            except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as e:
                raise runs.CheckpointError(
                    f"{str(checkpoint_path)!r} does not fit this run's model, optimiser or "
                    f"callbacks ({runs._first_line(e)})") from None
        else:
            # Training randomness (dropout, Hutchinson probes) per rank, after the model's
            # initialisation (which used ``seed`` alone and is the same on every rank).
            torch.manual_seed(cfg.seed * 7919 + 1 + ctx.rank)
        self.resumed_from = None if payload is None else int(payload["iteration"])
        self.removed_tmp: list[str] = []
        if ctx.is_main:  # the folder is vetted: now clean up after interrupted writes
            self.removed_tmp = runs.remove_stale_temp_files(self.run_dir)
            if self.removed_tmp:
                print(f"hyperode: removed {len(self.removed_tmp)} stale temporary file(s) "
                      f"left in {self.run_dir} by an interrupted write: "
                      f"{', '.join(self.removed_tmp)}", file=sys.stderr)

    # ------------------------------------------------------------------ checkpoints

    def _checkpoint_payload(self, rng_states: list[dict[str, Any]],
                            callbacks_json: str | None = None) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "iteration": self.state.iteration,
            "config": self.cfg.to_json(),
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": _to_cpu(self.optimizer.state_dict()),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng_states,
            "world_size": self.ctx.world_size,
            "solvers": json.dumps([solver_to_dict(n.solver) for n in neural_odes(self.model)]),
            "callbacks": callbacks_json if callbacks_json is not None
            else json.dumps(self.callbacks.state_dict()),
            "eval_metrics": json.dumps(self.state.eval_metrics),
            "elapsed": self._elapsed(),
            "train_time": self.train_time,
            "versions": json.dumps(versions()),
            "guard": json.dumps({"max_adaptive_steps": self.guard.longest}),
        }

    def _save_checkpoint(self, callbacks_json: str | None = None) -> None:
        rng_states = self.ctx.all_gather_object(runs.capture_rng_state())
        if self.ctx.is_main:
            runs.save_checkpoint(self.checkpoint_path,
                                 self._checkpoint_payload(rng_states, callbacks_json))
        self.ctx.barrier()

    def _restore(self, payload: dict[str, Any]) -> None:
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        self.state.iteration = int(payload["iteration"])
        self.state.eval_metrics = json.loads(payload["eval_metrics"])
        nodes = neural_odes(self.model)
        records = json.loads(payload["solvers"])
        for node, record in zip(nodes, records):
            solver = solver_from_dict(record)
            if solver is None:
                warnings.warn(f"the checkpoint's solver {record.get('describe')!r} cannot be "
                              f"restored from its record; keeping {node.solver.describe()!r}",
                              stacklevel=3)
            else:
                node.solver = solver
        self.callbacks.load_state_dict(json.loads(payload["callbacks"]))
        self.elapsed_before = float(payload["elapsed"])
        self.train_time_before = float(payload["train_time"])
        steps = self.parsed.get("guard", {}).get("max_adaptive_steps")
        self.guard.longest = int(steps) if isinstance(steps, int) and steps > 0 else None
        rng = payload["rng"]
        if len(rng) != self.ctx.world_size:
            warnings.warn(f"the checkpoint was written by {len(rng)} process(es), this run has "
                          f"{self.ctx.world_size}: data order is unchanged but the other random "
                          f"streams differ from an uninterrupted run", stacklevel=3)
        runs.restore_rng_state(rng[self.ctx.rank % len(rng)])

    # ------------------------------------------------------------------ evaluation

    def _evaluate_test(self, solver: SolverConfig | None = None) -> dict[str, float]:
        return self.evaluator.split(self.data.x_test, self.data.y_test, solver)

    # ------------------------------------------------------------------ failures

    def _fail(self, i: int, what: str, start: dict[str, Any], *, checkpoint: bool = True,
              advice: str | None = None) -> TrainingDivergedError:
        """Write a checkpoint of the state iteration ``i`` started from and build the error.

        The optimiser has not stepped, so weights, optimiser and scheduler are that
        state; the RNG streams, the solvers and the callbacks' states are put back as
        they were at its start."""
        written = None
        if checkpoint:
            runs.restore_rng_state(start["rng"])
            for node, solver in zip(self.nodes, start["solvers"]):
                node.solver = solver
            self.state.iteration = i
            self._save_checkpoint(callbacks_json=start["callbacks"])
            written = self.checkpoint_path
        cfg = self.cfg
        if advice is None:
            advice = (f"try a smaller --lr (now {cfg.lr:g}), gradient clipping (--clip, now "
                      f"{cfg.clip:g}) or a more accurate solver")
        if written is not None:
            where = (f"wrote {written} with the state before iteration {i + 1} (--resume "
                     f"continues from it)")
        else:
            where = (f"the last checkpoint is {self.checkpoint_path}"
                     if self.checkpoint_path.exists() else "no checkpoint was written")
        return TrainingDivergedError(
            f"training stopped at iteration {i + 1}: {what}; {where}; {advice}",
            iteration=i + 1, checkpoint=written)

    def _solver_failure(self, i: int, e: SolverError, cap: int, why: str,
                        start: dict[str, Any]) -> TrainingDivergedError:
        phase = {"backward": "the backward (adjoint) solve",
                 "callback": "a solve of a callback (on_after_backward)"}.get(
            start.get("phase", ""), "the forward solve")
        # under torchrun the other processes are still in this iteration: no checkpoint
        checkpoint = not self.ctx.enabled
        if isinstance(e, MaxStepsExceededError):
            if why == "explosion":
                what = (f"the NFE exploded: {phase} needed more than {cap} steps, "
                        f"{NFE_EXPLOSION_FACTOR}x the {self.guard.longest} of the longest solve "
                        f"of the earlier iterations (the NFE explosion guard); the model is "
                        f"diverging")
            elif why == "explicit":
                what = f"{phase} needed more than --max-steps-per-solve {cap} steps"
            else:
                what = f"{phase} needed more than {cap} steps, the default cap per solve"
            advice = ("try a smaller --lr or gradient clipping (--clip); if such long solves "
                      "are expected, give --max-steps-per-solve N (it may change on --resume)")
            return self._fail(i, what, start, checkpoint=checkpoint, advice=advice)
        return self._fail(i, f"{phase} failed ({type(e).__name__}: "
                             f"{' '.join(str(e).split())})", start, checkpoint=checkpoint)

    # ------------------------------------------------------------------ one iteration

    def _step(self, i: int) -> dict[str, Any]:
        """Iteration ``i`` (0-based): forward, backward, callbacks, clip, step; returns
        the record.

        Before the optimiser steps, a failed or capped solve and a non-finite loss or
        gradient norm end training (``_fail``)."""
        x, y = self._batch(i)
        solver = current_solver(self.model)
        start_state = self._snapshot()
        lr = float(self.optimizer.param_groups[0]["lr"])
        start = time.perf_counter()
        counts, nfe_forward, nfe_backward = self._forward_backward(i, x, y, solver, lr,
                                                                   start_state)
        longest = self.guard.longest_adaptive_solve()  # before callbacks solve anything
        self._after_backward(i, start_state)
        clip = cast(float, self.cfg.clip)  # resolved: a number >= 0
        max_norm = clip if clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, max_norm)
        stats = torch.cat([counts.detach().cpu(), torch.tensor(
            [nfe_forward, nfe_backward, float(grad_norm), float(self.stop_flag.requested)],
            dtype=torch.float64)])
        stats = reduce_sum(stats, self.ctx, self.device)
        world = self.ctx.world_size
        record: dict[str, Any] = {"iteration": i + 1, "epoch": self.state.epoch}
        record.update(summarise(self.kind, stats[:3], self.features))
        if not math.isfinite(record["loss"]):
            raise self._fail(i, f"the training loss became {record['loss']} (solver "
                                f"{solver.describe() if solver else None}, lr {lr:g})",
                             start_state)
        if not math.isfinite(float(stats[5])):
            raise self._fail(i, f"the gradient norm became {float(stats[5]) / world} (loss "
                                f"{record['loss']:.4g}, lr {lr:g})", start_state)
        self.optimizer.step()
        self.scheduler.step()
        self.guard.record(longest)
        iter_time = time.perf_counter() - start
        self.train_time += iter_time
        self.state.iteration = i + 1
        record.update({
            "nfe_forward": float(stats[3]) / world, "nfe_backward": float(stats[4]) / world,
            "lr": lr, "grad_norm": float(stats[5]) / world,
            "solver": solver.describe() if solver else None,
            "iter_time": iter_time, "wall_time": self._elapsed(),
        })
        if float(stats[6]) > 0:
            self.stop_flag.requested = True
        return record

    def _batch(self, i: int) -> tuple[Tensor, Tensor | None]:
        """Iteration ``i``'s batch on this rank (it also becomes ``state.batch``)."""
        idx = self.plan.indices(i).to(self.data.x_train.device)
        x = self.data.x_train[idx]
        y = None if self.data.y_train is None else self.data.y_train[idx]
        self.state.batch, self.state.epoch = (x, y), self.plan.epoch_of(i)
        return x, y

    def _snapshot(self) -> dict[str, Any]:
        """What a checkpoint of the state before this iteration needs beyond the weights,
        optimiser and schedule (which only change when the optimiser steps)."""
        return {"rng": runs.capture_rng_state(),
                "solvers": [node.solver for node in self.nodes],
                "callbacks": json.dumps(self.callbacks.state_dict())
                if len(self.callbacks) else json.dumps({})}

    def _forward_backward(self, i: int, x: Tensor, y: Tensor | None,
                          solver: SolverConfig | None, lr: float, start_state: dict[str, Any]
                          ) -> tuple[Tensor, int, int]:
        """Loss and gradients of the batch under this iteration's step cap:
        ``(counts, forward NFE, backward NFE)``."""
        model = self.model
        cap, why = self.guard.training_cap()
        model.train()
        self.optimizer.zero_grad(set_to_none=True)
        try:
            with self.guard.caps(cap, relative=True):
                start_state["phase"] = "forward"
                loss, counts = self.train_objective(x, y)
                nfe_forward = nfe_counts(model)[0]
                if not self.ctx.enabled and not bool(torch.isfinite(loss.detach())):
                    raise self._fail(i, f"the training loss became {float(loss.detach())} (solver "
                                        f"{solver.describe() if solver else None}, lr {lr:g})",
                                     start_state)
                start_state["phase"] = "backward"
                loss.backward()
        except SolverError as e:
            raise self._solver_failure(i, e, cap, why, start_state) from e
        return counts, nfe_forward, nfe_counts(model)[1]

    def _after_backward(self, i: int, start_state: dict[str, Any]) -> None:
        """The callbacks' ``on_after_backward``, outside the caps: callbacks see (and
        derive solvers from) the plain solver."""
        try:
            start_state["phase"] = "callback"
            self.callbacks.on_after_backward(self.state)
        except SolverError as e:
            which = "default" if self.cfg.max_steps_per_solve is None else "explicit"
            raise self._solver_failure(i, e, self.guard.hard_cap(), which, start_state) from e

    # ------------------------------------------------------------------ the loop

    def _elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.session_start

    def run(self) -> TrainResult:
        cfg, state = self.cfg, self.state
        self.session_start = time.perf_counter()
        self.train_time = self.train_time_before
        log = None
        if self.ctx.is_main:
            runs.atomic_write_json(self.run_dir / runs.CONFIG_FILE, cfg.to_dict())
            log = runs.MetricsLog(self.run_dir / runs.METRICS_FILE,
                                  keep_up_to=self.resumed_from)
        self._announce()
        self.callbacks.on_train_start(state)
        bar = tqdm(total=cfg.iterations, initial=state.iteration, desc=f"train {cfg.task}",
                   dynamic_ncols=True, disable=not self.show, unit="it")
        status = "completed"
        try:
            iterations = cast(int, cfg.iterations)  # resolved config: all three set
            eval_every, checkpoint_every = cast(int, cfg.eval_every), \
                cast(int, cfg.checkpoint_every)
            while state.iteration < iterations:
                record = self._step(state.iteration)
                state.metrics = record
                self.callbacks.on_iteration_end(state)
                self._sync_solver()
                stopping = (state.stop_training or self.stop_flag.requested
                            or state.iteration == iterations)
                if state.iteration % eval_every == 0 or stopping:
                    try:
                        self._evaluate_into(record)
                    except SolverError as e:
                        raise self._eval_failure(e) from e
                if log is not None:
                    log.write(record)
                if state.iteration % checkpoint_every == 0 or stopping:
                    self._save_checkpoint()
                bar.update(1)
                bar.set_postfix(_postfix(record), refresh=False)
                if state.stop_training or self.stop_flag.requested:
                    status = ("interrupted" if self.stop_flag.requested else "stopped")
                    break
        finally:
            bar.close()
            if log is not None:
                log.close()
        if not state.eval_metrics:  # a resumed run that had already finished
            self._evaluate_into({})
        self.callbacks.on_train_end(state)
        results = self._finish(status)
        return TrainResult(model=self.model, results=results, run_dir=self.run_dir,
                           state=state)

    def _eval_failure(self, e: SolverError) -> TrainingDivergedError:
        """The test evaluation after iteration ``state.iteration`` failed. Its record is not
        logged yet, so no checkpoint of this state is written: the last one stands."""
        i = self.state.iteration
        last = (f"the last checkpoint is {self.checkpoint_path}" if self.checkpoint_path.exists()
                else "no checkpoint was written yet")
        return TrainingDivergedError(
            f"training stopped at iteration {i}: the evaluation on the test split failed "
            f"({type(e).__name__}: {' '.join(str(e).split())}); {last}; if the model "
            f"is diverging, try a smaller --lr or gradient clipping (--clip), or give "
            f"--max-steps-per-solve N if such long solves are expected",
            iteration=i, checkpoint=None)

    def _evaluate_into(self, record: dict[str, Any]) -> None:
        start = time.perf_counter()
        metrics = self._evaluate_test()
        metrics["iteration"] = self.state.iteration
        self.state.eval_metrics = metrics
        record.update({f"test_{k}": v for k, v in metrics.items() if k != "iteration"})
        record["eval_time"] = time.perf_counter() - start
        self.callbacks.on_evaluate(self.state, metrics)
        if self.show:
            tqdm.write(f"[{self.state.iteration}/{self.cfg.iterations}] "
                       + ", ".join(f"test {k} {v:.4g}" for k, v in metrics.items()
                                   if k != "iteration"))

    def _sync_solver(self) -> None:
        """After callbacks, every rank integrates with rank 0's solver."""
        if not self.ctx.enabled or not len(self.callbacks):
            return
        solver = self.ctx.broadcast_object(current_solver(self.model))
        if solver is not None and solver != current_solver(self.model):
            set_solver(self.model, solver)

    def _announce(self) -> None:
        if not self.show:
            return
        cfg = self.cfg
        what = "resuming" if self.resumed_from is not None else "training"
        at = f" from iteration {self.resumed_from}" if self.resumed_from is not None else ""
        solver = current_solver(self.model)
        print(f"hyperode: {what} {cfg.task} ({self.kind}, model {cfg.model}){at} on "
              f"{self.device}" + (f" x{self.ctx.world_size}" if self.ctx.enabled else ""))
        print(f"  data {self.split!r}")
        print(f"  solver {solver.describe() if solver else None}, sensitivity "
              f"{'adjoint' if cfg.adjoint else 'autograd'}; {cfg.optimizer} lr {cfg.lr:g} -> "
              f"{cfg.lr_min:g} (cosine), batch {self.plan.batch_size}, {cfg.iterations} "
              f"iterations")
        print(f"  run folder {self.run_dir}")

    # ------------------------------------------------------------------ results

    def _finish(self, status: str) -> dict[str, Any]:
        """Rank 0 writes the weights, the plots and ``results.json`` (once, last); every
        rank returns the results."""
        results: dict[str, Any] = {}
        if self.ctx.is_main:
            records = runs.read_metrics(self.run_dir / runs.METRICS_FILE)
            results = run_results(
                cfg=self.cfg, kind=self.kind, model=self.model,
                custom_model=self.custom_model, status=status,
                iteration=self.state.iteration, batches_per_epoch=self.plan.batches_per_epoch,
                eval_metrics=self.state.eval_metrics, records=records,
                initial_solver=self.initial_solver, final_solver=current_solver(self.model),
                wall_time=self._elapsed(), train_time=self.train_time, device=self.device,
                world_size=self.ctx.world_size, split=self.split,
                resumed_from=self.resumed_from)
            meta = {"config": self.cfg.to_json(), "hyperode": __version__,
                    "iteration": str(self.state.iteration)}
            runs.save_weights(self.run_dir / runs.WEIGHTS_FILE, self.model, metadata=meta)
            if self.cfg.plots:
                results["plots"], errors = draw_plots(self.run_dir, records, self.kind,
                                                      self.model, self.split, self.cfg.seed)
                if errors:
                    results["plot_errors"] = errors
            runs.atomic_write_json(self.run_dir / runs.RESULTS_FILE, results)
            if self.show:
                print_summary(results, self.run_dir)
        return self.ctx.broadcast_object(results)


# --------------------------------------------------------------------------- helpers


def _choose_run_dir(cfg: TrainConfig, ctx: DistContext
                ) -> tuple[Path, Path | None, list[Path]]:
    """Rank 0 picks the folder (and whether to resume: the checkpoint to resume from)
    and creates it; the others follow. Returns the folders created (for removal if the
    set-up fails)."""
    decision: tuple[str, str | None, str | None] | None = None
    created: list[Path] = []
    if ctx.is_main:
        try:
            if cfg.out is not None:
                path = Path(cfg.out)
            elif cfg.resume:
                found = runs.latest_run_dir(cfg.task)
                if found is None:
                    raise ConfigError("resume", f"there is no run to resume: no folder "
                                                f"runs/{cfg.task}-* holds a "
                                                f"{runs.CHECKPOINT_FILE}; give the run "
                                                f"folder with --out, or drop --resume")
                path = found
            else:
                path = runs.default_run_dir(cfg.task)
            ckpt = path / runs.CHECKPOINT_FILE
            if path.exists() and not path.is_dir():
                raise ConfigError("out", f"{str(path)!r} exists and is not a folder")
            if ckpt.exists() and not cfg.resume:
                raise ConfigError("out", f"{str(path)!r} already holds a run "
                                         f"({runs.CHECKPOINT_FILE}); resume it with "
                                         f"resume=True (--resume) or choose another folder")
            if cfg.resume and not ckpt.is_file():
                what = "does not exist" if not path.exists() else \
                    f"holds no {runs.CHECKPOINT_FILE}"
                raise ConfigError("resume", f"there is nothing to resume: {str(path)!r} "
                                            f"{what}; start the run without --resume")
            missing = [p for p in (path, *path.parents) if not p.exists()]
            try:
                path.mkdir(parents=True, exist_ok=True)
                created = missing
            except OSError as e:
                raise ConfigError("out", f"cannot create the run folder {str(path)!r} "
                                         f"({e.strerror or e})") from None
            decision = (str(path), str(ckpt) if cfg.resume else None, None)
        except (ConfigError, OSError) as e:
            decision = ("", None, f"{type(e).__name__}|{getattr(e, 'field', '')}|{e}")
    decision = ctx.broadcast_object(decision)
    assert decision is not None
    path, ckpt, error = decision
    if error is not None:
        kind, field, message = error.split("|", 2)
        if kind == "ConfigError":
            raise ConfigError(field, message.split(": ", 1)[-1])
        raise OSError(message)
    return Path(path), None if ckpt is None else Path(ckpt), created


def _remove_dirs(folders: list[Path]) -> None:
    """Set-up failed: remove the (still empty) folders this run created."""
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()  # only succeeds while empty


def _saved_config(data: dict[str, Any], path: Path) -> TrainConfig:
    """The configuration stored in a checkpoint, validated (``CheckpointError`` if not)."""
    try:
        saved = TrainConfig.from_dict(data)
        resolve_config(saved.replace(device="cpu"))
    except (TypeError, ValueError) as e:
        raise runs.CheckpointError(f"{str(path)!r}: its stored configuration is not valid "
                                   f"({e})") from None
    return saved


def _check_config_file(path: Path, saved: TrainConfig) -> None:
    """A resumed run's ``config.json`` must parse and agree with the checkpoint (in every
    field a resumed run may not change): else the folder is damaged or mixed up."""
    if not path.is_file():
        raise runs.CheckpointError(f"{str(path)!r} is missing: the run folder is incomplete")
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError(f"it holds a JSON {type(data).__name__}, not an object")
        on_disk = TrainConfig.from_dict(data)
    except (TypeError, ValueError) as e:  # JSONDecodeError and ConfigError are ValueErrors
        raise runs.CheckpointError(f"{str(path)!r} is not a valid training configuration "
                                   f"({e})") from None
    differ = [f for f, v in saved.to_dict().items()
              if f not in RESUME_OVERRIDABLE and getattr(on_disk, f) != v]
    if differ:
        f = differ[0]
        raise runs.CheckpointError(
            f"{str(path)!r} disagrees with {runs.CHECKPOINT_FILE} in the same folder: "
            f"{f}={getattr(on_disk, f)!r} there, {getattr(saved, f)!r} in the checkpoint")


@dataclass(frozen=True)
class _DeviceData:
    x_train: Tensor
    y_train: Tensor | None
    x_test: Tensor
    y_test: Tensor | None


def _to_device(split: Split, device: torch.device) -> _DeviceData:
    @overload
    def move(t: Tensor) -> Tensor: ...
    @overload
    def move(t: None) -> None: ...
    def move(t: Tensor | None) -> Tensor | None:
        return None if t is None else t.to(device)

    return _DeviceData(move(split.x_train), move(split.y_train), move(split.x_test),
                       move(split.y_test))


def _make_optimizer(cfg: TrainConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    lr, decay = cast(float, cfg.lr), cast(float, cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=decay)
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=lr, weight_decay=decay)


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_to_cpu(v) for v in obj)
    return obj


def _postfix(record: dict[str, Any]) -> dict[str, str]:
    out = {"loss": f"{record['loss']:.4f}"}
    if "accuracy" in record:
        out["acc"] = f"{record['accuracy']:.3f}"
    if "bits_per_dim" in record:
        out["bpd"] = f"{record['bits_per_dim']:.3f}"
    out["nfe"] = f"{record['nfe_forward']:.0f}/{record['nfe_backward']:.0f}"
    return out


def strip_timing(record: dict[str, Any]) -> dict[str, Any]:
    """A metrics record without its wall-clock fields (for comparing runs)."""
    return {k: v for k, v in record.items() if k not in _TIMING_KEYS}
