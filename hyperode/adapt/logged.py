"""What the two adaptation callbacks share: a history of checks, the NFE the checks
cost (kept apart from training NFE), handing the latest check to the run's metrics at
the end of the iteration, and the state a checkpoint keeps.

Resume: ``state_dict`` holds the adapted value (``h`` or ``tol``), the check NFE so far,
the whole history and the settings that decide future checks; ``load_state_dict``
restores them, so a resumed run continues with the adapted solver and its history and
ends bit-for-bit where an uninterrupted run ends (``tests/test_adapt.py``). A resumed
run whose callback was built with different settings (``every``, ``threshold``, ...)
would silently run another algorithm: it is refused with a ``ConfigError`` naming the
setting.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from ..nn.callbacks import Callback, TrainState


class AdaptationLog(Callback):
    """Base of ``StepAdaptation`` and ``ToleranceAdaptation``; ``value_key`` names the
    adapted quantity (``"h"`` or ``"tol"``) in ``state_dict``."""

    value_key = "value"

    def __init__(self) -> None:
        self.nfe_total = 0.0
        self.history: list[dict[str, Any]] = []
        self._pending: dict[str, Any] = {}

    def settings(self) -> dict[str, Any]:
        """The constructor arguments that decide future checks (JSON-compatible)."""
        return {}

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
                "history": self.history, "settings": self.settings()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state.get("settings")
        if saved is not None:  # checkpoints written before settings were stored: no check
            now = self.settings()
            for key, value in saved.items():
                if key in now and _as_saved(now[key]) != value:
                    raise ConfigError(key, f"is {now[key]!r} but the run being resumed "
                                           f"adapted with {key}={value!r}; resume with the "
                                           f"same adaptation settings")
        setattr(self, self.value_key, state.get(self.value_key))
        self.nfe_total = float(state.get("nfe_total", 0.0))
        self.history = [dict(entry) for entry in state.get("history", [])]
        self._pending = {}  # a record of the interrupted session must not leak into this one


def _as_saved(value: Any) -> Any:
    """``value`` as it reads back from the checkpoint's JSON (tuples become lists)."""
    return list(value) if isinstance(value, tuple) else value
