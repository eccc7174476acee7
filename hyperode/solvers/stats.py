"""Statistics that travel with a solve (never counters on the user's module)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class SolverStats:
    """Counts for one solve.

    Attributes:
        nfe: evaluations of the vector field, including the starting-step
            estimate, the first stage at ``t0`` and any Hermite end point.
        nfe_correction: evaluations of a learned correction (a hypersolver's
            network ``g``: one per step while it is enabled); never part of ``nfe``.
        accepted, rejected: adaptive steps accepted and rejected; a fixed-grid
            solve accepts every step.
        n_jacobian, n_lu, n_newton, newton_failures: implicit methods' Jacobian
            evaluations, LU factorisations, Newton iterations and Newton solves that
            did not converge (each shrinks the step or, on a fixed grid, raises).
        accepted_ts: end times of accepted steps, when ``record_steps=True``.
        rejected_ts: start times of rejected attempts, when ``record_steps=True``.
    """

    nfe: int = 0
    nfe_correction: int = 0
    accepted: int = 0
    rejected: int = 0
    n_jacobian: int = 0
    n_lu: int = 0
    n_newton: int = 0
    newton_failures: int = 0
    accepted_ts: list[float] | None = None
    rejected_ts: list[float] | None = None

    def add(self, part: SolverStats) -> None:
        """Add the counts of ``part`` (another solve, e.g. one interval of a backward
        adjoint pass) to these; recorded step times are appended when both record."""
        self.nfe += part.nfe
        self.nfe_correction += part.nfe_correction
        self.accepted += part.accepted
        self.rejected += part.rejected
        self.n_jacobian += part.n_jacobian
        self.n_lu += part.n_lu
        self.n_newton += part.n_newton
        self.newton_failures += part.newton_failures
        if self.accepted_ts is not None and part.accepted_ts is not None:
            self.accepted_ts.extend(part.accepted_ts)
            if self.rejected_ts is None:
                self.rejected_ts = []
            self.rejected_ts.extend(part.rejected_ts or [])

    @property
    def steps(self) -> int:
        """Attempted steps: accepted plus rejected."""
        return self.accepted + self.rejected

    def as_dict(self) -> dict:
        out: dict[str, Any] = {
            "nfe": self.nfe, "nfe_correction": self.nfe_correction, "steps": self.steps,
            "accepted": self.accepted, "rejected": self.rejected}
        if self.n_jacobian or self.n_lu or self.n_newton or self.newton_failures:
            out.update(n_jacobian=self.n_jacobian, n_lu=self.n_lu, n_newton=self.n_newton,
                       newton_failures=self.newton_failures)
        if self.accepted_ts is not None:
            out["accepted_ts"] = list(self.accepted_ts)
            out["rejected_ts"] = list(self.rejected_ts or [])
        return out
