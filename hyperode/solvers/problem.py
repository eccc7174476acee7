"""The user's vector field as the integrators see it.

Integrators work on one tensor: the state itself, or for a tuple state the
concatenation of its flattened members. ``VectorField`` hides that, turns the
integrators' float times into tensors, counts evaluations, and checks every
output's structure, shape and dtype (metadata only, no host synchronisation) so that
a mismatch fails loudly instead of broadcasting or silently changing the solution's
dtype. ``NudgedField`` evaluates ``f`` just inside an interval's ends (torchdiffeq's
``perturb``, and the near side of a ``jump_t`` discontinuity).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, cast

import torch
from torch import Tensor

State = Tensor | tuple[Tensor, ...]


class StateLayout:
    """How a tensor or tuple-of-tensors state maps onto one flat solver tensor."""

    def __init__(self, y0: State):
        self.is_tuple = isinstance(y0, tuple)
        members = y0 if isinstance(y0, tuple) else (y0,)
        self.shapes = tuple(m.shape for m in members)
        self.numels = tuple(math.prod(s) for s in self.shapes)
        self.dtype = members[0].dtype
        self.device = members[0].device
        # Times reach f as real tensors: the state's dtype, or its real counterpart.
        self.time_dtype = self.dtype.to_real() if self.dtype.is_complex else self.dtype

    def flatten(self, y: State) -> Tensor:
        if not self.is_tuple:
            return cast(Tensor, y)
        return torch.cat([m.reshape(-1) for m in y])

    def unflatten(self, flat: Tensor) -> State:
        """Views into ``flat`` (leading dims of ``flat`` beyond the state are kept)."""
        if not self.is_tuple:
            return flat
        lead = flat.shape[:-1]
        parts = flat.split(self.numels, dim=-1)
        return tuple(p.reshape(lead + s) for p, s in zip(parts, self.shapes))


class VectorField:
    """``f(t, y)`` on the flat state with ``t`` a Python float.

    ``t`` reaches the user's function as a 0-dim tensor in the state's (real) dtype
    and device (as torchdiffeq does). ``nfe`` counts calls. The first output is checked
    in full; later ones by shape, dtype and device only (three attribute comparisons per
    member, no host synchronisation), so a field whose output changes structure, shape,
    dtype or device in the middle of a solve fails at that call with ``ValueError``.
    """

    def __init__(self, func: Callable[[Tensor, State], State], layout: StateLayout, *,
                 context: str = ""):
        # what func returns is checked (_check) before it is used: Any until then
        self.func: Callable[[Tensor, State], Any] = func
        self.layout = layout
        self.context = context  # appended to error messages, e.g. " in the adjoint's ..."
        self.nfe = 0
        self._checked = False
        self._shape = None if layout.is_tuple else layout.shapes[0]
        self._dtype, self._time_dtype, self._device = \
            layout.dtype, layout.time_dtype, layout.device

    def __call__(self, t: float, y: Tensor) -> Tensor:
        self.nfe += 1
        layout = self.layout
        out = self.func(torch.full((), t, dtype=self._time_dtype, device=self._device),
                        layout.unflatten(y))
        shape = self._shape
        if shape is not None and self._checked:  # tensor state: four metadata comparisons
            if type(out) is not Tensor or out.shape != shape or out.dtype != self._dtype \
                    or out.device != self._device:
                self._check(out, t)
            return out
        return self._tuple_output(out, t)

    def at(self, t: Tensor, y: Tensor) -> Tensor:
        """``f`` with ``t`` given as a tensor (kept as it is, e.g. requiring grad: the
        adjoint's backward pass); the output is checked as in ``__call__``."""
        self.nfe += 1
        out = self.func(t, self.layout.unflatten(y))
        shape = self._shape
        if shape is not None and self._checked:
            if type(out) is not Tensor or out.shape != shape or out.dtype != self._dtype \
                    or out.device != self._device:
                self._check(out, t)
            return out
        return self._tuple_output(out, t)

    def _tuple_output(self, out: object, t: float | Tensor) -> Tensor:
        """The first output (any state), or a tuple state's output: checked, flattened."""
        layout = self.layout
        if not self._checked or not isinstance(out, (tuple, list)) \
                or len(out) != len(layout.shapes):
            self._check(out, t)
        else:
            dtype, device = self._dtype, self._device
            for m, s in zip(out, layout.shapes):
                if type(m) is not Tensor or m.shape != s or m.dtype != dtype \
                        or m.device != device:
                    self._check(out, t)
        return layout.flatten(cast(State, out))  # checked above

    def _check(self, out: object, t: float | Tensor) -> None:
        layout = self.layout
        if layout.is_tuple:
            if not isinstance(out, (tuple, list)) or len(out) != len(layout.shapes):
                got = f"{type(out).__name__} of {len(out)}" \
                    if isinstance(out, (tuple, list)) else type(out).__name__
                raise ValueError(
                    f"func must return a tuple of {len(layout.shapes)} tensors like y0, "
                    f"got {got} at t={_fmt_t(t)}{self.context}"
                )
            members = tuple(out)
        else:
            if not isinstance(out, Tensor):
                raise ValueError(f"func must return a tensor like y0, got {type(out).__name__} "
                                 f"at t={_fmt_t(t)}{self.context}")
            members = (out,)
        for i, (m, shape) in enumerate(zip(members, layout.shapes)):
            where = f"func's output[{i}]" if layout.is_tuple else "func's output"
            if not isinstance(m, Tensor):
                raise ValueError(f"{where} must be a tensor, got {type(m).__name__} at "
                                 f"t={_fmt_t(t)}{self.context}")
            if m.shape != shape:
                raise ValueError(f"{where} has shape {tuple(m.shape)} but the state has shape "
                                 f"{tuple(shape)} ({self._at(t)}); f(t, y) must return dy/dt "
                                 f"of y's shape")
            if m.dtype != layout.dtype:
                raise ValueError(f"{where} has dtype {m.dtype} but the state has dtype "
                                 f"{layout.dtype} ({self._at(t)}); cast y0 or the vector field "
                                 f"so they agree")
            if m.device != layout.device:
                raise ValueError(f"{where} is on {m.device} but the state is on {layout.device} "
                                 f"({self._at(t)})")
        self._checked = True


    def _at(self, t: float | Tensor) -> str:
        return f"at t={_fmt_t(t)}, evaluation {self.nfe}{self.context}"


def _fmt_t(t: float | Tensor) -> str:
    """A time for an error message (a tensor is read only here, on the way to raising)."""
    if isinstance(t, Tensor):
        try:
            return repr(float(t.detach()))
        except (RuntimeError, ValueError):  # e.g. inside a torch.func transform
            return "<tensor>"
    return repr(t)


def nudge(t: float, toward: float, dtype: torch.dtype) -> float:
    """The next time after ``t`` towards ``toward`` that is distinct in ``dtype`` (the
    dtype in which ``f`` receives ``t``)."""
    a = torch.tensor(t, dtype=dtype)
    return float(torch.nextafter(a, torch.tensor(toward, dtype=dtype)))


class NudgedField:
    """``f`` with evaluations at the current interval's ends moved just inside it.

    The integrator sets ``interval(t0, t1)`` before each step; a call at exactly
    ``t0`` (when ``start``) is made at the next representable time towards ``t1``, a
    call at exactly ``t1`` (when ``end``) at the next one towards ``t0``. This is
    torchdiffeq's ``perturb`` (both ends), and the near side of a discontinuity
    (``end`` only). Other attributes (``layout``, ``nfe``) are the wrapped field's.
    """

    def __init__(self, f: VectorField, *, start: bool, end: bool):
        self.f = f
        self.layout = f.layout
        self.start, self.end = start, end
        self._d = 0.0  # no interval set: calls pass through
        self._in0 = self._in1 = math.nan

    def interval(self, t0: float, t1: float) -> None:
        """Nudge calls at the ends of ``[t0, t1]`` (``t1`` may be below ``t0``)."""
        dtype = self.layout.time_dtype
        self._d = 1.0 if t1 > t0 else -1.0
        self._in0 = nudge(t0, t1, dtype)
        self._in1 = nudge(t1, t0, dtype)

    def clear(self) -> None:
        """Stop nudging until the next ``interval``."""
        self._d = 0.0

    def __call__(self, t: float, y: Tensor) -> Tensor:
        d = self._d
        if d:  # anything at or beyond an end (rounding of t + c*h included) moves inside
            if self.end and d * (t - self._in1) > 0:
                t = self._in1
            elif self.start and d * (self._in0 - t) > 0:
                t = self._in0
        return self.f(t, y)

    @property
    def nfe(self) -> int:
        return self.f.nfe


CALLBACK_NAMES = ("callback_step", "callback_accept_step", "callback_reject_step")


class Callbacks:
    """torchdiffeq's step callbacks, read from the user's ``func`` as attributes.

    ``callback_step(t0, y0, dt)`` is called before every attempted step,
    ``callback_accept_step(t0, y0, dt)`` / ``callback_reject_step(t0, y0, dt)`` after an
    adaptive step is judged (torchdiffeq's ``rk_common.py`` and ``solvers.py``). ``t0``
    and ``dt`` arrive as 0-dim tensors, ``y0`` in the user's structure (a tuple state as
    a tuple). With ``suffix="_adjoint"`` the ``callback_*_adjoint`` attributes are read
    instead (the backward solve of ``odeint_adjoint``). Absent callbacks cost nothing.
    """

    def __init__(self, func: object, layout: StateLayout, suffix: str = ""):
        self.layout = layout
        self.names = tuple(n + suffix for n in CALLBACK_NAMES
                           if callable(getattr(func, n + suffix, None)))
        self.step, self.accept, self.reject = (
            self._wrap(getattr(func, n + suffix, None)) for n in CALLBACK_NAMES)

    def _wrap(self, fn: Callable | None) -> Callable[[float, Tensor, float], None] | None:
        if not callable(fn):
            return None
        layout = self.layout
        name = getattr(fn, "__name__", "callback")

        def call(t0: float, y0: Tensor, dt: float) -> None:
            kw: dict[str, Any] = dict(dtype=torch.float64, device=layout.device)
            try:
                fn(torch.tensor(t0, **kw), layout.unflatten(y0), torch.tensor(dt, **kw))
            except Exception as e:  # the user's exception, unchanged, with where it happened
                add_note = getattr(e, "add_note", None)  # Python >= 3.11
                if add_note is not None:
                    add_note(f"raised by the step callback {name} at t0={t0!r}, dt={dt!r}")
                raise

        return call
