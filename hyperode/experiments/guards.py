"""The divergence guard of a training run: a step cap on every solve.

Every solve of a run takes at most ``max_steps_per_solve`` steps (default
``MAX_STEPS_PER_SOLVE``); while that is not set, a training solve of an adaptive
method also takes at most ``NFE_EXPLOSION_FACTOR`` times the steps of the longest
adaptive training solve of the earlier iterations (at least ``NFE_EXPLOSION_FLOOR``),
so a model whose NFE explodes stops within one iteration. The cap is applied as
``max_num_steps`` of the solvers of the model's Neural ODEs, inside ``caps``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from ..nn import NeuralODE, SolverConfig
from .config import MAX_STEPS_PER_SOLVE, NFE_EXPLOSION_FACTOR, NFE_EXPLOSION_FLOOR


class SolveGuard:
    """Step caps of one run's solves.

    Args:
        nodes: the model's Neural ODEs.
        max_steps_per_solve: the run's fixed cap (``None``: the default and relative
            caps).

    ``longest`` (the longest adaptive training solve so far, ``None`` before the first)
    is part of a checkpoint: a resumed run continues with the same cap.
    """

    def __init__(self, nodes: Sequence[NeuralODE], max_steps_per_solve: int | None) -> None:
        self.nodes = list(nodes)
        self.max_steps_per_solve = max_steps_per_solve
        self.longest: int | None = None
        self._capped: dict[tuple[SolverConfig, int, bool], SolverConfig] = {}
        self._fixed: dict[SolverConfig, bool] = {}

    def hard_cap(self) -> int:
        """The most steps any solve of this run may take."""
        return self.max_steps_per_solve or MAX_STEPS_PER_SOLVE

    def training_cap(self) -> tuple[int, str]:
        """The step cap of this iteration's training solves and which cap it is
        (``"explicit"``, ``"default"`` or ``"explosion"``)."""
        hard = self.hard_cap()
        if self.max_steps_per_solve is not None:
            return hard, "explicit"
        if self.longest is None:
            return hard, "default"
        relative = max(NFE_EXPLOSION_FLOOR, NFE_EXPLOSION_FACTOR * self.longest)
        return (hard, "default") if relative >= hard else (relative, "explosion")

    def capped(self, solver: SolverConfig, cap: int, relative: bool) -> SolverConfig:
        """``solver`` with ``max_num_steps`` at most ``cap`` (the relative cap only for
        adaptive solves; fixed grids take a known number of steps)."""
        key = (solver, cap, relative)
        capped = self._capped.get(key)
        if capped is None:
            if relative and self.is_fixed(solver):
                cap = self.hard_cap()
            options = dict(solver.options)
            options["max_num_steps"] = min(cap, int(options.get("max_num_steps", cap)))
            capped = solver.replace(options=options)
            if len(self._capped) > 64:
                self._capped.clear()
            self._capped[key] = capped
        return capped

    @contextlib.contextmanager
    def caps(self, cap: int, relative: bool = False) -> Iterator[None]:
        """Every Neural ODE of the model solves with at most ``cap`` steps inside."""
        with contextlib.ExitStack() as stack:
            for node in self.nodes:
                stack.enter_context(node.using(self.capped(node.solver, cap, relative)))
            yield

    def is_fixed(self, solver: SolverConfig) -> bool:
        fixed = self._fixed.get(solver)
        if fixed is None:
            fixed = self._fixed[solver] = solver.is_fixed
        return fixed

    def longest_adaptive_solve(self) -> int:
        """Steps of the longest adaptive solve of this iteration's forward and backward
        pass (0 if none): the reference of the NFE explosion guard."""
        longest = 0
        for node in self.nodes:
            if self.is_fixed(node.solver):
                continue
            for stats in (node.last_stats, node.last_backward_stats):
                if stats is not None:
                    longest = max(longest, int(stats.steps))
        return longest

    def record(self, longest: int) -> None:
        """An iteration whose longest adaptive solve took ``longest`` steps succeeded."""
        if longest:
            self.longest = max(self.longest or 0, longest)
