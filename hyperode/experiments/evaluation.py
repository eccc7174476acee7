"""Evaluation inside a training run: loss and accuracy (or NLL) and NFE of the model
on a batch or on the test split, with any solver, without gradients, in eval mode,
and without disturbing the model's solver or the training RNG streams. Under
``torchrun`` each rank evaluates its share and the figures are summed over ranks."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..nn import SolverConfig
from ..nn.odes import nfe_counts, using_solver
from .distributed import DistContext, shard_range
from .guards import SolveGuard
from .objective import summarise

#: Evaluation draws (e.g. Hutchinson probes) from its own stream.
EVAL_SEED_OFFSET = 1_000_003


def reduce_sum(values: Tensor, ctx: DistContext, device: torch.device) -> Tensor:
    """``values`` summed over the ranks (unchanged without a process group), on CPU."""
    if not ctx.enabled:
        return values
    on = device if ctx.backend == "nccl" else torch.device("cpu")
    return ctx.all_reduce_sum(values.to(on)).cpu()


class Evaluator:
    """Measures ``model`` through its ``objective`` (kind ``classification`` or
    ``density``; ``features`` per sample for bits/dim) in chunks of ``batch_size``,
    every solve capped by ``guard``'s hard cap; ``seed`` seeds the evaluation's own
    random stream; ``show`` draws a progress bar for the test split."""

    def __init__(self, model: nn.Module, objective: nn.Module, kind: str, features: int, *,
                 batch_size: int, seed: int, device: torch.device, ctx: DistContext,
                 guard: SolveGuard, show: bool) -> None:
        self.model, self.objective, self.kind, self.features = model, objective, kind, features
        self.batch_size, self.seed, self.device, self.ctx = batch_size, seed, device, ctx
        self.guard, self.show = guard, show

    def tensors(self, x: Tensor, y: Tensor | None, solver: SolverConfig | None,
                desc: str | None = None) -> dict[str, float]:
        """Metrics on ``x``/``y`` (this rank's share), summed over ranks; no gradients,
        eval mode, the model's solver and the training RNG untouched afterwards."""
        model = self.model
        was_training = model.training
        totals = torch.zeros(5, dtype=torch.float64)
        cuda = [self.device] if self.device.type == "cuda" else []
        starts = range(0, len(x), self.batch_size)
        model.eval()
        try:
            with torch.random.fork_rng(devices=cuda), torch.no_grad(), \
                    using_solver(model, solver), self.guard.caps(self.guard.hard_cap()):
                torch.manual_seed(self.seed + EVAL_SEED_OFFSET)
                bar = tqdm(starts, desc=desc, leave=False, dynamic_ncols=True,
                           disable=not self.show or desc is None or len(starts) < 2)
                for start in bar:
                    xb = x[start:start + self.batch_size]
                    yb = None if y is None else y[start:start + self.batch_size]
                    _, counts = self.objective(xb, yb)
                    totals[:3] += counts.cpu()
                    totals[3] += nfe_counts(model)[0]
                    totals[4] += 1
        finally:
            model.train(was_training)
        totals = reduce_sum(totals, self.ctx, self.device)
        metrics = summarise(self.kind, totals, self.features)
        metrics["nfe"] = float(totals[3] / max(float(totals[4]), 1.0))
        return metrics

    def batch(self, batch: tuple[Tensor, Tensor | None], solver: SolverConfig | None
              ) -> dict[str, float]:
        """Metrics on one ``(x, y)`` batch (``TrainState.evaluate``)."""
        x, y = batch
        return self.tensors(x, y, solver)

    def split(self, x: Tensor, y: Tensor | None, solver: SolverConfig | None = None
              ) -> dict[str, float]:
        """Metrics on a whole split (the test split): each rank takes its shard."""
        if self.ctx.enabled:
            idx = shard_range(len(x), self.ctx).to(x.device)
            x, y = x[idx], None if y is None else y[idx]
        return self.tensors(x, y, solver, desc="evaluate")
