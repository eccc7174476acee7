"""Step-size adaptation during training (Ott et al., ICLR 2021, Algorithm 2).

Every ``every`` iterations, after the backward pass and before the optimiser step,
on the current training batch:

1. ``acc_train`` = accuracy with the training solver at step ``h``, ``acc_test`` =
   accuracy with the test solver (``hyperode.adapt.checking_solver``: Euler -> midpoint,
   midpoint -> rk4, factor 50 smaller global error).
2. ``|acc_train - acc_test| > threshold`` (0.1): the model depends on the solver;
   halve ``h``. The number of steps ``n = T/h`` is capped at ``max_steps`` (500): if
   halving would give ``2n > max_steps``, the count moves halfway to the cap instead,
   ``n <- (n + max_steps)/2`` (the reference code's ``h <- 2h/(max_steps*h + 1)`` for
   ``T = 1``), and at the cap ``h`` stays.
3. Otherwise propose ``h' = min(1.1h, T)`` (``T`` the integration length) and
   re-check: accept ``h'`` only if ``|acc_test - acc(h')| <= threshold``. When ``h``
   is already ``T`` there is nothing to propose and no re-check is run.

The initial ``h`` is Hairer–Nørsett–Wanner's starting step
(``hyperode.adapt.starting_step``) on the first training batch, with the training
method's order, never below ``T/max_steps``. It is computed at the first
``on_after_backward`` (the callback API gives no batch before), so the first
iteration trains with the configured solver and the next ones with ``h``.

The decision is ``StepRule.decide``, a pure function of the accuracies (a stub can
drive it); ``StepAdaptation`` is the ``hyperode.experiments.Callback`` around it.
Checks run at iterations ``every, 2*every, ...`` (the reference code's
``(iter + 1) % 50 == 0``). Accuracies come from ``state.evaluate`` (eval mode, no
gradients, the training RNG untouched); their forward NFE are logged separately
from the training NFE.

Logged into the iteration's record (``metrics.jsonl``) at each check:
``adapt_step`` (the step from now on), ``adapt_num_steps``, ``adapt_acc_train``,
``adapt_acc_test``, ``adapt_acc_proposed`` (when a grown step was re-checked),
``adapt_action``, ``adapt_nfe`` (forward NFE of this check's evaluations) and
``adapt_nfe_total`` (all checks so far).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..nn import SolverConfig
from ..nn.callbacks import TrainState
from ..nn.odes import neural_odes
from .checking import checking_solver, method_order, step_of
from .logged import AdaptationLog
from .starting_step import model_starting_step

#: Actions of ``StepRule.decide``.
HALVE, HALVE_TO_CAP, AT_CAP, GROW, REJECT_GROWTH, AT_SPAN = (
    "halve", "halve_to_cap", "at_max_steps", "grow", "reject_growth", "at_span")


@dataclass(frozen=True)
class StepDecision:
    """The outcome of one check: the step to use from now on and why.

    Attributes:
        h: the new step.
        action: one of ``halve``, ``halve_to_cap``, ``at_max_steps`` (check failed),
            ``grow``, ``reject_growth``, ``at_span`` (check passed).
        proposed: the grown step that was re-checked (``None`` if none was).
        acc_proposed: the training solver's accuracy at ``proposed``.
    """

    h: float
    action: str
    proposed: float | None = None
    acc_proposed: float | None = None


@dataclass(frozen=True)
class StepRule:
    """Algorithm 2's decision, without any model (see the module docstring).

    Args:
        span: the integration length ``T``.
        threshold: the largest accuracy gap that counts as solver-independent.
        max_steps: the most steps over the span.
        growth: the growth factor of a passed check (1.1).
    """

    span: float = 1.0
    threshold: float = 0.1
    max_steps: int = 500
    growth: float = 1.1

    def __post_init__(self) -> None:
        if not (self.span > 0 and math.isfinite(self.span)):
            raise ValueError(f"StepRule: span must be a finite number > 0, got {self.span!r}")
        if not (0 <= self.threshold < 1):
            raise ValueError(f"StepRule: threshold must lie in [0, 1), got {self.threshold!r}")
        if not isinstance(self.max_steps, int) or self.max_steps < 1:
            raise ValueError(f"StepRule: max_steps must be an int >= 1, got {self.max_steps!r}")
        if not self.growth > 1:
            raise ValueError(f"StepRule: growth must be > 1, got {self.growth!r}")

    def failed(self, acc_a: float, acc_b: float) -> bool:
        """Whether two accuracies differ by more than the threshold."""
        return abs(acc_a - acc_b) > self.threshold

    def shrink(self, h: float) -> tuple[float, str]:
        """The step after a failed check: ``h/2``, or halfway to ``max_steps`` steps."""
        n = self.span / h
        if n >= self.max_steps * (1 - 1e-9):
            return h, AT_CAP
        if 2 * n > self.max_steps:
            return self.span / ((n + self.max_steps) / 2), HALVE_TO_CAP
        return h / 2, HALVE

    def decide(self, h: float, acc_train: float, acc_test: float,
               accuracy_at: Callable[[float], float]) -> StepDecision:
        """One check. ``accuracy_at(h')`` returns the training solver's accuracy at step
        ``h'`` on the same batch; it is called at most once, only to re-check growth."""
        if not (h > 0 and math.isfinite(h)):
            raise ValueError(f"StepRule.decide: h must be a finite number > 0, got {h!r}")
        if self.failed(acc_train, acc_test):
            new, action = self.shrink(h)
            return StepDecision(new, action)
        proposed = min(self.growth * h, self.span)
        if proposed <= h:
            return StepDecision(h, AT_SPAN)
        acc = float(accuracy_at(proposed))
        if self.failed(acc_test, acc):
            return StepDecision(h, REJECT_GROWTH, proposed, acc)
        return StepDecision(proposed, GROW, proposed, acc)


def _span_of(state: TrainState) -> float:
    nodes = neural_odes(state.model)
    if not nodes:
        raise ValueError("StepAdaptation: the model contains no NeuralODE")
    s0, s1 = nodes[0].t_span
    return abs(s1 - s0)


class StepAdaptation(AdaptationLog):
    """Adapt the step of a fixed-step training solver (Ott et al., Algorithm 2).

    Args:
        every: check every ``every`` iterations (50).
        threshold: accuracy gap above which the step is halved (0.1).
        max_steps: the most steps over the integration span (500).
        growth: growth factor after a passed check (1.1).
        factor: the test solver's global error is ``factor`` times smaller (50).
        test_method: the test method (default: Euler -> midpoint, midpoint -> rk4).
        initial_step: ``"hairer"`` (the starting-step algorithm on the first batch),
            ``"config"`` (start from the configured solver's step) or a number.
        rtol, atol: weights of the starting-step norm (default: unweighted).

    The adapted step, the check NFE, ``history`` (one dict per check, the logged values)
    and ``settings()`` are stored in ``state_dict``: a resumed run continues with them
    (``hyperode.adapt.logged``).
    """

    value_key = "h"

    def __init__(self, every: int = 50, threshold: float = 0.1, max_steps: int = 500,
                 growth: float = 1.1, factor: float = 50.0, test_method: str | None = None,
                 initial_step: str | float = "hairer", rtol: float = 0.0,
                 atol: float = 1.0) -> None:
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"StepAdaptation: every must be an int >= 1, got {every!r}")
        if not (initial_step in ("hairer", "config") or (
                isinstance(initial_step, (int, float)) and not isinstance(initial_step, bool)
                and initial_step > 0)):
            raise ValueError(f"StepAdaptation: initial_step must be 'hairer', 'config' or a "
                             f"number > 0, got {initial_step!r}")
        if factor <= 1:
            raise ValueError(f"StepAdaptation: factor must be > 1, got {factor!r}")
        StepRule(threshold=threshold, max_steps=max_steps, growth=growth)  # validates
        self.every, self.threshold, self.max_steps, self.growth = (
            every, threshold, max_steps, growth)
        self.factor, self.test_method, self.initial_step = factor, test_method, initial_step
        self.rtol, self.atol = rtol, atol
        super().__init__()
        self.h: float | None = None

    # ------------------------------------------------------------------ helpers

    def settings(self) -> dict[str, Any]:
        return {"every": self.every, "threshold": self.threshold,
                "max_steps": self.max_steps, "growth": self.growth, "factor": self.factor,
                "test_method": self.test_method}

    def _train_solver(self, state: TrainState) -> SolverConfig:
        solver = state.solver
        if solver is None or not solver.is_fixed or not isinstance(solver.method, str):
            raise ValueError(f"StepAdaptation needs a fixed-step training solver (euler, "
                             f"midpoint, rk4 with step_size or num_steps), got "
                             f"{solver.describe() if solver else None!r}")
        return solver

    def _rule(self, span: float) -> StepRule:
        return StepRule(span=span, threshold=self.threshold, max_steps=self.max_steps,
                        growth=self.growth)

    def _start(self, state: TrainState, solver: SolverConfig, span: float) -> None:
        if self.initial_step == "config":
            h = step_of(solver, span)
        elif self.initial_step == "hairer":
            x = state.batch[0] if state.batch is not None else None
            if x is None:
                raise ValueError("StepAdaptation: no batch to compute the starting step on")
            h = model_starting_step(state.model, x, method_order(solver.method_name),
                                    rtol=self.rtol, atol=self.atol)
        else:
            h = float(self.initial_step)
        self.h = min(max(h, span / self.max_steps), span)
        state.set_solver(solver.replace(step_size=self.h))
        self._pending = {"adapt_step": self.h, "adapt_num_steps": math.ceil(span / self.h - 1e-9),
                         "adapt_action": "start"}

    # ------------------------------------------------------------------ hooks

    def on_after_backward(self, state: TrainState) -> None:
        solver = self._train_solver(state)
        span = _span_of(state)
        if self.h is None:
            self._start(state, solver, span)
            return
        if (state.iteration + 1) % self.every != 0:
            return
        if state.iteration + 1 >= state.config.iterations:
            # a change now would take effect only in the final evaluation, which must
            # use the solver the model was trained with
            return
        # the solver in use, not self.h: under torchrun rank 0's solver is copied to the
        # other ranks after each iteration, so every rank checks the same step
        h = step_of(solver, span)
        train = solver.replace(step_size=h)
        test = checking_solver(train, factor=self.factor, test_method=self.test_method, span=span)
        res_train = state.evaluate(state.batch, train)
        res_test = state.evaluate(state.batch, test)
        nfe = [res_train["nfe"], res_test["nfe"]]

        def accuracy_at(h_new: float) -> float:
            res = state.evaluate(state.batch, solver.replace(step_size=h_new))
            nfe.append(res["nfe"])
            return res["accuracy"]

        decision = self._rule(span).decide(h, res_train["accuracy"], res_test["accuracy"],
                                           accuracy_at)
        self.h = decision.h
        if decision.h != h:
            state.set_solver(solver.replace(step_size=decision.h))
        entry = {"iteration": state.iteration + 1, "adapt_step": decision.h,
                 "adapt_num_steps": math.ceil(span / decision.h - 1e-9),
                 "adapt_acc_train": res_train["accuracy"], "adapt_acc_test": res_test["accuracy"],
                 "adapt_action": decision.action, "adapt_test_solver": test.describe()}
        if decision.acc_proposed is not None:
            entry["adapt_acc_proposed"] = decision.acc_proposed
        self._record(entry, sum(nfe))
