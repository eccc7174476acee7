"""Tolerance adaptation during training (Ott et al., ICLR 2021, Algorithm 3).

The twin of step adaptation (``hyperode.adapt.step_adaptation``) for adaptive
training solvers. Training starts at ``tol = 1e-6`` (``rtol = atol = tol``). Every
``every`` iterations, after the backward pass and before the optimiser step, on the
current training batch:

1. ``acc_train`` = accuracy with the training solver at ``tol``; ``acc_test`` = with the
   test solver (fehlberg2 -> dopri5 at ``tol/5``, dopri5 -> dopri5 at ``tol/10``; see
   ``hyperode.adapt.checking_solver``). While the test solve takes no more NFE than
   the training solve (so it cannot be more accurate), its tolerance is divided by 10
   again (at most ``max_tighten`` times). The reference code intends the same loop but
   reads the training NFE from ``nfe_f[-1]``, an entry of a tensor that was allocated
   but not yet filled (uninitialised memory); here the training NFE is that of the
   training solve just run on the batch.
2. ``|acc_train - acc_test| > threshold`` (0.1): ``tol <- tol/2``.
3. Otherwise propose ``tol' = 1.1 tol`` and re-run the training solver at ``tol'``;
   accept it only if ``|acc_test - acc(tol')| <= threshold`` *and* that solve still
   takes at least ``min_steps`` (2) accepted steps (the paper's "min steps 2", which
   the reference code does not implement), so that the tolerance cannot grow without
   bound once a single step suffices.

The decision is ``ToleranceRule.decide`` (pure; a stub can drive it).
Logged into the iteration's record at each check: ``adapt_tol``, ``adapt_acc_train``,
``adapt_acc_test``, ``adapt_acc_proposed``, ``adapt_steps_proposed``,
``adapt_action``, ``adapt_test_solver``, ``adapt_nfe`` and ``adapt_nfe_total``.
The number of steps is that of the last evaluation chunk of ``state.evaluate`` (the
whole batch when it is no larger than ``eval_batch_size``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..nn import SolverConfig
from ..nn.callbacks import TrainState
from ..nn.odes import neural_odes
from .checking import checking_solver
from .logged import AdaptationLog

HALVE, GROW, REJECT_GROWTH, TOO_FEW_STEPS = "halve", "grow", "reject_growth", "too_few_steps"


@dataclass(frozen=True)
class ToleranceDecision:
    """The tolerance from now on, the action (``halve``, ``grow``, ``reject_growth``,
    ``too_few_steps``) and the re-check of the proposed tolerance (if one ran)."""

    tol: float
    action: str
    proposed: float | None = None
    acc_proposed: float | None = None
    steps_proposed: int | None = None


@dataclass(frozen=True)
class ToleranceRule:
    """Algorithm 3's decision without a model (see the module docstring)."""

    threshold: float = 0.1
    growth: float = 1.1
    shrink: float = 0.5
    min_steps: int = 2

    def __post_init__(self) -> None:
        if not (0 <= self.threshold < 1):
            raise ValueError(f"ToleranceRule: threshold must lie in [0, 1), got "
                             f"{self.threshold!r}")
        if not self.growth > 1:
            raise ValueError(f"ToleranceRule: growth must be > 1, got {self.growth!r}")
        if not 0 < self.shrink < 1:
            raise ValueError(f"ToleranceRule: shrink must lie in (0, 1), got {self.shrink!r}")
        if not isinstance(self.min_steps, int) or self.min_steps < 1:
            raise ValueError(f"ToleranceRule: min_steps must be an int >= 1, got "
                             f"{self.min_steps!r}")

    def decide(self, tol: float, acc_train: float, acc_test: float,
               check_at: Callable[[float], tuple[float, int]]) -> ToleranceDecision:
        """One check. ``check_at(tol')`` returns the training solver's accuracy and
        number of accepted steps at ``tol'`` (called at most once)."""
        if not (tol > 0 and math.isfinite(tol)):
            raise ValueError(f"ToleranceRule.decide: tol must be a finite number > 0, "
                             f"got {tol!r}")
        if abs(acc_train - acc_test) > self.threshold:
            return ToleranceDecision(tol * self.shrink, HALVE)
        proposed = tol * self.growth
        acc, steps = check_at(proposed)
        acc, steps = float(acc), int(steps)
        if abs(acc_test - acc) > self.threshold:
            return ToleranceDecision(tol, REJECT_GROWTH, proposed, acc, steps)
        if steps < self.min_steps:
            return ToleranceDecision(tol, TOO_FEW_STEPS, proposed, acc, steps)
        return ToleranceDecision(proposed, GROW, proposed, acc, steps)


def _last_steps(state: TrainState) -> int:
    """Accepted steps of the first Neural ODE's last solve."""
    stats = getattr(neural_odes(state.model)[0], "last_stats", None)
    return int(stats.accepted) if stats is not None else 0


