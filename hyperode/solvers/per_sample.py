"""Per-sample step sizes: every sample of a batch its own time, step size, accept/reject
decision and controller state (``options=dict(per_sample_steps=True)``).

Layout. Dimension 0 of ``y0`` is the batch (``B`` samples); for a tuple state every
member shares it. Internally the state is a ``[B, N]`` matrix of rows, row ``b``
holding sample ``b``'s entries (a tuple state's members concatenated along the row).

Per attempted step (one batched call of the stage loop, ``s - 1`` evaluations of ``f``
on the whole active batch):

- sample ``b`` steps from its own ``t_b`` by its own ``h_b``; the stage states are
  ``y_b + h_b * sum_j a_ij k_j`` and ``f`` is called as ``f(t, y)`` with ``t`` a tensor
  of shape ``[B]`` (``t[b]`` is sample ``b``'s stage time) in the state's real dtype;
- its error ratio is its own: ``norm_b(err_b / (atol + rtol * max(|y0_b|, |y1_b|)))``,
  the norm taken over that sample's entries only (RMS by default; torchdiffeq's mixed
  norm for a tuple state: the max of the members' RMS), so a sample's step sequence does
  not depend on its batch-mates;
- it is accepted or rejected by itself, with its own I- or PI-controller memory, the
  same rules as the shared-step loop in ``adaptive.py`` (clamping to ``[min_step,
  max_step]``, acceptance at ``min_step``, landing exactly on ``t[-1]`` by Hairer's 1%
  rule, no growth right after a rejection);
- a sample whose accepted step passes output times gets its values there from the
  method's dense output inside that step, at its own ``theta``; the cubic Hermite
  interpolant for methods without a continuous extension.

Finished samples. By default the whole batch is evaluated on every call and finished
samples step by ``h = 0`` with their updates masked (``torch.where``), as torchode does:
``f`` always sees all ``B`` rows, so a field that closes over per-sample tensors (a
parameter per sample, a per-sample noise probe) keeps working. With
``compact_finished=True`` the finished rows are dropped from the batch once a quarter
of the active ones are done, so they stop costing evaluations; ``f`` then receives a
shrinking batch and must treat rows independently without per-sample tensors of its
own. ``benchmarks/per_sample.py`` measures both.

Host synchronisation: one per attempted step (one packed read of the samples still
running, those that could not move, the output times passed and whether any sample's
step was accepted). dopri8's three extra dense-output stages are evaluated on the batch
in a step where any sample passes an output time.

Gradients: backpropagation through the solve (``hyperode.odeint``); step sizes and
times carry no gradient, as in the shared-step loop. Every batched step stays in the
graph, the rejected samples' parts masked out: their gradient is zero, unless a
rejected trial step overflowed to inf/NaN, where ``0 * inf`` can make it NaN (as for any
masked update; torchode's too). ``odeint_adjoint`` cannot step
its backward solve per sample (its state holds the parameter adjoints, which have no
batch dimension); its forward solve can, with ``adjoint_options`` not asking for it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import Tensor

from ..errors import MaxStepsExceededError, NonFiniteStateError, StepSizeUnderflowError
from .adaptive import AdaptiveConfig
from .controllers import IController, PIController
from .norms import max_norm, mixed_norm, rms_norm
from .problem import State, StateLayout, VectorField
from .stats import SolverStats
from .step import combine
from .tableau import ButcherTableau

PER_SAMPLE_OPTIONS = frozenset({"per_sample_steps", "compact_finished"})
# Adaptive options the per-sample loop does not implement (named in the error).
UNSUPPORTED_OPTIONS = ("step_t", "jump_t", "record_steps")
COMPACT_FRACTION = 0.25  # drop finished rows once this fraction of the active batch is done
_SHOWN = 8  # sample indices named in an error message


# --------------------------------------------------------------------------- validation


def check_options(step_method: Any, opts: Mapping[str, Any], layout: StateLayout,
                  controller: Any) -> None:
    """Validate ``per_sample_steps``/``compact_finished`` for an adaptive solve of a state
    laid out as ``layout`` (``resolve`` calls this). ``ValueError`` naming the option."""
    for name in PER_SAMPLE_OPTIONS:
        if name in opts and not isinstance(opts[name], bool):
            raise ValueError(f"options['{name}'] must be True or False, got {opts[name]!r}")
    if not opts.get("per_sample_steps", False):
        if opts.get("compact_finished", False):
            raise ValueError("options['compact_finished'] applies only with "
                             "options['per_sample_steps'] = True")
        return
    if not (isinstance(step_method, ButcherTableau) and step_method.adaptive):
        kind = ("an implicit method" if getattr(step_method, "implicit", False)
                else "not an explicit Runge-Kutta tableau")
        raise ValueError(
            f"options['per_sample_steps'] needs an explicit Runge-Kutta method with an "
            f"error estimate (adaptive_heun, fehlberg2, bosh3, dopri5, tsit5, dopri8 or a "
            f"ButcherTableau with b_error); method {step_method.name!r} is {kind}")
    stray = [k for k in UNSUPPORTED_OPTIONS if k in opts]
    if stray:
        raise ValueError(f"options {stray} are not supported with options['per_sample_steps'] "
                         f"(per-sample step counts are in stats.accepted_per_sample / "
                         f"stats.rejected_per_sample)")
    if type(controller) not in (IController, PIController):
        raise ValueError(f"options['per_sample_steps'] runs the I- or PI-controller per "
                         f"sample; got a controller of type {type(controller).__name__}")
    shapes = [tuple(s) for s in layout.shapes]
    if any(len(s) == 0 for s in shapes) or len({s[0] for s in shapes}) != 1:
        raise ValueError(
            f"options['per_sample_steps'] needs the batch as dimension 0 of y0 (of every "
            f"member of a tuple y0, with the same size); got shape(s) {shapes}. (The "
            f"backward solve of odeint_adjoint holds parameter adjoints without a batch "
            f"dimension and cannot step per sample: give adjoint_options without it.)")
    if shapes[0][0] == 0:
        raise ValueError("options['per_sample_steps']: y0 has an empty batch (dimension 0 "
                         "is 0)")


# --------------------------------------------------------------------------- layout, field


class RowLayout:
    """The batched state as rows: ``[B, N]``, row ``b`` = sample ``b``'s entries (tuple
    members concatenated). ``state(rows)`` maps ``[A, N]`` back to the user's structure
    with ``A`` samples; ``rows(flat)``/``flat(rows)`` convert from/to ``StateLayout``'s
    flat tensor (the one the rest of the solvers use)."""

    def __init__(self, layout: StateLayout):
        self.layout = layout
        self.batch = layout.shapes[0][0]
        self.inner = tuple(tuple(s[1:]) for s in layout.shapes)
        self.row_numels = tuple(math.prod(s) for s in self.inner)
        self.width = sum(self.row_numels)

    def rows(self, flat: Tensor) -> Tensor:
        if not self.layout.is_tuple:
            return flat.reshape(flat.shape[0], self.width)
        return self.to_rows(self.layout.unflatten(flat))

    def to_rows(self, members: State) -> Tensor:
        if not self.layout.is_tuple:
            flat = cast(Tensor, members)
            return flat.reshape(flat.shape[0], self.width)
        n = members[0].shape[0]
        return torch.cat([m.reshape(n, -1) for m in members], dim=1)

    def state(self, rows: Tensor) -> State:
        n = rows.shape[0]
        if not self.layout.is_tuple:
            return rows.reshape((n, *self.inner[0]))
        parts = rows.split(self.row_numels, dim=1)
        return tuple(p.reshape((n, *s)) for p, s in zip(parts, self.inner))

    def flat(self, rows: Tensor) -> Tensor:
        return self.layout.flatten(self.state(rows))


T_SHAPE_HINT = ("with options['per_sample_steps'] func is called as func(t, y) with t of shape "
                "[B] (one time per sample, in the state's real dtype); a time-dependent func "
                "must broadcast it per sample, e.g. t[:, None] for a [B, D] state")


class PerSampleField(VectorField):
    """The user's ``f`` for a per-sample solve: ``on_rows(t [A], rows [A, N])`` calls
    ``func(t, state)`` with ``t`` of shape ``[A]`` and checks the output's structure,
    shape, dtype and device; ``__call__(t, flat)`` (``solve``'s own calls at one shared
    time, e.g. for gradients with respect to ``t``) expands a float ``t`` to ``[B]``.
    ``nfe`` counts batched calls, ``row_evaluations`` the rows they evaluated."""

    def __init__(self, func: Callable, layout: StateLayout, *, context: str = ""):
        super().__init__(func, layout, context=context)
        self.rows_layout = RowLayout(layout)
        self.row_evaluations = 0
        self._rows_checked = False
        self._plain = not layout.is_tuple and len(layout.shapes[0]) == 2

    def __call__(self, t: float | Tensor, y: Tensor) -> Tensor:
        rl = self.rows_layout
        tt = torch.full((rl.batch,), float(t), dtype=torch.float64, device=y.device) \
            if not isinstance(t, Tensor) else t.expand(rl.batch)
        return rl.flat(self.on_rows(tt, rl.rows(y)))

    def at(self, t: Tensor, y: Tensor) -> Tensor:
        return self(t, y)

    def on_rows(self, t: Tensor, rows: Tensor) -> Tensor:
        """``f`` on ``rows`` ``[A, N]`` at per-row times ``t`` ``[A]`` (float64)."""
        self.nfe += 1
        n = rows.shape[0]
        self.row_evaluations += n
        if t.dtype != self._time_dtype:
            t = t.to(self._time_dtype)
        rl = self.rows_layout
        if self._plain and self._rows_checked:  # a [B, N] tensor state: rows are the state
            out = self.func(t, rows)
            if type(out) is not Tensor or out.shape != rows.shape or out.dtype != self._dtype \
                    or out.device != self._device:
                self._check_rows(out, n)
            return out
        out = self.func(t, rl.state(rows)) if self._rows_checked \
            else self._first_call(t, rl.state(rows))
        self._check_rows(out, n)
        return rl.to_rows(cast(State, out))  # checked

    def _first_call(self, t: Tensor, state: State) -> object:
        try:
            return self.func(t, state)
        except Exception as e:
            add_note = getattr(e, "add_note", None)  # Python >= 3.11
            if add_note is not None:
                add_note(f"raised by func at its first call; {T_SHAPE_HINT}")
            raise

    def _check_rows(self, out: object, n: int) -> None:
        layout, rl = self.layout, self.rows_layout
        members = cast("tuple[object, ...]", out) if layout.is_tuple else (out,)  # or a list
        if layout.is_tuple and (not isinstance(out, (tuple, list))
                                or len(out) != len(layout.shapes)):
            raise ValueError(f"func must return a tuple of {len(layout.shapes)} tensors like "
                             f"y0, got {type(out).__name__}{self.context}")
        for i, (m, inner) in enumerate(zip(members, rl.inner)):
            where = f"func's output[{i}]" if layout.is_tuple else "func's output"
            if not isinstance(m, Tensor):
                raise ValueError(f"{where} must be a tensor, got {type(m).__name__}"
                                 f"{self.context}")
            want = (n, *inner)
            if m.shape != want:
                raise ValueError(f"{where} has shape {tuple(m.shape)} but the state has shape "
                                 f"{want} (evaluation {self.nfe}){self.context}; {T_SHAPE_HINT}")
            if m.dtype != layout.dtype or m.device != layout.device:
                raise ValueError(f"{where} is {m.dtype} on {m.device} but the state is "
                                 f"{layout.dtype} on {layout.device} (evaluation {self.nfe})"
                                 f"{self.context}")
        self._rows_checked = True


@dataclass
class PerSampleStats(SolverStats):
    """``SolverStats`` of a per-sample solve.

    Attributes (beyond ``SolverStats``): ``nfe`` counts batched calls of ``f`` (each on
    the whole, or with ``compact_finished`` the active, batch); ``accepted`` and
    ``rejected`` are totals over the samples; ``accepted_per_sample`` and
    ``rejected_per_sample`` are ``[B]`` int64 tensors; ``batched_steps`` the attempted
    batched steps (loop iterations); ``row_evaluations`` the sample-evaluations of ``f``
    (``nfe * B`` without compaction).
    """

    accepted_per_sample: Tensor | None = None
    rejected_per_sample: Tensor | None = None
    batched_steps: int = 0
    row_evaluations: int = 0

    def as_dict(self) -> dict:
        out = super().as_dict()
        out["batched_steps"] = self.batched_steps
        out["row_evaluations"] = self.row_evaluations
        if self.accepted_per_sample is not None:
            out["accepted_per_sample"] = self.accepted_per_sample.tolist()
            out["rejected_per_sample"] = cast(Tensor, self.rejected_per_sample).tolist()
        return out


# --------------------------------------------------------------------------- norms, control


def row_norm(norm: Callable | None, rl: RowLayout) -> Callable[[Tensor], Tensor]:
    """The error norm per sample, ``[A, N] -> [A]``: ``mixed_norm`` (the default),
    ``rms_norm`` and ``max_norm`` are applied to each sample's entries; any other callable
    is called on the scaled error in the state's structure (batch first) and must return
    one value per sample, shape ``[A]``."""
    if norm is None or norm is mixed_norm:
        if len(rl.row_numels) == 1:
            return _row_rms(rl.width)
        sizes = rl.row_numels

        def mixed(x: Tensor) -> Tensor:
            parts = [torch.linalg.vector_norm(p, dim=1) / math.sqrt(max(n, 1))
                     for p, n in zip(x.split(sizes, dim=1), sizes)]
            return torch.stack(parts).amax(dim=0)

        return mixed
    if norm is rms_norm:
        return _row_rms(rl.width)
    if norm is max_norm:
        return lambda x: x.abs().amax(dim=1) if x.shape[1] else x.new_zeros(x.shape[0]).real

    def custom(x: Tensor) -> Tensor:
        value = norm(rl.state(x))
        if not isinstance(value, Tensor) or value.shape != (x.shape[0],) \
                or value.is_complex():
            got = (f"shape {tuple(value.shape)}" if isinstance(value, Tensor)
                   else type(value).__name__)
            raise ValueError(f"options['norm'] with options['per_sample_steps'] must return "
                             f"one real value per sample (a tensor of shape "
                             f"[{x.shape[0]}]), got {got}; hyperode.rms_norm, max_norm and "
                             f"mixed_norm are applied per sample by themselves")
        return value

    return custom


def _row_rms(width: int) -> Callable[[Tensor], Tensor]:
    root = math.sqrt(max(width, 1))
    return lambda x: torch.linalg.vector_norm(x, dim=1) / root


def _factors(controller: IController | PIController, ratio: Tensor, memory: Tensor,
             exponent: float, forced_possible: bool) -> tuple[Tensor, Tensor, Tensor]:
    """``controller.factor`` elementwise, as the shared-step loop uses it: ``(factor if
    accepted, factor if rejected (<= 1), memory if accepted)`` for float64 ratios ``[A]``
    (``inf`` for a non-finite error: ``inf**-e = 0`` gives ``dfactor`` on rejection).
    ``forced_possible``: ``min_step > 0``, so that a step with ratio > 1 (or ``inf``, read
    as 0) may be accepted."""
    s, up, down = controller.safety, controller.ifactor, controller.dfactor
    plain = ratio.pow(-exponent).mul_(s)  # ratio 0 -> inf, clamped to ifactor below
    rejected = plain.clamp(down, 1.0)
    if isinstance(controller, IController):
        accepted = plain.clamp(down if controller.shrink_after_accept else 1.0, up)
        if forced_possible:
            accepted = torch.where(ratio > 1.0, plain.clamp(down, up), accepted)
            accepted = accepted.masked_fill_(torch.isinf(ratio), up)
        return accepted, rejected, memory
    beta = 0.2 * exponent if controller.beta is None else controller.beta
    r = ratio.masked_fill(torch.isinf(ratio), 0.0) if forced_possible else ratio
    accepted = r.pow(-(exponent - 0.75 * beta)).mul_(memory.pow(beta)).mul_(s).clamp_(down, up)
    keep = (r == 0.0) | (r > 1.0)
    if forced_possible:
        accepted = torch.where(r > 1.0, plain.clamp(down, 1.0), accepted)
    accepted = accepted.masked_fill_(r == 0.0, up)
    new_memory = torch.where(keep, memory, r.clamp(min=1e-4))
    return accepted, rejected, new_memory


def _divide(x: Tensor, scale: Tensor, vanish: bool) -> Tensor:
    out = x / scale
    return torch.where(x == 0, 0.0, out) if vanish else out


def _two_estimates(n1: Tensor, n2: Tensor) -> Tensor:
    """``adaptive.two_estimate_ratio`` elementwise."""
    den = n1 * n1 + 0.01 * n2 * n2
    out = n1 * n1 / den.sqrt()
    return torch.where(den == 0, 0.0, torch.where(torch.isinf(den), math.inf, out))


# --------------------------------------------------------------------------- the loop


def _row_tolerance(tol: float | Tensor, rl: RowLayout) -> float | Tensor:
    return tol if not isinstance(tol, Tensor) else rl.rows(tol)


def _initial_step(f: PerSampleField, t: Tensor, y: Tensor, f0: Tensor, d: float,
                  exponent: float, scale: Tensor, vanish: bool, norm: Callable,
                  max_step: float, gidx: Tensor) -> Tensor:
    """Hairer, Nørsett & Wanner's starting step (Solving ODEs I, §II.4, p. 169) per
    sample, as ``adaptive.initial_step`` computes it for one: positive float64 ``[A]``,
    one batched evaluation of ``f``."""
    d0 = norm(_divide(y, scale, vanish)).to(torch.float64)
    d1 = norm(_divide(f0, scale, vanish)).to(torch.float64)
    bad = ~torch.isfinite(f0).all(dim=1)
    if bool(bad.any()):
        raise NonFiniteStateError(
            f"func(t0, y0) is not finite (NaN/inf) for samples {_indices(gidx[bad])} at "
            f"t0={float(t[0])!r}; check func at t0 and those samples of y0")
    h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), 1e-6, 0.01 * d0 / d1)
    h0 = torch.where(h0 > 0, h0, 1e-6).clamp(max=max_step)
    y1 = torch.addcmul(y, (d * h0).to(f._time_dtype).unsqueeze(1), f0)
    f1 = f.on_rows(t + d * h0, y1)
    d2 = norm(_divide(f1 - f0, scale, vanish)).to(torch.float64) / h0
    dmax = torch.where(torch.isfinite(d2), torch.maximum(d1, d2), d1)
    h1 = torch.where(dmax <= 1e-15, torch.clamp(h0 * 1e-3, min=1e-6),
                     (0.01 / dmax).pow(exponent))
    return torch.minimum(100 * h0, h1).clamp(max=max_step)


def _indices(idx: Tensor) -> str:
    values = idx.tolist()
    shown = ", ".join(str(i) for i in values[:_SHOWN])
    return f"[{shown}{', ...' if len(values) > _SHOWN else ''}] ({len(values)} in all)"


def _dense_matrix(tableau: ButcherTableau, dtype: torch.dtype, device: torch.device
                  ) -> Tensor | None:
    """The continuous extension's coefficients as ``[M, S]``: ``b_i(theta) =
    sum_m D[m, i] theta**(m+1)`` (``None`` without one)."""
    if tableau.dense is None:
        return None
    return torch.tensor(tableau.dense, dtype=dtype, device=device).T.contiguous()


def _dense(tableau: ButcherTableau, coef: Tensor | None, f: PerSampleField, rows: Tensor,
           theta: Tensor, t: Tensor, y: Tensor, y1: Tensor, dh: Tensor, dh_col: Tensor,
           ks: list[Tensor], f1: Tensor | None) -> Tensor:
    """Dense output of rows ``rows`` ``[P]`` (repeats allowed: several outputs inside one
    step) at ``theta`` ``[P]`` (float64, in [0, 1]) inside the step ``(t, y) -> (t + dh,
    y1)``: the continuous extension (its extra stages evaluated on the batch and appended
    to ``ks`` once per step), else the cubic Hermite interpolant with ``f1 = f(t + dh,
    y1)``. Returns ``[P, N]``."""
    th = theta.to(f._time_dtype).unsqueeze(1)
    y_r, dh_r = y.index_select(0, rows), dh_col.index_select(0, rows)
    if coef is not None:
        s = tableau.stages
        for j, (c_j, a_j) in enumerate(zip(tableau.extra_c, tableau.extra_a)):
            if len(ks) == s + j:
                ks.append(f.on_rows(t + c_j * dh, torch.addcmul(y, dh_col,
                                                                 combine(None, ks, a_j, 1.0))))
        powers = th.expand(-1, coef.shape[0]).cumprod(dim=1)  # theta, theta^2, ...
        weights = (powers @ coef).unsqueeze(1)  # [P, 1, S]
        stages = torch.stack(ks, dim=1).index_select(0, rows)  # [P, S, N]
        return torch.addcmul(y_r, dh_r, torch.bmm(weights.to(stages.dtype), stages).squeeze(1))
    t2, t3 = th * th, th * th * th
    out = y_r * (2 * t3 - 3 * t2 + 1) + y1.index_select(0, rows) * (-2 * t3 + 3 * t2)
    slopes = ks[0].index_select(0, rows) * (t3 - 2 * t2 + th) \
        + cast(Tensor, f1).index_select(0, rows) * (t3 - t2)  # given for Hermite
    return torch.addcmul(out, dh_r, slopes)


def integrate_per_sample(
    f: PerSampleField, tableau: ButcherTableau, y0: Tensor, t_out: Sequence[float],
    cfg: AdaptiveConfig, stats: PerSampleStats, *, norm: Callable | None = None,
    compact: bool = False,
) -> list[Tensor]:
    """Solve every sample from ``t_out[0]`` to ``t_out[-1]`` with its own steps; return the
    states at every ``t_out`` as ``StateLayout``-flat tensors (``ys[0]`` is ``y0``).

    Args:
        f: the field (``PerSampleField``).
        tableau: an explicit RK method with ``b_error``.
        y0: the flat initial state (``StateLayout.flatten``), batch first.
        t_out: strictly monotonic output times (validated by the caller).
        cfg: the adaptive options (``step_t``, ``jump_t``, ``record_steps`` refused by
            ``check_options``); ``max_num_steps`` bounds each sample's attempted steps.
        stats: filled in (per-sample counts, batched steps, row evaluations).
        norm: the raw ``options['norm']`` (see ``row_norm``); ``None`` is the default.
        compact: drop finished samples from the batch (``compact_finished``).
    """
    rl = f.rows_layout
    batch = rl.batch
    ys_flat = [y0]
    acc_g = torch.zeros(batch, dtype=torch.int64)
    rej_g = torch.zeros(batch, dtype=torch.int64)
    stats.accepted_per_sample, stats.rejected_per_sample = acc_g, rej_g
    if len(t_out) == 1:
        return ys_flat
    device, f64, tdt = y0.device, torch.float64, f._time_dtype
    t0, t_end = float(t_out[0]), float(t_out[-1])
    d = 1.0 if t_end > t0 else -1.0
    n_out = len(t_out)
    t_out_v = torch.tensor(t_out, dtype=f64, device=device)
    key = d * t_out_v  # increasing
    rtol, atol = _row_tolerance(cfg.rtol, rl), _row_tolerance(cfg.atol, rl)
    vanish = bool(cfg.atol_may_vanish)
    norm_rows = row_norm(norm, rl)
    controller, exponent = cfg.controller, tableau.error_exponent
    min_step, max_step, max_steps = cfg.min_step, cfg.max_step, cfg.max_num_steps
    a, b, c, fsal = tableau.a, tableau.b, tableau.c, tableau.fsal

    y = rl.rows(y0)
    outs = y.new_zeros((n_out, batch, rl.width))  # row b of outs[j]: sample b at t_out[j]
    coef = _dense_matrix(tableau, tdt, device)
    gidx = torch.arange(batch, device=device)
    t = torch.full((batch,), t0, dtype=f64, device=device)
    k1 = f.on_rows(t, y)
    with torch.no_grad():
        abs_y = y.abs()
        scale0 = atol + rtol * abs_y
        if cfg.first_step is not None:
            h = torch.full((batch,), min(cfg.first_step, max_step), dtype=f64, device=device)
            norm_rows(_divide(y, scale0, vanish))  # one check of a custom norm's output
        else:
            h = _initial_step(f, t, y, k1, d, exponent, scale0, vanish, norm_rows, max_step,
                              gidx)
        h = h.clamp(min=min_step)
    memory = torch.full((batch,), controller.initial_memory(), dtype=f64, device=device)
    last_rej = torch.zeros(batch, dtype=torch.bool, device=device)
    n_acc = torch.zeros(batch, dtype=torch.int64, device=device)
    n_att = torch.zeros(batch, dtype=torch.int64, device=device)  # attempted steps
    running = torch.ones(batch, dtype=torch.bool, device=device)
    out_i = torch.ones(batch, dtype=torch.int64, device=device)  # = outputs at or before t
    c_col = torch.tensor(c, dtype=f64, device=device).unsqueeze(1)
    forced_possible = min_step > 0
    is_pi = isinstance(controller, PIController)
    # Finished rows step by 0 and their h, memory and rejection flag are never read again,
    # so those are updated without masks; a step that lands on t_end finishes its sample,
    # so the shared loop's "a cut step says nothing about the natural step size" rule has
    # nothing to act on here.
    while True:
        stats.batched_steps += 1
        with torch.no_grad():
            gap = t_end - t if d > 0 else t - t_end
            landing = gap <= 1.01 * h  # Hairer's rule: land if within 1% of a step
            if max_step < math.inf:
                landing &= gap <= max_step
            h_step = torch.where(landing, gap, h).masked_fill_(~running, 0.0)
            dh = h_step if d > 0 else -h_step
            t1 = torch.where(landing, t_end, t + dh)
            stage_t = torch.addcmul(t, c_col, dh)  # [S, A]
            dh_col = dh.to(tdt).unsqueeze(1)
        ks = [k1]
        yi = y
        for i in range(1, len(c)):
            yi = torch.addcmul(y, dh_col, combine(None, ks, a[i], 1.0))
            ks.append(f.on_rows(stage_t[i], yi))
        y1 = yi if fsal else torch.addcmul(y, dh_col, combine(None, ks, b, 1.0))
        with torch.no_grad():
            abs_y1 = y1.abs()
            scale = torch.maximum(abs_y, abs_y1).mul_(rtol).add_(atol)
            err = combine(None, ks, cast("tuple[float, ...]", tableau.b_error), 1.0).mul_(dh_col)
            ratio = norm_rows(_divide(err, scale, vanish))
            if tableau.b_error2 is not None:
                err2 = combine(None, ks, tableau.b_error2, 1.0).mul_(dh_col)
                ratio = _two_estimates(ratio.to(f64),
                                       norm_rows(_divide(err2, scale, vanish)).to(f64))
            ratio = ratio.to(f64).nan_to_num_(nan=math.inf, posinf=math.inf)
            accept = ratio <= 1.0
            if forced_possible:  # a step no longer than min_step is accepted (torchdiffeq)
                accept |= torch.minimum(h, h_step) <= min_step
            accept &= running
            reject = running ^ accept
            n_acc += accept
            n_att += running
            f_acc, f_rej, mem_acc = _factors(controller, ratio, memory, exponent,
                                             forced_possible)
            h_acc = torch.where(last_rej, f_acc.clamp(max=1.0), f_acc).mul_(h_step)
            h = torch.where(accept, h_acc.clamp_(min_step, max_step),
                            f_rej.mul_(h_step).clamp_(min=min_step))
            if is_pi:
                memory = torch.where(accept, mem_acc, memory)
            last_rej = reject
            t_new = torch.where(accept, t1, t)
            running_new = running ^ (accept & landing)
            out_new = torch.searchsorted(key, t_new if d > 0 else -t_new, right=True)
            passed = out_new - out_i  # output times passed by each sample in this step
            stalled = running & (t1 == t)  # a running sample that cannot move: underflow
            flags = torch.stack([running_new.sum(), stalled.sum(), passed.sum(), accept.any()])
            alive, n_stalled, n_pass, any_acc = flags.tolist()  # the one host sync of the step
        if n_stalled:
            _raise_underflow(stalled, gidx, t, dh, ratio)
        # a sample attempts at most one step per batched step: no count check before that
        stuck = running_new & (n_att >= max_steps) if stats.batched_steps >= max_steps \
            else None
        if stuck is not None and bool(stuck.any()):
            raise MaxStepsExceededError(
                f"max_num_steps={max_steps} (per sample) reached by samples "
                f"{_indices(gidx[stuck])} at t={_first(t_new, stuck)} while integrating to "
                f"t={t_end!r}; those samples may be stiff or the tolerances too tight: raise "
                f"options['max_num_steps'], loosen rtol/atol or use a fixed-step method")
        if any_acc:
            acc_col = accept.unsqueeze(1)
            y_new = torch.where(acc_col, y1, y)
            f1 = None
            if fsal:
                f1 = ks[-1]
            elif alive or (coef is None and n_pass):
                f1 = f.on_rows(t_new, y_new)
            if n_pass:
                with torch.no_grad():
                    rows = torch.repeat_interleave(passed, output_size=n_pass)
                    first = (passed.cumsum(0) - passed).index_select(0, rows)
                    j = out_i.index_select(0, rows) + torch.arange(n_pass, device=device) - first
                    t_j = t_out_v.index_select(0, j)
                    theta = ((t_j - t.index_select(0, rows)) / dh.index_select(0, rows))
                    at_end = (t_j == t1.index_select(0, rows)).unsqueeze(1)
                value = _dense(tableau, coef, f, rows, theta.clamp_(0.0, 1.0), t, y, y1, dh,
                               dh_col, ks, f1)
                value = torch.where(at_end, y1.index_select(0, rows), value)
                outs.index_put_((j, gidx.index_select(0, rows)), value)
            if f1 is not None:
                k1 = torch.where(acc_col, f1, k1)
            y = y_new
            with torch.no_grad():
                abs_y = torch.where(acc_col, abs_y1, abs_y)
        t, out_i, running = t_new, out_new, running_new
        if not alive:
            break
        if compact:
            active = running.shape[0]
            done = active - alive
            if done >= max(1, COMPACT_FRACTION * active):
                acc_g[gidx.cpu()] = n_acc.cpu()
                rej_g[gidx.cpu()] = (n_att - n_acc).cpu()
                keep = running.nonzero().squeeze(1)
                y, k1, t, h, memory, last_rej, n_acc, n_att, running, out_i, gidx, abs_y = (
                    x.index_select(0, keep) for x in (y, k1, t, h, memory, last_rej, n_acc,
                                                      n_att, running, out_i, gidx, abs_y))
                if isinstance(rtol, Tensor):
                    rtol = rtol.index_select(0, keep)
                if isinstance(atol, Tensor):
                    atol = atol.index_select(0, keep)

    acc_g[gidx.cpu()] = n_acc.cpu()
    rej_g[gidx.cpu()] = (n_att - n_acc).cpu()
    stats.accepted, stats.rejected = int(acc_g.sum()), int(rej_g.sum())
    stats.row_evaluations = f.row_evaluations
    ys_flat.extend(rl.flat(outs[j]) for j in range(1, n_out))
    return ys_flat


def _first(t: Tensor, mask: Tensor) -> str:
    return repr(float(t[mask][0]))


def _raise_underflow(underflow: Tensor, gidx: Tensor, t: Tensor, dh: Tensor,
                     ratio: Tensor) -> None:
    first = int(underflow.nonzero()[0])
    last = float(ratio[first])
    cause = ("the vector field or a trial state became non-finite (NaN/inf)"
             if not math.isfinite(last) else f"the error ratio stayed above 1 (last {last:.3g})")
    raise StepSizeUnderflowError(
        f"step size underflow for samples {_indices(gidx[underflow])}: sample "
        f"{int(gidx[first])} at t={float(t[first])!r} with h={float(dh[first])!r}; {cause}. "
        f"Try looser rtol/atol, options['min_step'] (steps that short are then accepted), "
        f"a max_step, checking the vector field near there, or a fixed-step method.")
