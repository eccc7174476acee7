"""``ContinuousDepthModel``: the hypersolver paper's Neural ODE, eq. (1).

    z(0) = h_x(x),     dz/ds = f(s, x, z),     y = h_y(z(S))

``h_x`` is the input map (normalisation, augmentation or a learned lift), ``f`` the
vector field integrated by a ``NeuralODE`` and ``h_y`` the output map (pooling and
a linear classifier, say). With ``data_control=True`` the field also sees the input
``x`` (concatenated to the state along dim 1), otherwise ``f(s, x, z) = f(s, z)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import Tensor, nn

from .fields import DataControlled
from .node import NeuralODE
from .solver_config import SolverConfig


class ContinuousDepthModel(nn.Module):
    """``x -> h_y(ODESolve(f, h_x(x), t_span))``.

    Args:
        input_map: ``h_x``, e.g. ``nn.Sequential(nn.BatchNorm2d(1), LearnedAugment(...))``;
            ``nn.Identity()`` when the data is the initial state.
        node: the ``NeuralODE`` (exposed as ``.node``: swap its solver there, or through
            ``model.solver`` / ``model.using(cfg)``).
        output_map: ``h_y``, applied to ``z(t_span[1])``.
        data_control: feed ``x`` to the vector field, ``f(s, x, z) = field(s, [z, x])``.
            The node's field is wrapped in ``DataControlled`` here (unless it already
            is one), so its input must have ``C + C_x`` channels/features; ``x`` must
            match the state ``h_x(x)`` in every dim but dim 1. ``x`` is handed to the
            solve as a closure on each forward (see ``DataControlled``), so it is never
            stored on a module and cannot go stale between batches.

    Shapes: ``x`` whatever ``input_map`` takes (``[B, C, H, W]`` or ``[B, D]``); returns
    ``output_map``'s output (``[B, n_classes]`` for the classifiers in
    ``hyperode.nn.architectures``).
    """

    def __init__(self, input_map: nn.Module, node: NeuralODE, output_map: nn.Module,
                 data_control: bool = False):
        super().__init__()
        for name, value in (("input_map", input_map), ("output_map", output_map)):
            if not isinstance(value, nn.Module):
                raise ValueError(f"ContinuousDepthModel: {name} must be a torch.nn.Module, "
                                 f"got {type(value).__name__}")
        if not isinstance(node, NeuralODE):
            raise ValueError(f"ContinuousDepthModel: node must be a NeuralODE, "
                             f"got {type(node).__name__}")
        if not isinstance(data_control, bool):
            raise ValueError(f"ContinuousDepthModel: data_control must be a bool, "
                             f"got {data_control!r}")
        controlled = isinstance(node.vector_field, DataControlled)
        if data_control and not controlled:
            node.vector_field = DataControlled(node.vector_field)
        elif controlled and not data_control:
            raise ValueError("ContinuousDepthModel: node's vector field is DataControlled; "
                             "pass data_control=True")
        self.input_map = input_map
        self.node = node
        self.output_map = output_map
        self.data_control = data_control

    @property
    def solver(self) -> SolverConfig:
        return self.node.solver

    @solver.setter
    def solver(self, value: SolverConfig) -> None:
        self.node.solver = value

    @contextmanager
    def using(self, solver: SolverConfig) -> Iterator[ContinuousDepthModel]:
        """Temporarily evaluate with ``solver`` (see ``NeuralODE.using``)."""
        with self.node.using(solver):
            yield self

    def forward(self, x: Tensor) -> Tensor:
        z0 = self.input_map(x)
        return self.output_map(self.node(z0, control=x if self.data_control else None))

    def trajectory(self, x: Tensor, t_eval: Tensor) -> Tensor:
        """The hidden state at ``t_eval`` (starting at ``t_span[0]``):
        ``[len(t_eval), *h_x(x).shape]``."""
        return self.node(self.input_map(x), t_eval,
                         control=x if self.data_control else None)
