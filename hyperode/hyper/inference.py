"""A fast inference path: a fixed-step solve as a plain tensor loop, compiled.

``FixedGridSolve`` runs ``K`` uniform steps of a fixed-step method (a hypersolver or a
tableau) with none of ``hyperode.solve``'s bookkeeping (argument checks, statistics,
the non-finite check's host sync), so ``torch.compile`` can trace the whole solve
into one graph: every step's time and size are Python constants. It runs the one
fixed-grid loop (``hyperode.solvers.fixed.integrate_fixed``), so eagerly it performs
exactly the operations of ``solve(..., options=dict(num_steps=K))`` and its output
equals the solver's bit for bit.

``compile_solve`` wraps it in ``torch.compile``; on a CUDA state it uses CUDA graphs
(``mode="reduce-overhead"``) unless ``cuda_graphs=False``, marking a new step before
each call and cloning the output (a graph's output buffers are reused by the next
replay).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any, cast

import torch
from torch import Tensor, nn

from ..solvers.fixed import Grid, integrate_fixed
from ..solvers.methods import get_method
from ..solvers.problem import State, StateLayout, VectorField
from ..solvers.stats import SolverStats
from ..solvers.step import StepMethod
from ..solvers.tableau import ButcherTableau
from .fitting import uniform_mesh


class _PlainField:
    """``f(t, y)`` on the flat state with ``t`` a float; no counting, no checks."""

    def __init__(self, func: Callable, layout: StateLayout):
        self.func = func
        self.layout = layout

    def __call__(self, t: float, y: Tensor) -> Tensor:
        layout = self.layout
        t_tensor = torch.full((), t, dtype=y.dtype, device=y.device)
        return layout.flatten(self.func(t_tensor, layout.unflatten(y)))


class FixedGridSolve(nn.Module):
    """``z0 -> z(s1)`` (or the mesh trajectory) by ``num_steps`` uniform steps.

    Args:
        field: ``f(t, z)`` (an ``nn.Module`` is registered, so ``.to()`` moves it).
        method: a ``HyperSolver``, a tableau or a method name (fixed-grid use).
        t_span: ``(s0, s1)``.
        num_steps: ``K >= 1``.
        trajectory: return ``[K + 1, *z0.shape]`` (every mesh point) instead of ``z(s1)``.

    Shapes: ``z0`` a tensor ``[B, ...]`` or a tuple of them; output ``z0``'s structure.
    """

    def __init__(self, field: Callable, method: str | ButcherTableau | StepMethod,
                 t_span: Sequence[float] = (0.0, 1.0), num_steps: int = 10, *,
                 trajectory: bool = False):
        super().__init__()
        if not callable(field):
            raise ValueError(f"FixedGridSolve: field must be callable f(t, z), got {field!r}")
        self.field = field
        self.method = get_method(method)
        self.mesh = uniform_mesh(t_span, num_steps)
        self.trajectory = bool(trajectory)

    def forward(self, z0: State) -> State:
        layout = StateLayout(z0)
        f = _PlainField(self.field, layout)
        mesh = self.mesh
        t_out = mesh if self.trajectory else [mesh[0], mesh[-1]]
        ys = integrate_fixed(cast(VectorField, f), self.method, layout.flatten(z0), t_out,
                             Grid(mesh[0], mesh[-1], points=tuple(mesh)), SolverStats())
        return layout.unflatten(torch.stack(ys)) if self.trajectory else layout.unflatten(ys[-1])


class CompiledSolve:
    """A ``FixedGridSolve`` compiled with ``torch.compile`` (``compile_solve``)."""

    def __init__(self, module: FixedGridSolve, *, cuda_graphs: bool = True,
                 no_grad: bool = True, **compile_kwargs: Any):
        if not hasattr(torch, "compile"):
            raise RuntimeError("compile_solve needs torch.compile (PyTorch >= 2.0)")
        self.module = module
        self.cuda_graphs = bool(cuda_graphs)
        self.no_grad = bool(no_grad)
        self.compile_kwargs = compile_kwargs
        self._compiled: dict[bool, Callable] = {}

    def __call__(self, z0: State) -> State:
        ref = z0[0] if isinstance(z0, tuple) else z0
        graphs = self.cuda_graphs and ref.is_cuda
        fn = self._compiled.get(graphs)
        if fn is None:
            kwargs = dict(self.compile_kwargs)
            if graphs:
                kwargs["mode"] = "reduce-overhead"
            fn = self._compiled[graphs] = torch.compile(self.module, **kwargs)
        with torch.no_grad() if self.no_grad else contextlib.nullcontext():
            if graphs:
                torch.compiler.cudagraph_mark_step_begin()
                out = fn(z0)
                return tuple(m.clone() for m in out) if isinstance(out, tuple) else out.clone()
            return fn(z0)


def compile_solve(field: Callable, method: str | ButcherTableau | StepMethod,
                  t_span: Sequence[float] = (0.0, 1.0), num_steps: int = 10, *,
                  trajectory: bool = False, cuda_graphs: bool = True, no_grad: bool = True,
                  **compile_kwargs: Any) -> CompiledSolve:
    """A compiled fixed-step solve ``z0 -> z(s1)`` (see ``FixedGridSolve``).

    ``compile_kwargs`` go to ``torch.compile`` (e.g. ``backend=``, ``dynamic=``); on
    CUDA states ``mode="reduce-overhead"`` (CUDA graphs) is used unless
    ``cuda_graphs=False``. ``no_grad`` (default) runs without autograd, as inference
    does; ``no_grad=False`` compiles forward and backward (training through the grid).
    The first call of each input shape compiles (seconds to minutes).

    When compiling pays (``benchmarks/compiled.py``): the compiled call can only remove
    what the eager solve spends outside the vector field's own kernels, so the speed-up
    is at most ``eager / (NFE x one bare f call)``; and the compile time must be earned
    back, after ``compile_s / (eager - compiled)`` calls of the same shape. On a CPU with
    a convolutional field (the digits model, batch 128) inductor calls the same
    convolution kernels as eager: f is 65-86% of the eager time, and the measured gains
    were 1.06-1.13x for inference and 1.21x for training, earned back after 10^4 calls
    or more. Compile for long-running inference or training loops with a fixed batch
    shape whose time goes to many cheap pointwise steps (small MLP fields, many steps,
    launch-bound GPU batches, where CUDA graphs also remove the per-kernel launch);
    stay eager when f is dominated by a few large kernels (convolutions, big matmuls)
    or when shapes change from call to call.
    """
    return CompiledSolve(FixedGridSolve(field, method, t_span, num_steps,
                                        trajectory=trajectory),
                         cuda_graphs=cuda_graphs, no_grad=no_grad, **compile_kwargs)