class ToleranceAdaptation(AdaptationLog):
    """Adapt ``rtol = atol`` of an adaptive training solver (Ott et al., Algorithm 3).

    Args:
        every: check every ``every`` iterations (50).
        threshold: accuracy gap above which the tolerance is halved (0.1).
        initial_tol: the starting tolerance (1e-6); ``None`` keeps the configured rtol.
        growth, shrink: factors after a passed / failed check (1.1, 0.5).
        min_steps: the least accepted steps a grown tolerance must leave (2).
        max_tighten: how often the test tolerance may be divided by 10 again while the
            test solve takes no more NFE than the training solve (3; 0 disables).

    The tolerance, the check NFE, ``history`` and ``settings()`` are stored in
    ``state_dict``: a resumed run continues with them (``hyperode.adapt.logged``).
    """

    value_key = "tol"

    def __init__(self, every: int = 50, threshold: float = 0.1,
                 initial_tol: float | None = 1e-6, growth: float = 1.1, shrink: float = 0.5,
                 min_steps: int = 2, max_tighten: int = 3) -> None:
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"ToleranceAdaptation: every must be an int >= 1, got {every!r}")
        if initial_tol is not None and not (initial_tol > 0 and math.isfinite(initial_tol)):
            raise ValueError(f"ToleranceAdaptation: initial_tol must be a finite number > 0, "
                             f"got {initial_tol!r}")
        if not isinstance(max_tighten, int) or max_tighten < 0:
            raise ValueError(f"ToleranceAdaptation: max_tighten must be an int >= 0, got "
                             f"{max_tighten!r}")
        self.rule = ToleranceRule(threshold=threshold, growth=growth, shrink=shrink,
                                  min_steps=min_steps)
        self.every, self.initial_tol, self.max_tighten = every, initial_tol, max_tighten
        super().__init__()
        self.tol: float | None = None

    def settings(self) -> dict[str, Any]:
        return {"every": self.every, "threshold": self.rule.threshold,
                "growth": self.rule.growth, "shrink": self.rule.shrink,
                "min_steps": self.rule.min_steps, "max_tighten": self.max_tighten}

    def _train_solver(self, state: TrainState) -> SolverConfig:
        solver = state.solver
        if solver is None or solver.is_fixed:
            raise ValueError(f"ToleranceAdaptation needs an adaptive training solver "
                             f"(fehlberg2, dopri5 without step_size/num_steps), got "
                             f"{solver.describe() if solver else None!r}")
        return solver

    def on_train_start(self, state: TrainState) -> None:
        solver = self._train_solver(state)
        if self.tol is None:  # not resumed
            self.tol = solver.rtol if self.initial_tol is None else float(self.initial_tol)
            state.set_solver(solver.replace(rtol=self.tol, atol=self.tol))
            self._pending = {"adapt_tol": self.tol, "adapt_action": "start"}

    def on_after_backward(self, state: TrainState) -> None:
        if (state.iteration + 1) % self.every != 0:
            return
        if state.iteration + 1 >= state.config.iterations:
            # a change now would take effect only in the final evaluation, which must
            # use the solver the model was trained with
            return
        solver = self._train_solver(state)
        tol = solver.rtol  # the solver in use (rank 0's under torchrun)
        train = solver.replace(rtol=tol, atol=tol)
        res_train = state.evaluate(state.batch, train)
        test = checking_solver(train)
        res_test = state.evaluate(state.batch, test)
        nfe = [res_train["nfe"], res_test["nfe"]]
        for _ in range(self.max_tighten):
            if res_test["nfe"] > res_train["nfe"]:
                break
            test = test.replace(rtol=test.rtol / 10, atol=test.atol / 10)
            res_test = state.evaluate(state.batch, test)
            nfe.append(res_test["nfe"])

        def check_at(new_tol: float) -> tuple[float, int]:
            res = state.evaluate(state.batch, solver.replace(rtol=new_tol, atol=new_tol))
            nfe.append(res["nfe"])
            return res["accuracy"], _last_steps(state)

        decision = self.rule.decide(tol, res_train["accuracy"], res_test["accuracy"], check_at)
        self.tol = decision.tol
        if decision.tol != tol or solver.rtol != tol or solver.atol != tol:
            state.set_solver(solver.replace(rtol=decision.tol, atol=decision.tol))
        entry = {"iteration": state.iteration + 1, "adapt_tol": decision.tol,
                 "adapt_acc_train": res_train["accuracy"], "adapt_acc_test": res_test["accuracy"],
                 "adapt_action": decision.action, "adapt_test_solver": test.describe()}
        if decision.acc_proposed is not None:
            entry["adapt_acc_proposed"] = decision.acc_proposed
            entry["adapt_steps_proposed"] = decision.steps_proposed
        self._record(entry, sum(nfe))
