"""Hamiltonian vector fields (Greydanus et al. 2019; Zhong et al., Symplectic ODE-Net, 2020).

A network learns a scalar energy ``H_theta(q, p)`` and the dynamics are Hamilton's
equations::

    dq/dt =  dH/dp(q, p),        dp/dt = -dH/dq(q, p),

so the learnt flow conserves ``H_theta`` exactly (up to the solver's error) and is
symplectic. The gradient is taken with ``torch.autograd.grad(H.sum(), ...,
create_graph=True)``, so the field is differentiable in ``(q, p)`` and ``theta``:
it works with backpropagation through the solver and inside ``odeint_adjoint``'s
backward pass (which evaluates ``f`` under ``enable_grad`` with a fresh leaf
state), and under ``torch.no_grad()`` (where it still computes the gradient
locally, without keeping a graph).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn


class HamiltonianField(nn.Module):
    """``f(t, y) = (dH/dp, -dH/dq)`` for a learnt or given ``H = net(q, p)``.

    Args:
        net: ``net(q, p) -> H`` with ``q, p`` of shape ``[B, d]`` and ``H`` of shape
            ``[B]`` (or ``[B, 1]``); any module or callable (e.g. ``MLPHamiltonian``).

    The state is either a tuple ``(q, p)`` (returns the tuple
    ``(dq/dt, dp/dt)``) or one tensor ``[B, 2d]`` laid out as ``[q, p]`` (returns
    ``[B, 2d]``). ``t`` is ignored (the system is autonomous).
    """

    def __init__(self, net: nn.Module | Callable[[Tensor, Tensor], Tensor]):
        super().__init__()
        if not callable(net):
            raise ValueError(f"HamiltonianField: net must be callable, got {type(net).__name__}")
        self.net = net

    def hamiltonian(self, y: Tensor | tuple[Tensor, Tensor]) -> Tensor:
        """``H(q, p)`` as ``[B]`` for either state layout."""
        q, p = self._split(y)
        return self._energy(q, p)

    def forward(self, t: Tensor, y: Tensor | tuple[Tensor, Tensor]):
        keep_graph = torch.is_grad_enabled()
        is_tuple = isinstance(y, (tuple, list))
        with torch.enable_grad():
            if is_tuple:
                if len(y) != 2:
                    raise ValueError(f"HamiltonianField: a tuple state must be (q, p), got "
                                     f"{len(y)} members")
                q, p = (_track(m, keep_graph) for m in y)
                energy = self._energy(q, p)
                dq, dp = _grad(energy, (q, p), keep_graph)
                return dp, -dq
            y = _track(y, keep_graph)
            q, p = self._split(y)
            energy = self._energy(q, p)
            (dy,) = _grad(energy, (y,), keep_graph)
            dh_dq, dh_dp = dy.chunk(2, dim=-1)
            return torch.cat([dh_dp, -dh_dq], dim=-1)

    def _split(self, y: Tensor | tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        if isinstance(y, (tuple, list)):
            return y[0], y[1]
        if y.shape[-1] % 2:
            raise ValueError(f"HamiltonianField: a tensor state must be [..., 2d] = [q, p], "
                             f"got last dimension {y.shape[-1]}")
        q, p = y.chunk(2, dim=-1)
        return q, p

    def _energy(self, q: Tensor, p: Tensor) -> Tensor:
        energy = self.net(q, p)
        if energy.dim() == q.dim() and energy.shape[-1] == 1:
            energy = energy.squeeze(-1)
        if energy.shape != q.shape[:-1]:
            raise ValueError(f"HamiltonianField: net(q, p) must return H of shape "
                             f"{tuple(q.shape[:-1])}, got {tuple(energy.shape)}")
        return energy


def _track(x: Tensor, keep_graph: bool) -> Tensor:
    """``x`` itself when gradients are being recorded and ``x`` is part of the graph (so
    that they flow back through it); otherwise a fresh leaf requiring grad.

    Under ``no_grad`` a fresh leaf is needed even when ``x.requires_grad``: a view made in
    no-grad mode of a tensor that requires grad reports ``requires_grad=True`` but is not
    connected to the graph that operations on it build, so ``autograd.grad`` with respect
    to it would see an unused input.
    """
    if keep_graph and x.requires_grad:
        return x
    return x.detach().requires_grad_(True)


def _grad(energy: Tensor, inputs: tuple[Tensor, ...], keep_graph: bool) -> tuple[Tensor, ...]:
    grads = torch.autograd.grad(energy.sum(), inputs, create_graph=keep_graph,
                                allow_unused=True)
    return tuple(torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs))


class MLPHamiltonian(nn.Module):
    """``H(q, p) = MLP([q, p])``: ``[B, d], [B, d] -> [B]``, with a smooth activation.

    ``depth`` hidden layers of ``width`` units. The activation must be twice
    differentiable (the field is a gradient, and training differentiates it again):
    ``"tanh"`` (default) or ``"softplus"``.
    """

    def __init__(self, dim: int = 1, width: int = 64, depth: int = 2, activation: str = "tanh"):
        super().__init__()
        acts = {"tanh": nn.Tanh, "softplus": nn.Softplus}
        if activation not in acts:
            raise ValueError(f"MLPHamiltonian: activation must be one of {', '.join(acts)} "
                             f"(smooth), got {activation!r}")
        layers: list[nn.Module] = []
        size = 2 * dim
        for _ in range(depth):
            layers += [nn.Linear(size, width), acts[activation]()]
            size = width
        layers.append(nn.Linear(size, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, q: Tensor, p: Tensor) -> Tensor:
        return self.net(torch.cat([q, p], dim=-1)).squeeze(-1)
