"""What the two adaptation callbacks share: a history of checks, the NFE the checks
cost (kept apart from training NFE), and handing the latest check to the run's
metrics at the end of the iteration."""

from __future__ import annotations

from typing import Any

from ..experiments.callbacks import Callback, TrainState


class AdaptationLog(Callback):
    """Base of ``StepAdaptation`` and ``ToleranceAdaptation``; ``value_key`` names the
    adapted quantity (``"h"`` or ``"tol"``) in ``state_dict``."""

    value_key = "value"

    def __init__(self) -> None:
        self.nfe_total = 0.0
        self.history: list[dict[str, Any]] = []
        self._pending: dict[str, Any] = {}

    def _record(self, entry: dict[str, Any], check_nfe: float) -> None:
        """Log one check (``entry`` holds ``iteration`` and the ``adapt_*`` figures)."""
        self.nfe_total += check_nfe
        entry = {**entry, "adapt_nfe": float(check_nfe), "adapt_nfe_total": self.nfe_total}
        self.history.append(entry)
        self._pending = {k: v for k, v in entry.items() if k != "iteration"}

    def on_iteration_end(self, state: TrainState) -> None:
        if self._pending:
            state.metrics.update(self._pending)
            self._pending = {}

    def state_dict(self) -> dict[str, Any]:
        return {self.value_key: getattr(self, self.value_key), "nfe_total": self.nfe_total,
                "history": self.history}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        setattr(self, self.value_key, state.get(self.value_key))
        self.nfe_total = float(state.get("nfe_total", 0.0))
        self.history = list(state.get("history", []))
